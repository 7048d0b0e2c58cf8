import Foundation
import QATCore
import QATIO

/// Everything wrong between a checkpoint and a model, reported at once so one edit fixes it.
public struct CheckpointMismatchError: Error, CustomStringConvertible {
    public var file: String
    public var missing: [String] = []
    public var unexpected: [String] = []
    public var shapeMismatches: [String] = []

    public var description: String {
        var lines = ["\(file): checkpoint does not fit the model"]
        if !missing.isEmpty { lines.append("  missing from the checkpoint: \(missing.joined(separator: ", "))") }
        if !unexpected.isEmpty { lines.append("  not in the model: \(unexpected.joined(separator: ", "))") }
        for mismatch in shapeMismatches { lines.append("  shape mismatch: \(mismatch)") }
        return lines.joined(separator: "\n")
    }
}

extension Model {
    /// BatchNorm running statistics, named `<layer>.running_mean` and `<layer>.running_var`, and
    /// constants' values, `<layer>.value` (shape [1, ...shape]).
    public var buffers: [NamedTensor] {
        batchNormLayers.flatMap { layer in
            [NamedTensor(name: "\(layer.name).running_mean", tensor: layer.statistics.mean),
             NamedTensor(name: "\(layer.name).running_var", tensor: layer.statistics.variance)]
        } + constantLayers.map { NamedTensor(name: "\($0.name).value", tensor: $0.value) }
    }

    /// The model's parameters and buffers in a checkpoint container (nothing is written yet).
    public func checkpointFile(attributes: [String: String] = [:], counters: [String: Int64] = [:],
                               extra: [String: Tensor] = [:]) -> CheckpointFile {
        CheckpointFile(modelSpecJSON: spec.jsonString(), attributes: attributes, counters: counters,
                       parameters: parameters.map { NamedTensor(name: $0.name, tensor: $0.variable.value) },
                       buffers: buffers, extra: extra)
    }

    /// Copies parameters and buffers from `checkpoint` into the model. Strict: every model tensor
    /// must be present with its shape and nothing extra may be there, except names for which
    /// `mayBeMissing` is true (quantizer state when a QAT run starts from a float checkpoint).
    public func load(_ checkpoint: CheckpointFile, file: String,
                     mayBeMissing: (String) -> Bool = { _ in false }) throws {
        var mismatch = CheckpointMismatchError(file: file)
        let stored = Dictionary(checkpoint.parameters.map { ($0.name, $0.tensor) } + checkpoint.buffers.map { ($0.name, $0.tensor) },
                                uniquingKeysWith: { first, _ in first })
        var targets: [(name: String, shape: [Int], assign: (Tensor) -> Void)] = parameters.map { p in
            (p.name, p.variable.value.shape, { p.variable.value = $0 })
        }
        for layer in batchNormLayers {
            targets.append(("\(layer.name).running_mean", layer.statistics.mean.shape, { layer.statistics.mean = $0 }))
            targets.append(("\(layer.name).running_var", layer.statistics.variance.shape, { layer.statistics.variance = $0 }))
        }
        for layer in constantLayers {
            targets.append(("\(layer.name).value", layer.value.shape, { layer.value = $0 }))
        }
        let known = Set(targets.map(\.name))
        mismatch.unexpected = stored.keys.filter { !known.contains($0) }.sorted()
        var assignments: [() -> Void] = []
        for target in targets {
            guard let tensor = stored[target.name] else {
                if !mayBeMissing(target.name) { mismatch.missing.append(target.name) }
                continue
            }
            guard tensor.shape == target.shape else {
                mismatch.shapeMismatches.append("\(target.name) is \(tensor.shape) in the checkpoint, \(target.shape) in the model")
                continue
            }
            assignments.append { target.assign(tensor) }
        }
        guard mismatch.missing.isEmpty, mismatch.unexpected.isEmpty, mismatch.shapeMismatches.isEmpty else {
            throw mismatch
        }
        // Only touch the model once everything fits, so a failed load leaves it as it was.
        for assign in assignments { assign() }
    }

    /// Builds the model a checkpoint describes, with its fake quantizers if it is a QAT
    /// checkpoint (attribute "quantization", an explicit AMCT-form config), and loads it.
    public static func load(checkpoint file: String) throws -> (Model, CheckpointFile) {
        let checkpoint = try CheckpointFile.read(from: file)
        let spec = try ModelSpec.parse(JSONObject.parse(Data(checkpoint.modelSpecJSON.utf8), file: "\(file) (model_spec)"))
        let model = try Model(spec: spec)
        // Every command that loads a checkpoint (eval, deploy, verify, the debugging tools) needs a classifier.
        try model.graph.requireClassifier(file: "\(file) (model_spec)")
        if let config = try checkpoint.quantizationConfig(file: file) {
            model.applyQuantization(try config.resolve(for: spec))
        }
        try model.load(checkpoint, file: file)
        try model.loadQuantizerState(checkpoint.extra, file: file)
        return (model, checkpoint)
    }
}

extension CheckpointFile {
    /// The root attribute holding a QAT run's resolved plan, written by `RetrainConfig.jsonText`
    /// from `QuantizationPlan.explicitConfig()` (docs/CHECKPOINT.md).
    public static let quantizationAttribute = "quantization"

    /// The plan a QAT checkpoint recorded, as the explicit AMCT-form config it was written as;
    /// nil for a float checkpoint. The one place that reads the attribute back.
    public func quantizationConfig(file: String) throws -> RetrainConfig? {
        guard let text = attributes[Self.quantizationAttribute] else { return nil }
        return try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "\(file) (\(Self.quantizationAttribute))"))
    }
}

extension CheckpointMismatchError: UserFacingError {}
