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

/// Conv and linear share everything but the op they call.
public class WeightedLayer {
    public let spec: LayerSpec
    public let weight: Variable
    public let bias: Variable?
    public var quantizer: (any LayerQuantizer)?

    init(spec: LayerSpec, weightShape: [Int], fanIn: Int, generator: inout SeededGenerator) {
        self.spec = spec
        // PyTorch's default (Kaiming-uniform with a = √5): U(−1/√fanIn, 1/√fanIn) for weight and bias.
        let bound = 1 / Float(fanIn).squareRoot()
        weight = Variable(.uniform(weightShape, bound: bound, using: &generator), requiresGrad: true)
        bias = spec.hasBias ? Variable(.uniform([spec.outputChannels], bound: bound, using: &generator), requiresGrad: true) : nil
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
    init(spec: LayerSpec, generator: inout SeededGenerator) {
        let k = spec.kernelSize
        super.init(spec: spec, weightShape: [spec.outputChannels, spec.inputChannels, k, k],
                   fanIn: spec.inputChannels * k * k, generator: &generator)
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        let (x, w) = quantized(inputs[0], training: training, tape: tape)
        return conv2d(x, weight: w, bias: bias, stride: spec.stride, padding: spec.padding, tape: tape)
    }
}

public final class LinearLayer: WeightedLayer, Layer {
    init(spec: LayerSpec, generator: inout SeededGenerator) {
        super.init(spec: spec, weightShape: [spec.outputChannels, spec.inputChannels],
                   fanIn: spec.inputChannels, generator: &generator)
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        let (x, w) = quantized(inputs[0], training: training, tape: tape)
        return linear(x, weight: w, bias: bias, tape: tape)
    }
}

public final class BatchNorm2DLayer: Layer {
    public let spec: LayerSpec
    public let gamma: Variable
    public let beta: Variable
    public let statistics: BatchNormStatistics
    /// False freezes the running statistics (momentum 0) while still normalising with batch
    /// statistics in training mode; the lr = 0 check uses it so nothing at all may change.
    public var updatesRunningStatistics = true

    init(spec: LayerSpec) {
        self.spec = spec
        gamma = Variable(Tensor(shape: [spec.outputChannels], repeating: 1), requiresGrad: true)
        beta = Variable(Tensor(shape: [spec.outputChannels]), requiresGrad: true)
        statistics = BatchNormStatistics(channels: spec.outputChannels)
    }

    public var parameters: [NamedVariable] {
        [NamedVariable("\(spec.name).weight", gamma), NamedVariable("\(spec.name).bias", beta)]
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        batchNorm2d(inputs[0], gamma: gamma, beta: beta, statistics: statistics, training: training,
                    momentum: updatesRunningStatistics ? spec.momentum : 0, epsilon: spec.epsilon, tape: tape)
    }
}

/// Layers without parameters: ReLU, pooling, flatten and add.
public final class StatelessLayer: Layer {
    public let spec: LayerSpec
    init(spec: LayerSpec) { self.spec = spec }
    public var parameters: [NamedVariable] { [] }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        switch spec.kind {
        case .relu: return relu(inputs[0], tape: tape)
        case .maxpool2d: return maxPool2d(inputs[0], kernel: spec.kernelSize, stride: spec.stride, tape: tape)
        case .avgpool2d: return avgPool2d(inputs[0], kernel: spec.kernelSize, stride: spec.stride, tape: tape)
        case .flatten: return flatten(inputs[0], tape: tape)
        case .add: return add(inputs[0], inputs[1], tape: tape)
        case .conv2d, .linear, .batchnorm2d: preconditionFailure("\(spec.kind) is not stateless")
        }
    }
}
