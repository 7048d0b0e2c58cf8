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

/// BatchNorm over the channels of x: [N, C, H, W], as PyTorch's BatchNorm2d.
///
/// Training: normalise with the batch mean and biased variance, and move the running statistics
/// by `momentum` toward the batch mean and the unbiased variance. Eval: use the running statistics.
/// y = γ · (x − μ) / √(σ² + ε) + β
public func batchNorm2d(_ x: Variable, gamma: Variable, beta: Variable,
                        statistics: BatchNormStatistics, training: Bool,
                        momentum: Float = 0.1, epsilon: Float = 1e-5, tape: Tape?) -> Variable {
    precondition(x.value.rank == 4 && x.shape[1] == gamma.value.count, "batchNorm2d: input \(x.shape) vs γ \(gamma.shape)")
    let (n, c, plane) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    let m = n * plane
    var mean = [Float](repeating: 0, count: c)
    var inverseStd = [Float](repeating: 0, count: c)
    x.value.storage.withUnsafeBufferPointer { xs in
        for ch in 0..<c {
            if training {
                // Double accumulators: the variance of many float32 values loses digits otherwise.
                var sum = 0.0, sumSquares = 0.0
                for b in 0..<n {
                    let p = xs.baseAddress! + (b * c + ch) * plane
                    for i in 0..<plane { sum += Double(p[i]) }
                }
                let mu = sum / Double(m)
                for b in 0..<n {
                    let p = xs.baseAddress! + (b * c + ch) * plane
                    for i in 0..<plane { let d = Double(p[i]) - mu; sumSquares += d * d }
                }
                let variance = sumSquares / Double(m)
                mean[ch] = Float(mu)
                inverseStd[ch] = Float(1 / (variance + Double(epsilon)).squareRoot())
                let unbiased = m > 1 ? variance * Double(m) / Double(m - 1) : variance
                if momentum != 0 {   // momentum 0 = frozen statistics, exactly (no 0·∞ surprises)
                    statistics.mean.storage[ch] = (1 - momentum) * statistics.mean.storage[ch] + momentum * Float(mu)
                    statistics.variance.storage[ch] = (1 - momentum) * statistics.variance.storage[ch] + momentum * Float(unbiased)
                }
            } else {
                mean[ch] = statistics.mean.storage[ch]
                inverseStd[ch] = 1 / (statistics.variance.storage[ch] + epsilon).squareRoot()
            }
        }
    }
    // normalized = (x − μ)·invStd, kept for the pullback; y = γ·normalized + β.
    var normalized = x.value
    var y = x.value
    normalized.storage.withUnsafeMutableBufferPointer { xh in
        y.storage.withUnsafeMutableBufferPointer { ys in
            for b in 0..<n {
                for ch in 0..<c {
                    let (mu, s, g, be) = (mean[ch], inverseStd[ch], gamma.value.storage[ch], beta.value.storage[ch])
                    let base = (b * c + ch) * plane
                    for i in base..<(base + plane) {
                        let v = (xh[i] - mu) * s
                        xh[i] = v
                        ys[i] = g * v + be
                    }
                }
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x, gamma, beta))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        // Per channel: Σ dy and Σ dy·x̂, the two reductions every gradient needs.
        var sumGrad = [Double](repeating: 0, count: c)
        var sumGradNormalized = [Double](repeating: 0, count: c)
        gy.storage.withUnsafeBufferPointer { g in
            normalized.storage.withUnsafeBufferPointer { xh in
                for b in 0..<n {
                    for ch in 0..<c {
                        let base = (b * c + ch) * plane
                        var s = 0.0, sn = 0.0
                        for i in base..<(base + plane) { s += Double(g[i]); sn += Double(g[i] * xh[i]) }
                        sumGrad[ch] += s; sumGradNormalized[ch] += sn
                    }
                }
                if gamma.requiresGrad {
                    gamma.withGradient { gg in for ch in 0..<c { gg[ch] += Float(sumGradNormalized[ch]) } }
                }
                if beta.requiresGrad {
                    beta.withGradient { gb in for ch in 0..<c { gb[ch] += Float(sumGrad[ch]) } }
                }
                guard x.requiresGrad else { return }
                x.withGradient { gx in
                    for b in 0..<n {
                        for ch in 0..<c {
                            let k = gamma.value.storage[ch] * inverseStd[ch]
                            let base = (b * c + ch) * plane
                            if training {
                                // dx = γ·invStd·(dy − mean(dy) − x̂·mean(dy·x̂))
                                let meanGrad = Float(sumGrad[ch] / Double(m))
                                let meanGradNormalized = Float(sumGradNormalized[ch] / Double(m))
                                for i in base..<(base + plane) {
                                    gx[i] += k * (g[i] - meanGrad - xh[i] * meanGradNormalized)
                                }
                            } else {
                                for i in base..<(base + plane) { gx[i] += k * g[i] }
                            }
                        }
                    }
                }
            }
        }
    }
    return out
}
