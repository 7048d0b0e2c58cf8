import Foundation
import QATCore
import QATIO

// The retrain config: which layers QAT quantizes and how (docs/CONFIG.md describes every key).
//
// Two forms are accepted:
// - AMCT's config.json, verbatim: `version`, `batch_num`, and one entry per layer name with
//   `retrain_enable`, `retrain_data_config` and `retrain_weight_config`. Layers not listed are
//   not quantized.
// - A JSON rendering of AMCT's "simple config": a global `retrain_data_config` /
//   `retrain_weight_config` for every quantizable layer, refined by `skip_layers`,
//   `skip_layer_types`, `override_layer_types` and `override_layer_configs`.
// A file is in the simple form when it has any of the simple form's top-level keys; the two
// forms cannot be mixed. This file parses and checks what can be checked without a model;
// QuantizationPlan.swift resolves the rules against a model, layer by layer.

/// `retrain_data_config.algo`: how a layer's input (activation) is quantized.
public enum ActivationAlgorithm: String, CaseIterable, Sendable {
    /// Learnable clip bounds (docs/ALGORITHMS.md §1).
    case ulqQuantize = "ulq_quantize"
}

/// `retrain_weight_config.algo`: how a layer's weights are quantized.
public enum WeightAlgorithm: String, CaseIterable, Sendable {
    /// Scales recomputed from the weights at every step (docs/ALGORITHMS.md §3).
    case arqRetrain = "arq_retrain"
    /// Learnable per-channel scales, initialized by ARQ.
    case ulqRetrain = "ulq_retrain"
}

/// `dst_type`: the integer type a tensor is quantized to.
public enum QuantizedType: String, CaseIterable, Sendable {
    case int8 = "INT8"
    case int16 = "INT16"

    public var bitWidth: Int {
        switch self {
        case .int8: return 8
        case .int16: return 16
        }
    }
}

/// `scale_type` (Vitis AI, and qat's record of a plan): any float scale, or a power of two
/// (docs/ALGORITHMS.md §1.1), so that the INT8 engine requantizes by shifts.
public enum ScaleType: String, CaseIterable, Sendable {
    case float
    case powerOfTwo = "poweroftwo"
}

/// How a weight row's (or a bias's) scale is chosen (Vitis AI's `method` for weights and biases):
/// from max |w| (maxmin, ARQ); among power-of-two scales, the one with the least error (diffs,
/// docs/ALGORITHMS.md §3.4; needs `scale_type: "poweroftwo"`); or, weights only, from a
/// calibration method's threshold over the row (percentile, entropy, mse; §3).
public enum ScaleMethod: String, CaseIterable, Sendable {
    case maxmin
    case diffs
    case percentile
    case entropy
    case mse

    /// What a bias can take: one value per channel leaves nothing for a threshold search.
    public static let biasMethods: [ScaleMethod] = [.maxmin, .diffs]

    /// The calibrator whose symmetric threshold over a weight row sets the row's amplitude, for
    /// the methods that search one (`percentage`: percentile's).
    public func rowThreshold(percentage: Double?) -> (any BatchwiseCalibrator)? {
        switch self {
        case .maxmin, .diffs: nil
        case .percentile: PercentileCalibrator(percentage: percentage ?? PercentileCalibrator().percentage)
        case .entropy: EntropyCalibrator()
        case .mse: MSECalibrator()
        }
    }
}

/// `data_type` (qat's record of Vitis AI's `datatype`): integers on a grid, or a float format
/// each value is cast to and back (docs/ALGORITHMS.md §3.6).
public enum TensorDataType: String, CaseIterable, Sendable {
    case int, bfloat16, float16, float32

    /// The float format, or nil for `int`.
    public var floatFormat: FloatFormat? { FloatFormat(rawValue: rawValue) }
}

