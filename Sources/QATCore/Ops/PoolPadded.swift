import CKernels
import QATIO

// Max and average pooling with rectangular windows and strides, asymmetric padding and ceil mode
// (ONNX MaxPool/AveragePool, PyTorch max_pool2d/avg_pool2d), and global average pooling.
//
// x: [N, C, H, W] → y: [N, C, Ho, Wo], Ho = slidingWindowCount(H, KH, SH, top, bottom, ceilMode)
// (the same for Wo). Windows are clipped to the input: max pooling treats padding as −∞ (it never
// wins), average pooling sums the in-bounds elements in scan order and multiplies by 1 / divisor,
// the divisor being the window clipped to the padded extent [−top, H + bottom) when
// `countIncludePad` (a ceil-mode window that hangs past the padding counts only up to its edge),
// else the number of in-bounds elements. A window with no element of x gives −∞ (max) or 0 (avg)
// and passes no gradient. Square windows and strides without padding whose shape ceil mode does
// not change take the original loops in Pool.swift (same bytes, same speed).

private struct PoolShape {
    let geometry: qat_pool_geometry
    let shape: [Int]
    let planes: Int
    /// Whether Pool.swift's square, unpadded loops compute exactly this pooling.
    let isPlainSquare: Bool

    init(_ op: String, _ x: [Int], kernel: Size2D, stride: Size2D, padding: Padding2D, ceilMode: Bool) {
        precondition(x.count == 4, "\(op): wants a 4-D input, got \(x)")
        precondition(kernel.height > 0 && kernel.width > 0 && stride.height > 0 && stride.width > 0
                     && padding.top >= 0 && padding.left >= 0 && padding.bottom >= 0 && padding.right >= 0,
                     "\(op): kernel \(kernel), stride \(stride) and padding \(padding) must be positive")
        let oh = slidingWindowCount(input: x[2], kernel: kernel.height, stride: stride.height,
                                    padBegin: padding.top, padEnd: padding.bottom, ceilMode: ceilMode)
        let ow = slidingWindowCount(input: x[3], kernel: kernel.width, stride: stride.width,
                                    padBegin: padding.left, padEnd: padding.right, ceilMode: ceilMode)
        precondition(oh > 0 && ow > 0, "\(op): input \(x) smaller than kernel \(kernel) with padding \(padding)")
        geometry = qat_pool_geometry(height: x[2], width: x[3], out_height: oh, out_width: ow,
                                     kernel_h: kernel.height, kernel_w: kernel.width,
                                     stride_h: stride.height, stride_w: stride.width,
                                     pad_top: padding.top, pad_left: padding.left,
                                     pad_bottom: padding.bottom, pad_right: padding.right)
        shape = [x[0], x[1], oh, ow]
        planes = x[0] * x[1]
        isPlainSquare = kernel.isSquare && stride.isSquare && padding == Padding2D(0)
            && oh == (x[2] - kernel.height) / stride.height + 1 && ow == (x[3] - kernel.width) / stride.width + 1
    }
}

