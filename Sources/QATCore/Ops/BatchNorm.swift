import CKernels
import Foundation
import QATIO

/// Running statistics of one BatchNorm layer: state, not parameters (no gradient).
public final class BatchNormStatistics {
    public var mean: Tensor
    public var variance: Tensor
    public init(channels: Int) {
        mean = Tensor(shape: [channels])
        variance = Tensor(shape: [channels], repeating: 1)
    }
}

/// Where BatchNorm's per-channel sums are combined across processes (synchronised BN).
///
/// Data-parallel training sets `combine`; it must replace each array, in place, by the
/// element-wise sum of that array over all processes, added in a fixed order so that runs repeat
/// bit for bit. nil (the default, and always in one process) means this process's sums alone.
/// Every array BatchNorm passes ends with its local element count, so shards may differ in size.
public enum BatchNormSync {
    nonisolated(unsafe) public static var combine: ((inout [Double]) -> Void)? = nil
}

/// The backward of BatchNorm fused with the clamp after it (`batchNorm2d(fusedClamp:)`: ReLU, ReLU6, Clip).
public enum BatchNormReLUBackward {
    /// Switch for tests: true runs the clamp's mask as its own pass into a gradient buffer, read by
    /// the sums and input-gradient passes (the path the folded passes replaced, and their
    /// reference: the same bits); false (the default) computes the masked gradient inside both.
    nonisolated(unsafe) public static var usesSeparateMaskPass = false
}

/// An activation BatchNorm can apply in its own passes: y = v < 0 ? 0 : v, then y > top ? top : y
/// (qat_relu6_forward's and qat_clip_forward's rule: NaN and −0 pass through), and a gradient that
/// passes g where passAbove < v ≤ passMax (v the BatchNorm output), +0 elsewhere and at NaN.
public struct FusedClamp: Equatable, Sendable {
    public let top: Float, passAbove: Float, passMax: Float

    /// relu: the top never binds (v > +∞ is false), the gradient passes where v > 0 (+∞ included).
    public static let relu = FusedClamp(top: .infinity, passAbove: 0, passMax: .infinity)
    /// relu6: gradient where 0 < v < 6, i.e. v ≤ the float below 6 (0 at both bounds, as `relu6`).
    public static let relu6 = FusedClamp(top: 6, passAbove: 0, passMax: Float(6).nextDown)

    /// clip(min: low, max: high) when this clamp is it bit for bit: low must be +0 (with −0 the
    /// forward would write −0 where this writes +0) and high not NaN. Clip's gradient is inclusive,
    /// 0 ≤ v ≤ high (−0 included), i.e. v > −(the least subnormal) without flush-to-zero.
    public static func clip(min low: Float, max high: Float) -> FusedClamp? {
        guard low.bitPattern == 0, !high.isNaN else { return nil }
        return FusedClamp(top: high, passAbove: -Float.leastNonzeroMagnitude, passMax: high)
    }

}

/// The C form of `clamp` (NULL for none) for the duration of `body`.
private func withClampBounds<R>(_ clamp: FusedClamp?, _ body: (UnsafePointer<qat_bn_clamp>?) -> R) -> R {
    guard let clamp else { return body(nil) }
    var bounds = qat_bn_clamp(top: clamp.top, pass_above: clamp.passAbove, pass_max: clamp.passMax)
    return withUnsafePointer(to: &bounds) { body($0) }
}

