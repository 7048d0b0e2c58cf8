import Foundation
import QATCore
import QATIO

// Resolving a retrain config against a model gives one plan entry per layer: quantized or not,
// the rule that decided it, and the final settings with every default filled in. The trainer,
// `qat plan` and checkpoints all work from the plan, never from the raw config.

/// The final quantizer settings of one quantized layer.
public struct QuantizerSettings: Equatable, Sendable {
    public var activationAlgorithm: ActivationAlgorithm
    /// Starting clip bounds (clipMax > 0 > clipMin), or nil for both: `calibration` sets them.
    public var clipMax: Float?
    public var clipMin: Float?
    /// Lower clip bound pinned at 0 (docs/ALGORITHMS.md §1).
    public var fixedMin: Bool
    /// True when the config left fixed_min out and the graph rule decided it.
    public var fixedMinIsDefault: Bool
    /// Activation dst_type (INT8 or INT16).
    public var activationType: QuantizedType
    public var weightAlgorithm: WeightAlgorithm
    /// One weight scale per output channel (true) or one for the whole tensor (false).
    public var channelWise: Bool
    /// Weight dst_type (always INT8 today).
    public var weightType: QuantizedType
    /// False: the clip bounds are not trained (qat's `learn_clip` extension).
    public var learnClip: Bool
    /// The method that finds the starting clip bounds when the config gives none (`act_algo`).
    public var calibration: CalibrationMethod
    /// DMQ's migration strength α (`dmq_balancer_param`), or nil: no DMQ before calibration.
    public var dmqStrength: Double?
    /// NUQ levels on top of ARQ's scales (`nuq_quantize`), nil for uniform weights.
    public var nonUniform: NUQParameters?
    /// A zero point per weight row (`arq_quantize.asymmetric`); weight-only layers only.
    public var asymmetricWeights: Bool
    /// `weight_compress_only`: the weights are quantized, the input stays float (no activation quantizer).
    public var weightCompressOnly: Bool
    /// Power-of-two scales for the input and for the weights (docs/ALGORITHMS.md §1.1).
    public var activationScaleType: ScaleType
    public var weightScaleType: ScaleType
    /// Tie rules of the input grid and of the weight grids (Vitis AI's `round_mode`).
    public var activationRoundMode: RoundMode
    public var weightRoundMode: RoundMode
    /// Narrow code ranges (−127…127) for the input and for the weights (Vitis AI's `narrow_range`).
    public var activationNarrowRange: Bool
    public var weightNarrowRange: Bool
    /// The bias's own grid (Vitis AI's `"bias"` tensor), or nil: the accumulator grid only.
    public var biasGrid: BiasGrid?
    /// How ARQ picks the weight row scales (diffs: the least-error power of two; percentile,
    /// entropy, mse: the method's threshold per row).
    public var weightScaleMethod: ScaleMethod
    /// The percentile of `weightScaleMethod` percentile, nil for the other methods.
    public var weightPercentage: Double?
    /// A cast-quantized layer (Vitis AI's float `datatype`): its tensors are cast to float formats
    /// instead of quantized, and every integer setting above is unused. nil for integer layers.
    public var floatCast: FloatCast?

