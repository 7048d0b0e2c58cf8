import QATCore
import QATIO
import QATModel

// One translation per ONNX op (ONNX Operators.md for the attribute semantics).
extension ONNXTranslator {
    mutating func translateConstant(_ index: Int) throws {
        let node = onnx.nodes[index]
        try checkAttributes(index, known: ["value", "value_float", "value_floats", "value_int", "value_ints"])
        var tensor: ONNXTensor
        switch node.attributes.first?.value {
        case .tensor(let value)?: tensor = value
        case .float(let value)?: tensor = ONNXTensor(name: "", dims: [], dataType: ONNXTensor.floatType, floats: [value], integers: nil)
        case .floats(let values)?: tensor = ONNXTensor(name: "", dims: [values.count], dataType: ONNXTensor.floatType, floats: values, integers: nil)
        case .int(let value)?: tensor = ONNXTensor(name: "", dims: [], dataType: ONNXTensor.int64Type, floats: [Float(value)], integers: [Int64(value)])
        case .ints(let values)?:
            tensor = ONNXTensor(name: "", dims: [values.count], dataType: ONNXTensor.int64Type, floats: values.map(Float.init), integers: values.map(Int64.init))
        default: throw unsupported(index, "needs a value attribute (value, value_float(s) or value_int(s))")
        }
        tensor.name = node.outputs[0]
        constants[node.outputs[0]] = tensor
        removedNodes += 1
    }

    /// Identity, and Dropout in inference (it passes its input through).
    mutating func translatePassThrough(_ index: Int) throws {
        let node = onnx.nodes[index]
        try checkAttributes(index, known: node.opType == "Dropout" ? ["seed", "ratio"] : [])
        if node.opType == "Dropout" {
            if node.outputs.count > 1, !node.outputs[1].isEmpty, !consumers(of: node.outputs[1]).isEmpty || graphOutputs.contains(node.outputs[1]) {
                throw unsupported(index, "the mask output is used; only inference Dropout (output 0) is supported")
            }
            if let mode = try constantInput(index, 2, role: "training_mode"), mode.floats.contains(where: { $0 != 0 }) {
                throw unsupported(index, "training_mode = true is not supported (inference only)")
            }
        }
        guard let source = node.inputs.first, !source.isEmpty else { throw error(index, "input 0 is missing") }
        if let producer = producers[source] {
            producers[node.outputs[0]] = producer
        } else if var tensor = constants[source] {
            tensor.name = node.outputs[0]
            constants[node.outputs[0]] = tensor
        } else {
            throw error(index, "input 0 (\"\(source)\") is not produced by any earlier node, initializer or graph input")
        }
        removedNodes += 1
    }

    // MARK: Convolution and pooling

    /// Strides, dilations and pads [top, left, bottom, right] of a 2-D conv or pool, with
    /// auto_pad SAME_UPPER/SAME_LOWER turned into explicit pads for the known input size.
    func windowGeometry(_ index: Int, kernel: [Int]) throws -> (stride: [Int], dilation: [Int], pads: [Int]) {
        let stride = try intsAttribute(index, "strides") ?? [1, 1]
        let dilation = try intsAttribute(index, "dilations") ?? [1, 1]
        guard stride.count == 2, stride.allSatisfy({ $0 > 0 }) else { throw error(index, "must be 2 positive numbers, got \(stride)", attribute: "strides") }
        guard dilation.count == 2, dilation.allSatisfy({ $0 > 0 }) else { throw error(index, "must be 2 positive numbers, got \(dilation)", attribute: "dilations") }
        let autoPad = try stringAttribute(index, "auto_pad") ?? "NOTSET"
        switch autoPad {
        case "NOTSET":
            let pads = try intsAttribute(index, "pads") ?? [0, 0, 0, 0]
            guard pads.count == 4, pads.allSatisfy({ $0 >= 0 }) else { throw error(index, "must be 4 numbers ≥ 0, got \(pads)", attribute: "pads") }
            // ONNX orders pads [top, left, bottom, right] (begins, then ends).
            return (stride, dilation, pads)
        case "VALID":
            return (stride, dilation, [0, 0, 0, 0])
        case "SAME_UPPER", "SAME_LOWER":
            guard let dims = shapes[onnx.nodes[index].inputs[0]], dims.count == 4,
                  case .value(let height) = dims[2], case .value(let width) = dims[3] else {
                throw unsupported(index, "\(autoPad) needs a known input size", attribute: "auto_pad")
            }
            var begins: [Int] = [], ends: [Int] = []
            for (axis, size) in [height, width].enumerated() {
                let output = (size + stride[axis] - 1) / stride[axis]
                let total = max((output - 1) * stride[axis] + (kernel[axis] - 1) * dilation[axis] + 1 - size, 0)
                let smaller = total / 2
                begins.append(autoPad == "SAME_UPPER" ? smaller : total - smaller)
                ends.append(autoPad == "SAME_UPPER" ? total - smaller : smaller)
            }
            return (stride, dilation, begins + ends)
        default:
            throw unsupported(index, "\"\(autoPad)\" is not supported (NOTSET, VALID, SAME_UPPER, SAME_LOWER)", attribute: "auto_pad")
        }
    }

