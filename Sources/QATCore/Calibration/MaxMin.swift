import QATIO

/// Max-min calibration (Vitis AI `method: "maxmin"`, docs/ALGORITHMS.md §2): each batch's range
/// is its smallest and largest value (symmetric: its largest |x|); with the default statistic
/// `max` the start covers every calibration value. With `modal` (the DPU rule) each batch gives
/// its covering power-of-two position and the most frequent one wins.
public struct MaxMinCalibrator: BatchwiseCalibrator, Equatable {
    public static let name = "maxmin"

    public static var settings: [CalibratorSetting<MaxMinCalibrator>] {
        commonSettings(asymmetric: \.asymmetric, statistic: \.statistic)
    }

    public var asymmetric = false
    public var statistic = BatchStatistic.max

    public init() {}
    public init(asymmetric: Bool, statistic: BatchStatistic = .max) {
        self.asymmetric = asymmetric
        self.statistic = statistic
    }

    /// T = max |x|; with `modal`, the covering power-of-two grid's 127·2^k (k the smallest with
    /// 127·2^k ≥ max |x|: vai_q's fix position), since a modal needs values that repeat.
    public func threshold(_ values: [Float], layer: String) throws -> Float {
        let largest = largestMagnitude(values)
        guard statistic == .modal, largest > 0 else { return largest }
        return 127 * Float(sign: .plus, exponent: DiffsCalibrator.coveringExponent(largest), significand: 1)
    }

    public func range(_ values: [Float], layer: String) throws -> (lower: Float, upper: Float) {
        values.reduce((lower: Float(0), upper: Float(0))) { (min($0.lower, $1), max($0.upper, $1)) }
    }

    /// `modal` works on power-of-two positions, which only the symmetric threshold has.
    public func conflict() -> (key: String, message: String)? {
        guard statistic == .modal, asymmetric else { return nil }
        return ("calib_statistic_method", "\"modal\" with method maxmin takes the most frequent power-of-two position of "
                + "symmetric ranges only (set symmetry true, or use max, mean or median)")
    }
}
