import Foundation
import QATCore
import QATData
import QATDeploy
import QATIO
import QATModel
import QATTrain

// `qat check model`: a static check of a model spec and a retrain config before training
// (docs/DEBUGGING.md). Nothing is run; every finding names the layer and what to do.

public struct ModelCheckFinding: Equatable, Sendable, Codable {
    public enum Severity: String, Sendable, Codable, Comparable {
        case error, warning, info
        private var rank: Int { self == .error ? 0 : self == .warning ? 1 : 2 }
        public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
    }
    public var severity: Severity
    /// Short check name: "coverage", "unmatched entry", "shared output", "few channels", "batchnorm fold",
    /// "clip range", "spec", "config", "plan".
    public var check: String
    /// The layer or config entry concerned ("-" when none).
    public var subject: String
    public var message: String

    public init(_ severity: Severity, _ check: String, _ subject: String, _ message: String) {
        self.severity = severity
        self.check = check
        self.subject = subject
        self.message = message
    }
}

public struct ModelCheckReport: Equatable, Sendable {
    public var model: String
    public var configFile: String
    public var findings: [ModelCheckFinding]

    public var errors: [ModelCheckFinding] { findings.filter { $0.severity == .error } }
    public var warnings: [ModelCheckFinding] { findings.filter { $0.severity == .warning } }
    public var passed: Bool { errors.isEmpty }

    public func findings(_ check: String) -> [ModelCheckFinding] { findings.filter { $0.check == check } }

    public func text() -> String {
        var text = "Model check of \(model) with \(configFile)\n\n"
        if findings.isEmpty {
            text += "no findings\n"
        } else {
            let sorted = findings.enumerated().sorted { ($0.element.severity, $0.offset) < ($1.element.severity, $1.offset) }.map(\.element)
            let checkWidth = max(5, sorted.map(\.check.count).max()!)
            let subjectWidth = max(5, sorted.map(\.subject.count).max()!)
            text += "severity".padded(to: 9) + "check".padded(to: checkWidth + 2) + "layer".padded(to: subjectWidth + 2) + "finding\n"
            for f in sorted {
                text += f.severity.rawValue.padded(to: 9) + f.check.padded(to: checkWidth + 2) + f.subject.padded(to: subjectWidth + 2) + f.message + "\n"
            }
        }
        text += "\n\(errors.count) error(s), \(warnings.count) warning(s), \(findings.count - errors.count - warnings.count) note(s): "
            + (passed ? "ok to train" : "fix the errors before training") + "\n"
        return text
    }
}

