/// A change a config makes to the float model before it is quantized: Vitis AI's
/// `convert_relu6_to_relu` and `convert_silu_to_hswish`. A run applies it once, where it builds
/// its model from the spec (`RetrainConfig.model(for:)`), so the checkpoint records the model that
/// was quantized and every later command (deploy, export, eval, verify) runs that model.
public enum GraphRewrite: String, CaseIterable, Comparable, Sendable {
    /// Every ReLU6 becomes a ReLU: the output is no longer capped at 6, so its quantizer's range
    /// comes from calibration alone (the manual's reason: the DPU's ReLU6 is slower).
    case relu6ToReLU = "convert_relu6_to_relu"
    /// Every SiLU, x·sigmoid(x), becomes a hard swish, x·relu6(x + 3)/6 (the DPU has hard swish,
    /// not SiLU). In a layer graph (and in an imported ONNX model) a SiLU is a sigmoid whose
    /// output a mul multiplies by the sigmoid's own input; the mul becomes the hard_swish, reading
    /// that input, and the sigmoid, which nothing else reads, is removed.
    case siluToHardSwish = "convert_silu_to_hswish"

    public static func < (a: GraphRewrite, b: GraphRewrite) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// One layer a rewrite changed: its name (in the rewritten spec) and what it was.
    public struct Change: Equatable, Sendable {
        public var layer: String
        public var was: String
    }

    /// `spec` rewritten, with the layers that changed, in model order.
    func apply(to spec: ModelSpec) -> (spec: ModelSpec, changes: [Change]) {
        var rewritten = spec
        var changes: [Change] = []
        switch self {
        case .relu6ToReLU:
            for index in rewritten.layers.indices where rewritten.layers[index].kind == .relu6 {
                rewritten.layers[index].kind = .relu
                changes.append(Change(layer: rewritten.layers[index].name, was: "relu6"))
            }
        case .siluToHardSwish:
            // A spec whose wiring is broken is left alone; resolving it reports the problem.
            guard let wiring = try? ModelGraph.Wiring(spec) else { return (spec, []) }
            var removed: Set<Int> = []
            for (index, layer) in spec.layers.enumerated() where layer.kind == .mul {
                guard let (sigmoid, input) = silu(at: index, in: wiring) else { continue }
                rewritten.layers[index].kind = .hardSwish
                rewritten.layers[index].inputs = [input < 0 ? "input" : spec.layers[input].name]
                removed.insert(sigmoid)
                changes.append(Change(layer: layer.name, was: "SiLU: sigmoid \(spec.layers[sigmoid].name) × mul"))
            }
            // Only its mul read each removed sigmoid, and that mul now names its input.
            rewritten.layers = rewritten.layers.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
        }
        return (rewritten, changes)
    }

    /// The sigmoid and its input x when the mul at `index` computes x·sigmoid(x) and nothing else
    /// reads that sigmoid.
    private func silu(at index: Int, in wiring: ModelGraph.Wiring) -> (sigmoid: Int, input: Int)? {
        let operands = wiring.sources[index]
        guard operands.count == 2 else { return nil }
        for (s, x) in [(operands[0], operands[1]), (operands[1], operands[0])] where s >= 0 {
            if wiring.spec.layers[s].kind == .sigmoid, wiring.sources[s] == [x], wiring.consumers(of: s) == [index] {
                return (s, x)
            }
        }
        return nil
    }
}

extension RetrainConfig {
    /// `spec` with the config's graph rewrites applied (the model this config quantizes).
    public func model(for spec: ModelSpec) -> ModelSpec {
        rewrite(spec).spec
    }

    /// The layers `model(for:)` changes (named as in the rewritten spec), each with its rewrite.
    public func rewrittenLayers(of spec: ModelSpec) -> [(layer: String, rewrite: GraphRewrite, was: String)] {
        rewrite(spec).changes
    }

    private func rewrite(_ spec: ModelSpec) -> (spec: ModelSpec, changes: [(layer: String, rewrite: GraphRewrite, was: String)]) {
        var rewritten = spec
        var changes: [(layer: String, rewrite: GraphRewrite, was: String)] = []
        for rewrite in graphRewrites.sorted() {
            let (next, changed) = rewrite.apply(to: rewritten)
            rewritten = next
            changes += changed.map { ($0.layer, rewrite, $0.was) }
        }
        return (rewritten, changes)
    }
}