    public init(activationAlgorithm: ActivationAlgorithm = .ulqQuantize, clipMax: Float? = nil, clipMin: Float? = nil,
                fixedMin: Bool, fixedMinIsDefault: Bool = true, activationType: QuantizedType = .int8,
                weightAlgorithm: WeightAlgorithm = .arqRetrain, channelWise: Bool, weightType: QuantizedType = .int8,
                learnClip: Bool = true, calibration: CalibrationMethod = .default, dmqStrength: Double? = nil,
                nonUniform: NUQParameters? = nil, asymmetricWeights: Bool = false, weightCompressOnly: Bool = false,
                activationScaleType: ScaleType = .float, weightScaleType: ScaleType = .float,
                activationRoundMode: RoundMode = .halfEven, weightRoundMode: RoundMode = .halfEven,
                activationNarrowRange: Bool = false, weightNarrowRange: Bool = false, biasGrid: BiasGrid? = nil,
                weightScaleMethod: ScaleMethod = .maxmin, weightPercentage: Double? = nil, floatCast: FloatCast? = nil) {
        self.floatCast = floatCast
        self.weightPercentage = weightPercentage
        self.biasGrid = biasGrid
        self.weightScaleMethod = weightScaleMethod
        self.dmqStrength = dmqStrength
        self.nonUniform = nonUniform
        self.asymmetricWeights = asymmetricWeights
        self.weightCompressOnly = weightCompressOnly
        self.activationNarrowRange = activationNarrowRange
        self.weightNarrowRange = weightNarrowRange
        self.activationRoundMode = activationRoundMode
        self.weightRoundMode = weightRoundMode
        self.activationScaleType = activationScaleType
        self.weightScaleType = weightScaleType
        self.learnClip = learnClip
        self.calibration = calibration
        self.activationAlgorithm = activationAlgorithm
        self.clipMax = clipMax
        self.clipMin = clipMin
        self.fixedMin = fixedMin
        self.fixedMinIsDefault = fixedMinIsDefault
        self.activationType = activationType
        self.weightAlgorithm = weightAlgorithm
        self.channelWise = channelWise
        self.weightType = weightType
    }

    /// True when calibration must find the starting clip bounds.
    public var needsCalibration: Bool { clipMax == nil && !weightCompressOnly && floatCast == nil }
}

/// One layer of the model in the plan.
public struct LayerPlan: Equatable, Sendable {
    public var name: String
    public var kind: LayerKind
    /// The rule that decided this layer, e.g. "layer entry conv1", "skip_layers",
    /// "override_layer_types.linear", "global", "not listed", "not quantizable (relu)".
    public var rule: String
    /// The settings, or nil when the layer stays float.
    public var quantizer: QuantizerSettings?
    /// An eltwise add under `joint_quant` (the shared grid of its two operands), or a max pool or
    /// one input of an add under `tensor_quantize`: the grid of a weightless layer's input.
    public var tensorQuantizer: TensorQuantizerSettings?

    public init(name: String, kind: LayerKind, rule: String, quantizer: QuantizerSettings? = nil) {
        self.name = name
        self.kind = kind
        self.rule = rule
        self.quantizer = quantizer
    }

    public var isQuantized: Bool { quantizer != nil }
}

/// Every layer of a model, in model order, with its quantization decision.
public struct QuantizationPlan: Equatable, Sendable {
    public var modelName: String
    /// The config file it came from (for display).
    public var configFile: String
    /// `batch_num`: batches calibration runs on.
    public var batchCount: Int
    public var layers: [LayerPlan]
    /// Config entries that had no effect, and other things worth a look; not errors.
    public var warnings: [String]
    /// AMCT PTQ `do_fusion`: BatchNorms folded into their quantized conv before calibration,
    /// which qat's unfolded calibration matches when their γ is positive (checked then).
    public var foldsBeforeCalibration: [ConvBNPair]
    /// Transforms of the float weights around calibration (`RetrainConfig.ptqTransforms`).
    public var ptqTransforms: Set<PTQTransform> = []
    /// The layers each of the config's graph rewrites changed (`RetrainConfig.model(for:)`), in model order.
    public var rewrittenLayers: [GraphRewrite: [String]] = [:]
    /// Settings the config reader changed (`RetrainConfig.notes`), one line each.
    public var notes: [String] = []
    /// `enable_auto_nuq`'s candidates with their bytes (AutoNUQ.swift); nil when the config does not enable it.
    public var autoNonUniform: [AutoNUQDecision]?

    public init(modelName: String, configFile: String, batchCount: Int, layers: [LayerPlan], warnings: [String] = [],
                foldsBeforeCalibration: [ConvBNPair] = []) {
        self.modelName = modelName
        self.configFile = configFile
        self.batchCount = batchCount
        self.layers = layers
        self.warnings = warnings
        self.foldsBeforeCalibration = foldsBeforeCalibration
    }

