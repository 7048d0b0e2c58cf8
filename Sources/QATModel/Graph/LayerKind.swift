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
    /// The element-wise sum of two inputs of one shape.
    case add

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
        }
    }

    /// The `type` name in spec files, e.g. "conv2d".
    public var typeName: String { layerType.name }
}

/// A layer kind without its attributes: the `type` of a layer in model specs, and what retrain
/// configs name in `skip_layer_types` and `override_layer_types`.
public enum LayerType: CaseIterable, Hashable, Sendable {
    case conv2d, linear, batchnorm2d, relu, relu6, maxpool2d, avgpool2d, flatten, add

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
        }
    }

    /// The type called `name` in a spec or config file, if there is one.
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }

    /// How many inputs a layer of this type reads.
    public var inputCount: Int {
        switch self {
        case .add: return 2
        case .conv2d, .linear, .batchnorm2d, .relu, .relu6, .maxpool2d, .avgpool2d, .flatten: return 1
        }
    }
}

/// A 2-D convolution (cross-correlation) with square kernels and zero padding.
public struct ConvolutionAttributes: Equatable, Sendable {
    public var inputChannels: Int
    public var outputChannels: Int
    public var kernelSize: Int
    public var stride: Int
    public var padding: Int
    public var hasBias: Bool

    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                hasBias: Bool = true) {
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.hasBias = hasBias
    }
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

/// A square pooling window without padding.
public struct PoolingAttributes: Equatable, Sendable {
    public var kernelSize: Int
    public var stride: Int

    /// `stride` defaults to the window size, as in PyTorch.
    public init(kernelSize: Int, stride: Int? = nil) {
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
    }
}
