import CKernels
import QATIO

/// a + b with numpy broadcasting over the full shapes (residual connections; [N, C, H, W] +
/// [1, C, 1, 1] for a constant operand). The gradient of an operand that was repeated is summed
/// over the repeated axes (in Double, in output order).
///
/// Same shapes take the original float loop (the residual add), whose bytes must not change.
public func add(_ a: Variable, _ b: Variable, tape: Tape?) -> Variable {
    if a.shape != b.shape { return broadcastAdd(a, b, tape: tape) }
    var y = Tensor(shape: a.shape, storage: uninitializedFloats(a.value.count))
    a.value.storage.withUnsafeBufferPointer { av in
        b.value.storage.withUnsafeBufferPointer { bv in
            y.storage.withUnsafeMutableBufferPointer { ys in qat_add_same(av.baseAddress!, bv.baseAddress!, ys.baseAddress!, ys.count) }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, a, b))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        for input in [a, b] where input.requiresGrad {
            gy.storage.withUnsafeBufferPointer { g in
                input.withGradient(overwritingFresh: { gx, overwrite in
                    qat_add_gradient(g.baseAddress!, gx.baseAddress!, gx.count, overwrite ? 1 : 0)
                })
            }
        }
    }
    return out
}

/// relu(a + b), bit for bit as `relu(add(a, b))`, in one forward pass and one backward pass per
/// operand (the residual add before a ResNet block's last ReLU). The pullback keeps y until the
/// model releases it, then ReLU's one-byte mask, as `relu` does. Operands of different shapes,
/// or one variable added to itself, take the two ops.
public func addReLU(_ a: Variable, _ b: Variable, tape: Tape?) -> Variable {
    guard a.shape == b.shape, a !== b else { return relu(add(a, b, tape: tape), tape: tape) }
    var y = Tensor(shape: a.shape, storage: uninitializedFloats(a.value.count))
    a.value.storage.withUnsafeBufferPointer { av in
        b.value.storage.withUnsafeBufferPointer { bv in
            y.storage.withUnsafeMutableBufferPointer { ys in
                Parallel.forEachChunk(ys.count, minimumChunk: pointwiseMinimumChunk) { r in
                    qat_add_relu_forward(av.baseAddress! + r.lowerBound, bv.baseAddress! + r.lowerBound,
                                         ys.baseAddress! + r.lowerBound, r.count)
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, a, b))
    guard out.requiresGrad, let tape else { return out }
    let saved = SavedOutputOrMask(out.value)
    out.whenReleasedUnkept { [weak saved] in saved?.shrink { ys, m, n in qat_relu_mask(ys, m, n) } }
    tape.record {
        guard let gy = out.grad else { return }
        for input in [a, b] where input.requiresGrad {
            gy.storage.withUnsafeBufferPointer { g in
                input.withGradient(overwritingFresh: { gx, overwrite in
                    Parallel.forEachChunk(gx.count, minimumChunk: pointwiseMinimumChunk) { r in
                        let (gyPart, gxPart) = (g.baseAddress! + r.lowerBound, gx.baseAddress! + r.lowerBound)
                        if let output = saved.output {
                            output.storage.withUnsafeBufferPointer { ys in
                                qat_add_relu_backward(ys.baseAddress! + r.lowerBound, gyPart, gxPart, r.count, overwrite ? 1 : 0)
                            }
                        } else {
                            saved.mask.withUnsafeBufferPointer { m in
                                qat_add_relu_masked_backward(m.baseAddress! + r.lowerBound, gyPart, gxPart, r.count,
                                                             overwrite ? 1 : 0)
                            }
                        }
                    }
                })
            }
        }
    }
    return out
}

private func broadcastAdd(_ a: Variable, _ b: Variable, tape: Tape?) -> Variable {
    let plan = broadcast("add", a, b)
    if let rows = RowBroadcast(plan, countA: a.value.count, countB: b.value.count) {
        return rowBroadcastAdd(a, b, rows, plan, tape: tape)
    }
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
                var sums = [Double](repeating: 0, count: input.shape.reduce(1, *))
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

/// The `RowBroadcast` layout ([N, C, H, W] + [1, C, 1, 1]): C loops, same bits as the general path.
private func rowBroadcastAdd(_ a: Variable, _ b: Variable, _ rows: RowBroadcast, _ plan: Broadcast,
                             tape: Tape?) -> Variable {
    let (big, small) = rows.bigIsA ? (a, b) : (b, a)
    let (bigValue, smallValue) = (big.value, small.value)
    var y = Tensor(shape: plan.shape, storage: uninitializedFloats(bigValue.count))
    bigValue.storage.withUnsafeBufferPointer { bv in
        smallValue.storage.withUnsafeBufferPointer { sv in
            y.storage.withUnsafeMutableBufferPointer { ys in
                rows.forEachRowChunk { r0, r1 in
                    qat_row_broadcast_add(bv.baseAddress!, sv.baseAddress!, ys.baseAddress!, rows.length, rows.smallCount, r0, r1)
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, a, b))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { g in
            if big.requiresGrad {
                big.withGradient(overwritingFresh: { gx, overwrite in
                    rows.forEachRowChunk { r0, r1 in
                        qat_row_broadcast_big_gradient(g.baseAddress!, nil, gx.baseAddress!, rows.length, rows.smallCount,
                                                       overwrite ? 1 : 0, r0, r1)
                    }
                })
            }
            if small.requiresGrad {
                var sums = [Double](repeating: 0, count: rows.smallCount)
                qat_row_broadcast_small_sums(g.baseAddress!, nil, &sums, rows.rows, rows.length, rows.smallCount)
                addReduced(sums, into: small)
            }
        }
    }
    return out
}
