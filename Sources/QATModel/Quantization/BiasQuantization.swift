import QATCore
import QATIO

// Bias quantization (Vitis AI's `"bias"` in `quantizable_data_type`, docs/ALGORITHMS.md §3.3):
// a bias on a grid of its own before it goes onto the int32 accumulator grid. In the retrain
// forms (and a checkpoint's record of the plan) it is qat's extension `bias_quantize` inside
// `retrain_weight_config`: {"bit_width", "scale_type", "round_mode", "narrow_range", "method"}, or false.

/// How a config quantizes a layer's bias; nil in a config means "not given here".
public enum BiasQuantization: Equatable, Sendable {
    /// Only the accumulator grid s_x·s_w (qat's default; `bias_quantize: false`).
    case accumulatorGridOnly
    /// A grid of its own first.
    case ownGrid(BiasGrid)

    /// The grid, or nil for the accumulator grid only.
    public var grid: BiasGrid? {
        if case .ownGrid(let grid) = self { return grid }
        return nil
    }

    /// The bias widths the engine's int32 accumulator takes exactly.
    public static let bitWidths = [8, 16]

    /// `bias_quantize` of a weight section, if given.
    static func parse(_ object: JSONObject, key: String = "bias_quantize") throws -> BiasQuantization? {
        guard let value = try object.value(key) else { return nil }
        if !(value is [String: Any]) {
            guard let on = try object.bool(key), !on else { throw object.error(key, "expected an object or false, got true") }
            return .accumulatorGridOnly
        }
        guard let section = try object.object(key) else { return nil }
        let bits = try section.int("bit_width") ?? 8
        guard bitWidths.contains(bits) else { throw section.error("bit_width", "must be 8 or 16, got \(bits)") }
        let scale = try RetrainConfig.choice(section, "scale_type", allowed: ScaleType.allCases) ?? .float
        let mode = try RetrainConfig.choice(section, "round_mode", allowed: RoundMode.allCases) ?? .halfEven
        let narrow = try section.bool("narrow_range") ?? false
        let method = try RetrainConfig.choice(section, "method", allowed: ScaleMethod.biasMethods) ?? .maxmin
        guard method == .maxmin || scale == .powerOfTwo else {
            throw section.error("method", "diffs needs scale_type poweroftwo (its candidates are powers of two)")
        }
        try section.rejectUnknownKeys()
        return .ownGrid(BiasGrid(bits: bits, powerOfTwo: scale == .powerOfTwo, roundMode: mode, narrowRange: narrow,
                                 searchesPowerOfTwo: method == .diffs))
    }

    /// The JSON value `parse` reads back: every key written.
    var json: JSONValue {
        guard let grid else { return JSONValue(false) }
        return .object([.init("bit_width", JSONValue(grid.bits)),
                        .init("scale_type", JSONValue((grid.powerOfTwo ? ScaleType.powerOfTwo : .float).rawValue)),
                        .init("round_mode", JSONValue(grid.roundMode.rawValue)),
                        .init("narrow_range", JSONValue(grid.narrowRange)),
                        .init("method", JSONValue((grid.searchesPowerOfTwo ? ScaleMethod.diffs : .maxmin).rawValue))])
    }
}

extension BiasGrid {
    /// How plans and summaries show the grid, e.g. "int8 maxmin, poweroftwo, std_round, narrow_range".
    public var summary: String {
        "int\(bits) \(searchesPowerOfTwo ? "diffs" : "maxmin")" + (powerOfTwo ? ", poweroftwo" : "") + (roundMode == .halfEven ? "" : ", \(roundMode.rawValue)")
            + (narrowRange ? ", narrow_range" : "")
    }
}
