import QATIO

/// Weight fake quantization (docs/ALGORITHMS.md §3): ARQ (`arq_retrain`, scales recomputed from the
/// weights at every forward, straight-through backward) and the opt-in LSQ variant
/// (`ulq_retrain`, learnable per-row scales initialised by ARQ).
///
/// The weight is viewed as rows [C_out, -1] when channel-wise, or as one row otherwise.
/// Both are symmetric with offset 0: ŵ = clamp(round(w / s), qmin, qmax) · s per row.

/// Which weight quantizer a layer uses, spelled as in the retrain config.
public enum WeightQuantizationAlgorithm: String, Sendable {
    case arq = "arq_retrain"
    case lsq = "ulq_retrain"
}

/// A layer's weight quantizer settings and the scales its last forward used (for checkpoints
/// and deploy).
public final class WeightQuantizerState {
    public let algorithm: WeightQuantizationAlgorithm
    public let channelWise: Bool
    /// Code width of the weight grids: 8 (16 is refused at deployment).
    public let numBits: Int
    /// Each row's scale is raised to a power of two (`scale_type: poweroftwo`; ARQ only).
    public let powerOfTwo: Bool
    /// The tie rule of the weight grids.
    public let roundMode: RoundMode
    /// Codes −127…127 (narrow range): ARQ then divides by 127 on both sides.
    public let narrowRange: Bool
    /// Vitis AI's diffs (with `powerOfTwo`): each row takes the power-of-two scale with the least
    /// error among its covering one and three narrower ones, instead of the covering one.
    public let searchesPowerOfTwo: Bool
    /// One scale per row: C_out rows when channel-wise, else one.
    public let rowCount: Int
    /// The scales the most recent forward used, one per row (1 before any forward).
    public var scales: [Float]
    /// `ulq_retrain` only: trainable scales [rowCount], nil for ARQ.
    public let learnedScales: Variable?
    /// `ulq_retrain` only: whether `learnedScales` have been set (from ARQ on the first forward,
    /// or from a checkpoint). Meaningless for ARQ, which keeps no state between forwards.
    public var initialized: Bool = false
    /// ARQ only: NUQ's levels on top of the ARQ scales (FakeQuantNUQ.swift), nil for uniform codes.
    public var nonUniform: NonUniformWeights?
    /// ARQ only: an asymmetric grid per row, zero point included (weight-only layers,
    /// FakeQuantAsymmetricARQ.swift).
    public var asymmetric = false
    /// ARQ only: each row's amplitude is this method's symmetric threshold over the row's values
    /// (Vitis AI's weight `method` percentile, entropy or mse) instead of max |w|.
    public var rangeMethod: (any BatchwiseCalibrator)? {
        didSet { cachedRangeScales = nil }
    }
    /// `rangeMethod`'s last scales and the weights they came from: eval, deploy and verify run
    /// many forwards on unchanged weights, and a method's search costs far more than a max.
    fileprivate var cachedRangeScales: (weights: [Float], scales: [Float])?

    /// weightShape: [C_out, …]; the row count is fixed here so the learned scales exist (and can be
    /// registered with the optimizer and checkpoints) before the first forward.
    public init(weightShape: [Int], channelWise: Bool,
                algorithm: WeightQuantizationAlgorithm = .arq, numBits: Int = 8, powerOfTwo: Bool = false,
                roundMode: RoundMode = .halfEven, narrowRange: Bool = false, searchesPowerOfTwo: Bool = false) {
        precondition(!searchesPowerOfTwo || powerOfTwo, "the diffs search picks among power-of-two scales")
        self.searchesPowerOfTwo = searchesPowerOfTwo
        self.roundMode = roundMode
        self.narrowRange = narrowRange
        precondition(!weightShape.isEmpty, "weight quantizer needs a weight shape")
        precondition(!powerOfTwo || algorithm == .arq, "power-of-two weight scales need ARQ (LSQ learns its scales)")
        self.powerOfTwo = powerOfTwo
        self.algorithm = algorithm
        self.channelWise = channelWise
        self.numBits = numBits
        rowCount = channelWise ? weightShape[0] : 1
        scales = [Float](repeating: 1, count: rowCount)
        learnedScales = algorithm == .lsq
            ? Variable(Tensor(shape: [rowCount], repeating: 1), requiresGrad: true) : nil
    }
}

