import QATIO

/// Joins tensors along `axis`; all other axes must agree. Backward hands each input its slice of
/// the gradient.
public func concat(_ xs: [Variable], axis: Int, tape: Tape?) -> Variable {
    precondition(!xs.isEmpty, "concat: no inputs")
    let first = xs[0].shape
    precondition(axis >= 0 && axis < first.count, "concat: axis \(axis) outside shape \(first)")
    for x in xs {
        precondition(x.shape.count == first.count
                     && zip(x.shape, first).enumerated().allSatisfy { $0.offset == axis || $0.element.0 == $0.element.1 },
                     "concat: shape \(x.shape) does not fit \(first) along axis \(axis)")
    }
    // Each input is `outer` blocks of `block` values; the output interleaves them block by block.
    let outer = first[..<axis].reduce(1, *)
    let inner = first[(axis + 1)...].reduce(1, *)
    let blocks = xs.map { $0.shape[axis] * inner }
    let rowLength = blocks.reduce(0, +)
    var shape = first
    shape[axis] = xs.reduce(0) { $0 + $1.shape[axis] }
    var y = Tensor(shape: shape, storage: uninitializedFloats(outer * rowLength))
    y.storage.withUnsafeMutableBufferPointer { ys in
        var offset = 0
        for (x, block) in zip(xs, blocks) {
            x.value.storage.withUnsafeBufferPointer { xv in
                for o in 0..<outer {
                    (ys.baseAddress! + o * rowLength + offset).update(from: xv.baseAddress! + o * block, count: block)
                }
            }
            offset += block
        }
    }
    let out = Variable(y, requiresGrad: tape != nil && xs.contains { $0.requiresGrad })
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { g in
            var offset = 0
            for (x, block) in zip(xs, blocks) {
                if x.requiresGrad {
                    x.withGradient { gx in
                        for o in 0..<outer {
                            for j in 0..<block { gx[o * block + j] += g[o * rowLength + offset + j] }
                        }
                    }
                }
                offset += block
            }
        }
    }
    return out
}
