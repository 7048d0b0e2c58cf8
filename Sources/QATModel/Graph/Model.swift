import QATCore
import QATIO

/// A network built from a `ModelSpec`: layers in spec order, wired by its `ModelGraph`.
public final class Model {
    public let spec: ModelSpec
    /// Sources, consumers and shapes of every layer.
    public let graph: ModelGraph
    public let layers: [any Layer]

    /// Builds the layers and draws their initial weights from `seed` (same seed, same weights).
    public init(spec: ModelSpec, seed: UInt64 = 0) throws {
        self.spec = spec
        graph = try ModelGraph(spec)
        var generator = SeededGenerator(seed: seed)
        layers = spec.layers.map { makeLayer($0, generator: &generator) }
    }

    public var numberOfClasses: Int { graph.numberOfClasses }

    /// Runs the graph on x: [N, ...inputShape] and returns the last layer's output (a
    /// classifier's logits [N, K]).
    /// `observe`, if given, sees every layer's output as it is produced (layer-wise debugging).
    /// `timing`, if given, collects each layer's forward wall time.
    public func forward(_ x: Tensor, training: Bool, tape: Tape?, timing: StepTiming? = nil,
                        observe: ((Int, Variable) -> Void)? = nil) -> Variable {
        precondition(Array(x.shape.dropFirst()) == spec.inputShape,
                     "model \(spec.name) expects samples of shape \(spec.inputShape), got \(x.shape)")
        let input = Variable(x)
        var outputs: [Variable] = []
        outputs.reserveCapacity(layers.count)
        for (i, layer) in layers.enumerated() {
            let inputs = graph.sources[i].map { $0 < 0 ? input : outputs[$0] }
            tape?.currentLabel = layer.name
            let y = timing.map { $0.measure(layer.name) { layer.forward(inputs, training: training, tape: tape) } }
                ?? layer.forward(inputs, training: training, tape: tape)
            observe?(i, y)
            outputs.append(y)
        }
        return outputs.last!
    }

    /// Every trainable tensor in canonical order: layers in spec order, weight before bias,
    /// then the layer's quantizer parameters.
    public var parameters: [NamedVariable] { layers.flatMap(\.parameters) }

    /// Non-trainable state that still belongs in checkpoints: BN running statistics.
    public var batchNormLayers: [BatchNorm2DLayer] { layers.compactMap { $0 as? BatchNorm2DLayer } }

    /// Constants, whose values are non-trainable state too.
    public var constantLayers: [ConstantLayer] { layers.compactMap { $0 as? ConstantLayer } }

    public func layer(named name: String) -> (any Layer)? { layers.first { $0.name == name } }
}
