import Foundation
import QATIO

/// A reverse-mode tape. Each op, as it runs forward, records a pullback closure that reads the
/// output's gradient and accumulates into its inputs' gradients. `backward` replays them in
/// reverse order. A `nil` tape means inference: ops then record nothing and keep no buffers.
public final class Tape {
    private var pullbacks: [() -> Void] = []
    /// Which layer each pullback belongs to, for per-layer timing of the backward pass.
    private var labels: [String] = []
    /// Set by the model before each layer runs; ops never touch it.
    public var currentLabel = ""

    public init() {}

    /// What a pullback is replaced by once it has run.
    private static let finished: () -> Void = {}

    public var count: Int { pullbacks.count }

    /// Records the pullback of an op whose output needs a gradient.
    public func record(_ pullback: @escaping () -> Void) {
        pullbacks.append(pullback)
        labels.append(currentLabel)
    }

    /// Seeds d(loss)/d(loss) = 1, runs every pullback newest first, then forgets them.
    /// With `timing`, each pullback's wall time is added to its layer's backward total.
    ///
    /// Each pullback is dropped as soon as it has run: the tensors it saved and the variables it
    /// held (an activation and its gradient, once its producer's pullback has run too) are freed
    /// during the backward pass, so their memory serves the gradients still to come instead of
    /// every activation and every gradient being alive together at the end.
    public func backward(from loss: Variable, timing: StepTiming? = nil) {
        precondition(loss.value.count == 1, "backward needs a scalar loss, got \(loss.shape)")
        loss.grad = Tensor(shape: loss.shape, repeating: 1)
        for index in pullbacks.indices.reversed() {
            let pullback = pullbacks[index]
            pullbacks[index] = Tape.finished
            if let timing {
                let start = DispatchTime.now().uptimeNanoseconds
                pullback()
                timing.add(labels[index], backward: DispatchTime.now().uptimeNanoseconds - start)
            } else {
                pullback()
            }
        }
        pullbacks.removeAll(keepingCapacity: true)
        labels.removeAll(keepingCapacity: true)
    }
}

/// Wall time per layer, forward and backward, summed over the steps it saw (profiling).
public final class StepTiming {
    public private(set) var names: [String] = []
    public private(set) var forwardNanoseconds: [String: UInt64] = [:]
    public private(set) var backwardNanoseconds: [String: UInt64] = [:]

    public init() {}

    public func add(_ name: String, forward: UInt64 = 0, backward: UInt64 = 0) {
        if forwardNanoseconds[name] == nil && backwardNanoseconds[name] == nil { names.append(name) }
        forwardNanoseconds[name, default: 0] += forward
        backwardNanoseconds[name, default: 0] += backward
    }

    /// Times `body` and books it as forward time of `name`.
    public func measure<R>(_ name: String, _ body: () throws -> R) rethrows -> R {
        let start = DispatchTime.now().uptimeNanoseconds
        defer { add(name, forward: DispatchTime.now().uptimeNanoseconds - start) }
        return try body()
    }

    /// A table: layer, forward ms, backward ms, share of the total.
    public func table(steps: Int) -> String {
        let total = Double(forwardNanoseconds.values.reduce(0, +) + backwardNanoseconds.values.reduce(0, +))
        var lines = ["layer            forward ms   backward ms   share"]
        for name in names {
            let f = Double(forwardNanoseconds[name] ?? 0), b = Double(backwardNanoseconds[name] ?? 0)
            lines.append(name.padded(to: 16) + String(format: " %10.3f   %11.3f   %5.1f%%",
                                f / 1e6 / Double(steps), b / 1e6 / Double(steps), 100 * (f + b) / max(total, 1)))
        }
        lines.append("total".padded(to: 16) + String(format: " %10.3f ms per step", total / 1e6 / Double(steps)))
        return lines.joined(separator: "\n")
    }
}

/// Whether an op whose inputs are `inputs` must record a pullback on `tape`.
@inline(__always)
func needsPullback(_ tape: Tape?, _ inputs: Variable?...) -> Bool {
    guard tape != nil else { return false }
    return inputs.contains { $0?.requiresGrad == true }
}
