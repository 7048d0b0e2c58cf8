import QATCore
import QATIO

// The one writer of retrain configs. `qat create-config`, `qat sensitivity --write-config` and the
// checkpoint's record of the plan (attribute `quantization`) all go through `jsonText`, so a key
// the parser knows cannot be forgotten by one of them; RetrainConfigTests round-trips every key.

extension RetrainConfig: Encodable {
    /// The config as written: the trainer's sections, `calibration`, `version`, `batch_num`, then
    /// the layer rules. Layers named in `layerOrder` (a model's layer names) come in that order,
    /// others after them by name.
    public func json(layerOrder: [String] = []) -> JSONValue {
        var members: [JSONValue.Member] = []
        for name in Self.trainerSections {
            if let section = runtimeSections[name] { members.append(.init(name, section)) }
        }
        if !calibration.isEmpty { members.append(.init("calibration", .object(calibration.members))) }
        if let jointQuantCalibration { members.append(.init(ConfigFormat.jointQuantKey, .object(jointQuantCalibration.members))) }
        if !tensorQuantize.isEmpty {
            // An add's input index (0 when absent, as for a max pool, whose records keep their bytes).
            members.append(.init(ConfigFormat.tensorQuantizeKey, .object(tensorQuantize.map { entry in
                .init(entry.layerName, .object((entry.inputIndex == 0 ? [] : [.init("input_index", JSONValue(entry.inputIndex))])
                                               + entry.calibration.members))
            })))
        }
        members.append(.init("version", JSONValue(version)))
        members.append(.init("batch_num", JSONValue(batchCount)))
        let rank = Dictionary(layerOrder.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        func ordered(_ names: some Sequence<String>) -> [String] {
            names.sorted { (rank[$0] ?? Int.max, $0) < (rank[$1] ?? Int.max, $1) }
        }
        switch rules {
        case .perLayer(let entries):
            for name in ordered(entries.keys) {
                members.append(.init(name, .object(entries[name]!.members(withEnable: true))))
            }
        case .simple(let simple):
            // Both global objects are always written, even empty: they mark the simple form.
            members.append(.init("retrain_data_config", .object(simple.global.data.members)))
            members.append(.init("retrain_weight_config", .object(simple.global.weight.members)))
            if !simple.skipLayers.isEmpty {
                members.append(.init("skip_layers", .array(simple.skipLayers.map(JSONValue.init))))
            }
            if !simple.skipLayerTypes.isEmpty {
                members.append(.init("skip_layer_types", .array(simple.skipLayerTypes.map { JSONValue($0.name) })))
            }
            if !simple.typeOverrides.isEmpty {
                let types = LayerType.allCases.filter { simple.typeOverrides[$0] != nil }
                members.append(.init("override_layer_types", .object(types.map {
                    .init($0.name, .object(simple.typeOverrides[$0]!.members(withEnable: false)))
                })))
            }
            if !simple.layerOverrides.isEmpty {
                members.append(.init("override_layer_configs", .object(ordered(simple.layerOverrides.keys).map {
                    .init($0, .object(simple.layerOverrides[$0]!.members(withEnable: false)))
                })))
            }
        }
        return .object(members)
    }

    /// The config as a file's text (pretty-printed JSON ending in a newline).
    public func jsonText(layerOrder: [String] = []) -> String { json(layerOrder: layerOrder).text }

    public func encode(to encoder: Encoder) throws { try json().encode(to: encoder) }
}

extension QuantizerConfig {
    /// `retrain_enable` (AMCT layer entries only), then the two settings objects when they hold keys.
    func members(withEnable: Bool) -> [JSONValue.Member] {
        var members: [JSONValue.Member] = []
        if withEnable { members.append(.init("retrain_enable", JSONValue(isEnabled))) }
        if withEnable, let dmqStrength { members.append(.init("dmq_balancer_param", JSONValue(dmqStrength))) }
        if !data.members.isEmpty { members.append(.init("retrain_data_config", .object(data.members))) }
        if !weight.members.isEmpty { members.append(.init("retrain_weight_config", .object(weight.members))) }
        return members
    }
}

extension RetrainDataConfig {
    var members: [JSONValue.Member] {
        var members: [JSONValue.Member] = []
        if let algorithm { members.append(.init("algo", JSONValue(algorithm.rawValue))) }
        if let clipMax, let clipMin {
            members.append(.init("clip_max", JSONValue(clipMax)))
            members.append(.init("clip_min", JSONValue(clipMin)))
        }
        if let fixedMin { members.append(.init("fixed_min", JSONValue(fixedMin))) }
        if let learnClip { members.append(.init("learn_clip", JSONValue(learnClip))) }
        if let dstType { members.append(.init("dst_type", JSONValue(dstType.rawValue))) }
        if let scaleType { members.append(.init("scale_type", JSONValue(scaleType.rawValue))) }
        if let roundMode { members.append(.init("round_mode", JSONValue(roundMode.rawValue))) }
        if let narrowRange { members.append(.init("narrow_range", JSONValue(narrowRange))) }
        if let dataType { members.append(.init("data_type", JSONValue(dataType.rawValue))) }
        return members + calibration.members
    }
}

extension RetrainWeightConfig {
    var members: [JSONValue.Member] {
        var members: [JSONValue.Member] = []
        if let algorithm { members.append(.init("algo", JSONValue(algorithm.rawValue))) }
        if let channelWise { members.append(.init("channel_wise", JSONValue(channelWise))) }
        if let dstType { members.append(.init("dst_type", JSONValue(dstType.rawValue))) }
        if let nonUniform {
            members.append(.init("nuq_quantize", .object([.init("num_steps", JSONValue(nonUniform.steps)),
                                                          .init("num_of_iteration", JSONValue(nonUniform.iterations))])))
        }
        if let asymmetric { members.append(.init("asymmetric", JSONValue(asymmetric))) }
        if let weightCompressOnly { members.append(.init("weight_compress_only", JSONValue(weightCompressOnly))) }
        if let scaleType { members.append(.init("scale_type", JSONValue(scaleType.rawValue))) }
        if let roundMode { members.append(.init("round_mode", JSONValue(roundMode.rawValue))) }
        if let narrowRange { members.append(.init("narrow_range", JSONValue(narrowRange))) }
        if let scaleMethod { members.append(.init("method", JSONValue(scaleMethod.rawValue))) }
        if let percentage { members.append(.init("percentage", JSONValue(percentage))) }
        if let bias { members.append(.init("bias_quantize", bias.json)) }
        if let dataType { members.append(.init("data_type", JSONValue(dataType.rawValue))) }
        if let biasDataType { members.append(.init("bias_data_type", JSONValue(biasDataType.rawValue))) }
        return members
    }
}

// MARK: - Configs made from a model or a plan

extension RetrainConfig {
    /// The default config for `model`, in AMCT's config.json form (like AMCT's
    /// `create_quant_retrain_config`): every conv2d and linear layer enabled with ulq_quantize and
    /// arq_retrain, channel_wise true for conv2d and false for linear, INT8, batch_num 1, and
    /// `learn_clip: false` for layers that read the model input (docs/CONFIG.md).
    public static func makeDefault(for model: ModelSpec) -> RetrainConfig {
        // A spec whose wiring is broken gets no learn_clip entries; resolving the config reports it.
        let wiring = try? ModelGraph.Wiring(model)
        var entries: [String: QuantizerConfig] = [:]
        for (index, layer) in model.layers.enumerated() where layer.kind.isQuantizable {
            entries[layer.name] = QuantizerConfig(
                keyPath: layer.name,
                data: RetrainDataConfig(algorithm: .ulqQuantize, dstType: .int8,
                                        learnClip: wiring?.readsModelInput(layerAt: index) == true ? false : nil),
                weight: RetrainWeightConfig(algorithm: .arqRetrain,
                                            channelWise: layer.kind.layerType.supportsChannelWiseWeights, dstType: .int8))
        }
        return RetrainConfig(file: "default config of model \(model.name)", rules: .perLayer(entries))
    }
}

/// The text of `RetrainConfig.makeDefault(for:)`, layers in model order (what `qat create-config` prints).
public func createDefaultConfig(for model: ModelSpec) -> String {
    RetrainConfig.makeDefault(for: model).jsonText(layerOrder: model.layers.map(\.name))
}

extension QuantizationPlan {
    /// The plan as an AMCT-form config with every setting explicit: each quantized layer's entry
    /// (configured clip bounds, fixed_min, learn_clip, dst_type, act_algo with all of its method's
    /// settings, the weight settings); layers that stay float are not listed. Checkpoints record
    /// it (attribute `quantization`) to rebuild their quantizers.
    public func explicitConfig() -> RetrainConfig {
        var entries: [String: QuantizerConfig] = [:]
        for layer in quantizedLayers {
            let q = layer.quantizer!
            if let cast = q.floatCast {
                // A cast layer has no integer settings: its three data types say everything.
                entries[layer.name] = QuantizerConfig(
                    keyPath: layer.name,
                    data: RetrainDataConfig(dataType: TensorDataType(rawValue: cast.input.rawValue)),
                    weight: RetrainWeightConfig(dataType: TensorDataType(rawValue: cast.weights.rawValue),
                                                biasDataType: TensorDataType(rawValue: cast.bias.rawValue)))
                continue
            }
            entries[layer.name] = QuantizerConfig(
                keyPath: layer.name,
                data: RetrainDataConfig(algorithm: q.activationAlgorithm, clipMax: q.clipMax, clipMin: q.clipMin,
                                        fixedMin: q.fixedMin, dstType: q.activationType, learnClip: q.learnClip,
                                        calibration: q.calibration.explicitConfig,
                                        // Written only when not the default, so older records keep their bytes.
                                        scaleType: q.activationScaleType == .float ? nil : q.activationScaleType,
                                        roundMode: q.activationRoundMode == .halfEven ? nil : q.activationRoundMode,
                                        narrowRange: q.activationNarrowRange ? true : nil),
                weight: RetrainWeightConfig(algorithm: q.weightAlgorithm, channelWise: q.channelWise, dstType: q.weightType,
                                            nonUniform: q.nonUniform, asymmetric: q.asymmetricWeights ? true : nil,
                                            weightCompressOnly: q.weightCompressOnly ? true : nil,
                                            scaleType: q.weightScaleType == .float ? nil : q.weightScaleType,
                                            roundMode: q.weightRoundMode == .halfEven ? nil : q.weightRoundMode,
                                            narrowRange: q.weightNarrowRange ? true : nil,
                                            bias: q.biasGrid.map { .ownGrid($0) },
                                            scaleMethod: q.weightScaleMethod == .maxmin ? nil : q.weightScaleMethod,
                                            percentage: q.weightPercentage),
                dmqStrength: q.dmqStrength)
        }
        var config = RetrainConfig(file: configFile, batchCount: batchCount, rules: .perLayer(entries))
        // An add with a grid on every input is joint_quant's; a max pool, or an add with a grid on one input, tensor_quantize's.
        func isJoint(_ layer: LayerPlan) -> Bool { layer.kind.layerType == .add && layer.tensorQuantizer?.inputIndex == nil }
        config.jointQuantCalibration = layers.lazy.filter(isJoint).compactMap(\.tensorQuantizer).first?.calibration.explicitConfig
        config.tensorQuantize = layers.filter { !isJoint($0) }.compactMap { layer in
            layer.tensorQuantizer.map {
                TensorQuantizeEntry(keyPath: "\(ConfigFormat.tensorQuantizeKey).\(layer.name)", layerName: layer.name,
                                    inputIndex: $0.inputIndex ?? 0, calibration: $0.calibration.explicitConfig)
            }
        }
        return config
    }
}