    mutating func translateConv(_ index: Int) throws {
        try checkAttributes(index, known: ["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"])
        let input = try dataInput(index, 0)
        let weight = try requiredConstant(index, 1, role: "weight")
        guard weight.dims.count == 4 else {
            throw unsupported(index, "a \(weight.dims.count - 2)-D convolution (weight dims \(weight.dims)) is not supported: 2-D only")
        }
        let kernel = Array(weight.dims[2...])
        if let declared = try intsAttribute(index, "kernel_shape"), declared != kernel {
            throw error(index, "\(declared) does not match the weight's \(kernel)", attribute: "kernel_shape")
        }
        let groups = try intAttribute(index, "group") ?? 1
        let bias = try constantInput(index, 2, role: "bias")
        if let bias, bias.dims != [weight.dims[0]] { throw error(index, "bias dims \(bias.dims) do not match \(weight.dims[0]) output channels") }
        let geometry = try windowGeometry(index, kernel: kernel)
        let kind = try convolutionKind(index, outputChannels: weight.dims[0], inputChannels: weight.dims[1] * groups, kernel: kernel,
                                       groups: groups, geometry: geometry, hasBias: bias != nil)
        var weights = ["weight": Tensor(shape: weight.dims, storage: weight.floats)]
        if let bias { weights["bias"] = Tensor(shape: bias.dims, storage: bias.floats) }
        try addLayer(index, kind, inputs: [input], weights: weights)
    }

    /// The conv2d layer for these attributes.
    func convolutionKind(_ index: Int, outputChannels: Int, inputChannels: Int, kernel: [Int], groups: Int,
                         geometry: (stride: [Int], dilation: [Int], pads: [Int]), hasBias: Bool) throws -> LayerKind {
        guard groups >= 1, outputChannels % groups == 0 else {
            throw error(index, "\(groups) does not divide the \(outputChannels) output channels", attribute: "group")
        }
        let p = geometry.pads
        return .conv2d(ConvolutionAttributes(
            inputChannels: inputChannels, outputChannels: outputChannels, kernel: Size2D(height: kernel[0], width: kernel[1]),
            stride: Size2D(height: geometry.stride[0], width: geometry.stride[1]),
            padding: Padding2D(top: p[0], left: p[1], bottom: p[2], right: p[3]),
            dilation: Size2D(height: geometry.dilation[0], width: geometry.dilation[1]), groups: groups, hasBias: hasBias))
    }

    mutating func translatePool(_ index: Int) throws {
        let node = onnx.nodes[index]
        let isMax = node.opType == "MaxPool"
        try checkAttributes(index, known: isMax ? ["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"]
                                                : ["auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides"])
        let input = try dataInput(index, 0)
        guard node.outputs.count == 1 else { throw unsupported(index, "the Indices output is not supported") }
        guard let kernel = try intsAttribute(index, "kernel_shape") else { throw error(index, "missing", attribute: "kernel_shape") }
        guard kernel.count == 2, kernel.allSatisfy({ $0 > 0 }) else {
            throw unsupported(index, "\(kernel) is not supported: 2-D pooling only", attribute: "kernel_shape")
        }
        let geometry = try windowGeometry(index, kernel: kernel)
        let ceilMode = try intAttribute(index, "ceil_mode") ?? 0
        let countIncludePad = try intAttribute(index, "count_include_pad") ?? 0
        if (try intAttribute(index, "storage_order") ?? 0) != 0 { throw unsupported(index, "column-major indices are not supported", attribute: "storage_order") }
        let kind = try poolingKind(index, isMax: isMax, kernel: kernel, geometry: geometry, ceilMode: ceilMode != 0,
                                   countIncludePad: countIncludePad != 0)
        try addLayer(index, kind, inputs: [input])
    }

