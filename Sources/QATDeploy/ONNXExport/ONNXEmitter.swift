import Foundation
import QATCore
import QATIO
import QATModel
import QATONNX

/// Turns deploy nodes, in execution order, into ONNX nodes and initializers. A deploy node's
/// output is the ONNX value named after the node: int8 codes when the node has an output
/// quantizer, float otherwise. Helper values and nodes are named `<node>/<what>`.
struct ONNXEmitter {
    let file: String
    var graph: ONNXGraphDescription
    /// Deploy node name → its ONNX value and, for codes, their quantizer.
    var values: [String: (name: String, codes: QuantizationGrid?)] = ["input": ("input", nil)]
    /// Codes value → the float value its DequantizeLinear gives (one per codes value).
    private var dequantized: [String: String] = [:]
    /// Float export: BN momentum by layer (ONNX's is 1 − ours), so that an import gives it back.
    var batchNormMomentum: [String: Float] = [:]
    var profile = ONNXExportProfile.standard
    /// Integer conv/linear as ConvInteger/MatMulInteger with the engine's requantization spelled out (`--exact`).
    var exact = false
    var lastValue = "input"

    init(name: String, inputShape: [Int], opset: Int, file: String) throws {
        guard ONNXExporter.supportedOpsets.contains(opset) else {
            throw InputError(file: file, keyPath: "--opset",
                             message: "opset \(opset) is not supported (\(ONNXExporter.supportedOpsets.lowerBound) to \(ONNXExporter.supportedOpsets.upperBound): per-channel DequantizeLinear needs 13, libonnx 1.12 knows up to 17)")
        }
        self.file = file
        graph = ONNXGraphDescription(opset: opset, graphName: name)
        graph.inputs = [ONNXValueDescription(name: "input", type: .float, dims: [-1] + inputShape)]
    }

    mutating func finish(outputDims: [Int]) throws -> Data {
        let output = floatValue(lastValue)
        graph.outputs = [ONNXValueDescription(name: output, type: .float, dims: [-1] + outputDims)]
        return try graph.serialized(file: file)
    }

    // MARK: Values

    /// The float value of deploy node `node`'s output (dequantizing codes once).
    mutating func floatValue(_ node: String) -> String {
        let (name, codes) = values[node]!
        guard let codes else { return name }
        if let done = dequantized[name] { return done }
        let (scale, zeroPoint) = quantizerInitializers(codes, for: name)
        let result = name + "/dequantized"
        add("DequantizeLinear", name: name + "/dequantize", [name, scale, zeroPoint], result)
        dequantized[name] = result
        return result
    }

    /// The tensorrt profile takes symmetric int8 grids only (zero point 0). Every codes value is
    /// on some integer layer's input grid, so checking those inputs covers every QuantizeLinear
    /// and names the layer whose activation quantizer would have to change.
    func requireExpressible(_ q: QuantizationGrid, layer: String) throws {
        try requireQuantizeLinearGrid(q, layer: layer)
        guard profile == .tensorrt, q.offset != 0 else { return }
        throw InputError(file: file, keyPath: "layer \(layer)",
                         message: "cannot be expressed in the tensorrt profile: its activation quantizer has zero point \(q.offset) "
                             + "(scale \(q.scale)); TensorRT takes symmetric int8 only (zero point 0)")
    }

    /// Every profile: QuantizeLinear (and the float ops that simulate a 16-bit grid) round half to
    /// even and saturate at −128, so a grid with another tie rule (Vitis AI's `round_mode`) or a
    /// narrow range cannot be written. Weights are written as codes and need no check.
    func requireQuantizeLinearGrid(_ q: QuantizationGrid, layer: String) throws {
        if q.roundMode != .halfEven {
            throw InputError(file: file, keyPath: "layer \(layer)",
                             message: "cannot be exported as QDQ ONNX: its input quantizer rounds with round_mode \(q.roundMode.rawValue), "
                                + "and ONNX QuantizeLinear rounds half to even (quantize with round_mode half_even to export)")
        }
        if q.narrowRange {
            throw InputError(file: file, keyPath: "layer \(layer)",
                             message: "cannot be exported as QDQ ONNX: its input quantizer has a narrow range (codes from \(q.qmin)), "
                                + "and ONNX QuantizeLinear saturates at \(-(1 << (q.bits - 1))) (quantize with narrow_range false to export)")
        }
    }

