import XCTest
@testable import QATCore
@testable import QATDeploy

/// Winograd F(2×2, 3×3) on the AVX2 path (winograd_avx2.c: 3×3, stride 1, 8 … 1827 channels)
/// gives the accumulators of the Int64 reference and, through the same epilogues, the codes (by
/// scale and by shift), floats (with and without ReLU, max pooled) and residual outputs of the
/// portable path and of im2col + GEMM with it switched off: odd planes (a last tile half outside),
/// asymmetric and no padding, 8 … 67 channels (an odd one pairs with a zero channel), 1 … 37
/// images (a last block of 16 partly empty), and codes and weights at their extremes, where the
/// transformed values are largest.
final class Int8WinogradTests: XCTestCase {
    typealias Case = Int8ConvTests.Case

    static func cases() -> [Case] {
        var rng = SeededGenerator(seed: 1_601)
        let shapes: [(n: Int, c: Int, o: Int, h: Int, w: Int, pads: (Int, Int, Int, Int))] = [
            (17, 32, 32, 4, 4, (1, 1, 1, 1)),     // resnet18-tiny's layer3
            (20, 64, 64, 2, 2, (1, 1, 1, 1)),     // its layer4
            (3, 33, 7, 7, 7, (1, 1, 1, 1)),       // 7×7: odd plane, odd channels
            (1, 40, 13, 9, 5, (0, 1, 1, 0)),      // one image, asymmetric padding
            (37, 32, 5, 5, 6, (0, 0, 0, 0)),      // no padding: 3×4 outputs, three blocks
            (2, 67, 9, 14, 14, (2, 1, 0, 2)),     // 14×14, wider padding
            (16, 48, 20, 3, 3, (1, 1, 1, 1)),     // 3×3 plane: one whole and three half tiles
            (16, 8, 8, 14, 14, (1, 1, 1, 1)),     // resnet18-tiny's layer1: 8 channels, tiles in pairs and one alone
            (20, 16, 11, 8, 8, (1, 1, 1, 1)),     // 16 channels on an even plane
        ]
        return shapes.enumerated().map { i, s in
            let g = Int8ConvGeometry(batch: s.n, channels: s.c, height: s.h, width: s.w, outputChannels: s.o,
                                     kernelHeight: 3, kernelWidth: 3, strideHeight: 1, strideWidth: 1,
                                     padTop: s.pads.0, padLeft: s.pads.1, padBottom: s.pads.2, padRight: s.pads.3)
            return Int8ConvTests.randomCase(g, relu6: i % 3 == 0, &rng)
        }
    }

    /// Codes all 127 (u8 255) against weights all −128, and alternating signs: the largest
    /// transformed inputs and weights, and sums near the int32 bound the kernel relies on.
    static func extremeCases() -> [Case] {
        var rng = SeededGenerator(seed: 1_602)
        let g = Int8ConvGeometry(batch: 18, channels: 64, height: 5, width: 5, outputChannels: 6,
                                 kernelHeight: 3, kernelWidth: 3, strideHeight: 1, strideWidth: 1,
                                 padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
        return Int8ConvTests.extremeCases(g, &rng)
    }

    override func setUpWithError() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.avx2), "no AVX2 on this CPU")
    }

    func testWinogradMatchesReferenceAndGEMM() {
        defer { Int8Kernels.allowWinograd(true) }   // the default
        for c in Self.cases() + Self.extremeCases() {
            let expected = Int8ConvReferenceOutputs(c)
            for winograd in [true, false] {
                Int8Kernels.allowWinograd(winograd)
                expected.assertMatched(c, path: .avx2, "Winograd \(winograd) \(c.geometry)")
            }
        }
    }

    /// The epilogues after the sums: a fused 2×2 max pool, and the residual add → quantize and
    /// add → ReLU → floats and codes, as on the portable path.
    func testEpiloguesOnWinogradSums() {
        defer { Int8Kernels.allowWinograd(true) }
        var rng = SeededGenerator(seed: 1_603)
        for c in Self.cases() {
            let g = c.geometry
            let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
            let addend = (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
            let grid = QuantizationGrid(bits: 8, scale: 0.013, offset: Int.random(in: -10...10, using: &rng))
            let pool = g.outputHeight >= 2 && g.outputWidth >= 2
                ? Int8PoolGeometry(height: g.outputHeight, width: g.outputWidth, kernel: 2, stride: 2) : nil
            func outputs(_ path: Int8Kernels.Path) -> [[UInt32]] {
                let fused = Int8Kernels.conv2dDequantizedAddReLU(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                 scales: c.scales, offsets: c.offsets, addend: addend, relu: true,
                                                                 codesGrid: grid, path: path)
                var results = [Int8Kernels.conv2dDequantizedAddQuantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights,
                                                                         bias: c.bias, scales: c.scales, offsets: c.offsets,
                                                                         addend: addend, grid, path: path).map { UInt32(UInt8(bitPattern: $0)) },
                               fused.floats.map(\.bitPattern), (fused.codes ?? []).map { UInt32(UInt8(bitPattern: $0)) }]
                if let pool {
                    results.append(Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                 scales: c.scales, offsets: c.offsets, relu: true, pool: pool,
                                                                 path: path).map(\.bitPattern))
                }
                return results
            }
            let expected = outputs(.portable)
            for winograd in [true, false] {
                Int8Kernels.allowWinograd(winograd)
                XCTAssertEqual(outputs(.avx2), expected, "Winograd \(winograd) \(g)")
            }
        }
    }

    /// A batch split in two (as Int8Model splits it over threads) gives the whole batch's codes.
    func testSplittingTheBatchChangesNothing() {
        for c in Self.cases() where c.geometry.batch > 1 {
            let g = c.geometry, sample = g.channels * g.height * g.width
            let whole = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                           requantize: c.requantization, path: .avx2, algorithm: .im2colGEMM)
            let first = g.batch / 2
            var parts: [Int8] = []
            for images in [0..<first, first..<g.batch] {
                var pg = g
                pg.batch = images.count
                parts += Int8Kernels.conv2d(Array(c.x[(images.lowerBound * sample)..<(images.upperBound * sample)]), pg,
                                            inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                            requantize: c.requantization, path: .avx2, algorithm: .im2colGEMM)
            }
            XCTAssertEqual(parts, whole, "\(g)")
        }
    }
}