    func poolingKind(_ index: Int, isMax: Bool, kernel: [Int], geometry: (stride: [Int], dilation: [Int], pads: [Int]),
                     ceilMode: Bool, countIncludePad: Bool) throws -> LayerKind {
        guard geometry.dilation == [1, 1] else { throw unsupported(index, "\(geometry.dilation) is not supported ([1, 1] only)", attribute: "dilations") }
        let p = geometry.pads
        // ONNX's count_include_pad defaults to 0 (PyTorch's to true); max pooling ignores it (true, our default).
        let attributes = PoolingAttributes(
            kernel: Size2D(height: kernel[0], width: kernel[1]), stride: Size2D(height: geometry.stride[0], width: geometry.stride[1]),
            padding: Padding2D(top: p[0], left: p[1], bottom: p[2], right: p[3]), ceilMode: ceilMode,
            countIncludePad: isMax ? true : countIncludePad)
        return isMax ? .maxpool2d(attributes) : .avgpool2d(attributes)
    }

    mutating func translateGlobalAveragePool(_ index: Int) throws {
        try checkAttributes(index, known: [])
        let input = try dataInput(index, 0)
        if let dims = shapes[onnx.nodes[index].inputs[0]], dims.count != 4 {
            throw unsupported(index, "a rank-\(dims.count) input is not supported ([N, C, H, W] only)")
        }
        try addLayer(index, .globalAvgpool2d, inputs: [input])
    }

    // MARK: Linear layers

    /// Gemm: Y = alpha·A·B' + beta·C, with A the data [N, K]; B' = B or Bᵀ (transB).
    mutating func translateGemm(_ index: Int) throws {
        try checkAttributes(index, known: ["alpha", "beta", "transA", "transB"])
        let input = try dataInput(index, 0)
        guard (try intAttribute(index, "transA") ?? 0) == 0 else {
            throw unsupported(index, "1 is not supported (the data input must be [N, K])", attribute: "transA")
        }
        let transB = (try intAttribute(index, "transB") ?? 0) != 0
        let alpha = try floatAttribute(index, "alpha") ?? 1, beta = try floatAttribute(index, "beta") ?? 1
        let b = try requiredConstant(index, 1, role: "B")
        guard b.dims.count == 2 else { throw error(index, "B must be a matrix, got dims \(b.dims)") }
        // Our linear weight is [out, in]: Bᵀ when transB = 0.
        var weight = transB ? Tensor(shape: b.dims, storage: b.floats) : transposed(b)
        for i in weight.storage.indices { weight.storage[i] *= alpha }
        let outputs = weight.shape[0]
        var weights = ["weight": weight]
        if let c = try constantInput(index, 2, role: "C") {
            guard c.floats.count == 1 || (c.floats.count == outputs && c.dims.last == outputs && c.dims.dropLast().allSatisfy({ $0 == 1 })) else {
                throw unsupported(index, "C of dims \(c.dims) is not supported (a scalar or a vector of \(outputs), broadcast over the batch)")
            }
            weights["bias"] = Tensor(shape: [outputs], storage: (0..<outputs).map { beta * c.floats[c.floats.count == 1 ? 0 : $0] })
        }
        try checkFlat(index)
        try addLayer(index, .linear(LinearAttributes(inputFeatures: weight.shape[1], outputFeatures: outputs, hasBias: weights["bias"] != nil)),
                     inputs: [input], weights: weights)
    }

    /// MatMul with a constant [K, N] right operand; an Add of a vector right after it is its bias.
    mutating func translateMatMul(_ index: Int) throws {
        try checkAttributes(index, known: [])
        let node = onnx.nodes[index]
        let input = try dataInput(index, 0)
        let b = try requiredConstant(index, 1, role: "B")
        guard b.dims.count == 2 else { throw unsupported(index, "B of dims \(b.dims) is not supported (a [K, N] matrix only)") }
        try checkFlat(index)
        let weight = transposed(b)
        let outputs = weight.shape[0]
        var weights = ["weight": weight]
        var output = node.outputs[0]
        let readers = consumers(of: output)
        if readers.count == 1, !graphOutputs.contains(output), onnx.nodes[readers[0]].opType == "Add" {
            let add = onnx.nodes[readers[0]]
            let other = add.inputs.first { $0 != output }
            if let other, let bias = constants[other], bias.floats.count == outputs, bias.dims.last == outputs,
               bias.dims.dropLast().allSatisfy({ $0 == 1 }), add.inputs.filter({ $0 == output }).count == 1 {
                weights["bias"] = Tensor(shape: [outputs], storage: bias.floats)
                output = add.outputs[0]
                fold(readers[0])
            }
        }
        try addLayer(index, .linear(LinearAttributes(inputFeatures: weight.shape[1], outputFeatures: outputs, hasBias: weights["bias"] != nil)),
                     inputs: [input], weights: weights, output: output)
    }

