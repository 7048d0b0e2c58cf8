import QATIO

/// IFMR (Input Feature Map Reconstruction, docs/ALGORITHMS.md §2): the starting clip range of an
/// activation quantizer, searched over candidate clips around a robust max/min of collected data.

/// Errors of calibration data or settings, naming the layer so a user can find it.
public enum CalibrationError: Error, Equatable, CustomStringConvertible {
    case nonFiniteValue(layer: String)
    case noData(layer: String)
    case invalidBinCount(Int, layer: String)
    case invalidParameters(String, layer: String)

    public var description: String {
        switch self {
        case .nonFiniteValue(let layer):
            return "layer \(layer): calibration data contains NaN or infinity"
        case .noData(let layer):
            return "layer \(layer): no calibration data was collected"
        case .invalidBinCount(let bins, let layer):
            return "layer \(layer): num_of_bins must be 1024, 2048, 4096 or 8192, got \(bins)"
        case .invalidParameters(let reason, let layer):
            return "layer \(layer): invalid IFMR parameters: \(reason)"
        }
    }
}

/// IFMR settings, named as in AMCT's config; the defaults are the contract's.
public struct IFMRParameters: Equatable, Sendable {
    public var maxPercentile: Double = 0.999999
    public var minPercentile: Double = 0.999999
    public var searchRangeStart: Double = 0.7
    public var searchRangeEnd: Double = 1.3
    public var searchStep: Double = 0.01
    public var asymmetric: Bool = false

    public init() {}

    public init(maxPercentile: Double = 0.999999, minPercentile: Double = 0.999999,
                searchRangeStart: Double = 0.7, searchRangeEnd: Double = 1.3,
                searchStep: Double = 0.01, asymmetric: Bool = false) {
        self.maxPercentile = maxPercentile
        self.minPercentile = minPercentile
        self.searchRangeStart = searchRangeStart
        self.searchRangeEnd = searchRangeEnd
        self.searchStep = searchStep
        self.asymmetric = asymmetric
    }

    /// r_i = start + i·step for i = 0, 1, … while r_i ≤ end. Each r_i is computed by
    /// multiplication (no drift), and `end` gets a tolerance of 1e-6 steps so that a candidate
    /// equal to `end` in exact arithmetic (1.3 by default, 61 candidates) is not lost to
    /// binary rounding of 0.7 + 60·0.01.
    public var candidateRatios: [Double] {
        guard searchStep > 0, searchRangeEnd >= searchRangeStart else { return [searchRangeStart] }
        let limit = searchRangeEnd + searchStep * 1e-6
        var ratios: [Double] = []
        var i = 0
        while true {
            let r = searchRangeStart + Double(i) * searchStep
            if r > limit { break }
            ratios.append(r)
            i += 1
        }
        return ratios
    }
}

/// IFMR as a calibrator: AMCT's `act_algo: "ifmr"` with its settings and their ranges (AMCT's
/// post-training manual). `asymmetric` defaults to false, the symmetric QAT start.
extension IFMRParameters: Calibrator {
    public static let name = "ifmr"

    public static var settings: [CalibratorSetting<IFMRParameters>] {
        [.number("max_percentile", .fraction(above: 0.5), \.maxPercentile),
         .number("min_percentile", .fraction(above: 0.5), \.minPercentile),
         CalibratorSetting("search_range", .increasingRange, get: { .range($0.searchRangeStart, $0.searchRangeEnd) },
                           set: { ifmr, value in
                               if case let .range(start, end) = value { (ifmr.searchRangeStart, ifmr.searchRangeEnd) = (start, end) }
                           }),
         .number("search_step", .positive, \.searchStep),
         .flag("asymmetric", \.asymmetric, isRecordedOnlyWhenChanged: true)]
    }

    /// The symmetric start (127·s*, −128·s*); asymmetric, IFMR's own bounds (r*·max_v, min_v).
    public func startingClipRange(batches: [Tensor], layer: String) throws -> (clipMax: Float, clipMin: Float) {
        let result = try ifmr(concatenated(batches), parameters: self, layer: layer)
        return asymmetric ? (result.clipMax, result.clipMin) : result.startingClipRange
    }

    /// AMCT allows search_step in (0, end − start]; a wider step would search only r = start.
    /// The most candidate ratios one search may try (docs/CONFIG.md "Ranges").
    public static let maxSearchSteps = 100_000

    public func conflict() -> (key: String, message: String)? {
        let width = searchRangeEnd - searchRangeStart
        if width / searchStep > Double(Self.maxSearchSteps) {
            return ("search_step", "search_step \(searchStep) over search_range [\(searchRangeStart), \(searchRangeEnd)] "
                    + "gives more than \(Self.maxSearchSteps) search steps: use a wider step")
        }
        guard searchStep > width * (1 + 1e-9) else { return nil }
        return ("search_step", "search_step \(searchStep) is wider than search_range [\(searchRangeStart), \(searchRangeEnd)]: "
                + "AMCT allows a step in (0, end − start]")
    }
}

/// What IFMR chose.
public struct IFMRResult: Equatable, Sendable {
    /// s* (1 when the search gave a scale below EPS).
    public var scale: Float
    /// Integer zero point: 0 when symmetric, −round(min_v / s) − 128 when asymmetric.
    public var offset: Int
    /// The chosen upper clip c* = r*·A (symmetric) or r*·max_v (asymmetric).
    public var clipMax: Float
    /// −c* when symmetric, min_v when asymmetric.
    public var clipMin: Float
    /// The chosen ratio r* and its mean squared reconstruction error.
    public var ratio: Double
    public var loss: Double

