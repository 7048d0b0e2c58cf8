import CKernels
import QATIO

/// Max and average pooling over square windows, no padding.
///
/// x: [N, C, H, W] → y: [N, C, (H − K) / S + 1, (W − K) / S + 1]
private func pooledShape(_ x: [Int], kernel: Int, stride: Int) -> [Int] {
    precondition(x.count == 4 && x[2] >= kernel && x[3] >= kernel, "pool: input \(x) smaller than kernel \(kernel)")
    return [x[0], x[1], (x[2] - kernel) / stride + 1, (x[3] - kernel) / stride + 1]
}

public func maxPool2d(_ x: Variable, kernel: Int, stride: Int, tape: Tape?) -> Variable {
    let shape = pooledShape(x.shape, kernel: kernel, stride: stride)
    let (planes, h, w, oh, ow) = (shape[0] * shape[1], x.shape[2], x.shape[3], shape[2], shape[3])
    var y = Tensor(shape: shape, storage: uninitializedFloats(shape.reduce(1, *)))
    let record = needsPullback(tape, x)
    // Flat index of each window's maximum (the first one on ties), kept for the pullback.
    var argmax = [Int32](repeating: 0, count: record ? y.count : 0)
    x.value.storage.withUnsafeBufferPointer { xs in
        y.storage.withUnsafeMutableBufferPointer { ys in
            argmax.withUnsafeMutableBufferPointer { am in
                // Planes split over threads; each plane's outputs depend on that plane alone.
                Parallel.forEachChunk(planes, minimumChunk: 16) { chunk in
                    let (inOffset, outOffset) = (chunk.lowerBound * h * w, chunk.lowerBound * oh * ow)
                    qat_maxpool_forward(xs.baseAddress! + inOffset, ys.baseAddress! + outOffset,
                                        record ? am.baseAddress! + outOffset : nil,
                                        chunk.count, h, w, kernel, stride)
                    // argmax holds flat indices into the chunk; make them indices into x.
                    if record && inOffset != 0 {
                        for o in outOffset..<(outOffset + chunk.count * oh * ow) { am[o] += Int32(inOffset) }
                    }
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: record)
    guard record, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { g in
            argmax.withUnsafeBufferPointer { am in
                x.withGradient { gx in
                    // Without overlap (stride ≥ kernel) each plane's outputs scatter into that plane
                    // only, so planes split safely over threads.
                    let chunks = stride >= kernel ? planes : 1
                    Parallel.forEachChunk(chunks, minimumChunk: 16) { chunk in
                        let per = gy.count / chunks
                        qat_maxpool_backward(g.baseAddress!, am.baseAddress!, gx.baseAddress!,
                                             chunk.lowerBound * per, chunk.upperBound * per)
                    }
                }
            }
        }
    }
    return out
}

public func avgPool2d(_ x: Variable, kernel: Int, stride: Int, tape: Tape?) -> Variable {
    let shape = pooledShape(x.shape, kernel: kernel, stride: stride)
    let (planes, h, w, oh, ow) = (shape[0] * shape[1], x.shape[2], x.shape[3], shape[2], shape[3])
    let inverseArea = 1 / Float(kernel * kernel)
    var y = Tensor(shape: shape)
    x.value.storage.withUnsafeBufferPointer { xs in
        y.storage.withUnsafeMutableBufferPointer { ys in
            for p in 0..<planes {
                for i in 0..<oh {
                    for j in 0..<ow {
                        var sum: Float = 0
                        for ki in 0..<kernel {
                            let row = p * h * w + (i * stride + ki) * w + j * stride
                            for kj in 0..<kernel { sum += xs[row + kj] }
                        }
                        ys[(p * oh + i) * ow + j] = sum * inverseArea
                    }
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        x.withGradient { gx in
            for p in 0..<planes {
                for i in 0..<oh {
                    for j in 0..<ow {
                        let share = gy.storage[(p * oh + i) * ow + j] * inverseArea
                        for ki in 0..<kernel {
                            let row = p * h * w + (i * stride + ki) * w + j * stride
                            for kj in 0..<kernel { gx[row + kj] += share }
                        }
                    }
                }
            }
        }
    }
    return out
}
