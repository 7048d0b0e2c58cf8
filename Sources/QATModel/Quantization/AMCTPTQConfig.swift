import QATCore
import QATIO

// AMCT's post-training quantization config.json, verbatim (docs/CONFIG.md "AMCT PTQ
// config.json"; the manual's parameter table gives every key and range). It is read into the
// same rule model as the retrain formats (one entry per layer), so `qat calibrate`, `qat plan`
// and `qat train` resolve it into the one per-layer plan; `joint_quant` gives each eltwise add a
// shared input grid and `tensor_quantize` a max pool's input, or one input of an add, its own
// (TensorQuantizer.swift). Semantics qat cannot run yet (16-bit weights) are refused with the key path,
// never accepted and ignored; `dmq_balancer_param` runs DMQ before calibration (ALGORITHMS §2.5).

/// The AMCT PTQ config.json reader.
enum AMCTPTQConfig {
    /// Top-level keys besides `version`, `batch_num` and layer entries.
    static let topLevelKeys = ["activation_offset", "joint_quant", "do_fusion", "skip_fusion_layers", "tensor_quantize"]
    /// The keys of a layer entry.
    static let layerEntryKeys = ["quant_enable", "dmq_balancer_param", "activation_quant_params", "weight_quant_params"]
    /// The keys of `activation_quant_params`: the width, symmetry, and the calibration method's.
    static var activationKeys: [String] { ["num_bits", "act_algo", "asymmetric"] + CalibrationConfig.settingKeys.filter { $0 != "asymmetric" } }
    /// Asymmetric activations or not, with the key path that decided it (`activation_offset`,
    /// or a layer's `asymmetric`, which wins).
    typealias Symmetry = (asymmetric: Bool, source: String)

    static func parse(_ root: JSONObject) throws -> RetrainConfig {
        let (version, batchCount) = try RetrainConfig.parseVersionAndBatchCount(root)
        let sections = try RetrainConfig.parseTrainerSections(root)
        if root.contains("calibration") {
            throw root.error("calibration", "is a section of the retrain formats; in the \(ConfigFormat.amctPTQ.name) "
                             + "each layer's activation_quant_params gives act_algo and its settings")
        }
        // The manual recommends true, and an omitted key means AMCT's default, true.
        let activationOffset: Symmetry = (try root.bool("activation_offset") ?? true, "activation_offset")
        let fusion = ConvBNFusion(isEnabled: try root.bool("do_fusion") ?? true,
                                  skippedLayers: try root.stringArray("skip_fusion_layers") ?? [])
        let tensorQuantize = try parseTensorQuantize(root, activationOffset: activationOffset)

        var entries: [String: QuantizerConfig] = [:]
        let known = ["version", "batch_num"] + RetrainConfig.trainerSections + topLevelKeys
        for name in root.keys where !known.contains(name) {
            guard let entry = root.values[name] as? [String: Any] else {
                let allowed = (["version", "batch_num"] + topLevelKeys + RetrainConfig.trainerSections).joined(separator: ", ")
                throw root.error(name, "unknown key: not a key of the \(ConfigFormat.amctPTQ.name) (\(allowed)), "
                                 + "and not a layer entry (expected an object, got \(jsonTypeName(root.values[name]!)))")
            }
            entries[name] = try parseLayerEntry(JSONObject(file: root.file, path: root.keyPath(name), values: entry),
                                                activationOffset: activationOffset)
        }
        var config = RetrainConfig(file: root.file, version: version, batchCount: batchCount, rules: .perLayer(entries),
                                   runtimeSections: sections, format: .amctPTQ, fusion: fusion)
        config.tensorQuantize = tensorQuantize
        // joint_quant: each eltwise add's operands share one IFMR grid, symmetric or not as
        // activation_offset says (an add has no layer entry of its own).
        if try root.bool("joint_quant") == true {
            config.jointQuantCalibration = CalibrationConfig(settings: ["asymmetric": .flag(activationOffset.asymmetric)])
        }
        return config
    }

    /// `tensor_quantize`: a quantizer on input `input_index` of the node `layer_name` (a max pool or an add;
    /// resolving checks both against the model), with its `activation_quant_params` (INT8; IFMR
    /// symmetric or not as `activation_offset` says when left out).
    private static func parseTensorQuantize(_ root: JSONObject, activationOffset: Symmetry) throws -> [TensorQuantizeEntry] {
        guard let entries = try root.objectArray("tensor_quantize") else { return [] }
        return try entries.map { entry in
            guard let name = try entry.string("layer_name") else {
                throw InputError(file: entry.file, keyPath: entry.keyPath("layer_name"), message: "is required (the node whose input is quantized)")
            }
            guard let index = try entry.int("input_index") else {
                throw InputError(file: entry.file, keyPath: entry.keyPath("input_index"), message: "is required (which input of \(name))")
            }
            guard (0...Int(UInt32.max)).contains(index) else {
                throw entry.error("input_index", "must be an unsigned 32-bit integer, got \(index)")
            }
            var data = RetrainDataConfig(dstType: .int8)
            if let params = try entry.object("activation_quant_params") {
                data = try parseActivation(params, activationOffset: activationOffset)
            } else {
                try applySymmetry(activationOffset, to: &data, asymmetricKey: entry.keyPath("activation_quant_params.asymmetric"),
                                  file: entry.file)
            }
            if data.dstType == .int16 {
                throw entry.error("activation_quant_params.num_bits", "16 is not supported for a node's input tensor: "
                                  + "the INT8 engine takes int8 codes there (set 8)")
            }
            try entry.rejectUnknownKeys()
            return TensorQuantizeEntry(keyPath: entry.path, layerName: name, inputIndex: index, calibration: data.calibration)
        }
    }