    public var quantizedLayers: [LayerPlan] { layers.filter(\.isQuantized) }

    /// The plan entry of the layer called `name`, if the model has one.
    public func layer(named name: String) -> LayerPlan? { layers.first { $0.name == name } }
}

// MARK: - Resolving

extension RetrainConfig {
    /// Applies the config's rules to every layer of `model`.
    /// Throws an `InputError` naming this config's file and key path when an entry names a
    /// layer the model lacks (AMCT form), targets a layer that cannot be quantized, asks for
    /// `channel_wise` on a linear layer, or when no layer ends up quantized.
    public func resolve(for original: ModelSpec) throws -> QuantizationPlan {
        // The plan is that of the model the run builds (`model(for:)`); a spec already rewritten
        // resolves to the same plan.
        let changes = rewrittenLayers(of: original)
        let converted = Dictionary(changes.map { ($0.layer, ($0.rewrite, $0.was)) }, uniquingKeysWith: { a, _ in a })
        let model = self.model(for: original)
        let wiring = try ModelGraph.Wiring(model)
        var warnings: [String] = []
        var layers: [LayerPlan] = []
        switch rules {
        case .perLayer(let entries):
            try checkEntriesExist(entries, in: model)
            for (index, layer) in model.layers.enumerated() {
                let rule: String
                var quantizer: QuantizerSettings?
                if !layer.kind.isQuantizable {
                    rule = "not quantizable (\(layer.kind.typeName))"
                } else if let entry = entries[layer.name] {
                    rule = entry.isEnabled ? "layer entry \(layer.name)" : "layer entry \(layer.name) (\(format.enableKey) false)"
                    if entry.isEnabled {
                        quantizer = try self.quantizer(from: [entry], layerAt: index, of: wiring, warnings: &warnings)
                    } else if entry.dmqStrength != nil {
                        warnings.append("\(entry.keyPath("dmq_balancer_param")): \(layer.name) stays float (\(format.enableKey) false); "
                                        + "DMQ runs on quantized layers only, so the key has no effect")
                    }
                } else {
                    rule = "not listed"
                }
                layers.append(LayerPlan(name: layer.name, kind: layer.kind, rule: rule, quantizer: quantizer))
            }
        case .simple(let simple):
            warnings += try checkSimpleRules(simple, against: model)
            for index in model.layers.indices {
                layers.append(try plan(layerAt: index, of: wiring, simple: simple, warnings: &warnings))
            }
        }
        if keepsAddsFloat {
            let adds = layers.indices.filter { layers[$0].kind.layerType == .add }
            for index in adds { layers[index].rule = "keep_add_layer_accuracy (float)" }
            if adds.isEmpty { warnings.append("keep_add_layer_accuracy: model \(model.name) has no add layer; the key has no effect") }
        }
        for index in layers.indices {
            if let (rewrite, was) = converted[layers[index].name] {
                layers[index].rule = "\(rewrite.rawValue) (was \(was))"
            }
        }
        var autoNonUniform: [AutoNUQDecision]?
        if enablesAutoNonUniform, case .simple(let simple) = rules {
            autoNonUniform = try applyAutoNonUniform(to: &layers, simple: simple, model: model)
        }
        guard layers.contains(where: \.isQuantized) else {
            let names = model.layers.filter(\.kind.isQuantizable).map(\.name)
            throw InputError(file: file, message: "no layer is quantized: the config disables or leaves out every "
                + "conv2d/linear layer of model \(model.name) (\(names.isEmpty ? "it has none" : names.joined(separator: ", "))); "
                + "enable at least one, or train in float without a retrain config")
        }
        if let jointQuantCalibration {
            let method = try CalibrationConfig.resolve([(jointQuantCalibration, ConfigFormat.jointQuantKey)], layer: "joint_quant",
                                                       file: file, warnings: &warnings)
            for index in layers.indices where wiring.isEltwiseAdd(layerAt: index) {
                layers[index].tensorQuantizer = TensorQuantizerSettings(calibration: method)
                layers[index].rule = "joint_quant"
            }
        }
        try applyTensorQuantize(to: &layers, wiring: wiring, warnings: &warnings)
        let folds = try fusion?.check(wiring, layers: layers, file: file, warnings: &warnings) ?? []
        var plan = QuantizationPlan(modelName: model.name, configFile: file, batchCount: batchCount,
                                    layers: layers, warnings: warnings, foldsBeforeCalibration: folds)
        plan.ptqTransforms = ptqTransforms
        plan.autoNonUniform = autoNonUniform
        plan.rewrittenLayers = Dictionary(grouping: changes, by: \.rewrite).mapValues { $0.map(\.layer) }
        if graphRewrites.contains(.siluToHardSwish) && !changes.contains(where: { $0.rewrite == .siluToHardSwish }) {
            plan.warnings.append("convert_silu_to_hswish: no SiLU to convert in model \(model.name) (a sigmoid whose output a mul "
                                 + "multiplies by the sigmoid's own input); the model is unchanged")
        }
        plan.notes = notes
        if layers.contains(where: { $0.quantizer?.dmqStrength != nil }) { plan.ptqTransforms.insert(.dmq) }
        return plan
    }

