import Foundation
import QATIO

/// Vitis AI's `method: "diffs"` (docs/ALGORITHMS.md §2), the DPU's default: per batch, the
/// power-of-two INT8 grid that reconstructs the batch with the least squared difference.
/// Symmetric only (qat's decision: the DPU rules ask for symmetry, and the manual lists no
/// asymmetric variant).
///
/// A = max|x|; k₀ is the smallest integer with 127·2^k₀ ≥ A (the power-of-two grid that covers
/// every value); the candidates are s = 2^k for k = k₀, k₀−1, k₀−2, k₀−3 (each narrower grid clips
/// the outliers for a finer step); error_k = mean((clamp(round_half_even(x/s), −128, 127)·s − x)²)
/// in Double; the first (widest) smallest error wins, T = 127·2^k. The grid's step T/127 is then
/// exactly a power of two.
public struct DiffsCalibrator: BatchwiseCalibrator, Equatable {
    public static let name = "diffs"
    /// How many grids narrower than the covering one are tried.
    public static let narrowerCandidates = 3

    public static var settings: [CalibratorSetting<DiffsCalibrator>] {
        commonSettings(asymmetric: \.asymmetric, statistic: \.statistic)
    }

    public var asymmetric = false
    /// The manual's DPU rule pairs diffs with `modal`: most batches give the same position.
    public var statistic = BatchStatistic.modal

    public init() {}

    /// The smallest k with 127·2^k ≥ `largest` (> 0), found exactly on float32's powers of two.
    static func coveringExponent(_ largest: Float) -> Int {
        var k = Int((Foundation.log2(Double(largest) / 127)).rounded(.up))
        while 127 * Float(sign: .plus, exponent: k, significand: 1) < largest { k += 1 }
        while 127 * Float(sign: .plus, exponent: k - 1, significand: 1) >= largest { k -= 1 }
        return k
    }

    public func threshold(_ values: [Float], layer: String) throws -> Float {
        let largest = largestMagnitude(values)
        guard largest > 0 else { return 0 }
        let covering = Self.coveringExponent(largest)
        var best: (error: Double, step: Float)?
        for k in stride(from: covering, through: covering - Self.narrowerCandidates, by: -1) {
            let s = Float(sign: .plus, exponent: k, significand: 1)
            var sum = 0.0
            for x in values {
                let d = Double(QuantizationGrid.clampAndRound(x / s, low: -128, high: 127) * s - x)
                sum += d * d
            }
            let error = sum / Double(values.count)
            if best == nil || error < best!.error { best = (error, s) }
        }
        return 127 * best!.step
    }

    /// Vitis AI's diffs on a weight row or a bias (docs/ALGORITHMS.md §3.4): of the power-of-two
    /// scales `covering`, covering/2, /4, /8, the one whose grid (offset 0, the tensor's own codes
    /// and tie rule) reconstructs `values` with the least squared error, summed in Double in
    /// order; the first (widest) smallest wins.
    public static func leastErrorScale(_ values: UnsafeBufferPointer<Float>, covering: Float, bits: Int,
                                       roundMode: RoundMode, narrowRange: Bool) -> Float {
        var best: (error: Double, scale: Float)?
        for step in 0...narrowerCandidates {
            let s = covering / Float(1 << step)
            guard s >= quantizationEpsilon else { break }
            let grid = QuantizationGrid(bits: bits, scale: s, offset: 0, roundMode: roundMode, narrowRange: narrowRange)
            var sum = 0.0
            for x in values {
                let d = Double(grid.dequantize(grid.quantize(x)) - x)
                sum += d * d
            }
            if best == nil || sum < best!.error { best = (sum, s) }
        }
        return best?.scale ?? covering
    }

    public func range(_ values: [Float], layer: String) throws -> (lower: Float, upper: Float) {
        // Refused by `conflict()` before calibration runs.
        preconditionFailure("diffs calibration is symmetric only")
    }

    public func conflict() -> (key: String, message: String)? {
        guard asymmetric else { return nil }
        return ("asymmetric", "method diffs supports symmetric ranges only (its grids are the power-of-two steps "
                + "of the DPU, whose rules ask for symmetry)")
    }
}