    /// The ULQ starting bounds from a symmetric result: (M, m) = (127·s*, −128·s*).
    public var startingClipRange: (clipMax: Float, clipMin: Float) {
        QATCore.startingClipRange(fromSymmetricScale: scale)
    }
}

/// (clip_max, clip_min) = (127·s, −128·s): the ULQ start that reproduces the INT8 grid of s.
public func startingClipRange(fromSymmetricScale scale: Float) -> (clipMax: Float, clipMin: Float) {
    (127 * scale, -128 * scale)
}

/// The percentile rule: k = N − floor(p·N), or k = 1 when 1 − p < EPS; kept within 1…N.
/// p·N is computed in Double with a relative tolerance of 1e-12, so that p·N landing a hair
/// below an integer through binary rounding of p (0.999999 is not exact) does not add one to k.
func percentileRank(count: Int, percentile p: Double) -> Int {
    if 1 - p < Double(quantizationEpsilon) { return 1 }
    let product = p * Double(count)
    let k = count - Int((product + product * 1e-12).rounded(.down))
    return min(max(k, 1), count)
}

/// Runs IFMR over every collected value of one layer's input.
///
/// Symmetric (the QAT start): A = max(|max_v|, |min_v|), D = 128 if |min_v| > |max_v| else 127,
/// c_i = r_i·A, s_i = c_i / D, loss_i = mean((round(clamp(x, −c_i, c_i) / s_i)·s_i − x)²).
/// Asymmetric: c_i = r_i·max_v, s_i = (c_i − min_v) / 255,
/// loss_i = mean((round(clamp(x, min_v, c_i) / s_i)·s_i − x)²).
/// The first argmin wins. c_i and s_i are Float (as the quantizer will use them); the loss is
/// accumulated in Double. A candidate scale below EPS is evaluated, and returned, as 1.
public func ifmr(_ values: [Float], parameters: IFMRParameters = IFMRParameters(),
                 layer: String) throws -> IFMRResult {
    guard !values.isEmpty else { throw CalibrationError.noData(layer: layer) }
    guard values.allSatisfy({ $0.isFinite }) else { throw CalibrationError.nonFiniteValue(layer: layer) }
    let percentiles = [parameters.maxPercentile, parameters.minPercentile]
    guard percentiles.allSatisfy({ $0 > 0 && $0 <= 1 }) else {
        throw CalibrationError.invalidParameters("percentiles must be in (0, 1]", layer: layer)
    }
    guard parameters.searchStep > 0, parameters.searchRangeStart > 0,
          parameters.searchRangeEnd >= parameters.searchRangeStart else {
        throw CalibrationError.invalidParameters("need 0 < start ≤ end and step > 0", layer: layer)
    }

    // Step 1: the k-th largest and k-th smallest values, widened to include 0.
    var work = values
    let n = values.count
    let kMax = percentileRank(count: n, percentile: parameters.maxPercentile)
    let kMin = percentileRank(count: n, percentile: parameters.minPercentile)
    let maxV = max(orderStatistic(&work, index: n - kMax), 0)
    let minV = min(orderStatistic(&work, index: kMin - 1), 0)

    // Steps 2–3: every candidate's clip bounds and scale, then their losses.
    let ratios = parameters.candidateRatios
    let candidates: [(lower: Float, upper: Float, scale: Float)] = ratios.map { r in
        if parameters.asymmetric {
            let c = Float(r * Double(maxV))
            return (minV, c, (c - minV) / 255)
        }
        let a = max(abs(maxV), abs(minV))
        let divisor: Float = abs(minV) > abs(maxV) ? 128 : 127
        let c = Float(r * Double(a))
        return (-c, c, c / divisor)
    }
    // Step 4: the first argmin.
    let (best, loss) = values.withUnsafeBufferPointer { xs in
        firstBestCandidate(count: candidates.count) { i in
            let c = candidates[i]
            let s = c.scale < quantizationEpsilon ? 1 : c.scale
            var sum = 0.0
            for x in xs {
                let d = Double(roundHalfEven(min(max(x, c.lower), c.upper) / s) * s - x)
                sum += d * d
            }
            return sum / Double(n)
        }
    }
    let chosen = candidates[best]
    let scale = chosen.scale < quantizationEpsilon ? 1 : chosen.scale
    var offset = 0
    if parameters.asymmetric {
        offset = -Int((minV / scale).rounded(.toNearestOrEven)) - 128
        offset = min(max(offset, -128), 127)   // only float noise can push it out
    }
    return IFMRResult(scale: scale, offset: offset, clipMax: chosen.upper, clipMin: chosen.lower,
                      ratio: ratios[best], loss: loss)
}

/// The value that would sit at `index` if `values` were sorted (quickselect, reordering
/// `values`). Three-way partitioning keeps it linear on data with many equal values, such as
/// the zeros after a ReLU; the median-of-three pivot keeps it deterministic.
func orderStatistic(_ values: inout [Float], index: Int) -> Float {
    precondition(index >= 0 && index < values.count, "orderStatistic: index \(index) of \(values.count)")
    var low = 0, high = values.count - 1
    while low < high {
        let mid = low + (high - low) / 2
        let (a, b, c) = (values[low], values[mid], values[high])
        let pivot = max(min(a, b), min(max(a, b), c))
        // Partition values[low...high] into < pivot | == pivot | > pivot.
        var lt = low, i = low, gt = high
        while i <= gt {
            let v = values[i]
            if v < pivot {
                values.swapAt(lt, i); lt += 1; i += 1
            } else if v > pivot {
                values.swapAt(i, gt); gt -= 1
            } else {
                i += 1
            }
        }
        if index < lt { high = lt - 1 } else if index > gt { low = gt + 1 } else { return pivot }
    }
    return values[low]
}

extension CalibrationError: UserFacingError {}
