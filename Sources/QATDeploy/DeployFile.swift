import Foundation
import QATCore
import QATData
import QATIO
import QATModel
import QATTrain

/// A deployed network: the INT8 engine's program, independent of the training classes.
/// `Deployer` makes one from a QAT checkpoint, `write(to:)`/`read(from:)` move it through an
/// HDF5 file (schema: docs/DEPLOY-FORMAT.md), and `Int8Model` runs it.
public struct DeployFile: Equatable, Sendable {
    public static let formatName = "qat-int8-deploy"
    public static let formatVersion = 1

    public var modelName: String
    /// One sample's shape, e.g. [C, H, W].
    public var inputShape: [Int]
    public var numberOfClasses: Int
    /// The spec of the trained model (informational: names, topology before folding).
    public var modelSpecJSON: String
    /// The checkpoint this file was made from (informational).
    public var source: String
    /// Nodes in execution order; each reads earlier nodes or "input".
    public var nodes: [DeployNode]

    public init(modelName: String, inputShape: [Int], numberOfClasses: Int, modelSpecJSON: String,
                source: String, nodes: [DeployNode]) {
        self.modelName = modelName
        self.inputShape = inputShape
        self.numberOfClasses = numberOfClasses
        self.modelSpecJSON = modelSpecJSON
        self.source = source
        self.nodes = nodes
    }
}

/// One step of the INT8 engine.
public struct DeployNode: Equatable, Sendable {
    public enum Op: String, Sendable, CaseIterable {
        /// float → codes with `output` (and saturation when an activation is fused).
        case quantize
        /// Integer conv/linear when `inputQuantizer` is set, else float.
        case conv2d, linear
        /// Float, eval-mode BatchNorm (running statistics): only where it could not be folded.
        case batchnorm2d
        /// On codes: max(q, zero point); on floats: max(x, 0).
        case relu
        /// On codes: clamp(q, zero point, the code of 6.0); on floats: min(max(x, 0), 6).
        case relu6
        /// On codes or floats, as the input comes.
        case maxpool2d, flatten
        /// Float only.
        case avgpool2d
        /// Float, or on codes when both inputs are codes and `output` is set.
        case add
        /// Float only: the training op in eval mode, between dequantize and quantize.
        case clip, leakyReLU = "leaky_relu", sigmoid, hardSigmoid = "hard_sigmoid", hardSwish = "hard_swish"
        case globalAvgpool2d = "global_avgpool2d", mul, concat
        /// Float, no inputs: `floatTensors["value"]`, [1, ...constantShape], broadcast over the batch.
        case constant
    }

