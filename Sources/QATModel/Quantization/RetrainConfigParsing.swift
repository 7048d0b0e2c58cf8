import Foundation
import QATCore
import QATIO

// Reading a retrain config (RetrainConfig.swift has the types): the two AMCT retrain forms here,
// and the dispatch to the other formats' readers (ConfigFormat.swift). Errors name the file and
// the key path.

extension RetrainConfig {
    /// Reads and checks a config file; errors name the file and the key path.
    public static func load(file: String) throws -> RetrainConfig {
        try read(file: file).config
    }

    /// Reads a config file in any format, with the JSON object the trainer's sections
    /// (`RunSettings`) come from: empty for AMCT's proto-text simple config, which has none.
    /// The format is decided by content (`ConfigFormat.isProtoText`), then by keys.
    public static func read(file: String) throws -> (config: RetrainConfig, root: JSONObject) {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw InputError(file: file, message: "cannot read the file (missing or unreadable)")
        }
        guard ConfigFormat.isProtoText(data) else {
            let root = try JSONObject.parse(data, file: file)
            return (try parse(root), root)
        }
        let config = try AMCTSimpleConfig.parse(ProtoTextMessage.parse(data, file: file))
        return (config, JSONObject(file: file, path: "", values: [:]))
    }

    /// `batch_num`'s range at parse time; at run start batch_num × batch_size must also fit
    /// in the training set (TrainingRun).
    public static let batchCountRange = 1...65_536

    /// Reads a config in any format qat knows (the front door: `ConfigFormat.detect` picks the
    /// reader), as the one rule model every command resolves against a model.
    public static func parse(_ root: JSONObject) throws -> RetrainConfig {
        switch try ConfigFormat.detect(root) {
        case .amctRetrain, .simple, .floatTraining: return try parseRetrainForms(root)
        case .amctPTQ: return try AMCTPTQConfig.parse(root)
        case .amctSimpleProtoText:
            throw InputError(file: root.file, message: "is JSON; AMCT's simple config is proto text (key: value)")
        case .vitis: return try VitisConfig.parse(root)
        }
    }

    /// Reads the AMCT retrain config.json or the simple form (or a file with neither's rules).
    private static func parseRetrainForms(_ root: JSONObject) throws -> RetrainConfig {
        let (version, batchCount) = try parseVersionAndBatchCount(root)
        let sections = try parseTrainerSections(root)
        var calibration = CalibrationConfig()
        if let section = try root.object("calibration") {
            calibration = try CalibrationConfig.parse(section)
            try section.rejectUnknownKeys()
        }

        // Every other top-level key is a layer name (AMCT form) or a simple-form key.
        var jointQuantCalibration: CalibrationConfig?
        if let section = try root.object(ConfigFormat.jointQuantKey) {
            jointQuantCalibration = try CalibrationConfig.parse(section)
            try section.rejectUnknownKeys()
        }
        var tensorQuantize: [TensorQuantizeEntry] = []
        if let section = try root.object(ConfigFormat.tensorQuantizeKey) {
            for name in section.keys {
                let entry = try requiredObject(section, name)
                // input_index: an add's input (absent: 0, a max pool's only input).
                let inputIndex = try entry.int("input_index") ?? 0
                guard inputIndex >= 0 else { throw entry.error("input_index", "must be ≥ 0, got \(inputIndex)") }
                tensorQuantize.append(TensorQuantizeEntry(keyPath: entry.path, layerName: name, inputIndex: inputIndex,
                                                          calibration: try CalibrationConfig.parse(entry)))
                try entry.rejectUnknownKeys()
            }
        }
        let otherKeys = root.keys.filter {
            !["version", "batch_num", ConfigFormat.jointQuantKey, ConfigFormat.tensorQuantizeKey].contains($0) && !reservedSections.contains($0)
        }
        let simpleKeys = otherKeys.filter { simpleFormKeys.contains($0) }
        let layerNames = otherKeys.filter { !simpleFormKeys.contains($0) }

        let rules: LayerRules
        if let simpleKey = simpleKeys.first {
            if let layerName = layerNames.first {
                throw root.error(layerName, "a per-layer entry cannot be mixed with the simple form (the file has \"\(simpleKey)\"); "
                    + "move it under override_layer_configs, or drop the simple-form keys (\(simpleKeys.joined(separator: ", ")))")
            }
            rules = .simple(try parseSimpleRules(root))
        } else {
            var entries: [String: QuantizerConfig] = [:]
            for name in layerNames {
                guard root.values[name] is [String: Any] else {
                    throw root.error(name, "unknown key: not a key of the \(ConfigFormat.amctRetrain.name), and not a layer entry "
                        + "(expected a layer entry object, got \(jsonTypeName(root.values[name]!)); top-level keys other than "
                        + "version, batch_num and the sections \(reservedSections.joined(separator: ", ")) are layer names)")
                }
                entries[name] = try parseQuantizerConfig(root.object(name)!, allowsEnable: true)
            }
            rules = .perLayer(entries)
        }
        var config = RetrainConfig(file: root.file, version: version, batchCount: batchCount, rules: rules,
                                   calibration: calibration, runtimeSections: sections)
        config.jointQuantCalibration = jointQuantCalibration
        config.tensorQuantize = tensorQuantize
        return config
    }

    /// `version` (1) and `batch_num`, which every AMCT format shares.
    static func parseVersionAndBatchCount(_ root: JSONObject) throws -> (version: Int, batchCount: Int) {
        let version = try root.int("version") ?? 1
        guard version == 1 else { throw root.error("version", "unsupported version \(version) (allowed: 1)") }
        let batchCount = try root.int("batch_num") ?? 1
        guard batchCountRange.contains(batchCount) else {
            throw root.error("batch_num", "must be > 0 and ≤ \(batchCountRange.upperBound) "
                             + "(the number of batches calibration runs on), got \(batchCount)")
        }
        return (version, batchCount)
    }

    /// The trainer's sections as written (RunSettings reads them).
    static func parseTrainerSections(_ root: JSONObject) throws -> [String: JSONValue] {
        var sections: [String: JSONValue] = [:]
        for name in trainerSections {
            if let section = try root.object(name) { sections[name] = JSONValue(foundation: section.values) }
        }
        return sections
    }

    /// Parses the simple form's keys from the top-level object.
    private static func parseSimpleRules(_ root: JSONObject) throws -> SimpleRules {
        var rules = SimpleRules()
        rules.global = try parseQuantizerConfig(root, allowsEnable: false, checksUnknownKeys: false)

        rules.skipLayers = try root.stringArray("skip_layers") ?? []
        for (index, typeName) in (try root.stringArray("skip_layer_types") ?? []).enumerated() {
            rules.skipLayerTypes.append(try quantizableKind(typeName, in: root, key: "skip_layer_types[\(index)]"))
        }

        if let types = try root.object("override_layer_types") {
            for typeName in types.keys {
                let kind = try quantizableKind(typeName, in: types, key: typeName)
                rules.typeOverrides[kind] = try parseQuantizerConfig(try requiredObject(types, typeName), allowsEnable: false)
                if rules.skipLayerTypes.contains(kind) {
                    throw types.error(typeName, "\(typeName) is also in skip_layer_types; keep only one of the two")
                }
            }
        }
        if let layers = try root.object("override_layer_configs") {
            for name in layers.keys {
                rules.layerOverrides[name] = try parseQuantizerConfig(try requiredObject(layers, name), allowsEnable: false)
                if rules.skipLayers.contains(name) {
                    throw layers.error(name, "\(name) is also in skip_layers; keep only one of the two")
                }
            }
        }
        return rules
    }

    /// A type name from `skip_layer_types` or `override_layer_types`: conv2d or linear.
    private static func quantizableKind(_ name: String, in object: JSONObject, key: String) throws -> LayerType {
        guard let kind = LayerType(name: name), kind.isQuantizable else {
            let why = LayerType(name: name) == nil ? "unknown layer type" : "layers of this type are never quantized:"
            throw object.error(key, "\(why) \"\(truncatedForMessage(name))\" (allowed: \(quantizableTypeNames.joined(separator: ", ")))")
        }
        return kind
    }

    private static func requiredObject(_ parent: JSONObject, _ key: String) throws -> JSONObject {
        guard let object = try parent.object(key) else { throw parent.error(key, "expected an object, got null") }
        return object
    }

    /// Parses `retrain_enable` (if allowed), `retrain_data_config` and `retrain_weight_config`.
    /// `checksUnknownKeys` is false for the top-level object, whose other keys belong to others.
    private static func parseQuantizerConfig(_ object: JSONObject, allowsEnable: Bool,
                                             checksUnknownKeys: Bool = true) throws -> QuantizerConfig {
        var config = QuantizerConfig(keyPath: object.path)
        if allowsEnable {
            config.isEnabled = try object.bool("retrain_enable") ?? true
            config.dmqStrength = try parseDMQStrength(object)
        }
        if let data = try object.object("retrain_data_config") {
            config.data = try parseDataConfig(data)
        }
        if let weight = try object.object("retrain_weight_config") {
            config.weight = try parseWeightConfig(weight)
        }
        if checksUnknownKeys {
            try object.rejectUnknownKeys()
        }
        return config
    }

    /// DMQ's migration strength range (AMCT's PTQ manual: [0.2, 0.8]).
    static let dmqStrengthRange = 0.2...0.8

    /// `dmq_balancer_param` of a layer entry, range-checked.
    static func parseDMQStrength(_ object: JSONObject) throws -> Double? {
        guard let strength = try object.double("dmq_balancer_param") else { return nil }
        guard dmqStrengthRange.contains(strength) else {
            throw object.error("dmq_balancer_param", "must be in [0.2, 0.8], got \(strength)")
        }
        return strength
    }

    private static func parseDataConfig(_ object: JSONObject) throws -> RetrainDataConfig {
        var config = RetrainDataConfig()
        config.algorithm = try choice(object, "algo", allowed: ActivationAlgorithm.allCases)
        config.clipMax = try clipBound(object, "clip_max", positive: true)
        config.clipMin = try clipBound(object, "clip_min", positive: false)
        // AMCT silently ignores a lone bound; here it is an error, since the user clearly meant
        // something and would otherwise get IFMR without noticing.
        if (config.clipMax == nil) != (config.clipMin == nil) {
            let (given, missing) = config.clipMax != nil ? ("clip_max", "clip_min") : ("clip_min", "clip_max")
            throw object.error(given, "given without \(missing): give both bounds, or neither to let calibration (IFMR by default) set them")
        }
        if let clipMax = config.clipMax, let clipMin = config.clipMin, !clipRangeIsResolvable(clipMax: clipMax, clipMin: clipMin) {
            throw object.error("clip_max", "clip range [\(clipMin), \(clipMax)] is below the float32 grid resolution: "
                               + "(clip_max − clip_min)/255 must be ≥ 2⁻²³·max(|clip_max|, |clip_min|, 1)")
        }
        config.fixedMin = try object.bool("fixed_min")
        config.dstType = try choice(object, "dst_type", allowed: QuantizedType.allCases)
        config.learnClip = try object.bool("learn_clip")
        config.scaleType = try choice(object, "scale_type", allowed: ScaleType.allCases)
        config.roundMode = try choice(object, "round_mode", allowed: RoundMode.allCases)
        config.narrowRange = try object.bool("narrow_range")
        config.dataType = try choice(object, "data_type", allowed: TensorDataType.allCases)
        config.calibration = try CalibrationConfig.parse(object)
        try object.rejectUnknownKeys()
        try rejectIntegerSettings(object, beside: config.dataType, allowed: ["data_type"])
        return config
    }

    private static func parseWeightConfig(_ object: JSONObject) throws -> RetrainWeightConfig {
        var config = RetrainWeightConfig()
        config.algorithm = try choice(object, "algo", allowed: WeightAlgorithm.allCases)
        config.channelWise = try object.bool("channel_wise")
        config.dstType = try choice(object, "dst_type", allowed: [QuantizedType.int8])
        if let nuq = try object.object("nuq_quantize") {
            guard config.algorithm != .ulqRetrain else {
                throw object.error("nuq_quantize", "NUQ levels sit on ARQ's scales: not allowed with algo \"ulq_retrain\"")
            }
            config.algorithm = .arqRetrain
            let steps = try nuq.int("num_steps") ?? 16
            guard RetrainWeightConfig.nuqStepChoices.contains(steps) else {
                throw nuq.error("num_steps", "must be 16 or 32, got \(steps)")
            }
            let iterations = try nuq.int("num_of_iteration") ?? 0
            guard RetrainWeightConfig.nuqIterationRange.contains(iterations) else {
                throw nuq.error("num_of_iteration", "must be in 0...5, got \(iterations)")
            }
            try nuq.rejectUnknownKeys()
            config.nonUniform = NUQParameters(steps: steps, iterations: iterations)
        }
        config.asymmetric = try object.bool("asymmetric")
        config.weightCompressOnly = try object.bool("weight_compress_only")
        config.scaleType = try choice(object, "scale_type", allowed: ScaleType.allCases)
        config.roundMode = try choice(object, "round_mode", allowed: RoundMode.allCases)
        config.narrowRange = try object.bool("narrow_range")
        config.bias = try BiasQuantization.parse(object)
        config.scaleMethod = try choice(object, "method", allowed: ScaleMethod.allCases)
        if let value = try object.double("percentage") {
            guard value > 50 && value <= 100 else { throw object.error("percentage", "must be in (50, 100], got \(value)") }
            config.percentage = value
        }
        config.dataType = try choice(object, "data_type", allowed: TensorDataType.allCases)
        config.biasDataType = try choice(object, "bias_data_type", allowed: TensorDataType.allCases)
        try object.rejectUnknownKeys()
        try rejectIntegerSettings(object, beside: config.dataType, allowed: ["data_type", "bias_data_type"])
        return config
    }

    /// A float `data_type` casts instead of quantizing, so the integer settings beside it in the
    /// same object would be ignored: they are an error instead.
    private static func rejectIntegerSettings(_ object: JSONObject, beside dataType: TensorDataType?, allowed: [String]) throws {
        guard let format = dataType?.floatFormat else { return }
        if let key = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw object.error(key, "applies to data_type int only; remove it (this object sets data_type \(format.rawValue))")
        }
    }

    /// True when one step of the INT8 grid over [clip_min, clip_max] is at least one float32 ulp
    /// of the larger of the bounds and 1 (docs/CONFIG.md "Ranges"): a narrower range collapses
    /// every activation onto a handful of levels, or to a scale below EPS.
    static func clipRangeIsResolvable(clipMax: Float, clipMin: Float) -> Bool {
        let step = (Double(clipMax) - Double(clipMin)) / 255
        return step >= Double(Float.ulpOfOne) * max(Double(abs(clipMax)), Double(abs(clipMin)), 1)
    }

    /// A clip bound: finite in Float, and > 0 (clip_max) or < 0 (clip_min).
    private static func clipBound(_ object: JSONObject, _ key: String, positive: Bool) throws -> Float? {
        guard let value = try object.double(key) else { return nil }
        let bound = Float(value)
        guard bound.isFinite else { throw object.error(key, "must be a finite float, got \(value)") }
        if positive && !(bound > 0) { throw object.error(key, "must be > 0, got \(value)") }
        if !positive && !(bound < 0) { throw object.error(key, "must be < 0, got \(value)") }
        return bound
    }

    /// A string that must be one of `allowed`'s raw values.
    static func choice<T: RawRepresentable>(_ object: JSONObject, _ key: String,
                                                    allowed: [T]) throws -> T? where T.RawValue == String {
        guard let text = try object.string(key) else { return nil }
        guard let value = allowed.first(where: { $0.rawValue == text }) else {
            let names = allowed.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            throw object.error(key, "unsupported value \"\(truncatedForMessage(text))\" (allowed: \(names))")
        }
        return value
    }
}

