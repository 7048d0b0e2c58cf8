/// y = max(x, 0); the gradient passes where y > 0.
public func relu(_ x: Variable, tape: Tape?) -> Variable {
    var y = x.value
    y.storage.withUnsafeMutableBufferPointer { ys in
        for i in 0..<ys.count { ys[i] = max(ys[i], 0) }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        out.value.storage.withUnsafeBufferPointer { ys in
            gy.storage.withUnsafeBufferPointer { g in
                x.withGradient { gx in
                    for i in 0..<gx.count where ys[i] > 0 { gx[i] += g[i] }
                }
            }
        }
    }
    return out
}