    /// Gemm and MatMul read [N, K]: a known input shape of another rank is an error here, not later.
    private func checkFlat(_ index: Int) throws {
        if let dims = shapes[onnx.nodes[index].inputs[0]], dims.count != 2 {
            throw unsupported(index, "a rank-\(dims.count) data input is not supported (a flat [N, K] input only)")
        }
    }

    private func transposed(_ matrix: ONNXTensor) -> Tensor {
        let rows = matrix.dims[0], columns = matrix.dims[1]
        var storage = [Float](repeating: 0, count: rows * columns)
        for r in 0..<rows { for c in 0..<columns { storage[c * rows + r] = matrix.floats[r * columns + c] } }
        return Tensor(shape: [columns, rows], storage: storage)
    }

    // MARK: Normalisation and activations

    mutating func translateBatchNorm(_ index: Int) throws {
        let node = onnx.nodes[index]
        try checkAttributes(index, known: ["epsilon", "momentum", "training_mode"])
        let input = try dataInput(index, 0)
        if (try intAttribute(index, "training_mode") ?? 0) != 0 || node.outputs.dropFirst().contains(where: { !$0.isEmpty }) {
            throw unsupported(index, "training mode (running statistics as outputs) is not supported: inference form only", attribute: "training_mode")
        }
        let roles = ["scale", "B", "input_mean", "input_var"]
        let parameters = try roles.indices.map { try requiredConstant(index, $0 + 1, role: roles[$0]) }
        let features = parameters[0].floats.count
        for (role, tensor) in zip(roles, parameters) where tensor.dims != [features] {
            throw error(index, "\(role) has dims \(tensor.dims), expected [\(features)]")
        }
        let epsilon = try floatAttribute(index, "epsilon") ?? 1e-5
        // ONNX's momentum weighs the old statistics (default 0.9); ours weighs the new batch (PyTorch's 0.1).
        let momentum = 1 - (try floatAttribute(index, "momentum") ?? 0.9)
        guard epsilon > 0, epsilon.isFinite else { throw error(index, "must be > 0, got \(epsilon)", attribute: "epsilon") }
        guard (0...1).contains(momentum) else { throw error(index, "must be in [0, 1]", attribute: "momentum") }
        let names = ["weight", "bias", "running_mean", "running_var"]
        try addLayer(index, .batchnorm2d(BatchNormAttributes(features: features, epsilon: epsilon, momentum: momentum)), inputs: [input],
                     weights: Dictionary(uniqueKeysWithValues: zip(names, parameters.map { Tensor(shape: [features], storage: $0.floats) })))
    }

    mutating func translateActivation(_ index: Int) throws {
        let node = onnx.nodes[index]
        let input = try dataInput(index, 0)
        let kind: LayerKind
        switch node.opType {
        case "Relu":
            try checkAttributes(index, known: [])
            kind = .relu
        case "Sigmoid":
            try checkAttributes(index, known: [])
            kind = .sigmoid
        case "HardSwish":
            try checkAttributes(index, known: [])
            kind = .hardSwish
        case "LeakyRelu":
            try checkAttributes(index, known: ["alpha"])
            kind = .leakyReLU(LeakyReLUAttributes(negativeSlope: try floatAttribute(index, "alpha") ?? 0.01))
        default:  // HardSigmoid
            try checkAttributes(index, known: ["alpha", "beta"])
            kind = .hardSigmoid(HardSigmoidAttributes(alpha: try floatAttribute(index, "alpha") ?? 0.2, beta: try floatAttribute(index, "beta") ?? 0.5))
        }
        try addLayer(index, kind, inputs: [input])
    }

    /// Clip's bounds are inputs from opset 11 on (attributes before).
    mutating func translateClip(_ index: Int) throws {
        try checkAttributes(index, known: opset < 11 ? ["min", "max"] : [])
        let input = try dataInput(index, 0)
        func bound(_ k: Int, _ name: String) throws -> Float? {
            if opset < 11 { return try floatAttribute(index, name) }
            guard let tensor = try constantInput(index, k, role: name) else { return nil }
            guard tensor.floats.count == 1 else { throw error(index, "\(name) must be a scalar, got dims \(tensor.dims)") }
            return tensor.floats[0]
        }
        let low = try bound(1, "min"), high = try bound(2, "max")
        let kind = try clipKind(index, low: low, high: high)
        try addLayer(index, kind, inputs: [input])
    }

