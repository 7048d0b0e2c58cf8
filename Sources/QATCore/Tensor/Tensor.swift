import CKernels
import QATIO

/// A dense float32 array with a shape, stored contiguously in row-major (C) order.
///
/// Tensors are values: copying one is cheap until either copy is written (copy on write).
/// Image batches use the layout [N, C, H, W].
public struct Tensor: Equatable, Sendable {
    public var shape: [Int]
    public var storage: [Float]

    public init(shape: [Int], storage: [Float]) {
        precondition(shape.reduce(1, *) == storage.count,
                     "shape \(shape) needs \(shape.reduce(1, *)) values, got \(storage.count)")
        self.shape = shape
        self.storage = storage
    }

    public init(shape: [Int], repeating value: Float = 0) {
        self.shape = shape
        self.storage = [Float](repeating: value, count: shape.reduce(1, *))
    }

    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape) }

    public static func scalar(_ value: Float) -> Tensor { Tensor(shape: [], storage: [value]) }

    public var count: Int { storage.count }
    public var rank: Int { shape.count }

    /// The same values under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, storage: storage)
    }

    public subscript(flat index: Int) -> Float {
        get { storage[index] }
        set { storage[index] = newValue }
    }

    public var description: String { "Tensor(\(shape))" }
}

extension Tensor {
    /// Adds `other` into `self` elementwise; shapes must hold the same number of values.
    public mutating func add(_ other: Tensor) {
        precondition(count == other.count, "add: \(shape) vs \(other.shape)")
        storage.withUnsafeMutableBufferPointer { a in
            other.storage.withUnsafeBufferPointer { b in
                for i in 0..<a.count { a[i] += b[i] }
            }
        }
    }

    /// Multiplies every value by `factor`.
    public mutating func scale(by factor: Float) {
        storage.withUnsafeMutableBufferPointer { a in
            for i in 0..<a.count { a[i] *= factor }
        }
    }

    public func sum() -> Float { storage.reduce(0, +) }

    /// The largest absolute value, or 0 for an empty tensor.
    public func maxAbs() -> Float { storage.reduce(0) { max($0, abs($1)) } }

    /// True when every value is finite (no NaN or infinity): a bit test per value in C, which
    /// vectorises (a Swift sum of x·0 was one add chain; the trainer checks every gradient each step).
    public var isFinite: Bool {
        storage.withUnsafeBufferPointer { values in values.isEmpty || qat_all_finite(values.baseAddress!, values.count) != 0 }
    }
}

/// A buffer the caller overwrites completely (for example the output of a beta = 0 gemm),
/// so paying for zero-filling it would be waste.
@inline(__always)
func uninitializedFloats(_ count: Int) -> [Float] {
    [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
}

extension String {
    /// The string padded with spaces to `width` characters (for text tables; `%-20@` does not pad on Linux).
    public func padded(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
