import Foundation
import QATCore
import QATData
import QATIO
import QATModel
import QATTrain

/// The INT8 inference engine: runs a deploy file's nodes on the integer kernels (Int8Kernels),
/// with float ops only where the file says a value is float.
///
///     let engine = try Int8Model.load(deployFile: "Checkpoints/lenet5-int8.h5")
///     let logits = engine.forward(images)          // [N, K] float
///
/// The kernel path (VNNI, AVX2, portable) is `Int8Kernels.activePath`: the best one this CPU has,
/// or `QAT_INT8_KERNEL=portable|avx2|vnni`. All paths give identical results.
/// Not thread-safe: one forward at a time per instance.
public final class Int8Model {
    public let file: DeployFile
    public var inputShape: [Int] { file.inputShape }
    public var numberOfClasses: Int { file.numberOfClasses }
    /// Names of the integer conv/linear layers, in execution order (the keys of `inputCodes`).
    public let quantizedLayerNames: [String]

    private let steps: [Step]
    /// When set, each forward books every node's wall time under the node's name (a conv with
    /// its max pool fused: under the conv's), and runs the batch whole on one thread (profiling).
    public var timing: StepTiming?
    /// The runs of nodes plain forwards fuse into one kernel (Int8FusionPlan.swift).
    private let fusion: FusionPlan
    /// Whether plain forwards fuse conv → HardSwish (tests switch it off to compare).
    var allowsConvHardSwishFusion = true

    /// A value between nodes: codes with their quantizer, or floats. Shapes are per sample.
    private enum Value {
        case codes([Int8], QuantizationGrid)
        case floats([Float])
        /// Floats, and the codes a reader wants made while they were in cache (the floats quantized).
        case floatsAndCodes([Float], [Int8], QuantizationGrid)
    }

    struct Step {
        let node: DeployNode
        /// Input indices into the value list (0 is the model input, node i is i + 1).
        let inputs: [Int]
        /// Per-sample input and output shapes (inputShape: the first input's; [] for a constant).
        let inputShape: [Int]
        let inputShapes: [[Int]]
        let outputShape: [Int]
        // Prepared once at load.
        let requantization: Int8Kernels.Requantization?
        /// Integer conv layers: the weights as the kernels take them, made on the first batch.
        let convCache: Int8ConvCache?
        /// Integer layers: the bias residual in output units (codes, or float when dequantizing).
        let offsets: [Float]?
        let floatWeight: Variable?
        let floatBias: Variable?
        let bnGamma: Variable?, bnBeta: Variable?
        let bnStatistics: BatchNormStatistics?
    }

    /// How many runs of nodes plain forwards fuse into one kernel (tests check there are some).
    var fusedRuns: Int { fusion.runs }

    public static func load(deployFile path: String) throws -> Int8Model {
        try Int8Model(DeployFile.read(from: path), file: path)
    }

