import QATIO

/// An elementwise op whose gradient depends only on its output and the upstream gradient (ReLU,
/// ReLU6): `forward(x, y)` fills y; `backward(y, gy, gx)` adds into gx. Keeps the tape plumbing in
/// one place so each such op is its two loops.
func pointwise(_ x: Variable, tape: Tape?,
               forward: (UnsafeBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) -> Void,
               backward: @escaping (UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) -> Void)
    -> Variable {
    var y = Tensor(shape: x.shape, storage: uninitializedFloats(x.value.count))
    x.value.storage.withUnsafeBufferPointer { xs in
        y.storage.withUnsafeMutableBufferPointer { ys in forward(xs, ys) }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        out.value.storage.withUnsafeBufferPointer { ys in
            gy.storage.withUnsafeBufferPointer { g in
                x.withGradient { gx in backward(ys, g, gx) }
            }
        }
    }
    return out
}

/// Like `pointwise`, for ops whose gradient needs the input (clip, leaky ReLU, hard swish):
/// `backward(x, gy, gx)` adds into gx. The input's value is kept as it was when the op ran.
func pointwiseOnInput(_ x: Variable, tape: Tape?,
                      forward: (UnsafeBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) -> Void,
                      backward: @escaping (UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) -> Void)
    -> Variable {
    let input = x.value
    var y = Tensor(shape: x.shape, storage: uninitializedFloats(input.count))
    input.storage.withUnsafeBufferPointer { xs in
        y.storage.withUnsafeMutableBufferPointer { ys in forward(xs, ys) }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        input.storage.withUnsafeBufferPointer { xs in
            gy.storage.withUnsafeBufferPointer { g in
                x.withGradient { gx in backward(xs, g, gx) }
            }
        }
    }
    return out
}
