import QATCore
import QATIO
import QATModel

/// Walks the ONNX graph node by node (the checker has made sure it is in topological order) and
/// builds our layers and their weights. Values are tracked by ONNX name: `producers` says which
/// of our layers (or "input") holds a value, `constants` which values are known tensors.
struct ONNXTranslator {
    let file: String
    let onnx: ONNXModel
    let opset: Int
    var constants: [String: ONNXTensor] = [:]
    /// ONNX value name → the layer computing it ("input" for the image).
    var producers: [String: String] = [:]
    /// ONNX value name → its full shape (batch first), from the file and shape inference.
    var shapes: [String: [ONNXDimension]] = [:]
    var layers: [LayerSpec] = []
    /// layerNodes[i]: the node layer i comes from (for a constant, the node that reads it).
    var layerNodes: [Int] = []
    /// Checkpoint tensors by dotted name (`conv1.weight`, `bn1.running_mean`).
    var tensors: [String: Tensor] = [:]
    var sampleShape: [Int] = []
    var removedNodes = 0
    private var usedNames: Set<String> = ["input"]
    /// Add nodes folded into the MatMul before them, as its bias.
    private var foldedNodes: Set<Int> = []

    /// The ops we translate, for error messages.
    static let supportedOps = "Conv (2-D), Gemm, MatMul, BatchNormalization, Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, "
        + "Add, Mul, MaxPool, AveragePool (2-D), GlobalAveragePool, Concat (axis 1), Flatten (axis 1), Reshape to [N, -1], "
        + "Dropout, Identity, Constant"

    init(file: String, onnx: ONNXModel, opset: Int) {
        self.file = file
        self.onnx = onnx
        self.opset = opset
        for tensor in onnx.initializers { constants[tensor.name] = tensor }
        for value in onnx.inputs + onnx.valueInfos + onnx.outputs {
            if let dims = value.dims { shapes[value.name] = dims }
        }
    }

    // MARK: Errors

    func error(_ nodeIndex: Int, _ message: String, attribute: String? = nil) -> InputError {
        let node = onnx.nodes[nodeIndex]
        let label = node.name.isEmpty ? "#\(nodeIndex)" : "\"\(node.name)\""
        let at = attribute.map { " attribute \($0):" } ?? ""
        return InputError(file: file, keyPath: "node \(label) (\(node.opType))", message: at.isEmpty ? message : String(at.dropFirst()) + " " + message)
    }

    /// An error our spec checks found in layer `layers[i]…`, retold for the node it came from.
    func retold(_ error: InputError) -> InputError {
        guard error.keyPath.hasPrefix("layers["), let close = error.keyPath.firstIndex(of: "]"),
              let layer = Int(error.keyPath.dropFirst("layers[".count).prefix(upTo: close)), layerNodes.indices.contains(layer) else {
            return InputError(file: file, keyPath: error.keyPath, message: error.message)
        }
        var detail = String(error.keyPath[error.keyPath.index(after: close)...])
        if detail.hasPrefix(".") { detail.removeFirst() }
        if detail.hasPrefix(" (") { detail = "" }  // "layers[3] (name)": the node names it already
        // `detail` is our spec key (padding, in_channels, …), not an ONNX attribute.
        return self.error(layerNodes[layer], detail.isEmpty ? error.message : "\(detail): \(error.message)")
    }

    func unsupported(_ nodeIndex: Int, _ message: String, attribute: String? = nil) -> InputError {
        error(nodeIndex, "\(message) (supported ops: \(Self.supportedOps))", attribute: attribute)
    }

    // MARK: Graph input and output

