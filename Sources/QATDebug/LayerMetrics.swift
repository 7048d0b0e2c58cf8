import Foundation
import QATCore
import QATData
import QATDeploy
import QATIO
import QATModel
import QATTrain

// Streaming statistics for layer-by-layer comparison (`qat compare`, docs/DEBUGGING.md).
// Every accumulator takes one batch at a time and keeps O(1) state (plus a fixed histogram),
// so a comparison over many batches never holds more than the current batch.

/// Count, min, max, mean and (population) variance of a stream of values. Batches are merged
/// with Chan's parallel update in Double, so the variance does not cancel catastrophically.
public struct RunningStatistics: Equatable, Sendable, Codable {
    public private(set) var count = 0
    public private(set) var min = Float.infinity
    public private(set) var max = -Float.infinity
    public private(set) var mean = 0.0
    /// Σ (x − mean)², over everything seen so far.
    private var m2 = 0.0

    public init() {}

    public var variance: Double { count > 0 ? m2 / Double(count) : 0 }

    public mutating func add(_ values: UnsafeBufferPointer<Float>) {
        guard !values.isEmpty else { return }
        var sum = 0.0
        var lo = values[0], hi = values[0]
        for v in values {
            sum += Double(v)
            lo = Swift.min(lo, v)
            hi = Swift.max(hi, v)
        }
        // NaN never wins a comparison, so report it explicitly.
        if sum.isNaN { lo = .nan; hi = .nan }
        let n = Double(values.count)
        let batchMean = sum / n
        var batchM2 = 0.0
        for v in values { let d = Double(v) - batchMean; batchM2 += d * d }
        let total = Double(count) + n
        let delta = batchMean - mean
        m2 += batchM2 + delta * delta * Double(count) * n / total
        mean += delta * n / total
        count += values.count
        min = (min.isNaN || lo.isNaN) ? .nan : Swift.min(min, lo)
        max = (max.isNaN || hi.isNaN) ? .nan : Swift.max(max, hi)
    }

    public mutating func add(_ values: [Float]) {
        values.withUnsafeBufferPointer { add($0) }
    }

    enum CodingKeys: String, CodingKey { case count, min, max, mean, variance }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        count = try c.decode(Int.self, forKey: .count)
        min = try c.decode(Float.self, forKey: .min)
        max = try c.decode(Float.self, forKey: .max)
        mean = try c.decode(Double.self, forKey: .mean)
        m2 = try c.decode(Double.self, forKey: .variance) * Double(count)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(count, forKey: .count)
        try c.encode(min, forKey: .min)
        try c.encode(max, forKey: .max)
        try c.encode(mean, forKey: .mean)
        try c.encode(variance, forKey: .variance)
    }
}

/// The metric definitions, as free functions so tests can pin them on hand-computed vectors.
/// `a` is the reference side (the first of `--sides`), `b` the side under test.
public enum ComparisonMetrics {
    /// SQNR values are clamped to ±`sqnrCapDB` so that identical tensors (noise 0, SQNR = +∞)
    /// and an all-zero reference (signal 0, SQNR = −∞) stay finite numbers in JSON and charts.
    /// Float32 arithmetic alone cannot produce more than about 150 dB of real SQNR.
    public static let sqnrCapDB = 200.0
    /// Q-bins below this probability count as this probability in KL (no division by zero).
    public static let klFloor = 1e-10

    /// Σab / (‖a‖ ‖b‖); 1 when both are all zeros, 0 when only one is.
    public static func cosine(dot: Double, normASquared: Double, normBSquared: Double) -> Double {
        if normASquared == 0 && normBSquared == 0 { return 1 }
        if normASquared == 0 || normBSquared == 0 { return 0 }
        return dot / (normASquared.squareRoot() * normBSquared.squareRoot())
    }

    /// 10·log10(Σa² / Σ(a − b)²), clamped to [−cap, cap].
    public static func sqnr(signal: Double, noise: Double) -> Double {
        if signal.isNaN || noise.isNaN { return .nan }
        if noise == 0 { return sqnrCapDB }
        if signal == 0 { return -sqnrCapDB }
        return Swift.min(Swift.max(10 * log10(signal / noise), -sqnrCapDB), sqnrCapDB)
    }

    /// KL(P ‖ Q) = Σ_{i: p_i > 0} p_i · ln(p_i / max(q_i, klFloor)) in nats, with P and Q the
    /// histograms normalised to sum 1 (an empty histogram gives 0).
    public static func klDivergence(p counts: [Double], q otherCounts: [Double]) -> Double {
        precondition(counts.count == otherCounts.count, "KL: histograms of different sizes")
        let totalP = counts.reduce(0, +), totalQ = otherCounts.reduce(0, +)
        guard totalP > 0, totalQ > 0 else { return 0 }
        var kl = 0.0
        for (cp, cq) in zip(counts, otherCounts) where cp > 0 {
            let p = cp / totalP, q = Swift.max(cq / totalQ, klFloor)
            kl += p * log(p / q)
        }
        return Swift.max(kl, 0)
    }

    /// Convenience for tests and small tensors: every metric of `a` against `b` in one pass,
    /// KL over `bins` bins spanning both tensors' joint range.
    public static func compare(_ a: [Float], _ b: [Float], bins: Int = 512) -> PairMetrics {
        var accumulator = PairAccumulator(bins: bins)
        accumulator.add(a, b)
        return accumulator.metrics
    }
}

