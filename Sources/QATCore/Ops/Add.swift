import QATIO

/// a + b with numpy broadcasting over the full shapes (residual connections; [N, C, H, W] +
/// [1, C, 1, 1] for a constant operand). The gradient of an operand that was repeated is summed
/// over the repeated axes (in Double, in output order).
///
/// Same shapes take the original loop (the residual add), whose bytes and speed must not change.
public func add(_ a: Variable, _ b: Variable, tape: Tape?) -> Variable {
    if a.shape != b.shape { return broadcastAdd(a, b, tape: tape) }
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

private func broadcastAdd(_ a: Variable, _ b: Variable, tape: Tape?) -> Variable {
    let plan = broadcast("add", a, b)
    var y = Tensor(shape: plan.shape, storage: uninitializedFloats(plan.shape.reduce(1, *)))
    let (n, sa, sb) = (plan.rowLength, plan.rowStrideA, plan.rowStrideB)
    a.value.storage.withUnsafeBufferPointer { av in
        b.value.storage.withUnsafeBufferPointer { bv in
            y.storage.withUnsafeMutableBufferPointer { ys in
                plan.forEachRow { o, ia, ib in
                    for j in 0..<n { ys[o + j] = av[ia + j * sa] + bv[ib + j * sb] }
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, a, b))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { g in
            for (input, isA) in [(a, true), (b, false)] where input.requiresGrad {
                var sums = [Double](repeating: 0, count: input.value.count)
                let stride = isA ? sa : sb
                plan.forEachRow { o, ia, ib in
                    let base = isA ? ia : ib
                    for j in 0..<n { sums[base + j * stride] += Double(g[o + j]) }
                }
                addReduced(sums, into: input)
            }
        }
    }
    return out
}
