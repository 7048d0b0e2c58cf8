import QATIO

/// [N, ...] → [N, product of the rest]; the gradient is reshaped back.
public func flatten(_ x: Variable, tape: Tape?) -> Variable {
    let n = x.shape.first ?? 1
    // The output shares x's storage: whoever keeps the output keeps x.
    let out = Variable(x.valueForPullback().reshaped([n, x.value.count / max(n, 1)]),
                       requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { g in
            x.withGradient { gx in for i in 0..<gx.count { gx[i] += g[i] } }
        }
    }
    return out
}