/// Fixed-bin histograms of both sides of one layer, for KL.
///
/// The bins are chosen once, from the first batch: they span the joint [min, max] of both sides
/// on that batch, widened by 10 % of the width at each end (a degenerate range becomes ±0.5
/// around the value), and there are min(requested, max(16, first-batch values / 8)) of them. Later values outside the span are counted in the end bins and in
/// `outOfRange`, which the report shows so a misleading KL can be recognised.
public struct PairHistogram: Equatable, Sendable {
    public let lower: Float
    public let upper: Float
    public private(set) var countsA: [Double]
    public private(set) var countsB: [Double]
    /// Values of later batches (either side) that fell outside [lower, upper].
    public private(set) var outOfRange = 0

    public init(bins: Int, firstA: UnsafeBufferPointer<Float>, firstB: UnsafeBufferPointer<Float>) {
        var lo = Float.infinity, hi = -Float.infinity
        for v in firstA where v.isFinite { lo = min(lo, v); hi = max(hi, v) }
        for v in firstB where v.isFinite { lo = min(lo, v); hi = max(hi, v) }
        if !lo.isFinite || !hi.isFinite { (lo, hi) = (-0.5, 0.5) }
        if hi - lo <= max(abs(lo), abs(hi)) * 1e-6 {
            (lo, hi) = (lo - 0.5, hi + 0.5)
        } else {
            let margin = (hi - lo) * 0.1
            (lo, hi) = (lo - margin, hi + margin)
        }
        lower = lo
        upper = hi
        // Sparse histograms make KL noise (neighbouring bins swap counts): at most one bin per
        // 8 values of the first batch, and at least 16 bins.
        let bins = min(bins, max(16, firstA.count / 8))
        countsA = [Double](repeating: 0, count: bins)
        countsB = [Double](repeating: 0, count: bins)
    }

    public mutating func add(a: UnsafeBufferPointer<Float>, b: UnsafeBufferPointer<Float>) {
        let bins = countsA.count
        let scale = Float(bins) / (upper - lower)
        let (lo, hi) = (lower, upper)
        var outside = 0
        func fill(_ values: UnsafeBufferPointer<Float>, _ counts: inout [Double]) {
            counts.withUnsafeMutableBufferPointer { c in
                for v in values where !v.isNaN {
                    if v < lo || v > hi { outside += 1 }
                    let index = Int(min(max((v - lo) * scale, 0), Float(bins - 1)))
                    c[index] += 1
                }
            }
        }
        fill(a, &countsA)
        fill(b, &countsB)
        outOfRange += outside
    }

    public var klDivergence: Double { ComparisonMetrics.klDivergence(p: countsA, q: countsB) }
}

/// The metrics of one layer output, side a (reference) against side b.
public struct PairMetrics: Equatable, Sendable, Codable {
    public var count: Int
    public var cosine: Double
    public var mse: Double
    /// Mean absolute difference.
    public var l1: Double
    /// KL(a ‖ b) over the layer's histograms, in nats.
    public var kl: Double
    /// 10·log10(Σa² / Σ(a − b)²), clamped to ±ComparisonMetrics.sqnrCapDB.
    public var sqnrDB: Double
    public var maxAbsDifference: Float
    public var a: RunningStatistics
    public var b: RunningStatistics
    /// Values outside the KL histogram's span (bins fixed on the first batch).
    public var histogramOutOfRange: Int

    enum CodingKeys: String, CodingKey {
        case count, cosine, mse, l1, kl, sqnrDB = "sqnr_db", maxAbsDifference = "max_abs_diff", a, b
        case histogramOutOfRange = "kl_histogram_out_of_range"
    }
}

/// Accumulates everything `PairMetrics` needs, batch by batch.
public struct PairAccumulator: Sendable {
    public let bins: Int
    public private(set) var a = RunningStatistics()
    public private(set) var b = RunningStatistics()
    private var dot = 0.0, normA = 0.0, normB = 0.0, squaredError = 0.0, absoluteError = 0.0
    private var maxAbsDifference: Float = 0
    private var histogram: PairHistogram?

    public init(bins: Int = 512) {
        precondition(bins > 0, "bins must be positive")
        self.bins = bins
    }

    public mutating func add(_ x: [Float], _ y: [Float]) {
        x.withUnsafeBufferPointer { xs in y.withUnsafeBufferPointer { ys in add(xs, ys) } }
    }

    public mutating func add(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeBufferPointer<Float>) {
        precondition(x.count == y.count, "compared tensors have \(x.count) and \(y.count) values")
        a.add(x)
        b.add(y)
        var d = 0.0, na = 0.0, nb = 0.0, se = 0.0, ae = 0.0
        var worst = maxAbsDifference
        var sawNaN = false
        for i in 0..<x.count {
            let u = Double(x[i]), v = Double(y[i])
            d += u * v
            na += u * u
            nb += v * v
            let diff = u - v
            se += diff * diff
            ae += abs(diff)
            let e = abs(x[i] - y[i])
            if e.isNaN { sawNaN = true } else if e > worst { worst = e }
        }
        dot += d; normA += na; normB += nb; squaredError += se; absoluteError += ae
        maxAbsDifference = sawNaN ? .nan : worst
        if histogram == nil { histogram = PairHistogram(bins: bins, firstA: x, firstB: y) }
        histogram!.add(a: x, b: y)
    }

    public var metrics: PairMetrics {
        let n = Double(max(a.count, 1))
        return PairMetrics(
            count: a.count,
            cosine: ComparisonMetrics.cosine(dot: dot, normASquared: normA, normBSquared: normB),
            mse: squaredError / n, l1: absoluteError / n,
            kl: histogram?.klDivergence ?? 0,
            sqnrDB: ComparisonMetrics.sqnr(signal: normA, noise: squaredError),
            maxAbsDifference: maxAbsDifference, a: a, b: b,
            histogramOutOfRange: histogram?.outOfRange ?? 0)
    }
}
