import CKernels
import QATIO

/// ULQ activation fake quantization with learnable clip bounds (docs/ALGORITHMS.md §1).
///
/// Forward: y = (clamp(round(x / s) + o, qmin, qmax) − o) · s with s, o from the clip pair.
/// Backward: straight-through for x inside [L, U]; closed-form gradients for clip_max and clip_min.

/// Everything one quantized layer input keeps between steps; all of it belongs in checkpoints.
///
/// `clipMax` and `clipMin` are trainable scalar parameters (`act_quant.clip_max`, …) that the
/// optimizer updates; every forward validates them, may roll them back, and writes back the
/// values it actually used.
public final class ActivationQuantizerState {
    /// M, a scalar tensor, trained by the optimizer.
    public let clipMax: Variable
    /// m, a scalar tensor, trained by the optimizer (reset to 0 each forward when `fixedMin`).
    public let clipMin: Variable
    /// The last pair that passed validation (M_pre, m_pre). (0, 0) means "no valid pair yet".
    public var previousClipMax: Float = 0
    public var previousClipMin: Float = 0
    /// True once the clip bounds came from the config or from calibration (IFMR). Until then every
    /// batch uses its own min/max, and a resumed run with this set never calibrates again.
    public var initialized: Bool = false
    /// m is pinned to 0 (inputs that come straight from a ReLU).
    public var fixedMin: Bool
    /// Code width of the input grid: 8 or 16.
    public let numBits: Int
    /// `setClipRange` widens the bounds to the power-of-two grid that covers them
    /// (`scale_type: poweroftwo`, docs/ALGORITHMS.md §1.1). Only bounds that are not trained
    /// stay on it: the optimizer moves M and m freely.
    public let powerOfTwoScale: Bool
    /// The tie rule of the input grid, forward and in the backward's residuals.
    public let roundMode: RoundMode
    /// Codes from −127 (narrow range) instead of −128.
    public let narrowRange: Bool
    /// Opt-in LSQ-style factor on the clip gradients; nil (the contract's default) means 1.
    public var gradientScale: Float?
    /// The scale and offset used by the most recent forward, for export.
    public var scale: Float
    public var offset: Int
    /// The grid of the most recent forward.
    public var grid: QuantizationGrid {
        QuantizationGrid(bits: numBits, scale: scale, offset: offset, roundMode: roundMode, narrowRange: narrowRange)
    }

    /// A state with no clip bounds yet (`initialized == false`): it quantizes each batch with
    /// that batch's min/max until `setClipRange(max:min:)` is called.
    public init(fixedMin: Bool, numBits: Int = 8, powerOfTwoScale: Bool = false, roundMode: RoundMode = .halfEven,
                narrowRange: Bool = false) {
        self.fixedMin = fixedMin
        self.roundMode = roundMode
        self.narrowRange = narrowRange
        self.numBits = numBits
        self.powerOfTwoScale = powerOfTwoScale
        clipMax = Variable(.scalar(0), requiresGrad: true)
        clipMin = Variable(.scalar(0), requiresGrad: true)
        scale = 1
        offset = QuantizationGrid.codeBounds(bits: numBits, narrowRange: narrowRange).qmin
    }

    /// A state starting from given bounds (config `clip_max`/`clip_min`, or IFMR's result).
    public convenience init(fixedMin: Bool, numBits: Int = 8, clipMax: Float, clipMin: Float) {
        self.init(fixedMin: fixedMin, numBits: numBits)
        setClipRange(max: clipMax, min: clipMin)
    }

