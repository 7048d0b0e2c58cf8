import QATIO

/// a · b element-wise with numpy broadcasting over the full shapes (squeeze-and-excitation:
/// [N, C, H, W] · [N, C, 1, 1]). Backward: da = Σ gy · b and db = Σ gy · a, each summed over the
/// axes along which that operand was repeated (in Double, in output order).
public func multiply(_ a: Variable, _ b: Variable, tape: Tape?) -> Variable {
    let plan = broadcast("multiply", a, b)
    let (av, bv) = (a.value, b.value)
    var y = Tensor(shape: plan.shape, storage: uninitializedFloats(plan.shape.reduce(1, *)))
    let (n, sa, sb) = (plan.rowLength, plan.rowStrideA, plan.rowStrideB)
    av.storage.withUnsafeBufferPointer { ap in
        bv.storage.withUnsafeBufferPointer { bp in
            y.storage.withUnsafeMutableBufferPointer { ys in
                plan.forEachRow { o, ia, ib in
                    for j in 0..<n { ys[o + j] = ap[ia + j * sa] * bp[ib + j * sb] }
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, a, b))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { g in
            av.storage.withUnsafeBufferPointer { ap in
                bv.storage.withUnsafeBufferPointer { bp in
                    if a.requiresGrad {
                        var sums = [Double](repeating: 0, count: av.count)
                        plan.forEachRow { o, ia, ib in
                            for j in 0..<n { sums[ia + j * sa] += Double(g[o + j] * bp[ib + j * sb]) }
                        }
                        addReduced(sums, into: a)
                    }
                    if b.requiresGrad {
                        var sums = [Double](repeating: 0, count: bv.count)
                        plan.forEachRow { o, ia, ib in
                            for j in 0..<n { sums[ib + j * sb] += Double(g[o + j] * ap[ia + j * sa]) }
                        }
                        addReduced(sums, into: b)
                    }
                }
            }
        }
    }
    return out
}