    /// Builds the engine; `file` names the source in errors. Shapes come from the graph of the
    /// file's model spec: every node other than a quantize node stands for a layer of it, with
    /// that layer's attributes and input shapes.
    public init(_ deployed: DeployFile, file path: String = "deploy file") throws {
        file = deployed
        let specSource = "\(path) (model_spec)"
        let graph = try ModelGraph(ModelSpec.parse(JSONObject.parse(Data(deployed.modelSpecJSON.utf8), file: specSource)),
                                   file: specSource)
        try graph.requireClassifier(file: specSource)
        guard graph.spec.inputShape == deployed.inputShape else {
            throw HDF5Error(file: path, object: "/", message: "input_shape \(deployed.inputShape) differs from the model spec's \(graph.spec.inputShape)")
        }
        var indexByName = ["input": 0]
        var shapes: [[Int]] = [deployed.inputShape]
        var steps: [Step] = []
        for (i, node) in deployed.nodes.enumerated() {
            func fail(_ message: String) -> HDF5Error {
                HDF5Error(file: path, object: "/nodes/\(i) (\(node.name))", message: message)
            }
            let inputs = node.inputs.map { indexByName[$0]! }
            let inShape = inputs.first.map { shapes[$0] } ?? []
            var outShape = inShape   // a quantize node
            if node.op != .quantize {
                guard let layer = graph.index(of: node.name), node.matches(graph.spec.layers[layer]) else {
                    throw fail("\(node.op.rawValue) node does not match a layer of the same name and attributes in the model spec")
                }
                guard inputs.map({ shapes[$0] }) == graph.inputShapes[layer] else {
                    throw fail("reads \(inputs.map { shapes[$0] }), but its layer in the model spec reads \(graph.inputShapes[layer])")
                }
                if node.op == .batchnorm2d && node.floatTensors["gamma"]?.count != inShape[0] { throw fail("batchnorm2d does not fit \(inShape)") }
                outShape = graph.outputShapes[layer]
            }
            var requantization: Int8Kernels.Requantization?
            let offsets = node.isInteger ? zip(node.biasResidual, node.multipliers).map { $0 * $1 } : nil
            if node.isInteger, let output = node.output {
                requantization = .init(multipliers: node.multipliers, zeroPoint: output.zeroPoint, relu: node.fusedActivation != nil,
                                       offsets: offsets, upperBound: node.fusedActivation?.codeRange(on: output).upperBound ?? .max,
                                       roundMode: output.roundMode, lowestCode: Int8(output.qmin))
            }
            let weight = node.isInteger ? nil : node.floatTensors["weight"].flatMap { tensor in
                node.weightShape.map { Variable(tensor.reshaped($0)) }
            }
            var statistics: BatchNormStatistics?
            if node.op == .batchnorm2d {
                let s = BatchNormStatistics(channels: inShape[0])
                s.mean = node.floatTensors["running_mean"]!
                s.variance = node.floatTensors["running_var"]!
                statistics = s
            }
            steps.append(Step(node: node, inputs: inputs, inputShape: inShape, inputShapes: inputs.map { shapes[$0] }, outputShape: outShape,
                              requantization: requantization, convCache: node.isInteger && node.op == .conv2d ? Int8ConvCache() : nil,
                              offsets: offsets, floatWeight: weight,
                              floatBias: node.isInteger ? nil : node.floatTensors["bias"].map { Variable($0) },
                              bnGamma: node.op == .batchnorm2d ? Variable(node.floatTensors["gamma"]!) : nil,
                              bnBeta: node.op == .batchnorm2d ? Variable(node.floatTensors["beta"]!) : nil,
                              bnStatistics: statistics))
            shapes.append(outShape)
            indexByName[node.name] = i + 1
        }
        guard shapes.last! == [deployed.numberOfClasses] else {
            throw HDF5Error(file: path, object: "/nodes", message: "the last node outputs \(shapes.last!), expected [\(deployed.numberOfClasses)] logits")
        }
        self.steps = steps
        fusion = FusionPlan(steps)
        quantizedLayerNames = deployed.nodes.filter(\.isInteger).map(\.name)
    }

    /// Logits [N, K] for images x: [N, C, H, W].
    ///
    /// `observe` receives each spec layer's output as this engine has it, dequantized to float,
    /// [N, …] by the layer name it stands for (`DeployNode.produces`): for a conv with a folded
    /// BN and fused ReLU that is the ReLU's name; layers folded away are not reported.
    /// `observeInputCodes` receives, for each integer layer, the int8 codes this engine computed
    /// for its input. `substituteInputCodes` may hand a layer other codes to run on instead
    /// (`qat verify` feeds each layer the fake-quant model's codes, to check layers one at a time).
    public func forward(_ x: Tensor, observe: ((_ layerName: String, _ output: Tensor) -> Void)? = nil,
                        observeInputCodes: ((_ layerName: String, _ codes: [Int8]) -> Void)? = nil,
                        substituteInputCodes: ((_ layerName: String) -> [Int8]?)? = nil) -> Tensor {
        precondition(Array(x.shape.dropFirst()) == file.inputShape,
                     "Int8Model \(file.modelName) expects samples of shape \(file.inputShape), got \(x.shape)")
        let n = x.shape[0]
        // Samples are independent in integer arithmetic, so plain inference splits the batch over
        // the threads; observed runs stay whole so observers see one tensor per layer.
        if observe == nil && observeInputCodes == nil && substituteInputCodes == nil && timing == nil
            && Parallel.threads > 1 && n >= 2 * Parallel.threads {
            return forwardSplittingBatch(x)
        }
        return forwardWhole(x, observe: observe, observeInputCodes: observeInputCodes, substituteInputCodes: substituteInputCodes)
    }

