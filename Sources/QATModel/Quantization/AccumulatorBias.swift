import QATCore
import QATIO

// The bias of an integer layer on its int32 accumulator grid (docs/ALGORITHMS.md §5).
//
// On the INT8 engine, in ONNX QDQ and in TensorRT, a quantized conv or linear adds its bias in
// whole accumulator units b_q = round(b' / (s_d · s_w')), where b' is the bias after BN folding.
// Fake quant evaluates with that same rounded bias, so the engine and every QDQ runtime compute
// what fake quant simulated. The deployer and the fake-quant model share the code below, so
// both round the same b' with the same scales. Training (batch statistics) keeps the float
// bias: the rounding moves an output by at most half a unit of s_d·s_w', far below one code.

/// One output channel of an integer layer, as the deployer writes it and fake quant evaluates it.
public struct AccumulatorChannel: Equatable, Sendable {
    /// s_w' = s_w·k in float32 (negative when γ < 0).
    public var weightScale: Float
    /// s_d · s_w', the value of one accumulator unit, in Double.
    public var unit: Double
    /// b'/unit rounded half to even: the int32 bias before its range check.
    public var biasUnits: Double
    /// True for a channel with k = 0 (γ = 0), whose weight codes the deployer zeroes.
    public var isConstant: Bool

    /// Channel terms from the weight row scale s_w, the folded k and b' (k = 1, b' = b without a
    /// BN) and the input scale s_d. A γ = 0 channel's output is the constant b': its scale is
    /// chosen so that the bias holds b' with about 2²² units (or s_w when b' = 0).
    /// `biasLimit` is the largest |b_q| the accumulator allows (see `biasLimit(productsPerOutput:)`).
    public init(weightScale sw: Double, k: Double, shift: Double, inputScale sd: Double, biasLimit: Double) {
        var scale = sw * k
        isConstant = k == 0
        if isConstant {
            let units = min(Double(1 << 22), (biasLimit / 2).rounded(.down))
            scale = shift == 0 ? sw : shift / (sd * units)
        }
        weightScale = Float(scale)
        unit = sd * Double(weightScale)
        biasUnits = (shift / unit).rounded(.toNearestOrEven)
    }

    /// No partial sum may leave int32 in any kernel path or order: |b_q| + 2·255·128·K < 2³¹.
    public static func biasLimit(productsPerOutput k: Int) -> Double {
        Double(Int32.max) - 2 * 255 * 128 * Double(k)
    }

    /// Whether the engine can use this channel: a normal nonzero scale and an in-range bias.
    public func isDeployable(biasLimit: Double) -> Bool {
        weightScale.isFinite && weightScale != 0 && biasUnits.isFinite && abs(biasUnits) < biasLimit
    }
}

extension BatchNorm2DLayer {
    /// Per channel, k = γ/√(σ² + ε) and b' = (b − μ)·k + β from the running statistics, in Double,
    /// with 1/√(σ² + ε) in float32 as the eval op computes it. Values may be non-finite; the
    /// deployer refuses those.
    public func foldingTerms(bias: [Float]) -> (k: [Double], shift: [Double]) {
        let channels = attributes.features
        var k = [Double](repeating: 1, count: channels)
        var shift = [Double](repeating: 0, count: channels)
        for c in 0..<channels {
            let invStd = 1 / (statistics.variance.storage[c] + attributes.epsilon).squareRoot()
            k[c] = Double(gamma.value.storage[c]) * Double(invStd)
            shift[c] = (Double(bias[c]) - Double(statistics.mean.storage[c])) * k[c] + Double(beta.value.storage[c])
        }
        return (k, shift)
    }
}

extension FakeQuantizer {
    /// Why a quantizer has no input grid the INT8 engine could use.
    public enum InputGridProblem: Error, Equatable {
        case notCalibrated
        /// The clip bounds [clipMin, clipMax] are invalid and no previous valid pair exists.
        case invalidBounds(clipMin: Float, clipMax: Float)
    }

    /// The input grid (s_d, o_d) of the eval forward at the quantizer's own width, without a batch:
    /// the clip pair resolved as ULQ resolves it (validity rollback, `fixed_min`).
    public func inputGrid() throws(InputGridProblem) -> QuantizationGrid {
        let a = activation
        guard a.initialized else { throw .notCalibrated }
        let m = a.fixedMin ? 0 : a.clipMin.value.storage[0]
        let M = a.clipMax.value.storage[0]
        let needsFallback = M <= m || !M.isFinite || M < 0 || !m.isFinite || m > 0
        if needsFallback && !a.hasValidPreviousPair { throw .invalidBounds(clipMin: m, clipMax: M) }
        let (clipMax, clipMin) = a.resolveClipRange(batch: Tensor(shape: [0]))
        return QuantizationGrid(bits: a.numBits, clipMax: clipMax, clipMin: clipMin, roundMode: a.roundMode, narrowRange: a.narrowRange)
    }

