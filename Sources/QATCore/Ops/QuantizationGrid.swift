import CKernels
import Foundation
import QATIO

/// float32 machine epsilon, the contract's `EPS`: scales below it are replaced by 1.
public let quantizationEpsilon: Float = 1.192092896e-7

/// An affine quantization grid (docs/ALGORITHMS.md "Notation"): `bits`-bit signed codes q in
/// [qmin, qmax] standing for the values s·(q − o).
///
/// The one grid type: ULQ inputs, ARQ/LSQ weight rows (offset 0), the deployer's weight and
/// activation codes, the INT8 engine's codes, INT16 inputs on the engine, and the comparison
/// tools all build one, and all of them quantize through `clampAndRound`.
public struct QuantizationGrid: Equatable, Sendable, Codable {
    /// Code width: 8 or 16.
    public let bits: Int
    /// How values between two codes round: half to even (qat's default) or another tie rule.
    public let roundMode: RoundMode
    /// Narrow range (Vitis AI's `narrow_range`): the lowest code is −127 (−32767), not −128, so
    /// the codes are symmetric around 0 and n = 254 (65534).
    public let narrowRange: Bool
    /// s > 0.
    public let scale: Float
    /// o, the zero point, in [qmin, qmax].
    public let offset: Int
    /// Grid-aligned clip bounds [L, U] (docs/ALGORITHMS.md §1 step 4): L = s·(qmin − o), U = L + n·s,
    /// in float32, product and sum each rounded (§6.1).
    public let lower: Float
    public let upper: Float

    public init(bits: Int, scale: Float, offset: Int, roundMode: RoundMode = .halfEven, narrowRange: Bool = false) {
        let (qmin, qmax) = Self.codeBounds(bits: bits, narrowRange: narrowRange)
        self.bits = bits
        self.roundMode = roundMode
        self.narrowRange = narrowRange
        self.scale = scale
        self.offset = offset
        lower = scale * Float(qmin - offset)
        upper = lower + Float(qmax - qmin) * scale
    }

    /// The grid one clip pair (M', m') gives, ULQ step 3 in float32 as the INT8 deploy computes
    /// it: s = (M' − m') / n, o = round(qmin − m'/s); s < EPS (or not finite) gives s = 1,
    /// o = qmin. Expects clipMin ≤ 0 ≤ clipMax.
    public init(bits: Int, clipMax: Float, clipMin: Float, roundMode: RoundMode = .halfEven, narrowRange: Bool = false) {
        let (qmin, qmax) = Self.codeBounds(bits: bits, narrowRange: narrowRange)
        var s = (clipMax - clipMin) / Float(qmax - qmin)
        var o = qmin
        if s < quantizationEpsilon || !s.isFinite {
            s = 1
        } else {
            let raw = (Float(qmin) - clipMin / s).rounded(.toNearestOrEven)
            // m'/s lies in [-n, 0], so o is in range up to float noise; the clamp only guards it.
            o = min(max(Int(raw), qmin), qmax)
        }
        self.init(bits: bits, scale: s, offset: o, roundMode: roundMode, narrowRange: narrowRange)
    }

    /// The power-of-two grid that covers this one (docs/ALGORITHMS.md §1.1): the same zero
    /// point, the scale raised to the smallest power of two ≥ s. Since qmin − o ≤ 0 ≤ qmax − o,
    /// the new [L, U] contains the old one; L and U are small integers times 2^k, so exact.
    public var powerOfTwoCovering: QuantizationGrid {
        QuantizationGrid(bits: bits, scale: Self.powerOfTwoCeiling(scale), offset: offset, roundMode: roundMode,
                         narrowRange: narrowRange)
    }

    /// The smallest power of two ≥ s (s > 0 and finite), exactly.
    public static func powerOfTwoCeiling<T: BinaryFloatingPoint>(_ s: T) -> T {
        precondition(s > 0 && s.isFinite, "powerOfTwoCeiling: \(s) is not a positive finite scale")
        // s = 2^e · significand with significand in [1, 2); exactly 1 means s is a power of two.
        return s.significand == 1 ? s : T(sign: .plus, exponent: s.exponent + 1, significand: 1)
    }

    /// True when s is exactly 2^k for some integer k.
    public static func isPowerOfTwo(_ s: Float) -> Bool { s > 0 && s.isFinite && s.significand == 1 }

