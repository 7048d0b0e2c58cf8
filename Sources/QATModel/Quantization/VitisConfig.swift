import Foundation
import QATCore
import QATIO

// Vitis AI's vai_q_pytorch quantization config JSON, verbatim (docs/CONFIG.md "Vitis AI JSON";
// UG1414 "Quantization strategy configuration"). It is read into the simple form's rules: the
// model configuration is the global rule, each `layer_quantize_config` entry a type rule
// (`layer_type`) or a layer rule (`layer_name`), so `qat calibrate`, `plan` and `train` resolve it
// into the one per-layer plan. `include_cle` and `include_bias_corr` (true by default, as in the
// manual) become the plan's PTQ transforms, run around calibration (ALGORITHMS §2.5);
// `convert_relu6_to_relu` a graph rewrite (GraphRewrite.swift); `keep_first_last_layer_accuracy`
// and `keep_add_layer_accuracy` rules of the plan. What qat
// cannot run yet (DPU rules, bias
// quantization, …) is refused with the key path, never accepted and ignored.

/// The Vitis AI JSON reader.
enum VitisConfig {
    /// The global quantizer settings and sections of the model configuration.
    static let topLevelKeys = ["convert_relu6_to_relu", "convert_silu_to_hswish", "include_cle", "include_bias_corr",
                               "keep_first_last_layer_accuracy", "keep_add_layer_accuracy", "target_device",
                               "quantizable_data_type", "overall_quantize_config", "tensor_quantize_config",
                               "layer_quantize_config"]

    /// The tensors a config can quantize (`quantizable_data_type`, `tensor_quantize_config`).
    static let tensorNames = ["input", "weights", "bias", "activation"]

    /// Global switches whose only supported value is false, with what true would ask for and the
    /// manual's default (used when the key is left out; true for CLE and bias correction).
    static let unsupportedSwitches: [(key: String, manualDefault: Bool, feature: String)] = [
        ("convert_silu_to_hswish", false, "qat has no converting SiLU to hard swish"),
    ]

