import QATIO

// Non-uniform weight quantization, NUQ (AMCT's `nuq_quantize`; docs/ALGORITHMS.md §3.1).
//
// After ARQ's row scale s, each row keeps only `steps` of the 256 int8 codes: its levels. They
// are chosen by Lloyd's algorithm (1-D k-means) on t = w/s, so they minimise Σ (w − s·level(w))²
// over integer levels; each weight takes its nearest level. The levels are int8 codes, so the
// INT8 kernels run a NUQ layer unchanged: the deployer writes each weight's level as its code.
// The levels are chosen once (the first forward, or read from a checkpoint) and then kept,
// so QAT trains the weights against fixed levels with a straight-through gradient.

/// `nuq_quantize`: how many levels a row keeps and how many Lloyd passes refine them.
public struct NUQParameters: Equatable, Sendable {
    /// Levels per row (`num_steps`; AMCT allows 16 or 32).
    public var steps: Int
    /// Lloyd passes after the uniform start (`num_of_iteration`, 0 … 5); 0 keeps the start.
    public var iterations: Int

    public init(steps: Int, iterations: Int) {
        self.steps = steps
        self.iterations = iterations
    }
}

/// A layer's NUQ settings and, once chosen, each row's levels.
public final class NonUniformWeights {
    public let parameters: NUQParameters
    /// Per row, the distinct levels in ascending order (int8 codes); nil until chosen.
    public var levels: [[Int]]?

    public init(_ parameters: NUQParameters) {
        self.parameters = parameters
    }
}

/// The levels of one row from its scaled values t = w/s (already clamped to the code range).
///
/// Start: `steps` levels spread uniformly over the row's used code range [c_min, c_max]
/// (c = round(t)): round(c_min + k·(c_max − c_min)/(steps − 1)), k = 0 … steps − 1, in Double,
/// duplicates dropped (a row using ≤ `steps` codes keeps all of them: ARQ exactly).
/// Each pass: assign every t to its nearest level (`nearestLevel`), then move each level to
/// its members' mean rounded half to even (the best integer level for them, since
/// Σ (t − l)² = n·(l − mean)² + const); a level without members stays. The error never grows.
public func nuqLevels(scaled t: UnsafeBufferPointer<Float>, parameters: NUQParameters) -> [Int] {
    precondition(parameters.steps >= 2, "NUQ needs at least 2 levels")
    guard !t.isEmpty else { return [0] }
    var low = Int.max, high = Int.min
    for value in t {
        let code = Int(roundHalfEven(value))
        low = min(low, code)
        high = max(high, code)
    }
    var levels: [Int] = []
    let span = Double(high - low), last = Double(parameters.steps - 1)
    for k in 0..<parameters.steps {
        let level = Int((Double(low) + Double(k) * span / last).rounded(.toNearestOrEven))
        if levels.last != level { levels.append(level) }
    }
    for _ in 0..<parameters.iterations {
        var sums = [Double](repeating: 0, count: levels.count)
        var counts = [Int](repeating: 0, count: levels.count)
        for value in t {
            let index = nearestLevelIndex(value, in: levels)
            sums[index] += Double(value)
            counts[index] += 1
        }
        var moved: [Int] = []
        for index in levels.indices {
            let level = counts[index] == 0 ? levels[index] : Int((sums[index] / Double(counts[index])).rounded(.toNearestOrEven))
            // Means of consecutive intervals are ordered, so the levels stay sorted; equal ones merge.
            if moved.last != level { moved.append(level) }
        }
        if moved == levels { break }
        levels = moved
    }
    return levels
}

/// The index of the level nearest to t in ascending `levels`. A tie (t halfway between two
/// levels) goes to the level of smaller magnitude, and between l and −l to the positive one.
@inline(__always)
public func nearestLevelIndex(_ t: Float, in levels: [Int]) -> Int {
    // The first level ≥ t, by bisection.
    var lo = 0, hi = levels.count
    while lo < hi {
        let mid = (lo + hi) / 2
        if Float(levels[mid]) < t { lo = mid + 1 } else { hi = mid }
    }
    if lo == 0 { return 0 }
    if lo == levels.count { return levels.count - 1 }
    let below = levels[lo - 1], above = levels[lo]
    let dBelow = t - Float(below), dAbove = Float(above) - t
    if dBelow < dAbove { return lo - 1 }
    if dAbove < dBelow { return lo }
    return abs(below) < abs(above) ? lo - 1 : lo
}

/// t = clamp(w/s, qmin, qmax) per element of one row, as ARQ divides before rounding.
func scaledRow(_ row: UnsafeBufferPointer<Float>, scale: Float, bits: Int) -> [Float] {
    let (qmin, qmax) = QuantizationGrid.codeBounds(bits: bits)
    return row.map { min(max($0 / scale, Float(qmin)), Float(qmax)) }
}

/// The NUQ code (a level) of every weight, with the row scales (ARQ's). Chooses and stores
/// the levels first when `nonUniform` has none. NaN weights take the level nearest 0.
public func nuqCodes(_ weight: Tensor, rows: Int, bits: Int, nonUniform: NonUniformWeights) -> (codes: [Int], scales: [Float]) {
    let scales = arqScales(weight, rows: rows, bits: bits)
    let rowLength = weight.count / rows
    var codes = [Int](repeating: 0, count: weight.count)
    weight.storage.withUnsafeBufferPointer { ws in
        let scaled = (0..<rows).map { r in
            scaledRow(UnsafeBufferPointer(rebasing: ws[(r * rowLength)..<((r + 1) * rowLength)]), scale: scales[r], bits: bits)
                .map { $0.isNaN ? 0 : $0 }
        }
        if nonUniform.levels == nil {
            nonUniform.levels = scaled.map { row in row.withUnsafeBufferPointer { nuqLevels(scaled: $0, parameters: nonUniform.parameters) } }
        }
        let levels = nonUniform.levels!
        for r in 0..<rows {
            for (j, t) in scaled[r].enumerated() {
                codes[r * rowLength + j] = levels[r][nearestLevelIndex(t, in: levels[r])]
            }
        }
    }
    return (codes, scales)
}

/// NUQ fake quantization: ŵ = s·level(w/s) per row; backward is straight-through, as ARQ's.
public func nuqFakeQuantize(_ weight: Variable, state: WeightQuantizerState, nonUniform: NonUniformWeights,
                            tape: Tape?) -> Variable {
    let (codes, scales) = nuqCodes(weight.value, rows: state.rowCount, bits: state.numBits, nonUniform: nonUniform)
    state.scales = scales
    let rowLength = weight.value.count / state.rowCount
    var values = weight.value
    for i in codes.indices { values.storage[i] = Float(codes[i]) * scales[i / rowLength] }
    return straightThrough(weight, quantized: values, tape: tape)
}

/// The squared error Σ (t − level(t))² of one row's scaled values against `levels`, in Double
/// (Σ (w − s·level)² / s²): what Lloyd's passes lower.
public func nuqError(scaled t: UnsafeBufferPointer<Float>, levels: [Int]) -> Double {
    t.reduce(0) { sum, value in
        let d = Double(value) - Double(levels[nearestLevelIndex(value, in: levels)])
        return sum + d * d
    }
}