/// `retrain_data_config` as written; `nil` means "not given here" (a default or a less
/// specific rule decides).
public struct RetrainDataConfig: Equatable, Sendable {
    public var algorithm: ActivationAlgorithm?
    /// Starting clip bounds; the parser guarantees both or neither (neither: calibration sets them).
    public var clipMax: Float?
    public var clipMin: Float?
    public var fixedMin: Bool?
    public var dstType: QuantizedType?
    /// qat extension: false keeps the bounds at their calibrated or configured values.
    public var learnClip: Bool?
    /// `act_algo` and its method's settings: how calibration finds the starting bounds.
    public var calibration: CalibrationConfig
    /// qat extension (Vitis AI's `scale_type`): power-of-two input scales.
    public var scaleType: ScaleType?
    /// qat extension (Vitis AI's `round_mode`): the input grid's tie rule.
    public var roundMode: RoundMode?
    /// qat extension (Vitis AI's `narrow_range`): input codes from −127.
    public var narrowRange: Bool?
    /// qat extension (Vitis AI's `datatype` of the input): a float format casts instead of quantizing.
    public var dataType: TensorDataType?

    public init(algorithm: ActivationAlgorithm? = nil, clipMax: Float? = nil, clipMin: Float? = nil,
                fixedMin: Bool? = nil, dstType: QuantizedType? = nil, learnClip: Bool? = nil,
                calibration: CalibrationConfig = CalibrationConfig(), scaleType: ScaleType? = nil, roundMode: RoundMode? = nil,
                narrowRange: Bool? = nil, dataType: TensorDataType? = nil) {
        self.dataType = dataType
        self.narrowRange = narrowRange
        self.scaleType = scaleType
        self.roundMode = roundMode
        self.algorithm = algorithm
        self.clipMax = clipMax
        self.clipMin = clipMin
        self.fixedMin = fixedMin
        self.dstType = dstType
        self.learnClip = learnClip
        self.calibration = calibration
    }
}

/// `retrain_weight_config` as written; `nil` means "not given here".
public struct RetrainWeightConfig: Equatable, Sendable {
    public var algorithm: WeightAlgorithm?
    public var channelWise: Bool?
    public var dstType: QuantizedType?
    /// `nuq_quantize` (qat's JSON key for AMCT's field): NUQ levels on top of ARQ. It travels
    /// with `algorithm`: a more specific config that names an algorithm without it is uniform.
    public var nonUniform: NUQParameters?
    /// `asymmetric`: a zero point per weight row; only with `weightCompressOnly`.
    public var asymmetric: Bool?
    /// `weight_compress_only`: quantize the weights only, the layer's input stays float.
    public var weightCompressOnly: Bool?
    /// qat extension (Vitis AI's `scale_type`): power-of-two weight scales (ARQ only).
    public var scaleType: ScaleType?
    /// qat extension (Vitis AI's `round_mode`): the weight grids' tie rule.
    public var roundMode: RoundMode?
    /// qat extension (Vitis AI's `narrow_range`): weight codes −127…127.
    public var narrowRange: Bool?
    /// qat extension (Vitis AI's `"bias"` tensor, key `bias_quantize`): the bias's own grid.
    public var bias: BiasQuantization?
    /// qat extension (Vitis AI's `method` for weights, key `method`): how ARQ picks row scales.
    public var scaleMethod: ScaleMethod?
    /// qat extension (Vitis AI's `percentage`): the percentile of `method: "percentile"`.
    public var percentage: Double?
    /// qat extension (Vitis AI's `datatype` of the weights and of the bias): float formats cast
    /// instead of quantizing. `biasDataType` applies to cast layers only (integer layers keep
    /// their bias on the accumulator grid).
    public var dataType: TensorDataType?
    public var biasDataType: TensorDataType?

    public init(algorithm: WeightAlgorithm? = nil, channelWise: Bool? = nil, dstType: QuantizedType? = nil,
                nonUniform: NUQParameters? = nil, asymmetric: Bool? = nil, weightCompressOnly: Bool? = nil,
                scaleType: ScaleType? = nil, roundMode: RoundMode? = nil, narrowRange: Bool? = nil,
                bias: BiasQuantization? = nil, scaleMethod: ScaleMethod? = nil, percentage: Double? = nil,
                dataType: TensorDataType? = nil, biasDataType: TensorDataType? = nil) {
        self.dataType = dataType
        self.biasDataType = biasDataType
        self.percentage = percentage
        self.bias = bias
        self.scaleMethod = scaleMethod
        self.algorithm = algorithm
        self.channelWise = channelWise
        self.dstType = dstType
        self.nonUniform = nonUniform
        self.asymmetric = asymmetric
        self.weightCompressOnly = weightCompressOnly
        self.scaleType = scaleType
        self.roundMode = roundMode
        self.narrowRange = narrowRange
    }

