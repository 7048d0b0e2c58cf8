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

/// BatchNorm over the channels of x: [N, C, H, W], as PyTorch's BatchNorm2d.
///
/// Training: normalise with the batch mean and biased variance, and move the running statistics
/// by `momentum` toward the batch mean and the unbiased variance. Eval: use the running statistics.
/// y = γ · (x − μ) / √(σ² + ε) + β
public func batchNorm2d(_ x: Variable, gamma: Variable, beta: Variable,
                        statistics: BatchNormStatistics, training: Bool,
                        momentum: Float = 0.1, epsilon: Float = 1e-5, tape: Tape?) -> Variable {
    precondition(x.value.rank == 4 && x.shape[1] == gamma.value.count, "batchNorm2d: input \(x.shape) vs γ \(gamma.shape)")
    let geometry = BatchNormGeometry(batch: x.shape[0], channels: x.shape[1], plane: x.shape[2] * x.shape[3])
    let (mean, inverseStd) = training
        ? batchStatistics(x.value, geometry, updating: statistics, momentum: momentum, epsilon: epsilon)
        : runningStatistics(statistics, epsilon: epsilon)
    // normalized = (x − μ)·invStd, kept for the pullback; y = γ·normalized + β.
    var normalized = x.value
    var y = x.value
    normalized.storage.withUnsafeMutableBufferPointer { xh in
        y.storage.withUnsafeMutableBufferPointer { ys in
            geometry.forEachPlane { ch, range in
                let (mu, s, g, be) = (mean[ch], inverseStd[ch], gamma.value.storage[ch], beta.value.storage[ch])
                for i in range {
                    let v = (xh[i] - mu) * s
                    xh[i] = v
                    ys[i] = g * v + be
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x, gamma, beta))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        batchNormBackward(gy, normalized: normalized, x: x, gamma: gamma, beta: beta, inverseStd: inverseStd,
                          geometry: geometry, training: training)
    }
    return out
}

/// The pullback of `batchNorm2d`: dγ = Σ dy·x̂, dβ = Σ dy, and in training
/// dx = γ·invStd·(dy − mean(dy) − x̂·mean(dy·x̂)); in eval the statistics are constants, dx = γ·invStd·dy.
private func batchNormBackward(_ gy: Tensor, normalized: Tensor, x: Variable, gamma: Variable, beta: Variable,
                               inverseStd: [Float], geometry: BatchNormGeometry, training: Bool) {
    let c = geometry.channels
    var m = geometry.batch * geometry.plane
    // Per channel: Σ dy and Σ dy·x̂, the two reductions every gradient needs.
    var sumGrad = [Double](repeating: 0, count: c)
    var sumGradNormalized = [Double](repeating: 0, count: c)
    gy.storage.withUnsafeBufferPointer { g in
        normalized.storage.withUnsafeBufferPointer { xh in
            geometry.forEachPlane { ch, range in
                var s = 0.0, sn = 0.0
                for i in range { s += Double(g[i]); sn += Double(g[i] * xh[i]) }
                sumGrad[ch] += s; sumGradNormalized[ch] += sn
            }
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
            x.withGradient { gx in
                geometry.forEachPlane { ch, range in
                    let k = gamma.value.storage[ch] * inverseStd[ch]
                    if training {
                        let meanGrad = Float(sumGrad[ch] / Double(m))
                        let meanGradNormalized = Float(sumGradNormalized[ch] / Double(m))
                        for i in range { gx[i] += k * (g[i] - meanGrad - xh[i] * meanGradNormalized) }
                    } else {
                        for i in range { gx[i] += k * g[i] }
                    }
                }
            }
        }
    }
}

/// The [N, C, plane] layout BatchNorm walks: one contiguous plane per (sample, channel).
private struct BatchNormGeometry {
    let batch: Int, channels: Int, plane: Int

    /// Calls `body(channel, indices of the plane)` for every plane, samples outer, channels inner.
    @inline(__always)
    func forEachPlane(_ body: (Int, Range<Int>) -> Void) {
        for b in 0..<batch {
            for ch in 0..<channels {
                let base = (b * channels + ch) * plane
                body(ch, base..<(base + plane))
            }
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
    // Double accumulators: the variance of many float32 values loses digits otherwise.
    var sums = [Double](repeating: 0, count: c)
    var sumSquares = [Double](repeating: 0, count: c)
    var count = Double(m)
    x.storage.withUnsafeBufferPointer { xs in
        for ch in 0..<c {
            var sum = 0.0
            for b in 0..<n {
                let p = xs.baseAddress! + (b * c + ch) * plane
                for i in 0..<plane { sum += Double(p[i]) }
            }
            sums[ch] = sum
        }
        if let combine = BatchNormSync.combine {
            var global = sums + [count]
            combine(&global)
            sums = Array(global[0..<c]); count = global[c]
        }
        for ch in 0..<c {
            let mu = sums[ch] / count
            var squares = 0.0
            for b in 0..<n {
                let p = xs.baseAddress! + (b * c + ch) * plane
                for i in 0..<plane { let d = Double(p[i]) - mu; squares += d * d }
            }
            sumSquares[ch] = squares
        }
        if let combine = BatchNormSync.combine {
            var global = sumSquares + [Double(m)]
            combine(&global)
            sumSquares = Array(global[0..<c])
        }
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
