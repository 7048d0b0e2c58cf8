import CKernels
import QATIO

/// y = max(x, 0); the gradient passes where y > 0.
public func relu(_ x: Variable, tape: Tape?) -> Variable {
    var y = Tensor(shape: x.shape, storage: uninitializedFloats(x.value.count))
    x.value.storage.withUnsafeBufferPointer { xs in
        y.storage.withUnsafeMutableBufferPointer { ys in
            qat_relu_forward(xs.baseAddress!, ys.baseAddress!, xs.count)
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        out.value.storage.withUnsafeBufferPointer { ys in
            gy.storage.withUnsafeBufferPointer { g in
                x.withGradient { gx in qat_relu_backward(ys.baseAddress!, g.baseAddress!, gx.baseAddress!, gx.count) }
            }
        }
    }
    return out
}
