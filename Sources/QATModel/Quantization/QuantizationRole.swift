/// How QAT treats a layer type: the one place that says which kinds are fake-quantized and which
/// ones the `fixed_min` default looks through (docs/ALGORITHMS.md §1, docs/CONFIG.md).
public enum QuantizationRole: Equatable, Sendable {
    /// Its input and weight are fake-quantized. `channelWise`: the weights may have one scale per
    /// output channel, and do by default; false: one scale per tensor only.
    case quantized(channelWise: Bool)
    /// The output lies in [0, atMost] whatever the input (atMost nil: no upper bound), so a
    /// quantized layer reading it gets `fixed_min` by default.
    case nonNegativeOutput(atMost: Float?)
    /// A non-negative input gives a non-negative output: the `fixed_min` default looks through it.
    case keepsNonNegative
    /// May turn non-negative values negative: the `fixed_min` default stops here.
    case mayTurnNegative
}

extension LayerType {
    public var quantizationRole: QuantizationRole {
        switch self {
        case .conv2d: return .quantized(channelWise: true)
        case .linear: return .quantized(channelWise: false)
        case .relu: return .nonNegativeOutput(atMost: nil)
        case .relu6: return .nonNegativeOutput(atMost: 6)
        case .maxpool2d, .avgpool2d, .flatten: return .keepsNonNegative
        case .batchnorm2d, .add: return .mayTurnNegative
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
    public var quantizationRole: QuantizationRole { layerType.quantizationRole }
    public var isQuantizable: Bool { layerType.isQuantizable }
}