    /// An integer layer's input on its grid (s_d, o_d), dequantized: the codes themselves when
    /// they come on that grid, else the value quantized onto it first (as the engine does:
    /// a float input, e.g. an add's sum read by a conv and by another add, is quantized by each
    /// integer reader).
    private mutating func codesInput(_ node: String, on q: QuantizationGrid, reader: String) -> String {
        floatValue(codesValue(node, on: q, reader: reader))
    }

    /// The deploy node `codes` whose value is `node`'s output on the grid `q`: `node` itself when
    /// its codes are on that grid, else `<reader>/input`, made by a QuantizeLinear of its float value.
    mutating func codesValue(_ node: String, on q: QuantizationGrid, reader: String) -> String {
        if let codes = values[node]!.codes, codes == q { return node }
        let (scale, zeroPoint) = quantizerInitializers(q, for: reader + "/input")
        add("QuantizeLinear", name: reader + "/input/quantize", [floatValue(node), scale, zeroPoint], reader + "/input")
        values[reader + "/input"] = (reader + "/input", q)
        return reader + "/input"
    }

    /// Scalar scale (float) and zero point (int8) initializers of a grid, named after `value`.
    mutating func quantizerInitializers(_ q: QuantizationGrid, for value: String) -> (scale: String, zeroPoint: String) {
        let (scale, zeroPoint) = (value + "/scale", value + "/zero_point")
        if !graph.initializers.contains(where: { $0.name == scale }) {
            graph.initializers.append(ONNXInitializer(name: scale, floats: [q.scale], dims: []))
            graph.initializers.append(ONNXInitializer(name: zeroPoint, int8s: [Int8(q.offset)], dims: []))
        }
        return (scale, zeroPoint)
    }

    mutating func floatConstant(_ name: String, _ value: Float) -> String {
        if !graph.initializers.contains(where: { $0.name == name }) {
            graph.initializers.append(ONNXInitializer(name: name, floats: [value], dims: []))
        }
        return name
    }

    mutating func add(_ op: String, name: String, _ inputs: [String], _ output: String,
                      _ attributes: [(name: String, value: ONNXAttributeValue)] = []) {
        graph.nodes.append(ONNXNodeDescription(op, name: name, inputs: inputs, outputs: [output], attributes: attributes))
    }

    // MARK: Nodes