public func maxPool2d(_ x: Variable, kernel: Size2D, stride: Size2D, padding: Padding2D, ceilMode: Bool,
                      tape: Tape?) -> Variable {
    let pool = PoolShape("maxPool2d", x.shape, kernel: kernel, stride: stride, padding: padding, ceilMode: ceilMode)
    if pool.isPlainSquare { return maxPool2d(x, kernel: kernel.height, stride: stride.height, tape: tape) }
    var y = Tensor(shape: pool.shape, storage: uninitializedFloats(pool.shape.reduce(1, *)))
    let record = needsPullback(tape, x)
    // Flat index into x of each window's maximum, kept for the pullback.
    // Every element is written by the forward (−1 for an empty window): no zero fill.
    var argmax = [Int32](unsafeUninitializedCapacity: record ? y.count : 0) { _, initialized in initialized = record ? y.count : 0 }
    withUnsafePointer(to: pool.geometry) { g in
        x.value.storage.withUnsafeBufferPointer { xs in
            y.storage.withUnsafeMutableBufferPointer { ys in
                argmax.withUnsafeMutableBufferPointer { am in
                    // Planes split over threads; each plane's outputs depend on that plane alone.
                    Parallel.forEachChunk(pool.planes, minimumChunk: 16) { planes in
                        qat_maxpool_padded_forward(xs.baseAddress!, ys.baseAddress!, record ? am.baseAddress! : nil,
                                                   g, planes.lowerBound, planes.upperBound)
                    }
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: record)
    guard record, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        withUnsafePointer(to: pool.geometry) { g in
            gy.storage.withUnsafeBufferPointer { gys in
                argmax.withUnsafeBufferPointer { am in
                    x.withGradient { gx in
                        // Each plane's outputs scatter into that plane only.
                        Parallel.forEachChunk(pool.planes, minimumChunk: 16) { planes in
                            qat_maxpool_padded_backward(gys.baseAddress!, am.baseAddress!, gx.baseAddress!,
                                                        g, planes.lowerBound, planes.upperBound)
                        }
                    }
                }
            }
        }
    }
    return out
}

public func avgPool2d(_ x: Variable, kernel: Size2D, stride: Size2D, padding: Padding2D, ceilMode: Bool,
                      countIncludePad: Bool, tape: Tape?) -> Variable {
    let pool = PoolShape("avgPool2d", x.shape, kernel: kernel, stride: stride, padding: padding, ceilMode: ceilMode)
    if pool.isPlainSquare { return avgPool2d(x, kernel: kernel.height, stride: stride.height, tape: tape) }
    let includePad: Int32 = countIncludePad ? 1 : 0
    var y = Tensor(shape: pool.shape, storage: uninitializedFloats(pool.shape.reduce(1, *)))
    withUnsafePointer(to: pool.geometry) { g in
        x.value.storage.withUnsafeBufferPointer { xs in
            y.storage.withUnsafeMutableBufferPointer { ys in
                Parallel.forEachChunk(pool.planes, minimumChunk: 16) { planes in
                    qat_avgpool_padded_forward(xs.baseAddress!, ys.baseAddress!, g, includePad,
                                               planes.lowerBound, planes.upperBound)
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        withUnsafePointer(to: pool.geometry) { g in
            gy.storage.withUnsafeBufferPointer { gys in
                x.withGradient { gx in
                    Parallel.forEachChunk(pool.planes, minimumChunk: 16) { planes in
                        qat_avgpool_padded_backward(gys.baseAddress!, gx.baseAddress!, g, includePad,
                                                    planes.lowerBound, planes.upperBound)
                    }
                }
            }
        }
    }
    return out
}

/// [N, C, H, W] → [N, C, 1, 1]: each plane's sum (float32, in scan order) times 1 / (H·W), as
/// avgPool2d with an H×W window. Backward spreads gy · 1 / (H·W) over the plane.
public func globalAveragePool(_ x: Variable, tape: Tape?) -> Variable {
    precondition(x.value.rank == 4, "globalAveragePool: wants a 4-D input, got \(x.shape)")
    let (planes, area) = (x.shape[0] * x.shape[1], x.shape[2] * x.shape[3])
    let factor = 1 / Float(area)
    var y = Tensor(shape: [x.shape[0], x.shape[1], 1, 1], storage: uninitializedFloats(planes))
    x.value.storage.withUnsafeBufferPointer { xs in
        y.storage.withUnsafeMutableBufferPointer { ys in
            for p in 0..<planes {
                var sum: Float = 0
                for i in (p * area)..<((p + 1) * area) { sum += xs[i] }
                ys[p] = sum * factor
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { gys in
            x.withGradient { gx in
                for p in 0..<planes {
                    let share = gys[p] * factor
                    for i in (p * area)..<((p + 1) * area) { gx[i] += share }
                }
            }
        }
    }
    return out
}
