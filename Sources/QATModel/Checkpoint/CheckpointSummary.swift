import Foundation
import QATCore
import QATIO

extension CheckpointFile {
    /// The names a training run records its progress under (root attributes, counters and
    /// /state groups), so readers need not spell them.
    public enum RunKey {
        /// String attribute: "qat" or "float".
        public static let kind = "kind"
        public static let configHash = "config_hash"
        /// Counters: completed epochs and optimizer steps.
        public static let epoch = "epoch", step = "step"
        /// The optimizer's state tensors live under /state/optimizer/.
        public static let optimizerGroup = "optimizer/"
    }
}

/// What a checkpoint holds, read from the file alone, without building its model (`qat inspect`).
public struct CheckpointSummary {
    /// One layer's stored quantizer state; NaN where the file lacks an entry.
    public struct Quantizer {
        public var layer: String
        public var clipMin: Float
        public var clipMax: Float
        public var activationScale: Float
        public var activationOffset: Float
        public var weightScales: [Float]
        /// The grid options of the recorded plan that are not the default, e.g. "poweroftwo
        /// (requantize by shift)", "round_mode std_round", "narrow_range" (issue 12).
        public var gridOptions: [String] = []
    }

    public var spec: ModelSpec
    /// "qat" or "float" (a checkpoint that does not say is float).
    public var kind: String
    public var epoch: Int64
    public var step: Int64
    public var configHash: String?
    public var parameters: [NamedTensor]
    public var buffers: [NamedTensor]
    /// The layers with quantizer state, in model order.
    public var quantizers: [Quantizer]
    public var optimizerTensorCount: Int

    public init(checkpoint file: CheckpointFile, path: String) throws {
        spec = try ModelSpec.parse(JSONObject.parse(Data(file.modelSpecJSON.utf8), file: path))
        kind = file.attributes[CheckpointFile.RunKey.kind] ?? "float"
        epoch = file.counters[CheckpointFile.RunKey.epoch] ?? 0
        step = file.counters[CheckpointFile.RunKey.step] ?? 0
        configHash = file.attributes[CheckpointFile.RunKey.configHash]
        parameters = file.parameters
        buffers = file.buffers
        let quantized = QuantizerStateKey.layers(in: file.extra.keys)
        let values = Dictionary(file.parameters.map { ($0.name, $0.tensor) }, uniquingKeysWith: { first, _ in first })
        // The recorded plan, for the grid options; inspect still shows the rest if it does not resolve.
        let plan = (try? file.quantizationConfig(file: path)?.resolve(for: spec)) ?? nil
        quantizers = spec.layers.map(\.name).filter { quantized.contains($0) }.map { layer in
            func first(_ tensor: Tensor?) -> Float { tensor?.storage.first ?? .nan }
            var options: [String] = []
            if let q = plan?.layer(named: layer)?.quantizer {
                if q.activationScaleType == .powerOfTwo && q.weightScaleType == .powerOfTwo {
                    options.append("poweroftwo (requantize by shift when deployed, unless a BN folds in)")
                } else if q.activationScaleType == .powerOfTwo || q.weightScaleType == .powerOfTwo {
                    options.append("poweroftwo \(q.activationScaleType == .powerOfTwo ? "input" : "weight") scales")
                }
                for (tensor, mode) in [("input", q.activationRoundMode), ("weight", q.weightRoundMode)] where mode != .halfEven {
                    options.append("\(tensor) round_mode \(mode.rawValue)")
                }
                if q.activationNarrowRange { options.append("input narrow_range") }
                if q.weightNarrowRange { options.append("weight narrow_range") }
                if q.weightScaleMethod != .maxmin { options.append("weight \(q.weightScaleMethod.rawValue)") }
                if let bias = q.biasGrid { options.append("bias \(bias.summary)") }
            }
            return Quantizer(layer: layer,
                             clipMin: first(values["\(layer).\(FakeQuantizer.clipMinName)"]),
                             clipMax: first(values["\(layer).\(FakeQuantizer.clipMaxName)"]),
                             activationScale: first(file.extra[QuantizerStateKey.activationScale.key(layer: layer)]),
                             activationOffset: first(file.extra[QuantizerStateKey.activationOffset.key(layer: layer)]),
                             weightScales: file.extra[QuantizerStateKey.weightScales.key(layer: layer)]?.storage ?? [],
                             gridOptions: options)
        }
        optimizerTensorCount = file.extra.keys.filter { $0.hasPrefix(CheckpointFile.RunKey.optimizerGroup) }.count
    }

    /// Reads the checkpoint at `path`.
    public static func read(from path: String) throws -> CheckpointSummary {
        try CheckpointSummary(checkpoint: CheckpointFile.read(from: path), path: path)
    }
}