/// ARQ scales of `weight` viewed as `rows` rows: per row A = max(|max|, |min|),
/// D = qmax + 1 (128) when |min| > |max| else qmax (127), s = A / D, and s < EPS → 1.
/// `powerOfTwo`: s is the smallest power of two ≥ A / D (computed in Double, so a row whose
/// A / D is just above 2^k gets 2^(k+1) and no weight is clipped), then s < EPS → 1.
/// `narrowRange`: the codes stop at −qmax, so D = qmax on both sides.
public func arqScales(_ weight: Tensor, rows: Int, bits: Int = 8, powerOfTwo: Bool = false, narrowRange: Bool = false) -> [Float] {
    precondition(rows > 0 && weight.count % rows == 0, "arqScales: \(weight.shape) is not \(rows) rows")
    let rowLength = weight.count / rows
    var scales = [Float](repeating: 1, count: rows)
    guard rowLength > 0 else { return scales }
    let qmax = QuantizationGrid.codeBounds(bits: bits).qmax
    weight.storage.withUnsafeBufferPointer { ws in
        for r in 0..<rows {
            let row = ws.baseAddress! + r * rowLength
            var hi = row[0], lo = row[0]
            for i in 1..<rowLength { hi = max(hi, row[i]); lo = min(lo, row[i]) }
            let divisor = abs(lo) > abs(hi) && !narrowRange ? Float(qmax + 1) : Float(qmax)
            let amplitude = max(abs(hi), abs(lo))
            var s = amplitude / divisor
            if powerOfTwo && amplitude > 0 {
                s = Float(QuantizationGrid.powerOfTwoCeiling(Double(amplitude) / Double(divisor)))
            }
            scales[r] = s < quantizationEpsilon ? 1 : s
        }
    }
    return scales
}

extension WeightQuantizerState {
    /// ARQ's row scales for `weight` (`arqScales`); with `searchesPowerOfTwo` each row's
    /// least-error power of two (`DiffsCalibrator.leastErrorScale`) from its covering scale; with
    /// `rangeMethod` the method's threshold per row (`thresholdScales`).
    public func arqRowScales(_ weight: Tensor) -> [Float] {
        if let method = rangeMethod {
            if let cached = cachedRangeScales, cached.weights == weight.storage { return cached.scales }
            let scales = thresholdScales(weight, rows: rowCount, method: method, bits: numBits, powerOfTwo: powerOfTwo)
            cachedRangeScales = (weight.storage, scales)
            return scales
        }
        var scales = arqScales(weight, rows: rowCount, bits: numBits, powerOfTwo: powerOfTwo, narrowRange: narrowRange)
        guard searchesPowerOfTwo else { return scales }
        let rowLength = weight.count / rowCount
        weight.storage.withUnsafeBufferPointer { ws in
            for r in 0..<rowCount {
                let row = UnsafeBufferPointer(rebasing: ws[(r * rowLength)..<((r + 1) * rowLength)])
                scales[r] = DiffsCalibrator.leastErrorScale(row, covering: scales[r], bits: numBits, roundMode: roundMode,
                                                            narrowRange: narrowRange)
            }
        }
        return scales
    }
}

/// Scales of `weight` viewed as `rows` rows from a calibration method: per row T = the method's
/// symmetric threshold over the row's values, s = T / qmax (127: T maps to the outermost code on
/// both sides, so weights beyond T clamp there), raised to the smallest covering power of two
/// with `powerOfTwo`; s < EPS → 1 (docs/ALGORITHMS.md §3).
public func thresholdScales(_ weight: Tensor, rows: Int, method: any BatchwiseCalibrator, bits: Int = 8,
                            powerOfTwo: Bool = false) -> [Float] {
    precondition(rows > 0 && weight.count % rows == 0, "thresholdScales: \(weight.shape) is not \(rows) rows")
    let rowLength = weight.count / rows
    let qmax = Float(QuantizationGrid.codeBounds(bits: bits).qmax)
    return (0..<rows).map { r in
        let row = Array(weight.storage[(r * rowLength)..<((r + 1) * rowLength)])
        // A diverged row keeps ARQ's (non-finite) scale, as ARQ would: the trainer reports it.
        guard row.allSatisfy({ $0.isFinite }) else {
            return arqScales(Tensor(shape: [row.count], storage: row), rows: 1, bits: bits, powerOfTwo: powerOfTwo)[0]
        }
        // The batchwise methods throw only on data they never get here (empty or non-finite rows).
        let threshold = (try? method.threshold(row, layer: "")) ?? 0
        var s = threshold / qmax
        if powerOfTwo && threshold > 0 { s = Float(QuantizationGrid.powerOfTwoCeiling(Double(threshold) / Double(qmax))) }
        return s.isFinite && s >= quantizationEpsilon ? s : 1
    }
}

/// Fake-quantizes a weight with the algorithm `state` names and records the scales it used.
///
/// weight: [C_out, …] → ŵ of the same shape.
public func weightFakeQuantize(_ weight: Variable, state: WeightQuantizerState, tape: Tape?) -> Variable {
    switch state.algorithm {
    case .arq:
        if let nonUniform = state.nonUniform { return nuqFakeQuantize(weight, state: state, nonUniform: nonUniform, tape: tape) }
        if state.asymmetric { return asymmetricARQFakeQuantize(weight, state: state, tape: tape) }
        return arqFakeQuantize(weight, state: state, tape: tape)
    case .lsq: return lsqFakeQuantize(weight, state: state, tape: tape)
    }
}

