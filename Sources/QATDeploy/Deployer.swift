import Foundation
import QATCore
import QATData
import QATIO
import QATModel
import QATTrain

/// Makes the INT8 deploy file of a QAT checkpoint (`qat deploy`).
public func deploy(checkpoint: String, output: String) throws {
    try Deployer.deploy(checkpoint: checkpoint).write(to: output)
}

/// Turns a trained fake-quant model into the INT8 engine's program (docs/ALGORITHMS.md §4–5).
///
/// - BatchNorm right after a quantized conv (its only consumer) folds into it per channel:
///   k = γ/√(σ² + ε), the ARQ codes of the ORIGINAL weight stay, the channel's weight scale
///   becomes s_w·k (signed: γ < 0 gives a negative scale, since code −128 has no negation), and
///   b' = (b − μ)·k + β. A channel with k = 0 gets zero codes and a bias that carries β alone.
/// - A value is requantized straight into codes when every path from it runs through code-
///   preserving layers (ReLU, ReLU6, max-pool, flatten) into quantized layers that share one input
///   quantizer; a ReLU or ReLU6 that is the value's only consumer becomes saturation of the
///   codes (at the zero point, and for ReLU6 at the code of 6.0).
///   Otherwise the value stays float, and each quantized consumer quantizes it itself.
/// - An add under joint_quant reads both operands as codes on its shared grid (a producer whose
///   only reader it is requantizes straight into that grid) and sums them in float, as fake quant;
///   a max pool under tensor_quantize reads its input as codes on its own grid and pools codes;
///   an add under tensor_quantize reads the one input `input_index` names as codes on its own
///   grid (as joint_quant's operands) and the other as it comes, and sums in float, as fake quant.
/// - Adds, average pools, the layers without an integer form (sigmoid, hard sigmoid, hard swish,
///   leaky ReLU, clip, mul, concat, global average pool, constants: lowering `.float`),
///   BatchNorms that cannot fold and unquantized conv/linear layers run in float with the
///   training ops (eval mode), between dequantize and quantize, so they match the fake-quant
///   model exactly.
/// See docs/DEPLOY-FORMAT.md.
public enum Deployer {
    /// Loads a QAT checkpoint (eval mode) and deploys it. Errors name the file and the layer.
    public static func deploy(checkpoint: String) throws -> DeployFile {
        let (model, _) = try Model.load(checkpoint: checkpoint)
        guard !model.fakeQuantizers.isEmpty else {
            throw InputError(file: checkpoint, message: "no layer is quantized (a float checkpoint?): deploy needs a QAT checkpoint")
        }
        return try deploy(model: model, source: checkpoint)
    }

    /// Deploys a model in memory; `source` names it in errors and in the file.
    public static func deploy(model: Model, source: String) throws -> DeployFile {
        var builder = try Builder(model: model, source: source)
        return try builder.build()
    }

    /// The input grid (s_d, o_d) a quantized layer's eval forward uses, at the quantizer's own
    /// width (8 or 16 bits): the same resolution of the clip pair as ULQ (validity rollback,
    /// fixed_min), without a batch.
    static func inputGrid(of q: FakeQuantizer, source: String) throws -> QuantizationGrid {
        func fail(_ message: String) -> InputError { InputError(file: source, keyPath: "layer \(q.layerName)", message: message) }
        guard q.weight.numBits == 8 else {
            throw fail("cannot be deployed: weights must be INT8 (dst_type is INT\(q.weight.numBits))")
        }
        do {
            return try q.inputGrid()
        } catch .notCalibrated {
            throw fail("cannot be deployed: its activation quantizer was never calibrated")
        } catch .invalidBounds(let m, let M) {
            throw fail("cannot be deployed: clip bounds [\(m), \(M)] are invalid and there is no previous valid pair")
        }
    }

