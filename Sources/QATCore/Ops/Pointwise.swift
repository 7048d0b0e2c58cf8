import QATIO

/// The forward loop of an element-wise op: `forward(x, y, count)` fills y[0..<count].
typealias PointwiseForward = (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
/// The backward loop: `backward(saved, gy, gx, count, overwrite)` adds into gx (overwrite false) or
/// stores 0 + value (overwrite true, gx fresh and uninitialised); `saved` is y or x, see below.
typealias PointwiseBackward = (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Bool) -> Void

/// An elementwise op whose gradient depends only on its output and the upstream gradient (ReLU,
/// ReLU6, sigmoid, hard sigmoid): `backward` gets y. Keeps the tape plumbing in one place so each
/// such op is its two loops.
func pointwise(_ x: Variable, tape: Tape?, forward: PointwiseForward,
               backward: @escaping PointwiseBackward) -> Variable {
    let y = runPointwise(x.value, forward)
    let out = Variable(y, requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {   // keeps y itself: the model may release `out`'s value before backward
        guard let gy = out.grad else { return }
        runPointwiseBackward(saved: y, gy, into: x, backward)
    }
    return out
}

/// Like `pointwise`, for ops whose gradient needs the input (clip, leaky ReLU, hard swish):
/// `backward` gets x, kept as it was when the op ran.
func pointwiseOnInput(_ x: Variable, tape: Tape?, forward: PointwiseForward,
                      backward: @escaping PointwiseBackward) -> Variable {
    let input = x.value
    let out = Variable(runPointwise(input, forward), requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        runPointwiseBackward(saved: input, gy, into: x, backward)
    }
    return out
}

/// Element-wise work is split into fixed-size-independent chunks: any split gives the same bits.
private let pointwiseMinimumChunk = 1 << 14

private func runPointwise(_ x: Tensor, _ forward: PointwiseForward) -> Tensor {
    var y = Tensor(shape: x.shape, storage: uninitializedFloats(x.count))
    x.storage.withUnsafeBufferPointer { xs in
        y.storage.withUnsafeMutableBufferPointer { ys in
            Parallel.forEachChunk(xs.count, minimumChunk: pointwiseMinimumChunk) { r in
                forward(xs.baseAddress! + r.lowerBound, ys.baseAddress! + r.lowerBound, r.count)
            }
        }
    }
    return y
}

private func runPointwiseBackward(saved: Tensor, _ gy: Tensor, into x: Variable, _ backward: PointwiseBackward) {
    saved.storage.withUnsafeBufferPointer { s in
        gy.storage.withUnsafeBufferPointer { g in
            x.withGradient(overwritingFresh: { gx, overwrite in
                Parallel.forEachChunk(gx.count, minimumChunk: pointwiseMinimumChunk) { r in
                    backward(s.baseAddress! + r.lowerBound, g.baseAddress! + r.lowerBound,
                             gx.baseAddress! + r.lowerBound, r.count, overwrite)
                }
            })
        }
    }
}
