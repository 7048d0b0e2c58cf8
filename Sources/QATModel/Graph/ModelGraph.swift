import QATCore
import QATIO

/// The structure of a model spec, derived once: for every layer the values it reads, for every
/// value the layers reading it, and every value's shape for one sample (no batch axis).
///
/// Values are numbered by the layer producing them; −1 is the model input. The last layer's
/// output is the model's output, class scores [K]. The model, the quantization plan,
/// `qat check model`, the deployer and the INT8 engine all read their structure from here.
public struct ModelGraph: Sendable {
    /// Who reads whom.
    public let wiring: Wiring
    /// inputShapes[i][k]: the shape of layer i's k-th input.
    public let inputShapes: [[[Int]]]
    /// outputShapes[i]: the shape of layer i's output.
    public let outputShapes: [[Int]]

    /// Checks the wiring and every shape; errors name `file` and the layer, before any weights exist.
    public init(_ spec: ModelSpec, file: String = "model spec") throws {
        wiring = try Wiring(spec, file: file)
        var inputShapes: [[[Int]]] = []
        var outputShapes: [[Int]] = []
        for (index, layer) in spec.layers.enumerated() {
            let sources = wiring.sources[index]
            let shapes = sources.map { $0 < 0 ? spec.inputShape : outputShapes[$0] }
            do {
                outputShapes.append(try layer.kind.outputShape(for: shapes, from: sources.map { $0 < 0 ? "input" : spec.layers[$0].name }))
            } catch let mismatch as ShapeMismatch {
                throw InputError(file: file, keyPath: "layers[\(index)] (\(layer.name))", message: mismatch.message)
            }
            inputShapes.append(shapes)
        }
        guard outputShapes.last?.count == 1 else {
            throw InputError(file: file, keyPath: "layers", message: "the last layer must output class scores [K], got \(outputShapes.last ?? [])")
        }
        self.inputShapes = inputShapes
        self.outputShapes = outputShapes
    }

    public var spec: ModelSpec { wiring.spec }
    /// sources[i]: the values layer i reads, in order (−1 is the model input).
    public var sources: [[Int]] { wiring.sources }
    /// The layers reading `value` (−1: the model input), in layer order, once per read.
    public func consumers(of value: Int) -> [Int] { wiring.consumers(of: value) }
    /// The index of the layer called `name`.
    public func index(of name: String) -> Int? { wiring.index(of: name) }
    /// The shape of a value (−1: the model input).
    public func shape(of value: Int) -> [Int] { value < 0 ? spec.inputShape : outputShapes[value] }
    public var numberOfClasses: Int { outputShapes.last![0] }

    /// The wiring alone, without shapes: all a quantization plan follows, so plans can also be
    /// made for specs whose shapes were never checked.
    public struct Wiring: Sendable {
        public let spec: ModelSpec
        /// sources[i]: the values layer i reads (−1 is the model input).
        public let sources: [[Int]]
        /// readers[value + 1]: the layers reading `value`.
        private let readers: [[Int]]
        private let indexByName: [String: Int]

        /// Each layer reads the previous one unless its `inputs` name earlier layers or "input".
        public init(_ spec: ModelSpec, file: String = "model spec") throws {
            var indexByName = ["input": -1]
            var sources: [[Int]] = []
            var readers = [[Int]](repeating: [], count: spec.layers.count + 1)
            for (index, layer) in spec.layers.enumerated() {
                func fail(_ message: String) -> InputError {
                    InputError(file: file, keyPath: "layers[\(index)] (\(layer.name))", message: message)
                }
                let layerSources = try layer.inputs.isEmpty ? [index - 1] : layer.inputs.map { name in
                    guard let source = indexByName[name] else {
                        throw fail("unknown input \"\(name)\": it must name an earlier layer or \"input\"")
                    }
                    return source
                }
                let expected = layer.kind.layerType.inputCount
                guard layerSources.count == expected else {
                    throw fail("\(layer.kind.typeName) reads \(expected) input(s), got \(layerSources.count)")
                }
                guard indexByName.updateValue(index, forKey: layer.name) == nil else {
                    throw fail("duplicate layer name \"\(layer.name)\" (or \"input\", which is reserved)")
                }
                for source in layerSources { readers[source + 1].append(index) }
                sources.append(layerSources)
            }
            self.spec = spec
            self.sources = sources
            self.readers = readers
            self.indexByName = indexByName
        }

        public func consumers(of value: Int) -> [Int] { readers[value + 1] }
        public func index(of name: String) -> Int? { name == "input" ? nil : indexByName[name] }
    }
}

/// Why a layer's inputs do not fit it (ModelGraph adds the file and the layer).
struct ShapeMismatch: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

// MARK: - Shape inference, one case per kind

extension LayerKind {
    /// The output shape for inputs of `shapes` (one sample each), produced by the values called `names`.
    func outputShape(for shapes: [[Int]], from names: [String]) throws -> [Int] {
        let inShape = shapes[0]
        switch self {
        case .conv2d(let c):
            guard inShape.count == 3 else { throw ShapeMismatch("conv2d needs a [C, H, W] input, got \(inShape)") }
            guard inShape[0] == c.inputChannels else {
                throw ShapeMismatch("in_channels is \(c.inputChannels) but the input has \(inShape[0]) channels")
            }
            guard inShape[1] + 2 * c.padding >= c.kernelSize, inShape[2] + 2 * c.padding >= c.kernelSize else {
                throw ShapeMismatch("kernel \(c.kernelSize) is larger than the padded input \(inShape)")
            }
            return [c.outputChannels, (inShape[1] + 2 * c.padding - c.kernelSize) / c.stride + 1,
                    (inShape[2] + 2 * c.padding - c.kernelSize) / c.stride + 1]
        case .linear(let f):
            guard inShape.count == 1 else { throw ShapeMismatch("linear needs a flat input; add a flatten layer before it (input is \(inShape))") }
            guard inShape[0] == f.inputFeatures else {
                throw ShapeMismatch("in_features is \(f.inputFeatures) but the input has \(inShape[0]) features")
            }
            return [f.outputFeatures]
        case .batchnorm2d(let b):
            guard inShape.count == 3, inShape[0] == b.features else {
                throw ShapeMismatch("num_features is \(b.features) but the input is \(inShape)")
            }
            return inShape
        case .maxpool2d(let p), .avgpool2d(let p):
            guard inShape.count == 3, inShape[1] >= p.kernelSize, inShape[2] >= p.kernelSize else {
                throw ShapeMismatch("pool kernel \(p.kernelSize) does not fit the input \(inShape)")
            }
            return [inShape[0], (inShape[1] - p.kernelSize) / p.stride + 1, (inShape[2] - p.kernelSize) / p.stride + 1]
        case .flatten:
            return [inShape.reduce(1, *)]
        case .relu, .relu6:
            return inShape
        case .add:
            guard shapes[1] == inShape else {
                throw ShapeMismatch("add inputs have different shapes: \(names[0]) \(inShape) vs \(names[1]) \(shapes[1])")
            }
            return inShape
        }
    }
}