    /// Weight codes and per-row scales exactly as the fake-quant forward computes them (a NUQ
    /// layer's codes are its levels, docs/ALGORITHMS.md §3.1).
    static func weightCodes(_ weight: Tensor, quantizer: FakeQuantizer) -> (codes: [Int8], rowScales: [Float]) {
        let state = quantizer.weight
        if state.algorithm == .arq, let nonUniform = state.nonUniform {
            let (codes, scales) = nuqCodes(weight, rows: state.rowCount, bits: state.numBits, nonUniform: nonUniform)
            return (codes.map { Int8($0) }, scales)
        }
        let scales = quantizer.weightRowScales(weight)
        let rowLength = weight.count / scales.count
        var codes = [Int8](repeating: 0, count: weight.count)
        weight.storage.withUnsafeBufferPointer { ws in
            codes.withUnsafeMutableBufferPointer { out in
                for (r, s) in scales.enumerated() {
                    // As ARQ/LSQ's row grid.
                    let grid = QuantizationGrid(bits: state.numBits, scale: s, offset: 0, roundMode: state.roundMode,
                                                narrowRange: state.narrowRange)
                    for i in (r * rowLength)..<((r + 1) * rowLength) { out[i] = Int8(grid.quantize(ws[i])) }
                }
            }
        }
        return (codes, scales)
    }
}

private struct Builder {
    let model: Model
    let graph: ModelGraph
    let source: String
    let layers: [any Layer]
    let specs: [LayerSpec]
    /// Stands for the model output among the readers of the last layer.
    let outputSentinel: Int
    var inputQuantizers: [Int: QuantizationGrid] = [:]
    /// INT16 layers: the 16-bit grid their float node applies to its input.
    var wideInputs: [Int: QuantizationGrid] = [:]
    /// Weight-only layers: float nodes with the dequantized weight and a float input.
    var weightOnly: Set<Int> = []
    /// Cast layers: float nodes with the cast weight and bias that cast their input.
    var casts: [Int: FloatCast] = [:]
    /// Adds under joint_quant, max pools and adds under tensor_quantize: the grid their inputs are quantized to.
    var tensorGrids: [Int: QuantizationGrid] = [:]
    /// Adds under tensor_quantize: the one input on `tensorGrids` (absent: every input).
    var tensorGridInputs: [Int: Int] = [:]
    /// conv index → folded BN index
    var foldedInto: [Int: Int] = [:]
    var folded: Set<Int> = []
    var targetMemo: [Int: QuantizationGrid?] = [:]

    // Emission state.
    var nodes: [DeployNode] = []
    /// Spec value index → (node name, codes quantizer or nil for float).
    var values: [Int: (node: String, codes: QuantizationGrid?)] = [:]
    var skipped: Set<Int> = []

    init(model: Model, source: String) throws {
        self.model = model
        self.source = source
        graph = model.graph
        layers = model.layers
        specs = model.spec.layers
        outputSentinel = layers.count
        for (i, layer) in layers.enumerated() {
            if let q = (layer as? WeightedLayer)?.quantizer as? FakeQuantizer, let cast = q.settings.floatCast {
                casts[i] = cast
            } else if let q = (layer as? WeightedLayer)?.quantizer as? FakeQuantizer, !q.quantizesInput {
                guard q.weight.numBits == 8 else { throw fail(i, "cannot be deployed: weights must be INT8 (dst_type is INT\(q.weight.numBits))") }
                weightOnly.insert(i)
            } else if let q = (layer as? WeightedLayer)?.quantizer as? FakeQuantizer, q.activation.numBits == 16 {
                // INT16 layers run in float on this engine, simulating their quantizers exactly.
                wideInputs[i] = try Deployer.inputGrid(of: q, source: source)
            } else if let q = (layer as? WeightedLayer)?.quantizer as? FakeQuantizer {
                inputQuantizers[i] = try Deployer.inputGrid(of: q, source: source)
            } else if let weighted = layer as? WeightedLayer, weighted.quantizer != nil {
                throw fail(i, "cannot be deployed: its quantizer is not a fake quantizer the deployer knows")
            } else if let tensor = (layer as? StatelessLayer)?.inputQuantizer {
                guard let grid = tensor.grid() else {
                    throw fail(i, "cannot be deployed: its input quantizer (joint_quant or tensor_quantize) was never calibrated, "
                               + "or its clip bounds are invalid with no previous valid pair")
                }
                tensorGrids[i] = grid
                tensorGridInputs[i] = tensor.settings.inputIndex
            }
        }
        for (i, b) in graph.batchNormFolds where inputQuantizers[i] != nil {
            foldedInto[i] = b
            folded.insert(b)
        }
    }

