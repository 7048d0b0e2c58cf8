import QATCore
import QATIO

/// A trainable tensor with its dotted name, e.g. `conv1.weight` or `conv1.act_quant.clip_max`.
public struct NamedVariable {
    public var name: String
    public var variable: Variable
    public init(_ name: String, _ variable: Variable) { self.name = name; self.variable = variable }
}

/// Quantization attached to a conv or linear layer during QAT: fake-quantizes its input and its
/// weight. The retrain config decides which layers get one.
public protocol LayerQuantizer: AnyObject {
    func quantizeInput(_ x: Variable, training: Bool, tape: Tape?) -> Variable
    func quantizeWeight(_ weight: Variable, tape: Tape?) -> Variable
    /// The bias the layer adds: on a grid of its own when the plan quantizes biases, cast in a cast
    /// layer, else itself.
    func quantizeBias(_ bias: Variable, tape: Tape?) -> Variable
    /// Trainable quantizer parameters, named relative to the layer (`act_quant.clip_max`).
    var parameters: [NamedVariable] { get }
}

extension LayerQuantizer {
    /// Biases stay float unless a quantizer says otherwise.
    public func quantizeBias(_ bias: Variable, tape: Tape?) -> Variable { bias }
}

/// One node of the model graph.
public protocol Layer: AnyObject {
    var spec: LayerSpec { get }
    /// Trainable parameters with full dotted names, in canonical order.
    var parameters: [NamedVariable] { get }
    func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable
}

extension Layer {
    public var name: String { spec.name }
}

/// The layer object of one spec layer: the one place that says which float op each kind runs.
func makeLayer(_ spec: LayerSpec, generator: inout SeededGenerator) -> any Layer {
    switch spec.kind {
    case .conv2d(let convolution): return Conv2DLayer(spec: spec, convolution, generator: &generator)
    case .linear(let attributes): return LinearLayer(spec: spec, attributes, generator: &generator)
    case .batchnorm2d(let attributes): return BatchNorm2DLayer(spec: spec, attributes)
    case .constant(let attributes): return ConstantLayer(spec: spec, attributes)
    case .relu, .relu6, .maxpool2d, .avgpool2d, .flatten, .add, .clip, .leakyReLU, .sigmoid, .hardSigmoid, .hardSwish,
         .globalAvgpool2d, .mul, .concat:
        return StatelessLayer(spec: spec, operation: statelessOperation(spec.kind)!)
    }
}

/// The float op of a kind without parameters, on inputs with the batch axis first (a constant's
/// output has batch 1 and broadcasts). The INT8 engine's float nodes run the same function.
package func statelessOperation(_ kind: LayerKind) -> (([Variable], Tape?) -> Variable)? {
    switch kind {
    case .conv2d, .linear, .batchnorm2d, .constant: return nil
    case .relu: return { x, tape in relu(x[0], tape: tape) }
    case .relu6: return { x, tape in relu6(x[0], tape: tape) }
    case .maxpool2d(let p) where p.isPlain:
        return { x, tape in maxPool2d(x[0], kernel: p.kernel.height, stride: p.stride.height, tape: tape) }
    case .maxpool2d(let p):
        return { x, tape in maxPool2d(x[0], kernel: p.kernel, stride: p.stride, padding: p.padding, ceilMode: p.ceilMode, tape: tape) }
    case .avgpool2d(let p) where p.isPlain:
        return { x, tape in avgPool2d(x[0], kernel: p.kernel.height, stride: p.stride.height, tape: tape) }
    case .avgpool2d(let p):
        return { x, tape in
            avgPool2d(x[0], kernel: p.kernel, stride: p.stride, padding: p.padding, ceilMode: p.ceilMode,
                      countIncludePad: p.countIncludePad, tape: tape)
        }
    case .globalAvgpool2d: return { x, tape in globalAveragePool(x[0], tape: tape) }
    case .flatten: return { x, tape in flatten(x[0], tape: tape) }
    case .add: return { x, tape in add(x[0], x[1], tape: tape) }
    case .mul: return { x, tape in multiply(x[0], x[1], tape: tape) }
    case .concat: return { x, tape in concat(x, axis: 1, tape: tape) }
    case .clip(let bounds): return { x, tape in clip(x[0], min: bounds.min, max: bounds.max, tape: tape) }
    case .leakyReLU(let a): return { x, tape in leakyReLU(x[0], negativeSlope: a.negativeSlope, tape: tape) }
    case .sigmoid: return { x, tape in sigmoid(x[0], tape: tape) }
    case .hardSigmoid(let a): return { x, tape in hardSigmoid(x[0], alpha: a.alpha, beta: a.beta, tape: tape) }
    case .hardSwish: return { x, tape in hardSwish(x[0], tape: tape) }
    }
}

