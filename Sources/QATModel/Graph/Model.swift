import QATCore
import QATIO

/// A network built from a `ModelSpec`: layers in spec order, wired by its `ModelGraph`.
public final class Model {
    public let spec: ModelSpec
    /// Sources, consumers and shapes of every layer.
    public let graph: ModelGraph
    public let layers: [any Layer]
    /// releasedAfter[i]: the layer outputs no layer after layer i reads (derived once from the graph).
    private let releasedAfter: [[Int]]
    /// True (the default): `forward` releases each layer output's value once its last reader has
    /// run, and each quantized layer its fake-quantized input once its op has run, so only what
    /// pullbacks captured stays alive until backward. False keeps every output (and quantized
    /// input) until `forward` returns; results are the same bits either way.
    public var releasesReadOutputs = true {
        didSet { for case let layer as WeightedLayer in layers { layer.releasesQuantizedInput = releasesReadOutputs } }
    }
    /// True (the default): a BatchNorm whose output only a ReLU, ReLU6 or Clip(+0, b) reads, or an
    /// add whose output only a ReLU reads, applies the activation in its own passes
    /// (`batchNorm2d(fusedClamp:)`, `addReLU`), and the activation layer passes that output on: the
    /// same bits without the intermediate tensor. False runs them apart (the reference; never with
    /// `observe`).
    public var fusesReLU = true

    /// Builds the layers and draws their initial weights from `seed` (same seed, same weights).
    public init(spec: ModelSpec, seed: UInt64 = 0) throws {
        self.spec = spec
        graph = try ModelGraph(spec)
        var generator = SeededGenerator(seed: seed)
        layers = spec.layers.map { makeLayer($0, generator: &generator) }
        releasedAfter = Model.releaseSchedule(graph)
    }

    /// For each layer, the outputs whose last reader it is; an output nobody reads goes right
    /// after it is made. The model's output (the last layer's) is never released.
    private static func releaseSchedule(_ graph: ModelGraph) -> [[Int]] {
        let count = graph.sources.count
        var schedule = [[Int]](repeating: [], count: count)
        for value in 0..<max(0, count - 1) {
            schedule[graph.consumers(of: value).max() ?? value].append(value)
        }
        return schedule
    }

    public var numberOfClasses: Int { graph.numberOfClasses }

    /// [BatchNorm or add layer (without input quantizers): the activation layer, without an input
    /// quantizer either, that alone reads it]: ReLU after either, ReLU6 or an identical Clip after
    /// BatchNorm (see `fusedClamps`).
    public func reluFusions() -> [Int: Int] { fusedClamps().mapValues(\.activation) }

    /// The pairs of `reluFusions` with the clamp each applies (always `.relu` after an add).
    public func fusedClamps() -> [Int: (activation: Int, clamp: FusedClamp)] {
        var pairs: [Int: (activation: Int, clamp: FusedClamp)] = [:]
        for (i, layer) in layers.enumerated() {
            let isAdd: Bool
            if let add = layer as? StatelessLayer {
                guard case .add = add.spec.kind, add.inputQuantizer == nil else { continue }
                isAdd = true
            } else if layer is BatchNorm2DLayer {
                isAdd = false
            } else {
                continue
            }
            let readers = graph.consumers(of: i)
            guard readers.count == 1, let activation = layers[readers[0]] as? StatelessLayer,
                  activation.inputQuantizer == nil, graph.sources[readers[0]] == [i] else { continue }
            let clamp: FusedClamp?
            switch activation.spec.kind {
            case .relu: clamp = .relu
            case .relu6: clamp = isAdd ? nil : .relu6
            case .clip(let bounds): clamp = isAdd ? nil : FusedClamp.clip(min: bounds.min, max: bounds.max)
            default: clamp = nil
            }
            if let clamp { pairs[i] = (readers[0], clamp) }
        }
        return pairs
    }

    /// Runs the graph on x: [N, ...inputShape] and returns the last layer's output (a
    /// classifier's logits [N, K]).
    /// `observe`, if given, sees every layer's output as it is produced (layer-wise debugging);
    /// it must read the value then, since the value is released once its last reader has run.
    /// `timing`, if given, collects each layer's forward wall time.
    public func forward(_ x: Tensor, training: Bool, tape: Tape?, timing: StepTiming? = nil,
                        observe: ((Int, Variable) -> Void)? = nil) -> Variable {
        precondition(Array(x.shape.dropFirst()) == spec.inputShape,
                     "model \(spec.name) expects samples of shape \(spec.inputShape), got \(x.shape)")
        let input = Variable(x)
        var outputs: [Variable] = []
        outputs.reserveCapacity(layers.count)
        // Eval mode adds integer layers' biases in whole accumulator units, as the INT8 engine
        // and ONNX QDQ runtimes do (docs/ALGORITHMS.md §5); training keeps them float.
        let (biasCorrections, exactBiases) = training ? ([:], [:]) : accumulatorGridCorrections()
        let fused = fusesReLU && observe == nil ? fusedClamps().filter { biasCorrections[$0.key] == nil } : [:]
        let fusedReLUs = Set(fused.values.map(\.activation))
        for (i, layer) in layers.enumerated() {
            let inputs = graph.sources[i].map { $0 < 0 ? input : outputs[$0] }
            tape?.currentLabel = layer.name
            let weighted = exactBiases[i] == nil ? nil : layer as? WeightedLayer
            weighted?.accumulatorGridBias = exactBiases[i]
            func run() -> Variable {
                if fusedReLUs.contains(i) { return inputs[0] }   // the layer before applied it
                if let pair = fused[i] {
                    if let batchNorm = layer as? BatchNorm2DLayer {
                        return batchNorm.forward(inputs, training: training, fusedClamp: pair.clamp, tape: tape)
                    }
                    return addReLU(inputs[0], inputs[1], tape: tape)
                }
                return layer.forward(inputs, training: training, tape: tape)
            }
            var y = timing.map { $0.measure(layer.name, run) } ?? run()
            weighted?.accumulatorGridBias = nil
            if let correction = biasCorrections[i] { y = add(y, Variable(correction), tape: tape) }
            observe?(i, y)
            outputs.append(y)
            if releasesReadOutputs {
                // A fused layer's output is its ReLU's: released with that.
                for value in releasedAfter[i] where fused[value] == nil { outputs[value].releaseValue() }
            }
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
