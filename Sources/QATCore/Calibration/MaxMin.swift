import QATIO

/// Max-min calibration (Vitis AI `method: "maxmin"`, docs/ALGORITHMS.md §2): each batch's range
/// is its smallest and largest value (symmetric: its largest |x|); with the default statistic
/// `max` the start covers every calibration value.
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

    public func threshold(_ values: [Float], layer: String) throws -> Float {
        largestMagnitude(values)
    }

    public func range(_ values: [Float], layer: String) throws -> (lower: Float, upper: Float) {
        values.reduce((lower: Float(0), upper: Float(0))) { (min($0.lower, $1), max($0.upper, $1)) }
    }

    public func conflict() -> (key: String, message: String)? { modalConflict() }
}
