import Foundation
import QATIO

// Element-wise activations of the ONNX/MobileNet layer set. Each propagates NaN in its forward
// (a NaN input gives a NaN output, so it cannot hide); the gradients at kinks follow PyTorch
// (docs/ALGORITHMS.md §6.2).

/// y = min(max(x, min), max), ONNX Clip / PyTorch `clamp` (with min > max every y is max, as
/// numpy's clip that ONNX's reference uses).
///
/// Backward passes g where min ≤ x ≤ max, bounds included, as PyTorch's clamp backward; 0 outside
/// and at NaN. (relu6 keeps hardtanh's convention, 0 at both bounds.)
public func clip(_ x: Variable, min low: Float, max high: Float, tape: Tape?) -> Variable {
    pointwiseOnInput(x, tape: tape,
        forward: { xs, ys in
            for i in xs.indices { let raised = xs[i] < low ? low : xs[i]; ys[i] = raised > high ? high : raised }
        },
        backward: { xs, g, gx in
            for i in gx.indices { gx[i] += xs[i] >= low && xs[i] <= high ? g[i] : 0 }
        })
}

/// y = x for x > 0, negativeSlope · x otherwise (PyTorch `leaky_relu`, ONNX LeakyRelu).
///
/// Backward: g where x > 0, negativeSlope · g elsewhere (also at x = 0 and at NaN), as PyTorch.
public func leakyReLU(_ x: Variable, negativeSlope: Float, tape: Tape?) -> Variable {
    pointwiseOnInput(x, tape: tape,
        forward: { xs, ys in
            for i in xs.indices { let v = xs[i]; ys[i] = v > 0 ? v : v * negativeSlope }
        },
        backward: { xs, g, gx in
            for i in gx.indices { gx[i] += xs[i] > 0 ? g[i] : g[i] * negativeSlope }
        })
}

/// y = 1 / (1 + e^−x). Backward: g · y · (1 − y).
public func sigmoid(_ x: Variable, tape: Tape?) -> Variable {
    pointwise(x, tape: tape,
        forward: { xs, ys in
            for i in xs.indices { ys[i] = 1 / (1 + expf(-xs[i])) }
        },
        backward: { ys, g, gx in
            for i in gx.indices { gx[i] += g[i] * ys[i] * (1 - ys[i]) }
        })
}

/// y = min(max(alpha · x + beta, 0), 1), ONNX HardSigmoid (PyTorch's `hardsigmoid` is alpha = 1/6,
/// beta = 1/2).
///
/// Backward: alpha · g where 0 < y < 1, 0 at both bounds and at NaN, as PyTorch's hardsigmoid
/// backward (g / 6 only where −3 < x < 3).
public func hardSigmoid(_ x: Variable, alpha: Float, beta: Float, tape: Tape?) -> Variable {
    pointwise(x, tape: tape,
        forward: { xs, ys in
            for i in xs.indices { let t = alpha * xs[i] + beta; ys[i] = t < 0 ? 0 : (t > 1 ? 1 : t) }
        },
        backward: { ys, g, gx in
            for i in gx.indices { gx[i] += ys[i] > 0 && ys[i] < 1 ? alpha * g[i] : 0 }
        })
}

/// y = x · relu6(x + 3) / 6 (ONNX HardSwish, PyTorch `hardswish`).
///
/// Backward as PyTorch: 0 where x < −3, g · (x / 3 + 1/2) where −3 ≤ x ≤ 3 (so −g/2 at x = −3 and
/// 3g/2 at x = 3), g elsewhere (x > 3, and NaN, which fails both tests).
public func hardSwish(_ x: Variable, tape: Tape?) -> Variable {
    pointwiseOnInput(x, tape: tape,
        forward: { xs, ys in
            for i in xs.indices {
                let v = xs[i], shifted = v + 3
                ys[i] = v * (shifted < 0 ? 0 : (shifted > 6 ? 6 : shifted)) / 6
            }
        },
        backward: { xs, g, gx in
            for i in gx.indices {
                let v = xs[i]
                gx[i] += v < -3 ? 0 : (v <= 3 ? g[i] * (v / 3 + 0.5) : g[i])
            }
        })
}
