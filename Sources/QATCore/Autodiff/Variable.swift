import QATIO

/// A node of the computation: a value, and (when it needs one) the gradient of the loss with
/// respect to it. Parameters are long-lived variables; activations live for one step.
public final class Variable {
    public var value: Tensor
    /// Allocated on first use by a pullback; zeroed by the optimizer between steps.
    public var grad: Tensor?
    /// False for data and for values computed only from data: no pullback writes to them.
    public var requiresGrad: Bool

    public init(_ value: Tensor, requiresGrad: Bool = false) {
        self.value = value
        self.requiresGrad = requiresGrad
    }

    public var shape: [Int] { value.shape }

    /// Runs `body` on this variable's gradient buffer, creating it as zeros the first time,
    /// so pullbacks can accumulate (`+=`) without allocating per call.
    @inline(__always)
    public func withGradient<R>(_ body: (UnsafeMutableBufferPointer<Float>) -> R) -> R {
        if grad == nil { grad = Tensor(shape: value.shape) }
        return grad!.storage.withUnsafeMutableBufferPointer { buffer in body(buffer) }
    }

    /// Drops the gradient so the next step starts from zero.
    public func zeroGradient() {
        if grad != nil {
            grad!.storage.withUnsafeMutableBufferPointer { g in
                g.initialize(repeating: 0)
            }
        }
    }
}
