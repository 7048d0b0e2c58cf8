import QATCore
import QATIO

// AMCT's simple config (quant.cfg) in protobuf text format, verbatim (docs/CONFIG.md "AMCT simple
// config (proto text)"; the manual's calibration_config.proto table gives every field). It is
// read into the simple form's rules, so the plan resolves it as the JSON simple form:
// override_layer_configs > override_layer_types > common_config, key by key, and
// `activation_offset` below all three (it is the `asymmetric` every ifmr_quantize leaves out).
// NUQ (`nuq_quantize`) and weight-only layers (`weight_compress_only`, with asymmetric ARQ) run
// (docs/ALGORITHMS.md §3.1, §3.2); `enable_auto_nuq` picks NUQ layers by their bytes (AutoNUQ.swift);
// `joint_quant` gives each eltwise add a shared input grid, `tensor_quantize` a max pool's input,
// or one input of an add, its own. Semantics qat cannot run are refused with the field's key
// path and line.

/// The reader of AMCT's simple config in proto text.
enum AMCTSimpleConfig {
    /// The fields of the top-level message, AMCTConfig.
    static let topLevelFields = ["activation_offset", "joint_quant", "skip_layers", "skip_layer_types", "version",
                                 "common_config", "override_layer_types", "override_layer_configs", "do_fusion",
                                 "skip_fusion_layers", "tensor_quantize", "enable_auto_nuq"]
    /// The fields of a CalibrationConfig message.
    static let calibrationFields = ["arq_quantize", "ifmr_quantize", "nuq_quantize", "weight_compress_only"]
    static let arqFields = ["channel_wise", "asymmetric"]
    static let ifmrFields = ["search_range_start", "search_range_end", "search_step", "max_percentile",
                             "min_percentile", "asymmetric", "dst_type"]
    /// CalibrationDataType's values.
    static let dataTypes = ["INT8", "INT16"]

    /// Layer type names: ours, and the ONNX operators they import from.
    static let layerTypeAliases: [String: LayerType] = ["Conv": .conv2d, "Gemm": .linear, "MatMul": .linear]

    /// Names `skip_layer_types` and `override_layer_types` accept, for messages.
    static var layerTypeNames: [String] {
        RetrainConfig.quantizableTypeNames + layerTypeAliases.keys.sorted()
    }

    static func parse(_ root: ProtoTextMessage) throws -> RetrainConfig {
        let version = try root.int("version", range: Int(Int32.min)...Int(Int32.max)) ?? 1
        guard version == 1 else {
            throw root.error(try root.single("version")!, "unsupported version \(version) (allowed: 1)")
        }
        // The manual gives no default; AMCT's PTQ config.json defaults to true, and so does this.
        let activationOffset = try root.bool("activation_offset") ?? true
        let jointQuant = try root.bool("joint_quant") ?? false

        var rules = SimpleRules()
        rules.skipLayers = try root.strings("skip_layers").map(\.value)
        for (index, (name, field)) in try root.strings("skip_layer_types").enumerated() {
            let keyPath = "skip_layer_types[\(index)]"
            let type = try layerType(name, at: field.position, keyPath: keyPath, in: root)
            if rules.skipLayerTypes.contains(type) {
                throw root.error(at: field.position, keyPath, "\(name) names \(type.name) again")
            }
            rules.skipLayerTypes.append(type)
        }
        if let common = try root.message("common_config") {
            rules.global = try parseCalibrationConfig(common)
        }
        for entry in try root.messages("override_layer_types") {
            let (name, nameField) = try requiredString(entry, "layer_type", why: "the type whose layers it configures")
            let type = try layerType(name, at: nameField.position, keyPath: entry.keyPath("layer_type"), in: entry)
            guard rules.typeOverrides[type] == nil else {
                throw entry.error(nameField, "\(name) names \(type.name), which an earlier override_layer_types entry configures already")
            }
            if rules.skipLayerTypes.contains(type) {
                throw entry.error(nameField, "\(name) is also in skip_layer_types; keep only one of the two")
            }
            rules.typeOverrides[type] = try parseCalibrationConfig(try requiredMessage(entry, "calibration_config"))
            try entry.rejectUnknownFields(allowed: ["layer_type", "calibration_config"])
        }
        for entry in try root.messages("override_layer_configs") {
            let (name, nameField) = try requiredString(entry, "layer_name", why: "the layer it configures")
            guard rules.layerOverrides[name] == nil else {
                throw entry.error(nameField, "\(truncatedForMessage(name)) is configured by an earlier override_layer_configs entry already")
            }
            if rules.skipLayers.contains(name) {
                throw entry.error(nameField, "\(truncatedForMessage(name)) is also in skip_layers; keep only one of the two")
            }
            rules.layerOverrides[name] = try parseCalibrationConfig(try requiredMessage(entry, "calibration_config"))
            try entry.rejectUnknownFields(allowed: ["layer_name", "calibration_config"])
        }
        let fusion = ConvBNFusion(isEnabled: try root.bool("do_fusion") ?? true,
                                  skippedLayers: try root.strings("skip_fusion_layers").map(\.value))
        let tensorQuantize = try parseTensorQuantize(root)
        let enablesAutoNonUniform = try root.bool("enable_auto_nuq") ?? false
        try root.rejectUnknownFields(allowed: topLevelFields)

        // activation_offset is the least specific `asymmetric`: the calibration default of every layer.
        let calibration = CalibrationConfig(settings: ["asymmetric": .flag(activationOffset)])
        var config = RetrainConfig(file: root.file, version: version, rules: .simple(rules), calibration: calibration,
                                   format: .amctSimpleProtoText, fusion: fusion)
        config.enablesAutoNonUniform = enablesAutoNonUniform
        // joint_quant: each eltwise add's operands share one IFMR grid, symmetric or not as
        // activation_offset says (no override level names an add).
        if jointQuant { config.jointQuantCalibration = calibration }
        config.tensorQuantize = tensorQuantize
        return config
    }

