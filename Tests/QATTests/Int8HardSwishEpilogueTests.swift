import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy

/// A conv with float output and the HardSwish after it (and the quantize after that) in one kernel
/// (conv2dDequantizedHardSwish…, an image or, depthwise, a plane at a time) gives the floats and
/// codes of the separate passes (conv2dDequantized, QATCore's hardSwish, quantize): MobileNet's
/// 1×1 expansions and head (7×7 and 14×14, several images per GEMM), depthwise 3×3 stride 1 and 2,
/// odd planes 1×1 … 15×15, channel counts not multiples of 16, a 3×3 and a grouped conv; every
/// path, with the flat depthwise kernel, its packed plane copy and the vectorised HardSwish on and off.
final class Int8HardSwishEpilogueTests: XCTestCase {
    typealias Path = Int8Kernels.Path

    /// The vectorised HardSwish (16 or 8 floats and a tail) gives the training op's bits around
    /// −3, 0 and 3, for ±0, ±∞, NaN, subnormals and large values, at every length 0 … 40.
    func testVectorHardSwishEqualsTheTrainingOp() {
        defer { Int8Kernels.vectoriseHardSwish(true) }
        var rng = SeededGenerator(seed: 1_515)
        var x: [Float] = [-3, 3, -0, 0, .infinity, -.infinity, .nan, -3.0000002, -2.9999998, 2.9999998, 3.0000002,
                          Float(bitPattern: 0x0001_16C2), -Float(bitPattern: 0x0001_16C2), 3e38, -3e38, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, -6, 6, -1.5, 1e-7, -1e-7]
        x += (0..<300).map { _ in Float.random(in: -8...8, using: &rng) }
        x.shuffle(using: &rng)
        for length in Array(0...40) + [x.count] {
            let part = Array(x.prefix(length))
            let expected = hardSwish(Variable(Tensor(shape: [max(part.count, 1)], storage: part.isEmpty ? [0] : part)), tape: nil)
                .value.storage.prefix(part.count).map(\.bitPattern)
            for vectorised in [true, false] {
                Int8Kernels.vectoriseHardSwish(vectorised)
                for path in Path.allCases where Int8Kernels.isSupported(path) {
                    XCTAssertEqual(Int8Kernels.hardSwish(part, path: path).map(\.bitPattern), expected,
                                   "\(path) length \(length) vectorised \(vectorised)")
                }
            }
        }
    }

    func testConvHardSwishEqualsThePasses() {
        defer {
            Int8Kernels.allowFlatDepthwise(true)
            Int8Kernels.allowPackedPlaneCopy(true)
            Int8Kernels.vectoriseHardSwish(true)
        }
        var rng = SeededGenerator(seed: 1_516)
        // (channels, height, width, output channels, kernel, stride, groups)
        var shapes: [(c: Int, h: Int, w: Int, oc: Int, k: Int, stride: Int, groups: Int)] = [
            (24, 7, 7, 96, 1, 1, 1), (16, 14, 14, 64, 1, 1, 1), (32, 7, 7, 96, 1, 1, 1), (5, 9, 11, 13, 1, 1, 1),
            (20, 1, 1, 9, 1, 1, 1), (4, 5, 7, 12, 3, 1, 1), (8, 7, 5, 6, 3, 1, 2), (3, 6, 6, 7, 3, 2, 1),
            (64, 14, 14, 64, 3, 2, 64), (96, 7, 7, 96, 3, 1, 96),
            // 4×4 planes, several images per GEMM (placed stores), and 2×2 planes with k ≥ 256 and
            // ≥ 16 images (images as columns): both keep the HardSwish epilogue's own paths.
            (16, 4, 4, 20, 3, 1, 1), (64, 2, 2, 24, 3, 1, 1)]
        for size in [1, 2, 3, 5, 7, 8, 13, 15] {
            shapes.append((17, size, size, 17, 3, 1, 17))
            shapes.append((9, size, size, 18, 3, 2, 9))
        }
        for s in shapes {
            let pad = s.k / 2
            let batch = s.h * s.w <= 8 && s.c >= 64 ? 17 : 5
            let g = Int8ConvGeometry(batch: batch, channels: s.c, height: s.h, width: s.w, outputChannels: s.oc, kernelHeight: s.k,
                                     kernelWidth: s.k, strideHeight: s.stride, strideWidth: s.stride,
                                     padTop: pad, padLeft: pad, padBottom: pad, padRight: pad, groups: s.groups)
            let c = Int8ConvTests.randomCase(g, relu6: false, &rng)
            // Scales that put the floats across −3 … 3, where HardSwish bends.
            let scales = c.scales.map { $0 * Float.random(in: 0.5...4, using: &rng) }
            let grids = [QuantizationGrid(bits: 8, scale: 0.021, offset: Int.random(in: -10...10, using: &rng)),
                         QuantizationGrid(bits: 8, scale: 0.05, offset: -3, roundMode: .halfUp, narrowRange: true),
                         QuantizationGrid(bits: 8, scale: 0.013, offset: 100, roundMode: .stdRound)]
            for offsets in [c.offsets, nil] {
                let conv = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, scales: scales,
                                                         offsets: offsets, path: .portable, algorithm: .im2colGEMM)
                let swished = hardSwish(Variable(Tensor(shape: [conv.count], storage: conv)), tape: nil).value.storage
                XCTAssertTrue(swished.contains { $0 < -0.1 } && swished.contains { $0 > 3 }, "\(g): no floats around the bends")
                for (flat, packed) in [(true, true), (false, true), (true, false)] {
                    Int8Kernels.allowFlatDepthwise(flat)
                    Int8Kernels.allowPackedPlaneCopy(packed)
                    for vectorised in [true, false] {
                        Int8Kernels.vectoriseHardSwish(vectorised)
                        for path in Path.allCases where Int8Kernels.isSupported(path) {
                            let label = "\(path) \(g) offsets \(offsets != nil) flat \(flat) packed \(packed) vectorised \(vectorised)"
                            let floats = Int8Kernels.conv2dDequantizedHardSwish(c.x, g, inputZeroPoint: c.zero, weights: c.weights,
                                                                                bias: c.bias, scales: scales, offsets: offsets, path: path)
                            XCTAssertEqual(floats.map(\.bitPattern), swished.map(\.bitPattern), label)
                            for grid in grids {
                                let codes = Int8Kernels.conv2dDequantizedHardSwishQuantized(
                                    c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, scales: scales,
                                    offsets: offsets, grid, path: path)
                                XCTAssertEqual(codes, Int8Kernels.quantize(swished, grid, path: .portable), "\(label) \(grid)")
                            }
                        }
                    }
                }
            }
        }
    }
}