    /// Unique within the file: the spec layer name, or "quantize:<value>" for inserted quantize nodes.
    public var name: String
    public var op: Op
    /// Names of the nodes read ("input" is the image batch).
    public var inputs: [String]
    /// The spec layer whose output this node's output is (after folding and fusion), or "" when
    /// it is not any layer's output (a plain quantize node). `Int8Model.forward(observe:)` reports by it.
    public var produces: String
    /// Spec layers folded or fused into this node (BatchNorm, ReLU), for reports.
    public var fused: [String] = []
    /// Set: the node outputs int8 codes with this quantizer. Nil: it outputs float.
    public var output: QuantizationGrid?
    /// With int8 output: the activation fused into it as saturation of the codes, if any.
    public var fusedActivation: FusedActivation?
    // Geometry (conv2d, pools).
    public var kernel = Size2D(1), stride = Size2D(1)
    public var padding = Padding2D(0)
    /// conv2d: the dilation, and the groups the channels split into (depthwise: groups == in_channels).
    public var dilation = Size2D(1)
    public var groups = 1
    /// Pools: output sizes round up; average pools count padded cells in the divisor.
    public var ceilMode = false, countIncludePad = true
    // conv2d / linear
    public var inputChannels = 0, outputChannels = 0
    /// clip, leaky_relu, hard_sigmoid: their attributes.
    public var clip = ClipAttributes()
    public var leakyReLU = LeakyReLUAttributes()
    public var hardSigmoid = HardSigmoidAttributes()
    /// constant: one sample's shape.
    public var constantShape: [Int] = []
    /// Integer layers: the quantizer of the input codes (s_d, o_d).
    public var inputQuantizer: QuantizationGrid?
    /// An add under `joint_quant` (both operands, before their float sum), a max pool under
    /// `tensor_quantize` (its input) or an add under `tensor_quantize` (input `sharedInputIndex`):
    /// the grid the inputs are quantized to.
    public var sharedInputGrid: QuantizationGrid?
    /// An add under `tensor_quantize`: the one input on `sharedInputGrid` (the other is read as
    /// it comes); nil: every input.
    public var sharedInputIndex: Int?
    /// Integer layers: w_q [O, C / groups, KH, KW] or [O, I].
    public var weightCodes: [Int8] = []
    /// Integer layers: b_q [O].
    public var biasCodes: [Int32] = []
    /// Integer layers: per output channel s_w'[c] (folded BN included; negative where γ < 0).
    public var weightScales: [Float] = []
    /// Integer layers: per output channel s_d·s_w'[c]/s_y (int8 output) or s_d·s_w'[c] (float output).
    public var multipliers: [Float] = []
    /// Integer layers: b'/(s_d·s_w'[c]) − b_q, the part of the bias that int32 cannot hold, in
    /// accumulator units (|r| ≤ 0.5).
    public var biasResidual: [Float] = []
    /// Float conv/linear of an INT16 layer: the input is fake-quantized on this grid first, and
    /// `floatTensors["weight"]` is the already fake-quantized (ARQ) weight.
    public var inputFakeQuantization: QuantizationGrid?
    /// Float conv/linear of a weight-only layer (`weight_compress_only`): `floatTensors["weight"]`
    /// is the dequantized INT8 weight and the input stays float. Set by the deployer for its
    /// report; the file does not record it (the node is a plain float conv/linear).
    public var isWeightOnly = false
    /// Float conv/linear of a cast layer (Vitis AI's float `datatype`): the input is cast to this
    /// format and back first (nil: no cast), and `floatTensors` hold the already cast weight and bias.
    public var inputCast: FloatFormat?
    /// Cast layers: the three formats, for the deployer's report and the exporter's refusal; the
    /// file records `inputCast` only (the weight and bias are stored cast).
    public var floatCast: FloatCast?
    /// Integer layers with NUQ weights: the levels per row (`num_steps`), for the deployer's
    /// report; the file does not record it (the codes are ordinary int8 codes).
    public var nonUniformSteps: Int?
    /// Float conv/linear: weight and bias; batchnorm2d: γ, β, running mean and variance.
    public var floatTensors: [String: Tensor] = [:]
    /// batchnorm2d: ε.
    public var epsilon: Float = 1e-5

    public init(name: String, op: Op, inputs: [String], produces: String) {
        self.name = name
        self.op = op
        self.inputs = inputs
        self.produces = produces
    }

    public var isInteger: Bool { inputQuantizer != nil }

    /// How many inputs the op reads.
    public var inputCount: ClosedRange<Int> {
        switch op {
        case .constant: return 0...0
        case .add, .mul: return 2...2
        case .concat: return 2...Int.max
        case .quantize, .conv2d, .linear, .batchnorm2d, .relu, .relu6, .maxpool2d, .flatten, .avgpool2d, .clip, .leakyReLU,
             .sigmoid, .hardSigmoid, .hardSwish, .globalAvgpool2d: return 1...1
        }
    }

    /// The weight's shape for conv2d ([O, C / groups, KH, KW]) and linear ([O, I]) nodes; nil for other ops.
    public var weightShape: [Int]? {
        switch op {
        case .conv2d: return [outputChannels, inputChannels / max(groups, 1), kernel.height, kernel.width]
        case .linear: return [outputChannels, inputChannels]
        case .quantize, .batchnorm2d, .relu, .relu6, .maxpool2d, .flatten, .avgpool2d, .add, .clip, .leakyReLU, .sigmoid,
             .hardSigmoid, .hardSwish, .globalAvgpool2d, .mul, .concat, .constant: return nil
        }
    }
}