    /// The signed code range of a `bits`-bit grid: INT8 [−128, 127], INT16 [−32768, 32767].
    /// Only 8 and 16 bits are supported; anything else is a programmer error. A narrow range
    /// starts one code higher: [−127, 127], [−32767, 32767].
    public static func codeBounds(bits: Int, narrowRange: Bool = false) -> (qmin: Int, qmax: Int) {
        precondition(bits == 8 || bits == 16, "quantization supports 8 or 16 bits, got \(bits)")
        return (-(1 << (bits - 1)) + (narrowRange ? 1 : 0), (1 << (bits - 1)) - 1)
    }

    public var qmin: Int { Self.codeBounds(bits: bits, narrowRange: narrowRange).qmin }
    public var qmax: Int { Self.codeBounds(bits: bits, narrowRange: narrowRange).qmax }
    /// Number of steps between qmin and qmax (`n` in docs/ALGORITHMS.md): 255 for INT8.
    public var levels: Int { qmax - qmin }

    // MARK: Clamp and round

    /// The one clamp-and-round of qat: t clamped to [low, high], then rounded half to even.
    ///
    /// Every quantizer calls it with t = x/s and the integer bounds qmin − o, qmax − o, which
    /// equals the contract's clamp(round(x/s) + o, qmin, qmax) − o. Clamping first keeps t in
    /// `roundHalfEven`'s range, so the loops that call this vectorise. Generic so that HFMG's
    /// Double histogram grid uses the same rule.
    @inline(__always)
    public static func clampAndRound<T: BinaryFloatingPoint>(_ t: T, low: T, high: T) -> T {
        roundHalfEven(min(max(t, low), high))
    }

    /// q − o for x, as a Float: round(clamp(x/s, qmin − o, qmax − o)) with the grid's round mode.
    @inline(__always)
    public func steps(_ x: Float) -> Float {
        roundMode.round(min(max(x / scale, Float(qmin - offset)), Float(qmax - offset)))
    }

    /// The code of x: q = clamp(round(x/s) + o, qmin, qmax); NaN gives the zero point o, as in
    /// the INT8 kernels.
    public func quantize(_ x: Float) -> Int {
        let t = steps(x)
        return t.isNaN ? offset : Int(t) + offset
    }

    /// The value of code q: s·(q − o).
    public func dequantize(_ q: Int) -> Float { scale * Float(q - offset) }

    /// Fake-quantizes in place, x̂ = s·round(clamp(x/s, qmin − o, qmax − o)): the ULQ and ARQ
    /// forward (docs/ALGORITHMS.md §1 step 4, §3). The hot loop of fake quant.
    public func fakeQuantize(_ values: UnsafeMutableBufferPointer<Float>) {
        guard let base = values.baseAddress else { return }
        fakeQuantize(UnsafePointer(base), into: base, count: values.count)
    }

    /// x̂ of `count` values from `source` into `destination` (the same buffer, or one not
    /// overlapping it): one pass, so a fresh output needs no copy of the input first.
    public func fakeQuantize(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count: Int) {
        let (s, low, high) = (scale, Float(qmin - offset), Float(qmax - offset))
        guard roundMode == .halfEven else {   // the other tie rules: a separate loop keeps this one as it was
            let mode = roundMode
            for i in 0..<count { destination[i] = mode.round(min(max(source[i] / s, low), high)) * s }
            return
        }
        qat_ulq_forward(source, destination, count, s, low, high)   // clampAndRound's bits, in vectors
    }

    public func fakeQuantize(_ values: inout [Float]) {
        values.withUnsafeMutableBufferPointer { fakeQuantize($0) }
    }

    /// How many values fall below L and above U (x == L or x == U is inside): the values the
    /// grid clips, as the ULQ backward's masks count them.
    public func clippedCounts(_ values: UnsafeBufferPointer<Float>) -> (below: Int, above: Int) {
        var below = 0, above = 0
        for x in values {
            if x < lower { below += 1 } else if x > upper { above += 1 }
        }
        return (below, above)
    }
}

extension QuantizationGrid {
    private enum CodingKeys: String, CodingKey { case bits, roundMode, narrowRange, scale, offset, lower, upper }

