import Foundation
import QATCore
import QATData
import QATDeploy
import QATIO
import QATModel
import QATTrain

// The sides of a layer-by-layer comparison: anything that runs a batch and reports each
// layer's output by name. `qat compare` runs two of them on the same batches.

/// One side of a comparison.
public protocol LayerOutputSource: AnyObject {
    /// "float", "fakequant", "int8".
    var name: String { get }
    /// Runs one batch [N, C, H, W] in inference mode, calling `observe` with every layer's
    /// output (float values, dequantized if the side computes in integers) under the layer's
    /// model-spec name, and returns the logits [N, K].
    func run(_ batch: Tensor, observe: (String, Tensor) -> Void) -> Tensor
    /// The input quantizer of `layer` as the latest `run` used it; nil when the layer's input
    /// is not quantized on this side.
    func quantization(ofLayer layer: String) -> QuantizationGrid?
}

extension LayerOutputSource {
    public func quantization(ofLayer layer: String) -> QuantizationGrid? { nil }
}

/// A float or fake-quant `Model` as a comparison side.
public final class ModelOutputSource: LayerOutputSource {
    public let name: String
    public let model: Model

    public init(name: String, model: Model) {
        self.name = name
        self.model = model
    }

    public func run(_ batch: Tensor, observe: (String, Tensor) -> Void) -> Tensor {
        withoutActuallyEscaping(observe) { observe in
            model.forward(batch, training: false, tape: nil) { index, output in
                observe(self.model.layers[index].name, output.value)
            }.value
        }
    }

    public func quantization(ofLayer layer: String) -> QuantizationGrid? {
        // A weight-only layer's input stays float: no input grid to report.
        guard let quantizer = (model.layer(named: layer) as? WeightedLayer)?.quantizer as? FakeQuantizer,
              quantizer.quantizesInput else { return nil }
        return quantizer.activation.grid
    }
}

/// The INT8 engine as a comparison side. It reports each output dequantized, under the spec layer
/// it stands for: a conv with a fused ReLU reports as the ReLU, a conv with a folded BatchNorm as
/// the BN; the folded-away intermediate outputs are not reported and show as "not compared".
public final class Int8OutputSource: LayerOutputSource {
    public let name = "int8"
    public let model: Int8Model
    /// The deployed input quantizer of every integer layer, by layer name.
    private let inputQuantizers: [String: QuantizationGrid]

    public init(deployFile: String) throws {
        model = try Int8Model.load(deployFile: deployFile)
        var quantizers: [String: QuantizationGrid] = [:]
        for node in model.file.nodes { if let q = node.inputQuantizer { quantizers[node.name] = q } }
        inputQuantizers = quantizers
    }

    public func run(_ batch: Tensor, observe: (String, Tensor) -> Void) -> Tensor {
        withoutActuallyEscaping(observe) { observe in model.forward(batch, observe: observe) }
    }

    /// Clipping on this side is measured against the deployed bounds.
    public func quantization(ofLayer layer: String) -> QuantizationGrid? {
        inputQuantizers[layer]
    }
}

/// The sides `qat compare --sides` accepts.
public enum ComparisonSide: String, CaseIterable, Sendable {
    case float, fakequant, int8
}

extension Model {
    /// Removes every fake quantizer: the float model with the same weights.
    public func removeQuantization() {
        applyQuantization(QuantizationPlan(modelName: spec.name, configFile: "", batchCount: 1, layers: []))
    }

    /// True when any layer has a fake quantizer attached.
    public var isQuantized: Bool { !fakeQuantizers.isEmpty }
}

/// How a fake-quant model is obtained from a checkpoint (the same rule for `compare` and
/// `sensitivity`, docs/DEBUGGING.md):
/// - a QAT checkpoint: its own quantizers with their trained clip bounds; a config's layer rules
///   are not used;
/// - a float checkpoint: the config's plan is attached and IFMR calibrates every layer without
///   configured bounds on `calibration` (the config's `batch_num` training batches, in the order
///   `qat train` uses), exactly as a QAT run starts.
public enum DebugModels {
    /// The float model of a checkpoint (a QAT checkpoint's weights with its quantizers removed).
    public static func float(checkpoint file: String) throws -> Model {
        let (model, _) = try Model.load(checkpoint: file)
        model.removeQuantization()
        return model
    }

    /// The fake-quant model of a checkpoint; `plan` and `calibration` are needed for a float one.
    public static func fakeQuant(checkpoint file: String, plan: QuantizationPlan?,
                                 calibration: () throws -> [Tensor]) throws -> Model {
        let (model, _) = try Model.load(checkpoint: file)
        if model.isQuantized { return model }
        guard let plan else {
            throw RunError("\(file) is a float checkpoint: give --config with the retrain config that quantizes it "
                           + "(its layers are then calibrated with IFMR), or pass a QAT checkpoint")
        }
        model.applyQuantization(plan)
        try model.calibrate(on: calibration())
        return model
    }

    /// Builds one comparison side. `int8` needs `deployFile`.
    public static func source(_ side: ComparisonSide, checkpoint: String, deployFile: String?, plan: QuantizationPlan?,
                              calibration: () throws -> [Tensor]) throws -> any LayerOutputSource {
        switch side {
        case .float:
            return ModelOutputSource(name: "float", model: try float(checkpoint: checkpoint))
        case .fakequant:
            return ModelOutputSource(name: "fakequant",
                                     model: try fakeQuant(checkpoint: checkpoint, plan: plan, calibration: calibration))
        case .int8:
            guard let deployFile else { throw RunError("--sides with int8 needs --deploy <int8.h5> (made by qat deploy)") }
            return try Int8OutputSource(deployFile: deployFile)
        }
    }
}
