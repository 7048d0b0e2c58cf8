import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy

/// A conv with float output, a residual add on floats and the quantize after it in one kernel
/// (conv2dDequantizedAddQuantized, an image at a time) gives the codes of the three passes
/// (conv2dDequantized, addQuantized of the whole batch): resnet-tiny's block (8 channels, 28×28),
/// odd planes with several images per GEMM (channel-blocked operands), a 1×1 conv, stride 2,
/// grouped geometries, with and without offsets, tie rules and a narrow range; every path.
final class Int8ResidualEpilogueTests: XCTestCase {
    func testConvAddQuantizeEqualsThePasses() {
        var rng = SeededGenerator(seed: 1_503)
        let shapes: [(c: Int, h: Int, w: Int, oc: Int, k: Int, stride: Int, groups: Int)] = [
            (8, 28, 28, 8, 3, 1, 1), (4, 5, 7, 12, 3, 1, 1), (3, 9, 11, 5, 3, 2, 1), (8, 6, 6, 16, 1, 1, 1), (8, 7, 5, 6, 3, 1, 2)]
        for s in shapes {
            let pad = s.k / 2
            let g = Int8ConvGeometry(batch: 7, channels: s.c, height: s.h, width: s.w, outputChannels: s.oc, kernelHeight: s.k,
                                     kernelWidth: s.k, strideHeight: s.stride, strideWidth: s.stride,
                                     padTop: pad, padLeft: pad, padBottom: pad, padRight: pad, groups: s.groups)
            let c = Int8ConvTests.randomCase(g, relu6: false, &rng)
            let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
            let addend = (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
            for (mode, narrow) in [(RoundMode.halfEven, false), (.halfUp, true), (.stdRound, false)] {
                let grid = QuantizationGrid(bits: 8, scale: 0.013, offset: Int.random(in: -10...10, using: &rng), roundMode: mode,
                                            narrowRange: narrow)
                for offsets in [c.offsets, nil] {
                    let conv = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                             scales: c.scales, offsets: offsets, path: .portable, algorithm: .im2colGEMM)
                    let expected = Int8Kernels.addQuantized(conv, addend, grid, path: .portable)
                    for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
                        let fused = Int8Kernels.conv2dDequantizedAddQuantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights,
                                                                              bias: c.bias, scales: c.scales, offsets: offsets,
                                                                              addend: addend, grid, path: path)
                        XCTAssertEqual(fused, expected, "\(path) \(g) \(mode) narrow \(narrow) offsets \(offsets != nil)")
                    }
                }
            }
        }
    }

    /// conv → residual add → ReLU in one kernel (conv2dDequantizedAddReLU) gives the floats of the
    /// passes (conv2dDequantized, QATCore's add and ReLU) and, with a grid, their codes (quantize):
    /// odd planes 1×1 … 9×9, 4 … 72 channels, several images per call, a 1×1 stride-2 shortcut,
    /// grouped, addends cancelling the conv's floats (zeros) and a NaN; with ReLU and without, every path.
    func testConvAddReLUEqualsThePasses() {
        var rng = SeededGenerator(seed: 1_504)
        let shapes: [(n: Int, c: Int, h: Int, w: Int, oc: Int, k: Int, stride: Int, groups: Int)] = [
            (7, 8, 14, 14, 8, 3, 1, 1), (5, 4, 9, 9, 12, 3, 1, 1), (3, 12, 7, 5, 20, 3, 2, 1), (9, 16, 7, 7, 32, 1, 2, 1),
            (17, 64, 2, 2, 64, 3, 1, 1), (4, 72, 1, 1, 6, 3, 1, 1), (6, 8, 6, 3, 6, 3, 1, 2), (18, 36, 3, 3, 13, 3, 1, 1)]
        for s in shapes {
            let pad = s.k / 2
            let g = Int8ConvGeometry(batch: s.n, channels: s.c, height: s.h, width: s.w, outputChannels: s.oc, kernelHeight: s.k,
                                     kernelWidth: s.k, strideHeight: s.stride, strideWidth: s.stride,
                                     padTop: pad, padLeft: pad, padBottom: pad, padRight: pad, groups: s.groups)
            let c = Int8ConvTests.randomCase(g, relu6: false, &rng)
            let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
            let conv = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                     scales: c.scales, offsets: c.offsets, path: .portable, algorithm: .im2colGEMM)
            var addend = (0..<count).map { _ in Float.random(in: -2...2, using: &rng) }
            for j in stride(from: 0, to: count, by: 7) { addend[j] = -conv[j] }   // sums of exactly 0
            addend[count / 2] = .nan
            let sum = add(Variable(Tensor(shape: [count], storage: conv)), Variable(Tensor(shape: [count], storage: addend)), tape: nil)
            let rectified = relu(sum, tape: nil).value.storage
            for (mode, narrow) in [(RoundMode.halfEven, false), (.halfUp, true)] {
                let grid = QuantizationGrid(bits: 8, scale: 0.013, offset: Int.random(in: -10...10, using: &rng), roundMode: mode,
                                            narrowRange: narrow)
                for (useReLU, expected) in [(true, rectified), (false, sum.value.storage)] {
                    let codes = Int8Kernels.quantize(expected, grid, path: .portable)
                    for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
                        let label = "\(path) \(g) \(mode) narrow \(narrow) relu \(useReLU)"
                        let fused = Int8Kernels.conv2dDequantizedAddReLU(c.x, g, inputZeroPoint: c.zero, weights: c.weights,
                                                                         bias: c.bias, scales: c.scales, offsets: c.offsets,
                                                                         addend: addend, relu: useReLU, codesGrid: grid, path: path)
                        XCTAssertEqual(fused.floats.map(\.bitPattern), expected.map(\.bitPattern), "floats \(label)")
                        XCTAssertEqual(fused.codes, codes, "codes \(label)")
                        let floatsOnly = Int8Kernels.conv2dDequantizedAddReLU(c.x, g, inputZeroPoint: c.zero, weights: c.weights,
                                                                              bias: c.bias, scales: c.scales, offsets: c.offsets,
                                                                              addend: addend, relu: useReLU, codesGrid: nil, path: path)
                        XCTAssertEqual(floatsOnly.floats.map(\.bitPattern), expected.map(\.bitPattern), "floats only \(label)")
                        XCTAssertNil(floatsOnly.codes, label)
                    }
                }
            }
        }
    }
}
