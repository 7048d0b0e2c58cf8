import Foundation
import QATCore
import QATData
import QATDeploy
import QATIO
import QATModel
import QATTrain

// Per-layer quantization sensitivity (`qat sensitivity`, docs/DEBUGGING.md): for every quantized
// layer of a plan, evaluate the model with only that layer quantized, and with every layer but
// that one quantized, against the float model.

/// Loss, accuracy and output distance of one model variant on the evaluation subset.
public struct VariantEvaluation: Equatable, Sendable, Codable {
    public var loss: Double
    public var accuracy: Double
    /// Mean |logits − float logits| over every logit of every sample (0 for the float model).
    public var outputL1: Double

    enum CodingKeys: String, CodingKey { case loss, accuracy, outputL1 = "output_l1" }
}

/// One quantized layer's sensitivity.
public struct SensitivityRow: Equatable, Sendable, Codable {
    public var layer: String
    public var kind: String
    /// Activation width in the plan ("INT8", "INT16"; "float" for a weight-only layer).
    public var width: String
    /// Only this layer quantized, every other layer float.
    public var single: VariantEvaluation
    /// Every quantized layer of the plan except this one.
    public var leaveOut: VariantEvaluation
    /// single.loss − float.loss: what quantizing this layer alone costs.
    public var singleLossIncrease: Double
    /// float.accuracy − single.accuracy.
    public var singleAccuracyDrop: Double
    /// allQuantized.loss − leaveOut.loss: what keeping this layer float recovers.
    public var leaveOutLossGain: Double
    /// leaveOut.accuracy − allQuantized.accuracy.
    public var leaveOutAccuracyGain: Double

    enum CodingKeys: String, CodingKey {
        case layer, kind, width, single, leaveOut = "leave_out", singleLossIncrease = "single_loss_increase"
        case singleAccuracyDrop = "single_accuracy_drop", leaveOutLossGain = "leave_out_loss_gain"
        case leaveOutAccuracyGain = "leave_out_accuracy_gain"
    }
}

/// What the layers are ranked by (descending: the most sensitive layer first).
public enum SensitivityRanking: String, CaseIterable, Sendable, Codable {
    /// Loss increase with only the layer quantized (the default).
    case singleLoss = "single-loss"
    case singleAccuracy = "single-accuracy"
    /// Loss recovered by keeping only this layer float.
    case leaveOutLoss = "leave-out-loss"
    case leaveOutAccuracy = "leave-out-accuracy"
    /// Mean |logits − float logits| with only the layer quantized (Horizon's L1 sensitivity).
    case outputL1 = "output-l1"

    func key(_ row: SensitivityRow) -> Double {
        switch self {
        case .singleLoss: return row.singleLossIncrease
        case .singleAccuracy: return row.singleAccuracyDrop
        case .leaveOutLoss: return row.leaveOutLossGain
        case .leaveOutAccuracy: return row.leaveOutAccuracyGain
        case .outputL1: return row.single.outputL1
        }
    }
}

public struct SensitivityReport: Equatable, Sendable, Codable {
    public var model: String
    /// Where the clip bounds of every variant came from.
    public var bounds: String
    public var evaluationSamples: Int
    public var rankedBy: SensitivityRanking
    public var float: VariantEvaluation
    public var allQuantized: VariantEvaluation
    /// Ranked, most sensitive first.
    public var rows: [SensitivityRow]

    enum CodingKeys: String, CodingKey {
        case model, bounds, evaluationSamples = "evaluation_samples", rankedBy = "ranked_by", float
        case allQuantized = "all_quantized", rows = "layers"
    }

    /// The same measurements ranked another way. Stable: equal keys keep their current order
    /// (model order for a fresh report); NaN (a diverged variant) ranks first.
    public func ranked(by ranking: SensitivityRanking) -> SensitivityReport {
        let order = rows.indices.sorted { i, j in
            let (a, b) = (ranking.key(rows[i]), ranking.key(rows[j]))
            if a.isNaN != b.isNaN { return a.isNaN }
            return a != b && !a.isNaN ? a > b : i < j
        }
        var report = self
        report.rankedBy = ranking
        report.rows = order.map { rows[$0] }
        return report
    }