    /// A CalibrationConfig message as one level of the simple form's rules. `arq_quantize` and
    /// `nuq_quantize` each choose the weight quantizer (NUQ: ARQ's scales, then non-uniform
    /// levels), so one message gives at most one of them; `weight_compress_only: true` excludes
    /// `ifmr_quantize` and `nuq_quantize` in its message (the manual), and asymmetric ARQ needs it.
    private static func parseCalibrationConfig(_ message: ProtoTextMessage) throws -> QuantizerConfig {
        var config = QuantizerConfig(keyPath: message.path)
        let weightOnly = try message.bool("weight_compress_only")
        config.weight.weightCompressOnly = weightOnly
        if let nuq = try message.message("nuq_quantize") {
            let steps = try nuq.int("num_steps", range: 0...Int(UInt32.max)) ?? 16
            if !RetrainWeightConfig.nuqStepChoices.contains(steps) {
                throw nuq.error(try nuq.single("num_steps")!, "must be 16 or 32, got \(steps)")
            }
            let iterations = try nuq.int("num_of_iteration", range: RetrainWeightConfig.nuqIterationRange) ?? 0
            try nuq.rejectUnknownFields(allowed: ["num_steps", "num_of_iteration"])
            if weightOnly == true {
                throw message.error(try message.single("nuq_quantize")!, "not allowed with weight_compress_only true "
                                    + "(AMCT's manual: a weight-only layer cannot use NUQ); use arq_quantize")
            }
            if try message.single("arq_quantize") != nil {
                throw message.error(try message.single("nuq_quantize")!, "given with arq_quantize: each chooses the weight "
                                    + "quantizer, give one (NUQ keeps ARQ's scales, channel_wise from a less specific arq_quantize)")
            }
            config.weight.algorithm = .arqRetrain
            config.weight.nonUniform = NUQParameters(steps: steps, iterations: iterations)
        }
        if let arq = try message.message("arq_quantize") {
            config.weight.algorithm = .arqRetrain
            config.weight.channelWise = try arq.bool("channel_wise")
            config.weight.asymmetric = try arq.bool("asymmetric")
            if config.weight.asymmetric == true, weightOnly == false {
                throw arq.error(try arq.single("asymmetric")!, "true needs weight_compress_only true (the manual allows "
                                + "asymmetric weights only on weight-only layers): set false or leave it out")
            }
            try arq.rejectUnknownFields(allowed: arqFields)
        }
        if let ifmr = try message.message("ifmr_quantize") {
            if weightOnly == true {
                throw message.error(try message.single("ifmr_quantize")!, "not allowed with weight_compress_only true: a "
                                    + "weight-only layer keeps a float input, which IFMR would quantize (AMCT's manual)")
            }
            try parseIFMR(ifmr, into: &config.data)
        }
        try message.rejectUnknownFields(allowed: calibrationFields)
        return config
    }