    /// True when the layer runs as an integer node on the engine: 8-bit input and weights
    /// (a weight-only layer has no input grid: it runs in float).
    public var isInteger: Bool { quantizesInput && activation.numBits == 8 && weight.numBits == 8 }

    /// The weight's row scales exactly as the fake-quant forward uses them (ARQ, or LSQ's learned
    /// scales where they are valid).
    public func weightRowScales(_ w: Tensor) -> [Float] {
        var scales = weight.arqRowScales(w)
        if weight.algorithm == .lsq, let learned = weight.learnedScales, weight.initialized {
            for r in 0..<weight.rowCount {
                let s = learned.value.storage[r]
                if s.isFinite && s >= quantizationEpsilon { scales[r] = s }
            }
        }
        return scales
    }
}

extension Model {
    /// For each integer layer whose bias terms are deployable, the value its bias is added to on
    /// the engine (its own output, or the folded BN's) and, per channel, the float32 correction
    /// b_q·s_d·s_w' − b' that puts the eval output's bias on the accumulator grid.
    /// Layers whose terms the deployer would refuse (uncalibrated, non-finite) get none.
    /// `exactBiases`: layers with a bias, no folded BN and power-of-two units s_d·s_w (scale_type
    /// poweroftwo) add b_q·s_d·s_w as their bias instead (no correction): every product and sum
    /// of their eval forward is then exact up to 2²⁴ units, so the output sits exactly where the
    /// engine's accumulator does, ties included (docs/ALGORITHMS.md §5.1), rather than one float
    /// rounding of b' away.
    func accumulatorGridCorrections() -> (corrections: [Int: Tensor], exactBiases: [Int: Tensor]) {
        var corrections: [Int: Tensor] = [:]
        var exactBiases: [Int: Tensor] = [:]
        for (i, layer) in layers.enumerated() {
            guard let weighted = layer as? WeightedLayer, let quantizer = weighted.quantizer as? FakeQuantizer,
                  quantizer.isInteger, let grid = try? quantizer.inputGrid() else { continue }
            let w = weighted.weight.value
            let channels = w.shape[0]
            let perChannel = w.count / channels
            let bias = weighted.quantizedBiasValue?.storage ?? [Float](repeating: 0, count: channels)
            var k = [Double](repeating: 1, count: channels)
            var shift = bias.map(Double.init)
            var value = i
            if let b = graph.batchNormFolds[i], let bn = layers[b] as? BatchNorm2DLayer {
                (k, shift) = bn.foldingTerms(bias: bias)
                value = b
            }
            let rowScales = quantizer.weightRowScales(w)
            let limit = AccumulatorChannel.biasLimit(productsPerOutput: perChannel)
            var delta = [Float](repeating: 0, count: channels)
            var gridBias = [Float](repeating: 0, count: channels)
            var powersOfTwo = value == i && weighted.bias != nil
            var usable = limit > 0
            for c in 0..<channels where usable {
                guard k[c].isFinite, shift[c].isFinite else { usable = false; break }
                let sw = Double(rowScales.count == 1 ? rowScales[0] : rowScales[c])
                let channel = AccumulatorChannel(weightScale: sw, k: k[c], shift: shift[c], inputScale: Double(grid.scale), biasLimit: limit)
                guard channel.isDeployable(biasLimit: limit) else { usable = false; break }
                delta[c] = Float(channel.biasUnits * channel.unit - shift[c])
                gridBias[c] = Float(channel.biasUnits * channel.unit)
                powersOfTwo = powersOfTwo && QuantizationGrid.isPowerOfTwo(Float(channel.unit)) && Double(Float(channel.unit)) == channel.unit
            }
            guard usable else { continue }
            if powersOfTwo {
                exactBiases[i] = Tensor(shape: [channels], storage: gridBias)
                continue
            }
            let rank = graph.shape(of: value).count + 1
            corrections[value] = Tensor(shape: [1, channels] + [Int](repeating: 1, count: rank - 2), storage: delta)
        }
        return (corrections, exactBiases)
    }
}
