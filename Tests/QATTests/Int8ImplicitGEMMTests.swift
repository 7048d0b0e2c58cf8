import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy

/// The implicit GEMM (gemm.c, VNNI path: stride-1 convs on planes of 64 or more outputs, whose padded
/// width is at most 5/4 of the output width, read the padded image by per-tap offsets, channel-blocked or as row taps for a 1-channel stem, instead of
/// an im2col matrix) gives the accumulators of the Int64 reference, the codes and floats of its
/// requantization, and the results of the column-matrix GEMM (switched off) and of the AVX2 and
/// portable paths: odd widths (garbage columns in every position of a vector), asymmetric padding,
/// dilation, non-square kernels, 1, 3 (one kernel row), 4, 8 and 12 channels, 1…24 output channels
/// (6- and 8-row tiles), shift requantization, and the fused epilogues (int8 pool, ReLU and float
/// pool, pool on accumulators, residual add → quantize).
final class Int8ImplicitGEMMTests: XCTestCase {
    typealias Case = Int8ConvTests.Case

    static func cases() -> [Case] {
        var rng = SeededGenerator(seed: 1_511)
        let shapes: [(n: Int, c: Int, o: Int, h: Int, w: Int, kh: Int, kw: Int, pads: (Int, Int, Int, Int), dh: Int, dw: Int)] = [
            (3, 1, 8, 28, 28, 3, 3, (1, 1, 1, 1), 1, 1),     // resnet-tiny's stem: row taps
            (2, 8, 8, 28, 28, 3, 3, (1, 1, 1, 1), 1, 1),     // its block convs: channel-blocked
            (2, 1, 5, 9, 21, 3, 3, (0, 2, 1, 1), 1, 1),      // asymmetric padding, 5 channels (6-row tile)
            (2, 1, 13, 11, 40, 5, 4, (2, 1, 2, 2), 2, 2),    // row taps of 4 with dilation 2, 13 channels
            (2, 1, 7, 6, 30, 2, 2, (0, 0, 1, 1), 1, 1),      // 2×2 kernel: 2 row-tap groups, 1 in the column matrix: not implicit
            (3, 8, 8, 14, 14, 3, 3, (1, 1, 1, 1), 1, 1),     // resnet18-tiny's layer1: 16 of 14 columns a row
            (2, 3, 9, 5, 17, 1, 3, (0, 1, 0, 1), 1, 1),      // 3 channels, one kernel row: row taps
            (2, 4, 13, 11, 19, 5, 5, (2, 2, 2, 2), 1, 1),    // 5×5 on one channel block
            (2, 12, 16, 6, 33, 3, 3, (1, 1, 1, 1), 2, 1),    // 3 blocks, dilation 2 in height
            (2, 8, 24, 5, 16, 1, 3, (0, 1, 0, 1), 1, 1),     // 1×3 kernel, 24 channels, exactly 16 wide
            (2, 16, 6, 20, 18, 3, 3, (0, 0, 0, 0), 1, 1),    // no padding: 16 wide
            (2, 8, 1, 4, 47, 3, 3, (1, 1, 1, 1), 1, 1),      // one output channel, 47 wide
        ]
        return shapes.enumerated().map { i, s in
            let g = Int8ConvGeometry(batch: s.n, channels: s.c, height: s.h, width: s.w, outputChannels: s.o,
                                     kernelHeight: s.kh, kernelWidth: s.kw, dilationHeight: s.dh, dilationWidth: s.dw,
                                     padTop: s.pads.0, padLeft: s.pads.1, padBottom: s.pads.2, padRight: s.pads.3)
            return Int8ConvTests.randomCase(g, relu6: i % 3 == 0, &rng)
        }
    }

    /// Codes by power-of-two multipliers (integer shifts), 2^−9 … 2^−12.
    static func shiftRequantization(_ g: Int8ConvGeometry) -> Int8Kernels.Requantization {
        Int8Kernels.Requantization(multipliers: (0..<g.outputChannels).map { Float(sign: .plus, exponent: -9 - $0 % 4, significand: 1) },
                                   zeroPoint: -3, relu: false)
    }