    /// Clip(0, 6) is relu6, Clip(0, none) relu, other bounds a clip.
    func clipKind(_ index: Int, low: Float?, high: Float?) throws -> LayerKind {
        let low = low ?? -.infinity, high = high ?? .infinity
        guard !low.isNaN, !high.isNaN, low <= high, low < .infinity, high > -.infinity else {
            throw error(index, "bounds (\(low), \(high)) are not an interval of numbers")
        }
        switch (low, high) {
        case (0, 6): return .relu6
        case (0, .infinity): return .relu
        default: return .clip(ClipAttributes(min: low, max: high))
        }
    }

    // MARK: Shapes and element-wise ops

    /// Reshape to [N, -1] (or [N, C·H·W], with 0 or the batch size for N) is a flatten.
    mutating func translateReshape(_ index: Int) throws {
        try checkAttributes(index, known: ["allowzero"])
        let input = try dataInput(index, 0)
        let shape = try requiredConstant(index, 1, role: "shape")
        guard let target = shape.integers else { throw error(index, "the shape input must be int64") }
        if (try intAttribute(index, "allowzero") ?? 0) != 0, target.contains(0) {
            throw unsupported(index, "allowzero with a 0 in the shape is not supported", attribute: "allowzero")
        }
        let inputDims = shapes[onnx.nodes[index].inputs[0]]
        var features: Int64? = nil
        if let dims = inputDims?.dropFirst() {
            features = dims.reduce(Int64(1)) { product, dim in
                guard let product, case .value(let size) = dim else { return nil }
                return product * Int64(size)
            }
        }
        guard target.count == 2, target[1] == -1 || (features != nil && target[1] == features!) else {
            throw unsupported(index, "reshape to \(target) is not supported (only [N, -1]: flatten all but the batch axis)")
        }
        try addLayer(index, .flatten, inputs: [input])
    }

    /// Add and Mul with numpy broadcasting; a constant operand (initializer or Constant node)
    /// becomes a `constant` layer, shared by every node that reads it.
    mutating func translateBinary(_ index: Int) throws {
        try checkAttributes(index, known: [])
        let node = onnx.nodes[index]
        guard node.inputs.count == 2 else { throw error(index, "needs 2 inputs") }
        guard !node.inputs.allSatisfy({ constants[$0] != nil && producers[$0] == nil }) else {
            throw unsupported(index, "both inputs are constants (fold them before exporting)")
        }
        let operands = try (0..<2).map { try operandLayer(index, $0) }
        try addLayer(index, node.opType == "Mul" ? .mul : .add, inputs: operands)
    }

    /// Concat along the channel axis (axis 1 of [N, C, …]).
    mutating func translateConcat(_ index: Int) throws {
        try checkAttributes(index, known: ["axis"])
        let node = onnx.nodes[index]
        guard let axis = try intAttribute(index, "axis") else { throw error(index, "missing", attribute: "axis") }
        let rank = shapes[node.inputs[0]]?.count
        guard axis == 1 || (rank != nil && axis == 1 - rank!) else {
            throw unsupported(index, "axis \(axis) is not supported (the channel axis 1 only)", attribute: "axis")
        }
        guard node.inputs.count >= 2 else { throw unsupported(index, "one input: use Identity") }
        let operands = try node.inputs.indices.map { try dataInput(index, $0) }
        try addLayer(index, .concat, inputs: operands)
    }

    /// The layer holding input `k` of node `index`; a constant input gets a `constant` layer
    /// (named after the initializer) the first time it is read.
    mutating func operandLayer(_ index: Int, _ k: Int) throws -> String {
        let node = onnx.nodes[index]
        let value = node.inputs[k]
        if let producer = producers[value] { return producer }
        guard let tensor = constants[value] else { return try dataInput(index, k) }
        // The constant broadcasts against the other operand's full shape [N, …]: a leading axis
        // as long as the full rank is the batch axis and must be 1 (a value shared by every sample).
        var shape = tensor.dims
        let otherRank = shapes[node.inputs[1 - k]]?.count ?? sampleShape.count + 1
        if shape.count >= otherRank {
            guard shape.count == otherRank, shape.first == 1 else {
                throw unsupported(index, "input \(k) (\"\(value)\") of dims \(tensor.dims) varies along the batch axis; a constant operand must be the same for every sample")
            }
            shape.removeFirst()
        }
        if shape.isEmpty { shape = [1] }
        let name = uniqueName(sanitisedName(value, fallback: "constant"))
        layers.append(LayerSpec(name: name, kind: .constant(ConstantAttributes(shape: shape)), inputs: []))
        layerNodes.append(index)
        tensors["\(name).value"] = Tensor(shape: [1] + shape, storage: tensor.floats)
        producers[value] = name
        return name
    }
}