    /// The first graph input that is not an initializer is the image; its first dim is the batch.
    mutating func readInputAndOutput() throws {
        let dataInputs = onnx.inputs.filter { constants[$0.name] == nil }
        guard let input = dataInputs.first else { throw InputError(file: file, keyPath: "graph.input", message: "the graph has no input besides initializers") }
        guard dataInputs.count == 1 else {
            throw InputError(file: file, keyPath: "graph.input \"\(dataInputs[1].name)\"",
                             message: "a second graph input that is not an initializer is not supported (one image input only)")
        }
        guard input.elementType == ONNXTensor.floatType else {
            throw InputError(file: file, keyPath: "graph.input \"\(input.name)\"", message: "element type \(input.elementType) is not supported (float32 only)")
        }
        guard let dims = input.dims, dims.count >= 2 else {
            throw InputError(file: file, keyPath: "graph.input \"\(input.name)\"",
                             message: "needs a known shape [N, …] of rank 2 or more with the batch axis first, got \(input.dims.map { "\($0)" } ?? "no shape")")
        }
        sampleShape = try dims.dropFirst().enumerated().map { k, dim in
            guard case .value(let size) = dim, size > 0 else {
                throw InputError(file: file, keyPath: "graph.input \"\(input.name)\"",
                                 message: "dim \(k + 1) is \(dim): only the first (batch) dim may be dynamic")
            }
            return size
        }
        producers[input.name] = "input"
    }

    func checkOutput() throws {
        guard onnx.outputs.count == 1 else {
            throw InputError(file: file, keyPath: "graph.output", message: "\(onnx.outputs.count) graph outputs; exactly one is supported")
        }
        let output = onnx.outputs[0].name
        guard let last = layers.last, producers[output] == last.name else {
            throw InputError(file: file, keyPath: "graph.output \"\(output)\"",
                             message: "must be computed by the graph's last node (a single-output chain or DAG ending in one layer)")
        }
    }

    // MARK: Nodes

    mutating func translate(node index: Int) throws {
        let node = onnx.nodes[index]
        guard !foldedNodes.contains(index) else { return }
        guard node.domain.isEmpty || node.domain == "ai.onnx" else {
            throw unsupported(index, "domain \"\(node.domain)\" is not supported")
        }
        switch node.opType {
        case "Constant":
            try translateConstant(index)
        case "Identity", "Dropout":
            try translatePassThrough(index)
        case "Conv": try translateConv(index)
        case "Gemm": try translateGemm(index)
        case "MatMul": try translateMatMul(index)
        case "BatchNormalization": try translateBatchNorm(index)
        case "Relu", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu": try translateActivation(index)
        case "GlobalAveragePool": try translateGlobalAveragePool(index)
        case "Concat": try translateConcat(index)
        case "Clip": try translateClip(index)
        case "MaxPool", "AveragePool": try translatePool(index)
        case "Flatten":
            let axis = try intAttribute(index, "axis") ?? 1
            let rank = shapes[node.inputs[0]]?.count
            guard axis == 1 || (rank != nil && axis == 1 - rank!) else { throw unsupported(index, "axis \(axis) is not supported (only 1: [N, C, H, W] → [N, C·H·W])", attribute: "axis") }
            try addLayer(index, .flatten, inputs: [try dataInput(index, 0)])
        case "Reshape": try translateReshape(index)
        case "Add", "Mul": try translateBinary(index)
        default:
            throw unsupported(index, "op \(node.opType) is not supported")
        }
    }

    // MARK: Helpers for the op translations (ONNXOps.swift)

    /// The layer holding node input `k`, which must be a computed value, not a constant.
    func dataInput(_ index: Int, _ k: Int) throws -> String {
        let node = onnx.nodes[index]
        guard k < node.inputs.count, !node.inputs[k].isEmpty else { throw error(index, "input \(k) is missing") }
        if let producer = producers[node.inputs[k]] { return producer }
        if constants[node.inputs[k]] != nil {
            throw unsupported(index, "input \(k) (\"\(node.inputs[k])\") is a constant where a computed value is expected")
        }
        throw error(index, "input \(k) (\"\(node.inputs[k])\") is not produced by any earlier node, initializer or graph input")
    }