extension PoolingAttributes {
    /// A square window and stride without padding or ceil mode: what the original pooling ops take.
    package var isPlain: Bool {
        kernel.height == kernel.width && stride.height == stride.width && padding == Padding2D(0) && !ceilMode
    }
}

extension ConvolutionAttributes {
    /// A square kernel, one stride and one padding for both axes, no dilation, no groups: what
    /// the original conv2d op takes (kept for its speed and its exact results).
    package var isPlain: Bool {
        kernel.height == kernel.width && stride.height == stride.width && padding == Padding2D(padding.top)
            && dilation == Size2D(1) && groups == 1
    }
}

/// Conv and linear share everything but the op they call.
public class WeightedLayer {
    public let spec: LayerSpec
    public let weight: Variable
    public let bias: Variable?
    public var quantizer: (any LayerQuantizer)?
    /// Eval only, set by `Model.forward` around one forward: the bias already on the accumulator
    /// grid, b_q·s_d·s_w, for a layer whose grids are powers of two (its sum is then exact).
    var accumulatorGridBias: Tensor?
    /// The bias this forward adds: on the accumulator grid (set above), else through the quantizer.
    func effectiveBias(tape: Tape?) -> Variable? {
        if let accumulatorGridBias { return Variable(accumulatorGridBias) }
        guard let bias, let quantizer else { return bias }
        return quantizer.quantizeBias(bias, tape: tape)
    }

    /// The float bias fake quant adds before the accumulator grid (its own grid when quantized):
    /// what the deployer rounds onto the accumulator grid, or writes for a float node.
    public var quantizedBiasValue: Tensor? {
        guard let bias else { return nil }
        return quantizer?.quantizeBias(bias, tape: nil).value ?? bias.value
    }

    init(spec: LayerSpec, weightShape: [Int], hasBias: Bool, fanIn: Int, generator: inout SeededGenerator) {
        self.spec = spec
        // PyTorch's default (Kaiming-uniform with a = √5): U(−1/√fanIn, 1/√fanIn) for weight and bias.
        let bound = 1 / Float(fanIn).squareRoot()
        weight = Variable(.uniform(weightShape, bound: bound, using: &generator), requiresGrad: true)
        bias = hasBias ? Variable(.uniform([weightShape[0]], bound: bound, using: &generator), requiresGrad: true) : nil
    }

    public var parameters: [NamedVariable] {
        var list = [NamedVariable("\(spec.name).weight", weight)]
        if let bias { list.append(NamedVariable("\(spec.name).bias", bias)) }
        for p in quantizer?.parameters ?? [] { list.append(NamedVariable("\(spec.name).\(p.name)", p.variable)) }
        return list
    }

    /// The (possibly fake-quantized) input and weight the op should use.
    func quantized(_ x: Variable, training: Bool, tape: Tape?) -> (Variable, Variable) {
        guard let quantizer else { return (x, weight) }
        return (quantizer.quantizeInput(x, training: training, tape: tape), quantizer.quantizeWeight(weight, tape: tape))
    }

    /// Set from `Model.releasesReadOutputs`: false keeps the quantized input for whoever reads it
    /// after the forward pass (a quantizer that records it, in tests).
    final var releasesQuantizedInput = true

    /// Once the op has run, the quantized copy of the input has no reader left: its pullbacks keep
    /// what they need (a padded copy, or the fake quantizer's recipe), so its memory goes now.
    func releaseQuantizedInput(_ quantized: Variable, of input: Variable) {
        if releasesQuantizedInput && quantized !== input { quantized.releaseValue() }
    }
}

public final class Conv2DLayer: WeightedLayer, Layer {
    public let convolution: ConvolutionAttributes

    init(spec: LayerSpec, _ convolution: ConvolutionAttributes, generator: inout SeededGenerator) {
        self.convolution = convolution
        let shape = convolution.weightShape
        super.init(spec: spec, weightShape: shape, hasBias: convolution.hasBias,
                   fanIn: shape.dropFirst().reduce(1, *), generator: &generator)
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        let (x, w) = quantized(inputs[0], training: training, tape: tape)
        let y = convolution.apply(x, weight: w, bias: effectiveBias(tape: tape), tape: tape)
        releaseQuantizedInput(x, of: inputs[0])
        return y
    }
}

