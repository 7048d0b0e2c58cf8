import Foundation
import QATCore
import QATIO

/// The JSON description of a network: an input shape and a list of named layers.
///
/// Each layer reads the previous layer's output unless `inputs` names others ("input" is the
/// image). Example: `Configs/models/lenet5.json`. Shapes are checked when the model is built.
public struct ModelSpec: Equatable, Sendable {
    public var name: String
    /// One sample's shape: [C, H, W] for conv, pool and BN; element-wise layers take any rank.
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
        guard (1...8).contains(input.count), input.allSatisfy({ Limits.size.contains($0) }) else {
            throw root.error("input", "expected the sample shape, e.g. [channels, height, width], with 1 to 8 sizes in 1...\(Limits.size.upperBound), got \(input)")
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
        /// Kernel sizes, strides and dilations.
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
            case .conv2d(let c): shapes.append(c.weightShape)
            case .linear(let f): shapes.append([f.outputFeatures, f.inputFeatures])
            case .batchnorm2d, .relu, .relu6, .maxpool2d, .avgpool2d, .flatten, .add, .clip, .leakyReLU, .sigmoid,
                 .hardSigmoid, .hardSwish, .globalAvgpool2d, .mul, .concat, .constant: break
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
        if type.inputCount == 1...1 && layer.inputs.count > 1 {
            throw object.error("inputs", "\(typeName) takes one input, got \(layer.inputs.count)")
        }
        if type.inputCount == 0...0 && !layer.inputs.isEmpty {
            throw object.error("inputs", "\(typeName) reads no inputs, got \(layer.inputs.count)")
        }
        if type.inputCount.lowerBound > 1 && !type.inputCount.contains(layer.inputs.count) {
            throw object.error("inputs", type.inputCount.count == 1 ? "\(typeName) needs exactly \(type.inputCount.lowerBound) inputs"
                                                                  : "\(typeName) needs \(type.inputCountDescription), got \(layer.inputs.count)")
        }
        try object.rejectUnknownKeys()
        return layer
    }

    /// The attributes of a layer of `type`, from its spec object.
    private static func parseKind(_ type: LayerType, _ object: JSONObject) throws -> LayerKind {
        let attributes = SpecAttributeReader(object: object, type: type)
        switch type {
        case .conv2d:
            let kernel = try attributes.size2D("kernel_size")
            let convolution = ConvolutionAttributes(
                inputChannels: try attributes.positive("in_channels"), outputChannels: try attributes.positive("out_channels"),
                kernel: kernel, stride: try attributes.size2D("stride", default: Size2D(1)),
                padding: try attributes.padding(), dilation: try attributes.size2D("dilation", default: Size2D(1)),
                groups: try attributes.positive("groups", default: 1), hasBias: try object.bool("bias") ?? true)
            guard convolution.inputChannels % convolution.groups == 0, convolution.outputChannels % convolution.groups == 0 else {
                throw object.error("groups", "in_channels \(convolution.inputChannels) and out_channels \(convolution.outputChannels) "
                                   + "must both be multiples of groups \(convolution.groups)")
            }
            return .conv2d(convolution)
        case .linear:
            return .linear(LinearAttributes(inputFeatures: try attributes.positive("in_features"),
                                            outputFeatures: try attributes.positive("out_features"),
                                            hasBias: try object.bool("bias") ?? true))
        case .batchnorm2d:
            let epsilon = Float(try object.double("eps") ?? 1e-5), momentum = Float(try object.double("momentum") ?? 0.1)
            guard epsilon > 0, epsilon.isFinite else { throw object.error("eps", "must be a finite number > 0, got \(epsilon)") }
            guard momentum >= 0, momentum <= 1 else { throw object.error("momentum", "must be in [0, 1], got \(momentum)") }
            return .batchnorm2d(BatchNormAttributes(features: try attributes.positive("num_features"), epsilon: epsilon, momentum: momentum))
        case .maxpool2d: return .maxpool2d(try attributes.pooling(average: false))
        case .avgpool2d: return .avgpool2d(try attributes.pooling(average: true))
        case .relu: return .relu
        case .relu6: return .relu6
        case .flatten: return .flatten
        case .add: return .add
        case .clip:
            let bounds = ClipAttributes(min: try attributes.float("min") ?? -.infinity, max: try attributes.float("max") ?? .infinity)
            guard bounds.min <= bounds.max else { throw object.error("max", "must be ≥ min \(bounds.min), got \(bounds.max)") }
            return .clip(bounds)
        case .leakyReLU:
            return .leakyReLU(LeakyReLUAttributes(negativeSlope: try attributes.float("negative_slope") ?? 0.01))
        case .sigmoid: return .sigmoid
        case .hardSigmoid:
            return .hardSigmoid(HardSigmoidAttributes(alpha: try attributes.float("alpha") ?? 0.2, beta: try attributes.float("beta") ?? 0.5))
        case .hardSwish: return .hardSwish
        case .globalAvgpool2d: return .globalAvgpool2d
        case .mul: return .mul
        case .concat: return .concat
        case .constant:
            guard let shape = try object.intArray("shape") else { throw object.error("shape", "missing (required for constant)") }
            guard (1...8).contains(shape.count), shape.allSatisfy({ Limits.size.contains($0) }) else {
                throw object.error("shape", "expected 1 to 8 sizes in 1...\(Limits.size.upperBound), got \(shape)")
            }
            return .constant(ConstantAttributes(shape: shape))
        }
    }

