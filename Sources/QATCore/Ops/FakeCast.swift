/// A float format a tensor can be cast to and back (Vitis AI's `datatype` bfloat16, float16,
/// float32; docs/ALGORITHMS.md §3.6).
public enum FloatFormat: String, CaseIterable, Sendable {
    /// 8 exponent bits, 7 mantissa bits: float32's range, 2⁻⁸ relative precision.
    case bfloat16
    /// IEEE binary16: 5 exponent bits, 10 mantissa bits, largest finite 65504.
    case float16
    /// The identity: every tensor already is float32.
    case float32

    /// True for float32, whose cast changes nothing.
    public var isIdentity: Bool { self == .float32 }

    /// `x` rounded to this format and back, as a hardware cast does: to nearest, ties to an even
    /// mantissa; subnormals of the format are kept (gradual underflow); a magnitude past the
    /// largest finite value (after rounding) becomes ±∞ (IEEE overflow, not saturation); NaN stays NaN.
    @inlinable
    public func cast(_ x: Float) -> Float {
        switch self {
        case .bfloat16:
            guard !x.isNaN else { return x }
            // Keep the top 16 bits, rounding the 16 dropped ones to nearest even. Rounding carries
            // into the exponent where it must (up to ∞); float32 subnormals round the same way.
            let bits = x.bitPattern
            let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
            return Float(bitPattern: rounded & 0xFFFF_0000)
        case .float16:
            // Swift's conversion is IEEE's: nearest even, subnormals, overflow to ±∞, NaN kept.
            return Float(Float16(x))
        case .float32:
            return x
        }
    }

    /// Casts every element in place.
    public func cast(_ values: inout [Float]) {
        guard !isIdentity else { return }
        values.withUnsafeMutableBufferPointer { v in
            for i in v.indices { v[i] = cast(v[i]) }
        }
    }
}

/// Fake cast: `x` rounded to `format` and back (`FloatFormat.cast`), with a straight-through
/// gradient (the cast's derivative is taken as 1, as for the integer grids' rounding).
/// float32 returns `x` itself.
public func fakeCast(_ x: Variable, to format: FloatFormat, tape: Tape?) -> Variable {
    guard !format.isIdentity else { return x }
    var values = x.value.storage
    format.cast(&values)
    return straightThrough(x, quantized: Tensor(shape: x.value.shape, storage: values), tape: tape)
}