/// An activation fused into a node with int8 output: the requantized codes saturate, which is
/// exact because quantization is monotone and maps 0 to the zero point (docs/DEPLOY-FORMAT.md).
public enum FusedActivation: Equatable, Sendable {
    /// Codes clamp to [zero point, 127].
    case relu
    /// Codes clamp to [zero point, q6], q6 = the code of 6.0 on the output's grid,
    /// `clamp(round(6 / s) + zero point, −128, 127)`, the code fake quant gives a ReLU6 output of 6.
    case relu6

    /// The codes this activation keeps, on the grid `q`.
    public func codeRange(on q: QuantizationGrid) -> ClosedRange<Int8> {
        switch self {
        case .relu: return q.zeroPoint...Int8.max
        case .relu6: return q.zeroPoint...Int8Kernels.quantize([6], q)[0]
        }
    }
}

// MARK: - HDF5

extension DeployFile {
    /// Writes the file atomically (a temporary file renamed over `path`).
    public func write(to path: String) throws {
        try AtomicFile.write(to: path) { temporary in
            let file = try HDF5File.create(at: temporary)
            defer { try? file.close() }
            try file.setAttribute("format", to: .string(Self.formatName))
            try file.setAttribute("format_version", to: .int64(Int64(Self.formatVersion)))
            try file.setAttribute("model_name", to: .string(modelName))
            try file.setAttribute("model_spec", to: .string(modelSpecJSON))
            try file.setAttribute("source", to: .string(source))
            try file.setAttribute("input_shape", to: .int64s(inputShape.map(Int64.init)))
            try file.setAttribute("num_classes", to: .int64(Int64(numberOfClasses)))
            try file.createGroup(at: "/nodes")
            try file.setAttribute("order", to: .strings(nodes.map(\.name)), on: "/nodes")
            for (index, node) in nodes.enumerated() {
                try node.write(at: "/nodes/\(index)", in: file)
            }
            try file.close()
        }
    }

    /// Reads and checks a deploy file; errors name the file and the object.
    public static func read(from path: String) throws -> DeployFile {
        let file = try HDF5File.open(at: path)
        defer { try? file.close() }
        func fail(_ object: String?, _ message: String) -> HDF5Error { HDF5Error(file: path, object: object, message: message) }
        guard try file.hasAttribute("format") else { throw fail(nil, "not a qat deploy file (no 'format' attribute)") }
        let format = try file.stringAttribute("format")
        guard format == formatName else {
            throw fail(nil, "not a qat deploy file: format is '\(format)', expected '\(formatName)'"
                       + (format == CheckpointFile.formatName ? " (this is a checkpoint: make a deploy file with `qat deploy`)" : ""))
        }
        let version = try file.int64Attribute("format_version")
        guard version == formatVersion else {
            throw fail(nil, "deploy format version \(version) is not supported (this qat reads version \(formatVersion))")
        }
        guard case .int64s(let shape) = try file.attribute("input_shape"), !shape.isEmpty else {
            throw fail("/", "input_shape must be an array of int64 values")
        }
        let order = try file.stringsAttribute("order", of: "/nodes")
        var nodes: [DeployNode] = []
        for index in order.indices {
            let node = try DeployNode.read(at: "/nodes/\(index)", in: file, fail: fail)
            guard node.name == order[index] else { throw fail("/nodes/\(index)", "name '\(node.name)' but /nodes order says '\(order[index])'") }
            nodes.append(node)
        }
        let deployed = DeployFile(modelName: try file.stringAttribute("model_name"), inputShape: shape.map { Int($0) },
                                  numberOfClasses: Int(try file.int64Attribute("num_classes")),
                                  modelSpecJSON: try file.stringAttribute("model_spec"),
                                  source: try file.stringAttribute("source"), nodes: nodes)
        try deployed.validate(fail: fail)
        return deployed
    }

