import QATIO

// Where a per-channel scale of a layer's input can be moved to: DMQ (docs/ALGORITHMS.md §2.5)
// divides input channel j of a conv/linear by s_j and must fold that division into the layer
// that made channel j, so the float function stays the same. The plan checks the path when it
// is resolved (so `qat plan` refuses early); QATTrain's DMQ walks the same path to apply it.

/// The layer whose output channel j becomes input channel j (or features j·g…j·g+g−1 after a
/// flatten) of a quantized layer, and the layers in between.
public struct ChannelProducer: Equatable, Sendable {
    /// A conv2d or linear (weights row j and bias j) or a batchnorm2d (γ_j and β_j).
    public var producer: Int
    /// The layers between the producer and the consumer, in model order: each positively
    /// homogeneous per channel (f(x/s) = f(x)/s for s > 0) and the only reader of its input.
    public var path: [Int]
}

extension ModelGraph.Wiring {
    /// The producer of the input of the conv2d/linear at `index`, or why there is none (a
    /// sentence naming the layers involved, without the consumer's name).
    public func channelProducer(ofLayerAt index: Int) -> Result<ChannelProducer, ChannelScalingRefusal> {
        var path: [Int] = []
        var value = sources[index][0]
        var reader = index
        while true {
            guard value >= 0 else {
                return .failure(ChannelScalingRefusal(path.isEmpty ? "it reads the model input, so no layer before it can take "
                    + "the division by its per-channel scales" : "\(spec.layers[path[0]].name) reads the model input, so no layer "
                    + "before it can take the division by the per-channel scales"))
            }
            let layer = spec.layers[value]
            let others = consumers(of: value).filter { $0 != reader }
            guard others.isEmpty else {
                return .failure(ChannelScalingRefusal("\(layer.name)'s output is also read by "
                    + "\(others.map { spec.layers[$0].name }.joined(separator: ", ")), which would see the rescaled channels"))
            }
            switch layer.kind.channelScaling {
            case .producer:
                return .success(ChannelProducer(producer: value, path: path.reversed()))
            case .homogeneous:
                path.append(value)
                reader = value
                value = sources[value][0]
            case .blocks:
                return .failure(ChannelScalingRefusal("its input comes from \(layer.name) (\(layer.kind.typeName)), through which a "
                    + "per-channel scale cannot be moved: it needs a conv2d, linear or batchnorm2d before it, reached only through "
                    + "relu, leaky_relu, max/average pools or flatten, each read by nothing else"))
            }
        }
    }
}

/// Why a layer's input channels cannot be rescaled (the caller adds the layer and the config key).
public struct ChannelScalingRefusal: Error, Equatable, Sendable {
    public let reason: String
    init(_ reason: String) { self.reason = reason }

    /// The error of a `dmq_balancer_param` on `layer` at `keyPath` of `file`.
    public func dmqError(layer: String, file: String, keyPath: String) -> InputError {
        InputError(file: file, keyPath: keyPath, message: "DMQ cannot run on \(layer): \(reason) (remove the key)")
    }
}

/// How a layer kind passes a per-channel scale of its output back to its input.
enum ChannelScalingRole {
    /// Output channel j is an affine function of its own parameters: scaling them scales it.
    case producer
    /// f(x/s) = f(x)/s per channel for s > 0: the scale passes through to its input.
    case homogeneous
    /// Neither (a fixed bound, a second operand, a nonlinearity).
    case blocks
}

extension LayerKind {
    var channelScaling: ChannelScalingRole {
        switch self {
        case .conv2d, .linear, .batchnorm2d: return .producer
        case .relu, .leakyReLU, .maxpool2d, .avgpool2d, .globalAvgpool2d, .flatten: return .homogeneous
        case .clip(let bounds):
            // Bounds of 0 or ±∞ scale with x; any other bound is fixed (ReLU6 is one).
            let homogeneous = (bounds.min == 0 || bounds.min == -.infinity) && (bounds.max == 0 || bounds.max == .infinity)
            return homogeneous ? .homogeneous : .blocks
        case .relu6, .add, .mul, .concat, .sigmoid, .hardSigmoid, .hardSwish, .constant: return .blocks
        }
    }
}
