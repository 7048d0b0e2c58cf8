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