    /// AMCT form: every entry must name a quantizable layer of the model.
    private func checkEntriesExist(_ entries: [String: QuantizerConfig], in model: ModelSpec) throws {
        for name in entries.keys.sorted() {
            guard let layer = model.layers.first(where: { $0.name == name }) else {
                throw InputError(file: file, keyPath: name,
                                 message: "no layer named \"\(name)\" in model \(model.name) (quantizable layers: \(sampleNames(of: model)))")
            }
            guard layer.kind.isQuantizable else {
                throw InputError(file: file, keyPath: name, message: "\(name) is a \(layer.kind.typeName) layer, which cannot be quantized "
                    + "(only \(RetrainConfig.quantizableTypeNames.joined(separator: ", ")) layers can; quantizable layers: \(sampleNames(of: model)))")
            }
        }
    }

    /// Simple form: entries that match nothing are warnings; overrides of layers that cannot be
    /// quantized are errors (their settings could never apply).
    private func checkSimpleRules(_ simple: SimpleRules, against model: ModelSpec) throws -> [String] {
        var warnings: [String] = []
        let typesInModel = Set(model.layers.map(\.kind.layerType))
        func noLayer(_ name: String) -> String {
            "no layer named \"\(name)\" in model \(model.name) (quantizable layers: \(sampleNames(of: model)))"
        }
        for (index, name) in simple.skipLayers.enumerated() {
            if let layer = model.layers.first(where: { $0.name == name }) {
                if !layer.kind.isQuantizable {
                    warnings.append("skip_layers[\(index)]: \(name) is a \(layer.kind.typeName) layer, never quantized anyway; the entry has no effect")
                }
            } else {
                warnings.append("skip_layers[\(index)]: \(noLayer(name)); the entry has no effect")
            }
        }
        for (index, type) in simple.skipLayerTypes.enumerated() where !typesInModel.contains(type) {
            warnings.append("skip_layer_types[\(index)]: model \(model.name) has no \(type.name) layer; the entry has no effect")
        }
        for type in simple.typeOverrides.keys.sorted(by: { $0.name < $1.name }) where !typesInModel.contains(type) {
            warnings.append("\(ruleName(typeOverride: type, simple)): model \(model.name) has no \(type.name) layer; the entry has no effect")
        }
        for name in simple.layerOverrides.keys.sorted() {
            guard let layer = model.layers.first(where: { $0.name == name }) else {
                warnings.append("\(ruleName(layerOverride: name, simple)): \(noLayer(name)); the entry has no effect")
                continue
            }
            guard layer.kind.isQuantizable else {
                throw InputError(file: file, keyPath: ruleName(layerOverride: name, simple),
                                 message: "\(name) is a \(layer.kind.typeName) layer, which cannot be quantized "
                                    + "(quantizable layers: \(sampleNames(of: model)))")
            }
        }
        return warnings
    }

