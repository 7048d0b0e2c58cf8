import QATCore
import QATONNX

/// `qat export --exact`: an integer conv/linear as the INT8 engine computes it (ALGORITHMS §5),
/// op by op, so that a runtime that follows the ONNX spec gives the engine's codes bit for bit:
///
///     acc   = ConvInteger / MatMulInteger(q_x, w_q, o_d, 0) + b_q          (int32, exact)
///     v     = Cast<float>(acc) · m[c]   (+ r[c]·m[c] for an old deploy file's residual)   (float32)
///     codes = QuantizeLinear(Clip(v, lo − o_y, hi − o_y), 1, o_y)           (round half to even)
///
/// Without an output quantizer, v is the node's float output (m[c] = s_d·s_w'[c]). Zero padding
/// is the code o_d in both (ConvInteger pads x − x_zero_point with 0). Everything else is the
/// QDQ graph: float nodes between DequantizeLinear and QuantizeLinear, codes as int8 values.
extension ONNXEmitter {
    mutating func emitExactInteger(_ node: DeployNode, on qd: QuantizationGrid) throws {
        try requireExpressible(qd, layer: node.name)
        let channels = node.outputChannels
        let shape = node.weightShape!
        let x = values[codesValue(node.inputs[0], on: qd, reader: node.name)]!.name
        let name = node.name
        // Per-channel constants broadcast over [N, C, H, W] as [C, 1, 1], over [N, O] as [O].
        let broadcast = node.op == .conv2d ? [channels, 1, 1] : [channels]

        let inputZeroPoint = name + "/input_zero_point"
        graph.initializers.append(ONNXInitializer(name: inputZeroPoint, int8s: [qd.zeroPoint], dims: []))
        graph.initializers.append(ONNXInitializer(name: name + ".weight/zero_point", int8s: [0], dims: []))
        if node.op == .conv2d {
            graph.initializers.append(ONNXInitializer(name: name + ".weight/codes", int8s: node.weightCodes, dims: shape))
            add("ConvInteger", name: name, [x, name + ".weight/codes", inputZeroPoint, name + ".weight/zero_point"], name + "/products", [
                ("kernel_shape", .ints([node.kernel.height, node.kernel.width])),
                ("strides", .ints([node.stride.height, node.stride.width])),
                ("pads", .ints(pads(node.padding))),
                ("dilations", .ints([node.dilation.height, node.dilation.width])),
                ("group", .int(node.groups)),
            ])
        } else {
            // MatMul multiplies [N, I] by [I, O]: the codes transposed.
            let (outputs, inputs) = (shape[0], shape[1])
            var transposed = [Int8](repeating: 0, count: node.weightCodes.count)
            for o in 0..<outputs { for i in 0..<inputs { transposed[i * outputs + o] = node.weightCodes[o * inputs + i] } }
            graph.initializers.append(ONNXInitializer(name: name + ".weight/codes", int8s: transposed, dims: [inputs, outputs]))
            add("MatMulInteger", name: name, [x, name + ".weight/codes", inputZeroPoint, name + ".weight/zero_point"], name + "/products")
        }
        graph.initializers.append(ONNXInitializer(name: name + ".bias/codes", int32s: node.biasCodes, dims: broadcast))
        add("Add", name: name + "/add_bias", [name + "/products", name + ".bias/codes"], name + "/accumulator")
        add("Cast", name: name + "/to_float", [name + "/accumulator"], name + "/accumulator_float",
            [("to", .int(Int(ONNXInitializer.ElementType.float.rawValue)))])
        graph.initializers.append(ONNXInitializer(name: name + "/multiplier", floats: node.multipliers, dims: broadcast))
        // The engine's offset r[c]·m[c]: zero in every deploy made since fake quant rounds the bias
        // onto the accumulator grid; a deploy file with a residual keeps it as an Add.
        let offsets = zip(node.biasResidual, node.multipliers).map { $0 * $1 }
        let hasOffsets = offsets.contains { $0 != 0 }
        let result = node.output == nil ? name : name + "/requantized"   // the float output, or the value to requantize
        let product = hasOffsets ? name + "/scaled" : result
        add("Mul", name: name + "/multiply", [name + "/accumulator_float", name + "/multiplier"], product)
        if hasOffsets {
            graph.initializers.append(ONNXInitializer(name: name + "/offset", floats: offsets, dims: broadcast))
            add("Add", name: name + "/add_offset", [product, name + "/offset"], result)
        }
        guard let qy = node.output else {
            values[name] = (name, nil)
            lastValue = name
            return
        }
        var steps = name + "/requantized"
        if let activation = node.fusedActivation {
            // The fused activation's code range, as a clamp of the value before the zero point is added.
            let range = activation.codeRange(on: qy)
            let zero = Int(qy.zeroPoint)
            addClip(name + "/clamp", steps, min: Float(Int(range.lowerBound) - zero), max: Float(Int(range.upperBound) - zero),
                    output: name + "/clamped")
            steps = name + "/clamped"
        }
        let one = floatConstant(name + "/unit_scale", 1)
        graph.initializers.append(ONNXInitializer(name: name + "/output_zero_point", int8s: [qy.zeroPoint], dims: []))
        add("QuantizeLinear", name: name + "/quantize", [steps, one, name + "/output_zero_point"], name)
        values[name] = (name, qy)
        lastValue = name
    }
}