    /// Node input `k` as a constant tensor (initializer, Constant node or fed extra input);
    /// nil if the optional input is absent.
    func constantInput(_ index: Int, _ k: Int, role: String) throws -> ONNXTensor? {
        let node = onnx.nodes[index]
        guard k < node.inputs.count, !node.inputs[k].isEmpty else { return nil }
        guard let tensor = constants[node.inputs[k]] else {
            throw error(index, "input \(k) (\(role), \"\(node.inputs[k])\") must be an initializer: a missing initializer, or a computed \(role), which is not supported")
        }
        return tensor
    }

    func requiredConstant(_ index: Int, _ k: Int, role: String) throws -> ONNXTensor {
        guard let tensor = try constantInput(index, k, role: role) else { throw error(index, "input \(k) (\(role)) is missing") }
        return tensor
    }

    func intAttribute(_ index: Int, _ name: String) throws -> Int? {
        switch onnx.nodes[index].attributes[name] {
        case nil: return nil
        case .int(let value)?: return value
        default: throw error(index, "expected an int", attribute: name)
        }
    }

    func intsAttribute(_ index: Int, _ name: String) throws -> [Int]? {
        switch onnx.nodes[index].attributes[name] {
        case nil: return nil
        case .ints(let values)?: return values
        default: throw error(index, "expected a list of ints", attribute: name)
        }
    }

    func floatAttribute(_ index: Int, _ name: String) throws -> Float? {
        switch onnx.nodes[index].attributes[name] {
        case nil: return nil
        case .float(let value)?:
            guard value.isFinite else { throw error(index, "must be a finite number, got \(value)", attribute: name) }
            return value
        default: throw error(index, "expected a float", attribute: name)
        }
    }

    func stringAttribute(_ index: Int, _ name: String) throws -> String? {
        switch onnx.nodes[index].attributes[name] {
        case nil: return nil
        case .string(let value)?: return value
        default: throw error(index, "expected a string", attribute: name)
        }
    }

    /// Rejects attributes the translation does not read, so none is silently ignored.
    func checkAttributes(_ index: Int, known: Set<String>) throws {
        for name in onnx.nodes[index].attributes.keys.sorted() where !known.contains(name) {
            throw unsupported(index, "is not supported (this op reads: \(known.sorted().joined(separator: ", ")))", attribute: name)
        }
    }

    /// A layer named after the node (see `sanitisedName`), unique within the model.
    mutating func layerName(for index: Int) -> String {
        let node = onnx.nodes[index]
        return uniqueName(sanitisedName(node.name, fallback: "\(sanitisedName(node.opType, fallback: "node"))_\(index)"))
    }

    /// `base`, or `base_2`, `base_3`, … if taken.
    mutating func uniqueName(_ base: String) -> String {
        var name = base
        var suffix = 2
        while usedNames.contains(name) {
            name = "\(base)_\(suffix)"
            suffix += 1
        }
        usedNames.insert(name)
        return name
    }

    /// Appends a layer for node `index` and makes it the producer of the node's first output.
    @discardableResult
    mutating func addLayer(_ index: Int, _ kind: LayerKind, inputs: [String], weights: [String: Tensor] = [:],
                           output: String? = nil) throws -> String {
        let name = layerName(for: index)
        // Reading the previous layer (or the image, first) is implicit in specs.
        let implicit = [layers.last?.name ?? "input"]
        layers.append(LayerSpec(name: name, kind: kind, inputs: inputs == implicit ? [] : inputs))
        layerNodes.append(index)
        for (suffix, tensor) in weights { tensors["\(name).\(suffix)"] = tensor }
        producers[output ?? onnx.nodes[index].outputs[0]] = name
        return name
    }

    /// Nodes folded into an earlier node are skipped when their turn comes.
    mutating func fold(_ index: Int) { foldedNodes.insert(index); removedNodes += 1 }

    /// The nodes reading `value`.
    func consumers(of value: String) -> [Int] {
        onnx.nodes.indices.filter { onnx.nodes[$0].inputs.contains(value) }
    }

    var graphOutputs: Set<String> { Set(onnx.outputs.map(\.name)) }
}