    static func parse(_ root: JSONObject) throws -> RetrainConfig {
        let (version, batchCount) = try RetrainConfig.parseVersionAndBatchCount(root)
        let sections = try RetrainConfig.parseTrainerSections(root)
        for (key, manualDefault, feature) in unsupportedSwitches {
            let value = try root.bool(key)
            guard value ?? manualDefault else { continue }
            throw root.error(key, "true\(value == nil ? " (the manual's default when the key is left out)" : "") is not "
                             + "supported yet: \(feature); set \(key) false")
        }
        let device = try root.string("target_device") ?? "DPU"
        switch device {
        case "CPU", "GPU": break
        case "DPU":
            throw root.error("target_device", "\"DPU\"\(root.contains("target_device") ? "" : " (the manual's default when the key is left out)") "
                             + "is not supported yet: qat does not enforce the DPU rules; set \"CPU\" or \"GPU\"")
        default:
            throw root.error("target_device", "unsupported value \"\(truncatedForMessage(device))\" (allowed: \"DPU\", \"CPU\", \"GPU\")")
        }

        // The model configuration: the manual's defaults, refined by overall_quantize_config.
        var overall = TensorSettings.manualDefault
        guard let overallObject = try root.object("overall_quantize_config") else {
            throw InputError(file: root.file, keyPath: "overall_quantize_config",
                             message: "is required (the model's quantization settings: bit_width, method, round_mode, …)")
        }
        try overall.apply(overallObject)
        let tensors = try tensorConfigs(root)
        let types = try quantizedTypes(root, isRequired: false)
        let global = try quantizerConfig(keyPath: "", types: types, overall: overall, tensors: tensors)

        var rules = SimpleRules(global: global)
        rules.keepsFirstAndLastFloat = try root.bool("keep_first_last_layer_accuracy") ?? false
        var seen: [String: String] = [:]
        for entry in try root.objectArray("layer_quantize_config") ?? [] {
            try parseLayerEntry(entry, modelOverall: overall, into: &rules, seen: &seen)
        }
        let known = ["version", "batch_num"] + topLevelKeys + RetrainConfig.trainerSections
        for key in root.keys where !known.contains(key) {
            throw root.error(key, "unknown key: not a key of the \(ConfigFormat.vitis.name) (\(topLevelKeys.joined(separator: ", ")))")
        }
        var config = RetrainConfig(file: root.file, version: version, batchCount: batchCount, rules: .simple(rules),
                                   runtimeSections: sections, format: .vitis)
        // The manual's defaults: both true.
        if try root.bool("include_cle") ?? true { config.ptqTransforms.insert(.crossLayerEqualization) }
        if try root.bool("include_bias_corr") ?? true { config.ptqTransforms.insert(.biasCorrection) }
        if try root.bool("convert_relu6_to_relu") ?? false { config.graphRewrites.insert(.relu6ToReLU) }
        config.keepsAddsFloat = try root.bool("keep_add_layer_accuracy") ?? false
        return config
    }

    /// One `layer_quantize_config` entry: a type rule or a layer rule.
    private static func parseLayerEntry(_ entry: JSONObject, modelOverall: TensorSettings, into rules: inout SimpleRules,
                                        seen: inout [String: String]) throws {
        let typeName = try nullableString(entry, "layer_type")
        let layerName = try nullableString(entry, "layer_name")
        guard let overallObject = try entry.object("overall_quantize_config") else {
            throw InputError(file: entry.file, keyPath: entry.keyPath("overall_quantize_config"),
                             message: "is required in a layer configuration (the manual: it holds all of the layer's settings)")
        }
        var overall = modelOverall
        try overall.apply(overallObject)
        let types = try quantizedTypes(entry, isRequired: true)
        let tensors = try tensorConfigs(entry)
        // qat's decision: a layer configuration that quantizes no tensor keeps its layers float.
        let config = types.names.isEmpty
            ? QuantizerConfig(keyPath: entry.path, isEnabled: false)
            : try quantizerConfig(keyPath: entry.path, types: types, overall: overall, tensors: tensors)
        try entry.rejectUnknownKeys(allowed: ["layer_type", "layer_name", "quantizable_data_type", "overall_quantize_config",
                                              "tensor_quantize_config"])
        switch (typeName, layerName) {
        case (let typeName?, nil):
            let type = try layerType(typeName, in: entry)
            if let first = seen["type \(type.name)"] {
                throw entry.error("layer_type", "\(typeName) already has a layer configuration (\(first)); keep one")
            }
            seen["type \(type.name)"] = entry.path
            rules.typeOverrides[type] = config
        case (nil, let layerName?):
            if let first = seen["layer \(layerName)"] {
                throw entry.error("layer_name", "\(truncatedForMessage(layerName)) already has a layer configuration (\(first)); keep one")
            }
            seen["layer \(layerName)"] = entry.path
            rules.layerOverrides[layerName] = config
        case (nil, nil):
            throw entry.error("layer_type", "a layer configuration needs a layer_type or a layer_name (both are null)")
        case (_?, _?):
            throw entry.error("layer_name", "give a layer_type or a layer_name, not both (the manual: the other one is null)")
        }
    }

    /// `layer_type` as the manual writes it (`torch.nn.Conv2d`), or qat's own name.
    private static func layerType(_ name: String, in entry: JSONObject) throws -> LayerType {
        let torchNames: [String: LayerType] = ["torch.nn.Conv2d": .conv2d, "torch.nn.Linear": .linear]
        if let type = torchNames[name] ?? LayerType(name: name), type.isQuantizable { return type }
        throw entry.error("layer_type", "\"\(truncatedForMessage(name))\" is not supported yet: qat quantizes conv2d and linear "
                          + "layers (allowed: \"torch.nn.Conv2d\", \"torch.nn.Linear\")")
    }

    /// A string or null (the manual writes `"layer_name": null`).
    private static func nullableString(_ object: JSONObject, _ key: String) throws -> String? {
        if object.values[key] is NSNull { return nil }
        return try object.string(key)
    }

    /// `quantizable_data_type`: the tensors this configuration quantizes.
    private static func quantizedTypes(_ object: JSONObject, isRequired: Bool) throws -> (names: [String], keyPath: String, isDefault: Bool) {
        let keyPath = object.keyPath("quantizable_data_type")
        guard let names = try object.stringArray("quantizable_data_type") else {
            if isRequired { throw InputError(file: object.file, keyPath: keyPath, message: "is required in a layer configuration") }
            return (tensorNames, keyPath, true)
        }
        for (index, name) in names.enumerated() where !tensorNames.contains(name) {
            throw object.error("quantizable_data_type[\(index)]", "unsupported value \"\(truncatedForMessage(name))\" "
                               + "(allowed: \(tensorNames.map { "\"\($0)\"" }.joined(separator: ", ")))")
        }
        return (names, keyPath, false)
    }