    public func jsonString() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// The ranking as a table of the first `top` layers.
    public func table(top: Int? = nil) -> String {
        var text = "Quantization sensitivity of model \(model) on \(evaluationSamples) evaluation samples; bounds: \(bounds)\n"
        text += String(format: "float: loss %.4f  acc %.2f%%   all quantized: loss %.4f  acc %.2f%%\n\n",
                       float.loss, 100 * float.accuracy, allQuantized.loss, 100 * allQuantized.accuracy)
        var rows = [["rank", "layer", "type", "width", "only this: Δloss", "Δacc", "out L1", "all but this: loss gain", "acc gain"]]
        for (i, r) in self.rows.prefix(top ?? self.rows.count).enumerated() {
            rows.append(["\(i + 1)", r.layer, r.kind, r.width, String(format: "%+.4f", r.singleLossIncrease),
                         String(format: "%+.2f%%", -100 * r.singleAccuracyDrop + 0), formatNumber(r.single.outputL1),
                         String(format: "%+.4f", r.leaveOutLossGain), String(format: "%+.2f%%", 100 * r.leaveOutAccuracyGain + 0)])
        }
        text += textTable(rows, leftAligned: [1, 2, 3]) + "\n"
        text += "\nranked by \(rankedBy.rawValue) (descending). \"only this\": the layer quantized alone, Δ against float; "
            + "\"all but this\": every other layer quantized, gain against all quantized.\n"
        return text
    }
}

/// Builds the model variants and evaluates them.
public final class SensitivityAnalysis {
    public let spec: ModelSpec
    /// The layer rules whose plan is studied: the given config, or a QAT checkpoint's own record.
    public let config: RetrainConfig
    /// The plan whose quantized layers are studied.
    public let plan: QuantizationPlan
    /// "checkpoint (trained clip bounds, no calibration)" or "… with IFMR on N batch(es) …".
    public let boundsDescription: String
    /// A model with exactly the named layers quantized (may be the same instance each time).
    private let variant: (Set<String>) throws -> Model

    init(spec: ModelSpec, config: RetrainConfig, plan: QuantizationPlan, boundsDescription: String,
         variant: @escaping (Set<String>) throws -> Model) {
        self.spec = spec
        self.config = config
        self.plan = plan
        self.boundsDescription = boundsDescription
        self.variant = variant
    }

    /// A QAT checkpoint: its quantizers keep their trained clip bounds; variants switch them on
    /// and off (no calibration, `config` is not used). A float checkpoint: `config`'s plan, and
    /// every variant is calibrated by each layer's method (IFMR unless the config says otherwise)
    /// on the same `calibration` batches (layers with configured clip bounds keep them).
    public static func load(checkpoint file: String, config: RetrainConfig?,
                            calibration: () throws -> [Tensor]) throws -> SensitivityAnalysis {
        let (model, checkpoint) = try Model.load(checkpoint: file)
        if model.isQuantized, let stored = try checkpoint.quantizationConfig(file: file) {
            let plan = try stored.resolve(for: model.spec)
            var quantizers: [String: any LayerQuantizer] = [:]
            for layer in model.layers {
                if let weighted = layer as? WeightedLayer, let q = weighted.quantizer { quantizers[layer.name] = q }
            }
            return SensitivityAnalysis(spec: model.spec, config: stored, plan: plan,
                                       boundsDescription: "the checkpoint's trained clip bounds (no calibration)") { enabled in
                for layer in model.layers {
                    guard let weighted = layer as? WeightedLayer else { continue }
                    weighted.quantizer = enabled.contains(layer.name) ? quantizers[layer.name] : nil
                }
                return model
            }
        }
        guard let config else {
            throw RunError("\(file) is a float checkpoint: give --config with the retrain config whose layers to study")
        }
        let plan = try config.resolve(for: model.spec)
        let batches = try calibration()
        let calibrated = plan.quantizedLayers.filter { $0.quantizer!.needsCalibration }.map(\.name)
        let configured = plan.quantizedLayers.filter { !$0.quantizer!.needsCalibration }.map(\.name)
        var description = "\(calibrated.isEmpty ? "no layer calibrated" : plan.describeCalibration(of: calibrated)) "
            + "on \(batches.count) calibration batch(es), the same for every variant"
        if !configured.isEmpty { description += "; configured clip bounds kept for \(configured.joined(separator: ", "))" }
        let spec = model.spec
        return SensitivityAnalysis(spec: spec, config: config, plan: plan, boundsDescription: description) { enabled in
            var restricted = plan
            for i in restricted.layers.indices where !enabled.contains(restricted.layers[i].name) {
                restricted.layers[i].quantizer = nil
            }
            let variant = try Model(spec: spec)
            try variant.load(checkpoint, file: file)
            variant.applyQuantization(restricted)
            try variant.calibrate(on: batches)
            return variant
        }
    }