    /// How plans and messages name a layer or type override: the simple form's key
    /// (`override_layer_configs.conv1`), which the proto-text form shares, or the entry of a Vitis
    /// AI `layer_quantize_config`.
    private func ruleName(layerOverride name: String, _ simple: SimpleRules) -> String {
        format == .vitis ? simple.layerOverrides[name]!.keyPath : "override_layer_configs.\(name)"
    }

    private func ruleName(typeOverride type: LayerType, _ simple: SimpleRules) -> String {
        format == .vitis ? simple.typeOverrides[type]!.keyPath : "override_layer_types.\(type.name)"
    }

    /// Simple form, one layer: layer rules > type rules > global.
    private func plan(layerAt index: Int, of wiring: ModelGraph.Wiring, simple: SimpleRules,
                      warnings: inout [String]) throws -> LayerPlan {
        let layer = wiring.spec.layers[index]
        func decided(_ rule: String, _ configs: [QuantizerConfig]? = nil) throws -> LayerPlan {
            guard var configs else { return LayerPlan(name: layer.name, kind: layer.kind, rule: rule) }
            var rule = rule
            // Vitis AI's `input`: a layer that reads the model input takes each config's input
            // settings where it gives them, else its activation settings; the most specific wins.
            // The rule says which one it took where the two differ.
            if wiring.readsModelInput(layerAt: index), configs.contains(where: { $0.modelInputData != nil }) {
                let source = configs.last!
                if let input = source.modelInputData, input != source.data {
                    rule += "; input quantizer: input settings"
                } else if source.modelInputData == nil, configs.contains(where: { $0.modelInputData.map { $0 != source.data } ?? false }) {
                    rule += "; input quantizer: its activation settings, not the model's input settings"
                }
                configs = configs.map { config in
                    var config = config
                    if let input = config.modelInputData { config.data = input }
                    return config
                }
            }
            return LayerPlan(name: layer.name, kind: layer.kind, rule: rule,
                             quantizer: try quantizer(from: configs, layerAt: index, of: wiring, warnings: &warnings))
        }
        guard layer.kind.isQuantizable else { return try decided("not quantizable (\(layer.kind.typeName))") }
        if simple.keepsFirstAndLastFloat {
            let quantizable = wiring.spec.layers.indices.filter { wiring.spec.layers[$0].kind.isQuantizable }
            if index == quantizable.first || index == quantizable.last {
                if simple.layerOverrides[layer.name] != nil {
                    warnings.append("\(ruleName(layerOverride: layer.name, simple)): \(layer.name) is kept float by "
                                    + "keep_first_last_layer_accuracy; the entry has no effect")
                }
                return try decided("keep_first_last_layer_accuracy")
            }
        }
        let typeOverride = simple.typeOverrides[layer.kind.layerType]
        if let layerOverride = simple.layerOverrides[layer.name] {
            // Only a Vitis AI layer configuration can switch a layer off (an empty quantizable_data_type).
            let rule = ruleName(layerOverride: layer.name, simple)
            guard layerOverride.isEnabled else { return try decided("\(rule) (\(format.keepFloatSetting))") }
            // A layer override refines its type's override and the global config, key by key.
            return try decided(rule, [simple.global] + [typeOverride, layerOverride].compactMap { $0 })
        }
        if simple.skipLayers.contains(layer.name) { return try decided("skip_layers") }
        if simple.skipLayerTypes.contains(layer.kind.layerType) { return try decided("skip_layer_types") }
        if let typeOverride {
            let rule = ruleName(typeOverride: layer.kind.layerType, simple)
            guard typeOverride.isEnabled else { return try decided("\(rule) (\(format.keepFloatSetting))") }
            return try decided(rule, [simple.global, typeOverride])
        }
        return try decided("global", [simple.global])
    }

