// `--profile`: the per-layer step timing (StepTiming) summed by op class, so that "which ops
// dominate" can be read off a network of 70 layers: depthwise conv, 1×1 conv, BN, clip, mul, …
import Foundation
import QAT

/// The op class of a layer: convolutions by shape (depthwise, 1×1, k×k, stride), else its type.
func opClass(of layer: LayerSpec) -> String {
    guard case .conv2d(let conv) = layer.kind else { return layer.kind.typeName }
    let kernel = "\(conv.kernel.height)×\(conv.kernel.width)"
    let stride = conv.stride == Size2D(1) ? "" : " stride \(conv.stride.height)"
    if conv.groups > 1 && conv.groups == conv.inputChannels { return "conv2d depthwise \(kernel)\(stride)" }
    if conv.groups > 1 { return "conv2d grouped \(kernel)\(stride)" }
    return "conv2d \(kernel)\(stride)"
}

/// Forward and backward milliseconds per step by op class, largest first.
func opClassTable(_ timing: StepTiming, spec: ModelSpec, steps: Int) -> String {
    let classes = Dictionary(spec.layers.map { ($0.name, opClass(of: $0)) }, uniquingKeysWith: { first, _ in first })
    var forward: [String: Double] = [:], backward: [String: Double] = [:], layers: [String: Int] = [:]
    for name in timing.names {
        let group = classes[name] ?? name   // "loss", "optimizer"
        forward[group, default: 0] += Double(timing.forwardNanoseconds[name] ?? 0) / 1e6 / Double(steps)
        backward[group, default: 0] += Double(timing.backwardNanoseconds[name] ?? 0) / 1e6 / Double(steps)
        layers[group, default: 0] += 1
    }
    let total = forward.values.reduce(0, +) + backward.values.reduce(0, +)
    let order = forward.keys.sorted { forward[$0]! + backward[$0]! > forward[$1]! + backward[$1]! }
    var lines = ["op class                      layers  forward ms  backward ms   share"]
    for group in order {
        lines.append(group.padded(to: 30) + String(format: " %5d  %10.3f  %11.3f  %5.1f%%", layers[group]!,
                                                   forward[group]!, backward[group]!, 100 * (forward[group]! + backward[group]!) / max(total, 1e-9)))
    }
    lines.append("total".padded(to: 30) + String(format: "        %10.3f  %11.3f  (%.3f ms per step)",
                                                  forward.values.reduce(0, +), backward.values.reduce(0, +), total))
    return lines.joined(separator: "\n")
}

/// The kind of each INT8 engine node, for `--profile` of infer-int8: integer convs by shape and
/// output (codes or float), float nodes by op, and for the ops that run on whatever comes
/// whether they see codes or floats.
func int8NodeKinds(_ nodes: [DeployNode]) -> [String: String] {
    var carriesCodes = ["input": false]
    var kinds: [String: String] = [:]
    for node in nodes {
        let codesIn = node.inputs.first.map { carriesCodes[$0] ?? false } ?? false
        let output = node.output != nil ? "codes" : "float"
        var kind: String
        switch node.op {
        case .quantize:
            kind = codesIn ? "requantize codes" : "quantize float→codes"
        case .conv2d, .linear:
            var shape = node.op.rawValue
            if node.op == .conv2d {
                shape += node.groups > 1 && node.groups == node.inputChannels ? " depthwise" : node.groups > 1 ? " grouped" : ""
                shape += " \(node.kernel.height)×\(node.kernel.width)" + (node.stride == Size2D(1) ? "" : " stride \(node.stride.height)")
            }
            kind = node.inputQuantizer != nil ? "int8 \(shape) → \(output)" : "float \(shape)"
        case .relu, .relu6, .maxpool2d, .flatten:
            let onCodes = codesIn || node.sharedInputGrid != nil
            kind = "\(node.op.rawValue) on \(onCodes ? "codes" : "floats")"
        case .add:
            kind = node.output != nil && node.sharedInputGrid == nil && codesIn ? "add → codes" : "add on floats → \(output)"
        case .batchnorm2d, .avgpool2d, .clip, .leakyReLU, .sigmoid, .hardSigmoid, .hardSwish, .globalAvgpool2d, .mul, .concat, .constant:
            kind = "\(node.op.rawValue) (\(codesIn ? "codes" : "floats") in)"
        }
        kinds[node.name] = kind
        switch node.op {
        case .relu, .relu6, .maxpool2d, .flatten: carriesCodes[node.name] = codesIn || node.sharedInputGrid != nil
        default: carriesCodes[node.name] = node.output != nil
        }
    }
    return kinds
}

/// Milliseconds per batch of the INT8 forward by node kind, largest first.
func int8NodeKindTable(_ timing: StepTiming, nodes: [DeployNode], batches: Int) -> String {
    let kinds = int8NodeKinds(nodes)
    var time: [String: Double] = [:], count: [String: Int] = [:]
    for name in timing.names {
        let kind = kinds[name] ?? name
        time[kind, default: 0] += Double(timing.forwardNanoseconds[name] ?? 0) / 1e6 / Double(batches)
        count[kind, default: 0] += 1
    }
    let total = time.values.reduce(0, +)
    var lines = ["node kind                                nodes   ms/batch   share"]
    for kind in time.keys.sorted(by: { time[$0]! > time[$1]! }) {
        lines.append(kind.padded(to: 40) + String(format: " %5d  %9.3f  %5.1f%%", count[kind]!, time[kind]!, 100 * time[kind]! / max(total, 1e-9)))
    }
    lines.append("total".padded(to: 40) + String(format: "        %9.3f ms per batch of %d", total, Measurer.inferenceBatch))
    return lines.joined(separator: "\n")
}
