import QATIO

/// A node of the computation: a value, and (when it needs one) the gradient of the loss with
/// respect to it. Parameters are long-lived variables; activations live for one step.
public final class Variable {
    /// The value. Reading it after `releaseValue()` is a programming error and traps.
    public var value: Tensor {
        get {
            precondition(releasedShape == nil, Variable.releasedMessage)
            return storedValue
        }
        // In place, so the optimizer's updates do not copy the parameter (copy on write).
        _modify {
            precondition(releasedShape == nil, Variable.releasedMessage)
            yield &storedValue
        }
    }
    private var storedValue: Tensor
    /// The shape the value had when it was released; nil while the value is held.
    private var releasedShape: [Int]?
    /// Allocated on first use by a pullback; zeroed by the optimizer between steps.
    public var grad: Tensor?
    /// False for data and for values computed only from data: no pullback writes to them.
    public var requiresGrad: Bool

    public init(_ value: Tensor, requiresGrad: Bool = false) {
        storedValue = value
        self.requiresGrad = requiresGrad
    }

    /// The value's shape; still known after the value is released (its gradient has this shape).
    public var shape: [Int] { releasedShape ?? storedValue.shape }

    /// True once `releaseValue()` has run.
    public var isValueReleased: Bool { releasedShape != nil }

    /// True once a pullback keeps this value (`valueForPullback()`): its memory then stays in
    /// use until backward whether or not the variable releases it.
    public private(set) var valueIsKeptForBackward = false
    /// Run by `releaseValue()` when no pullback keeps the value (see `whenReleasedUnkept`).
    private var shrinkers: [() -> Void] = []

    /// The value, for a pullback that keeps it until backward (noted, see `whenReleasedUnkept`).
    public func valueForPullback() -> Tensor {
        valueIsKeptForBackward = true
        return value
    }

    /// Set by an op whose output its own pullback can recompute bit for bit from what that pullback
    /// keeps anyway (a fake quantizer: its input and grid). A reader that saves the value for
    /// backward (`savedForPullback()`) then keeps this recipe instead of a second float tensor.
    /// Dropped on release: only the readers that saved it still hold it.
    public var recomputation: (() -> Tensor)?

    /// What a pullback keeps of this value to read it in backward: the recipe when there is one
    /// (and `SavedValue.recomputesOutputs` is on), else the value itself (as `valueForPullback()`).
    public func savedForPullback() -> SavedValue {
        if SavedValue.recomputesOutputs, let recomputation { return SavedValue(shape: shape, recompute: recomputation) }
        return SavedValue(valueForPullback())
    }

    /// Registers `shrink`, run when the value is released while no other pullback keeps it: the
    /// producer's pullback, the value's last holder, may then keep something smaller (ReLU: a mask).
    public func whenReleasedUnkept(_ shrink: @escaping () -> Void) {
        shrinkers.append(shrink)
    }

    /// Lets go of the value while keeping the shape, for a value nothing will read again: the
    /// model calls it once a layer output's last reader has run. Pullbacks capture the tensors
    /// they read (never a variable's value), so the memory is freed as soon as no pullback needs
    /// it, while the variable stays to receive its gradient.
    public func releaseValue() {
        guard releasedShape == nil else { return }
        releasedShape = storedValue.shape
        storedValue = Tensor(shape: [0], storage: [])
        recomputation = nil
        if !valueIsKeptForBackward { for shrink in shrinkers { shrink() } }
        shrinkers = []
    }

    private static let releasedMessage =
        "Variable.value read after releaseValue(): a pullback must capture the tensor it reads"

    /// Runs `body` on this variable's gradient buffer, creating it as zeros the first time,
    /// so pullbacks can accumulate (`+=`) without allocating per call.
    @inline(__always)
    public func withGradient<R>(_ body: (UnsafeMutableBufferPointer<Float>) -> R) -> R {
        if grad == nil { grad = Tensor(shape: shape) }
        return grad!.storage.withUnsafeMutableBufferPointer { buffer in body(buffer) }
    }

    /// Like `withGradient`, for pullbacks that can write each element once: when this variable
    /// has no gradient yet, the buffer is allocated without zero-filling and `body` gets
    /// `overwrite: true` and must store `0 + value` into every element (the bits adding into
    /// zeros would give, −0 included); otherwise `overwrite` is false and `body` adds as usual.
    @inline(__always)
    public func withGradient<R>(overwritingFresh body: (UnsafeMutableBufferPointer<Float>, _ overwrite: Bool) -> R) -> R {
        let fresh = grad == nil
        if fresh {
            let shape = shape
            grad = Tensor(shape: shape, storage: uninitializedFloats(shape.reduce(1, *)))
        }
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

/// A value a pullback reads in backward: kept as it is, or recomputed there from a recipe (see
/// `Variable.recomputation`) so that the float tensor need not stay alive from forward to backward.
public struct SavedValue {
    private let kept: Tensor?
    private let recompute: (() -> Tensor)?
    /// The value's shape, known without recomputing it.
    public let shape: [Int]

    /// On: readers of a fake quantizer's output keep its recipe and recompute the value in
    /// backward (same bits). Off: they keep the float output itself, as before (tests compare both).
    nonisolated(unsafe) public static var recomputesOutputs = true

    public init(_ value: Tensor) {
        kept = value
        recompute = nil
        shape = value.shape
    }

    public init(shape: [Int], recompute: @escaping () -> Tensor) {
        kept = nil
        self.recompute = recompute
        self.shape = shape
    }

    /// True when `tensor()` recomputes the value rather than returning a kept tensor.
    public var isRecomputed: Bool { kept == nil }

    /// The value: the kept tensor, or a fresh recomputation (call it once per backward, where needed).
    public func tensor() -> Tensor { kept ?? recompute!() }
}
