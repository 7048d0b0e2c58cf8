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

/// One named layer of a spec: what it computes and which values it reads.
public struct LayerSpec: Equatable, Sendable {
    public var name: String
    public var kind: LayerKind
    /// Names of the layers feeding this one; empty means "the previous layer" (or the input).
    public var inputs: [String]

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
        guard input.count == 3, input.allSatisfy({ Limits.size.contains($0) }) else {
            throw root.error("input", "expected [channels, height, width] with sizes in 1...\(Limits.size.upperBound), got \(input)")
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
            guard seen.insert(layer.name).inserted else { throw object.error("name", "duplicate layer name \"\(truncatedForMessage(layer.name))\"") }
            for source in layer.inputs where source != "input" && !seen.contains(source) {
                throw object.error("inputs", "unknown input \"\(truncatedForMessage(source))\": it must name an earlier layer or \"input\"")
            }
            layers.append(layer)
        }
        let spec = ModelSpec(name: name, inputShape: input, layers: layers)
        let graph = try ModelGraph(spec, file: root.file)
        try checkSizes(spec, graph, file: root.file)
        return spec
    }

    /// The documented ranges of spec sizes (docs/CONFIG.md "Ranges").
    public enum Limits {
        /// Channels, features and each input dimension.
        public static let size = 1...65_536
        /// Linear features (a flattened feature map may be wide) and batch-norm features.
        public static let features = 1...16_777_216
        /// Kernel sizes and strides.
        public static let kernel = 1...1_024
        /// Zero padding on each side.
        public static let padding = 0...1_024
        /// Elements of one layer's weight, or of one sample's activation: 2³¹.
        public static let elements = 1 << 31
    }

    /// Every weight tensor and every per-sample activation must hold at most `Limits.elements`
    /// values (products checked for overflow), so no spec can ask for an absurd allocation.
    private static func checkSizes(_ spec: ModelSpec, _ graph: ModelGraph, file: String) throws {
        func count(_ shape: [Int]) -> Int? {
            var total = 1
            for size in shape {
                let (product, overflow) = total.multipliedReportingOverflow(by: size)
                if overflow { return nil }
                total = product
            }
            return total
        }
        for (index, layer) in spec.layers.enumerated() {
            var shapes = [graph.outputShapes[index]]
            switch layer.kind {
            case .conv2d(let c): shapes.append([c.outputChannels, c.inputChannels, c.kernelSize, c.kernelSize])
            case .linear(let f): shapes.append([f.outputFeatures, f.inputFeatures])
            default: break
            }
            for shape in shapes {
                guard let n = count(shape), n <= Limits.elements else {
                    throw InputError(file: file, keyPath: "layers[\(index)] (\(layer.name))",
                                     message: "a tensor of shape \(shape) exceeds the limit of \(Limits.elements) values per layer")
                }
            }
        }
    }

    private static func parseLayer(_ object: JSONObject) throws -> LayerSpec {
        guard let name = try object.string("name"), !name.isEmpty else { throw object.error("name", "missing layer name") }
        guard let typeName = try object.string("type") else { throw object.error("type", "missing layer type") }
        guard let type = LayerType(name: typeName) else {
            throw object.error("type", "unknown layer type \"\(truncatedForMessage(typeName))\" (known: \(LayerType.allCases.map(\.name).joined(separator: ", ")))")
        }
        let inputs = try object.stringArray("inputs") ?? []
        let layer = LayerSpec(name: name, kind: try parseKind(type, object), inputs: inputs)
        // One input may be left implicit (the previous layer); more must all be named.
        if type.inputCount == 1 && layer.inputs.count > 1 {
            throw object.error("inputs", "\(typeName) takes one input, got \(layer.inputs.count)")
        }
        if type.inputCount > 1 && layer.inputs.count != type.inputCount {
            throw object.error("inputs", "\(typeName) needs exactly \(type.inputCount) inputs")
        }
        try object.rejectUnknownKeys()
        return layer
    }

    /// The attributes of a layer of `type`, from its spec object.
    private static func parseKind(_ type: LayerType, _ object: JSONObject) throws -> LayerKind {
        func positive(_ key: String, default value: Int? = nil) throws -> Int {
            guard let v = try object.int(key) ?? value else { throw object.error(key, "missing (required for \(type.name))") }
            let range = key == "kernel_size" || key == "stride" ? Limits.kernel : key.hasSuffix("_features") ? Limits.features : Limits.size
            guard range.contains(v) else { throw object.error(key, "must be in \(range.lowerBound)...\(range.upperBound), got \(v)") }
            return v
        }
        func pooling() throws -> PoolingAttributes {
            let kernelSize = try positive("kernel_size")
            return PoolingAttributes(kernelSize: kernelSize, stride: try positive("stride", default: kernelSize))
        }
        switch type {
        case .conv2d:
            let convolution = ConvolutionAttributes(
                inputChannels: try positive("in_channels"), outputChannels: try positive("out_channels"),
                kernelSize: try positive("kernel_size"), stride: try positive("stride", default: 1),
                padding: try object.int("padding") ?? 0, hasBias: try object.bool("bias") ?? true)
            guard Limits.padding.contains(convolution.padding) else {
                throw object.error("padding", "must be in \(Limits.padding.lowerBound)...\(Limits.padding.upperBound), got \(convolution.padding)")
            }
            return .conv2d(convolution)
        case .linear:
            return .linear(LinearAttributes(inputFeatures: try positive("in_features"), outputFeatures: try positive("out_features"),
                                            hasBias: try object.bool("bias") ?? true))
        case .batchnorm2d:
            let epsilon = Float(try object.double("eps") ?? 1e-5), momentum = Float(try object.double("momentum") ?? 0.1)
            guard epsilon > 0, epsilon.isFinite else { throw object.error("eps", "must be a finite number > 0, got \(epsilon)") }
            guard momentum >= 0, momentum <= 1 else { throw object.error("momentum", "must be in [0, 1], got \(momentum)") }
            return .batchnorm2d(BatchNormAttributes(features: try positive("num_features"), epsilon: epsilon, momentum: momentum))
        case .maxpool2d: return .maxpool2d(try pooling())
        case .avgpool2d: return .avgpool2d(try pooling())
        case .relu: return .relu
        case .relu6: return .relu6
        case .flatten: return .flatten
        case .add: return .add
        }
    }

    /// The spec as JSON (stored in checkpoints so a file says what model it holds).
    public func jsonString() -> String {
        var layerObjects: [[String: Any]] = []
        for l in layers {
            var o: [String: Any] = ["name": l.name, "type": l.kind.typeName]
            if !l.inputs.isEmpty { o["inputs"] = l.inputs }
            switch l.kind {
            case .conv2d(let c):
                o["in_channels"] = c.inputChannels; o["out_channels"] = c.outputChannels
                o["kernel_size"] = c.kernelSize; o["stride"] = c.stride; o["padding"] = c.padding; o["bias"] = c.hasBias
            case .linear(let f):
                o["in_features"] = f.inputFeatures; o["out_features"] = f.outputFeatures; o["bias"] = f.hasBias
            case .batchnorm2d(let b):
                o["num_features"] = b.features; o["eps"] = Double(b.epsilon); o["momentum"] = Double(b.momentum)
            case .maxpool2d(let p), .avgpool2d(let p):
                o["kernel_size"] = p.kernelSize; o["stride"] = p.stride
            case .relu, .relu6, .flatten, .add:
                break
            }
            layerObjects.append(o)
        }
        let root: [String: Any] = ["name": name, "input": inputShape, "layers": layerObjects]
        let data = try! JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