    /// One layer entry: `quant_enable`, `dmq_balancer_param`, `activation_quant_params`, `weight_quant_params`.
    private static func parseLayerEntry(_ object: JSONObject, activationOffset: Symmetry) throws -> QuantizerConfig {
        var config = QuantizerConfig(keyPath: object.path)
        config.isEnabled = try object.bool("quant_enable") ?? true
        config.dmqStrength = try RetrainConfig.parseDMQStrength(object)
        if let params = try object.object("activation_quant_params") {
            config.data = try parseActivation(params, activationOffset: activationOffset)
        } else {
            // INT8 and IFMR, symmetric or not as activation_offset says.
            config.data = RetrainDataConfig(dstType: .int8)
            try applySymmetry(activationOffset, to: &config.data, asymmetricKey: object.keyPath("activation_quant_params.asymmetric"),
                              file: object.file)
        }
        if let weight = try object.object("weight_quant_params") {
            config.weight = try parseWeight(weight)
        }
        try object.rejectUnknownKeys()
        return config
    }

    /// `activation_quant_params`. `asymmetric` (else `activation_offset`) picks IFMR's symmetric
    /// or asymmetric search; a symmetric layer gets `fixed_min: false`, so its range is
    /// [−128·s, 127·s] with zero point 0, as AMCT's symmetric INT8.
    private static func parseActivation(_ object: JSONObject, activationOffset: Symmetry) throws -> RetrainDataConfig {
        var config = RetrainDataConfig()
        guard let bits = try object.int("num_bits") else {
            throw InputError(file: object.file, keyPath: object.keyPath("num_bits"), message: "is required (8, or 16 for INT16)")
        }
        switch bits {
        case 8: config.dstType = .int8
        case 16: config.dstType = .int16
        default: throw object.error("num_bits", "must be 8 or 16, got \(bits)")
        }
        let asymmetricKey = object.keyPath("asymmetric")
        let (asymmetric, source) = try object.bool("asymmetric").map { ($0, asymmetricKey) } ?? activationOffset
        // The calibration method reads its own keys; num_bits and asymmetric were read above.
        let methodKeys = JSONObject(file: object.file, path: object.path,
                                    values: object.values.filter { $0.key != "num_bits" && $0.key != "asymmetric" })
        config.calibration = try CalibrationConfig.parse(methodKeys)
        try object.rejectUnknownKeys(allowed: activationKeys)
        try applySymmetry((asymmetric, source), to: &config, asymmetricKey: asymmetricKey, file: object.file)
        return config
    }

    /// Sets the calibration method's `asymmetric` (the method is IFMR unless act_algo says
    /// otherwise); `symmetry.source` is the key path that decided it.
    private static func applySymmetry(_ symmetry: Symmetry, to config: inout RetrainDataConfig,
                                      asymmetricKey: String, file: String) throws {
        let method = config.calibration.method ?? type(of: CalibrationMethod.default.calibrator)
        if method.keys.contains("asymmetric") {
            config.calibration.settings["asymmetric"] = .flag(symmetry.asymmetric)
            if !symmetry.asymmetric { config.fixedMin = false }
        } else if !symmetry.asymmetric {
            throw InputError(file: file, keyPath: symmetry.source,
                             message: "symmetric activations (asymmetric false) with act_algo \(method.name) are not supported yet: "
                                + "qat's \(method.name) range is asymmetric; set \(asymmetricKey) true, or use act_algo ifmr")
        }
    }

    /// `weight_quant_params`: INT8 ARQ weights, per channel or per tensor.
    private static func parseWeight(_ object: JSONObject) throws -> RetrainWeightConfig {
        var config = RetrainWeightConfig()
        guard let bits = try object.int("num_bits") else {
            throw InputError(file: object.file, keyPath: object.keyPath("num_bits"), message: "is required (8)")
        }
        switch bits {
        case 8: config.dstType = .int8
        case 16: throw object.error("num_bits", "16-bit weights are not supported yet: weights are INT8 (set 8)")
        default: throw object.error("num_bits", "must be 8 or 16, got \(bits)")
        }
        if let algorithm = try object.string("wts_algo") {
            guard algorithm == "arq_quantize" else {
                throw object.error("wts_algo", "unsupported value \"\(truncatedForMessage(algorithm))\" (allowed: \"arq_quantize\")")
            }
            // ARQ: the same scales from the weights as the retrain form's arq_retrain.
            config.algorithm = .arqRetrain
        }
        config.channelWise = try object.bool("channel_wise")
        try object.rejectUnknownKeys()
        return config
    }
}