    private func forwardWhole(_ x: Tensor, observe: ((_ layerName: String, _ output: Tensor) -> Void)?,
                              observeInputCodes: ((_ layerName: String, _ codes: [Int8]) -> Void)?,
                              substituteInputCodes: ((_ layerName: String) -> [Int8]?)? = nil) -> Tensor {
        let n = x.shape[0]
        var values: [Value?] = Array(repeating: nil, count: steps.count + 1)
        values[0] = .floats(x.storage)
        // Free each value after its last reader.
        var lastUse = Array(repeating: 0, count: steps.count + 1)
        for (i, step) in steps.enumerated() { for input in step.inputs { lastUse[input] = i } }
        var i = 0
        while i < steps.count {
            let step = steps[i]
            let start = timing == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            defer { timing?.add(step.node.name, forward: DispatchTime.now().uptimeNanoseconds - start) }
            if observe == nil && fusion.fusesPool[i], let qd = step.node.inputQuantizer, let r = step.requantization,
               let input = values[step.inputs[0]] {
                // conv → max pool in one kernel; the conv output (read by the pool alone) never exists.
                let own = codes(input, qd)
                observeInputCodes?(step.node.name, own)
                let x = substituteInputCodes?(step.node.name) ?? own
                let pool = steps[i + 1].node, node = step.node
                let y = node.convolution.isPlain && pool.hasPlainPoolGeometry
                    ? Int8Kernels.conv2dMaxPool(x, convGeometry(step, n), inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                bias: node.biasCodes, requantize: r, poolKernel: pool.kernel.height,
                                                poolStride: pool.stride.height, cache: step.convCache)
                    : Int8Kernels.conv2dMaxPool(x, generalConvGeometry(step, n), inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                bias: node.biasCodes, requantize: r, pool: poolGeometry(steps[i + 1]), cache: step.convCache)
                values[i + 2] = .codes(y, node.output!)
                for input in step.inputs where lastUse[input] == i { values[input] = nil }
                i += 2
                continue
            }
            if observe == nil && fusion.fusesResidual[i], let qd = step.node.inputQuantizer, let input = values[step.inputs[0]],
               let other = steps[i + 1].inputs.first(where: { $0 != i + 1 }), let addend = storedFloats(values[other]) {
                // conv → residual add → quantize in one kernel, an image at a time.
                let own = codes(input, qd)
                observeInputCodes?(step.node.name, own)
                let x = substituteInputCodes?(step.node.name) ?? own
                let node = step.node, quantize = steps[i + 2].node, grid = quantize.output!
                var q = Int8Kernels.conv2dDequantizedAddQuantized(x, generalConvGeometry(step, n), inputZeroPoint: qd.zeroPoint,
                                                                  weights: node.weightCodes, bias: node.biasCodes,
                                                                  scales: node.multipliers, offsets: step.offsets, addend: addend, grid, cache: step.convCache)
                if let activation = quantize.fusedActivation { saturate(&q, activation.codeRange(on: grid)) }
                values[i + 3] = .codes(q, grid)
                for input in step.inputs where lastUse[input] == i { values[input] = nil }
                if lastUse[other] == i + 1 { values[other] = nil }
                i += 3
                continue
            }
            if observe == nil && fusion.fusesHardSwish[i] && allowsConvHardSwishFusion, let qd = step.node.inputQuantizer,
               let input = values[step.inputs[0]] {
                // conv → HardSwish (→ quantize) in one kernel, an image at a time.
                let own = codes(input, qd)
                observeInputCodes?(step.node.name, own)
                let x = substituteInputCodes?(step.node.name) ?? own
                let node = step.node, g = generalConvGeometry(step, n)
                if fusion.fusesQuantize[i + 1] {
                    let quantize = steps[i + 2].node, grid = quantize.output!
                    var q = Int8Kernels.conv2dDequantizedHardSwishQuantized(x, g, inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                                            bias: node.biasCodes, scales: node.multipliers,
                                                                            offsets: step.offsets, grid, cache: step.convCache)
                    if let activation = quantize.fusedActivation { saturate(&q, activation.codeRange(on: grid)) }
                    values[i + 3] = .codes(q, grid)
                } else {
                    values[i + 2] = .floats(Int8Kernels.conv2dDequantizedHardSwish(x, g, inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                                                   bias: node.biasCodes, scales: node.multipliers,
                                                                                   offsets: step.offsets, cache: step.convCache))
                }
                for input in step.inputs where lastUse[input] == i { values[input] = nil }
                i += fusion.fusesQuantize[i + 1] ? 3 : 2
                continue
            }
            if observe == nil, Int8Kernels.residualReLUFusionAllowed, let fused = fusion.residualReLUs[i], let qd = step.node.inputQuantizer,
               let input = values[step.inputs[0]], let other = steps[i + 1].inputs.first(where: { $0 != i + 1 }),
               let addend = storedFloats(values[other]) {
                // conv → residual add → ReLU in one kernel, an image at a time, with the next conv's codes.
                let own = codes(input, qd)
                observeInputCodes?(step.node.name, own)
                let x = substituteInputCodes?(step.node.name) ?? own
                let node = step.node
                let y = Int8Kernels.conv2dDequantizedAddReLU(x, generalConvGeometry(step, n), inputZeroPoint: qd.zeroPoint,
                                                             weights: node.weightCodes, bias: node.biasCodes, scales: node.multipliers,
                                                             offsets: step.offsets, addend: addend, relu: fused.relu,
                                                             codesGrid: fused.codesGrid, cache: step.convCache)
                if let q = y.codes, let grid = fused.codesGrid {
                    values[fused.last + 1] = .floatsAndCodes(y.floats, q, grid)
                } else {
                    values[fused.last + 1] = .floats(y.floats)
                }
                for input in step.inputs where lastUse[input] == i { values[input] = nil }
                if lastUse[other] == i + 1 { values[other] = nil }
                i = fused.last + 1
                continue
            }
            if observe == nil, let fused = fusion.floatEpilogues[i], let qd = step.node.inputQuantizer, let input = values[step.inputs[0]] {
                // conv → ReLU and/or max pool on floats in one kernel, an image at a time.
                let own = codes(input, qd)
                observeInputCodes?(step.node.name, own)
                let x = substituteInputCodes?(step.node.name) ?? own
                let node = step.node
                let y = Int8Kernels.conv2dDequantized(x, generalConvGeometry(step, n), inputZeroPoint: qd.zeroPoint,
                                                      weights: node.weightCodes, bias: node.biasCodes, scales: node.multipliers,
                                                      offsets: step.offsets, relu: fused.relu, pool: fused.pool.map { poolGeometry(steps[$0]) },
                                                      cache: step.convCache)
                values[fused.last + 1] = .floats(y)
                for input in step.inputs where lastUse[input] == i { values[input] = nil }
                i = fused.last + 1
                continue
            }
            if observe == nil && fusion.fusesQuantize[i], step.inputs.allSatisfy({ storedFloats(values[$0]) != nil }) {
                // add or HardSwish on floats → quantize: the quantize node's codes, the floats never stored.
                let quantize = steps[i + 1].node, grid = quantize.output!
                let x = floats(values[step.inputs[0]]!)
                var q = step.node.op == .hardSwish ? Int8Kernels.hardSwishQuantized(x, grid)
                                                   : Int8Kernels.addQuantized(x, floats(values[step.inputs[1]]!), grid)
                if let activation = quantize.fusedActivation { saturate(&q, activation.codeRange(on: grid)) }
                values[i + 2] = .codes(q, grid)
                for input in step.inputs where lastUse[input] == i { values[input] = nil }
                i += 2
                continue
            }
            defer { i += 1 }
            let output = run(step, n, values, observeInputCodes, substituteInputCodes)
            values[i + 1] = output
            if let observe, !step.node.produces.isEmpty {
                let batch = step.node.op == .constant ? 1 : n   // a constant broadcasts over the batch
                observe(step.node.produces, Tensor(shape: [batch] + step.outputShape, storage: floats(output)))
            }
            for input in step.inputs where lastUse[input] == i { values[input] = nil }
        }
        return Tensor(shape: [n, file.numberOfClasses], storage: floats(values[steps.count]!))
    }