    /// `qat sensitivity`'s subject: a QAT checkpoint is studied with its own quantizers (a config
    /// then gives only the runtime sections, and `note` says so); a float checkpoint with the
    /// config's plan, every variant calibrated on the subject's calibration batches.
    public static func load(_ subject: DebugSubject, note: (String) -> Void = { _ in }) throws -> SensitivityAnalysis {
        if let configFile = subject.configFile, subject.config?.hasQuantizationRules == false, !subject.isQAT {
            throw RunError("\(configFile): the config has no layer rules, so no layer is quantized to study")
        }
        if let line = subject.ignoredConfigNote(what: "studied") { note(line + " (its runtime sections still apply)") }
        return try load(checkpoint: subject.checkpoint, config: subject.config, calibration: subject.calibrationBatches)
    }

    /// Evaluates the float model, the fully quantized model and two variants per quantized layer
    /// on `evaluation` (in order, `batchSize` at a time). `progress` gets a line per variant.
    public func run(evaluation: Dataset, batchSize: Int = 256, ranking: SensitivityRanking = .singleLoss,
                    progress: (String) -> Void = { _ in }) throws -> SensitivityReport {
        let layers = plan.quantizedLayers
        var reference: [[Float]] = []
        let float = evaluate(try variant([]), on: evaluation, batchSize: batchSize, reference: &reference, recordReference: true)
        progress(String(format: "float: loss %.4f acc %.2f%%", float.loss, 100 * float.accuracy))
        let all = evaluate(try variant(Set(layers.map(\.name))), on: evaluation, batchSize: batchSize, reference: &reference)
        progress(String(format: "all quantized: loss %.4f acc %.2f%%", all.loss, 100 * all.accuracy))
        var rows: [SensitivityRow] = []
        for layer in layers {
            let single = evaluate(try variant([layer.name]), on: evaluation, batchSize: batchSize, reference: &reference)
            let others = Set(layers.map(\.name)).subtracting([layer.name])
            let leaveOut = evaluate(try variant(others), on: evaluation, batchSize: batchSize, reference: &reference)
            progress(String(format: "%@: only this %.2f%%, all but this %.2f%%", layer.name, 100 * single.accuracy, 100 * leaveOut.accuracy))
            rows.append(SensitivityRow(layer: layer.name, kind: layer.kind.typeName, width: layer.quantizer!.floatCast?.summary
                                           ?? (layer.quantizer!.weightCompressOnly ? "float" : layer.quantizer!.activationType.rawValue),
                                       single: single, leaveOut: leaveOut,
                                       singleLossIncrease: single.loss - float.loss, singleAccuracyDrop: float.accuracy - single.accuracy,
                                       leaveOutLossGain: all.loss - leaveOut.loss, leaveOutAccuracyGain: leaveOut.accuracy - all.accuracy))
        }
        return SensitivityReport(model: spec.name, bounds: boundsDescription, evaluationSamples: evaluation.count,
                                 rankedBy: ranking, float: float, allQuantized: all, rows: rows).ranked(by: ranking)
    }