    mutating func emit(_ node: DeployNode, warn: (String) -> Void) throws {
        if exact, let qd = node.inputQuantizer, node.op == .conv2d || node.op == .linear {
            return try emitExactInteger(node, on: qd)
        }
        let inputs = node.inputs.map { floatValue($0) }
        // The float result of the op, named after the node when it is the node's output.
        let floatName = node.output == nil ? node.name : node.name + "/float"
        var result = floatName
        switch node.op {
        case .quantize:
            result = inputs[0]
        case .conv2d, .linear:
            var input = inputs[0]
            if let qd = node.inputQuantizer {
                try requireExpressible(qd, layer: node.name)
                input = codesInput(node.inputs[0], on: qd, reader: node.name)
            }
            try emitWeighted(node, input: input, output: floatName, warn: warn)
        case .batchnorm2d:
            let t = node.floatTensors
            let names = ["gamma", "beta", "running_mean", "running_var"].map { key in
                addFloats(node.name + "." + key, t[key]!)
            }
            var attributes: [(name: String, value: ONNXAttributeValue)] = [("epsilon", .float(node.epsilon))]
            if let momentum = batchNormMomentum[node.name] { attributes.append(("momentum", .float(1 - momentum))) }
            add("BatchNormalization", name: node.name, [inputs[0]] + names, floatName, attributes)
        case .relu: add("Relu", name: node.name, inputs, floatName)
        case .relu6: addClip(node.name, inputs[0], min: 0, max: 6, output: floatName)
        case .clip: addClip(node.name, inputs[0], min: node.clip.min, max: node.clip.max, output: floatName)
        case .maxpool2d, .avgpool2d:
            var inputs = inputs
            if let grid = node.sharedInputGrid {   // tensor_quantize: the input through Q/DQ on the pool's grid
                try requireExpressible(grid, layer: node.name)
                inputs = [floatValue(codesValue(node.inputs[0], on: grid, reader: node.name))]
            }
            var attributes: [(name: String, value: ONNXAttributeValue)] = [
                ("kernel_shape", .ints([node.kernel.height, node.kernel.width])),
                ("strides", .ints([node.stride.height, node.stride.width])),
                ("pads", .ints(pads(node.padding))),
                ("ceil_mode", .int(node.ceilMode ? 1 : 0)),
            ]
            if node.op == .avgpool2d { attributes.append(("count_include_pad", .int(node.countIncludePad ? 1 : 0))) }
            add(node.op == .maxpool2d ? "MaxPool" : "AveragePool", name: node.name, inputs, floatName, attributes)
        case .flatten: add("Flatten", name: node.name, inputs, floatName, [("axis", .int(1))])
        case .add:
            var operands = inputs
            if let shared = node.sharedInputGrid {
                // joint_quant: each operand through QuantizeLinear/DequantizeLinear with the one shared
                // grid; tensor_quantize: the one operand it names.
                try requireExpressible(shared, layer: node.name)
                operands = node.inputs.enumerated().map { k, input in
                    guard node.sharedInputIndex.map({ $0 == k }) ?? true else { return inputs[k] }
                    return floatValue(codesValue(input, on: shared, reader: "\(node.name)/operand\(k)"))
                }
            }
            add("Add", name: node.name, operands, floatName)
        case .mul: add("Mul", name: node.name, inputs, floatName)
        case .concat: add("Concat", name: node.name, inputs, floatName, [("axis", .int(1))])
        case .leakyReLU: add("LeakyRelu", name: node.name, inputs, floatName, [("alpha", .float(node.leakyReLU.negativeSlope))])
        case .sigmoid: add("Sigmoid", name: node.name, inputs, floatName)
        case .hardSigmoid:
            add("HardSigmoid", name: node.name, inputs, floatName,
                [("alpha", .float(node.hardSigmoid.alpha)), ("beta", .float(node.hardSigmoid.beta))])
        case .hardSwish:
            guard graph.opset >= 14 else {
                throw InputError(file: file, keyPath: "layer \(node.name)",
                                 message: "hard_swish cannot be expressed at opset \(graph.opset): ONNX HardSwish needs opset 14 (use --opset 14 or later)")
            }
            add("HardSwish", name: node.name, inputs, floatName)
        case .globalAvgpool2d: add("GlobalAveragePool", name: node.name, inputs, floatName)
        case .constant:
            // An initializer named after the layer ([1, ...shape]); the import names its constant layer after it.
            _ = addFloats(node.name, node.floatTensors["value"]!)
            values[node.name] = (node.name, nil)
            return
        }
        guard let q = node.output else {
            values[node.name] = (result, nil)
            lastValue = node.name
            return
        }
        // Codes: the fused activation clamps before QuantizeLinear (exactly the engine's saturation).
        switch node.fusedActivation {
        case .relu?:
            add("Relu", name: node.name + "/relu", [result], node.name + "/activated")
            result = node.name + "/activated"
        case .relu6?:
            addClip(node.name + "/relu6", result, min: 0, max: 6, output: node.name + "/activated")
            result = node.name + "/activated"
        case nil:
            break
        }
        let (scale, zeroPoint) = quantizerInitializers(q, for: node.name)
        add("QuantizeLinear", name: node.name + "/quantize", [result, scale, zeroPoint], node.name)
        values[node.name] = (node.name, q)
        lastValue = node.name
    }

