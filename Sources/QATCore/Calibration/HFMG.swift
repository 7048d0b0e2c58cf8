import QATIO

/// HFMG (histogram search, docs/ALGORITHMS.md §2): a clip range chosen by shrinking a histogram's
/// range from both ends and keeping the range whose 256-level grid reconstructs it best.

/// A histogram with equal-width bins over [lowerEdge, upperEdge].
public struct Histogram: Equatable, Sendable {
    /// Mass per bin (Double so histograms of several batches can be added without overflow).
    public var counts: [Double]
    public var lowerEdge: Float
    public var upperEdge: Float

    public init(counts: [Double], lowerEdge: Float, upperEdge: Float) {
        precondition(!counts.isEmpty && upperEdge >= lowerEdge, "histogram needs bins and lower ≤ upper")
        self.counts = counts
        self.lowerEdge = lowerEdge
        self.upperEdge = upperEdge
    }

    /// Bins over [min, max] of `values` (finite values assumed); a value on a bin edge goes to the
    /// bin above it, and the maximum to the last bin.
    public init(values: [Float], binCount: Int) {
        precondition(binCount > 0 && !values.isEmpty, "histogram needs bins and values")
        let (hi, lo) = values.withUnsafeBufferPointer { xs -> (Float, Float) in
            var hi = xs[0], lo = xs[0]
            for v in xs { hi = max(hi, v); lo = min(lo, v) }
            return (hi, lo)
        }
        var counts = [Double](repeating: 0, count: binCount)
        let width = (Double(hi) - Double(lo)) / Double(binCount)
        for v in values {
            let bin = width > 0 ? Int((Double(v) - Double(lo)) / width) : 0
            counts[min(bin, binCount - 1)] += 1
        }
        self.init(counts: counts, lowerEdge: lo, upperEdge: hi)
    }

    public var binWidth: Double { (Double(upperEdge) - Double(lowerEdge)) / Double(counts.count) }
}

/// What HFMG chose: the clip range, its bins start..<end, and its reconstruction error.
public struct HFMGResult: Equatable, Sendable {
    public var clipMin: Float
    public var clipMax: Float
    public var startBin: Int
    public var endBin: Int
    public var error: Double
}

/// The bin counts HFMG accepts (AMCT's `num_of_bins`).
public let hfmgBinCounts: Set<Int> = [1024, 2048, 4096, 8192]

/// HFMG as a calibrator: AMCT's `act_algo: "hfmg"` with `num_of_bins`.
public struct HFMGParameters: Calibrator, Equatable {
    public static let name = "hfmg"

    public static var settings: [CalibratorSetting<HFMGParameters>] {
        [.integer("num_of_bins", .oneOf(hfmgBinCounts.sorted()), \.binCount),
         .flag("asymmetric", \.asymmetric, isRecordedOnlyWhenChanged: true)]
    }

    /// AMCT's `num_of_bins`: 1024, 2048, 4096 or 8192.
    public var binCount = 4096
    /// True (the default): HFMG's own asymmetric range; false: the symmetric search
    /// (`hfmgSymmetricSearch`), zero point 0.
    public var asymmetric = true

    public init() {}
    public init(binCount: Int, asymmetric: Bool = true) {
        self.binCount = binCount
        self.asymmetric = asymmetric
    }

    /// HFMG's range over every value of the batches, widened to contain 0 (the ULQ bounds always
    /// do, docs/ALGORITHMS.md §1), so data that never goes negative starts with clip_min = 0.
    /// Symmetric: (b, −128·b/127), the grid with zero point 0 and step b/127.
    public func startingClipRange(batches: [Tensor], layer: String) throws -> (clipMax: Float, clipMin: Float) {
        let values = concatenated(batches)
        guard asymmetric else {
            let b = try hfmgSymmetric(values, numberOfBins: binCount, layer: layer)
            return (b, -128 * (b / 127))
        }
        let result = try hfmg(values, numberOfBins: binCount, layer: layer)
        return (max(result.clipMax, 0), min(result.clipMin, 0))
    }
}

/// Symmetric HFMG over one layer's values: the half-width b of the chosen range (errors as `hfmg`).
public func hfmgSymmetric(_ values: [Float], numberOfBins: Int = 4096, layer: String) throws -> Float {
    guard hfmgBinCounts.contains(numberOfBins) else { throw CalibrationError.invalidBinCount(numberOfBins, layer: layer) }
    guard !values.isEmpty else { throw CalibrationError.noData(layer: layer) }
    guard values.allSatisfy({ $0.isFinite }) else { throw CalibrationError.nonFiniteValue(layer: layer) }
    let bound = values.reduce(Float(0)) { max($0, abs($1)) }
    var counts = [Double](repeating: 0, count: numberOfBins)
    let width = 2 * Double(bound) / Double(numberOfBins)
    for v in values {
        let bin = width > 0 ? Int((Double(v) + Double(bound)) / width) : 0
        counts[min(bin, numberOfBins - 1)] += 1
    }
    return hfmgSymmetricSearch(Histogram(counts: counts, lowerEdge: -bound, upperEdge: bound))
}

