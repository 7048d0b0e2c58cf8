import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy

/// A conv with float output fused with ReLU and a max pool, pooled on its int32 accumulators
/// (VNNI: planes up to 32 wide and 16 output columns, resnet18's stem; AVX2: any width, column
/// strides 1 and 2, and resnet18's stem pool on even planes 18 to 32 wide in registers) equals the separate
/// passes (conv2dDequantized, the training ReLU, the training pool) bit for bit, with the
/// accumulator pool on and off, on every path: widths 1 … 45 around the vector edges, strides 1,
/// 2 and 3 (the AVX2 kernel's fallback), rectangular windows, padding, ceil mode, offsets or none, and a negative or zero scale
/// (where pooling accumulators would differ: the kernel must fall back to the float pool).
final class Int8PoolAccumulatorTests: XCTestCase {
    typealias Path = Int8Kernels.Path
    typealias PoolCase = Int8FloatNodeTests.PoolCase

    func testAccumulatorPoolEqualsDequantizeReLUThenFloatPool() {
        defer { Int8Kernels.poolAccumulators(true) }
        var rng = SeededGenerator(seed: 1_501)
        // (channels, height, width, conv stride): output planes of 28, 32, 33 (too wide for VNNI), 16, 17, 5, 1, 45 columns,
        // and 18, 22, 24 (the AVX2 stem pool's other vector edges; 2 and 5 rows).
        let convs: [(c: Int, h: Int, w: Int, stride: Int)] = [(1, 28, 28, 1), (4, 6, 32, 1), (4, 5, 33, 1), (3, 9, 16, 1),
                                                              (8, 7, 17, 1), (4, 11, 9, 2), (1, 3, 1, 1), (2, 4, 45, 1),
                                                              (2, 5, 18, 1), (1, 2, 22, 1), (3, 7, 24, 1)]
        let pools = [PoolCase(height: 0, width: 0, kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(1), ceilMode: false),
                     PoolCase(height: 0, width: 0, kernel: Size2D(2), stride: Size2D(1), padding: Padding2D(0), ceilMode: false),
                     PoolCase(height: 0, width: 0, kernel: Size2D(height: 2, width: 3), stride: Size2D(height: 2, width: 1),
                              padding: Padding2D(top: 1, left: 0, bottom: 0, right: 1), ceilMode: true),
                     PoolCase(height: 0, width: 0, kernel: Size2D(height: 1, width: 2), stride: Size2D(height: 1, width: 2),
                              padding: Padding2D(0), ceilMode: true),
                     PoolCase(height: 0, width: 0, kernel: Size2D(3), stride: Size2D(3), padding: Padding2D(1), ceilMode: true),
                     PoolCase(height: 0, width: 0, kernel: Size2D(height: 2, width: 5), stride: Size2D(height: 1, width: 2),
                              padding: Padding2D(top: 0, left: 2, bottom: 1, right: 2), ceilMode: false),
                     // Windows wholly in the padding: the first and last columns, and (1 × 1 planes) rows.
                     PoolCase(height: 0, width: 0, kernel: Size2D(height: 1, width: 1), stride: Size2D(2),
                              padding: Padding2D(1), ceilMode: false)]
        for conv in convs {
            let g = Int8ConvGeometry(batch: 3, channels: conv.c, height: conv.h, width: conv.w, outputChannels: 5, kernelHeight: 3,
                                     kernelWidth: 3, strideHeight: conv.stride, strideWidth: conv.stride,
                                     padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: 1)
            let c = Int8ConvTests.randomCase(g, relu6: false, &rng)
            let flipped = c.scales.enumerated().map { $0.offset == 1 ? -$0.element : $0.offset == 3 ? 0 : $0.element }
            for scales in [c.scales, flipped] {
                for offsets in [c.offsets, nil, c.scales.map { _ in Float.random(in: -0.5...0.5, using: &rng) }] {
                    let plain = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                              scales: scales, offsets: offsets, path: .portable, algorithm: .im2colGEMM)
                    for var pc in pools {
                        (pc.height, pc.width) = (g.outputHeight, g.outputWidth)
                        let pool = pc.geometry
                        guard pool.outputHeight > 0 && pool.outputWidth > 0 else { continue }
                        for withReLU in [false, true] {
                            let shape = [g.batch, g.outputChannels, g.outputHeight, g.outputWidth]
                            let activated = withReLU ? relu(Variable(Tensor(shape: shape, storage: plain)), tape: nil).value.storage : plain
                            let expected = pc.floatPool(activated, planes: g.batch * g.outputChannels).map(\.bitPattern)
                            for path in Path.allCases where Int8Kernels.isSupported(path) {
                                for allowed in [true, false] {
                                    Int8Kernels.poolAccumulators(allowed)
                                    let fused = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights,
                                                                              bias: c.bias, scales: scales, offsets: offsets,
                                                                              relu: withReLU, pool: pool, path: path)
                                    XCTAssertEqual(fused.map(\.bitPattern), expected,
                                                   "\(path) accumulators \(allowed) ReLU \(withReLU) \(g) \(pool) scales \(scales)")
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