    /// AMCT's `num_steps` values.
    public static let nuqStepChoices = [16, 32]
    /// AMCT's `num_of_iteration` range.
    public static let nuqIterationRange = 0...5
}

/// One object holding `retrain_data_config` and `retrain_weight_config`: an AMCT layer entry,
/// the simple form's global config, or one of its overrides.
public struct QuantizerConfig: Equatable, Sendable {
    /// Where the object sits in the file ("conv1", "override_layer_types.linear"; "" for the
    /// simple form's global config, which lives at the top level). Used in messages.
    public var keyPath: String
    /// `retrain_enable`; only AMCT layer entries can set it (the simple form skips layers
    /// with `skip_layers` / `skip_layer_types` instead).
    public var isEnabled: Bool
    public var data: RetrainDataConfig
    /// Vitis AI's `input`: the data settings of layers that read the model input, instead of
    /// `data` (nil: they use `data`, as every other format does).
    public var modelInputData: RetrainDataConfig?
    public var weight: RetrainWeightConfig
    /// `dmq_balancer_param`: DMQ's migration strength α (AMCT PTQ layer entries, and the AMCT
    /// retrain form's layer entries as qat's extension, so a written plan keeps it).
    public var dmqStrength: Double?

    public init(keyPath: String, isEnabled: Bool = true,
                data: RetrainDataConfig = RetrainDataConfig(), weight: RetrainWeightConfig = RetrainWeightConfig(),
                dmqStrength: Double? = nil) {
        self.keyPath = keyPath
        self.isEnabled = isEnabled
        self.data = data
        self.weight = weight
        self.dmqStrength = dmqStrength
    }

    /// The key path of a key inside this object, e.g. "conv1.retrain_weight_config".
    public func keyPath(_ key: String) -> String { keyPath.isEmpty ? key : "\(keyPath).\(key)" }
}

/// The simple form's rules. Priority, most specific first: `override_layer_configs` and
/// `skip_layers` (a layer by name) > `override_layer_types` and `skip_layer_types` (a layer
/// type) > the global config. Naming the same layer (or type) in both a skip list and an
/// override is an error, so the order within a level never matters.
public struct SimpleRules: Equatable, Sendable {
    public var global: QuantizerConfig
    public var skipLayers: [String]
    public var skipLayerTypes: [LayerType]
    /// Vitis AI's `keep_first_last_layer_accuracy`: the model's first and last quantizable layers
    /// (in graph order) stay float, before any other rule.
    public var keepsFirstAndLastFloat = false
    public var typeOverrides: [LayerType: QuantizerConfig]
    public var layerOverrides: [String: QuantizerConfig]

    public init(global: QuantizerConfig = QuantizerConfig(keyPath: ""), skipLayers: [String] = [],
                skipLayerTypes: [LayerType] = [], typeOverrides: [LayerType: QuantizerConfig] = [:],
                layerOverrides: [String: QuantizerConfig] = [:]) {
        self.global = global
        self.skipLayers = skipLayers
        self.skipLayerTypes = skipLayerTypes
        self.typeOverrides = typeOverrides
        self.layerOverrides = layerOverrides
    }
}

/// Which of the two forms a file used, with its rules.
public enum LayerRules: Equatable, Sendable {
    /// AMCT's config.json: one entry per layer name.
    case perLayer([String: QuantizerConfig])
    /// The simple form.
    case simple(SimpleRules)
}

