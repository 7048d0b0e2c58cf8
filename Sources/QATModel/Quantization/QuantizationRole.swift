/// How QAT treats a layer type: the one place that says which kinds are fake-quantized and which
/// ones the `fixed_min` default looks through (docs/ALGORITHMS.md §1, docs/CONFIG.md).
public enum QuantizationRole: Equatable, Sendable {
    /// Its input and weight are fake-quantized. `channelWise`: the weights may have one scale per
    /// output channel, and do by default; false: one scale per tensor only.
    case quantized(channelWise: Bool)
    /// The output lies in [0, atMost] whatever the input (atMost nil: no upper bound), so a
    /// quantized layer reading it gets `fixed_min` by default.
    case nonNegativeOutput(atMost: Float?)
    /// Non-negative inputs (all of them, for concat) give a non-negative output: the `fixed_min`
    /// default looks through it.
    case keepsNonNegative
    /// May turn non-negative values negative: the `fixed_min` default stops here.
    case mayTurnNegative
}

extension LayerType {
    /// The role of every layer of this type; a clip's depends on its bounds (`LayerKind.quantizationRole`),
    /// so the type alone says `.mayTurnNegative` for it.
    public var quantizationRole: QuantizationRole {
        switch self {
        case .conv2d: return .quantized(channelWise: true)   // grouped and depthwise too: one scale per output channel
        case .linear: return .quantized(channelWise: false)
        case .relu: return .nonNegativeOutput(atMost: nil)
        case .relu6: return .nonNegativeOutput(atMost: 6)
        case .sigmoid, .hardSigmoid: return .nonNegativeOutput(atMost: 1)
        case .maxpool2d, .avgpool2d, .globalAvgpool2d, .flatten, .concat: return .keepsNonNegative
        case .batchnorm2d, .add, .mul, .clip, .leakyReLU, .hardSwish, .constant: return .mayTurnNegative
        }
    }

    /// Layers whose weights and inputs QAT quantizes.
    public var isQuantizable: Bool {
        if case .quantized = quantizationRole { return true }
        return false
    }

    /// Quantized layers whose weights may have one scale per output channel (their default).
    public var supportsChannelWiseWeights: Bool {
        if case .quantized(let channelWise) = quantizationRole { return channelWise }
        return false
    }
}

extension LayerKind {
    /// The type's role, except that a clip with min ≥ 0 has a non-negative output bounded by its max.
    public var quantizationRole: QuantizationRole {
        if case .clip(let bounds) = self, bounds.min >= 0 {
            return .nonNegativeOutput(atMost: bounds.max.isFinite ? bounds.max : nil)
        }
        return layerType.quantizationRole
    }
    public var isQuantizable: Bool { layerType.isQuantizable }
}
