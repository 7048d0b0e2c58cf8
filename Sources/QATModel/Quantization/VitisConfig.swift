import Foundation
import QATCore
import QATIO

// Vitis AI's vai_q_pytorch quantization config JSON, verbatim (docs/CONFIG.md "Vitis AI JSON";
// UG1414 "Quantization strategy configuration"). It is read into the simple form's rules: the
// model configuration is the global rule, each `layer_quantize_config` entry a type rule
// (`layer_type`) or a layer rule (`layer_name`), so `qat calibrate`, `plan` and `train` resolve it
// into the one per-layer plan. `include_cle` and `include_bias_corr` (true by default, as in the
// manual) become the plan's PTQ transforms, run around calibration (ALGORITHMS §2.5);
// `convert_relu6_to_relu` and `convert_silu_to_hswish` graph rewrites (GraphRewrite.swift);
// `keep_first_last_layer_accuracy` and `keep_add_layer_accuracy` rules of the plan; a float `datatype` makes cast layers
// (CastQuantization.swift); `target_device: "DPU"` the DPU rules (`DPURules`). What qat cannot
// run yet is refused with the key path, never accepted and ignored.

extension QuantizerConfig {
    /// Says int for the input, the weights and the bias explicitly (an enabled integer rule).
    fileprivate mutating func markInteger() {
        guard isEnabled else { return }
        data.dataType = .int
        weight.dataType = .int
        weight.biasDataType = .int
    }
}

/// The Vitis AI JSON reader.
enum VitisConfig {
    /// The global quantizer settings and sections of the model configuration.
    static let topLevelKeys = ["convert_relu6_to_relu", "convert_silu_to_hswish", "include_cle", "include_bias_corr",
                               "keep_first_last_layer_accuracy", "keep_add_layer_accuracy", "target_device",
                               "quantizable_data_type", "overall_quantize_config", "tensor_quantize_config",
                               "layer_quantize_config"]

    /// The tensors a config can quantize (`quantizable_data_type`, `tensor_quantize_config`).
    static let tensorNames = ["input", "weights", "bias", "activation"]

