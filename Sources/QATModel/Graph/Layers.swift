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
    /// Trainable quantizer parameters, named relative to the layer (`act_quant.clip_max`).
    var parameters: [NamedVariable] { get }
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
    case .relu: return StatelessLayer(spec: spec) { x, tape in relu(x[0], tape: tape) }
    case .relu6: return StatelessLayer(spec: spec) { x, tape in relu6(x[0], tape: tape) }
    case .maxpool2d(let p):
        return StatelessLayer(spec: spec) { x, tape in maxPool2d(x[0], kernel: p.kernelSize, stride: p.stride, tape: tape) }
    case .avgpool2d(let p):
        return StatelessLayer(spec: spec) { x, tape in avgPool2d(x[0], kernel: p.kernelSize, stride: p.stride, tape: tape) }
    case .flatten: return StatelessLayer(spec: spec) { x, tape in flatten(x[0], tape: tape) }
    case .add: return StatelessLayer(spec: spec) { x, tape in add(x[0], x[1], tape: tape) }
    }
}

/// Conv and linear share everything but the op they call.
public class WeightedLayer {
    public let spec: LayerSpec
    public let weight: Variable
    public let bias: Variable?
    public var quantizer: (any LayerQuantizer)?

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
}

public final class Conv2DLayer: WeightedLayer, Layer {
    public let convolution: ConvolutionAttributes

    init(spec: LayerSpec, _ convolution: ConvolutionAttributes, generator: inout SeededGenerator) {
        self.convolution = convolution
        let (c, k) = (convolution.inputChannels, convolution.kernelSize)
        super.init(spec: spec, weightShape: [convolution.outputChannels, c, k, k], hasBias: convolution.hasBias,
                   fanIn: c * k * k, generator: &generator)
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        let (x, w) = quantized(inputs[0], training: training, tape: tape)
        return conv2d(x, weight: w, bias: bias, stride: convolution.stride, padding: convolution.padding, tape: tape)
    }
}

public final class LinearLayer: WeightedLayer, Layer {
    init(spec: LayerSpec, _ attributes: LinearAttributes, generator: inout SeededGenerator) {
        super.init(spec: spec, weightShape: [attributes.outputFeatures, attributes.inputFeatures], hasBias: attributes.hasBias,
                   fanIn: attributes.inputFeatures, generator: &generator)
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        let (x, w) = quantized(inputs[0], training: training, tape: tape)
        return linear(x, weight: w, bias: bias, tape: tape)
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
        batchNorm2d(inputs[0], gamma: gamma, beta: beta, statistics: statistics, training: training,
                    momentum: updatesRunningStatistics ? attributes.momentum : 0, epsilon: attributes.epsilon, tape: tape)
    }
}

/// A layer without parameters (activations, pooling, flatten, add): the float op it runs.
public final class StatelessLayer: Layer {
    public let spec: LayerSpec
    private let operation: ([Variable], Tape?) -> Variable

    init(spec: LayerSpec, operation: @escaping ([Variable], Tape?) -> Variable) {
        self.spec = spec
        self.operation = operation
    }

    public var parameters: [NamedVariable] { [] }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable { operation(inputs, tape) }
}