    /// Structural checks a hand-edited or truncated file could fail: known inputs, array sizes.
    func validate(fail: (String?, String) -> HDF5Error) throws {
        var known: Set<String> = ["input"]
        guard !nodes.isEmpty else { throw fail("/nodes", "no nodes") }
        for (index, node) in nodes.enumerated() {
            let object = "/nodes/\(index) (\(node.name))"
            for input in node.inputs where !known.contains(input) {
                throw fail(object, "input '\(input)' is not an earlier node")
            }
            guard known.insert(node.name).inserted else { throw fail(object, "duplicate node name") }
            guard node.inputCount.contains(node.inputs.count) else {
                let count = node.inputCount.upperBound == Int.max ? "\(node.inputCount.lowerBound) or more" : "\(node.inputCount.lowerBound)"
                throw fail(object, "\(node.op.rawValue) takes \(count) input(s), got \(node.inputs.count)")
            }
            guard node.op != .conv2d || (node.groups >= 1 && node.inputChannels % node.groups == 0 && node.outputChannels % node.groups == 0) else {
                throw fail(object, "groups \(node.groups) does not divide in_channels \(node.inputChannels) and out_channels \(node.outputChannels)")
            }
            if node.op == .constant && node.floatTensors["value"]?.shape != [1] + node.constantShape {
                throw fail(object, "constant without a value of shape \([1] + node.constantShape)")
            }
            if node.op == .quantize && node.output == nil { throw fail(object, "quantize node without output quantizer") }
            if let weightShape = node.weightShape {
                let o = node.outputChannels
                let perChannel = weightShape.dropFirst().reduce(1, *)
                if node.isInteger {
                    guard node.weightCodes.count == o * perChannel, node.biasCodes.count == o,
                          node.weightScales.count == o, node.multipliers.count == o, node.biasResidual.count == o else {
                        throw fail(object, "weight/bias/scale/multiplier/residual sizes do not match \(o) output channels × \(perChannel)")
                    }
                } else {
                    guard node.floatTensors["weight"]?.count == o * perChannel else { throw fail(object, "float weight missing or of the wrong size") }
                }
            }
            if node.op == .batchnorm2d {
                for key in ["gamma", "beta", "running_mean", "running_var"] where node.floatTensors[key] == nil {
                    throw fail(object, "batchnorm2d without \(key)")
                }
            }
        }
        guard nodes.last!.output == nil else { throw fail("/nodes", "the last node must output float logits") }
    }
}

