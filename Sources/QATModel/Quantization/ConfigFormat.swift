import Foundation
import QATIO

// The front door of quantization configs (docs/CONFIG.md "Config formats"): every command that
// reads a config asks `ConfigFormat.detect` which format a file is in, by its keys, and
// `RetrainConfig.parse` reads it in that format. A new format (AMCT's proto-text simple config,
// Vitis AI's JSON) is one case here, its marker keys, and its reader.

/// A format of quantization config that qat reads.
public enum ConfigFormat: Equatable, Sendable, CaseIterable {
    /// AMCT's retrain config.json: one entry per layer with `retrain_enable`,
    /// `retrain_data_config` and `retrain_weight_config`.
    case amctRetrain
    /// qat's JSON rendering of AMCT's simple config: global `retrain_data_config`, `skip_layers`, …
    case simple
    /// AMCT's post-training quantization config.json: `activation_offset`, `do_fusion`, … and
    /// one entry per layer with `quant_enable`, `activation_quant_params` and `weight_quant_params`.
    case amctPTQ
    /// AMCT's simple config (quant.cfg) in protobuf text format: `common_config`,
    /// `override_layer_types`, … Told from JSON by its content (`isProtoText`), not by keys.
    case amctSimpleProtoText
    /// Vitis AI's vai_q_pytorch JSON: `overall_quantize_config`, `tensor_quantize_config`,
    /// `layer_quantize_config` and the global quantizer settings (`include_cle`, …).
    case vitis
    /// Only the trainer's sections (`model`, `data`, `train`, `checkpoint`) and perhaps
    /// `version`/`batch_num`: no layer rules, so training runs in float.
    case floatTraining

    /// How messages name the format ("read AMCT PTQ config.json").
    public var name: String {
        switch self {
        case .amctRetrain: return "AMCT retrain config.json"
        case .simple: return "qat simple config (AMCT's simple config in JSON)"
        case .amctPTQ: return "AMCT PTQ config.json"
        case .vitis: return "Vitis AI vai_q_pytorch JSON"
        case .floatTraining: return "float training config (no layer rules)"
        case .amctSimpleProtoText: return "AMCT simple config (proto text)"
        }
    }

    /// Top-level keys that only this format has.
    var topLevelMarkers: [String] {
        switch self {
        case .amctRetrain, .floatTraining, .amctSimpleProtoText: return []
        case .simple: return RetrainConfig.simpleFormKeys
        case .amctPTQ: return AMCTPTQConfig.topLevelKeys
        case .vitis: return VitisConfig.topLevelKeys
        }
    }

    /// Keys of a layer entry (a top-level object) that only this format has.
    var layerEntryMarkers: [String] {
        switch self {
        case .amctRetrain: return ["retrain_enable", "retrain_data_config", "retrain_weight_config"]
        case .simple, .floatTraining, .amctSimpleProtoText, .vitis: return []
        // dmq_balancer_param is not one: qat's AMCT retrain form takes it too, so a written plan keeps it.
        case .amctPTQ: return AMCTPTQConfig.layerEntryKeys.filter { $0 != "dmq_balancer_param" }
        }
    }

    /// The key that switches a layer entry off, e.g. "retrain_enable".
    public var enableKey: String {
        switch self {
        case .amctRetrain, .simple, .floatTraining, .amctSimpleProtoText: return "retrain_enable"
        case .amctPTQ: return "quant_enable"
        case .vitis: return "quantizable_data_type"
        }
    }

    /// The setting that keeps a layer float, as advice shows it: `"retrain_enable": false`, or
    /// for Vitis AI an empty `quantizable_data_type` in the layer's configuration.
    public var keepFloatSetting: String {
        switch self {
        case .amctRetrain, .simple, .floatTraining, .amctPTQ, .amctSimpleProtoText: return "\"\(enableKey)\": false"
        case .vitis: return "\"\(enableKey)\": []"
        }
    }

    /// The keys of the activation and weight settings inside a layer entry.
    var dataSectionKey: String {
        switch self {
        case .amctRetrain, .simple, .floatTraining: return "retrain_data_config"
        case .amctPTQ: return "activation_quant_params"
        case .amctSimpleProtoText: return "ifmr_quantize"
        case .vitis: return "tensor_quantize_config.activation"
        }
    }