    /// Conv or Gemm: integer nodes over DequantizeLinear of int8 weights and int32 bias; float
    /// nodes with float32 weights (an INT16 layer's fake-quantized weight and input grid as float ops).
    private mutating func emitWeighted(_ node: DeployNode, input: String, output: String, warn: (String) -> Void) throws {
        if node.inputCast != nil || node.floatCast?.isIdentity == false {
            throw InputError(file: file, keyPath: "layer \(node.name)",
                             message: "cannot be exported yet: it is a cast layer (datatype \(node.floatCast?.summary ?? node.inputCast!.rawValue)), "
                                + "and qat's QDQ export has no float-cast pairs; deploy it for the INT8 engine (qat deploy) instead")
        }
        let shape = node.weightShape!
        let channels = node.outputChannels
        var x = input
        let weight: String, bias: String?
        if let sd = node.inputQuantizer {
            if profile == .tensorrt, let c = node.weightScales.firstIndex(where: { $0 < 0 }) {
                throw InputError(file: file, keyPath: "layer \(node.name)",
                                 message: "cannot be expressed in the tensorrt profile: channel \(c) has a negative weight scale "
                                     + "(a BatchNorm with γ < 0 folded in); TensorRT takes positive scales only")
            }
            weight = node.name + ".weight"
            graph.initializers.append(ONNXInitializer(name: weight + "/codes", int8s: node.weightCodes, dims: shape))
            graph.initializers.append(ONNXInitializer(name: weight + "/scale", floats: node.weightScales, dims: [channels]))
            graph.initializers.append(ONNXInitializer(name: weight + "/zero_point", int8s: .init(repeating: 0, count: channels), dims: [channels]))
            add("DequantizeLinear", name: weight + "/dequantize", [weight + "/codes", weight + "/scale", weight + "/zero_point"],
                weight, [("axis", .int(0))])
            // The int32 bias in accumulator units: its scale is s_d·s_w'[c] (rounded to float32 once).
            let b = node.name + ".bias"
            let biasScales = node.weightScales.map { Float(Double(sd.scale) * Double($0)) }
            graph.initializers.append(ONNXInitializer(name: b + "/codes", int32s: node.biasCodes, dims: [channels]))
            graph.initializers.append(ONNXInitializer(name: b + "/scale", floats: biasScales, dims: [channels]))
            graph.initializers.append(ONNXInitializer(name: b + "/zero_point", int32s: .init(repeating: 0, count: channels), dims: [channels]))
            add("DequantizeLinear", name: b + "/dequantize", [b + "/codes", b + "/scale", b + "/zero_point"], b, [("axis", .int(0))])
            bias = b
        } else {
            weight = addFloats(node.name + ".weight", node.floatTensors["weight"]!, dims: shape)
            bias = node.floatTensors["bias"].map { addFloats(node.name + ".bias", $0, dims: [channels]) }
            if let wide = node.inputFakeQuantization {
                try requireQuantizeLinearGrid(wide, layer: node.name)
                warn("layer \(node.name) is INT\(wide.bits): exported as float ops that simulate its \(wide.bits)-bit input grid "
                     + "(QuantizeLinear has no 16-bit form before opset 21)")
                x = fakeQuantize(input, on: wide, name: node.name + "/input")
            }
        }
        let operands = [x, weight] + (bias.map { [$0] } ?? [])
        switch node.op {
        case .conv2d:
            add("Conv", name: node.name, operands, output, [
                ("kernel_shape", .ints([node.kernel.height, node.kernel.width])),
                ("strides", .ints([node.stride.height, node.stride.width])),
                ("pads", .ints(pads(node.padding))),
                ("dilations", .ints([node.dilation.height, node.dilation.width])),
                ("group", .int(node.groups)),
            ])
        default:
            add("Gemm", name: node.name, operands, output, [("transB", .int(1))])
        }
    }

    /// x̂ = s·round(clip(x / s, qmin − o, qmax − o)), the grid's fake quantization as float ops.
    private mutating func fakeQuantize(_ x: String, on q: QuantizationGrid, name: String) -> String {
        let scale = floatConstant(name + "/scale", q.scale)
        let low = floatConstant(name + "/low", Float(q.qmin - q.offset))
        let high = floatConstant(name + "/high", Float(q.qmax - q.offset))
        add("Div", name: name + "/divide", [x, scale], name + "/steps")
        add("Clip", name: name + "/clip", [name + "/steps", low, high], name + "/clipped")
        add("Round", name: name + "/round", [name + "/clipped"], name + "/rounded")
        add("Mul", name: name + "/multiply", [name + "/rounded", scale], name + "/fake_quantized")
        return name + "/fake_quantized"
    }

    /// Clip with its bounds as scalar inputs (opset ≥ 11); an infinite bound is left out.
    mutating func addClip(_ name: String, _ x: String, min: Float, max: Float, output: String) {
        let low = min.isFinite ? floatConstant(name + "/min", min) : ""
        let high = max.isFinite ? floatConstant(name + "/max", max) : ""
        var inputs = [x, low, high]
        while inputs.last == "" { inputs.removeLast() }
        add("Clip", name: name, inputs, output)
    }

    private mutating func addFloats(_ name: String, _ tensor: Tensor, dims: [Int]? = nil) -> String {
        graph.initializers.append(ONNXInitializer(name: name, floats: tensor.storage, dims: dims ?? tensor.shape))
        return name
    }

    func pads(_ p: Padding2D) -> [Int] { [p.top, p.left, p.bottom, p.right] }
}
