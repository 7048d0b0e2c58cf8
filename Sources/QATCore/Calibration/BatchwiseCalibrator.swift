import QATIO

// The calibrators Vitis AI names (maxmin, percentile, entropy, mse; docs/ALGORITHMS.md §2) work
// batch by batch: each batch gives a range, and `calib_statistic_method` combines the ranges.

/// Vitis AI's `calib_statistic_method`: how the ranges of several batches become one.
public enum BatchStatistic: String, CaseIterable, Sendable {
    /// The value most batches gave; among equally frequent values the widest.
    case modal
    /// The widest: the largest upper bound and the smallest lower bound.
    case max
    /// The mean of each bound.
    case mean
    /// The median of each bound (the mean of the two middle values for an even count).
    case median

    /// One bound from its per-batch values. `widerIsLarger` is true for an upper bound (a larger
    /// value widens the range) and false for a lower bound.
    public func combine(_ values: [Float], widerIsLarger: Bool) -> Float {
        precondition(!values.isEmpty, "combine needs at least one batch")
        let wider: (Float, Float) -> Bool = widerIsLarger ? { $0 > $1 } : { $0 < $1 }
        switch self {
        case .max:
            return values.dropFirst().reduce(values[0]) { wider($1, $0) ? $1 : $0 }
        case .mean:
            return Float(values.reduce(0.0) { $0 + Double($1) } / Double(values.count))
        case .median:
            let sorted = values.sorted()
            let middle = sorted.count / 2
            if sorted.count % 2 == 1 { return sorted[middle] }
            return Float((Double(sorted[middle - 1]) + Double(sorted[middle])) / 2)
        case .modal:
            var counts: [Float: Int] = [:]
            for value in values { counts[value, default: 0] += 1 }
            let most = counts.values.max()!
            let modes = counts.filter { $0.value == most }.keys
            return modes.dropFirst().reduce(modes.first!) { wider($1, $0) ? $1 : $0 }
        }
    }
}

/// A calibrator that finds one range per batch and combines them with `statistic`.
/// Symmetric (`asymmetric` false): each batch gives a threshold T ≥ 0, the thresholds are
/// combined, and the start is qat's symmetric INT8 grid of scale s = T/127: (127·s, −128·s).
/// Asymmetric: each batch gives [lower, upper] (containing 0), each bound is combined on its own,
/// and the start is that range.
public protocol BatchwiseCalibrator: Calibrator {
    var asymmetric: Bool { get }
    var statistic: BatchStatistic { get }
    /// T for the symmetric case.
    func threshold(_ values: [Float], layer: String) throws -> Float
    /// [lower, upper] with lower ≤ 0 ≤ upper for the asymmetric case.
    func range(_ values: [Float], layer: String) throws -> (lower: Float, upper: Float)
}

extension BatchwiseCalibrator {
    public func startingClipRange(batches: [Tensor], layer: String) throws -> (clipMax: Float, clipMin: Float) {
        guard batches.contains(where: { $0.count > 0 }) else { throw CalibrationError.noData(layer: layer) }
        var uppers: [Float] = [], lowers: [Float] = []
        for batch in batches where batch.count > 0 {
            guard batch.storage.allSatisfy({ $0.isFinite }) else { throw CalibrationError.nonFiniteValue(layer: layer) }
            if asymmetric {
                let range = try range(batch.storage, layer: layer)
                uppers.append(range.upper)
                lowers.append(range.lower)
            } else {
                uppers.append(try threshold(batch.storage, layer: layer))
            }
        }
        let upper = statistic.combine(uppers, widerIsLarger: true)
        guard asymmetric else { return QATCore.startingClipRange(fromSymmetricScale: upper / 127) }
        return (upper, statistic.combine(lowers, widerIsLarger: false))
    }

    /// The manual's rule (Vitis AI, "configuration limits"): percentile and entropy do not support
    /// `calib_statistic_method: "modal"` (maxmin does on power-of-two positions, the DPU's pair).
    func modalConflict() -> (key: String, message: String)? {
        guard statistic == .modal else { return nil }
        return ("calib_statistic_method", "\"modal\" is not supported by method \(Self.name) (Vitis AI allows it with "
                + "diffs and mse only): use max, mean or median")
    }

    /// The manual's rule: entropy and mse support symmetric ranges only.
    func asymmetricConflict() -> (key: String, message: String)? {
        guard asymmetric else { return nil }
        return ("asymmetric", "method \(Self.name) supports symmetric ranges only (Vitis AI: entropy and mse "
                + "do not support asymmetric quantization)")
    }

    /// The settings every batchwise method has: `asymmetric` and `calib_statistic_method`.
    static func commonSettings(asymmetric: WritableKeyPath<Self, Bool>,
                               statistic: WritableKeyPath<Self, BatchStatistic>) -> [CalibratorSetting<Self>] {
        [.flag("asymmetric", asymmetric), .choice("calib_statistic_method", statistic)]
    }
}

/// The largest |x|.
func largestMagnitude(_ values: [Float]) -> Float {
    values.reduce(0) { max($0, abs($1)) }
}