    /// Sets M and m, records them as the last valid pair and marks the state initialized.
    /// The next forward still validates them (and applies `fixedMin`). With `powerOfTwoScale`,
    /// a valid pair is first widened to the bounds [L, U] of the covering power-of-two grid,
    /// from which the forward then derives exactly s = 2^k and the same zero point.
    public func setClipRange(max clipMax: Float, min clipMin: Float) {
        var (clipMax, clipMin) = (clipMax, clipMin)
        if powerOfTwoScale && Self.isValidPair(clipMax, clipMin) {
            let grid = QuantizationGrid(bits: numBits, clipMax: max(clipMax, 0), clipMin: fixedMin ? 0 : min(clipMin, 0),
                                        narrowRange: narrowRange)
                .powerOfTwoCovering
            (clipMax, clipMin) = (grid.upper, grid.lower)
        }
        self.clipMax.value.storage[0] = clipMax
        self.clipMin.value.storage[0] = clipMin
        if Self.isValidPair(clipMax, clipMin) {
            previousClipMax = clipMax
            previousClipMin = clipMin
        }
        initialized = true
    }

    /// Whether (M_pre, m_pre) can be used for a rollback.
    public var hasValidPreviousPair: Bool { Self.isValidPair(previousClipMax, previousClipMin) }

    /// The contract's validity rule: M > m, M ≥ 0, m ≤ 0 (non-finite values are invalid too).
    static func isValidPair(_ clipMax: Float, _ clipMin: Float) -> Bool {
        clipMax.isFinite && clipMin.isFinite && clipMax > clipMin && clipMax >= 0 && clipMin <= 0
    }

    /// Steps 1–3: the (M', m') this forward uses, with 0 inside [m', M'].
    package func resolveClipRange(batch x: Tensor) -> (clipMax: Float, clipMin: Float) {
        var m = fixedMin ? 0 : clipMin.value.storage[0]
        var M = clipMax.value.storage[0]
        if !initialized {
            (M, m) = batchMaxMin(x)
        } else {
            // NaN or infinity (a diverged optimizer) counts as out of range, like M < 0 or m > 0.
            let maxBad = !M.isFinite || M < 0
            let minBad = !m.isFinite || m > 0
            let restoreBoth = M <= m || (maxBad && minBad)
            if restoreBoth || maxBad || minBad {
                let fallback = hasValidPreviousPair ? (previousClipMax, previousClipMin) : batchMaxMin(x)
                if restoreBoth || maxBad { M = fallback.0 }
                if restoreBoth || minBad { m = fallback.1 }
            }
        }
        if fixedMin { m = 0 }   // fixed_min wins over any restored or batch value
        return (max(M, 0), min(m, 0))
    }

    /// Step 5: the pair actually used becomes the parameters' value and the last valid pair.
    func commit(clipMax: Float, clipMin: Float, grid: QuantizationGrid) {
        self.clipMax.value.storage[0] = clipMax
        self.clipMin.value.storage[0] = clipMin
        previousClipMax = clipMax
        previousClipMin = clipMin
        scale = grid.scale
        offset = grid.offset
    }
}

/// The batch's (max, min), (0, 0) for an empty tensor.
func batchMaxMin(_ x: Tensor) -> (Float, Float) {
    guard x.count > 0 else { return (0, 0) }
    return x.storage.withUnsafeBufferPointer { xs in
        var hi = xs[0], lo = xs[0]
        for v in xs { hi = max(hi, v); lo = min(lo, v) }
        return (hi, lo)
    }
}