extension ConvolutionAttributes {
    /// The float convolution with these attributes (the INT8 engine's float conv nodes run it too).
    package func apply(_ x: Variable, weight: Variable, bias: Variable?, tape: Tape?) -> Variable {
        if isPlain {
            return conv2d(x, weight: weight, bias: bias, stride: stride.height, padding: padding.top, tape: tape)
        }
        return conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups, tape: tape)
    }
}

public final class LinearLayer: WeightedLayer, Layer {
    init(spec: LayerSpec, _ attributes: LinearAttributes, generator: inout SeededGenerator) {
        super.init(spec: spec, weightShape: [attributes.outputFeatures, attributes.inputFeatures], hasBias: attributes.hasBias,
                   fanIn: attributes.inputFeatures, generator: &generator)
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        let (x, w) = quantized(inputs[0], training: training, tape: tape)
        let y = linear(x, weight: w, bias: effectiveBias(tape: tape), tape: tape)
        releaseQuantizedInput(x, of: inputs[0])
        return y
    }
}

public final class BatchNorm2DLayer: Layer {
    public let spec: LayerSpec
    public let attributes: BatchNormAttributes
    public let gamma: Variable
    public let beta: Variable
    public let statistics: BatchNormStatistics
    /// False freezes the running statistics (momentum 0) while still normalising with batch
    /// statistics in training mode; the lr = 0 check uses it so nothing at all may change.
    public var updatesRunningStatistics = true

    init(spec: LayerSpec, _ attributes: BatchNormAttributes) {
        self.spec = spec
        self.attributes = attributes
        gamma = Variable(Tensor(shape: [attributes.features], repeating: 1), requiresGrad: true)
        beta = Variable(Tensor(shape: [attributes.features]), requiresGrad: true)
        statistics = BatchNormStatistics(channels: attributes.features)
    }

    public var parameters: [NamedVariable] {
        [NamedVariable("\(spec.name).weight", gamma), NamedVariable("\(spec.name).bias", beta)]
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        forward(inputs, training: training, fusedClamp: nil, tape: tape)
    }

    /// With `fusedClamp`, the output is the activation (ReLU, ReLU6, Clip) of BatchNorm(x), computed
    /// in BatchNorm's own passes.
    func forward(_ inputs: [Variable], training: Bool, fusedClamp: FusedClamp?, tape: Tape?) -> Variable {
        batchNorm2d(inputs[0], gamma: gamma, beta: beta, statistics: statistics, training: training,
                    momentum: updatesRunningStatistics ? attributes.momentum : 0, epsilon: attributes.epsilon,
                    fusedClamp: fusedClamp, tape: tape)
    }
}

/// A value without inputs: an operand of add or mul (ONNX initializers that are not weights).
/// Not trainable; checkpoints store it as `<name>.value`. It starts at zero until a checkpoint
/// (or an importer) sets it.
public final class ConstantLayer: Layer {
    public let spec: LayerSpec
    /// [1, ...shape]: batch 1, so it broadcasts over any batch.
    public var value: Tensor

    init(spec: LayerSpec, _ attributes: ConstantAttributes) {
        self.spec = spec
        value = Tensor(shape: [1] + attributes.shape)
    }

    public var parameters: [NamedVariable] { [] }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable { Variable(value) }
}

/// A layer without parameters (activations, pooling, flatten, add): the float op it runs, on
/// inputs first fake-quantized by `inputQuantizer` when the config gives the layer one (an add
/// under `joint_quant`, a max pool or one input of an add under `tensor_quantize`; TensorQuantizer.swift).
public final class StatelessLayer: Layer {
    public let spec: LayerSpec
    private let operation: ([Variable], Tape?) -> Variable
    public var inputQuantizer: TensorQuantizer?

    init(spec: LayerSpec, operation: @escaping ([Variable], Tape?) -> Variable) {
        self.spec = spec
        self.operation = operation
    }

    public var parameters: [NamedVariable] {
        (inputQuantizer?.parameters ?? []).map { NamedVariable("\(spec.name).\($0.name)", $0.variable) }
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        operation(inputQuantizer?.quantize(inputs, tape: tape) ?? inputs, tape)
    }
}
