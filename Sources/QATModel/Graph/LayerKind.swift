import QATCore

/// What a layer computes, with the attributes its kind needs.
///
/// Every stage that treats kinds differently (spec parsing and writing, shape inference, the
/// float forward, quantization, INT8 lowering) switches over this enum or over `LayerType`
/// exhaustively, with no `default:`, so adding a case makes the compiler list every place to
/// extend. docs/ADDING-A-LAYER.md is the checklist.
public enum LayerKind: Equatable, Sendable {
    case conv2d(ConvolutionAttributes)
    case linear(LinearAttributes)
    case batchnorm2d(BatchNormAttributes)
    /// max(x, 0).
    case relu
    /// min(max(x, 0), 6), the activation of MobileNet-style models.
    case relu6
    case maxpool2d(PoolingAttributes)
    case avgpool2d(PoolingAttributes)
    /// [C, H, W] → [C·H·W].
    case flatten
    /// The element-wise sum of two inputs, with numpy broadcasting between their sample shapes.
    case add
    /// min(max(x, min), max) with general bounds.
    case clip(ClipAttributes)
    /// x for x ≥ 0, negativeSlope·x below.
    case leakyReLU(LeakyReLUAttributes)
    /// 1 / (1 + e^−x).
    case sigmoid
    /// max(0, min(1, alpha·x + beta)) (ONNX HardSigmoid).
    case hardSigmoid(HardSigmoidAttributes)
    /// x·relu6(x + 3)/6 (ONNX HardSwish).
    case hardSwish
    /// [C, H, W] → [C, 1, 1], the mean of each channel.
    case globalAvgpool2d
    /// The element-wise product of two inputs, with numpy broadcasting (squeeze-and-excitation).
    case mul
    /// Two or more inputs joined along the channel axis (axis 0 of a sample).
    case concat
    /// A value with no inputs (non-trainable, stored in checkpoints as `<name>.value`), read by add or mul.
    case constant(ConstantAttributes)

    /// The kind without its attributes.
    public var layerType: LayerType {
        switch self {
        case .conv2d: return .conv2d
        case .linear: return .linear
        case .batchnorm2d: return .batchnorm2d
        case .relu: return .relu
        case .relu6: return .relu6
        case .maxpool2d: return .maxpool2d
        case .avgpool2d: return .avgpool2d
        case .flatten: return .flatten
        case .add: return .add
        case .clip: return .clip
        case .leakyReLU: return .leakyReLU
        case .sigmoid: return .sigmoid
        case .hardSigmoid: return .hardSigmoid
        case .hardSwish: return .hardSwish
        case .globalAvgpool2d: return .globalAvgpool2d
        case .mul: return .mul
        case .concat: return .concat
        case .constant: return .constant
        }
    }

    /// The `type` name in spec files, e.g. "conv2d".
    public var typeName: String { layerType.name }
}

/// A layer kind without its attributes: the `type` of a layer in model specs, and what retrain
/// configs name in `skip_layer_types` and `override_layer_types`.
public enum LayerType: CaseIterable, Hashable, Sendable {
    case conv2d, linear, batchnorm2d, relu, relu6, maxpool2d, avgpool2d, flatten, add
    case clip, leakyReLU, sigmoid, hardSigmoid, hardSwish, globalAvgpool2d, mul, concat, constant

    /// The name in spec and config files: the one place that maps names to types.
    public var name: String {
        switch self {
        case .conv2d: return "conv2d"
        case .linear: return "linear"
        case .batchnorm2d: return "batchnorm2d"
        case .relu: return "relu"
        case .relu6: return "relu6"
        case .maxpool2d: return "maxpool2d"
        case .avgpool2d: return "avgpool2d"
        case .flatten: return "flatten"
        case .add: return "add"
        case .clip: return "clip"
        case .leakyReLU: return "leaky_relu"
        case .sigmoid: return "sigmoid"
        case .hardSigmoid: return "hard_sigmoid"
        case .hardSwish: return "hard_swish"
        case .globalAvgpool2d: return "global_avgpool2d"
        case .mul: return "mul"
        case .concat: return "concat"
        case .constant: return "constant"
        }
    }

    /// The type called `name` in a spec or config file, if there is one.
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }

    /// How many inputs a layer of this type reads: one for most, none for a constant, two or
    /// more for concat.
    public var inputCount: ClosedRange<Int> {
        switch self {
        case .constant: return 0...0
        case .add, .mul: return 2...2
        case .concat: return 2...Int.max
        case .conv2d, .linear, .batchnorm2d, .relu, .relu6, .maxpool2d, .avgpool2d, .flatten,
             .clip, .leakyReLU, .sigmoid, .hardSigmoid, .hardSwish, .globalAvgpool2d: return 1...1
        }
    }

    /// "one input", "2 inputs", "2 or more inputs": for messages.
    var inputCountDescription: String {
        let range = inputCount
        if range.upperBound == Int.max { return "\(range.lowerBound) or more inputs" }
        if range.lowerBound == range.upperBound { return range.lowerBound == 1 ? "one input" : "\(range.lowerBound) inputs" }
        return "\(range.lowerBound)...\(range.upperBound) inputs"
    }
}