    private func evaluate(_ model: Model, on data: Dataset, batchSize: Int, reference: inout [[Float]],
                          recordReference: Bool = false) -> VariantEvaluation {
        var l1 = 0.0, logitCount = 0
        let result = Evaluator.evaluate(model, on: data, batchSize: batchSize) { batch, logits in
            if recordReference {
                reference.append(logits.storage)
            } else {
                for (u, v) in zip(logits.storage, reference[batch.index]) { l1 += Double(abs(u - v)) }
            }
            logitCount += logits.count
        }
        return VariantEvaluation(loss: result.loss, accuracy: result.accuracy, outputL1: l1 / Double(max(logitCount, 1)))
    }
}

// MARK: - Writing a fixed config

/// What `--write-config` does to the top-k layers.
public enum SensitivityAction: String, CaseIterable, Sendable {
    /// Keep the layer float (`retrain_enable: false`).
    case skip
    /// Quantize the layer's input at 16 bits (`dst_type: "INT16"`).
    case int16
}

extension RetrainConfig {
    /// This config with `action` applied to `layers` (layers it quantizes), in the same form and
    /// otherwise unchanged: the AMCT form turns the layer's entry off or sets its dst_type; the
    /// simple form adds the layer to skip_layers (dropping its override) or sets dst_type in its
    /// override_layer_configs entry.
    public func applying(_ action: SensitivityAction, to layers: Set<String>) -> RetrainConfig {
        var fixed = self
        switch rules {
        case .perLayer(var entries):
            for name in layers.sorted() {
                guard entries[name] != nil else { continue }
                switch action {
                case .skip: entries[name]!.isEnabled = false
                case .int16: entries[name]!.data.dstType = .int16
                }
            }
            fixed.rules = .perLayer(entries)
        case .simple(var simple):
            for name in layers.sorted() {
                switch action {
                case .skip:
                    simple.layerOverrides[name] = nil
                    if !simple.skipLayers.contains(name) { simple.skipLayers.append(name) }
                case .int16:
                    simple.layerOverrides[name, default: QuantizerConfig(keyPath: "override_layer_configs.\(name)")].data.dstType = .int16
                }
            }
            fixed.rules = .simple(simple)
        }
        return fixed
    }
}

extension SensitivityAnalysis {
    /// The fixed job `--write-config` writes: the studied layer rules with `action` applied to
    /// `layers`, with the trainer sections of `base` (model, data, train, checkpoint), so `qat
    /// train --config <file>` runs it directly. The checkpoint section never keeps `dir` or
    /// `output`, which point at the studied run's files: `runFolder` (if given) becomes `dir`.
    public func fixedConfig(applying action: SensitivityAction, to layers: Set<String>, base: RetrainConfig?,
                            runFolder: String?) -> RetrainConfig {
        // A proto-text simple config's symmetric layers take the signed range, a rule the JSON
        // forms cannot state: its resolved plan is written instead of its rules.
        let studied = config.format.symmetricActivationsAreSigned ? plan.explicitConfig() : config
        // A weight-only layer's input is float already, and a cast layer's is cast to a float
        // format: a 16-bit input grid would apply to neither.
        let weightOnly = Set(plan.quantizedLayers.filter { $0.quantizer!.weightCompressOnly || $0.quantizer!.floatCast != nil }.map(\.name))
        var fixed = studied.applying(action, to: action == .int16 ? layers.subtracting(weightOnly) : layers)
        fixed.runtimeSections = base?.runtimeSections ?? [:]
        var checkpoint = fixed.runtimeSections["checkpoint"] ?? .object([])
        checkpoint.set("dir", runFolder.map(JSONValue.init))
        checkpoint.set("output", nil)
        fixed.runtimeSections["checkpoint"] = checkpoint.members.isEmpty ? nil : checkpoint
        return fixed
    }
}
