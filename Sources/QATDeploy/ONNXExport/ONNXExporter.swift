import Foundation
import QATCore
import QATIO
import QATModel
import QATONNX

/// `qat export`: a QAT checkpoint as an ONNX model in QDQ form, or a float model as plain ONNX.
///
/// The QDQ model is a translation of the INT8 deploy program (`Deployer`), node by node, so BN
/// folding, which values are codes and with which quantizer, and every scale and zero point are
/// the deployer's; nothing is quantized again here (docs/DEPLOY-FORMAT.md, "ONNX"):
/// - codes are int8 tensors made by QuantizeLinear with the node's (s_y, o_y); a reader that
///   computes in float gets them through DequantizeLinear;
/// - an integer conv/linear is Conv/Gemm over DequantizeLinear of its int8 weight codes
///   (per channel, axis 0, scale s_w' with the BN folded in) and of its int32 bias b_q (scale
///   s_d·s_w'[c]), the bias fake quant evaluates with (docs/ALGORITHMS.md §5), so a runtime that
///   fuses this into an integer conv computes our engine's arithmetic (`exact` writes the integer
///   layers as ConvInteger/MatMulInteger with the requantization as explicit ops, ONNXEmitter+Exact);
/// - a fused ReLU/ReLU6 is Relu/Clip(0, 6) before the QuantizeLinear, which clamps the codes
///   exactly as the engine's saturation does (quantization is monotone and maps 0 to o_y);
/// - float nodes are the ONNX op of their layer.
/// What an exported QDQ graph may contain.
public enum ONNXExportProfile: String, Sendable, CaseIterable {
    /// What ONNX Runtime runs: int8 grids with any zero point, signed per-channel weight scales.
    case standard
    /// TensorRT's explicit quantization: symmetric int8 activations (zero point 0) and positive
    /// per-channel weight scales on axis 0; anything else is an error naming the layer.
    case tensorrt
}

public enum ONNXExporter {
    /// Per-channel DequantizeLinear needs 13; libonnx 1.12 knows up to 17.
    public static let supportedOpsets = 13...17
    public static let defaultOpset = 13

    /// The QDQ model of a QAT checkpoint. `warn` hears of layers exported in a weaker form.
    /// `exact`: integer layers as ConvInteger/MatMulInteger with the engine's requantization as
    /// explicit ops, which ONNX Runtime runs bit for bit as our engine.
    public static func exportQDQ(checkpoint: String, opset: Int = defaultOpset, profile: ONNXExportProfile = .standard,
                                 exact: Bool = false, warn: (String) -> Void = { _ in }) throws -> Data {
        let (model, _) = try Model.load(checkpoint: checkpoint)
        guard !model.fakeQuantizers.isEmpty else {
            throw InputError(file: checkpoint, message: "a float checkpoint (no layer is quantized) cannot be exported as QDQ: use --float for the float model, or train it with a QAT config first")
        }
        return try exportQDQ(deploy: Deployer.deploy(model: model, source: checkpoint), opset: opset, profile: profile,
                             exact: exact, file: checkpoint, warn: warn)
    }

    /// The QDQ model of a deploy program.
    public static func exportQDQ(deploy: DeployFile, opset: Int = defaultOpset, profile: ONNXExportProfile = .standard,
                                 exact: Bool = false, file: String, warn: (String) -> Void = { _ in }) throws -> Data {
        guard !(exact && profile == .tensorrt) else {
            throw InputError(file: file, keyPath: "--exact",
                             message: "cannot be combined with --profile tensorrt: TensorRT's explicit quantization takes QDQ only, not ConvInteger/MatMulInteger")
        }
        var emitter = try ONNXEmitter(name: deploy.modelName, inputShape: deploy.inputShape, opset: opset, file: file)
        emitter.profile = profile
        emitter.exact = exact
        for node in deploy.nodes { try emitter.emit(node, warn: warn) }
        return try emitter.finish(outputDims: [deploy.numberOfClasses])
    }

    /// The float model of a checkpoint (float or QAT: the float weights, no quantizer), one ONNX
    /// node per layer, so that `qat import` of it gives back the same spec and weights.
    public static func exportFloat(checkpoint: String, opset: Int = defaultOpset) throws -> Data {
        let (model, _) = try Model.load(checkpoint: checkpoint)
        return try exportFloat(model: model, opset: opset, file: checkpoint)
    }

    public static func exportFloat(model: Model, opset: Int = defaultOpset, file: String) throws -> Data {
        var emitter = try ONNXEmitter(name: model.spec.name, inputShape: model.spec.inputShape, opset: opset, file: file)
        let specs = model.spec.layers
        for (i, layer) in model.layers.enumerated() {
            let inputs = model.graph.sources[i].map { $0 < 0 ? "input" : specs[$0].name }
            var node = DeployNode(layer: specs[i], inputs: inputs)
            switch layer {
            case let weighted as WeightedLayer:
                node.floatTensors["weight"] = weighted.weight.value
                if let bias = weighted.bias { node.floatTensors["bias"] = bias.value }
            case let bn as BatchNorm2DLayer:
                node.floatTensors = ["gamma": bn.gamma.value, "beta": bn.beta.value,
                                     "running_mean": bn.statistics.mean, "running_var": bn.statistics.variance]
                emitter.batchNormMomentum[node.name] = bn.attributes.momentum
            case let constant as ConstantLayer:
                node.floatTensors["value"] = constant.value
            default:
                break
            }
            try emitter.emit(node, warn: { _ in })
        }
        return try emitter.finish(outputDims: model.graph.outputShapes.last ?? [model.numberOfClasses])
    }
}
