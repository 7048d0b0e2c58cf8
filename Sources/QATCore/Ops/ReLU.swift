import CKernels
import QATIO

/// y = max(x, 0); the gradient passes where y > 0.
public func relu(_ x: Variable, tape: Tape?) -> Variable {
    pointwise(x, tape: tape,
              forward: { xs, ys in qat_relu_forward(xs.baseAddress!, ys.baseAddress!, xs.count) },
              backward: { ys, g, gx in qat_relu_backward(ys.baseAddress!, g.baseAddress!, gx.baseAddress!, gx.count) })
}
