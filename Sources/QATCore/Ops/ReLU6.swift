import CKernels
import QATIO

/// y = min(max(x, 0), 6), PyTorch's `relu6` (= `hardtanh(x, 0, 6)`). NaN passes through, as in
/// `relu`, so it cannot hide; −0 stays −0.
///
/// Backward passes g where 0 < y < 6 and gives 0 elsewhere: at exactly x = 0 and x = 6 the
/// gradient is 0, as in PyTorch's hardtanh backward (g only where min_val < x < max_val), and at
/// NaN it is 0, as in `relu` (docs/ALGORITHMS.md §6.2).
public func relu6(_ x: Variable, tape: Tape?) -> Variable {
    pointwiseMasked(x, tape: tape,
              forward: { xs, ys, n in qat_relu6_forward(xs, ys, n) },
              mask: { ys, m, n in qat_relu6_mask(ys, m, n) },
              backward: { ys, g, gx, n, overwrite in qat_relu6_backward(ys, g, gx, n, overwrite ? 1 : 0) })
}
