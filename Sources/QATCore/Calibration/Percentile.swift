import QATIO

/// Percentile calibration (Vitis AI `method: "percentile"` with `percentage`, docs/ALGORITHMS.md
/// §2): per batch, the value below which `percentage` percent of the values lie, by the
/// percentile rule IFMR uses (k = N − floor(p·N), the k-th largest). Symmetric: of |x|.
/// Asymmetric: the k-th largest x as the upper bound and the k-th smallest as the lower one,
/// each widened to contain 0.
public struct PercentileCalibrator: BatchwiseCalibrator, Equatable {
    public static let name = "percentile"

    public static var settings: [CalibratorSetting<PercentileCalibrator>] {
        [.number("percentage", .percentage(above: 50), \.percentage)]
            + commonSettings(asymmetric: \.asymmetric, statistic: \.statistic)
    }

    /// In percent, (50, 100]; Vitis AI's default.
    public var percentage = 99.99
    public var asymmetric = false
    public var statistic = BatchStatistic.max

    public init() {}
    public init(percentage: Double, asymmetric: Bool = false, statistic: BatchStatistic = .max) {
        self.percentage = percentage
        self.asymmetric = asymmetric
        self.statistic = statistic
    }

    public func threshold(_ values: [Float], layer: String) throws -> Float {
        var magnitudes = values.map { abs($0) }
        let k = percentileRank(count: magnitudes.count, percentile: percentage / 100)
        return orderStatistic(&magnitudes, index: magnitudes.count - k)
    }

    public func range(_ values: [Float], layer: String) throws -> (lower: Float, upper: Float) {
        var work = values
        let k = percentileRank(count: work.count, percentile: percentage / 100)
        let upper = orderStatistic(&work, index: work.count - k)
        let lower = orderStatistic(&work, index: k - 1)
        return (min(lower, 0), max(upper, 0))
    }

    public func conflict() -> (key: String, message: String)? { modalConflict() }
}