/// A retrain config in either form: read with `load`/`parse`, written with `jsonText` (the one
/// writer, RetrainConfigWriting.swift), resolved against a model with `resolve(for:)`.
public struct RetrainConfig: Equatable, Sendable {
    /// The file name used in messages.
    public var file: String
    /// `version`: always 1.
    public var version: Int
    /// `batch_num`: how many training batches calibration runs on (for layers without clip bounds).
    public var batchCount: Int
    public var rules: LayerRules
    /// The `calibration` section: every layer's default `act_algo` and method settings.
    public var calibration: CalibrationConfig
    /// The trainer's sections (`model`, `data`, `train`, `checkpoint`) as written: RunSettings
    /// reads them strictly from the file; here they are carried so a written config keeps them.
    public var runtimeSections: [String: JSONValue]
    /// The format the file was written in; messages use its key names.
    public var format: ConfigFormat
    /// AMCT PTQ's `do_fusion` and `skip_fusion_layers`, checked against the model when the
    /// config is resolved; nil for the retrain formats, which have no such keys.
    public var fusion: ConvBNFusion?
    /// Transforms of the float weights around calibration (Vitis AI's `include_cle`,
    /// `include_bias_corr`; `qat calibrate --cle --bias-correction` adds to them).
    public var ptqTransforms: Set<PTQTransform> = []
    /// Changes to the float model before quantizing it (Vitis AI's `convert_relu6_to_relu`).
    public var graphRewrites: Set<GraphRewrite> = []
    /// Settings the reader changed, one line each (Vitis AI's `target_device: "DPU"` rules); the
    /// commands print them and `qat plan` lists them.
    public var notes: [String] = []
    /// AMCT's `enable_auto_nuq`: NUQ for the uniform layers whose weights dominate their traffic (AutoNUQ.swift).
    public var enablesAutoNonUniform = false
    /// AMCT's `joint_quant: true`: the calibration of the grid every eltwise add's two operands
    /// share (JointQuant.swift); nil keeps adds in float. The retrain forms write it as
    /// `joint_quant_calibration` (qat's record of a plan).
    public var jointQuantCalibration: CalibrationConfig?
    /// AMCT's `tensor_quantize`: quantizers on max pool inputs (TensorQuantizer.swift). The
    /// retrain forms write them as `tensor_quantize_calibration` {layer: calibration}.
    public var tensorQuantize: [TensorQuantizeEntry] = []
    /// Vitis AI's `keep_add_layer_accuracy`: every add runs in float, its inputs as their
    /// producers leave them and its sum quantized only where a quantized layer reads it (what
    /// qat does with an add unless `joint_quant` says otherwise); the plan names the rule.
    public var keepsAddsFloat = false

    public init(file: String, version: Int = 1, batchCount: Int = 1, rules: LayerRules,
                calibration: CalibrationConfig = CalibrationConfig(), runtimeSections: [String: JSONValue] = [:],
                format: ConfigFormat? = nil, fusion: ConvBNFusion? = nil) {
        self.file = file
        self.version = version
        self.batchCount = batchCount
        self.rules = rules
        self.calibration = calibration
        self.runtimeSections = runtimeSections
        self.format = format ?? Self.format(of: rules)
        self.fusion = fusion
    }

    /// The retrain format that writes `rules`.
    static func format(of rules: LayerRules) -> ConfigFormat {
        switch rules {
        case .perLayer(let entries): return entries.isEmpty ? .floatTraining : .amctRetrain
        case .simple: return .simple
        }
    }

    /// Top-level keys that hold the runtime's settings; they are never layer names.
    public static let reservedSections = ["model", "data", "train", "checkpoint", "calibration"]

    /// The reserved sections the trainer reads (all but `calibration`, which the plan resolves).
    public static let trainerSections = ["model", "data", "train", "checkpoint"]

    /// Top-level keys that mark a file as the simple form.
    public static let simpleFormKeys = ["retrain_data_config", "retrain_weight_config", "skip_layers",
                                        "skip_layer_types", "override_layer_types", "override_layer_configs"]

    /// The layer types QAT quantizes, as named in configs.
    static var quantizableTypeNames: [String] { LayerType.allCases.filter(\.isQuantizable).map(\.name) }
}

// MARK: - Parsing

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
                tensorQuantize.append(TensorQuantizeEntry(keyPath: entry.path, layerName: name, inputIndex: 0,
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

extension RetrainConfig {
    /// False for a config without any layer rules (a float training config such as Configs/float.json).
    /// A PTQ config always asks for quantization: with no layer entries it quantizes nothing,
    /// which resolving reports.
    public var hasQuantizationRules: Bool {
        if case let .perLayer(entries) = rules, entries.isEmpty, format != .amctPTQ { return false }
        return true
    }
}