    private func forwardSplittingBatch(_ x: Tensor) -> Tensor {
        let n = x.shape[0], sampleSize = x.count / n, classes = file.numberOfClasses
        var logits = [Float](repeating: 0, count: n * classes)
        logits.withUnsafeMutableBufferPointer { out in
            Parallel.forEachChunk(n) { rows in
                let part = Tensor(shape: [rows.count] + file.inputShape,
                                  storage: Array(x.storage[(rows.lowerBound * sampleSize)..<(rows.upperBound * sampleSize)]))
                let y = forwardWhole(part, observe: nil, observeInputCodes: nil)   // nested regions run inline
                for (i, v) in y.storage.enumerated() { out[rows.lowerBound * classes + i] = v }
            }
        }
        return Tensor(shape: [n, classes], storage: logits)
    }

    /// The int8 codes each integer layer consumes for images x, by layer name ([N, …] flattened).
    public func inputCodes(_ x: Tensor) -> [String: [Int8]] {
        var codes: [String: [Int8]] = [:]
        _ = forward(x, observeInputCodes: { codes[$0] = $1 })
        return codes
    }

    /// Predicted class per sample.
    public func predict(_ x: Tensor) -> [Int] { argmaxRows(forward(x)) }

    // MARK: Execution

    private func floats(_ v: Value) -> [Float] {
        switch v {
        case .floats(let f), .floatsAndCodes(let f, _, _): return f
        case .codes(let c, let q): return Int8Kernels.dequantize(c, q)
        }
    }