/// BatchNorm over the channels of x: [N, C, H, W], as PyTorch's BatchNorm2d.
///
/// Training: normalise with the batch mean and biased variance, and move the running statistics
/// by `momentum` toward the batch mean and the unbiased variance. Eval: use the running statistics.
/// y = γ · (x − μ) / √(σ² + ε) + β
///
/// With `fusedClamp` (or `fusedReLU`, which is `fusedClamp: .relu`), returns the activation of y
/// as `relu`/`relu6`/`clip` after `batchNorm2d(…)` would, bit for bit, without the intermediate y:
/// the forward clamps in the normalize pass, and the pullback applies the activation's mask
/// (recomputed from x, which BatchNorm keeps anyway) to the incoming gradient.
public func batchNorm2d(_ x: Variable, gamma: Variable, beta: Variable,
                        statistics: BatchNormStatistics, training: Bool,
                        momentum: Float = 0.1, epsilon: Float = 1e-5, fusedReLU: Bool = false,
                        fusedClamp: FusedClamp? = nil, tape: Tape?) -> Variable {
    precondition(!(fusedReLU && fusedClamp != nil), "batchNorm2d: fusedReLU and fusedClamp together")
    let clamp = fusedClamp ?? (fusedReLU ? FusedClamp.relu : nil)
    precondition(x.value.rank == 4 && x.shape[1] == gamma.value.count, "batchNorm2d: input \(x.shape) vs γ \(gamma.shape)")
    let geometry = BatchNormGeometry(batch: x.shape[0], channels: x.shape[1], plane: x.shape[2] * x.shape[3])
    let input = tape == nil ? x.value : x.valueForPullback()
    let (mean, inverseStd) = training
        ? batchStatistics(input, geometry, updating: statistics, momentum: momentum, epsilon: epsilon)
        : runningStatistics(statistics, epsilon: epsilon)
    // y = γ·x̂ + β with x̂ = (x − μ)·invStd; the pullback recomputes x̂ from x (same float
    // operations, same bits) instead of keeping a normalised copy alive until backward.
    var y = Tensor(shape: input.shape, storage: uninitializedFloats(input.count))
    input.storage.withUnsafeBufferPointer { xs in
        y.storage.withUnsafeMutableBufferPointer { ys in
            gamma.value.storage.withUnsafeBufferPointer { g in
                beta.value.storage.withUnsafeBufferPointer { b in
                    withClampBounds(clamp) { bounds in
                        geometry.forEachPlaneBlock { q0, q1 in
                            qat_bn_normalize(xs.baseAddress!, ys.baseAddress!, mean, inverseStd, g.baseAddress!, b.baseAddress!,
                                             geometry.channels, geometry.plane, q0, q1, bounds)
                        }
                    }
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x, gamma, beta))
    guard out.requiresGrad, let tape else { return out }
    let fused = clamp.map { (gamma: gamma.value, beta: beta.value, clamp: $0) }   // what the fused clamp tests
    tape.record {
        guard let gy = out.grad else { return }
        batchNormBackward(gy, input: input, x: x, gamma: gamma, beta: beta, mean: mean, inverseStd: inverseStd,
                          geometry: geometry, training: training, fused: fused)
    }
    return out
}

/// The pullback of `batchNorm2d`: dγ = Σ dy·x̂, dβ = Σ dy, and in training
/// dx = γ·invStd·(dy − mean(dy) − x̂·mean(dy·x̂)); in eval the statistics are constants, dx = γ·invStd·dy.
/// With `fused` (the γ, β the forward normalised with, and its clamp), dy is first the clamp's
/// pullback of the incoming gradient: 0 + gy where the clamp passes γ·x̂ + β, +0 elsewhere, as
/// relu / relu6 / clip write into a fresh gradient.
private func batchNormBackward(_ incoming: Tensor, input: Tensor, x: Variable, gamma: Variable, beta: Variable,
                               mean: [Float], inverseStd: [Float], geometry: BatchNormGeometry, training: Bool,
                               fused: (gamma: Tensor, beta: Tensor, clamp: FusedClamp)?) {
    let c = geometry.channels
    var m = geometry.batch * geometry.plane
    // Per channel: Σ dy and Σ dy·x̂, the two reductions every gradient needs.
    let planes = geometry.batch * c
    let gy: Tensor, totals: [[Double]]
    // With the clamp folded in, the passes read the incoming gradient and mask it themselves.
    let folded = BatchNormReLUBackward.usesSeparateMaskPass ? nil : fused
    if let folded {
        gy = incoming
        totals = withClampBounds(folded.clamp) { bounds in
            geometry.channelTotals(outputs: 2) { q0, q1, partial in
                qat_bn_clamp_plane_gradient_sums(gy.storage, input.storage, mean, inverseStd, folded.gamma.storage,
                                                 folded.beta.storage, bounds, partial, partial + planes, c, geometry.plane,
                                                 q0, q1)
            }
        }
    } else if let fused {
        var masked = Tensor(shape: incoming.shape, storage: uninitializedFloats(incoming.count))
        totals = masked.storage.withUnsafeMutableBufferPointer { dy in
            withClampBounds(fused.clamp) { bounds in geometry.channelTotals(outputs: 2) { q0, q1, partial in
                // A few planes at a time, masked and then summed while they are in cache (each
                // plane's sums are the same bits however the planes are split).
                let step = max(1, 16_384 / max(geometry.plane, 1))
                for first in stride(from: q0, to: q1, by: step) {
                    let last = min(q1, first + step)
                    qat_bn_clamp_mask_gradient(incoming.storage, input.storage, mean, inverseStd, fused.gamma.storage,
                                               fused.beta.storage, bounds, dy.baseAddress!, c, geometry.plane, first, last)
                    qat_bn_plane_gradient_sums(dy.baseAddress!, input.storage, mean, inverseStd, partial, partial + planes,
                                               c, geometry.plane, first, last)
                }
            } }
        }
        gy = masked
    } else {
        gy = incoming
        totals = geometry.channelTotals(outputs: 2) { q0, q1, partial in
            qat_bn_plane_gradient_sums(gy.storage, input.storage, mean, inverseStd, partial, partial + planes,
                                       c, geometry.plane, q0, q1)
        }
    }
    var (sumGrad, sumGradNormalized) = (totals[0], totals[1])
    gy.storage.withUnsafeBufferPointer { g in
        input.storage.withUnsafeBufferPointer { xs in
            // Synchronised BN: the batch statistics were global, so their gradients are too.
            if training, let combine = BatchNormSync.combine {
                var sums = sumGrad + sumGradNormalized + [Double(m)]
                combine(&sums)
                sumGrad = Array(sums[0..<c]); sumGradNormalized = Array(sums[c..<(2 * c)]); m = Int(sums[2 * c])
            }
            if gamma.requiresGrad {
                gamma.withGradient { gg in for ch in 0..<c { gg[ch] += Float(sumGradNormalized[ch]) } }
            }
            if beta.requiresGrad {
                beta.withGradient { gb in for ch in 0..<c { gb[ch] += Float(sumGrad[ch]) } }
            }
            guard x.requiresGrad else { return }
            let scale = (0..<c).map { gamma.value.storage[$0] * inverseStd[$0] }
            let meanGrad = sumGrad.map { Float($0 / Double(m)) }
            let meanGradNormalized = sumGradNormalized.map { Float($0 / Double(m)) }
            x.withGradient(overwritingFresh: { gx, overwrite in
                withClampBounds(folded?.clamp) { bounds in geometry.forEachPlaneBlock { q0, q1 in
                    if let folded, training {
                        qat_bn_clamp_input_grad(g.baseAddress!, xs.baseAddress!, mean, inverseStd, folded.gamma.storage,
                                                folded.beta.storage, bounds, scale, meanGrad, meanGradNormalized,
                                                gx.baseAddress!, overwrite ? 1 : 0, c, geometry.plane, q0, q1)
                    } else if let folded {
                        qat_bn_clamp_input_grad(g.baseAddress!, xs.baseAddress!, mean, inverseStd, folded.gamma.storage,
                                                folded.beta.storage, bounds, scale, nil, nil, gx.baseAddress!,
                                                overwrite ? 1 : 0, c, geometry.plane, q0, q1)
                    } else if training {
                        qat_bn_input_grad(g.baseAddress!, xs.baseAddress!, mean, inverseStd, scale, meanGrad,
                                          meanGradNormalized, gx.baseAddress!, overwrite ? 1 : 0, c, geometry.plane, q0, q1)
                    } else {
                        qat_bn_input_grad(g.baseAddress!, xs.baseAddress!, mean, inverseStd, scale, nil, nil,
                                          gx.baseAddress!, overwrite ? 1 : 0, c, geometry.plane, q0, q1)
                    }
                } }
            })
        }
    }
}

/// The [N, C, plane] layout BatchNorm walks: one contiguous plane per (sample, channel).
private struct BatchNormGeometry {
    let batch: Int, channels: Int, plane: Int

    /// Per-channel totals of per-plane Double sums: `body(q0, q1, partial)` writes planes [q0, q1)
    /// of `outputs` arrays (array k at partial + k·N·C). The planes are split over threads, each
    /// plane summed whole in one call, and each channel adds its planes in sample order: the
    /// totals do not depend on the thread count.
    func channelTotals(outputs: Int = 1, _ body: (Int, Int, UnsafeMutablePointer<Double>) -> Void) -> [[Double]] {
        let planes = batch * channels
        var partial = [Double](repeating: 0, count: outputs * planes)
        partial.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            forEachPlaneBlock { q0, q1 in body(q0, q1, base) }
        }
        return (0..<outputs).map { k in
            var totals = [Double](repeating: 0, count: channels)
            partial.withUnsafeBufferPointer { qat_bn_channel_totals($0.baseAddress! + k * planes, &totals, batch, channels) }
            return totals
        }
    }

    /// Calls `body(q0, q1)` for chunks of the N·C planes (each plane whole in one call: any split
    /// gives the same bits).
    func forEachPlaneBlock(_ body: (Int, Int) -> Void) {
        Parallel.forEachChunk(batch * channels, minimumChunk: max(1, 4096 / max(plane, 1))) { planes in
            body(planes.lowerBound, planes.upperBound)
        }
    }
}

/// Batch mean and 1/√(σ² + ε) per channel, with σ² the biased batch variance; moves the running
/// statistics toward the batch mean and the unbiased variance unless `momentum` is 0.
private func batchStatistics(_ x: Tensor, _ geometry: BatchNormGeometry, updating statistics: BatchNormStatistics,
                             momentum: Float, epsilon: Float) -> (mean: [Float], inverseStd: [Float]) {
    let (n, c, plane) = (geometry.batch, geometry.channels, geometry.plane)
    let m = n * plane
    var mean = [Float](repeating: 0, count: c)
    var inverseStd = [Float](repeating: 0, count: c)
    // Double accumulators in a fixed order (CKernels/batchnorm.h): the variance of many float32 values
    // loses digits otherwise. Two passes (mean, then squared deviations), as the reference.
    var sums = geometry.channelTotals { q0, q1, partial in qat_bn_plane_sums(x.storage, partial, c, plane, q0, q1) }[0]
    var count = Double(m)
    if let combine = BatchNormSync.combine {
        var global = sums + [count]
        combine(&global)
        sums = Array(global[0..<c]); count = global[c]
    }
    let means = sums.map { $0 / count }
    var sumSquares = geometry.channelTotals { q0, q1, partial in
        qat_bn_plane_squared_deviations(x.storage, means, partial, c, plane, q0, q1)
    }[0]
    if let combine = BatchNormSync.combine {
        var global = sumSquares + [Double(m)]
        combine(&global)
        sumSquares = Array(global[0..<c])
    }
    for ch in 0..<c {
        let mu = sums[ch] / count
        let variance = sumSquares[ch] / count
        mean[ch] = Float(mu)
        inverseStd[ch] = Float(1 / (variance + Double(epsilon)).squareRoot())
        let unbiased = count > 1 ? variance * count / (count - 1) : variance
        if momentum != 0 {   // momentum 0 = frozen statistics, exactly (no 0·∞ surprises)
            statistics.mean.storage[ch] = (1 - momentum) * statistics.mean.storage[ch] + momentum * Float(mu)
            statistics.variance.storage[ch] = (1 - momentum) * statistics.variance.storage[ch] + momentum * Float(unbiased)
        }
    }
    return (mean, inverseStd)
}

/// Eval mode: the running statistics, as 1/√(σ² + ε) in float32.
private func runningStatistics(_ statistics: BatchNormStatistics, epsilon: Float) -> (mean: [Float], inverseStd: [Float]) {
    (statistics.mean.storage, statistics.variance.storage.map { 1 / ($0 + epsilon).squareRoot() })
}
