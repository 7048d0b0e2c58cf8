import Foundation
import QATCore
import QATIO
import QATModel

/// An ONNX model translated into our terms: a model spec and a float checkpoint of its weights.
public struct ImportedModel {
    public var spec: ModelSpec
    /// The weights as a float checkpoint (parameters and BN running statistics).
    public var checkpoint: CheckpointFile
    /// The model with the weights loaded, ready to run.
    public var model: Model
    /// The default-domain opset the file was written for.
    public var opset: Int
    /// How many nodes were dropped (Dropout, Identity) or folded (Constant, MatMul's bias Add).
    public var removedNodes: Int
}

/// What the importer does with graph inputs other than the first (the image). By default they
/// are an error; the ONNX backend node tests feed some ops' second input (a conv weight, the other
/// operand of an add) this way, and then they are read as if they were initializers.
public struct ImportOptions {
    public var extraInputs: [String: ONNXTensor] = [:]
    /// The spec's name; by default the file's name without its extension.
    public var modelName: String?
    public init(extraInputs: [String: ONNXTensor] = [:], modelName: String? = nil) {
        self.extraInputs = extraInputs
        self.modelName = modelName
    }
}

extension ImportedModel {
    /// The opsets of the default domain we translate: up to 17 (libonnx 1.12's newest). Older
    /// opsets are read too: where an op of our set changed meaning (Clip's bounds before 11) the
    /// translation follows the version, and the attributes of older forms (`is_test`,
    /// `broadcast`, `spatial`, `consumed_inputs`, Reshape's `shape`) are rejected as unknown.
    public static let supportedOpsets = 1...17

    /// Reads an ONNX file and translates it; every unsupported node, attribute or shape is an
    /// `InputError` naming the file and the node, and nothing is returned then.
    public static func load(onnxFile file: String, options: ImportOptions = ImportOptions()) throws -> ImportedModel {
        try translate(ONNXModel.read(file: file), file: file, options: options)
    }

    public static func translate(_ onnx: ONNXModel, file: String, options: ImportOptions = ImportOptions()) throws -> ImportedModel {
        guard let opset = onnx.defaultOpset else { throw InputError(file: file, message: "the model imports no default-domain opset") }
        guard supportedOpsets.contains(opset) else {
            throw InputError(file: file, keyPath: "opset_import", message: "opset \(opset) is not supported (supported: \(supportedOpsets.lowerBound) to \(supportedOpsets.upperBound))")
        }
        var translator = ONNXTranslator(file: file, onnx: onnx, opset: opset)
        for (name, tensor) in options.extraInputs { translator.constants[name] = tensor }
        try translator.readInputAndOutput()
        for index in onnx.nodes.indices { try translator.translate(node: index) }
        try translator.checkOutput()
        let name = options.modelName ?? sanitisedName(((file as NSString).lastPathComponent as NSString).deletingPathExtension, fallback: "model")
        let spec = ModelSpec(name: name, inputShape: translator.sampleShape, layers: translator.layers)
        let checkpoint: CheckpointFile
        let model: Model
        do {
            // The spec goes through the same checks as a spec file, then the model built from it
            // takes the weights by the checkpoint loader's strict rules (every tensor, every shape).
            let checked = try ModelSpec.parse(JSONObject.parse(Data(spec.jsonString().utf8), file: file))
            model = try Model(spec: checked)
            var stored = translator.tensors
            let parameters = try model.parameters.map { NamedTensor(name: $0.name, tensor: try take(&stored, $0.name, file: file)) }
            let buffers = try model.buffers.map { NamedTensor(name: $0.name, tensor: try take(&stored, $0.name, file: file)) }
            checkpoint = CheckpointFile(modelSpecJSON: checked.jsonString(), attributes: ["imported_from": (file as NSString).lastPathComponent],
                                        parameters: parameters, buffers: buffers)
            try model.load(checkpoint, file: file)
        } catch let error as InputError {
            throw translator.retold(error)
        }
        return ImportedModel(spec: model.spec, checkpoint: checkpoint, model: model, opset: opset, removedNodes: translator.removedNodes)
    }

    private static func take(_ tensors: inout [String: Tensor], _ name: String, file: String) throws -> Tensor {
        guard let tensor = tensors.removeValue(forKey: name) else {
            throw InputError(file: file, message: "internal: the import produced no tensor for \(name)")
        }
        return tensor
    }

    /// Parameters, layers per type, for `qat import`'s summary.
    public var parameterCount: Int { checkpoint.parameters.reduce(0) { $0 + $1.tensor.count } }
    public var layerCounts: [(type: String, count: Int)] {
        var counts: [String: Int] = [:]
        var order: [String] = []
        for layer in spec.layers {
            if counts[layer.kind.typeName] == nil { order.append(layer.kind.typeName) }
            counts[layer.kind.typeName, default: 0] += 1
        }
        return order.map { ($0, counts[$0]!) }
    }
}

/// A layer name from an ONNX node name: ASCII letters and digits are kept, every run of other
/// characters (underscores included) becomes one `_`, and none leads or trails
/// ("/features/features.0/Conv" → "features_features_0_Conv"); an empty result is `fallback`.
public func sanitisedName(_ raw: String, fallback: String) -> String {
    var result = ""
    var separatorPending = false
    for scalar in raw.unicodeScalars {
        let kept = ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
        guard kept else {
            separatorPending = true
            continue
        }
        if separatorPending, !result.isEmpty { result.append("_") }
        separatorPending = false
        result.unicodeScalars.append(scalar)
    }
    return result.isEmpty ? fallback : result
}