    /// `tensor_quantize_config`: each tensor's refinements of the overall settings.
    private static func tensorConfigs(_ object: JSONObject) throws -> [String: JSONObject] {
        guard let section = try object.object("tensor_quantize_config") else { return [:] }
        var configs: [String: JSONObject] = [:]
        for name in tensorNames {
            if let config = try section.object(name) { configs[name] = config }
        }
        try section.rejectUnknownKeys()
        return configs
    }

    /// The rule of one configuration (the model's, or a layer's): its weights and its activations.
    /// qat quantizes activations where a conv2d or linear layer reads them, so `activation` sets
    /// a layer's input quantizer, and `input` (the model input, which the first layers read) must
    /// agree with it.
    private static func quantizerConfig(keyPath: String, types: (names: [String], keyPath: String, isDefault: Bool),
                                        overall: TensorSettings, tensors: [String: JSONObject]) throws -> QuantizerConfig {
        let file = overall.file
        var weights = overall, activation = overall
        if let object = tensors["weights"] { try weights.apply(object) }
        if let object = tensors["activation"] { try activation.apply(object) }
        var config = QuantizerConfig(keyPath: keyPath)
        config.weight = try weights.weightConfig()
        config.data = try activation.dataConfig()
        let typesNote = types.isDefault ? " (the manual's default when the key is left out)" : ""
        if let index = types.names.firstIndex(of: "bias") {
            throw InputError(file: file, keyPath: types.isDefault ? types.keyPath : "\(types.keyPath)[\(index)]",
                             message: "\"bias\"\(typesNote): quantizing biases to a grid of their own is not supported yet; qat keeps "
                                + "each bias on its layer's int32 accumulator grid (scale s_x·s_w): remove \"bias\"")
        }
        if let bias = tensors["bias"] {
            throw InputError(file: file, keyPath: bias.path, message: "bias quantization is not supported yet: qat keeps each bias "
                             + "on its layer's int32 accumulator grid (scale s_x·s_w); remove this entry")
        }
        for required in ["weights", "activation"] where !types.names.contains(required) {
            throw InputError(file: file, keyPath: types.keyPath,
                             message: "leaving out \"\(required)\" is not supported yet: qat quantizes a layer's weights and its "
                                + "input activations together (list \"weights\" and \"activation\")")
        }
        if types.names.contains("input") || tensors["input"] != nil {
            var input = overall
            if let object = tensors["input"] { try input.apply(object) }
            let inputConfig = try input.dataConfig()
            guard inputConfig == config.data else {
                throw InputError(file: file, keyPath: tensors["input"]?.path ?? types.keyPath,
                                 message: "input settings that differ from activation are not supported yet: qat quantizes the "
                                    + "model input with the activation settings of the layers that read it (give tensor_quantize_config.input "
                                    + "the same settings as activation)")
            }
        } else if keyPath.isEmpty {
            throw InputError(file: file, keyPath: types.keyPath,
                             message: "leaving out \"input\" is not supported yet: qat quantizes the model input where the first "
                                + "conv2d or linear layer reads it (list \"input\")")
        }
        return config
    }
}

/// One tensor's settings (`overall_quantize_config` refined by `tensor_quantize_config`), each
/// with the key path it came from; nil for the manual's default.
struct TensorSettings {
    struct Setting<Value> {
        var value: Value
        var keyPath: String?
    }

