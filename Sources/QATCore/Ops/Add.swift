import QATIO

/// Elementwise sum of two same-shaped tensors (residual connections).
public func add(_ a: Variable, _ b: Variable, tape: Tape?) -> Variable {
    precondition(a.shape == b.shape, "add: shapes \(a.shape) and \(b.shape) differ")
    var y = a.value
    y.add(b.value)
    let out = Variable(y, requiresGrad: needsPullback(tape, a, b))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        for input in [a, b] where input.requiresGrad {
            gy.storage.withUnsafeBufferPointer { g in
                input.withGradient { gx in for i in 0..<gx.count { gx[i] += g[i] } }
            }
        }
    }
    return out
}