/// ULQ fake quantization of an activation tensor of any shape (docs/ALGORITHMS.md §1).
///
/// Forward: resolves (M', m') from `state` (fixed_min, validity rollback, batch fallback),
/// computes s, o, L, U, writes the pair back and returns y of x's shape.
/// Backward (recorded when x or a clip bound needs a gradient), with masks up = x > U,
/// lo = x < L and residual e = (round(t) − t)/n where t = x/s inside, M'/s above, m'/s below:
/// dL/dx += g·in, dL/dM += Σ g·(e + up), dL/dm += Σ g·(lo − e) (times `gradientScale` if set).
public func ulqFakeQuantize(_ x: Variable, state: ActivationQuantizerState, tape: Tape?) -> Variable {
    let (clipMax, clipMin) = state.resolveClipRange(batch: x.value)
    let q = QuantizationGrid(bits: state.numBits, clipMax: clipMax, clipMin: clipMin, roundMode: state.roundMode,
                             narrowRange: state.narrowRange)
    state.commit(clipMax: clipMax, clipMin: clipMin, grid: q)

    let out = Variable(fakeQuantized(x.value, grid: q), requiresGrad: needsPullback(tape, x, state.clipMax, state.clipMin))
    guard out.requiresGrad, let tape else { return out }
    let clipMaxVariable = state.clipMax, clipMinVariable = state.clipMin
    let gradientScale = state.gradientScale ?? 1
    let (s, levels) = (q.scale, Float(q.levels))
    let input = x.valueForPullback()   // the pullback reads x as it was; `x` may have released its value by then
    tape.record {
        guard let gy = out.grad else { return }
        let sums = ulqBackward(input, into: x, upstream: gy, grid: q)
        guard clipMaxVariable.requiresGrad || clipMinVariable.requiresGrad else { return }
        // Σ g·e over all three regions; the residual is constant above and below.
        let residualAbove = Double(residual(clipMax / s, q.roundMode)), residualBelow = Double(residual(clipMin / s, q.roundMode))
        let e = (sums.insideResidual + residualAbove * sums.above + residualBelow * sums.below)
            / Double(levels)
        let dMax = Float(e + sums.above) * gradientScale
        let dMin = Float(sums.below - e) * gradientScale
        if clipMaxVariable.requiresGrad { clipMaxVariable.withGradient { $0[0] += dMax } }
        if clipMinVariable.requiresGrad { clipMinVariable.withGradient { $0[0] += dMin } }
    }
    // The pullback keeps x anyway: a reader that needs y in backward (the conv's weight gradient)
    // recomputes it from x rather than keeping a second float tensor from forward to backward.
    out.recomputation = { fakeQuantized(input, grid: q) }
    return out
}

/// y = x̂ of every element of x. Element-wise, so the split into chunks does not change the
/// bits: the forward and a recomputation in backward give the same tensor.
func fakeQuantized(_ x: Tensor, grid q: QuantizationGrid) -> Tensor {
    var y = Tensor(shape: x.shape, storage: uninitializedFloats(x.count))
    x.storage.withUnsafeBufferPointer { xs in
        y.storage.withUnsafeMutableBufferPointer { ys in
            guard let source = xs.baseAddress, let destination = ys.baseAddress else { return }
            Parallel.forEachChunk(ys.count, minimumChunk: 1 << 16) { chunk in
                q.fakeQuantize(source + chunk.lowerBound, into: destination + chunk.lowerBound, count: chunk.count)
            }
        }
    }
    return y
}

/// round(t) − t, with the grid's tie rule.
@inline(__always)
private func residual(_ t: Float, _ mode: RoundMode) -> Float { mode.round(t) - t }

/// Σ g·(round(t) − t) over elements inside [L, U], and Σ g above U and below L.
struct ULQGradientSums: Equatable {
    var insideResidual = 0.0
    var above = 0.0
    var below = 0.0
}

/// Elements per partial sum: within a block the sums run in Float SIMD lanes, blocks are added
/// in Double in block order, so the result does not depend on the thread count.
private let ulqBlockSize = 1024

