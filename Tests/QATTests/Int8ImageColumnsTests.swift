import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy

/// Images as the GEMM's columns (gemm.c, VNNI path: convs on planes of at most 8 outputs with k ≥ 256,
/// one GEMM per output position over up to 256 images) give the accumulators of the Int64
/// reference, the codes and floats of its requantization and the results of the column-matrix
/// GEMM (switched off) and of the other paths: 1×1 … 2×4 output planes, stride 1 and 2, 32 … 72
/// channels (not only multiples of 16), 5 … 64 output channels (6- and 8-row tiles), 16 … 270
/// images (a last vector of images partly full, two chunks of images), shift requantization,
/// ReLU on floats and the residual epilogues.
final class Int8ImageColumnsTests: XCTestCase {
    typealias Case = Int8ConvTests.Case

    static func cases() -> [Case] {
        var rng = SeededGenerator(seed: 1_531)
        let shapes: [(n: Int, c: Int, o: Int, h: Int, w: Int, k: Int, stride: Int, pad: Int)] = [
            (17, 64, 64, 2, 2, 3, 1, 1),     // resnet18-tiny's layer4 (2×2), 17 images
            (16, 32, 8, 4, 4, 3, 2, 1),      // its layer4_0 conv1: stride 2, 4×4 → 2×2
            (33, 36, 13, 1, 1, 3, 1, 1),     // 1×1 plane, 36 channels, 13 outputs (6-row tiles)
            (20, 52, 24, 3, 5, 3, 2, 1),     // 2×3 outputs, 52 channels
            (270, 32, 5, 3, 3, 3, 1, 0),     // 1×1 output, 270 images: two chunks
            (18, 68, 16, 2, 4, 3, 1, 1),     // 2×4 = 8 outputs
            (19, 256, 12, 3, 3, 1, 2, 0),    // 1×1 kernel, k4 = 64, stride 2: 2×2 outputs
            (16, 72, 7, 5, 5, 3, 2, 0),      // 2×2 outputs without padding
            (21, 8, 8, 2, 2, 3, 1, 1),       // k4 = 18: the column matrix
        ]
        return shapes.enumerated().map { i, s in
            let g = Int8ConvGeometry(batch: s.n, channels: s.c, height: s.h, width: s.w, outputChannels: s.o,
                                     kernelHeight: s.k, kernelWidth: s.k, strideHeight: s.stride, strideWidth: s.stride,
                                     padTop: s.pad, padLeft: s.pad, padBottom: s.pad, padRight: s.pad)
            return Int8ConvTests.randomCase(g, relu6: i % 3 == 0, &rng)
        }
    }

    func testImageColumnsMatchReferenceOnEveryPath() {
        defer { Int8Kernels.allowImageColumns(true); Int8Kernels.allowEightRowTiles(true) }   // the defaults
        for c in Self.cases() {
            let expected = Int8ConvReferenceOutputs(c)
            for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
                for (columns, eightRows) in [(true, true), (true, false), (false, true)] {
                    Int8Kernels.allowImageColumns(columns)
                    Int8Kernels.allowEightRowTiles(eightRows)
                    expected.assertMatched(c, path: path, "\(path) image columns \(columns) 8-row tiles \(eightRows) \(c.geometry)")
                }
            }
        }
    }

    /// The residual epilogues (add → quantize; add → ReLU → floats and codes) on image columns give
    /// the portable path's results, with image columns on and off.
    func testResidualEpiloguesOnImageColumns() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.vnni), "no VNNI on this CPU")
        defer { Int8Kernels.allowImageColumns(true) }   // the default
        var rng = SeededGenerator(seed: 1_532)
        for c in Self.cases() {
            let g = c.geometry
            let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
            let addend = (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
            let grid = QuantizationGrid(bits: 8, scale: 0.013, offset: Int.random(in: -10...10, using: &rng))
            func outputs(_ path: Int8Kernels.Path) -> [[UInt32]] {
                let fused = Int8Kernels.conv2dDequantizedAddReLU(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                 scales: c.scales, offsets: c.offsets, addend: addend, relu: true,
                                                                 codesGrid: grid, path: path)
                return [Int8Kernels.conv2dDequantizedAddQuantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                  scales: c.scales, offsets: c.offsets, addend: addend, grid,
                                                                  path: path).map { UInt32(UInt8(bitPattern: $0)) },
                        fused.floats.map(\.bitPattern), (fused.codes ?? []).map { UInt32(UInt8(bitPattern: $0)) }]
            }
            let expected = outputs(.portable)
            for columns in [true, false] {
                Int8Kernels.allowImageColumns(columns)
                XCTAssertEqual(outputs(.vnni), expected, "image columns \(columns) \(g)")
            }
        }
    }

    /// Planes of a multiple of 16 outputs (4×4, 2×8, 4×8) run several images per GEMM with each
    /// vector stored at its image's place (no staging copy): the accumulators of the Int64 reference,
    /// codes (also by shifts), floats with and without ReLU, as with the staging copy and on the other
    /// paths; 8 … 52 channels, 5 … 32 output channels, 3 … 37 images, stride 1 and 2.
    func testPlacedStoresMatchReferenceOnEveryPath() {
        defer { Int8Kernels.allowPlacedStores(true) }   // the default
        var rng = SeededGenerator(seed: 1_533)
        let shapes: [(n: Int, c: Int, o: Int, h: Int, w: Int, k: Int, stride: Int, pad: Int)] = [
            (37, 32, 32, 4, 4, 3, 1, 1),     // resnet18-tiny's layer3
            (5, 16, 32, 7, 7, 3, 2, 1),      // its layer3_0 conv1: 7×7 → 4×4
            (3, 12, 5, 2, 8, 3, 1, 1),       // 2×8, 5 output channels (6-row tiles)
            (9, 52, 24, 8, 16, 1, 2, 0),     // 1×1 stride 2 → 4×8
            (6, 8, 13, 4, 4, 3, 1, 1),       // 13 output channels
        ]
        for (i, s) in shapes.enumerated() {
            let g = Int8ConvGeometry(batch: s.n, channels: s.c, height: s.h, width: s.w, outputChannels: s.o,
                                     kernelHeight: s.k, kernelWidth: s.k, strideHeight: s.stride, strideWidth: s.stride,
                                     padTop: s.pad, padLeft: s.pad, padBottom: s.pad, padRight: s.pad)
            let c = Int8ConvTests.randomCase(g, relu6: i % 2 == 0, &rng)
            let expected = Int8ConvReferenceOutputs(c)
            for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
                for placed in [true, false] {
                    Int8Kernels.allowPlacedStores(placed)
                    expected.assertMatched(c, path: path, "\(path) placed stores \(placed) \(g)")
                }
            }
        }
    }

    /// Images are independent: the batch in two parts gives the whole batch's codes (Int8Model
    /// splits the batch over threads, so 1 and 2 threads differ in images per call).
    func testSplittingTheBatchChangesNothing() {
        defer { Int8Kernels.allowImageColumns(true) }
        Int8Kernels.allowImageColumns(true)
        for c in Self.cases() {
            let g = c.geometry, sample = g.channels * g.height * g.width
            let whole = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, requantize: c.requantization)
            let first = g.batch / 2
            var parts: [Int8] = []
            for images in [0..<first, first..<g.batch] {
                var pg = g
                pg.batch = images.count
                parts += Int8Kernels.conv2d(Array(c.x[(images.lowerBound * sample)..<(images.upperBound * sample)]), pg,
                                            inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, requantize: c.requantization)
            }
            XCTAssertEqual(parts, whole, "\(g)")
        }
    }
}
