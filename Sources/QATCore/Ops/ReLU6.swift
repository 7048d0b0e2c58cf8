import QATIO

/// y = min(max(x, 0), 6), PyTorch's `relu6` (= `hardtanh(x, 0, 6)`). NaN passes through, as in
/// `relu`, so it cannot hide; −0 stays −0.
///
/// Backward passes g where 0 < y < 6 and gives 0 elsewhere: at exactly x = 0 and x = 6 the
/// gradient is 0, as in PyTorch's hardtanh backward (g only where min_val < x < max_val), and at
/// NaN it is 0, as in `relu` (docs/ALGORITHMS.md §6.2).
public func relu6(_ x: Variable, tape: Tape?) -> Variable {
    pointwise(x, tape: tape,
              forward: { xs, ys in
                  for i in xs.indices { let v = xs[i]; ys[i] = v < 0 ? 0 : (v > 6 ? 6 : v) }
              },
              backward: { ys, g, gx in
                  for i in gx.indices { gx[i] += ys[i] > 0 && ys[i] < 6 ? g[i] : 0 }
              })
}