    func fail(_ layer: Int, _ message: String) -> InputError {
        InputError(file: source, keyPath: "layer \(specs[layer].name)", message: message)
    }

    /// The layers reading `value` (−1 is the input), and `outputSentinel` for the model output.
    func readers(of value: Int) -> [Int] {
        graph.consumers(of: value) + (value == layers.count - 1 ? [outputSentinel] : [])
    }

    /// The one quantizer every use of `value` ends in through code-preserving layers, or nil.
    mutating func codeTarget(_ value: Int) -> QuantizationGrid? {
        if let memo = targetMemo[value] { return memo }
        var target: QuantizationGrid?
        var ok = !readers(of: value).isEmpty
        for c in readers(of: value) where ok {
            var t: QuantizationGrid?
            if c == outputSentinel {
                t = nil
            } else if let q = inputQuantizers[c] {
                t = q
            } else if let q = tensorGrids[c] {
                // An add's one quantized input: the grid only when `value` is read there alone.
                let slots = graph.sources[c].indices.filter { graph.sources[c][$0] == value }
                t = slots.allSatisfy { k in tensorGridInputs[c].map { $0 == k } ?? true } ? q : nil
            } else {
                switch specs[c].kind.lowering {
                case .codePreserving: t = codeTarget(c)
                case .weighted, .batchNorm, .float: t = nil
                }
            }
            guard let t else { ok = false; break }
            if let target, target != t { ok = false; break }
            target = t
        }
        let result = ok ? target : nil
        targetMemo[value] = result
        return result
    }

    /// An activation that is the only reader of `value` (it can become saturation), if any.
    func soleActivation(of value: Int) -> (layer: Int, activation: FusedActivation)? {
        let r = readers(of: value)
        guard r.count == 1, r[0] != outputSentinel, case .codePreserving(let fused?) = specs[r[0]].kind.lowering else { return nil }
        return (r[0], fused)
    }

    func inputName(_ layer: Int, _ k: Int = 0) -> String { values[graph.sources[layer][k]]!.node }

    /// After a float node produced `value`: quantize it when all its uses want the same codes.
    mutating func finishFloat(_ value: Int, node: String) {
        values[value] = (node, nil)
        guard let q = codeTarget(value) else { return }
        let valueName = value < 0 ? "input" : specs[value].name
        var quantize = DeployNode(name: "quantize:" + valueName, op: .quantize, inputs: [node], produces: "")
        quantize.output = q
        var produced = value
        if let (r, activation) = soleActivation(of: value) {
            quantize.fusedActivation = activation
            quantize.produces = specs[r].name
            quantize.fused = [specs[r].name]
            skipped.insert(r)
            produced = r
        }
        nodes.append(quantize)
        values[produced] = (quantize.name, q)
    }

