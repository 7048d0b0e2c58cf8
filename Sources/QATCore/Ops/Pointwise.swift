import CKernels
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

/// The test on y a ReLU-like backward passes g by: `mask(y, m, count)` stores 1 where it holds, else 0.
typealias PointwiseMask = (UnsafePointer<Float>, UnsafeMutablePointer<UInt8>, Int) -> Void

/// Like `pointwise`, for ops whose gradient is g where a test on y holds and 0 elsewhere (ReLU,
/// ReLU6). The pullback keeps y until the model releases it; if no other pullback keeps y too,
/// it keeps the test's outcome instead, one byte per element, and the backward gives the same bits.
func pointwiseMasked(_ x: Variable, tape: Tape?, forward: PointwiseForward, mask: @escaping PointwiseMask,
                     backward: @escaping PointwiseBackward) -> Variable {
    let out = Variable(runPointwise(x.value, forward), requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    let saved = SavedOutputOrMask(out.value)
    out.whenReleasedUnkept { [weak saved] in saved?.shrink(mask) }
    tape.record {
        guard let gy = out.grad else { return }
        if let y = saved.output {
            runPointwiseBackward(saved: y, gy, into: x, backward)
        } else {
            runMaskedBackward(saved.mask, gy, into: x)
        }
    }
    return out
}

/// What a masked pullback keeps: the tensor its test reads (y, or x for clip), or after `shrink`
/// the test's outcome per element.
final class SavedOutputOrMask {
    private(set) var output: Tensor?
    private(set) var mask: [UInt8] = []

    init(_ output: Tensor) { self.output = output }

    func shrink(_ test: PointwiseMask) {
        guard let y = output else { return }
        mask = [UInt8](unsafeUninitializedCapacity: y.count) { m, initialized in
            y.storage.withUnsafeBufferPointer { ys in
                Parallel.forEachChunk(ys.count, minimumChunk: pointwiseMinimumChunk) { r in
                    test(ys.baseAddress! + r.lowerBound, m.baseAddress! + r.lowerBound, r.count)
                }
            }
            initialized = y.count
        }
        output = nil
    }
}

/// Like `pointwise`, for ops whose gradient needs the input (clip, leaky ReLU, hard swish):
/// `backward` gets x, kept as it was when the op ran. With `mask` (clip: the gradient is g where
/// a test on x holds, 0 elsewhere), x is kept only until it is released; if no other pullback
/// keeps it, the test's outcome per element replaces it, as in `pointwiseMasked`.
func pointwiseOnInput(_ x: Variable, tape: Tape?, forward: PointwiseForward, mask: PointwiseMask? = nil,
                      backward: @escaping PointwiseBackward) -> Variable {
    let out = Variable(runPointwise(x.value, forward), requiresGrad: needsPullback(tape, x))
    guard out.requiresGrad, let tape else { return out }
    let saved = SavedOutputOrMask(mask == nil ? x.valueForPullback() : x.value)
    if let mask { x.whenReleasedUnkept { [weak saved] in saved?.shrink(mask) } }   // weak: x may outlive the step
    tape.record {
        guard let gy = out.grad else { return }
        if let input = saved.output {
            runPointwiseBackward(saved: input, gy, into: x, backward)
        } else {
            runMaskedBackward(saved.mask, gy, into: x)
        }
    }
    return out
}

/// Element-wise work is split into fixed-size-independent chunks: any split gives the same bits.
let pointwiseMinimumChunk = 1 << 14

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

private func runMaskedBackward(_ mask: [UInt8], _ gy: Tensor, into x: Variable) {
    mask.withUnsafeBufferPointer { m in
        gy.storage.withUnsafeBufferPointer { g in
            x.withGradient(overwritingFresh: { gx, overwrite in
                Parallel.forEachChunk(gx.count, minimumChunk: pointwiseMinimumChunk) { r in
                    qat_masked_backward(m.baseAddress! + r.lowerBound, g.baseAddress! + r.lowerBound,
                                        gx.baseAddress! + r.lowerBound, r.count, overwrite ? 1 : 0)
                }
            })
        }
    }
}