    /// Final settings of one quantized layer: each key comes from the most specific config that
    /// gives it (`configs` run from least to most specific), else from the default.
    private func quantizer(from configs: [QuantizerConfig], layerAt index: Int, of wiring: ModelGraph.Wiring,
                           warnings: inout [String]) throws -> QuantizerSettings {
        let layer = wiring.spec.layers[index]
        let supportsChannelWise = layer.kind.layerType.supportsChannelWiseWeights
        /// The most specific value of a key, with the config that gave it.
        func pick<T>(_ value: (QuantizerConfig) -> T?) -> (value: T, source: QuantizerConfig)? {
            for config in configs.reversed() {
                if let v = value(config) { return (v, config) }
            }
            return nil
        }
        if let cast = try floatCast(input: pick { $0.data.dataType }, weights: pick { $0.weight.dataType },
                                    bias: pick { $0.weight.biasDataType }, layer: layer.name, mostSpecific: configs.last!) {
            // No grid, so nothing to calibrate or learn: the integer settings keep their defaults, unused.
            return QuantizerSettings(fixedMin: false, channelWise: false, learnClip: false, floatCast: cast)
        }
        // The two clip bounds travel together: the parser guarantees both or neither.
        let clip = pick { config in config.data.clipMax.map { ($0, config.data.clipMin!) } }
        let fixedMin = pick { $0.data.fixedMin }
        let channelWise = pick { $0.weight.channelWise }
        // NUQ travels with the weight algorithm: a more specific arq_quantize makes the layer uniform.
        let weightAlgorithm = pick { config in config.weight.algorithm.map { ($0, config.weight.nonUniform) } }
        let asymmetric = pick { $0.weight.asymmetric }
        let weightCompressOnly = pick { $0.weight.weightCompressOnly }
        let weightScale = pick { $0.weight.scaleType }
        let scaleMethod = pick { $0.weight.scaleMethod }
        let percentage = pick { $0.weight.percentage }
        let calibrationChain: [(config: CalibrationConfig, keyPath: String)] = [(calibration, "calibration")]
            + configs.map { ($0.data.calibration, $0.keyPath(format.dataSectionKey)) }
        let calibration = try CalibrationConfig.resolve(calibrationChain, layer: layer.name, file: file, warnings: &warnings)
        let isSignedSymmetric = format.symmetricActivationsAreSigned
            && (calibration.calibrator as? IFMRParameters).map { !$0.asymmetric } == true
        let result = QuantizerSettings(
            activationAlgorithm: pick { $0.data.algorithm }?.value ?? .ulqQuantize,
            clipMax: clip?.value.0, clipMin: clip?.value.1,
            fixedMin: fixedMin?.value ?? (!isSignedSymmetric && wiring.nonNegativeSource(ofLayerAt: index) != nil),
            fixedMinIsDefault: fixedMin == nil,
            activationType: pick { $0.data.dstType }?.value ?? .int8,
            weightAlgorithm: weightAlgorithm?.value.0 ?? .arqRetrain,
            channelWise: channelWise?.value ?? supportsChannelWise,
            weightType: pick { $0.weight.dstType }?.value ?? .int8,
            learnClip: pick { $0.data.learnClip }?.value ?? true,
            calibration: calibration,
            dmqStrength: try dmqStrength(pick { $0.dmqStrength }, layerAt: index, of: wiring), nonUniform: weightAlgorithm?.value.1,
            asymmetricWeights: asymmetric?.value ?? false, weightCompressOnly: weightCompressOnly?.value ?? false,
            activationScaleType: pick { $0.data.scaleType }?.value ?? .float,
            weightScaleType: weightScale?.value ?? .float,
            activationRoundMode: pick { $0.data.roundMode }?.value ?? .halfEven,
            weightRoundMode: pick { $0.weight.roundMode }?.value ?? .halfEven,
            activationNarrowRange: pick { $0.data.narrowRange }?.value ?? false,
            weightNarrowRange: pick { $0.weight.narrowRange }?.value ?? false,
            biasGrid: pick { $0.weight.bias }?.value.grid,
            weightScaleMethod: scaleMethod?.value ?? .maxmin,
            weightPercentage: scaleMethod?.value == .percentile ? percentage?.value ?? PercentileCalibrator().percentage : nil)

        try checkWeightOnlyRules(result, layer: layer.name, asymmetric: asymmetric?.source,
                                 weightCompressOnly: weightCompressOnly?.source, nonUniform: weightAlgorithm?.source)
        // A weight-only layer runs in float with its dequantized weight, so any row split works there.
        if !supportsChannelWise && result.channelWise && !result.weightCompressOnly, let source = channelWise?.source {
            // This runtime gives integer linear weights one scale per tensor only (see docs/CONFIG.md).
            let type = layer.kind.typeName
            var hint = ""
            if source.keyPath.isEmpty {
                hint = format == .vitis
                    ? "; the model configuration applies to every layer, so give \(type) layers a layer_quantize_config "
                        + "entry with per_channel false for their weights"
                    : "; the global retrain_weight_config applies to every layer, so set channel_wise false for \(type) "
                        + "layers under override_layer_types.\(type).retrain_weight_config"
            }
            throw InputError(file: file, keyPath: source.keyPath(format.weightSectionKey) + "." + format.channelWiseKey,
                             message: "\(format.channelWiseKey) true is not allowed on \(type) layer \(layer.name): \(type) weights use one "
                                + "scale per tensor (allowed: false)\(hint)")
        }
        if result.weightScaleType == .powerOfTwo && result.weightAlgorithm == .ulqRetrain, let source = weightScale?.source {
            // LSQ learns its weight scales; nothing would keep them powers of two.
            throw InputError(file: file, keyPath: source.keyPath(format.weightSectionKey) + ".scale_type",
                             message: "poweroftwo is not allowed with algo ulq_retrain on layer \(layer.name): learned weight scales "
                                + "do not stay powers of two (use arq_retrain)")
        }
        if result.weightScaleMethod != .maxmin, let source = scaleMethod?.source {
            // Every method but maxmin replaces ARQ's max |w|; NUQ, asymmetric rows and LSQ find their scales otherwise.
            let problem = result.weightScaleMethod == .diffs && result.weightScaleType != .powerOfTwo
                ? "needs scale_type poweroftwo (its candidates are powers of two)"
                : result.weightAlgorithm == .ulqRetrain ? "is not allowed with algo ulq_retrain (learned scales)"
                : result.nonUniform != nil ? "is not allowed with nuq_quantize" : result.asymmetricWeights ? "is not allowed with asymmetric weights" : nil
            if let problem {
                throw InputError(file: file, keyPath: source.keyPath(format.weightSectionKey) + ".method",
                                 message: "\(result.weightScaleMethod.rawValue) on layer \(layer.name) \(problem)")
            }
        }
        if result.weightScaleMethod != .percentile, let source = percentage?.source {
            throw InputError(file: file, keyPath: source.keyPath(format.weightSectionKey) + ".percentage",
                             message: "is a setting of method percentile, but layer \(layer.name)'s weights use method "
                                + "\(result.weightScaleMethod.rawValue)")
        }
        if result.fixedMin, let clipMin = result.clipMin {
            warnings.append("\(layer.name): clip_min \(clipMin) is ignored because fixed_min is true (the lower bound stays 0)")
        }
        return result
    }