    mutating func build() throws -> DeployFile {
        finishFloat(-1, node: "input")
        for (i, layer) in layers.enumerated() where !skipped.contains(i) && !folded.contains(i) {
            let spec = specs[i]
            var node = DeployNode(layer: spec, inputs: graph.sources[i].indices.map { inputName(i, $0) })
            switch spec.kind.lowering {
            case .weighted:
                let weighted = layer as! WeightedLayer
                if let inputQuantizer = inputQuantizers[i] {
                    try emitInteger(i, weighted, inputQuantizer, &node)
                    continue
                }
                node.floatTensors["weight"] = weighted.weight.value
                if let bias = weighted.quantizedBiasValue { node.floatTensors["bias"] = bias }
                if let wide = wideInputs[i], let quantizer = weighted.quantizer as? FakeQuantizer {
                    // The fake-quantized (ARQ) weight, and the input's 16-bit grid, as fake quant has them.
                    node.floatTensors["weight"] = weightFakeQuantize(weighted.weight, state: quantizer.weight, tape: nil).value
                    node.inputFakeQuantization = wide
                }
                if weightOnly.contains(i), let quantizer = weighted.quantizer as? FakeQuantizer {
                    // The dequantized INT8 weight on a float input, as fake quant computes the layer.
                    node.floatTensors["weight"] = weightFakeQuantize(weighted.weight, state: quantizer.weight, tape: nil).value
                    node.isWeightOnly = true
                }
                if let cast = casts[i], let quantizer = weighted.quantizer as? FakeQuantizer {
                    // The weight and bias exactly as the fake-quant forward casts them.
                    node.floatTensors["weight"] = quantizer.quantizeWeight(weighted.weight, tape: nil).value
                    if let bias = weighted.bias { node.floatTensors["bias"] = quantizer.quantizeBias(bias, tape: nil).value }
                    node.inputCast = cast.input.isIdentity ? nil : cast.input
                    node.floatCast = cast
                }
            case .batchNorm:
                let bn = layer as! BatchNorm2DLayer
                node.floatTensors = ["gamma": bn.gamma.value, "beta": bn.beta.value,
                                     "running_mean": bn.statistics.mean, "running_var": bn.statistics.variance]
            case .codePreserving:
                if let q = tensorGrids[i] {   // tensor_quantize: its input onto its own grid, codes out on it
                    node.sharedInputGrid = q
                    node.output = q
                    nodes.append(node)
                    values[i] = (node.name, q)
                    continue
                }
                if let q = values[graph.sources[i][0]]!.codes {   // codes in, codes out
                    node.output = q
                    nodes.append(node)
                    values[i] = (node.name, q)
                    continue
                }
            case .float:
                if let constant = layer as? ConstantLayer { node.floatTensors["value"] = constant.value }
                node.sharedInputGrid = tensorGrids[i]
                node.sharedInputIndex = tensorGridInputs[i]
            }
            nodes.append(node)
            finishFloat(i, node: node.name)
        }
        return DeployFile(modelName: model.spec.name, inputShape: model.spec.inputShape,
                          numberOfClasses: model.numberOfClasses, modelSpecJSON: model.spec.jsonString(),
                          source: source, nodes: nodes)
    }

    /// An integer conv/linear node: folded BN, weight codes, int32 bias, requantize or dequantize.
    mutating func emitInteger(_ i: Int, _ weighted: WeightedLayer, _ qd: QuantizationGrid,
                              _ node: inout DeployNode) throws {
        let quantizer = weighted.quantizer as! FakeQuantizer
        let w = weighted.weight.value
        guard w.isFinite else { throw fail(i, "cannot be deployed: the weight has NaN or infinite values") }
        let (codes, rowScales) = Deployer.weightCodes(w, quantizer: quantizer)
        let channels = node.outputChannels
        let perChannel = w.count / channels
        var weightCodes = codes
        // A bias quantized on its own grid reaches the accumulator grid from there, as in fake quant.
        let bias = weighted.quantizedBiasValue?.storage ?? [Float](repeating: 0, count: channels)

        let (k, shift, value) = try foldBatchNorm(into: i, bias: bias, channels: channels, node: &node)
        let (weightScales, biasCodes, effectiveScales, biasResidual) =
            try integerTerms(i, weightScales: rowScales, k: k, shift: shift, inputScale: qd.scale,
                             perChannel: perChannel, weightCodes: &weightCodes)

        node.inputQuantizer = qd
        node.weightCodes = weightCodes
        node.nonUniformSteps = quantizer.weight.nonUniform?.parameters.steps
        node.biasCodes = biasCodes
        node.weightScales = weightScales
        node.biasResidual = biasResidual
        node.produces = specs[value].name
        if let qy = codeTarget(value) {
            node.output = qy
            node.multipliers = effectiveScales.map { Float($0 / Double(qy.scale)) }
            var produced = value
            if let (r, activation) = soleActivation(of: value) {
                node.fusedActivation = activation
                node.fused.append(specs[r].name)
                node.produces = specs[r].name
                skipped.insert(r)
                produced = r
            }
            nodes.append(node)
            values[produced] = (node.name, qy)
        } else {
            node.multipliers = effectiveScales.map { Float($0) }
            nodes.append(node)
            values[value] = (node.name, nil)
        }
    }