/// The static checks. `fewChannels`: a quantized conv with at most this many input channels is
/// flagged (QAT gains little there, e.g. conv1 on a grayscale image).
public func checkModel(spec original: ModelSpec, config: RetrainConfig, fewChannels: Int = 3) -> ModelCheckReport {
    // The model the config quantizes (its graph rewrites applied), as a run builds it.
    let spec = config.model(for: original)
    var findings: [ModelCheckFinding] = []
    let graph: ModelGraph
    do {
        graph = try ModelGraph(spec)
        try graph.requireClassifier()
    } catch {
        findings.append(.init(.error, "spec", "-", "\(error)"))
        return ModelCheckReport(model: spec.name, configFile: config.file, findings: findings)
    }
    let byName = Dictionary(spec.layers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    let quantizableNames = spec.layers.filter(\.kind.isQuantizable).map(\.name)

    // 1. Config entries that match nothing; layers the config leaves out.
    var usable = config
    switch config.rules {
    case .perLayer(let entries):
        var kept: [String: QuantizerConfig] = [:]
        for name in entries.keys.sorted() {
            guard let layer = byName[name] else {
                findings.append(.init(.error, "unmatched entry", name,
                    "config entry \"\(name)\" matches no layer of \(spec.name) (quantizable layers: \(quantizableNames.joined(separator: ", "))); "
                    + "training would refuse this config"))
                continue
            }
            guard layer.kind.isQuantizable else {
                findings.append(.init(.error, "unmatched entry", name,
                    "config entry \"\(name)\" names a \(layer.kind.typeName) layer, which cannot be quantized (only conv2d and linear)"))
                continue
            }
            kept[name] = entries[name]
        }
        usable.rules = .perLayer(kept)
    case .simple:
        break
    }
    let plan: QuantizationPlan
    do {
        plan = try usable.resolve(for: spec)
    } catch {
        findings.append(.init(.error, "config", "-", "\(error)"))
        return ModelCheckReport(model: spec.name, configFile: config.file, findings: findings)
    }
    for warning in plan.warnings {
        if warning.contains("has no effect") {
            let subject = String(warning.prefix { $0 != ":" })
            findings.append(.init(.warning, "unmatched entry", subject, warning))
        } else {
            let subject = String(warning.prefix { $0 != ":" })
            findings.append(.init(.warning, "plan", subject, warning))
        }
    }
    for layer in plan.layers where layer.kind.isQuantizable && !layer.isQuantized {
        if layer.rule == "not listed" {
            findings.append(.init(.warning, "coverage", layer.name,
                "\(layer.kind.typeName) layer \(layer.name) is not in the config, so it stays float (add an entry, or "
                + "\(config.format.keepFloatSetting) to make the choice explicit)"))
        } else {
            findings.append(.init(.info, "coverage", layer.name, "kept float by \(layer.rule)"))
        }
    }
    for layer in plan.quantizedLayers where layer.quantizer!.activationType == .int16 {
        findings.append(.init(.info, "width", layer.name,
            "input quantized at INT16: fake quant uses n = 65535; the INT8 deployment keeps this layer in float or runs an int16 path"))
    }

    findings += sharedOutputFindings(plan: plan, graph: graph)

    // 3. Convolutions with few input channels.
    for layer in plan.quantizedLayers {
        guard case .conv2d(let convolution) = byName[layer.name]?.kind, convolution.inputChannels <= fewChannels else { continue }
        findings.append(.init(.warning, "few channels", layer.name,
            "quantized conv with \(convolution.inputChannels) input channel(s): QAT gains little here and the image input is "
            + "sensitive; consider keeping it float (\(config.format.keepFloatSetting)) or INT16 (check with qat sensitivity)"))
    }

    findings += batchNormFoldFindings(plan: plan, graph: graph)
    findings += clipRangeFindings(plan: plan, graph: graph)
    return ModelCheckReport(model: spec.name, configFile: config.file, findings: findings)
}

/// 2. Shared outputs: a tensor (a layer's output, or the model input) read by several layers.
private func sharedOutputFindings(plan: QuantizationPlan, graph: ModelGraph) -> [ModelCheckFinding] {
    var findings: [ModelCheckFinding] = []
    let spec = graph.spec
    func name(_ value: Int) -> String { value < 0 ? "input" : spec.layers[value].name }
    for value in [-1] + Array(spec.layers.indices) {
        let producer = name(value)
        let readers = graph.consumers(of: value).map(name)
        let distinct = readers.reduce(into: [String]()) { if !$1.isEmpty && !$0.contains($1) { $0.append($1) } }
        if distinct.count < readers.count {
            findings.append(.init(.info, "shared output", producer,
                "\(distinct.filter { r in readers.filter { $0 == r }.count > 1 }.joined(separator: ", ")) reads \(producer) more than once"))
        }
        guard distinct.count > 1 else { continue }
        let quantized = distinct.filter { plan.layer(named: $0)?.isQuantized ?? false }
        func describe(_ name: String) -> String {
            guard let q = plan.layer(named: name)?.quantizer else { return "\(name) (float)" }
            let bounds = q.clipMax.map { "clip [\(q.clipMin!), \($0)]" } ?? "IFMR"
            return "\(name) (\(q.activationType.rawValue), \(bounds))"
        }
        var message = "the output of \(producer) is shared by \(distinct.count) layers: \(distinct.map(describe).joined(separator: ", "))"
        if quantized.count > 1 {
            message += "; each quantized reader calibrates its own clip range for the same tensor, so deployment must "
                + "requantize it once per reader (give them the same clip_max/clip_min to share one scale)"
        } else if quantized.count == 1 {
            message += "; \(quantized[0]) sees it quantized while the others see the float value, so their paths "
                + "disagree in INT8 (check this fork with qat compare)"
        }
        findings.append(.init(quantized.isEmpty ? .info : .warning, "shared output", producer, message))
    }
    return findings
}

/// 4. BatchNorm folding (docs/ALGORITHMS.md §4): a BN folds into a conv whose only reader it is.
private func batchNormFoldFindings(plan: QuantizationPlan, graph: ModelGraph) -> [ModelCheckFinding] {
    var findings: [ModelCheckFinding] = []
    let spec = graph.spec
    func name(_ value: Int) -> String { value < 0 ? "input" : spec.layers[value].name }
    for (index, layer) in spec.layers.enumerated() {
        guard case .batchNorm = layer.kind.lowering else { continue }
        let sourceIndex = graph.sources[index][0]
        let source = name(sourceIndex)
        guard sourceIndex >= 0, spec.layers[sourceIndex].kind.foldsFollowingBatchNorm else {
            let what = sourceIndex >= 0 ? "a \(spec.layers[sourceIndex].kind.typeName) layer (\(source))" : "the model input"
            findings.append(.init(.warning, "batchnorm fold", layer.name,
                "\(layer.name) reads \(what), not a conv, so it cannot be folded at deployment and stays a float op "
                + "between quantized layers"))
            continue
        }
        let others = graph.consumers(of: sourceIndex).map(name).filter { $0 != layer.name }
        guard !others.isEmpty else { continue }
        let quantized = plan.layer(named: source)?.isQuantized ?? false
        findings.append(.init(quantized ? .error : .warning, "batchnorm fold", layer.name,
            "conv \(source) feeds \(layer.name) and also \(others.joined(separator: ", ")): folding the BN into the conv would change "
            + "what \(others.joined(separator: ", ")) read\(quantized ? ", so the quantized conv cannot be deployed as trained" : "")"
            + "; give the other readers the BN output, or a separate conv"))
    }
    return findings
}

/// 5. Clip bounds above what the input can reach: after a ReLU6 (looking through pools and
/// flatten, as the fixed_min default does) no input value exceeds 6.
private func clipRangeFindings(plan: QuantizationPlan, graph: ModelGraph) -> [ModelCheckFinding] {
    plan.quantizedLayers.compactMap { layer in
        guard let clipMax = layer.quantizer?.clipMax, let index = graph.index(of: layer.name),
              let source = graph.wiring.nonNegativeSource(ofLayerAt: index),
              case .nonNegativeOutput(let bound?) = graph.spec.layers[source].kind.quantizationRole, clipMax > bound else { return nil }
        let producer = graph.spec.layers[source]
        return ModelCheckFinding(.warning, "clip range", layer.name,
            "clip_max \(clipMax) is above \(bound), the largest value \(producer.name) (\(producer.kind.typeName)) can give: "
            + "the codes above \(bound) are never used; set clip_max to at most \(bound), or leave the bounds to IFMR")
    }
}