extension DeployNode {
    fileprivate func write(at group: String, in file: HDF5File) throws {
        try file.createGroup(at: group)
        func attribute(_ name: String, _ value: HDF5Attribute) throws { try file.setAttribute(name, to: value, on: group) }
        try attribute("name", .string(name))
        try attribute("op", .string(op.rawValue))
        try attribute("inputs", .strings(inputs))
        try attribute("produces", .string(produces))
        try attribute("fused", .strings(fused))
        if let output {
            try attribute("output", .string("int8"))
            try attribute("output_scale", .double(Double(output.scale)))
            try attribute("output_zero_point", .int64(Int64(output.zeroPoint)))
            // Round modes are written only when not half to even, so older files keep their bytes.
            if output.roundMode != .halfEven { try attribute("output_round_mode", .string(output.roundMode.rawValue)) }
            if output.narrowRange { try attribute("output_narrow_range", .int64(1)) }
            try attribute("relu", .int64(fusedActivation == nil ? 0 : 1))
            if fusedActivation == .relu6 { try attribute("relu6", .int64(1)) }
        } else {
            try attribute("output", .string("float"))
        }
        switch op {
        case .conv2d, .linear:
            try attribute("in_channels", .int64(Int64(inputChannels)))
            try attribute("out_channels", .int64(Int64(outputChannels)))
            if op == .conv2d {
                try writeGeometry(attribute)
                // Written only when not the default, so files of plain convs keep their bytes.
                if dilation != Size2D(1) { try attribute("dilation", .int64s([dilation.height, dilation.width].map(Int64.init))) }
                if groups != 1 { try attribute("groups", .int64(Int64(groups))) }
            }
            let weightShape = self.weightShape!
            if let inputQuantizer {
                try attribute("integer", .int64(1))
                try attribute("input_scale", .double(Double(inputQuantizer.scale)))
                try attribute("input_zero_point", .int64(Int64(inputQuantizer.zeroPoint)))
                if inputQuantizer.roundMode != .halfEven { try attribute("input_round_mode", .string(inputQuantizer.roundMode.rawValue)) }
                if inputQuantizer.narrowRange { try attribute("input_narrow_range", .int64(1)) }
                try file.write(weightCodes, shape: weightShape, at: group + "/weight")
                try file.write(biasCodes, shape: [outputChannels], at: group + "/bias")
                try file.write(weightScales, shape: [outputChannels], at: group + "/weight_scale")
                try file.write(multipliers, shape: [outputChannels], at: group + "/multiplier")
                try file.write(biasResidual, shape: [outputChannels], at: group + "/bias_residual")
            } else {
                try attribute("integer", .int64(0))
                if let q = inputFakeQuantization {
                    try attribute("input_fake_quant_bits", .int64(Int64(q.bits)))
                    try attribute("input_fake_quant_scale", .double(Double(q.scale)))
                    try attribute("input_fake_quant_offset", .int64(Int64(q.offset)))
                    if q.roundMode != .halfEven { try attribute("input_fake_quant_round_mode", .string(q.roundMode.rawValue)) }
                    if q.narrowRange { try attribute("input_fake_quant_narrow_range", .int64(1)) }
                }
                if let inputCast { try attribute("input_cast", .string(inputCast.rawValue)) }
                for (key, tensor) in floatTensors.sorted(by: { $0.key < $1.key }) { try file.write(tensor, at: group + "/" + key) }
            }
        case .batchnorm2d:
            try attribute("epsilon", .double(Double(epsilon)))
            for (key, tensor) in floatTensors.sorted(by: { $0.key < $1.key }) { try file.write(tensor, at: group + "/" + key) }
        case .maxpool2d, .avgpool2d:
            try writeGeometry(attribute)
            if ceilMode { try attribute("ceil_mode", .int64(1)) }
            if op == .avgpool2d && !countIncludePad { try attribute("count_include_pad", .int64(0)) }
            try writeSharedInputGrid(attribute)
        case .clip:
            try attribute("min", .double(Double(clip.min)))
            try attribute("max", .double(Double(clip.max)))
        case .leakyReLU:
            try attribute("negative_slope", .double(Double(leakyReLU.negativeSlope)))
        case .hardSigmoid:
            try attribute("alpha", .double(Double(hardSigmoid.alpha)))
            try attribute("beta", .double(Double(hardSigmoid.beta)))
        case .constant:
            try attribute("shape", .int64s(constantShape.map(Int64.init)))
            for (key, tensor) in floatTensors.sorted(by: { $0.key < $1.key }) { try file.write(tensor, at: group + "/" + key) }
        case .add:
            try writeSharedInputGrid(attribute)
        case .quantize, .relu, .relu6, .flatten, .sigmoid, .hardSwish, .globalAvgpool2d, .mul, .concat:
            break
        }
    }

    /// Written only under joint_quant or tensor_quantize, so other files keep their bytes; the
    /// input index only for an add's one input.
    private func writeSharedInputGrid(_ attribute: (String, HDF5Attribute) throws -> Void) throws {
        guard let grid = sharedInputGrid else { return }
        try attribute("shared_input_scale", .double(Double(grid.scale)))
        try attribute("shared_input_zero_point", .int64(Int64(grid.zeroPoint)))
        if let sharedInputIndex { try attribute("shared_input_index", .int64(Int64(sharedInputIndex))) }
    }

    /// kernel_size and stride as an int64 when square, else [h, w]; padding as an int64 when
    /// all sides agree (the form of files from before rectangular geometry), else [top, left,
    /// bottom, right]. Pools write padding only when there is some.
    private func writeGeometry(_ attribute: (String, HDF5Attribute) throws -> Void) throws {
        func size(_ s: Size2D) -> HDF5Attribute {
            s.height == s.width ? .int64(Int64(s.height)) : .int64s([Int64(s.height), Int64(s.width)])
        }
        try attribute("kernel_size", size(kernel))
        try attribute("stride", size(stride))
        let uniform = padding == Padding2D(padding.top)
        if op == .conv2d || !uniform || padding.top != 0 {
            try attribute("padding", uniform ? .int64(Int64(padding.top))
                                             : .int64s([padding.top, padding.left, padding.bottom, padding.right].map(Int64.init)))
        }
    }

