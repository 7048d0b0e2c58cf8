import CKernels
import QATIO

/// y = max(x, 0); the gradient passes where y > 0.
public func relu(_ x: Variable, tape: Tape?) -> Variable {
    pointwiseMasked(x, tape: tape,
              forward: { xs, ys, n in qat_relu_forward(xs, ys, n) },
              mask: { ys, m, n in qat_relu_mask(ys, m, n) },
              backward: { ys, g, gx, n, overwrite in qat_relu_backward_into(ys, g, gx, n, overwrite ? 1 : 0) })
}