    /// The floats of a value that holds floats (nil for codes or no value).
    private func storedFloats(_ v: Value?) -> [Float]? {
        switch v {
        case .floats(let f)?, .floatsAndCodes(let f, _, _)?: return f
        case .codes?, nil: return nil
        }
    }

    private func codes(_ v: Value, _ q: QuantizationGrid) -> [Int8] {
        switch v {
        case .codes(let c, let have) where have == q: return c
        case .floatsAndCodes(_, let c, let have) where have == q: return c
        case .floatsAndCodes(let f, _, _): return Int8Kernels.quantize(f, q)
        case .codes(let c, let have): return Int8Kernels.quantize(Int8Kernels.dequantize(c, have), q)
        case .floats(let f): return Int8Kernels.quantize(f, q)
        }
    }

    private func run(_ step: Step, _ n: Int, _ values: [Value?],
                     _ observeInputCodes: ((String, [Int8]) -> Void)?, _ substituteInputCodes: ((String) -> [Int8]?)?) -> Value {
        let node = step.node
        guard node.op != .constant else { return .floats(node.floatTensors["value"]!.storage) }
        let input = values[step.inputs[0]]!
        func tensor(_ v: Value, _ shape: [Int]) -> Variable { Variable(Tensor(shape: [n] + shape, storage: floats(v))) }
        func floatResult(_ y: Variable) -> Value { .floats(y.value.storage) }
        /// The inputs as the training op takes them: batch first, a constant with batch 1.
        func floatInputs() -> [Variable] {
            zip(step.inputs, step.inputShapes).map { index, shape in
                let constant = index > 0 && steps[index - 1].node.op == .constant
                return Variable(Tensor(shape: [constant ? 1 : n] + shape, storage: floats(values[index]!)))
            }
        }
        switch node.op {
        case .quantize:
            var q = codes(input, node.output!)
            if let activation = node.fusedActivation { saturate(&q, activation.codeRange(on: node.output!)) }
            return .codes(q, node.output!)
        case .conv2d, .linear:
            return runWeighted(step, n, input, observeInputCodes, substituteInputCodes)
        case .batchnorm2d:
            return floatResult(batchNorm2d(tensor(input, step.inputShape), gamma: step.bnGamma!, beta: step.bnBeta!,
                                           statistics: step.bnStatistics!, training: false, epsilon: node.epsilon, tape: nil))
        case .relu:
            if case .codes(var c, let q) = input {
                saturate(&c, FusedActivation.relu.codeRange(on: q))
                return .codes(c, q)
            }
            return floatResult(relu(tensor(input, step.inputShape), tape: nil))
        case .relu6:
            if case .codes(var c, let q) = input {
                saturate(&c, FusedActivation.relu6.codeRange(on: q))
                return .codes(c, q)
            }
            return floatResult(relu6(tensor(input, step.inputShape), tape: nil))
        case .maxpool2d:
            if let grid = node.sharedInputGrid {
                // tensor_quantize: the input on the pool's own grid (observed and substituted as an
                // integer layer's input), pooled on codes: max commutes with the monotone quantizer.
                let own = codes(input, grid)
                observeInputCodes?(node.name, own)
                let x = substituteInputCodes?(node.name) ?? own
                if node.hasPlainPoolGeometry {
                    let s = step.inputShape
                    return .codes(Int8Kernels.maxPool2d(x, planes: n * s[0], height: s[1], width: s[2],
                                                        kernel: node.kernel.height, stride: node.stride.height), grid)
                }
                return .codes(Int8Kernels.maxPool2d(x, planes: n * step.inputShape[0], pool: poolGeometry(step)), grid)
            }
            if case .codes(let c, let q) = input {
                if node.hasPlainPoolGeometry {
                    let s = step.inputShape
                    return .codes(Int8Kernels.maxPool2d(c, planes: n * s[0], height: s[1], width: s[2],
                                                        kernel: node.kernel.height, stride: node.stride.height), q)
                }
                // Padded, rectangular or ceil mode: max commutes with the monotone dequantize,
                // and padding never wins.
                return .codes(Int8Kernels.maxPool2d(c, planes: n * step.inputShape[0], pool: poolGeometry(step)), q)
            }
            if !node.hasPlainPoolGeometry {
                return .floats(Int8Kernels.maxPool2d(floats(input), planes: n * step.inputShape[0], pool: poolGeometry(step)))
            }
            return floatResult(statelessOperation(node.statelessKind!)!([tensor(input, step.inputShape)], nil))
        case .flatten:
            return input
        case .add:
            let other = values[step.inputs[1]]!
            if let grid = node.sharedInputGrid, let k = node.sharedInputIndex {
                // tensor_quantize: input k on the add's own grid (observed and substituted as an
                // integer layer's input), dequantized; the other input as it comes; the training
                // op's float sum, exactly fake quant's. A quantize node follows if needed.
                let own = codes(values[step.inputs[k]]!, grid)
                observeInputCodes?(node.name, own)
                var operands = floatInputs()
                operands[k] = Variable(Tensor(shape: operands[k].value.shape,
                                              storage: Int8Kernels.dequantize(substituteInputCodes?(node.name) ?? own, grid)))
                return floatResult(add(operands[0], operands[1], tape: nil))
            }
            if let shared = node.sharedInputGrid {
                // joint_quant: both operands on one grid, dequantized and summed in float exactly as
                // fake quant sums its two fake-quantized operands; a quantize node follows if needed.
                // Observed and substituted as the two operands' codes one after the other, as an
                // integer layer's input (`qat verify` checks the add's grid like a layer's).
                let own = codes(input, shared) + codes(other, shared)
                observeInputCodes?(node.name, own)
                let both = Int8Kernels.dequantize(substituteInputCodes?(node.name) ?? own, shared)
                let half = both.count / 2
                return .floats((0..<half).map { both[$0] + both[half + $0] })
            }
            if let qy = node.output, case .codes(let a, let qa) = input, case .codes(let b, let qb) = other {
                return .codes(Int8Kernels.add(a, qa, b, qb, output: qy, relu: node.fusedActivation != nil,
                                              upperBound: node.fusedActivation?.codeRange(on: qy).upperBound ?? .max), qy)
            }
            let operands = floatInputs()
            let y = add(operands[0], operands[1], tape: nil)
            if let qy = node.output {   // float add into codes
                var q = Int8Kernels.quantize(y.value.storage, qy)
                if let activation = node.fusedActivation { saturate(&q, activation.codeRange(on: qy)) }
                return .codes(q, qy)
            }
            return floatResult(y)
        case .clip, .leakyReLU, .sigmoid, .hardSigmoid, .hardSwish:
            if case .codes(let c, let q) = input {
                // Element-wise on 256 possible inputs: the op's own outputs, tabulated per code.
                let op = statelessOperation(node.statelessKind!)!
                let table = Int8Kernels.unaryTable(on: q) { values in
                    op([Variable(Tensor(shape: [1, values.count], storage: values))], nil).value.storage
                }
                return .floats(Int8Kernels.lookup(c, table: table))
            }
            if node.op == .hardSwish { return .floats(Int8Kernels.hardSwish(floats(input))) }
            return floatResult(statelessOperation(node.statelessKind!)!(floatInputs(), nil))
        case .globalAvgpool2d:
            let s = step.inputShape, planes = n * s[0], area = s[1] * s[2]
            let factor = 1 / Float(area)   // as globalAveragePool
            if case .codes(let c, let q) = input {
                return .floats(Int8Kernels.globalAveragePool(c, q, planes: planes, area: area, factor: factor))
            }
            return .floats(Int8Kernels.globalAveragePool(floats(input), planes: planes, area: area, factor: factor))
        case .mul:
            if let (full, perPlane) = planeScaling(step) {
                // Squeeze-and-excitation: [C, H, W] · [C, 1, 1], one product per element.
                return .floats(Int8Kernels.scaleRows(floats(values[full]!), by: floats(values[perPlane]!)))
            }
            return floatResult(statelessOperation(node.statelessKind!)!(floatInputs(), nil))
        case .avgpool2d, .concat:
            // Float nodes: the training op in eval mode on the dequantized inputs.
            return floatResult(statelessOperation(node.statelessKind!)!(floatInputs(), nil))
        case .constant:
            preconditionFailure("handled above")
        }
    }