    /// DMQ's strength for a layer, once the graph has a producer to fold the scales into.
    private func dmqStrength(_ picked: (value: Double, source: QuantizerConfig)?, layerAt index: Int,
                             of wiring: ModelGraph.Wiring) throws -> Double? {
        guard let (strength, source) = picked else { return nil }
        if case .failure(let refusal) = wiring.channelProducer(ofLayerAt: index) {
            throw refusal.dmqError(layer: wiring.spec.layers[index].name, file: file, keyPath: source.keyPath("dmq_balancer_param"))
        }
        return strength
    }

    /// The manual's rules for weight-only layers, on the resolved settings (each key may come
    /// from a different level): asymmetric weights need weight_compress_only, which excludes NUQ
    /// and a 16-bit input.
    private func checkWeightOnlyRules(_ q: QuantizerSettings, layer: String, asymmetric: QuantizerConfig?,
                                      weightCompressOnly: QuantizerConfig?, nonUniform: QuantizerConfig?) throws {
        let weightSection = format.weightSectionKey
        // AMCT's proto text has weight_compress_only beside arq_quantize; qat's JSON inside the weight section.
        func weightOnlyKeyPath(_ config: QuantizerConfig) -> String {
            format == .amctSimpleProtoText ? config.keyPath("weight_compress_only")
                : config.keyPath(weightSection) + ".weight_compress_only"
        }
        if q.asymmetricWeights && !q.weightCompressOnly, let asymmetric {
            throw InputError(file: file, keyPath: asymmetric.keyPath(weightSection) + ".asymmetric",
                             message: "true on layer \(layer) needs weight_compress_only true (asymmetric weights are for "
                                + "weight-only layers, as AMCT's manual says)")
        }
        if q.weightCompressOnly, q.nonUniform != nil, let weightCompressOnly, let nonUniform {
            throw InputError(file: file, keyPath: weightOnlyKeyPath(weightCompressOnly),
                             message: "true on layer \(layer), which \(nonUniform.keyPath.isEmpty ? "the global config" : nonUniform.keyPath) "
                                + "gives nuq_quantize: a weight-only layer cannot use NUQ (AMCT's manual)")
        }
        if q.weightCompressOnly, q.activationType == .int16, let weightCompressOnly {
            throw InputError(file: file, keyPath: weightOnlyKeyPath(weightCompressOnly),
                             message: "true on layer \(layer), whose input dst_type is INT16: a weight-only layer has no input quantizer")
        }
    }