    /// The spec as JSON (stored in checkpoints so a file says what model it holds).
    public func jsonString() -> String {
        let root: [String: Any] = ["name": name, "input": inputShape, "layers": layerObjects()]
        return Self.compactJSON(root)
    }

    /// The spec as a file for people: the same JSON with one layer per line, as the shipped specs are written.
    public func fileText() -> String {
        let head = Self.compactJSON(["name": name, "input": inputShape]).dropLast()
        let rows = layerObjects().map { "    " + Self.compactJSON($0) }.joined(separator: ",\n")
        return head + ",\n  \"layers\": [\n" + rows + "\n  ]\n}\n"
    }

    private static func compactJSON(_ object: [String: Any]) -> String {
        // Every value is an Int, Bool, String, finite Double or an array of them: serialisation cannot fail.
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    private func layerObjects() -> [[String: Any]] {
        var layerObjects: [[String: Any]] = []
        for l in layers {
            var o: [String: Any] = ["name": l.name, "type": l.kind.typeName]
            if !l.inputs.isEmpty { o["inputs"] = l.inputs }
            switch l.kind {
            // Keys a spec from before rectangular kernels could not have are written only when
            // they differ from their defaults, so old specs write back the same bytes.
            case .conv2d(let c):
                o["in_channels"] = c.inputChannels; o["out_channels"] = c.outputChannels
                o["kernel_size"] = c.kernel.specValue; o["stride"] = c.stride.specValue; o["padding"] = c.padding.specValue
                o["bias"] = c.hasBias
                if c.dilation != Size2D(1) { o["dilation"] = c.dilation.specValue }
                if c.groups != 1 { o["groups"] = c.groups }
            case .linear(let f):
                o["in_features"] = f.inputFeatures; o["out_features"] = f.outputFeatures; o["bias"] = f.hasBias
            case .batchnorm2d(let b):
                o["num_features"] = b.features; o["eps"] = Double(b.epsilon); o["momentum"] = Double(b.momentum)
            case .maxpool2d(let p), .avgpool2d(let p):
                o["kernel_size"] = p.kernel.specValue; o["stride"] = p.stride.specValue
                if p.padding != Padding2D(0) { o["padding"] = p.padding.specValue }
                if p.ceilMode { o["ceil_mode"] = true }
                if case .avgpool2d = l.kind, !p.countIncludePad { o["count_include_pad"] = false }
            case .clip(let bounds):
                if bounds.min.isFinite { o["min"] = Double(bounds.min) }
                if bounds.max.isFinite { o["max"] = Double(bounds.max) }
            case .leakyReLU(let a): o["negative_slope"] = Double(a.negativeSlope)
            case .hardSigmoid(let a): o["alpha"] = Double(a.alpha); o["beta"] = Double(a.beta)
            case .constant(let c): o["shape"] = c.shape
            case .relu, .relu6, .flatten, .add, .sigmoid, .hardSwish, .globalAvgpool2d, .mul, .concat:
                break
            }
            layerObjects.append(o)
        }
        return layerObjects
    }
}

extension Size2D {
    /// An int when square (the form of old specs), else [height, width].
    var specValue: Any { height == width ? height : [height, width] }
}

extension Padding2D {
    /// An int when all sides agree, [h, w] when symmetric, else [top, left, bottom, right].
    var specValue: Any {
        if isSymmetric && top == left { return top }
        return isSymmetric ? [top, left] : [top, left, bottom, right]
    }
}

/// Reads a layer's attribute keys with their ranges; errors name the file and the key path.
private struct SpecAttributeReader {
    let object: JSONObject
    let type: LayerType

