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
// forms cannot be mixed. This file holds the config's types; RetrainConfigParsing.swift reads and
// checks what can be checked without a model, RetrainConfigWriting.swift writes configs back, and
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
    /// share (TensorQuantizer.swift); nil keeps adds in float. The retrain forms write it as
    /// `joint_quant_calibration` (qat's record of a plan).
    public var jointQuantCalibration: CalibrationConfig?
    /// AMCT's `tensor_quantize`: quantizers on max pool inputs and on one input of an add
    /// (TensorQuantizer.swift). The retrain forms write them as `tensor_quantize_calibration`
    /// {layer: calibration, with an add's `input_index` when not 0}.
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

extension RetrainConfig {
    /// False for a config without any layer rules (a float training config such as Configs/float.json).
    /// A PTQ config always asks for quantization: with no layer entries it quantizes nothing,
    /// which resolving reports.
    public var hasQuantizationRules: Bool {
        if case let .perLayer(entries) = rules, entries.isEmpty, format != .amctPTQ { return false }
        return true
    }
}