/// One pass over the saved input: accumulates dL/dx into x's gradient (when x needs it) and
/// returns the sums the clip gradients are built from.
private func ulqBackward(_ input: Tensor, into x: Variable, upstream gy: Tensor, grid q: QuantizationGrid) -> ULQGradientSums {
    let count = input.count
    let blockCount = (count + ulqBlockSize - 1) / ulqBlockSize
    var partials = [ULQGradientSums](repeating: ULQGradientSums(), count: blockCount)

    func run(_ gx: UnsafeMutablePointer<Float>?, overwrite: Bool) {
        input.storage.withUnsafeBufferPointer { xs in
            gy.storage.withUnsafeBufferPointer { g in
                partials.withUnsafeMutableBufferPointer { blocks in
                    Parallel.forEachChunk(blockCount, minimumChunk: 16) { chunk in
                        for block in chunk {
                            let start = block * ulqBlockSize
                            let (x, upstream, n) = (xs.baseAddress! + start, g.baseAddress! + start, min(ulqBlockSize, count - start))
                            guard q.roundMode == .halfEven else {
                                blocks[block] = ulqBlockSums(x: x, upstream: upstream, inputGradient: gx.map { $0 + start },
                                                             overwrite: overwrite, count: n, grid: q)
                                continue
                            }
                            var sums = (0.0, 0.0, 0.0)
                            withUnsafeMutableBytes(of: &sums) { raw in
                                qat_ulq_backward_block(x, upstream, gx.map { $0 + start }, n, q.scale, q.lower, q.upper,
                                                       overwrite ? 1 : 0, raw.baseAddress!.assumingMemoryBound(to: Double.self))
                            }
                            blocks[block] = ULQGradientSums(insideResidual: sums.0, above: sums.1, below: sums.2)
                        }
                    }
                }
            }
        }
    }
    if x.requiresGrad {
        x.withGradient(overwritingFresh: { gx, overwrite in run(gx.baseAddress, overwrite: overwrite) })
    } else {
        run(nil, overwrite: false)
    }

    var total = ULQGradientSums()
    for p in partials {
        total.insideResidual += p.insideResidual
        total.above += p.above
        total.below += p.below
    }
    return total
}

/// The backward of one block, eight elements at a time and branch-free: masks select which of
/// the three sums (and dL/dx) each element feeds. Half to even runs the same lanes in
/// CKernels/fake_quant.c (wider vectors); this loop serves the other tie rules and tests. Elements outside [L, U] may have a huge or
/// meaningless residual, but the mask discards it. With `overwrite` dL/dx is stored as 0 + g·in
/// (a fresh gradient: the bits adding into zeros gives, without reading them).
@inline(__always)
func ulqBlockSums(x: UnsafePointer<Float>, upstream g: UnsafePointer<Float>,
                          inputGradient gx: UnsafeMutablePointer<Float>?, overwrite: Bool, count: Int,
                          grid q: QuantizationGrid) -> ULQGradientSums {
    typealias Lanes = SIMD8<Float>
    let (s, lower, upper) = (q.scale, q.lower, q.upper)
    var residualLanes = Lanes(), aboveLanes = Lanes(), belowLanes = Lanes()
    let vectorEnd = count - count % Lanes.scalarCount
    for i in stride(from: 0, to: vectorEnd, by: Lanes.scalarCount) {
        let xv = UnsafeRawPointer(x + i).loadUnaligned(as: Lanes.self)
        let gv = UnsafeRawPointer(g + i).loadUnaligned(as: Lanes.self)
        let above = xv .> upper, below = xv .< lower
        let outside = above .| below
        let t = xv / s
        let residual = (q.roundMode == .halfEven ? roundHalfEven(t) : q.roundMode.round(t)) - t
        residualLanes += (gv * residual).replacing(with: 0, where: outside)
        aboveLanes += gv.replacing(with: 0, where: .!above)
        belowLanes += gv.replacing(with: 0, where: .!below)
        if let gx {
            let p = UnsafeMutableRawPointer(gx + i)
            let previous = overwrite ? Lanes() : p.loadUnaligned(as: Lanes.self)
            p.storeBytes(of: previous + gv.replacing(with: 0, where: outside), as: Lanes.self)
        }
    }
    for i in vectorEnd..<count {   // the tail, into lane 0
        let (xi, gi) = (x[i], g[i])
        if overwrite { gx?[i] = 0 }
        if xi > upper {
            aboveLanes[0] += gi
        } else if xi < lower {
            belowLanes[0] += gi
        } else {
            residualLanes[0] += gi * residual(xi / s, q.roundMode)
            gx?[i] += gi
        }
    }
    var sums = ULQGradientSums()
    for lane in 0..<Lanes.scalarCount {
        sums.insideResidual += Double(residualLanes[lane])
        sums.above += Double(aboveLanes[lane])
        sums.below += Double(belowLanes[lane])
    }
    return sums
}