/// The symmetric search on a histogram over [−A, A]: candidates drop one bin from each end at a
/// time, [−A + i·w, A − i·w], until a quarter of the bins remain, the full range included. The
/// grid of half-width b is zero point 0 and step s = b/127 (levels k·s, k = −128…127); each bin's
/// mass sits at its centre c and maps to clamp(round(c/s), −128, 127)·s; error = Σ mass·(c −
/// level)². The global argmin wins (the widest on a tie). Returns b (A for an all-zero histogram).
public func hfmgSymmetricSearch(_ histogram: Histogram) -> Float {
    let bins = histogram.counts.count
    let width = histogram.binWidth
    let upper = Double(histogram.upperEdge)
    guard width > 0, bins >= 4 else { return histogram.upperEdge }
    var centres: [Double] = []
    var masses: [Double] = []
    for (j, c) in histogram.counts.enumerated() where c > 0 {
        centres.append(Double(histogram.lowerEdge) + (Double(j) + 0.5) * width)
        masses.append(c)
    }
    let candidates = (bins - max(bins / 4, 2)) / 2 + 1
    let best = firstBestCandidate(count: candidates) { i in
        let step = (upper - Double(i) * width) / 127
        var sum = 0.0
        for j in 0..<centres.count {
            let level = QuantizationGrid.clampAndRound(centres[j] / step, low: -128, high: 127)
            let d = centres[j] - level * step
            sum += masses[j] * d * d
        }
        return sum
    }.index
    return best == 0 ? histogram.upperEdge : Float(upper - Double(best) * width)
}

/// HFMG over one layer's collected values. Throws for a bin count outside {1024, 2048, 4096,
/// 8192}, for NaN or infinity, and for no data, naming the layer.
public func hfmg(_ values: [Float], numberOfBins: Int = 4096, layer: String) throws -> HFMGResult {
    guard hfmgBinCounts.contains(numberOfBins) else {
        throw CalibrationError.invalidBinCount(numberOfBins, layer: layer)
    }
    guard !values.isEmpty else { throw CalibrationError.noData(layer: layer) }
    guard values.allSatisfy({ $0.isFinite }) else { throw CalibrationError.nonFiniteValue(layer: layer) }
    return hfmgSearch(Histogram(values: values, binCount: numberOfBins))
}

/// The search itself, on a ready histogram (for example one accumulated over several batches).
///
/// Candidates: start with every bin, then repeatedly drop one boundary bin, the one holding less
/// mass (the right one on a tie), until a quarter of the bins remain; every range on the way,
/// the full one included, is a candidate.
///
/// Error of a candidate [a, b] (bin edges): the grid is a + k·s, k = 0…255, s = (b − a)/255.
/// Each bin's mass is placed at its centre c, which maps to the nearest grid point
/// a + clamp(round((c − a)/s), 0, 255)·s (so mass outside [a, b] goes to the nearer end);
/// error = Σ mass·(c − reconstruction)². The global argmin wins (the first on a tie).
public func hfmgSearch(_ histogram: Histogram) -> HFMGResult {
    let counts = histogram.counts
    let bins = counts.count
    let width = histogram.binWidth
    let lowerEdge = Double(histogram.lowerEdge)
    guard width > 0, bins >= 4 else {
        return HFMGResult(clipMin: histogram.lowerEdge, clipMax: histogram.upperEdge,
                          startBin: 0, endBin: bins, error: 0)
    }

    // The greedy sequence of ranges, as (start, end) bin indices.
    var ranges = [(start: 0, end: bins)]
    var (start, end) = (0, bins)
    let smallest = max(bins / 4, 1)
    while end - start > smallest {
        if counts[start] < counts[end - 1] { start += 1 } else { end -= 1 }
        ranges.append((start, end))
    }

    // Only non-empty bins contribute, so the error loops skip the rest.
    var centres: [Double] = []
    var masses: [Double] = []
    for (j, c) in counts.enumerated() where c > 0 {
        centres.append(lowerEdge + (Double(j) + 0.5) * width)
        masses.append(c)
    }

    let (best, error) = firstBestCandidate(count: ranges.count) { i in
        let a = lowerEdge + Double(ranges[i].start) * width
        let b = lowerEdge + Double(ranges[i].end) * width
        let step = (b - a) / 255
        var sum = 0.0
        for j in 0..<centres.count {
            let level = QuantizationGrid.clampAndRound((centres[j] - a) / step, low: 0, high: 255)
            let d = centres[j] - (a + level * step)
            sum += masses[j] * d * d
        }
        return sum
    }
    let chosen = ranges[best]
    // The outer edges are returned exactly rather than recomputed from the bin width.
    let clipMin = chosen.start == 0 ? histogram.lowerEdge : Float(lowerEdge + Double(chosen.start) * width)
    let clipMax = chosen.end == bins ? histogram.upperEdge : Float(lowerEdge + Double(chosen.end) * width)
    return HFMGResult(clipMin: clipMin, clipMax: clipMax,
                      startBin: chosen.start, endBin: chosen.end, error: error)
}
