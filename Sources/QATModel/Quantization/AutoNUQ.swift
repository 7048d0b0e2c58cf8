import QATCore
import QATIO

// AMCT's `enable_auto_nuq` (simple config, proto text): among the uniformly quantized layers
// that no override_layer_configs entry names and that are not weight-only, NUQ-quantize those
// whose weights are a bandwidth bottleneck (docs/ALGORITHMS.md §3.1.1).
//
// Without a hardware model, qat's measure is the roofline's: per image, a layer reads its
// weights once and its input and output activations once. A layer whose weight bytes exceed its
// activation bytes is dominated by weight traffic (its arithmetic intensity per weight byte is
// the lowest in the model: fully connected layers, 1×1 convs on small maps), so that is where
// shrinking the weights' levels to 16 (4-bit indices) pays; a layer moving more activation
// bytes than weight bytes gains little from it.

/// One layer `enable_auto_nuq` considered, with the bytes that decided it.
public struct AutoNUQDecision: Equatable, Sendable {
    public var layer: String
    /// Weight bytes at the weight dst_type (INT8: one byte per weight; the bias is not counted).
    public var weightBytes: Int
    /// Input plus output activation bytes of one image at the input dst_type.
    public var activationBytes: Int
    public var isPicked: Bool { weightBytes > activationBytes }
}

extension RetrainConfig {
    /// NUQ's settings for the layers `enable_auto_nuq` picks: AMCT's default of 16 levels, and
    /// qat's decision of 5 Lloyd passes, the most the manual allows: the levels are chosen once,
    /// so the passes cost nothing at run time, and each pass can only lower the squared error.
    static let autoNonUniform = NUQParameters(steps: 16, iterations: 5)

    /// Gives the picked layers of `layers` NUQ and returns every candidate's decision, in model order.
    func applyAutoNonUniform(to layers: inout [LayerPlan], simple: SimpleRules, model: ModelSpec) throws -> [AutoNUQDecision] {
        let graph = try ModelGraph(model, file: file)
        var decisions: [AutoNUQDecision] = []
        for index in layers.indices {
            guard let q = layers[index].quantizer, q.nonUniform == nil, !q.weightCompressOnly, q.floatCast == nil,
                  simple.layerOverrides[layers[index].name] == nil else { continue }
            let weights = weightCount(of: model.layers[index].kind)
            let activations = graph.inputShapes[index][0].reduce(1, *) + graph.outputShapes[index].reduce(1, *)
            let decision = AutoNUQDecision(layer: layers[index].name, weightBytes: weights * q.weightType.bitWidth / 8,
                                           activationBytes: activations * q.activationType.bitWidth / 8)
            decisions.append(decision)
            if decision.isPicked {
                layers[index].quantizer!.nonUniform = Self.autoNonUniform
                layers[index].rule += ", enable_auto_nuq"
            }
        }
        return decisions
    }

    private func weightCount(of kind: LayerKind) -> Int {
        switch kind {
        case .conv2d(let convolution): return convolution.weightShape.reduce(1, *)
        case .linear(let attributes): return attributes.inputFeatures * attributes.outputFeatures
        case .relu, .relu6, .maxpool2d, .avgpool2d, .flatten, .add, .clip, .leakyReLU, .sigmoid, .hardSigmoid, .hardSwish,
             .globalAvgpool2d, .mul, .concat, .batchnorm2d, .constant:
            return 0
        }
    }
}

extension QuantizationPlan {
    /// The `enable_auto_nuq` section of `table()`: each candidate with its bytes.
    func autoNonUniformNote() -> String {
        guard let decisions = autoNonUniform else { return "" }
        func bytes(_ d: AutoNUQDecision) -> String {
            "\(d.layer) (\(d.weightBytes) B of weights \(d.isPicked ? ">" : "≤") \(d.activationBytes) B of activations per image)"
        }
        let picked = decisions.filter(\.isPicked), kept = decisions.filter { !$0.isPicked }
        return "\nenable_auto_nuq (NUQ, 16 levels, where a layer's weight bytes exceed its input plus output activation "
            + "bytes per image; layers in override_layer_configs, weight-only and NUQ layers are not candidates): "
            + "picked \(picked.isEmpty ? "none" : picked.map(bytes).joined(separator: ", "))"
            + (kept.isEmpty ? "" : "; kept uniform \(kept.map(bytes).joined(separator: ", "))") + ".\n"
    }
}