    var weightSectionKey: String {
        switch self {
        case .amctRetrain, .simple, .floatTraining: return "retrain_weight_config"
        case .amctPTQ: return "weight_quant_params"
        case .amctSimpleProtoText: return "arq_quantize"
        case .vitis: return "tensor_quantize_config.weights"
        }
    }

    /// The key of per-channel weight scales inside the weight section.
    var channelWiseKey: String {
        switch self {
        case .amctRetrain, .simple, .floatTraining, .amctPTQ, .amctSimpleProtoText: return "channel_wise"
        case .vitis: return "per_channel"
        }
    }

    /// True when a layer whose IFMR is symmetric gets the signed range [−128·s, 127·s] unless the
    /// config pins fixed_min (AMCT's symmetric INT8), rather than fixed_min from the graph rule.
    /// The AMCT PTQ reader sets fixed_min itself; the proto-text reader cannot, since its
    /// `asymmetric` resolves key by key across four levels.
    public var symmetricActivationsAreSigned: Bool {
        switch self {
        case .amctRetrain, .simple, .amctPTQ, .floatTraining: return false
        case .amctSimpleProtoText: return true
        case .vitis: return false   // the Vitis reader sets fixed_min from `signed` itself
        }
    }

    /// The retrain forms' record of AMCT's `joint_quant: true` (qat's key): the calibration
    /// settings of the grid each eltwise add's operands share.
    public static let jointQuantKey = "joint_quant_calibration"
    /// The retrain forms' record of AMCT's `tensor_quantize` (qat's key): per max pool or add, the
    /// calibration settings of its input grid (and an add's `input_index` when not 0).
    public static let tensorQuantizeKey = "tensor_quantize_calibration"

    /// True when `data` is not JSON: its first character other than white space is not "{".
    /// AMCT's quant.cfg starts with a field name or a "#" comment; an empty file is left to the
    /// JSON reader, whose message says so.
    public static func isProtoText(_ data: Data) -> Bool {
        var bytes = data[...]
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        guard let first = bytes.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) else { return false }
        return first != UInt8(ascii: "{")
    }

    /// The format of `root`, from its keys: a top-level key only one format has, or a key inside
    /// a top-level object (a layer entry) only one format has. A file with marker keys of two
    /// formats is an error naming one key of each; a file with none is an AMCT retrain
    /// config.json when it has layer entries, else a float training config.
    public static func detect(_ root: JSONObject) throws -> ConfigFormat {
        var evidence: [(format: ConfigFormat, keyPath: String)] = []
        let sections = RetrainConfig.reservedSections + ["version", "batch_num", jointQuantKey, tensorQuantizeKey]
        var hasLayerEntries = false
        for key in root.values.keys.sorted() where !sections.contains(key) {
            if let format = allCases.first(where: { $0.topLevelMarkers.contains(key) }) {
                evidence.append((format, key))
                continue
            }
            hasLayerEntries = true
            guard let entry = root.values[key] as? [String: Any] else { continue }
            for inner in entry.keys.sorted() {
                if let format = allCases.first(where: { $0.layerEntryMarkers.contains(inner) }) {
                    evidence.append((format, "\(key).\(inner)"))
                }
            }
        }
        guard let first = evidence.first else { return hasLayerEntries ? .amctRetrain : .floatTraining }
        // The retrain form and the simple form are told apart (and their mix refused) by their
        // own reader, whose messages predate this door.
        let isRetrainFamily = { (format: ConfigFormat) in format == .amctRetrain || format == .simple }
        if let other = evidence.first(where: { $0.format != first.format && !(isRetrainFamily($0.format) && isRetrainFamily(first.format)) }) {
            throw InputError(file: root.file, keyPath: other.keyPath,
                             message: "\(other.keyPath) is a key of the \(other.format.name), but \(first.keyPath) is one of the "
                                + "\(first.format.name): a file holds one format (docs/CONFIG.md \"Config formats\")")
        }
        if evidence.contains(where: { $0.format == .simple }) { return .simple }
        return first.format
    }
}