/// A 2-D convolution (cross-correlation) with zero padding, optionally dilated and grouped.
///
/// Spec keys: `kernel_size`, `stride`, `dilation` (an int for both axes or [h, w]), `padding`
/// (an int, [h, w] for both sides, or [top, left, bottom, right]), `groups`. The weight is
/// [outputChannels, inputChannels / groups, kernel.height, kernel.width]; groups ==
/// inputChannels is a depthwise convolution (outputChannels a multiple of it).
public struct ConvolutionAttributes: Equatable, Sendable {
    public var inputChannels: Int
    public var outputChannels: Int
    public var kernel: Size2D
    public var stride: Size2D
    public var padding: Padding2D
    public var dilation: Size2D
    /// Input and output channels split into this many groups, each convolved on its own.
    public var groups: Int
    public var hasBias: Bool

    public init(inputChannels: Int, outputChannels: Int, kernel: Size2D, stride: Size2D = Size2D(1),
                padding: Padding2D = Padding2D(0), dilation: Size2D = Size2D(1), groups: Int = 1, hasBias: Bool = true) {
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.hasBias = hasBias
    }

    /// A square kernel with the same stride and padding on both axes.
    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                hasBias: Bool = true) {
        self.init(inputChannels: inputChannels, outputChannels: outputChannels, kernel: Size2D(kernelSize),
                  stride: Size2D(stride), padding: Padding2D(padding), hasBias: hasBias)
    }

    /// [O, C / groups, KH, KW].
    public var weightShape: [Int] { [outputChannels, inputChannels / groups, kernel.height, kernel.width] }

    /// Every input channel convolved on its own (groups == in_channels), with one or more
    /// output channels each.
    public var isDepthwise: Bool { groups > 1 && groups == inputChannels }
}

/// A fully connected layer on a flat input.
public struct LinearAttributes: Equatable, Sendable {
    public var inputFeatures: Int
    public var outputFeatures: Int
    public var hasBias: Bool

    public init(inputFeatures: Int, outputFeatures: Int, hasBias: Bool = true) {
        self.inputFeatures = inputFeatures
        self.outputFeatures = outputFeatures
        self.hasBias = hasBias
    }
}

/// Batch normalisation over the channels of [C, H, W] values.
public struct BatchNormAttributes: Equatable, Sendable {
    public var features: Int
    public var epsilon: Float
    /// Weight of the new batch in the running statistics (PyTorch's convention).
    public var momentum: Float

    public init(features: Int, epsilon: Float = 1e-5, momentum: Float = 0.1) {
        self.features = features
        self.epsilon = epsilon
        self.momentum = momentum
    }
}

/// A pooling window. Spec keys: `kernel_size`, `stride` (default: the window) and `padding`
/// as for conv2d, `ceil_mode`, and for avgpool2d `count_include_pad` (PyTorch's default true:
/// padded cells count in the mean). Max pooling pads with −∞.
public struct PoolingAttributes: Equatable, Sendable {
    public var kernel: Size2D
    public var stride: Size2D
    public var padding: Padding2D
    /// Output sizes round up (the last window may hang over the input), as PyTorch's ceil_mode.
    public var ceilMode: Bool
    /// Average pooling: padded cells count in the divisor.
    public var countIncludePad: Bool

    /// `stride` defaults to the window size, as in PyTorch.
    public init(kernel: Size2D, stride: Size2D? = nil, padding: Padding2D = Padding2D(0), ceilMode: Bool = false,
                countIncludePad: Bool = true) {
        self.kernel = kernel
        self.stride = stride ?? kernel
        self.padding = padding
        self.ceilMode = ceilMode
        self.countIncludePad = countIncludePad
    }

    /// A square window without padding.
    public init(kernelSize: Int, stride: Int? = nil) {
        self.init(kernel: Size2D(kernelSize), stride: stride.map { Size2D($0) })
    }
}

/// Bounds of `clip` (spec keys `min`, `max`; a missing one is unbounded).
public struct ClipAttributes: Equatable, Sendable {
    public var min: Float
    public var max: Float

    public init(min: Float = -.infinity, max: Float = .infinity) {
        self.min = min
        self.max = max
    }
}

/// The slope of `leaky_relu` below zero (spec key `negative_slope`, default 0.01).
public struct LeakyReLUAttributes: Equatable, Sendable {
    public var negativeSlope: Float

    public init(negativeSlope: Float = 0.01) { self.negativeSlope = negativeSlope }
}

/// `hard_sigmoid`'s max(0, min(1, alpha·x + beta)) (spec keys `alpha`, `beta`; ONNX defaults 0.2, 0.5).
public struct HardSigmoidAttributes: Equatable, Sendable {
    public var alpha: Float
    public var beta: Float

    public init(alpha: Float = 0.2, beta: Float = 0.5) {
        self.alpha = alpha
        self.beta = beta
    }
}

/// The shape of a `constant` (spec key `shape`), one sample's worth: it broadcasts over the batch.
public struct ConstantAttributes: Equatable, Sendable {
    public var shape: [Int]

    public init(shape: [Int]) { self.shape = shape }
}
