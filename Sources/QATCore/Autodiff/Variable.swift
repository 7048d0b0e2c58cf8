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

    /// Like `withGradient`, for pullbacks that can write each element once: when this variable
    /// has no gradient yet, the buffer is allocated without zero-filling and `body` gets
    /// `overwrite: true` and must store `0 + value` into every element (the bits adding into
    /// zeros would give, −0 included); otherwise `overwrite` is false and `body` adds as usual.
    @inline(__always)
    public func withGradient<R>(overwritingFresh body: (UnsafeMutableBufferPointer<Float>, _ overwrite: Bool) -> R) -> R {
        let fresh = grad == nil
        if fresh { grad = Tensor(shape: value.shape, storage: uninitializedFloats(value.count)) }
        return grad!.storage.withUnsafeMutableBufferPointer { buffer in body(buffer, fresh) }
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