    /// `ifmr_quantize`: IFMR's settings, read by the same rules as the JSON formats' `act_algo: "ifmr"`.
    private static func parseIFMR(_ message: ProtoTextMessage, into data: inout RetrainDataConfig) throws {
        if let type = try message.enumValue("dst_type", allowed: dataTypes) {
            data.dstType = QuantizedType(rawValue: type)!
        }
        // The settings in the JSON formats' keys, each with the field a message should point at.
        var values: [String: Any] = ["act_algo": IFMRParameters.name]
        var fields: [String: ProtoTextField] = [:]
        for name in ["max_percentile", "min_percentile", "search_step"] {
            if let value = try message.double(name) { values[name] = value; fields[name] = try message.single(name) }
        }
        if let asymmetric = try message.bool("asymmetric") {
            values["asymmetric"] = asymmetric
            fields["asymmetric"] = try message.single("asymmetric")
        }
        let start = try message.double("search_range_start"), end = try message.double("search_range_end")
        if let startField = try message.single("search_range_start"), end == nil {
            throw message.error(startField, "given without search_range_end: give both ends of the search range, or neither")
        }
        if let endField = try message.single("search_range_end") {
            guard let start else {
                throw message.error(endField, "given without search_range_start: give both ends of the search range, or neither")
            }
            guard start > 0, start < end!, end! <= CalibrationConfig.searchRangeEndLimit else {
                throw message.error(try message.single("search_range_start")!, "the search range must satisfy 0 < search_range_start "
                                    + "< search_range_end ≤ \(Int(CalibrationConfig.searchRangeEndLimit)), got [\(start), \(end!)]")
            }
            values["search_range"] = [start, end!]
        }
        try message.rejectUnknownFields(allowed: ifmrFields)
        do {
            data.calibration = try CalibrationConfig.parse(JSONObject(file: message.file, path: message.path, values: values))
        } catch let error as InputError {
            // Point at the proto field the JSON key came from.
            let key = error.keyPath.split(separator: ".").last.map(String.init) ?? ""
            guard let field = fields[key] else { throw error }
            throw message.error(field, error.message)
        }
    }

    /// `tensor_quantize`: a quantizer on input `input_index` of the node `layer_name` (a max pool or an add;
    /// resolving checks both against the model), calibrated by its `ifmr_quantize` (INT8).
    private static func parseTensorQuantize(_ root: ProtoTextMessage) throws -> [TensorQuantizeEntry] {
        try root.messages("tensor_quantize").map { entry in
            let (name, _) = try requiredString(entry, "layer_name", why: "the node whose input is quantized")
            guard let index = try entry.int("input_index", range: 0...Int(UInt32.max)) else {
                throw entry.error(at: entry.position, entry.keyPath("input_index"), "is required (which input of \(truncatedForMessage(name)))")
            }
            var data = RetrainDataConfig()
            if let ifmr = try entry.message("ifmr_quantize") {
                try parseIFMR(ifmr, into: &data)
                if data.dstType == .int16 {
                    throw ifmr.error(try ifmr.single("dst_type")!, "INT16 is not supported for a node's input tensor: "
                                     + "the INT8 engine takes int8 codes there (set INT8)")
                }
            }
            try entry.rejectUnknownFields(allowed: ["layer_name", "input_index", "ifmr_quantize"])
            return TensorQuantizeEntry(keyPath: entry.path, layerName: name, inputIndex: index, calibration: data.calibration,
                                       position: entry.position)
        }
    }

    /// A quantizable layer type from its name: ours (conv2d, linear) or ONNX's (Conv, Gemm, MatMul).
    private static func layerType(_ name: String, at position: TextPosition, keyPath: String,
                                  in message: ProtoTextMessage) throws -> LayerType {
        if let type = layerTypeAliases[name] ?? LayerType(name: name), type.isQuantizable { return type }
        let why = LayerType(name: name) == nil ? "unknown layer type" : "layers of this type are never quantized:"
        throw message.error(at: position, keyPath, "\(why) \"\(truncatedForMessage(name))\" (allowed: \(layerTypeNames.joined(separator: ", ")))")
    }

    private static func requiredString(_ message: ProtoTextMessage, _ name: String, why: String) throws -> (String, ProtoTextField) {
        guard let value = try message.string(name), let field = try message.single(name) else {
            throw message.error(at: message.position, message.keyPath(name), "is required (\(why))")
        }
        return (value, field)
    }

    private static func requiredMessage(_ message: ProtoTextMessage, _ name: String) throws -> ProtoTextMessage {
        guard let value = try message.message(name) else {
            throw message.error(at: message.position, message.keyPath(name), "is required (the layers' quantization settings)")
        }
        return value
    }
}
