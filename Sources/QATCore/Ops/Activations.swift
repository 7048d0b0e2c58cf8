import CKernels
import QATIO

// Element-wise activations of the ONNX/MobileNet layer set. Each propagates NaN in its forward
// (a NaN input gives a NaN output, so it cannot hide); the gradients at kinks follow PyTorch
// (docs/ALGORITHMS.md §6.2). The loops are C (CKernels/activations.c) so they vectorise.

/// y = min(max(x, min), max), ONNX Clip / PyTorch `clamp` (with min > max every y is max, as
/// numpy's clip that ONNX's reference uses).
///
/// Backward passes g where min ≤ x ≤ max, bounds included, as PyTorch's clamp backward; 0 outside
/// and at NaN. (relu6 keeps hardtanh's convention, 0 at both bounds.)
public func clip(_ x: Variable, min low: Float, max high: Float, tape: Tape?) -> Variable {
    pointwiseOnInput(x, tape: tape,
        forward: { xs, ys, n in qat_clip_forward(xs, ys, n, low, high) },
        mask: { xs, m, n in qat_clip_mask(xs, m, n, low, high) },
        backward: { xs, g, gx, n, overwrite in qat_clip_backward(xs, g, gx, n, low, high, overwrite ? 1 : 0) })
}

/// y = x for x > 0, negativeSlope · x otherwise (PyTorch `leaky_relu`, ONNX LeakyRelu).
///
/// Backward: g where x > 0, negativeSlope · g elsewhere (also at x = 0 and at NaN), as PyTorch.
public func leakyReLU(_ x: Variable, negativeSlope: Float, tape: Tape?) -> Variable {
    pointwiseOnInput(x, tape: tape,
        forward: { xs, ys, n in qat_leaky_relu_forward(xs, ys, n, negativeSlope) },
        backward: { xs, g, gx, n, overwrite in qat_leaky_relu_backward(xs, g, gx, n, negativeSlope, overwrite ? 1 : 0) })
}

/// y = 1 / (1 + e^−x). Backward: g · y · (1 − y).
public func sigmoid(_ x: Variable, tape: Tape?) -> Variable {
    pointwise(x, tape: tape,
        forward: { xs, ys, n in qat_sigmoid_forward(xs, ys, n) },
        backward: { ys, g, gx, n, overwrite in qat_sigmoid_backward(ys, g, gx, n, overwrite ? 1 : 0) })
}

/// y = min(max(alpha · x + beta, 0), 1), ONNX HardSigmoid (PyTorch's `hardsigmoid` is alpha = 1/6,
/// beta = 1/2).
///
/// Backward: alpha · g where 0 < y < 1, 0 at both bounds and at NaN, as PyTorch's hardsigmoid
/// backward (g / 6 only where −3 < x < 3).
public func hardSigmoid(_ x: Variable, alpha: Float, beta: Float, tape: Tape?) -> Variable {
    pointwise(x, tape: tape,
        forward: { xs, ys, n in qat_hard_sigmoid_forward(xs, ys, n, alpha, beta) },
        backward: { ys, g, gx, n, overwrite in qat_hard_sigmoid_backward(ys, g, gx, n, alpha, overwrite ? 1 : 0) })
}

/// y = x · relu6(x + 3) / 6 (ONNX HardSwish, PyTorch `hardswish`).
///
/// Backward as PyTorch: 0 where x < −3, g · (x / 3 + 1/2) where −3 ≤ x ≤ 3 (so −g/2 at x = −3 and
/// 3g/2 at x = 3), g elsewhere (x > 3, and NaN, which fails both tests).
public func hardSwish(_ x: Variable, tape: Tape?) -> Variable {
    pointwiseOnInput(x, tape: tape,
        forward: { xs, ys, n in qat_hard_swish_forward(xs, ys, n) },
        backward: { xs, g, gx, n, overwrite in qat_hard_swish_backward(xs, g, gx, n, overwrite ? 1 : 0) })
}