    func positive(_ key: String, default value: Int? = nil) throws -> Int {
        guard let v = try object.int(key) ?? value else { throw object.error(key, "missing (required for \(type.name))") }
        let range = key.hasSuffix("_features") ? ModelSpec.Limits.features : ModelSpec.Limits.size
        guard range.contains(v) else { throw object.error(key, "must be in \(range.lowerBound)...\(range.upperBound), got \(v)") }
        return v
    }

    func float(_ key: String) throws -> Float? {
        guard let value = try object.double(key) else { return nil }
        guard Float(value).isFinite else { throw object.error(key, "must be a finite number, got \(value)") }
        return Float(value)
    }

    /// An int or an array of ints, each in `range`.
    private func ints(_ key: String, range: ClosedRange<Int>) throws -> [Int]? {
        let values: [Int]?
        if object.values[key] is [Any] { values = try object.intArray(key) } else { values = try object.int(key).map { [$0] } }
        guard let values else { return nil }
        for v in values where !range.contains(v) {
            throw object.error(key, "must be in \(range.lowerBound)...\(range.upperBound), got \(v)")
        }
        return values
    }

    /// `kernel_size`, `stride` or `dilation`: an int for both axes or [height, width].
    func size2D(_ key: String, default value: Size2D? = nil) throws -> Size2D {
        guard let v = try ints(key, range: ModelSpec.Limits.kernel) else {
            if let value { return value }
            throw object.error(key, "missing (required for \(type.name))")
        }
        switch v.count {
        case 1: return Size2D(v[0])
        case 2: return Size2D(height: v[0], width: v[1])
        default: throw object.error(key, "expected an int or [height, width], got \(v.count) values")
        }
    }

    /// `padding`: an int for all sides, [h, w] (symmetric) or [top, left, bottom, right].
    func padding() throws -> Padding2D {
        guard let v = try ints("padding", range: ModelSpec.Limits.padding) else { return Padding2D(0) }
        switch v.count {
        case 1: return Padding2D(v[0])
        case 2: return Padding2D(top: v[0], left: v[1], bottom: v[0], right: v[1])
        case 4: return Padding2D(top: v[0], left: v[1], bottom: v[2], right: v[3])
        default: throw object.error("padding", "expected an int, [h, w] or [top, left, bottom, right], got \(v.count) values")
        }
    }

    func pooling(average: Bool) throws -> PoolingAttributes {
        let kernel = try size2D("kernel_size")
        let pooling = PoolingAttributes(kernel: kernel, stride: try size2D("stride", default: kernel), padding: try padding(),
                                        ceilMode: try object.bool("ceil_mode") ?? false,
                                        countIncludePad: average ? try object.bool("count_include_pad") ?? true : true)
        // PyTorch's rule: padding at most half the window, so no window lies wholly in the padding.
        let p = pooling.padding
        guard max(p.top, p.bottom) * 2 <= kernel.height, max(p.left, p.right) * 2 <= kernel.width else {
            throw object.error("padding", "must be at most half the window \(kernel.height)×\(kernel.width) on each side")
        }
        return pooling
    }
}