    /// A few quantizable layer names of `model` for error messages.
    private func sampleNames(of model: ModelSpec) -> String {
        let names = model.layers.filter(\.kind.isQuantizable).map(\.name)
        let shown = names.prefix(6).joined(separator: ", ")
        return names.count > 6 ? shown + ", …" : (names.isEmpty ? "none" : shown)
    }
}

extension ModelGraph.Wiring {
    /// True when the layer reads the model input itself (the normalised image).
    public func readsModelInput(layerAt index: Int) -> Bool { sources[index].first == -1 }

    /// The layer whose non-negative output (its role is `nonNegativeOutput`, e.g. relu) reaches
    /// layer `index`'s first input, following inputs back through layers that keep values
    /// non-negative (pools, flatten, and concat when every input is non-negative: then the source
    /// with the largest bound); nil when the input may be negative.
    /// The `fixed_min` default is true exactly when there is one. docs/ALGORITHMS.md §1 says "straight
    /// from a ReLU"; looking through is qat's decision, so LeNet's conv2 (relu1 → pool1 → conv2)
    /// gets fixed_min and its full 8-bit range.
    public func nonNegativeSource(ofLayerAt index: Int) -> Int? {
        guard let producer = sources[index].first else { return nil }
        return nonNegativeProducer(of: producer)
    }

    /// The source of `value`'s non-negativity, as `nonNegativeSource`.
    private func nonNegativeProducer(of value: Int) -> Int? {
        guard value >= 0 else { return nil }
        switch spec.layers[value].kind.quantizationRole {
        case .nonNegativeOutput: return value
        case .quantized, .mayTurnNegative: return nil
        case .keepsNonNegative:
            var found: [Int] = []
            for source in sources[value] {
                guard let producer = nonNegativeProducer(of: source) else { return nil }
                found.append(producer)
            }
            func bound(_ producer: Int) -> Float {
                if case .nonNegativeOutput(let bound?) = spec.layers[producer].kind.quantizationRole { return bound }
                return .infinity
            }
            return found.max { bound($0) < bound($1) }
        }
    }
}
