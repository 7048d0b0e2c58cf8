import CKernels
import QATIO

/// a · b element-wise with numpy broadcasting over the full shapes (squeeze-and-excitation:
/// [N, C, H, W] · [N, C, 1, 1]). Backward: da = Σ gy · b and db = Σ gy · a, each summed over the
/// axes along which that operand was repeated (in Double, in output order).
///
/// Same shapes and the `RowBroadcast` layout run C loops that add in the same order as the
/// general path below, so all give the same bits.
public func multiply(_ a: Variable, _ b: Variable, tape: Tape?) -> Variable {
    let plan = broadcast("multiply", a, b)
    if a.shape == b.shape && RowBroadcast.enabled { return multiplySameShape(a, b, tape: tape) }
    if let rows = RowBroadcast(plan, countA: a.value.count, countB: b.value.count) {
        return rowBroadcastMultiply(a, b, rows, plan, tape: tape)
    }
    let (av, bv) = (a.valueForPullback(), b.valueForPullback())   // each gradient reads the other value
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

private func multiplySameShape(_ a: Variable, _ b: Variable, tape: Tape?) -> Variable {
    let (av, bv) = (a.valueForPullback(), b.valueForPullback())   // each gradient reads the other value
    var y = Tensor(shape: av.shape, storage: uninitializedFloats(av.count))
    av.storage.withUnsafeBufferPointer { ap in
        bv.storage.withUnsafeBufferPointer { bp in
            y.storage.withUnsafeMutableBufferPointer { ys in qat_multiply_same(ap.baseAddress!, bp.baseAddress!, ys.baseAddress!, ys.count) }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, a, b))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { g in
            for (input, other) in [(a, bv), (b, av)] where input.requiresGrad {
                other.storage.withUnsafeBufferPointer { o in
                    input.withGradient(overwritingFresh: { gx, overwrite in
                        qat_multiply_gradient(g.baseAddress!, o.baseAddress!, gx.baseAddress!, gx.count, overwrite ? 1 : 0)
                    })
                }
            }
        }
    }
    return out
}

/// [N, C, H, W] · [N, C, 1, 1] (squeeze-and-excitation) and the like, see `RowBroadcast`.
private func rowBroadcastMultiply(_ a: Variable, _ b: Variable, _ rows: RowBroadcast, _ plan: Broadcast,
                                  tape: Tape?) -> Variable {
    let (big, small) = rows.bigIsA ? (a, b) : (b, a)
    let (bigValue, smallValue) = (big.valueForPullback(), small.valueForPullback())
    var y = Tensor(shape: plan.shape, storage: uninitializedFloats(bigValue.count))
    bigValue.storage.withUnsafeBufferPointer { bv in
        smallValue.storage.withUnsafeBufferPointer { sv in
            y.storage.withUnsafeMutableBufferPointer { ys in
                rows.forEachRowChunk { r0, r1 in
                    qat_row_broadcast_multiply(bv.baseAddress!, sv.baseAddress!, ys.baseAddress!, rows.length,
                                               rows.smallCount, r0, r1)
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, a, b))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { g in
            bigValue.storage.withUnsafeBufferPointer { bv in
                smallValue.storage.withUnsafeBufferPointer { sv in
                    if big.requiresGrad {
                        big.withGradient(overwritingFresh: { gx, overwrite in
                            rows.forEachRowChunk { r0, r1 in
                                qat_row_broadcast_big_gradient(g.baseAddress!, sv.baseAddress!, gx.baseAddress!, rows.length,
                                                               rows.smallCount, overwrite ? 1 : 0, r0, r1)
                            }
                        })
                    }
                    if small.requiresGrad {
                        var sums = [Double](repeating: 0, count: rows.smallCount)
                        qat_row_broadcast_small_sums(g.baseAddress!, bv.baseAddress!, &sums, rows.rows, rows.length,
                                                     rows.smallCount)
                        addReduced(sums, into: small)
                    }
                }
            }
        }
    }
    return out
}
