import QATCore
import QATIO

/// The structure of a model spec, derived once: for every layer the values it reads, for every
/// value the layers reading it, and every value's shape for one sample (no batch axis).
///
/// Values are numbered by the layer producing them; −1 is the model input. The last layer's
/// output is the model's output; a classifier's is class scores [K] (`requireClassifier`). The model, the quantization plan,
/// `qat check model`, the deployer and the INT8 engine all read their structure from here.
public struct ModelGraph: Sendable {
    /// Who reads whom.
    public let wiring: Wiring
    /// inputShapes[i][k]: the shape of layer i's k-th input.
    public let inputShapes: [[[Int]]]
    /// outputShapes[i]: the shape of layer i's output.
    public let outputShapes: [[Int]]
    /// conv layer → the BatchNorm that is its only reader (and not the model output): the BN
    /// folds into the conv on the INT8 engine (docs/ALGORITHMS.md §4) when the conv is quantized.
    public let batchNormFolds: [Int: Int]

    /// Checks the wiring and every shape; errors name `file` and the layer, before any weights exist.
    public init(_ spec: ModelSpec, file: String = "model spec") throws {
        wiring = try Wiring(spec, file: file)
        var inputShapes: [[[Int]]] = []
        var outputShapes: [[Int]] = []
        for (index, layer) in spec.layers.enumerated() {
            let sources = wiring.sources[index]
            let shapes = sources.map { $0 < 0 ? spec.inputShape : outputShapes[$0] }
            let operands = sources.map { source in
                Operand(name: source < 0 ? "input" : spec.layers[source].name,
                        isConstant: source >= 0 && spec.layers[source].kind.layerType == .constant)
            }
            do {
                outputShapes.append(try layer.kind.outputShape(for: shapes, from: operands))
            } catch let mismatch as ShapeMismatch {
                throw InputError(file: file, keyPath: "layers[\(index)] (\(layer.name))", message: mismatch.message)
            }
            inputShapes.append(shapes)
        }
        if case .constant = spec.layers.last?.kind {
            throw InputError(file: file, keyPath: "layers[\(spec.layers.count - 1)] (\(spec.layers.last!.name))",
                             message: "a constant cannot be the model's output")
        }
        self.inputShapes = inputShapes
        self.outputShapes = outputShapes
        var folds: [Int: Int] = [:]
        for (index, layer) in spec.layers.enumerated() where layer.kind.foldsFollowingBatchNorm && index < spec.layers.count - 1 {
            let readers = wiring.consumers(of: index)
            if readers.count == 1, case .batchnorm2d = spec.layers[readers[0]].kind { folds[index] = readers[0] }
        }
        batchNormFolds = folds
    }