    func testImplicitGEMMMatchesReferenceOnEveryPath() {
        defer { Int8Kernels.allowImplicitGEMM(true); Int8Kernels.allowEightRowTiles(true) }   // the defaults
        for c in Self.cases() {
            let expected = Int8ConvReferenceOutputs(c)
            XCTAssertTrue(expected.shifts.isByShift)
            for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
                for (implicit, eightRows) in [(true, true), (true, false), (false, true)] {
                    Int8Kernels.allowImplicitGEMM(implicit)
                    Int8Kernels.allowEightRowTiles(eightRows)
                    expected.assertMatched(c, path: path, "\(path) implicit \(implicit) 8-row tiles \(eightRows) \(c.geometry)")
                }
            }
        }
    }

    /// The fused epilogues on implicit-GEMM output: conv → int8 max pool, conv → ReLU → float max pool
    /// (on accumulators or on floats), conv → residual add → quantize give, on VNNI with and without
    /// the implicit GEMM, the portable path's results.
    func testFusedEpiloguesOnImplicitGEMM() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.vnni), "no VNNI on this CPU")
        defer { Int8Kernels.allowImplicitGEMM(true); Int8Kernels.poolAccumulators(true) }   // the defaults
        var rng = SeededGenerator(seed: 1_512)
        for c in Self.cases() {
            let g = c.geometry
            let pool = Int8PoolGeometry(height: g.outputHeight, width: g.outputWidth, outputHeight: (g.outputHeight + 1) / 2,
                                        outputWidth: (g.outputWidth + 1) / 2, kernelHeight: 3, kernelWidth: 3,
                                        strideHeight: 2, strideWidth: 2, padTop: 1, padLeft: 1)
            let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
            let addend = (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
            let grid = QuantizationGrid(bits: 8, scale: 0.013, offset: Int.random(in: -10...10, using: &rng))
            func outputs(_ path: Int8Kernels.Path) -> [[UInt32]] {
                [Int8Kernels.conv2dMaxPool(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                           requantize: c.requantization, pool: pool, path: path).map { UInt32(UInt8(bitPattern: $0)) },
                 Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, scales: c.scales,
                                               offsets: c.offsets, relu: true, pool: pool, path: path).map(\.bitPattern),
                 Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, scales: c.scales,
                                               offsets: c.offsets, relu: true, pool: nil, path: path).map(\.bitPattern),
                 Int8Kernels.conv2dDequantizedAddQuantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                           scales: c.scales, offsets: c.offsets, addend: addend, grid,
                                                           path: path).map { UInt32(UInt8(bitPattern: $0)) }]
            }
            let expected = outputs(.portable)
            for (implicit, poolSums) in [(true, true), (true, false), (false, true)] {
                Int8Kernels.allowImplicitGEMM(implicit)
                Int8Kernels.poolAccumulators(poolSums)
                XCTAssertEqual(outputs(.vnni), expected, "implicit \(implicit) pool on sums \(poolSums) \(g)")
            }
        }
    }

    /// A batch split in two (as Int8Model splits it over 2 threads) gives the whole batch's codes.
    func testSplittingTheBatchChangesNothing() {
        let saved = Parallel.threads
        defer { Parallel.threads = saved; Int8Kernels.allowImplicitGEMM(true) }   // the default
        Parallel.threads = 2
        Int8Kernels.allowImplicitGEMM(true)
        for c in Self.cases() {
            let g = c.geometry, sample = g.channels * g.height * g.width
            let outputs = g.outputChannels * g.outputHeight * g.outputWidth
            let whole = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, requantize: c.requantization)
            let first = g.batch / 2
            var parts = [[Int8]](repeating: [], count: 2)
            parts.withUnsafeMutableBufferPointer { parts in
                Parallel.forEachChunk(2) { chunk in
                    for part in chunk {
                        let images = part == 0 ? 0..<first : first..<g.batch
                        var pg = g
                        pg.batch = images.count
                        parts[part] = Int8Kernels.conv2d(Array(c.x[(images.lowerBound * sample)..<(images.upperBound * sample)]), pg,
                                                         inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                         requantize: c.requantization)
                    }
                }
            }
            XCTAssertEqual(parts[0] + parts[1], whole, "\(g)")
            XCTAssertEqual(whole.count, g.batch * outputs)
        }
    }
}