    var file = ""
    /// The key path of the `overall_quantize_config` the defaults are reported under.
    var defaultsPath = "overall_quantize_config"
    var dataType = Setting(value: "int", keyPath: nil)
    var bitWidth = Setting(value: 8, keyPath: nil)
    var method = Setting(value: "diffs", keyPath: nil)
    var roundMode = Setting(value: "std_round", keyPath: nil)
    var symmetry = Setting(value: true, keyPath: nil)
    var perChannel = Setting(value: false, keyPath: nil)
    var signed = Setting(value: true, keyPath: nil)
    var narrowRange = Setting(value: false, keyPath: nil)
    var scaleType = Setting(value: "poweroftwo", keyPath: nil)
    var statistic = Setting(value: "modal", keyPath: nil)
    var percentage = Setting(value: PercentileCalibrator().percentage, keyPath: nil)

    /// The manual's default configuration ("default configuration", tailored to the DPU).
    static let manualDefault = TensorSettings()

    static let methods = ["maxmin", "percentile", "entropy", "mse", "diffs"]
    static let roundModes = RoundMode.allCases.map(\.rawValue)
    static let dataTypes = ["int", "bfloat16", "float16", "float32"]

    /// Reads the keys `object` gives over the current values.
    mutating func apply(_ object: JSONObject) throws {
        file = object.file
        func choice(_ key: String, _ allowed: [String], _ field: WritableKeyPath<TensorSettings, Setting<String>>) throws {
            guard let value = try object.string(key) else { return }
            guard allowed.contains(value) else {
                throw object.error(key, "unsupported value \"\(truncatedForMessage(value))\" (allowed: "
                                   + allowed.map { "\"\($0)\"" }.joined(separator: ", ") + ")")
            }
            self[keyPath: field] = Setting(value: value, keyPath: object.keyPath(key))
        }
        func flag(_ key: String, _ field: WritableKeyPath<TensorSettings, Setting<Bool>>) throws {
            if let value = try object.bool(key) { self[keyPath: field] = Setting(value: value, keyPath: object.keyPath(key)) }
        }
        // The manual writes `data_type` in its table and `datatype` in its examples.
        if object.contains("datatype") && object.contains("data_type") {
            throw object.error("data_type", "given together with datatype; keep one")
        }
        try choice("datatype", Self.dataTypes, \.dataType)
        try choice("data_type", Self.dataTypes, \.dataType)
        if let bits = try object.int("bit_width") {
            guard (1...32).contains(bits) else { throw object.error("bit_width", "must be in 1…32, got \(bits)") }
            bitWidth = Setting(value: bits, keyPath: object.keyPath("bit_width"))
        }
        try choice("method", Self.methods, \.method)
        try choice("round_mode", Self.roundModes, \.roundMode)
        try flag("symmetry", \.symmetry)
        try flag("per_channel", \.perChannel)
        try flag("signed", \.signed)
        try flag("narrow_range", \.narrowRange)
        try choice("scale_type", ScaleType.allCases.map(\.rawValue), \.scaleType)
        try choice("calib_statistic_method", BatchStatistic.allCases.map(\.rawValue), \.statistic)
        if let value = try object.double("percentage") {
            guard value > 50 && value <= 100 else { throw object.error("percentage", "must be in (50, 100], got \(value)") }
            percentage = Setting(value: value, keyPath: object.keyPath("percentage"))
        }
        try object.rejectUnknownKeys()
    }

    /// The key path to blame for a setting, and a note when it is the manual's default.
    private func blame<Value>(_ setting: Setting<Value>, _ key: String) -> (keyPath: String, note: String) {
        guard let keyPath = setting.keyPath else {
            return ("\(defaultsPath).\(key)", " (the manual's default when the key is left out)")
        }
        return (keyPath, "")
    }

    private func refuse<Value>(_ setting: Setting<Value>, _ key: String, _ message: String) -> InputError {
        let (keyPath, note) = blame(setting, key)
        return InputError(file: file, keyPath: keyPath, message: "\(setting.value)\(note) \(message)")
    }

    /// Checks shared by weights and activations: integer data.
    private func checkGrid(_ tensor: String) throws {
        guard dataType.value == "int" else {
            throw refuse(dataType, "datatype", "is not supported yet: qat quantizes \(tensor) to integers (int)")
        }
    }

