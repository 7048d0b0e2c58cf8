/// A reverse-mode tape. Each op, as it runs forward, records a pullback closure that reads the
/// output's gradient and accumulates into its inputs' gradients. `backward` replays them in
/// reverse order. A `nil` tape means inference: ops then record nothing and keep no buffers.
public final class Tape {
    private var pullbacks: [() -> Void] = []

    public init() {}

    public var count: Int { pullbacks.count }

    /// Records the pullback of an op whose output needs a gradient.
    public func record(_ pullback: @escaping () -> Void) {
        pullbacks.append(pullback)
    }

    /// Seeds d(loss)/d(loss) = 1, runs every pullback newest first, then forgets them.
    public func backward(from loss: Variable) {
        precondition(loss.value.count == 1, "backward needs a scalar loss, got \(loss.shape)")
        loss.grad = Tensor(shape: loss.shape, repeating: 1)
        for pullback in pullbacks.reversed() { pullback() }
        pullbacks.removeAll(keepingCapacity: true)
    }
}

/// Whether an op whose inputs are `inputs` must record a pullback on `tape`.
@inline(__always)
func needsPullback(_ tape: Tape?, _ inputs: Variable?...) -> Bool {
    guard tape != nil else { return false }
    return inputs.contains { $0?.requiresGrad == true }
}