    /// A max pool node's geometry, its output size as the model graph has it (ceil mode included).
    private func poolGeometry(_ step: Step) -> Int8PoolGeometry {
        let node = step.node
        return Int8PoolGeometry(height: step.inputShape[1], width: step.inputShape[2], outputHeight: step.outputShape[1],
                                outputWidth: step.outputShape[2], kernelHeight: node.kernel.height, kernelWidth: node.kernel.width,
                                strideHeight: node.stride.height, strideWidth: node.stride.width,
                                padTop: node.padding.top, padLeft: node.padding.left)
    }

    /// For a mul node of shape [C, H, W] · [C, 1, 1] (either order, neither a constant): the value
    /// indices of the full operand and of the per-plane one.
    private func planeScaling(_ step: Step) -> (full: Int, perPlane: Int)? {
        guard step.inputs.count == 2, step.inputs.allSatisfy({ $0 == 0 || steps[$0 - 1].node.op != .constant }) else { return nil }
        let (a, b) = (step.inputShapes[0], step.inputShapes[1])
        func scales(_ full: [Int], by perPlane: [Int]) -> Bool {
            full.count == 3 && perPlane == [full[0], 1, 1] && full == step.outputShape
        }
        if scales(a, by: b) { return (step.inputs[0], step.inputs[1]) }
        if scales(b, by: a) { return (step.inputs[1], step.inputs[0]) }
        return nil
    }