    /// Weights: qat's ARQ, symmetric INT8 per tensor or per channel, which is method maxmin.
    func weightConfig() throws -> RetrainWeightConfig {
        try checkGrid("weights")
        guard bitWidth.value == 8 else { throw refuse(bitWidth, "bit_width", "is not supported yet for weights: weights are INT8 (set 8)") }
        guard method.value == "maxmin" else {
            throw refuse(method, "method", "is not supported yet for weights: qat's weights take their scale from max |w| "
                         + "(ARQ), which is method maxmin")
        }
        guard symmetry.value else { throw refuse(symmetry, "symmetry", "is not supported yet for weights: ARQ weights are symmetric (set true)") }
        guard signed.value else { throw refuse(signed, "signed", "is not supported yet for weights: ARQ weights are signed (set true)") }
        if let conflict = try calibrator().conflict() { throw conflictError(conflict) }
        return RetrainWeightConfig(algorithm: .arqRetrain, channelWise: perChannel.value, dstType: .int8, scaleType: try scale(),
                                   roundMode: try rounding(), narrowRange: narrowRange.value)
    }

    /// Activations: the calibrator `method` names with `symmetry` and `calib_statistic_method`.
    /// Symmetric and signed: zero point 0 (fixed_min false); symmetric and unsigned: [0, T]
    /// (fixed_min true); asymmetric: the graph rule decides fixed_min as for any calibrated range.
    func dataConfig() throws -> RetrainDataConfig {
        try checkGrid("activations")
        var config = RetrainDataConfig()
        switch bitWidth.value {
        case 8: config.dstType = .int8
        case 16: config.dstType = .int16
        default: throw refuse(bitWidth, "bit_width", "is not supported yet for activations: qat's activations are 8 or 16 bits")
        }
        if perChannel.value {
            throw refuse(perChannel, "per_channel", "is not supported yet for activations: one clip range per tensor (set false)")
        }
        let calibrator = try calibrator()
        if let conflict = calibrator.conflict() { throw conflictError(conflict) }
        config.calibration = CalibrationConfig(method: type(of: calibrator),
                                               settings: Dictionary(uniqueKeysWithValues: calibrator.settingValues.map { ($0.key, $0.value) }))
        if symmetry.value { config.fixedMin = !signed.value }
        config.scaleType = try scale()
        config.roundMode = try rounding()
        config.narrowRange = narrowRange.value
        return config
    }

    /// `scale_type`, checked against the choices `apply` allows.
    private func scale() throws -> ScaleType {
        guard let type = ScaleType(rawValue: scaleType.value) else { throw refuse(scaleType, "scale_type", "is not a scale type") }
        return type
    }

    /// `round_mode`, checked against the choices `apply` allows.
    private func rounding() throws -> RoundMode {
        guard let mode = RoundMode(rawValue: roundMode.value) else { throw refuse(roundMode, "round_mode", "is not a round mode") }
        return mode
    }

    /// The calibrator `method` names, with this tensor's settings.
    private func calibrator() throws -> any Calibrator {
        var values: [String: CalibratorSettingValue] = ["asymmetric": .flag(!symmetry.value),
                                                        "calib_statistic_method": .name(statistic.value)]
        let method: any Calibrator.Type
        switch self.method.value {
        case "maxmin": method = MaxMinCalibrator.self
        case "percentile":
            method = PercentileCalibrator.self
            values["percentage"] = .number(percentage.value)
        case "entropy": method = EntropyCalibrator.self
        case "mse": method = MSECalibrator.self
        case "diffs": method = DiffsCalibrator.self
        default: throw refuse(self.method, "method", "is not supported yet: use maxmin, percentile, entropy, mse or diffs")
        }
        return method.init().with(values)
    }

    /// A conflict the manual lists, blamed on the setting that caused it.
    private func conflictError(_ conflict: (key: String, message: String)) -> InputError {
        let (keyPath, note) = conflict.key == "asymmetric" ? blame(symmetry, "symmetry") : blame(statistic, "calib_statistic_method")
        let origin = note.isEmpty ? "" : " (\(keyPath.split(separator: ".").last!) is the manual's default when the key is left out)"
        return InputError(file: file, keyPath: keyPath, message: conflict.message + origin)
    }
}