    fileprivate static func read(at group: String, in file: HDF5File, fail: (String?, String) -> HDF5Error) throws -> DeployNode {
        guard file.kind(at: group) == .group else { throw fail(group, "missing node group") }
        let opName = try file.stringAttribute("op", of: group)
        guard let op = Op(rawValue: opName) else { throw fail(group, "unknown op '\(opName)'") }
        var node = DeployNode(name: try file.stringAttribute("name", of: group), op: op,
                              inputs: try file.stringsAttribute("inputs", of: group),
                              produces: try file.stringAttribute("produces", of: group))
        node.fused = try file.stringsAttribute("fused", of: group)
        func int(_ name: String) throws -> Int { Int(try file.int64Attribute(name, of: group)) }
        func zeroPoint(_ name: String) throws -> Int8 {
            let value = try int(name)
            guard let z = Int8(exactly: value) else { throw fail(group, "\(name) \(value) is outside int8") }
            return z
        }
        /// An int64, or an int64 array (the geometry of rectangular kernels).
        func ints(_ name: String) throws -> [Int] {
            switch try file.attribute(name, of: group) {
            case .int64(let v): return [Int(v)]
            case .int64s(let v): return v.map { Int($0) }
            case let other: throw fail(group, "attribute '\(name)' has type \(other.typeName), expected int64 or int64 array")
            }
        }
        func size(_ name: String) throws -> Size2D {
            let v = try ints(name)
            guard v.count == 1 || v.count == 2, v.allSatisfy({ $0 >= 1 }) else { throw fail(group, "\(name) must be one or two positive ints, got \(v)") }
            return v.count == 1 ? Size2D(v[0]) : Size2D(height: v[0], width: v[1])
        }
        func readGeometry() throws {
            node.kernel = try size("kernel_size")
            node.stride = try size("stride")
            guard try file.hasAttribute("padding", on: group) else { return }
            let p = try ints("padding")
            guard p.count == 1 || p.count == 4, p.allSatisfy({ $0 >= 0 }) else { throw fail(group, "padding must be one or four ints ≥ 0, got \(p)") }
            node.padding = p.count == 1 ? Padding2D(p[0]) : Padding2D(top: p[0], left: p[1], bottom: p[2], right: p[3])
        }
        func scale(_ name: String) throws -> Float {
            let value = Float(try file.doubleAttribute(name, of: group))
            guard value.isFinite, value > 0 else { throw fail(group, "\(name) must be a positive finite number") }
            return value
        }
        /// A grid's tie rule: the attribute `name`, half to even when absent (files before round modes).
        func roundMode(_ name: String) throws -> RoundMode {
            guard try file.hasAttribute(name, on: group) else { return .halfEven }
            let text = try file.stringAttribute(name, of: group)
            guard let mode = RoundMode(rawValue: text) else {
                throw fail(group, "\(name) must be one of \(RoundMode.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'")
            }
            return mode
        }
        /// A grid's narrow range: the attribute `name` (1), false when absent.
        func narrow(_ name: String) throws -> Bool {
            guard try file.hasAttribute(name, on: group) else { return false }
            let value = try int(name)
            guard value == 0 || value == 1 else { throw fail(group, "\(name) must be 0 or 1, got \(value)") }
            return value == 1
        }
        func readSharedInputGrid() throws {
            guard try file.hasAttribute("shared_input_scale", on: group) else { return }
            node.sharedInputGrid = QuantizationGrid(bits: 8, scale: try scale("shared_input_scale"),
                                                    offset: Int(try zeroPoint("shared_input_zero_point")))
            guard try file.hasAttribute("shared_input_index", on: group) else { return }
            let index = try int("shared_input_index")
            guard op == .add, (0..<node.inputs.count).contains(index) else {
                throw fail(group, "shared_input_index \(index) is not an input of this \(op.rawValue) node (an add's 0 or 1)")
            }
            node.sharedInputIndex = index
        }
        switch try file.stringAttribute("output", of: group) {
        case "int8":
            node.output = QuantizationGrid(bits: 8, scale: try scale("output_scale"), offset: Int(try zeroPoint("output_zero_point")),
                                           roundMode: try roundMode("output_round_mode"), narrowRange: try narrow("output_narrow_range"))
            let relu6 = try file.hasAttribute("relu6", on: group) && int("relu6") != 0
            node.fusedActivation = try int("relu") == 0 ? nil : relu6 ? .relu6 : .relu
            if relu6 && node.fusedActivation == nil { throw fail(group, "relu6 is set but relu is not (a ReLU6 saturates at the zero point too)") }
        case "float": break
        case let other: throw fail(group, "output must be 'int8' or 'float', got '\(other)'")
        }
        switch op {
        case .conv2d, .linear:
            node.inputChannels = try int("in_channels")
            node.outputChannels = try int("out_channels")
            if op == .conv2d {
                try readGeometry()
                if try file.hasAttribute("dilation", on: group) { node.dilation = try size("dilation") }
                if try file.hasAttribute("groups", on: group) { node.groups = try int("groups") }
            }
            if try int("integer") != 0 {
                node.inputQuantizer = QuantizationGrid(bits: 8, scale: try scale("input_scale"), offset: Int(try zeroPoint("input_zero_point")),
                                                       roundMode: try roundMode("input_round_mode"), narrowRange: try narrow("input_narrow_range"))
                node.weightCodes = try file.read(Int8.self, at: group + "/weight").values
                node.biasCodes = try file.read(Int32.self, at: group + "/bias").values
                node.weightScales = try file.read(Float.self, at: group + "/weight_scale").values
                node.multipliers = try file.read(Float.self, at: group + "/multiplier").values
                node.biasResidual = try file.read(Float.self, at: group + "/bias_residual").values
            } else {
                if try file.hasAttribute("input_fake_quant_bits", on: group) {
                    let bits = try int("input_fake_quant_bits")
                    guard bits == 8 || bits == 16 else { throw fail(group, "input_fake_quant_bits must be 8 or 16, got \(bits)") }
                    node.inputFakeQuantization = QuantizationGrid(bits: bits, scale: try scale("input_fake_quant_scale"),
                                                                        offset: try int("input_fake_quant_offset"),
                                                                        roundMode: try roundMode("input_fake_quant_round_mode"),
                                                                        narrowRange: try narrow("input_fake_quant_narrow_range"))
                }
                if try file.hasAttribute("input_cast", on: group) {
                    let name = try file.stringAttribute("input_cast", of: group)
                    guard let format = FloatFormat(rawValue: name) else {
                        throw fail(group, "input_cast must be one of \(FloatFormat.allCases.map(\.rawValue).joined(separator: ", ")), got '\(name)'")
                    }
                    node.inputCast = format
                }
                for key in try file.children(of: group) { node.floatTensors[key] = try file.readTensor(at: group + "/" + key) }
            }
        case .batchnorm2d:
            node.epsilon = Float(try file.doubleAttribute("epsilon", of: group))
            for key in try file.children(of: group) { node.floatTensors[key] = try file.readTensor(at: group + "/" + key) }
        case .maxpool2d, .avgpool2d:
            try readGeometry()
            if try file.hasAttribute("ceil_mode", on: group) { node.ceilMode = try int("ceil_mode") != 0 }
            if try file.hasAttribute("count_include_pad", on: group) { node.countIncludePad = try int("count_include_pad") != 0 }
            try readSharedInputGrid()
        case .clip:
            node.clip = ClipAttributes(min: Float(try file.doubleAttribute("min", of: group)), max: Float(try file.doubleAttribute("max", of: group)))
        case .leakyReLU:
            node.leakyReLU = LeakyReLUAttributes(negativeSlope: Float(try file.doubleAttribute("negative_slope", of: group)))
        case .hardSigmoid:
            node.hardSigmoid = HardSigmoidAttributes(alpha: Float(try file.doubleAttribute("alpha", of: group)),
                                                     beta: Float(try file.doubleAttribute("beta", of: group)))
        case .constant:
            node.constantShape = try ints("shape")
            for key in try file.children(of: group) { node.floatTensors[key] = try file.readTensor(at: group + "/" + key) }
        case .add:
            try readSharedInputGrid()
        case .quantize, .relu, .relu6, .flatten, .sigmoid, .hardSwish, .globalAvgpool2d, .mul, .concat:
            break
        }
        return node
    }
}
