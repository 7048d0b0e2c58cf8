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
    /// Lower clip bound pinned at 0 (ALGORITHMS.md §1).
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

    public init(activationAlgorithm: ActivationAlgorithm = .ulqQuantize, clipMax: Float? = nil, clipMin: Float? = nil,
                fixedMin: Bool, fixedMinIsDefault: Bool = true, activationType: QuantizedType = .int8,
                weightAlgorithm: WeightAlgorithm = .arqRetrain, channelWise: Bool, weightType: QuantizedType = .int8,
                learnClip: Bool = true, calibration: CalibrationMethod = .default) {
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
    public var needsCalibration: Bool { clipMax == nil }
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

    public init(modelName: String, configFile: String, batchCount: Int, layers: [LayerPlan], warnings: [String] = []) {
        self.modelName = modelName
        self.configFile = configFile
        self.batchCount = batchCount
        self.layers = layers
        self.warnings = warnings
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
    public func resolve(for model: ModelSpec) throws -> QuantizationPlan {
        var warnings: [String] = []
        var layers: [LayerPlan] = []
        switch rules {
        case .perLayer(let entries):
            try checkEntriesExist(entries, in: model)
            for (index, layer) in model.layers.enumerated() {
                let rule: String
                var quantizer: QuantizerSettings?
                if !layer.kind.isQuantizable {
                    rule = "not quantizable (\(layer.kind.rawValue))"
                } else if let entry = entries[layer.name] {
                    rule = entry.isEnabled ? "layer entry \(layer.name)" : "layer entry \(layer.name) (retrain_enable false)"
                    if entry.isEnabled {
                        quantizer = try self.quantizer(from: [entry], layerAt: index, of: model, warnings: &warnings)
                    }
                } else {
                    rule = "not listed"
                }
                layers.append(LayerPlan(name: layer.name, kind: layer.kind, rule: rule, quantizer: quantizer))
            }
        case .simple(let simple):
            warnings += try checkSimpleRules(simple, against: model)
            for index in model.layers.indices {
                layers.append(try plan(layerAt: index, of: model, simple: simple, warnings: &warnings))
            }
        }
        guard layers.contains(where: \.isQuantized) else {
            let names = model.layers.filter(\.kind.isQuantizable).map(\.name)
            throw InputError(file: file, message: "no layer is quantized: the config disables or leaves out every "
                + "conv2d/linear layer of model \(model.name) (\(names.isEmpty ? "it has none" : names.joined(separator: ", "))); "
                + "enable at least one, or train in float without a retrain config")
        }
        return QuantizationPlan(modelName: model.name, configFile: file, batchCount: batchCount,
                                layers: layers, warnings: warnings)
    }

    /// AMCT form: every entry must name a quantizable layer of the model.
    private func checkEntriesExist(_ entries: [String: QuantizerConfig], in model: ModelSpec) throws {
        for name in entries.keys.sorted() {
            guard let layer = model.layers.first(where: { $0.name == name }) else {
                throw InputError(file: file, keyPath: name,
                                 message: "no layer named \"\(name)\" in model \(model.name) (quantizable layers: \(sampleNames(of: model)))")
            }
            guard layer.kind.isQuantizable else {
                throw InputError(file: file, keyPath: name, message: "\(name) is a \(layer.kind.rawValue) layer, which cannot be quantized "
                    + "(only \(RetrainConfig.quantizableTypeNames.joined(separator: ", ")) layers can; quantizable layers: \(sampleNames(of: model)))")
            }
        }
    }

    /// Simple form: entries that match nothing are warnings; overrides of layers that cannot be
    /// quantized are errors (their settings could never apply).
    private func checkSimpleRules(_ simple: SimpleRules, against model: ModelSpec) throws -> [String] {
        var warnings: [String] = []
        let kindsInModel = Set(model.layers.map(\.kind))
        func noLayer(_ name: String) -> String {
            "no layer named \"\(name)\" in model \(model.name) (quantizable layers: \(sampleNames(of: model)))"
        }
        for (index, name) in simple.skipLayers.enumerated() {
            if let layer = model.layers.first(where: { $0.name == name }) {
                if !layer.kind.isQuantizable {
                    warnings.append("skip_layers[\(index)]: \(name) is a \(layer.kind.rawValue) layer, never quantized anyway; the entry has no effect")
                }
            } else {
                warnings.append("skip_layers[\(index)]: \(noLayer(name)); the entry has no effect")
            }
        }
        for (index, kind) in simple.skipLayerTypes.enumerated() where !kindsInModel.contains(kind) {
            warnings.append("skip_layer_types[\(index)]: model \(model.name) has no \(kind.rawValue) layer; the entry has no effect")
        }
        for kind in simple.typeOverrides.keys.sorted(by: { $0.rawValue < $1.rawValue }) where !kindsInModel.contains(kind) {
            warnings.append("override_layer_types.\(kind.rawValue): model \(model.name) has no \(kind.rawValue) layer; the entry has no effect")
        }
        for name in simple.layerOverrides.keys.sorted() {
            guard let layer = model.layers.first(where: { $0.name == name }) else {
                warnings.append("override_layer_configs.\(name): \(noLayer(name)); the entry has no effect")
                continue
            }
            guard layer.kind.isQuantizable else {
                throw InputError(file: file, keyPath: "override_layer_configs.\(name)",
                                 message: "\(name) is a \(layer.kind.rawValue) layer, which cannot be quantized "
                                    + "(quantizable layers: \(sampleNames(of: model)))")
            }
        }
        return warnings
    }

    /// Simple form, one layer: layer rules > type rules > global.
    private func plan(layerAt index: Int, of model: ModelSpec, simple: SimpleRules,
                      warnings: inout [String]) throws -> LayerPlan {
        let layer = model.layers[index]
        func decided(_ rule: String, _ configs: [QuantizerConfig]? = nil) throws -> LayerPlan {
            guard let configs else { return LayerPlan(name: layer.name, kind: layer.kind, rule: rule) }
            return LayerPlan(name: layer.name, kind: layer.kind, rule: rule,
                             quantizer: try quantizer(from: configs, layerAt: index, of: model, warnings: &warnings))
        }
        guard layer.kind.isQuantizable else { return try decided("not quantizable (\(layer.kind.rawValue))") }
        let typeOverride = simple.typeOverrides[layer.kind]
        if let layerOverride = simple.layerOverrides[layer.name] {
            // A layer override refines its type's override and the global config, key by key.
            return try decided("override_layer_configs.\(layer.name)", [simple.global] + [typeOverride, layerOverride].compactMap { $0 })
        }
        if simple.skipLayers.contains(layer.name) { return try decided("skip_layers") }
        if simple.skipLayerTypes.contains(layer.kind) { return try decided("skip_layer_types") }
        if let typeOverride {
            return try decided("override_layer_types.\(layer.kind.rawValue)", [simple.global, typeOverride])
        }
        return try decided("global", [simple.global])
    }

    /// Final settings of one quantized layer: each key comes from the most specific config that
    /// gives it (`configs` run from least to most specific), else from the default.
    private func quantizer(from configs: [QuantizerConfig], layerAt index: Int, of model: ModelSpec,
                           warnings: inout [String]) throws -> QuantizerSettings {
        let layer = model.layers[index]
        /// The most specific value of a key, with the config that gave it.
        func pick<T>(_ value: (QuantizerConfig) -> T?) -> (value: T, source: QuantizerConfig)? {
            for config in configs.reversed() {
                if let v = value(config) { return (v, config) }
            }
            return nil
        }
        // The two clip bounds travel together: the parser guarantees both or neither.
        let clip = pick { config in config.data.clipMax.map { ($0, config.data.clipMin!) } }
        let fixedMin = pick { $0.data.fixedMin }
        let channelWise = pick { $0.weight.channelWise }
        let calibrationChain: [(config: CalibrationConfig, keyPath: String)] = [(calibration, "calibration")]
            + configs.map { ($0.data.calibration, $0.keyPath("retrain_data_config")) }
        let result = QuantizerSettings(
            activationAlgorithm: pick { $0.data.algorithm }?.value ?? .ulqQuantize,
            clipMax: clip?.value.0, clipMin: clip?.value.1,
            fixedMin: fixedMin?.value ?? model.inputComesFromReLU(layerAt: index),
            fixedMinIsDefault: fixedMin == nil,
            activationType: pick { $0.data.dstType }?.value ?? .int8,
            weightAlgorithm: pick { $0.weight.algorithm }?.value ?? .arqRetrain,
            channelWise: channelWise?.value ?? (layer.kind == .conv2d),
            weightType: pick { $0.weight.dstType }?.value ?? .int8,
            learnClip: pick { $0.data.learnClip }?.value ?? true,
            calibration: try CalibrationConfig.resolve(calibrationChain, layer: layer.name, file: file, warnings: &warnings))

        if layer.kind == .linear && result.channelWise, let source = channelWise?.source {
            // This runtime gives linear weights one scale per tensor only (see docs/CONFIG.md).
            let hint = source.keyPath.isEmpty
                ? "; the global retrain_weight_config applies to every layer, so set channel_wise false for linear "
                    + "layers under override_layer_types.linear.retrain_weight_config"
                : ""
            throw InputError(file: file, keyPath: source.keyPath("retrain_weight_config") + ".channel_wise",
                             message: "channel_wise true is not allowed on linear layer \(layer.name): linear weights use one "
                                + "scale per tensor (allowed: false)\(hint)")
        }
        if result.fixedMin, let clipMin = result.clipMin {
            warnings.append("\(layer.name): clip_min \(clipMin) is ignored because fixed_min is true (the lower bound stays 0)")
        }
        return result
    }

    /// A few quantizable layer names of `model` for error messages.
    private func sampleNames(of model: ModelSpec) -> String {
        let names = model.layers.filter(\.kind.isQuantizable).map(\.name)
        let shown = names.prefix(6).joined(separator: ", ")
        return names.count > 6 ? shown + ", …" : (names.isEmpty ? "none" : shown)
    }
}

extension ModelSpec {
    /// The fixed_min default: true exactly when the layer's input is the output of a relu layer.
    /// Only the direct producer counts: relu → maxpool → conv gives false, even though the data
    /// is still non-negative (ALGORITHMS.md §1 says "straight from a ReLU").
    /// True when the layer reads the model input itself (the normalised image).
    func readsModelInput(layerAt index: Int) -> Bool {
        let layer = layers[index]
        return layer.inputs.first == "input" || (layer.inputs.isEmpty && index == 0)
    }

    func inputComesFromReLU(layerAt index: Int) -> Bool {
        // Pooling and flatten keep a ReLU's output non-negative, so they are looked through:
        // LeNet's conv2 (after relu → maxpool) then gets fixed_min and its full 8-bit range.
        let signPreserving: Set<LayerKind> = [.maxpool2d, .avgpool2d, .flatten]
        var current = index
        while true {
            let layer = layers[current]
            let producerIndex: Int?
            if let source = layer.inputs.first {
                producerIndex = layers.firstIndex { $0.name == source }  // nil for "input"
            } else {
                producerIndex = current > 0 ? current - 1 : nil
            }
            guard let producerIndex else { return false }
            let producer = layers[producerIndex]
            if producer.kind == .relu { return true }
            guard signPreserving.contains(producer.kind) else { return false }
            current = producerIndex
        }
    }
}

// MARK: - Display

extension QuantizationPlan {
    /// The plan as a fixed-width table, one row per layer, followed by the warnings.
    public func table() -> String {
        var rows = [["layer", "type", "quantized", "width", "activation", "fixed_min", "weights", "rule"]]
        for layer in layers {
            guard let q = layer.quantizer else {
                rows.append([layer.name, layer.kind.rawValue, "no", "float", "-", "-", "-", layer.rule])
                continue
            }
            let width = (q.activationType == q.weightType
                ? q.activationType.rawValue : "\(q.activationType.rawValue)/\(q.weightType.rawValue)")
                + (q.activationType == .int16 ? " (float on INT8 engine)" : "")
            let bounds = (q.clipMax.map { "clip [\(q.clipMin!), \($0)]" } ?? q.calibration.name.uppercased())
                + (q.learnClip ? "" : ", frozen")
            let fixedMin = q.fixedMin
                ? (q.fixedMinIsDefault ? "true (relu input)" : "true")
                : (q.fixedMinIsDefault ? "false (default)" : "false")
            let weights = "\(q.weightAlgorithm.rawValue), \(q.channelWise ? "channel_wise" : "per-tensor")"
            rows.append([layer.name, layer.kind.rawValue, "yes", width, "\(q.activationAlgorithm.rawValue), \(bounds)",
                         fixedMin, weights, layer.rule])
        }
        // Pad every column but the last to its widest cell.
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max()! }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                column == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[column] - cell.count)
            }.joined(separator: "  ")
        }
        var text = "Quantization plan for model \(modelName) (config \(configFile), batch_num \(batchCount)): "
            + "\(quantizedLayers.count) of \(layers.count) layers quantized\n\n"
        text += line(rows[0]) + "\n"
        text += line(widths.map { String(repeating: "-", count: $0) }) + "\n"
        for row in rows.dropFirst() { text += line(row) + "\n" }
        if quantizedLayers.contains(where: { $0.quantizer?.activationType == .int16 }) {
            text += "\nINT16 layers deploy as float layers that apply their 16-bit input grid and INT8 weight codes "
                + "exactly as fake quant does (docs/DEPLOY-FORMAT.md); the INT8 engine has no int16 kernels.\n"
        }
        if !warnings.isEmpty {
            text += "\nwarnings:\n" + warnings.map { "  - \($0)\n" }.joined()
        }
        return text
    }
}

extension QuantizationPlan {
    /// The named layers grouped by calibration method in plan order, e.g. "conv1, fc1 with IFMR
    /// and conv2 with HFMG".
    public func describeCalibration(of names: [String]) -> String {
        var groups: [(method: String, layers: [String])] = []
        for name in names {
            let method = layer(named: name)?.quantizer?.calibration.name.uppercased() ?? "no quantizer"
            if let index = groups.firstIndex(where: { $0.method == method }) {
                groups[index].layers.append(name)
            } else {
                groups.append((method, [name]))
            }
        }
        return groups.map { "\($0.layers.joined(separator: ", ")) with \($0.method)" }.joined(separator: " and ")
    }
}