    /// The integer kernels' geometry of any conv node.
    private func generalConvGeometry(_ step: Step, _ n: Int) -> Int8ConvGeometry {
        let s = step.inputShape, node = step.node
        return Int8ConvGeometry(batch: n, channels: s[0], height: s[1], width: s[2], outputChannels: node.outputChannels,
                                kernelHeight: node.kernel.height, kernelWidth: node.kernel.width,
                                strideHeight: node.stride.height, strideWidth: node.stride.width,
                                dilationHeight: node.dilation.height, dilationWidth: node.dilation.width,
                                padTop: node.padding.top, padLeft: node.padding.left, padBottom: node.padding.bottom,
                                padRight: node.padding.right, groups: node.groups)
    }

    /// The integer kernels' geometry of a plain conv node (square kernel, one stride and padding).
    private func convGeometry(_ step: Step, _ n: Int) -> ConvGeometry {
        let s = step.inputShape, node = step.node
        return ConvGeometry(batch: n, channels: s[0], height: s[1], width: s[2], outputChannels: node.outputChannels,
                            kernel: node.kernel.height, stride: node.stride.height, padding: node.padding.top)
    }

    /// A conv or linear node: integer kernels on codes, or float for an INT16 layer.
    private func runWeighted(_ step: Step, _ n: Int, _ input: Value, _ observeInputCodes: ((String, [Int8]) -> Void)?,
                             _ substituteInputCodes: ((String) -> [Int8]?)?) -> Value {
        let node = step.node
        if let qd = node.inputQuantizer {
            let own = codes(input, qd)
            observeInputCodes?(node.name, own)
            let x = substituteInputCodes?(node.name) ?? own
            if node.op == .conv2d && !node.convolution.isPlain {
                // Grouped, depthwise, dilated, rectangular or asymmetrically padded.
                let g = generalConvGeometry(step, n)
                if let r = step.requantization {
                    return .codes(Int8Kernels.conv2d(x, g, inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                     bias: node.biasCodes, requantize: r, cache: step.convCache), node.output!)
                }
                return .floats(Int8Kernels.conv2dDequantized(x, g, inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                             bias: node.biasCodes, scales: node.multipliers, offsets: step.offsets,
                                                             cache: step.convCache))
            }
            if node.op == .conv2d {
                let g = convGeometry(step, n)
                if let r = step.requantization {
                    return .codes(Int8Kernels.conv2d(x, g, inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                     bias: node.biasCodes, requantize: r, cache: step.convCache), node.output!)
                }
                return .floats(Int8Kernels.conv2dDequantized(x, g, inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                             bias: node.biasCodes, scales: node.multipliers, offsets: step.offsets,
                                                             cache: step.convCache))
            }
            if let r = step.requantization {
                return .codes(Int8Kernels.linear(x, batch: n, inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                 bias: node.biasCodes, requantize: r), node.output!)
            }
            return .floats(Int8Kernels.linearDequantized(x, batch: n, inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                         bias: node.biasCodes, scales: node.multipliers, offsets: step.offsets))
        }
        let x = Variable(Tensor(shape: [n] + step.inputShape, storage: floats(input)))
        if let grid = node.inputFakeQuantization { grid.fakeQuantize(&x.value.storage) }   // an INT16 layer
        node.inputCast?.cast(&x.value.storage)   // a cast layer
        if node.op == .conv2d {
            return .floats(node.convolution.apply(x, weight: step.floatWeight!, bias: step.floatBias, tape: nil).value.storage)
        }
        return .floats(linear(x, weight: step.floatWeight!, bias: step.floatBias, tape: nil).value.storage)
    }

    /// A fused activation on codes: clamps them to `kept`.
    private func saturate(_ codes: inout [Int8], _ kept: ClosedRange<Int8>) {
        let (low, high) = (kept.lowerBound, kept.upperBound)
        codes.withUnsafeMutableBufferPointer { c in
            for i in c.indices { c[i] = min(max(c[i], low), high) }
        }
    }
}