    /// `roundMode` and `narrowRange` are written only when not the default, so reports of
    /// default grids keep their bytes, and read as the default when absent.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(bits, forKey: .bits)
        if roundMode != .halfEven { try c.encode(roundMode, forKey: .roundMode) }
        if narrowRange { try c.encode(narrowRange, forKey: .narrowRange) }
        try c.encode(scale, forKey: .scale)
        try c.encode(offset, forKey: .offset)
        try c.encode(lower, forKey: .lower)
        try c.encode(upper, forKey: .upper)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(bits: try c.decode(Int.self, forKey: .bits), scale: try c.decode(Float.self, forKey: .scale),
                  offset: try c.decode(Int.self, forKey: .offset),
                  roundMode: try c.decodeIfPresent(RoundMode.self, forKey: .roundMode) ?? .halfEven,
                  narrowRange: try c.decodeIfPresent(Bool.self, forKey: .narrowRange) ?? false)
    }
}

// MARK: - Rounding

/// How a value halfway between two integers rounds (Vitis AI's `round_mode`); values elsewhere
/// go to the nearest integer in every mode.
public enum RoundMode: String, CaseIterable, Sendable, Codable {
    /// Ties to the even neighbour (qat's default, IEEE's, ONNX's).
    case halfEven = "half_even"
    /// Ties toward +∞: 2.5 → 3, −2.5 → −2.
    case halfUp = "half_up"
    /// Ties toward −∞: 2.5 → 2, −2.5 → −3.
    case halfDown = "half_down"
    /// Ties away from zero, as C's `round`: 2.5 → 3, −2.5 → −3.
    case stdRound = "std_round"

    /// v rounded with this mode, for |v| < 2^(p − 1) as `roundHalfEven`. Ties are found exactly:
    /// r = roundHalfEven(v) is an integer within ½ of v, so v − r is exact, and v is a tie
    /// precisely when it is ±½ (`floor(v + 0.5)` would round 0.49999997 up, since the sum rounds
    /// to 1). Then r moves one step when half to even went the other way than the mode.
    @inline(__always)
    public func round<T: BinaryFloatingPoint>(_ v: T) -> T {
        let r = roundHalfEven(v)
        switch self {
        case .halfEven: return r
        case .halfUp: return v - r == 0.5 ? r + 1 : r
        case .halfDown: return v - r == -0.5 ? r - 1 : r
        case .stdRound:
            let d = v - r
            if d == 0.5 && v > 0 { return r + 1 }
            if d == -0.5 && v < 0 { return r - 1 }
            return r
        }
    }

    /// The same on eight lanes (the ULQ backward's residuals).
    @inline(__always)
    public func round(_ v: SIMD8<Float>) -> SIMD8<Float> {
        let r = roundHalfEven(v)
        let d = v - r
        let one = SIMD8<Float>(repeating: 1), zero = SIMD8<Float>()
        switch self {
        case .halfEven: return r
        case .halfUp: return r + one.replacing(with: zero, where: d .!= 0.5)
        case .halfDown: return r - one.replacing(with: zero, where: d .!= -0.5)
        case .stdRound:
            return r + one.replacing(with: zero, where: .!((d .== 0.5) .& (v .> 0)))
                - one.replacing(with: zero, where: .!((d .== -0.5) .& (v .< 0)))
        }
    }
}

/// Rounds half to even, like `rounded(.toNearestOrEven)`, for |v| < 2^(p − 1) (2²² for Float,
/// 2⁵¹ for Double); the result is +0 where `rounded` gives −0.
///
/// Without SSE4.1 in the target, Swift lowers `.toNearestOrEven` to a `rintf` call per element,
/// which blocks vectorisation. Adding and subtracting 1.5·2^p (p fraction bits) leaves a value
/// whose ulp is 1, so the hardware's default round-to-nearest-even does the rounding.
/// Callers clamp first (`QuantizationGrid.clampAndRound`), or pass values known to be small.
@inline(__always)
package func roundHalfEven<T: BinaryFloatingPoint>(_ v: T) -> T {
    let magic = halfEvenMagic(T.self)
    return (v + magic) - magic
}

/// The same on eight lanes at once (the ULQ backward).
@inline(__always)
package func roundHalfEven(_ v: SIMD8<Float>) -> SIMD8<Float> {
    let magic = SIMD8<Float>(repeating: halfEvenMagic(Float.self))
    return (v + magic) - magic
}

/// 1.5·2^p: 12 582 912 for Float.
@inline(__always)
private func halfEvenMagic<T: BinaryFloatingPoint>(_: T.Type) -> T {
    1.5 * T(1 << T.significandBitCount)
}
