import QATIO

/// A bias on a grid of its own (Vitis AI's `"bias"` tensor; docs/ALGORITHMS.md §3.3): symmetric,
/// signed, one scale for the whole vector, recomputed from the bias at every forward as ARQ does
/// for weights. s_b = max|b| / qmax (qmax = 127 for 8 bits, 32767 for 16; the maxmin method),
/// raised to the smallest power of two ≥ it when `powerOfTwo`; s_b < EPS gives 1.
/// b̂ = clamp(round(b / s_b), qmin, qmax) · s_b with the grid's tie rule (qmin = −qmax − 1, or −qmax
/// when narrow; since |b| / s_b ≤ qmax the lowest code is never needed).
/// The bias then goes onto the layer's int32 accumulator grid as any bias does (AccumulatorBias.swift).
public struct BiasGrid: Equatable, Sendable {
    /// Code width: 8 or 16.
    public var bits: Int
    public var powerOfTwo: Bool
    public var roundMode: RoundMode
    public var narrowRange: Bool
    /// Vitis AI's diffs (with `powerOfTwo`): the least-error power of two among the covering scale
    /// and three narrower ones (docs/ALGORITHMS.md §3.4), instead of the covering one.
    public var searchesPowerOfTwo: Bool

    public init(bits: Int = 8, powerOfTwo: Bool = false, roundMode: RoundMode = .halfEven, narrowRange: Bool = false,
                searchesPowerOfTwo: Bool = false) {
        precondition(!searchesPowerOfTwo || powerOfTwo, "the diffs search picks among power-of-two scales")
        self.searchesPowerOfTwo = searchesPowerOfTwo
        self.bits = bits
        self.powerOfTwo = powerOfTwo
        self.roundMode = roundMode
        self.narrowRange = narrowRange
    }

    /// s_b for `bias`.
    public func scale(of bias: Tensor) -> Float {
        // ARQ's per-tensor scale with D = qmax on both sides (its narrow-range divisor): maxmin of |b|.
        let covering = arqScales(bias, rows: 1, bits: bits, powerOfTwo: powerOfTwo, narrowRange: true)[0]
        guard searchesPowerOfTwo else { return covering }
        return bias.storage.withUnsafeBufferPointer {
            DiffsCalibrator.leastErrorScale($0, covering: covering, bits: bits, roundMode: roundMode, narrowRange: narrowRange)
        }
    }

    /// b̂: the bias on its grid.
    public func quantize(_ bias: Tensor) -> Tensor {
        guard bias.count > 0 else { return bias }
        return quantizeRows(bias, scales: [scale(of: bias)], bits: bits, roundMode: roundMode, narrowRange: narrowRange)
    }
}

/// Bias fake quantization: b̂ forward, straight-through backward dL/db += dL/db̂ (as ARQ).
public func biasFakeQuantize(_ bias: Variable, grid: BiasGrid, tape: Tape?) -> Variable {
    straightThrough(bias, quantized: grid.quantize(bias.value), tape: tape)
}