    /// Per channel: k = γ/√(σ² + ε) of the BN folded into layer `i` (1 without BN) and the folded
    /// bias b' = (b − μ)·k + β; `value` is the layer whose output the node now produces.
    mutating func foldBatchNorm(into i: Int, bias: [Float], channels: Int, node: inout DeployNode) throws
        -> (k: [Double], shift: [Double], value: Int) {
        let spec = specs[i]
        var k = [Double](repeating: 1, count: channels)
        var shift = bias.map(Double.init)
        var value = i
        if let b = foldedInto[i] {
            let bn = layers[b] as! BatchNorm2DLayer
            value = b
            node.fused.append(specs[b].name)
            (k, shift) = bn.foldingTerms(bias: bias)
            for c in 0..<channels {
                guard k[c].isFinite else {
                    throw fail(b, "cannot fold into \(spec.name): channel \(c) has γ/√(σ² + ε) = \(k[c]) (running variance \(bn.statistics.variance.storage[c]))")
                }
                guard shift[c].isFinite else { throw fail(b, "cannot fold into \(spec.name): channel \(c) has a non-finite folded bias") }
            }
        }
        return (k, shift, value)
    }

    /// Weight scales s_w'[c] = s_w[c]·k[c] and int32 biases b_q = round(b'/(s_d s_w'[c])), as fake
    /// quant evaluates them (`AccumulatorChannel`); zeroes the weight codes of γ = 0 channels.
    /// The bias residual is zero: fake quant puts the bias on the accumulator grid too.
    func integerTerms(_ i: Int, weightScales rowScales: [Float], k: [Double], shift: [Double], inputScale: Float,
                      perChannel: Int, weightCodes: inout [Int8]) throws
        -> (weightScales: [Float], biasCodes: [Int32], effectiveScales: [Double], biasResidual: [Float]) {
        let channels = k.count
        let biasLimit = AccumulatorChannel.biasLimit(productsPerOutput: perChannel)
        guard biasLimit > 0 else { throw fail(i, "cannot be deployed: \(perChannel) products per output could overflow the int32 accumulator") }
        var weightScales = [Float](repeating: 0, count: channels)
        var biasCodes = [Int32](repeating: 0, count: channels)
        var effectiveScales = [Double](repeating: 0, count: channels)
        for c in 0..<channels {
            let sw = Double(rowScales.count == 1 ? rowScales[0] : rowScales[c])
            let channel = AccumulatorChannel(weightScale: sw, k: k[c], shift: shift[c], inputScale: Double(inputScale), biasLimit: biasLimit)
            if channel.isConstant {
                for j in (c * perChannel)..<((c + 1) * perChannel) { weightCodes[j] = 0 }
            }
            guard channel.weightScale.isFinite, channel.weightScale != 0 else {
                throw fail(i, "cannot be deployed: channel \(c) has weight scale \(Double(channel.weightScale)) (after BN folding), not a normal float32")
            }
            guard channel.isDeployable(biasLimit: biasLimit) else {
                throw fail(i, "cannot be deployed: the int32 bias of channel \(c) would be \(channel.biasUnits) accumulator units "
                           + "(b' = \(shift[c]), s_d·s_w = \(channel.unit)); the limit is ±\(Int64(biasLimit)) so that no accumulator overflows")
            }
            weightScales[c] = channel.weightScale
            effectiveScales[c] = channel.unit
            biasCodes[c] = Int32(channel.biasUnits)
        }
        return (weightScales, biasCodes, effectiveScales, [Float](repeating: 0, count: channels))
    }
}
