import Foundation
import QATCore
import QATIO

/// The JSON description of a network: an input shape and a list of named layers.
///
/// Each layer reads the previous layer's output unless `inputs` names others ("input" is the
/// image). Example: `Configs/models/lenet5.json`. Shapes are checked when the model is built.
public struct ModelSpec: Equatable, Sendable {
    public var name: String
    /// One sample's shape, [C, H, W].
    public var inputShape: [Int]
    public var layers: [LayerSpec]

    public init(name: String, inputShape: [Int], layers: [LayerSpec]) {
        self.name = name
        self.inputShape = inputShape
        self.layers = layers
    }
}

public enum LayerKind: String, CaseIterable, Sendable {
    case conv2d, linear, batchnorm2d, relu, maxpool2d, avgpool2d, flatten, add

    /// Layers whose weights and inputs QAT quantizes.
    public var isQuantizable: Bool { self == .conv2d || self == .linear }
}

public struct LayerSpec: Equatable, Sendable {
    public var name: String
    public var kind: LayerKind
    /// Names of the layers feeding this one; empty means "the previous layer" (or the input).
    public var inputs: [String]
    // conv2d / linear
    public var inputChannels = 0, outputChannels = 0
    public var kernelSize = 1, stride = 1, padding = 0
    public var hasBias = true
    // batchnorm2d
    public var epsilon: Float = 1e-5, momentum: Float = 0.1

    public init(name: String, kind: LayerKind, inputs: [String] = []) {
        self.name = name
        self.kind = kind
        self.inputs = inputs
    }
}

extension ModelSpec {
    /// Reads and validates a spec file; errors name the file and the key path.
    public static func load(file: String) throws -> ModelSpec {
        try parse(JSONObject.load(file: file))
    }

    public static func parse(_ root: JSONObject) throws -> ModelSpec {
        let name = try root.string("name") ?? "model"
        guard let input = try root.intArray("input") else { throw root.error("input", "missing: the sample shape, e.g. [1, 28, 28]") }
        guard input.count == 3, input.allSatisfy({ $0 > 0 }) else {
            throw root.error("input", "expected [channels, height, width] with positive sizes, got \(input)")
        }
        guard let layerObjects = try root.objectArray("layers"), !layerObjects.isEmpty else {
            throw root.error("layers", "missing or empty: list the model's layers")
        }
        try root.rejectUnknownKeys()
        var seen = Set<String>()
        var layers: [LayerSpec] = []
        for object in layerObjects {
            let layer = try parseLayer(object)
            guard layer.name != "input" else { throw object.error("name", "\"input\" is reserved for the model input") }
            guard seen.insert(layer.name).inserted else { throw object.error("name", "duplicate layer name \"\(layer.name)\"") }
            for source in layer.inputs where source != "input" && !seen.contains(source) {
                throw object.error("inputs", "unknown input \"\(source)\": it must name an earlier layer or \"input\"")
            }
            layers.append(layer)
        }
        let spec = ModelSpec(name: name, inputShape: input, layers: layers)
        _ = try spec.outputShapes(file: root.file)
        return spec
    }

    private static func parseLayer(_ object: JSONObject) throws -> LayerSpec {
        guard let name = try object.string("name"), !name.isEmpty else { throw object.error("name", "missing layer name") }
        guard let typeName = try object.string("type") else { throw object.error("type", "missing layer type") }
        guard let kind = LayerKind(rawValue: typeName) else {
            throw object.error("type", "unknown layer type \"\(typeName)\" (known: \(LayerKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        var layer = LayerSpec(name: name, kind: kind, inputs: try object.stringArray("inputs") ?? [])
        func positive(_ key: String, default value: Int? = nil) throws -> Int {
            guard let v = try object.int(key) ?? value else { throw object.error(key, "missing (required for \(kind.rawValue))") }
            guard v > 0 else { throw object.error(key, "must be positive, got \(v)") }
            return v
        }
        switch kind {
        case .conv2d:
            layer.inputChannels = try positive("in_channels")
            layer.outputChannels = try positive("out_channels")
            layer.kernelSize = try positive("kernel_size")
            layer.stride = try positive("stride", default: 1)
            layer.padding = try object.int("padding") ?? 0
            guard layer.padding >= 0 else { throw object.error("padding", "must be ≥ 0") }
            layer.hasBias = try object.bool("bias") ?? true
        case .linear:
            layer.inputChannels = try positive("in_features")
            layer.outputChannels = try positive("out_features")
            layer.hasBias = try object.bool("bias") ?? true
        case .batchnorm2d:
            layer.outputChannels = try positive("num_features")
            layer.epsilon = Float(try object.double("eps") ?? 1e-5)
            layer.momentum = Float(try object.double("momentum") ?? 0.1)
        case .maxpool2d, .avgpool2d:
            layer.kernelSize = try positive("kernel_size")
            layer.stride = try positive("stride", default: layer.kernelSize)
        case .add:
            guard layer.inputs.count == 2 else { throw object.error("inputs", "add needs exactly two inputs") }
        case .relu, .flatten:
            break
        }
        if kind != .add && layer.inputs.count > 1 {
            throw object.error("inputs", "\(kind.rawValue) takes one input, got \(layer.inputs.count)")
        }
        try object.rejectUnknownKeys()
        return layer
    }

    /// The spec as JSON (stored in checkpoints so a file says what model it holds).
    public func jsonString() -> String {
        var layerObjects: [[String: Any]] = []
        for l in layers {
            var o: [String: Any] = ["name": l.name, "type": l.kind.rawValue]
            if !l.inputs.isEmpty { o["inputs"] = l.inputs }
            switch l.kind {
            case .conv2d:
                o["in_channels"] = l.inputChannels; o["out_channels"] = l.outputChannels
                o["kernel_size"] = l.kernelSize; o["stride"] = l.stride; o["padding"] = l.padding; o["bias"] = l.hasBias
            case .linear:
                o["in_features"] = l.inputChannels; o["out_features"] = l.outputChannels; o["bias"] = l.hasBias
            case .batchnorm2d:
                o["num_features"] = l.outputChannels; o["eps"] = Double(l.epsilon); o["momentum"] = Double(l.momentum)
            case .maxpool2d, .avgpool2d:
                o["kernel_size"] = l.kernelSize; o["stride"] = l.stride
            case .relu, .flatten, .add:
                break
            }
            layerObjects.append(o)
        }
        let root: [String: Any] = ["name": name, "input": inputShape, "layers": layerObjects]
        let data = try! JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