    static func parse(_ root: JSONObject) throws -> RetrainConfig {
        let (version, batchCount) = try RetrainConfig.parseVersionAndBatchCount(root)
        let sections = try RetrainConfig.parseTrainerSections(root)
        let device = try root.string("target_device") ?? "DPU"
        var dpu: DPURules?
        switch device {
        case "CPU", "GPU": break
        case "DPU": dpu = DPURules(origin: root.contains("target_device") ? "target_device \"DPU\""
                                       : "target_device \"DPU\" (the manual's default when the key is left out)")
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
        let global = try quantizerConfig(keyPath: "", types: types, overall: overall, tensors: tensors, dpu: &dpu)

        var rules = SimpleRules(global: global)
        rules.keepsFirstAndLastFloat = try root.bool("keep_first_last_layer_accuracy") ?? false
        var seen: [String: String] = [:]
        for entry in try root.objectArray("layer_quantize_config") ?? [] {
            try parseLayerEntry(entry, modelOverall: overall, into: &rules, seen: &seen, dpu: &dpu)
        }
        if rules.global.data.dataType != nil {
            // Under a cast model configuration, an integer layer configuration must say int, or
            // resolving would take the model's float types for it.
            for type in Array(rules.typeOverrides.keys) where rules.typeOverrides[type]!.data.dataType == nil {
                rules.typeOverrides[type]!.markInteger()
            }
            for name in Array(rules.layerOverrides.keys) where rules.layerOverrides[name]!.data.dataType == nil {
                rules.layerOverrides[name]!.markInteger()
            }
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
        config.notes = dpu?.notes ?? []
        if try root.bool("convert_silu_to_hswish") ?? false { config.graphRewrites.insert(.siluToHardSwish) }
        config.keepsAddsFloat = try root.bool("keep_add_layer_accuracy") ?? false
        return config
    }

    /// One `layer_quantize_config` entry: a type rule or a layer rule.
    private static func parseLayerEntry(_ entry: JSONObject, modelOverall: TensorSettings, into rules: inout SimpleRules,
                                        seen: inout [String: String], dpu: inout DPURules?) throws {
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
            : try quantizerConfig(keyPath: entry.path, types: types, overall: overall, tensors: tensors, dpu: &dpu)
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

    /// The rule of one configuration (the model's, or a layer's): its weights, its bias and its
    /// activations. qat quantizes activations where a conv2d or linear layer reads them, so
    /// `activation` sets a layer's input quantizer; `input` sets it instead for the layers that
    /// read the model input (`modelInputData`; docs/CONFIG.md "Vitis AI JSON" gives the precedence).
    /// Under `target_device: "DPU"` each tensor's settings follow the DPU rules first.
    private static func quantizerConfig(keyPath: String, types: (names: [String], keyPath: String, isDefault: Bool),
                                        overall: TensorSettings, tensors: [String: JSONObject],
                                        dpu: inout DPURules?) throws -> QuantizerConfig {
        let file = overall.file
        func settings(_ tensor: String) throws -> TensorSettings {
            var settings = overall
            if let object = tensors[tensor] { try settings.apply(object) }
            try dpu?.enforce(on: &settings, tensor: tensor)
            return settings
        }
        if let cast = try castConfig(keyPath: keyPath, types: types, overall: overall, weights: try settings("weights"),
                                     activation: try settings("activation"), tensors: tensors) {
            return cast
        }
        var config = QuantizerConfig(keyPath: keyPath)
        config.weight = try settings("weights").weightConfig()
        config.data = try settings("activation").dataConfig()
        if types.names.contains("bias") {
            config.weight.bias = .ownGrid(try settings("bias").biasGrid())
        } else if let bias = tensors["bias"] {
            throw InputError(file: file, keyPath: bias.path, message: "has no effect: \(types.keyPath) leaves out \"bias\" "
                             + "(list \"bias\" to quantize biases on a grid of their own, or remove this entry)")
        } else {
            config.weight.bias = .accumulatorGridOnly
        }
        for required in ["weights", "activation"] where !types.names.contains(required) {
            throw InputError(file: file, keyPath: types.keyPath,
                             message: "leaving out \"\(required)\" is not supported yet: qat quantizes a layer's weights and its "
                                + "input activations together (list \"weights\" and \"activation\")")
        }
        if types.names.contains("input") || tensors["input"] != nil {
            config.modelInputData = try settings("input").dataConfig()
        } else if keyPath.isEmpty {
            throw InputError(file: file, keyPath: types.keyPath,
                             message: "leaving out \"input\" is not supported yet: qat quantizes the model input where the first "
                                + "conv2d or linear layer reads it (list \"input\")")
        }
        return config
    }
}

extension VitisConfig {
    /// The rule of a configuration whose weights or activation have a float `datatype`: a cast
    /// layer (docs/ALGORITHMS.md §3.6); nil when both are int. The input (when listed) must have
    /// the activation's type, as for integers; the bias is cast when `quantizable_data_type`
    /// lists it and stays float32 otherwise. qat's decision: a layer is integer or float
    /// throughout, so int beside a float type is refused.
    fileprivate static func castConfig(keyPath: String, types: (names: [String], keyPath: String, isDefault: Bool),
                                       overall: TensorSettings, weights: TensorSettings, activation: TensorSettings,
                                       tensors: [String: JSONObject]) throws -> QuantizerConfig? {
        let weightType = try weights.tensorDataType(), activationType = try activation.tensorDataType()
        guard weightType != .int || activationType != .int else { return nil }
        let file = overall.file
        for required in ["weights", "activation"] where !types.names.contains(required) {
            throw InputError(file: file, keyPath: types.keyPath,
                             message: "leaving out \"\(required)\" is not supported yet: qat casts a layer's weights and its "
                                + "input activations together (list \"weights\" and \"activation\")")
        }
        if weightType == .int || activationType == .int {
            let (intSide, floatSide) = weightType == .int ? (weights, activation) : (activation, weights)
            throw intSide.refuse(intSide.dataType, "datatype", "beside \(floatSide.dataType.value) \(weightType == .int ? "activation" : "weights") "
                                 + "is not supported: qat runs a layer in integers or in one float format throughout (give weights "
                                 + "and activation float datatypes, or both int)")
        }
        var input = overall
        if let object = tensors["input"] { try input.apply(object) }
        if types.names.contains("input") || tensors["input"] != nil {
            guard try input.tensorDataType() == activationType else {
                throw input.refuse(input.dataType, "datatype", "for input differs from activation's \(activationType.rawValue), which is not "
                                   + "supported yet: qat casts the model input where the layers that read it cast their input")
            }
        } else if keyPath.isEmpty {
            throw InputError(file: file, keyPath: types.keyPath,
                             message: "leaving out \"input\" is not supported yet: qat casts the model input where the first "
                                + "conv2d or linear layer reads it (list \"input\")")
        }
        var biasType = TensorDataType.float32
        if types.names.contains("bias") {
            var bias = overall
            if let object = tensors["bias"] { try bias.apply(object) }
            biasType = try bias.tensorDataType()
            if biasType == .int {
                throw bias.refuse(bias.dataType, "datatype", "for bias in a layer of \(weightType.rawValue) weights is not supported: "
                                  + "give the bias a float datatype (bfloat16, float16, float32)")
            }
        } else if let object = tensors["bias"] {
            throw InputError(file: file, keyPath: object.path, message: "quantizable_data_type does not list \"bias\": list it, or "
                             + "remove this entry (an unlisted bias stays float32)")
        }
        var config = QuantizerConfig(keyPath: keyPath)
        config.data.dataType = activationType
        config.weight.dataType = weightType
        config.weight.biasDataType = biasType
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
    static let dataTypes = TensorDataType.allCases.map(\.rawValue)
    /// Settings the manual applies to datatype int only.
    static let intOnlyKeys = ["bit_width", "method", "round_mode", "symmetry", "per_channel", "signed", "narrow_range",
                              "scale_type", "calib_statistic_method", "percentage"]

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
        // The manual: the other settings apply "only when the data type is int".
        if let type = try object.string("datatype") ?? object.string("data_type"), type != "int" {
            for key in Self.intOnlyKeys where object.contains(key) {
                throw object.error(key, "applies to datatype int only (the manual); remove it, since this object sets datatype \(type)")
            }
        }
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

    fileprivate func refuse<Value>(_ setting: Setting<Value>, _ key: String, _ message: String) -> InputError {
        let (keyPath, note) = blame(setting, key)
        return InputError(file: file, keyPath: keyPath, message: "\(setting.value)\(note) \(message)")
    }

    /// `datatype` as the config type.
    fileprivate func tensorDataType() throws -> TensorDataType {
        guard let type = TensorDataType(rawValue: dataType.value) else { throw refuse(dataType, "datatype", "is not a data type") }
        return type
    }

    /// Checks shared by weights and activations: integer data.
    private func checkGrid(_ tensor: String) throws {
        guard dataType.value == "int" else {
            throw refuse(dataType, "datatype", "is not supported yet: qat quantizes \(tensor) to integers (int)")
        }
    }

    /// Weights: qat's ARQ, symmetric INT8 per tensor or per channel: method maxmin (scale from
    /// max |w|), diffs (the least-error power-of-two scale, so power-of-two whatever scale_type
    /// says), or percentile, entropy, mse (each row's amplitude from the method's threshold).
    func weightConfig() throws -> RetrainWeightConfig {
        try checkGrid("weights")
        guard bitWidth.value == 8 else { throw refuse(bitWidth, "bit_width", "is not supported yet for weights: weights are INT8 (set 8)") }
        guard let scaleMethod = ScaleMethod(rawValue: method.value) else {
            throw refuse(method, "method", "is not a weight method (maxmin, percentile, entropy, mse, diffs)")
        }
        guard symmetry.value else { throw refuse(symmetry, "symmetry", "is not supported yet for weights: ARQ weights are symmetric (set true)") }
        guard signed.value else { throw refuse(signed, "signed", "is not supported yet for weights: ARQ weights are signed (set true)") }
        if let conflict = try calibrator().conflict() { throw conflictError(conflict) }
        return RetrainWeightConfig(algorithm: .arqRetrain, channelWise: perChannel.value, dstType: .int8,
                                   scaleType: scaleMethod == .diffs ? .powerOfTwo : try scale(),
                                   roundMode: try rounding(), narrowRange: narrowRange.value, scaleMethod: scaleMethod,
                                   percentage: scaleMethod == .percentile ? percentage.value : nil)
    }

    /// A bias on a grid of its own (docs/ALGORITHMS.md §3.3): symmetric, signed, per tensor, its
    /// scale from max |b| (method maxmin) or the least-error power of two (diffs), 8 or 16 bits.
    func biasGrid() throws -> BiasGrid {
        try checkGrid("biases")
        guard BiasQuantization.bitWidths.contains(bitWidth.value) else {
            throw refuse(bitWidth, "bit_width", "is not supported yet for biases: 8 or 16 (each bias then goes onto its layer's "
                         + "int32 accumulator grid, as every bias does)")
        }
        guard let scaleMethod = ScaleMethod(rawValue: method.value), ScaleMethod.biasMethods.contains(scaleMethod) else {
            throw refuse(method, "method", "is not supported yet for biases: a bias takes its scale from max |b| (method maxmin) "
                         + "or the least-error power of two (diffs)")
        }
        guard symmetry.value else { throw refuse(symmetry, "symmetry", "is not supported yet for biases: symmetric only (set true)") }
        guard signed.value else { throw refuse(signed, "signed", "is not supported yet for biases: signed only (set true)") }
        guard !perChannel.value else { throw refuse(perChannel, "per_channel", "is not supported yet for biases: one scale per bias (set false)") }
        if let conflict = try calibrator().conflict() { throw conflictError(conflict) }
        let powerOfTwo = try scaleMethod == .diffs || scale() == .powerOfTwo
        return BiasGrid(bits: bitWidth.value, powerOfTwo: powerOfTwo,
                        roundMode: try rounding(), narrowRange: narrowRange.value, searchesPowerOfTwo: scaleMethod == .diffs)
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

/// `target_device: "DPU"`: the manual's DPU rules ("configuration limits"), enforced on each
/// tensor's settings before they are read. A rule's key left out takes the DPU value; a value that
/// conflicts is changed to it and noted (one note per key path). `method` has no single DPU value:
/// anything but diffs or maxmin is refused. docs/CONFIG.md "Vitis AI JSON" lists the rules.
struct DPURules {
    /// How notes name the switch ("target_device \"DPU\"").
    let origin: String
    private var changes: [(keyPath: String, change: String, tensors: [String])] = []

    init(origin: String) { self.origin = origin }

    /// One line per changed key path, naming the tensors it was changed for.
    var notes: [String] {
        changes.map { "\(origin): \($0.keyPath) \($0.change) (\($0.tensors.joined(separator: ", ")))" }
    }

    mutating func enforce(on settings: inout TensorSettings, tensor: String) throws {
        guard settings.dataType.value == "int" else {
            throw InputError(file: settings.file, keyPath: settings.dataType.keyPath ?? "\(settings.defaultsPath).datatype",
                             message: "\(settings.dataType.value) is not allowed with \(origin): the DPU runs integers (datatype int)")
        }
        let method = settings.method
        guard ["diffs", "maxmin"].contains(method.value) else {
            throw InputError(file: settings.file, keyPath: method.keyPath ?? "\(settings.defaultsPath).method",
                             message: "\(method.value) is not allowed with \(origin): the DPU rules allow method diffs or maxmin")
        }
        rule(&settings.roundMode, "round_mode", tensor == "activation" ? "half_up" : "std_round", tensor)
        rule(&settings.symmetry, "symmetry", true, tensor)
        rule(&settings.perChannel, "per_channel", false, tensor)
        rule(&settings.signed, "signed", true, tensor)
        rule(&settings.narrowRange, "narrow_range", true, tensor)
        rule(&settings.scaleType, "scale_type", ScaleType.powerOfTwo.rawValue, tensor)
        rule(&settings.statistic, "calib_statistic_method", BatchStatistic.modal.rawValue, tensor)
    }

    /// Sets the DPU value; a value the file gave that differs from it is noted.
    private mutating func rule<Value: Equatable>(_ setting: inout TensorSettings.Setting<Value>, _ key: String, _ value: Value,
                                                 _ tensor: String) {
        guard setting.value != value else { return }
        if let keyPath = setting.keyPath { record(keyPath, "\(setting.value) changed to \(value)", tensor) }
        setting.value = value
    }

    private mutating func record(_ keyPath: String, _ change: String, _ tensor: String) {
        if let index = changes.firstIndex(where: { $0.keyPath == keyPath && $0.change == change }) {
            if !changes[index].tensors.contains(tensor) { changes[index].tensors.append(tensor) }
        } else {
            changes.append((keyPath, change, [tensor]))
        }
    }
}
