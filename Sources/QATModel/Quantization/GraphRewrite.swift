/// A change a config makes to the float model before it is quantized: Vitis AI's
/// `convert_relu6_to_relu`. A run applies it once, where it builds its model from the spec
/// (`RetrainConfig.model(for:)`), so the checkpoint records the model that was quantized and
/// every later command (deploy, export, eval, verify) runs that model.
public enum GraphRewrite: String, CaseIterable, Comparable, Sendable {
    /// Every ReLU6 becomes a ReLU: the output is no longer capped at 6, so its quantizer's range
    /// comes from calibration alone (the manual's reason: the DPU's ReLU6 is slower).
    case relu6ToReLU = "convert_relu6_to_relu"

    public static func < (a: GraphRewrite, b: GraphRewrite) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// The kind a layer of `kind` becomes, or nil if this rewrite leaves it alone.
    func replacement(for kind: LayerKind) -> LayerKind? {
        switch self {
        case .relu6ToReLU: return kind == .relu6 ? .relu : nil
        }
    }
}

extension RetrainConfig {
    /// `spec` with the config's graph rewrites applied (the model this config quantizes).
    public func model(for spec: ModelSpec) -> ModelSpec {
        var rewritten = spec
        for rewrite in graphRewrites.sorted() {
            for index in rewritten.layers.indices {
                if let kind = rewrite.replacement(for: rewritten.layers[index].kind) { rewritten.layers[index].kind = kind }
            }
        }
        return rewritten
    }

    /// The layers `model(for:)` changes, each with the rewrite that changes it.
    public func rewrittenLayers(of spec: ModelSpec) -> [(layer: String, rewrite: GraphRewrite)] {
        spec.layers.compactMap { layer in
            graphRewrites.sorted().first { $0.replacement(for: layer.kind) != nil }.map { (layer.name, $0) }
        }
    }
}