/// AMCT PTQ's Conv+BN folding before calibration (`do_fusion`, `skip_fusion_layers`).
/// qat keeps a BatchNorm after a conv as its own layer during calibration and folds it into the
/// quantized conv's per-channel requantization at deployment. With per-channel weight scales
/// this gives the same INT8 weights as folding first when every BatchNorm scale γ is positive
/// (ARQ's channel scale then grows by the same factor as the channel, ALGORITHMS.md §3); with one
/// scale per tensor, or a γ ≤ 0 (which swaps a channel's extremes and so may change ARQ's
/// divisor 127/128), it would not, and folding first is not supported yet.
public struct ConvBNFusion: Equatable, Sendable {
    public var isEnabled: Bool
    public var skippedLayers: [String]

    public init(isEnabled: Bool, skippedLayers: [String]) {
        self.isEnabled = isEnabled
        self.skippedLayers = skippedLayers
    }

    /// Checks the rules against `model` and its plan: each `skip_fusion_layers` name is a conv2d
    /// of the model (one without a BatchNorm after it is a warning), and a fold that would change
    /// a per-tensor weight scale is refused. Returns the folds whose γ calibration must check.
    func check(_ wiring: ModelGraph.Wiring, layers: [LayerPlan], file: String,
               warnings: inout [String]) throws -> [ConvBNPair] {
        let model = wiring.spec
        // conv index → the BatchNorm reading its output.
        var batchNormAfter: [Int: Int] = [:]
        for (index, layer) in model.layers.enumerated() {
            if layer.kind.layerType == .batchnorm2d, let source = wiring.sources[index].first, source >= 0,
               model.layers[source].kind.layerType == .conv2d {
                batchNormAfter[source] = index
            }
        }
        for (position, name) in skippedLayers.enumerated() {
            let keyPath = "skip_fusion_layers[\(position)]"
            guard let index = model.layers.firstIndex(where: { $0.name == name }) else {
                throw InputError(file: file, keyPath: keyPath, message: "no layer named \"\(truncatedForMessage(name))\" in model \(model.name)")
            }
            guard model.layers[index].kind.layerType == .conv2d else {
                throw InputError(file: file, keyPath: keyPath, message: "\(name) is a \(model.layers[index].kind.typeName) layer; "
                                 + "only a conv2d followed by a batchnorm2d can be fused")
            }
            if batchNormAfter[index] == nil {
                warnings.append("\(keyPath): \(name) has no batchnorm2d after it; the entry has no effect")
            }
        }
        guard isEnabled else { return [] }
        var folds: [ConvBNPair] = []
        for (conv, batchNorm) in batchNormAfter.sorted(by: { $0.key < $1.key }) {
            let name = model.layers[conv].name
            guard !skippedLayers.contains(name), let quantizer = layers[conv].quantizer else { continue }
            guard !quantizer.channelWise else {
                folds.append(ConvBNPair(conv: name, batchNorm: model.layers[batchNorm].name))
                continue
            }
            throw InputError(file: file, keyPath: "do_fusion",
                             message: "folding \(model.layers[batchNorm].name) into \(name) before calibration would change \(name)'s "
                                + "per-tensor weight scale, which is not supported yet (do_fusion defaults to true): set "
                                + "\(name).weight_quant_params.channel_wise true, list \(name) in skip_fusion_layers, or set do_fusion false")
        }
        return folds
    }
}

/// A quantized conv and the BatchNorm after it, which the config folds before calibration.
public struct ConvBNPair: Equatable, Sendable {
    public var conv: String
    public var batchNorm: String
}

extension Model {
    /// Refuses to calibrate when a fold the plan asks for (`do_fusion`) would give other INT8
    /// weights than qat's unfolded calibration: a BatchNorm scale γ ≤ 0 in some channel.
    public func checkFoldsBeforeCalibration(_ plan: QuantizationPlan) throws {
        for pair in plan.foldsBeforeCalibration {
            guard let batchNorm = layer(named: pair.batchNorm) as? BatchNorm2DLayer,
                  let channel = batchNorm.gamma.value.storage.firstIndex(where: { !($0 > 0) }) else { continue }
            throw InputError(file: plan.configFile, keyPath: "do_fusion",
                             message: "folding \(pair.batchNorm) into \(pair.conv) before calibration, with \(pair.batchNorm)'s scale "
                                + "γ = \(batchNorm.gamma.value.storage[channel]) ≤ 0 in channel \(channel), would change \(pair.conv)'s INT8 "
                                + "weights, which is not supported yet: list \(pair.conv) in skip_fusion_layers, or set do_fusion false")
        }
    }
}
