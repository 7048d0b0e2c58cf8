import QATIO

/// MSE calibration (Vitis AI `method: "mse"`, docs/ALGORITHMS.md §2): per batch, the symmetric
/// clip threshold whose INT8 grid reconstructs the batch with the least mean squared error.
/// Symmetric only, as the manual says.
///
/// Candidates T_k = A · k / 100, k = 1…100, A = max|x|; grid s_k = T_k / 127 (Float), codes
/// clamp(round_half_even(x / s_k), −128, 127); error_k = mean((code · s_k − x)²) in Double.
/// The first k with the smallest error wins.
public struct MSECalibrator: BatchwiseCalibrator, Equatable {
    public static let name = "mse"
    public static let candidateCount = 100

    public static var settings: [CalibratorSetting<MSECalibrator>] {
        commonSettings(asymmetric: \.asymmetric, statistic: \.statistic)
    }

    public var asymmetric = false
    public var statistic = BatchStatistic.max

    public init() {}
    public init(statistic: BatchStatistic) { self.statistic = statistic }

    public func threshold(_ values: [Float], layer: String) throws -> Float {
        let largest = largestMagnitude(values)
        guard largest > 0 else { return 0 }
        let count = Self.candidateCount
        let thresholds = (1...count).map { Float(Double(largest) * Double($0) / Double(count)) }
        let best = values.withUnsafeBufferPointer { xs in
            firstBestCandidate(count: count) { k in
                let s = thresholds[k] / 127
                var sum = 0.0
                for x in xs {
                    let d = Double(QuantizationGrid.clampAndRound(x / s, low: -128, high: 127) * s - x)
                    sum += d * d
                }
                return sum / Double(xs.count)
            }
        }
        return thresholds[best.index]
    }

    public func range(_ values: [Float], layer: String) throws -> (lower: Float, upper: Float) {
        // Refused by `conflict()` before calibration runs.
        preconditionFailure("mse calibration is symmetric only")
    }

    public func conflict() -> (key: String, message: String)? { asymmetricConflict() }
}