/// ARQ: scales from the current weights; backward is a pure straight-through dL/dw += dL/dŵ.
public func arqFakeQuantize(_ weight: Variable, state: WeightQuantizerState, tape: Tape?) -> Variable {
    let scales = state.arqRowScales(weight.value)
    state.scales = scales
    return straightThrough(weight, quantized: quantizeRows(weight.value, scales: scales, bits: state.numBits,
                                                           roundMode: state.roundMode, narrowRange: state.narrowRange),
                           tape: tape)
}

/// The quantized weights as a variable whose backward is a pure straight-through
/// dL/dw += dL/dŵ (ARQ, its asymmetric variant and NUQ alike).
func straightThrough(_ weight: Variable, quantized: Tensor, tape: Tape?) -> Variable {
    let out = Variable(quantized, requiresGrad: needsPullback(tape, weight))
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gy = out.grad else { return }
        gy.storage.withUnsafeBufferPointer { g in
            weight.withGradient { gw in
                for i in 0..<gw.count { gw[i] += g[i] }
            }
        }
    }
    return out
}

/// LSQ (`ulq_retrain`): the scales are parameters. On the first forward they start from ARQ;
/// a scale that the optimizer drove below EPS (or to NaN) is reset to its row's ARQ scale.
///
/// Backward, with t = w/s per element: dL/dw += g where qmin ≤ t ≤ qmax (0 outside, the exact
/// derivative of clamp-then-round with round as identity), and
/// dL/ds[row] += (1/√(N_c·qmax)) Σ g·{round(t) − t inside; qmin below; qmax above},
/// N_c being the row length.
public func lsqFakeQuantize(_ weight: Variable, state: WeightQuantizerState, tape: Tape?) -> Variable {
    guard let learned = state.learnedScales else {
        preconditionFailure("lsqFakeQuantize needs a state created with algorithm .lsq")
    }
    let rows = state.rowCount, bits = state.numBits
    let needsReset = learned.value.storage.contains { !$0.isFinite || $0 < quantizationEpsilon }
    if !state.initialized || needsReset {
        let arq = arqScales(weight.value, rows: rows, bits: bits, narrowRange: state.narrowRange)
        for r in 0..<rows {
            let s = learned.value.storage[r]
            if !state.initialized || !s.isFinite || s < quantizationEpsilon {
                learned.value.storage[r] = arq[r]
            }
        }
        state.initialized = true
    }
    let scales = learned.value.storage
    state.scales = scales
    let out = Variable(quantizeRows(weight.value, scales: scales, bits: bits, roundMode: state.roundMode,
                                    narrowRange: state.narrowRange),
                       requiresGrad: needsPullback(tape, weight, learned))
    guard out.requiresGrad, let tape else { return out }

    let rowLength = weight.value.count / rows
    let codes = QuantizationGrid.codeBounds(bits: bits, narrowRange: state.narrowRange)
    let (qmin, qmax) = (Float(codes.qmin), Float(codes.qmax))
    let gradientScale = 1 / (Double(rowLength) * Double(codes.qmax)).squareRoot()
    let mode = state.roundMode
    tape.record {
        guard let gy = out.grad else { return }
        var scaleGradient = [Double](repeating: 0, count: rows)
        weight.value.storage.withUnsafeBufferPointer { ws in
            gy.storage.withUnsafeBufferPointer { g in
                // Optional gradient buffer so one loop serves both "w needs it" and "only s does".
                func run(_ gw: UnsafeMutableBufferPointer<Float>?) {
                    for r in 0..<rows {
                        let s = scales[r]
                        var sum = 0.0
                        for i in (r * rowLength)..<((r + 1) * rowLength) {
                            let t = ws[i] / s
                            if t < qmin {
                                sum += Double(g[i] * qmin)
                            } else if t > qmax {
                                sum += Double(g[i] * qmax)
                            } else {
                                sum += Double(g[i] * (mode.round(t) - t))
                                gw?[i] += g[i]
                            }
                        }
                        scaleGradient[r] = sum * gradientScale
                    }
                }
                if weight.requiresGrad { weight.withGradient { run($0) } } else { run(nil) }
            }
        }
        if learned.requiresGrad {
            learned.withGradient { gs in
                for r in 0..<rows { gs[r] += Float(scaleGradient[r]) }
            }
        }
    }
    return out
}

/// ŵ = clamp(round(w / s), qmin, qmax) · s with one scale per row: each row on its own
/// symmetric grid (offset 0).
func quantizeRows(_ weight: Tensor, scales: [Float], bits: Int, roundMode: RoundMode = .halfEven, narrowRange: Bool = false) -> Tensor {
    var out = weight
    let rowLength = weight.count / scales.count
    out.storage.withUnsafeMutableBufferPointer { ws in
        for r in 0..<scales.count {
            let grid = QuantizationGrid(bits: bits, scale: scales[r], offset: 0, roundMode: roundMode, narrowRange: narrowRange)
            grid.fakeQuantize(UnsafeMutableBufferPointer(start: ws.baseAddress! + r * rowLength, count: rowLength))
        }
    }
    return out
}
