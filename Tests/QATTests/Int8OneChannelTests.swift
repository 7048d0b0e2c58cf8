import XCTest
@testable import QATCore
@testable import QATDeploy

/// 3×3 convs of one input channel with stride 1 on the AVX2 path (conv_one_channel_avx2.c): the
/// int32 output of one image per GEMM (planes of 64 outputs or more) straight from the padded
/// image, switched on and off, against the Int64 reference and the portable path; the stem's
/// conv → ReLU → max pool, which pools those int32 sums; and every other output (codes, floats),
/// which keeps im2col + GEMM. Output widths below 8, between 8 and 16, 16 + 8, 16 + 12 and one past
/// a multiple of 16 (the row's last block stores 1 … 16 lanes), one to 64 output channels,
/// asymmetric padding.
final class Int8OneChannelTests: XCTestCase {
    typealias Case = Int8ConvTests.Case

    static func cases() -> [Case] {
        var rng = SeededGenerator(seed: 1_701)
        let shapes: [(n: Int, o: Int, h: Int, w: Int, pads: (Int, Int, Int, Int))] = [
            (3, 8, 28, 28, (1, 1, 1, 1)),    // resnet18-tiny's stem: 28 = 16 + 12
            (2, 3, 16, 7, (0, 0, 0, 0)),     // 5 outputs a row: one partial block
            (1, 1, 9, 17, (1, 1, 1, 1)),     // 17 = 16 + 1
            (2, 13, 10, 9, (1, 1, 1, 1)),    // 9 = 8 + 1
            (2, 5, 5, 24, (0, 1, 0, 1)),     // 24 = 16 + 8
            (4, 64, 12, 33, (2, 0, 1, 2)),   // the most output channels it takes; 33 = 2·16 + 1
            (1, 65, 8, 8, (1, 1, 1, 1)),     // one too many: im2col + GEMM
            (2, 4, 6, 6, (1, 1, 1, 1)),      // 36 outputs: several images per GEMM, im2col + GEMM
        ]
        return shapes.map { s in
            let g = Int8ConvGeometry(batch: s.n, channels: 1, height: s.h, width: s.w, outputChannels: s.o,
                                     kernelHeight: 3, kernelWidth: 3, strideHeight: 1, strideWidth: 1,
                                     padTop: s.pads.0, padLeft: s.pads.1, padBottom: s.pads.2, padRight: s.pads.3)
            return Int8ConvTests.randomCase(g, relu6: false, &rng)
        }
    }

    /// Codes all 127 against weights all −128, and alternating extremes: the largest sums.
    static func extremeCases() -> [Case] {
        var rng = SeededGenerator(seed: 1_702)
        let g = Int8ConvGeometry(batch: 2, channels: 1, height: 20, width: 20, outputChannels: 4,
                                 kernelHeight: 3, kernelWidth: 3, strideHeight: 1, strideWidth: 1,
                                 padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
        return Int8ConvTests.extremeCases(g, &rng)
    }

    override func setUpWithError() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.avx2), "no AVX2 on this CPU")
    }

    func testOneChannelMatchesReferenceAndGEMM() {
        defer { Int8Kernels.allowOneChannel(true) }   // the default
        for c in Self.cases() + Self.extremeCases() {
            let expected = Int8ConvReferenceOutputs(c)
            for oneChannel in [true, false] {
                Int8Kernels.allowOneChannel(oneChannel)
                expected.assertMatched(c, path: .avx2, "one channel \(oneChannel) \(c.geometry)")
            }
        }
    }

    /// conv → ReLU → max pool with float output pools the int32 sums: the one-channel kernel's
    /// sums plus the bias terms are that output, with no GEMM after them.
    func testPooledStemMatchesPortable() {
        defer { Int8Kernels.allowOneChannel(true) }
        for c in Self.cases() + Self.extremeCases() {
            let g = c.geometry
            guard g.outputHeight >= 3, g.outputWidth >= 3 else { continue }
            let pools = [Int8PoolGeometry(height: g.outputHeight, width: g.outputWidth, outputHeight: (g.outputHeight - 1) / 2 + 1,
                                          outputWidth: (g.outputWidth - 1) / 2 + 1, kernelHeight: 3, kernelWidth: 3,
                                          strideHeight: 2, strideWidth: 2, padTop: 1, padLeft: 1),
                         Int8PoolGeometry(height: g.outputHeight, width: g.outputWidth, kernel: 2, stride: 2)]
            for pool in pools {
                func pooled(_ path: Int8Kernels.Path) -> [UInt32] {
                    Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                  scales: c.scales, offsets: c.offsets, relu: true, pool: pool,
                                                  path: path).map(\.bitPattern)
                }
                let expected = pooled(.portable)
                for oneChannel in [true, false] {
                    Int8Kernels.allowOneChannel(oneChannel)
                    XCTAssertEqual(pooled(.avx2), expected, "one channel \(oneChannel) \(g) pool \(pool)")
                }
            }
        }
    }
}
