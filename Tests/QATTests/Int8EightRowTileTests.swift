import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy

/// The VNNI GEMM's 8-row tiles (output channels a multiple of 8: 8 rows × 3 vectors of 16
/// columns) give the codes, floats and accumulators of its 6-row tiles and of the portable path:
/// 8, 16 and 24 channels, output planes whose column count leaves 0 … 47 columns in the last
/// 48-column tile, one and several images per GEMM, byte-wise and channel-blocked operands,
/// shift requantization, and a linear layer (strided outputs).
final class Int8EightRowTileTests: XCTestCase {
    func testEightRowTilesEqualSixRowTilesAndPortable() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.vnni), "no VNNI on this CPU")
        defer { Int8Kernels.allowEightRowTiles(true) }
        var rng = SeededGenerator(seed: 1_502)
        // (input channels, height, width, output channels, stride): 28×28 (784 columns), 13×11, 7×7 (several
        // images per GEMM), 2×2, a 1×1 plane and stride 2.
        let shapes: [(c: Int, h: Int, w: Int, oc: Int, stride: Int)] = [(8, 28, 28, 8, 1), (3, 13, 11, 16, 1), (16, 7, 7, 16, 1),
                                                                        (8, 2, 2, 24, 1), (5, 1, 1, 8, 1), (4, 9, 10, 8, 2)]
        for s in shapes {
            let g = Int8ConvGeometry(batch: 5, channels: s.c, height: s.h, width: s.w, outputChannels: s.oc, kernelHeight: 3,
                                     kernelWidth: 3, strideHeight: s.stride, strideWidth: s.stride,
                                     padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: 1)
            let c = Int8ConvTests.randomCase(g, relu6: false, &rng)
            let shifts = Int8Kernels.Requantization(multipliers: (0..<s.oc).map { Float(sign: .plus, exponent: -9 - $0 % 4, significand: 1) },
                                                     zeroPoint: -3, relu: false)
            XCTAssertTrue(shifts.isByShift)
            func outputs(_ path: Int8Kernels.Path) -> [[UInt32]] {
                [Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, requantize: c.requantization,
                                    path: path, algorithm: .im2colGEMM).map { UInt32(UInt8(bitPattern: $0)) },
                 Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, requantize: shifts,
                                    path: path, algorithm: .im2colGEMM).map { UInt32(UInt8(bitPattern: $0)) },
                 Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, scales: c.scales,
                                               offsets: c.offsets, path: path, algorithm: .im2colGEMM).map(\.bitPattern),
                 Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                path: path, algorithm: .im2colGEMM).map { UInt32(bitPattern: $0) }]
            }
            let expected = outputs(.portable)
            for eightRows in [true, false] {
                Int8Kernels.allowEightRowTiles(eightRows)
                XCTAssertEqual(outputs(.vnni), expected, "8-row tiles \(eightRows) \(g)")
            }
        }
        // A linear layer: 16 outputs of 37 samples, outputs `outs` apart.
        let (batch, inputs, outs) = (37, 45, 16)
        let x = (0..<(batch * inputs)).map { _ in Int8.random(in: -128...127, using: &rng) }
        let w = (0..<(outs * inputs)).map { _ in Int8.random(in: -128...127, using: &rng) }
        let bias = (0..<outs).map { _ in Int32.random(in: -5000...5000, using: &rng) }
        let r = Int8Kernels.Requantization(multipliers: (0..<outs).map { _ in Float.random(in: 1e-4...1e-3, using: &rng) },
                                           zeroPoint: 4, relu: true)
        let expected = Int8Kernels.linear(x, batch: batch, inputZeroPoint: -7, weights: w, bias: bias, requantize: r, path: .portable)
        for eightRows in [true, false] {
            Int8Kernels.allowEightRowTiles(eightRows)
            XCTAssertEqual(Int8Kernels.linear(x, batch: batch, inputZeroPoint: -7, weights: w, bias: bias, requantize: r, path: .vnni),
                           expected, "linear, 8-row tiles \(eightRows)")
        }
    }
}