    /// Checks that the model outputs class scores [K], as training, evaluation, deploy, verify
    /// and the debugging tools need (single-op graphs, e.g. imported ONNX node tests, need not).
    public func requireClassifier(file: String = "model spec") throws {
        guard outputShapes.last?.count == 1 else {
            throw InputError(file: file, keyPath: "layers", message: "the last layer must output class scores [K], got \(outputShapes.last ?? [])")
        }
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
    /// K of a classifier's output [K] (see `requireClassifier`).
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
                let readsNothing = layer.kind.layerType.inputCount == 0...0
                let layerSources = try layer.inputs.isEmpty ? (readsNothing ? [] : [index - 1]) : layer.inputs.map { name in
                    guard let source = indexByName[name] else {
                        throw fail("unknown input \"\(name)\": it must name an earlier layer or \"input\"")
                    }
                    return source
                }
                let expected = layer.kind.layerType.inputCount
                guard expected.contains(layerSources.count) else {
                    let count = expected.upperBound == Int.max ? "\(expected.lowerBound) or more" : "\(expected.lowerBound)"
                    throw fail("\(layer.kind.typeName) reads \(count) input(s), got \(layerSources.count)")
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

/// A value a layer reads, as shape inference needs to know it.
struct Operand {
    let name: String
    /// A constant layer's output: it has no batch axis of its own (it broadcasts over the batch).
    let isConstant: Bool
}

// MARK: - Shape inference, one case per kind

extension LayerKind {
    /// The output shape for inputs of `shapes` (one sample each), produced by `operands`.
    func outputShape(for shapes: [[Int]], from operands: [Operand]) throws -> [Int] {
        let names = operands.map(\.name)
        if case .add = self {} else if case .mul = self {} else if let constant = operands.first(where: \.isConstant) {
            throw ShapeMismatch("reads the constant \(constant.name): only add and mul may read a constant")
        }
        guard let inShape = shapes.first else {
            guard case .constant(let c) = self else { throw ShapeMismatch("\(typeName) needs an input") }
            return c.shape
        }
        func image(_ what: String) throws -> (channels: Int, height: Int, width: Int) {
            guard inShape.count == 3 else { throw ShapeMismatch("\(what) needs a [C, H, W] input, got \(inShape)") }
            return (inShape[0], inShape[1], inShape[2])
        }
        switch self {
        case .conv2d(let c):
            let x = try image("conv2d")
            guard x.channels == c.inputChannels else {
                throw ShapeMismatch("in_channels is \(c.inputChannels) but the input has \(x.channels) channels")
            }
            let height = slidingWindowOutput(x.height, c.kernel.height, c.stride.height, c.padding.top, c.padding.bottom, c.dilation.height)
            let width = slidingWindowOutput(x.width, c.kernel.width, c.stride.width, c.padding.left, c.padding.right, c.dilation.width)
            guard height > 0, width > 0 else {
                let dilated = c.dilation == Size2D(1) ? "" : " (dilated)"
                throw ShapeMismatch("kernel \(c.kernel.height)×\(c.kernel.width)\(dilated) is larger than the padded input \(inShape)")
            }
            return [c.outputChannels, height, width]
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
            let x = try image(typeName)
            let height = slidingWindowOutput(x.height, p.kernel.height, p.stride.height, p.padding.top, p.padding.bottom, 1, ceilMode: p.ceilMode)
            let width = slidingWindowOutput(x.width, p.kernel.width, p.stride.width, p.padding.left, p.padding.right, 1, ceilMode: p.ceilMode)
            guard height > 0, width > 0 else {
                throw ShapeMismatch("pool kernel \(p.kernel.height == p.kernel.width ? "\(p.kernel.height)" : "\(p.kernel.height)×\(p.kernel.width)") does not fit the input \(inShape)")
            }
            return [x.channels, height, width]
        case .globalAvgpool2d:
            return [try image("global_avgpool2d").channels, 1, 1]
        case .flatten:
            return [inShape.reduce(1, *)]
        case .relu, .relu6, .clip, .leakyReLU, .sigmoid, .hardSigmoid, .hardSwish:
            return inShape
        case .add, .mul:
            return try broadcastShape(shapes, operands)
        case .concat:
            var channels = 0
            for (shape, name) in zip(shapes, names) {
                guard shape.count == inShape.count, shape.dropFirst() == inShape.dropFirst() else {
                    throw ShapeMismatch("concat inputs must agree in all but the channel axis: \(names[0]) \(inShape) vs \(name) \(shape)")
                }
                channels += shape[0]
            }
            return [channels] + inShape.dropFirst()
        case .constant:
            throw ShapeMismatch("a constant reads no inputs")
        }
    }

    /// numpy broadcasting of two sample shapes (aligned at the last axis; sizes equal or 1).
    /// Two computed values need the same rank, since each carries a batch axis in front; a
    /// constant broadcasts over the batch, so it may have fewer axes.
    private func broadcastShape(_ shapes: [[Int]], _ operands: [Operand]) throws -> [Int] {
        let (a, b) = (shapes[0], shapes[1])
        func mismatch() -> ShapeMismatch {
            ShapeMismatch("\(typeName) inputs do not broadcast: \(operands[0].name) \(a) vs \(operands[1].name) \(b)")
        }
        switch (operands[0].isConstant, operands[1].isConstant) {
        case (true, true): throw ShapeMismatch("\(typeName) of two constants: \(operands[0].name) and \(operands[1].name)")
        case (false, false): guard a.count == b.count else { throw mismatch() }
        case (true, false): guard a.count <= b.count else { throw mismatch() }
        case (false, true): guard b.count <= a.count else { throw mismatch() }
        }
        let rank = max(a.count, b.count)
        let paddedA = Array(repeating: 1, count: rank - a.count) + a, paddedB = Array(repeating: 1, count: rank - b.count) + b
        return try zip(paddedA, paddedB).map { x, y in
            guard x == y || x == 1 || y == 1 else { throw mismatch() }
            return max(x, y)
        }
    }
}

/// Windows along one axis (ONNX/PyTorch rule): ⌊(in + padBegin + padEnd − dilation·(k − 1) − 1) / stride⌋ + 1,
/// rounded up with `ceilMode`, where a last window starting past the input and the begin padding
/// is dropped. 0 or less when the window does not fit.
func slidingWindowOutput(_ input: Int, _ kernel: Int, _ stride: Int, _ padBegin: Int, _ padEnd: Int, _ dilation: Int,
                         ceilMode: Bool = false) -> Int {
    let span = input + padBegin + padEnd - dilation * (kernel - 1) - 1
    guard span >= 0 else { return 0 }
    var count = (ceilMode ? (span + stride - 1) / stride : span / stride) + 1
    if ceilMode && (count - 1) * stride >= input + padBegin { count -= 1 }
    return count
}

extension LayerKind {
    /// A BatchNorm that is this layer's only reader folds into it at deployment (grouped and
    /// depthwise convs included).
    public var foldsFollowingBatchNorm: Bool {
        if case .conv2d = self { return true }
        return false
    }
}
