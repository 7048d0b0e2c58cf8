import Foundation
import QATIO

/// Entropy calibration (Vitis AI `method: "entropy"`, the KL-divergence threshold search
/// TensorRT describes; docs/ALGORITHMS.md §2). Symmetric only, as the manual says.
///
/// Per batch: a histogram of |x| with 2048 equal bins over [0, max|x|] (a value on an edge goes
/// to the bin above, the maximum to the last bin), whose first bin then takes the second's count
/// (the zeros of a ReLU do not decide the range). For each candidate i = 128…2048 bins:
/// P = the first i bins with the mass of every later bin (the outliers) added to bin i − 1;
/// Q = the first i bins without the outliers, merged into 128 groups of ⌊i/128⌋ bins (the last
/// group takes the rest), each group's mass spread evenly over its non-empty bins;
/// KL(P‖Q) = Σ p·ln(p/q) over P > 0, both normalised (+∞ where q = 0 < p).
/// The first i with the smallest KL wins, and the threshold is the upper edge of bin i − 1,
/// T = i · max|x| / 2048.
public struct EntropyCalibrator: BatchwiseCalibrator, Equatable {
    public static let name = "entropy"
    public static let binCount = 2048
    /// The levels of one sign of INT8.
    public static let levelCount = 128

    public static var settings: [CalibratorSetting<EntropyCalibrator>] {
        commonSettings(asymmetric: \.asymmetric, statistic: \.statistic)
    }

    public var asymmetric = false
    public var statistic = BatchStatistic.max

    public init() {}
    public init(statistic: BatchStatistic) { self.statistic = statistic }

    public func threshold(_ values: [Float], layer: String) throws -> Float {
        let largest = largestMagnitude(values)
        guard largest > 0 else { return 0 }
        let bins = Self.binCount
        let width = Double(largest) / Double(bins)
        var histogram = [Double](repeating: 0, count: bins)
        for v in values { histogram[min(Int(Double(abs(v)) / width), bins - 1)] += 1 }
        // The first bin takes the second's count, as NVIDIA's pytorch-quantization entropy
        // calibrator does: otherwise the zeros after a ReLU (often most of a tensor) dominate P,
        // and the search keeps the narrowest range, where Q can copy that spike one bin per level.
        histogram[0] = histogram[1]
        let bestBins = Self.klSearch(histogram)
        return Float(Double(bestBins) * width)
    }

    /// The candidate bin count i (levelCount…histogram.count) with the smallest KL(P‖Q).
    static func klSearch(_ histogram: [Double]) -> Int {
        let candidates = Array(levelCount...histogram.count)
        let best = firstBestCandidate(count: candidates.count) { klDivergence(histogram, keeping: candidates[$0]) }
        return candidates[best.index]
    }

    /// KL(P‖Q) of one candidate, as the type's comment describes; +∞ when Q is 0 where P is not
    /// (the kept range ends in an empty bin that the outliers were folded into).
    static func klDivergence(_ histogram: [Double], keeping count: Int) -> Double {
        var p = Array(histogram[0..<count])
        p[count - 1] += histogram[count...].reduce(0, +)
        let merged = count / levelCount
        var q = [Double](repeating: 0, count: count)
        for group in 0..<levelCount {
            let start = group * merged
            let end = group == levelCount - 1 ? count : start + merged
            var mass = 0.0, nonZero = 0
            for j in start..<end where histogram[j] > 0 {
                mass += histogram[j]
                nonZero += 1
            }
            guard nonZero > 0 else { continue }
            for j in start..<end where histogram[j] > 0 { q[j] = mass / Double(nonZero) }
        }
        let totalP = p.reduce(0, +), totalQ = q.reduce(0, +)
        var divergence = 0.0
        for j in 0..<count where p[j] > 0 {
            guard q[j] > 0 else { return .infinity }
            let pj = p[j] / totalP, qj = q[j] / totalQ
            divergence += pj * log(pj / qj)
        }
        return divergence
    }

    public func range(_ values: [Float], layer: String) throws -> (lower: Float, upper: Float) {
        // Refused by `conflict()` before calibration runs.
        preconditionFailure("entropy calibration is symmetric only")
    }

    public func conflict() -> (key: String, message: String)? { asymmetricConflict() ?? modalConflict() }
}
