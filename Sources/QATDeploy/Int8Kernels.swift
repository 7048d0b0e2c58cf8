import CInt8
import Foundation
import QATCore
import QATData
import QATIO
import QATModel
import QATTrain

/// The integer kernels of the INT8 engine (docs/ALGORITHMS.md §5), over plain Swift arrays.
///
/// Every kernel runs on one of three code paths, AVX-512 VNNI, AVX2 or portable C, which give
/// bit-identical results; only speed differs. `activePath` starts as the best path this CPU
/// supports, or the one named by the environment variable `QAT_INT8_KERNEL`
/// (`portable`, `avx2`, `vnni`). Each kernel also takes an explicit `path:` for tests.
///
/// Images are NCHW, matrices row-major `[rows][features]`. Codes are int8 on an 8-bit
/// `QuantizationGrid`: the real value of code q is `scale · (q − zeroPoint)`.
public enum Int8Kernels {
    public enum Path: String, CaseIterable, Sendable {
        case portable, avx2, vnni

        var c: qat_i8_path {
            switch self {
            case .portable: return QAT_I8_PORTABLE
            case .avx2: return QAT_I8_AVX2
            case .vnni: return QAT_I8_VNNI
            }
        }
    }

    /// The requantization multipliers of one layer (not a grid: the output grid contributes
    /// only its zero point). Turns int32 accumulators into the next layer's codes:
    /// `q = clamp((Float(acc) * multipliers[c] + offsets[c]).rounded(.toNearestOrEven) + zeroPoint, lo, upperBound)`
    /// with `lo = zeroPoint` when a ReLU is fused (saturation), −128 otherwise. The product and
    /// the sum are each rounded to Float; without `offsets` nothing is added.
    /// When every multiplier is exactly 2^−k (0 ≤ k ≤ 30) and no offset is set, as in a model with
    /// power-of-two scales, the kernels requantize by a rounding right shift of the accumulator
    /// instead (`shifts`; docs/ALGORITHMS.md §5.1), in integers only.
    public struct Requantization: Equatable, Sendable {
        /// Per output channel: s_d · s_w[c] / s_y.
        public var multipliers: [Float]
        public var zeroPoint: Int8
        public var relu: Bool
        /// Per output channel, in output codes: the bias residual the int32 b_q cannot hold
        /// (`DeployNode.biasResidual` · multiplier), or nil.
        public var offsets: [Float]?
        /// The largest code written: 127, or the code of 6.0 when a ReLU6 is fused (saturation).
        public var upperBound: Int8
        /// Per output channel, k with multipliers[c] = 2^−k, when the layer requantizes by shifts; else nil.
        public var shifts: [Int32]?
        /// The tie rule of the output grid (its `QuantizationGrid.roundMode`).
        public var roundMode: RoundMode
        /// The output grid's lowest code: −128, or −127 with a narrow range.
        public var lowestCode: Int8
        /// `byShift: false` keeps the float multiply even for power-of-two multipliers (the
        /// reference the shift path is tested against).
        public init(multipliers: [Float], zeroPoint: Int8, relu: Bool, offsets: [Float]? = nil, upperBound: Int8 = 127,
                    roundMode: RoundMode = .halfEven, lowestCode: Int8 = -128, byShift: Bool = true) {
            self.roundMode = roundMode
            self.lowestCode = lowestCode
            precondition(offsets == nil || offsets!.count == multipliers.count, "Requantization: \(offsets!.count) offsets for \(multipliers.count) multipliers")
            shifts = byShift ? Self.shifts(of: multipliers, offsets: offsets) : nil
            self.multipliers = multipliers
            self.zeroPoint = zeroPoint
            self.relu = relu
            self.offsets = offsets
            self.upperBound = upperBound
            precondition(Int32(upperBound) >= lowerBound, "Requantization: upper bound \(upperBound) below the lower bound \(lowerBound)")
        }
        var lowerBound: Int32 { relu ? Int32(zeroPoint) : Int32(lowestCode) }

        /// True when the kernels requantize this layer by integer shifts.
        public var isByShift: Bool { shifts != nil }

        /// k per channel when every multiplier is 2^−k with 0 ≤ k ≤ 30 and every offset is 0; else nil.
        public static func shifts(of multipliers: [Float], offsets: [Float]?) -> [Int32]? {
            guard !multipliers.isEmpty, offsets?.allSatisfy({ $0 == 0 }) ?? true else { return nil }
            var shifts: [Int32] = []
            for m in multipliers {
                guard QuantizationGrid.isPowerOfTwo(m), (-30...0).contains(m.exponent) else { return nil }
                shifts.append(Int32(-m.exponent))
            }
            return shifts
        }
    }

    public static func isSupported(_ path: Path) -> Bool { qat_i8_cpu_supports(path.c) != 0 }

    /// Whether the VNNI path may use its AVX-512 VBMI depthwise kernel on CPUs that have VBMI
    /// (same results as without; tests switch it off to compare).
    static func allowVBMI(_ allowed: Bool) { qat_i8_allow_vbmi(allowed ? 1 : 0) }

    /// Whether that VBMI kernel may run small output planes as one flat run of outputs, 16 per
    /// vector across row ends (same results as the row kernel; tests switch it off to compare).
    static func allowFlatDepthwise(_ allowed: Bool) { qat_i8_allow_flat_depthwise(allowed ? 1 : 0) }
    /// Whether that kernel copies its padded input planes up to 64 bytes wide several rows per
    /// vector (the same planes as row by row; tests switch it off to compare).
    static func allowPackedPlaneCopy(_ allowed: Bool) { qat_i8_allow_packed_plane_copy(allowed ? 1 : 0) }
    /// Whether the AVX2 depthwise conv reads kernels up to 4 wide (column stride 1 or 2) straight
    /// from the padded plane instead of building rows (same results; tests switch it off to compare).
    static func allowDirectDepthwiseAVX2(_ allowed: Bool) { qat_i8_allow_direct_depthwise_avx2(allowed ? 1 : 0) }
    /// Whether that direct kernel reads the padded plane widened to int16 (once per input channel)
    /// and writes codes, floats and int32 from registers (same results; tests switch it off to compare).
    static func allowWidenedDepthwiseAVX2(_ allowed: Bool) { qat_i8_allow_widened_depthwise_avx2(allowed ? 1 : 0) }
    /// Whether the AVX2 depthwise conv runs channels last inside the kernel (16 channels of a pixel
    /// per vector, NCHW at both edges) where channels are a multiple of 16 (same results; tests
    /// switch it off to compare).
    static func allowChannelsLastDepthwiseAVX2(_ allowed: Bool) { qat_i8_allow_channels_last_depthwise_avx2(allowed ? 1 : 0) }

    /// Whether the AVX2 GEMM runs its pair kernel (16-column tiles, vector epilogue, ReLU as it
    /// stores) rather than its first one (same results; tests switch it off to compare).
    static func allowAVX2PairTiles(_ allowed: Bool) { qat_i8_allow_avx2_pair_tiles(allowed ? 1 : 0) }
    static func allowAVX2PairEpilogues(_ allowed: Bool) { qat_i8_allow_avx2_pair_epilogues(allowed ? 1 : 0) }

    /// Whether the VNNI GEMM runs layers whose output channels are a multiple of 8 in 8-row tiles
    /// (same results as its 6-row tiles; tests switch it off to compare).
    static func allowEightRowTiles(_ allowed: Bool) { qat_i8_allow_eight_row_tiles(allowed ? 1 : 0) }
    /// Whether the VNNI path may read stride-1 convs on wide planes by per-tap offsets (an implicit
    /// GEMM, no im2col; same results). On by default; tests switch it off to compare.
    static func allowImplicitGEMM(_ allowed: Bool) { qat_i8_allow_implicit_gemm(allowed ? 1 : 0) }
    /// Whether the VNNI path may run convs on planes of at most 8 outputs with k ≥ 256 with the
    /// images as the GEMM's columns (no column matrix; same results). On by default; tests switch it off to compare.
    static func allowImageColumns(_ allowed: Bool) { qat_i8_allow_image_columns(allowed ? 1 : 0) }
    /// Whether the VNNI path stores convs on planes of a multiple of 16 outputs, run several images
    /// per GEMM, straight to each image's place (no staging copy; same results). On by default; tests switch it off to compare.
    static func allowPlacedStores(_ allowed: Bool) { qat_i8_allow_placed_stores(allowed ? 1 : 0) }
    /// Whether the AVX2 path runs 3×3 convs with stride 1 (where measured faster: winograd_avx2.c)
    /// as Winograd F(2×2, 3×3) in exact integers (same results as im2col + GEMM). On by default;
    /// tests switch it off to compare.
    static func allowWinograd(_ allowed: Bool) { qat_i8_allow_winograd(allowed ? 1 : 0) }
    /// Whether the AVX2 path takes the sums of 3×3 convs of one input channel with stride 1 (a
    /// stem on grey images) straight from the padded image instead of im2col + GEMM (same results).
    /// On by default; tests switch it off to compare.
    static func allowOneChannel(_ allowed: Bool) { qat_i8_allow_one_channel(allowed ? 1 : 0) }

    /// Whether a conv with float output fused with a max pool may pool its int32 accumulators
    /// and dequantize only the pooled ones (VNNI path, when every scale is above 0: the same
    /// floats; tests switch it off to compare).
    static func poolAccumulators(_ allowed: Bool) { qat_i8_allow_pool_accumulators(allowed ? 1 : 0) }

    /// Whether the AVX2 and VNNI paths pool floats several windows at a time (same results as
    /// the loop they ran before; tests switch it off to compare).
    static func vectoriseFloatMaxPool(_ enabled: Bool) { qat_i8_vectorise_maxpool_float(enabled ? 1 : 0) }
    /// Whether the AVX2 and VNNI paths run HardSwish on explicit vectors (the same bits as the
    /// loop they ran before; tests switch it off to compare).
    static func vectoriseHardSwish(_ enabled: Bool) { qat_i8_vectorise_hard_swish(enabled ? 1 : 0) }
    /// Whether the AVX2 path quantizes with ties to even by a product with 1/scale instead of a
    /// division (the same codes: near ties are redone by division; tests switch it off to compare).
    static func allowReciprocalQuantize(_ allowed: Bool) { qat_i8_allow_reciprocal_quantize(allowed ? 1 : 0) }

    /// The fastest path this CPU supports.
    public static var bestSupportedPath: Path {
        isSupported(.vnni) ? .vnni : isSupported(.avx2) ? .avx2 : .portable
    }

    /// The path kernels use when none is passed. Setting an unsupported path is a programmer error.
    public static var activePath: Path {
        get { chosenPath }
        set {
            precondition(isSupported(newValue), "Int8Kernels: this CPU cannot run the \(newValue) path")
            chosenPath = newValue
        }
    }

    nonisolated(unsafe) private static var chosenPath: Path = initialPath()

    private static func initialPath() -> Path {
        let best = bestSupportedPath
        guard let request = ProcessInfo.processInfo.environment["QAT_INT8_KERNEL"], !request.isEmpty else {
            return best
        }
        guard let path = Path(rawValue: request.lowercased()) else {
            warn("QAT_INT8_KERNEL=\(request) is not one of portable, avx2, vnni; using \(best)")
            return best
        }
        guard isSupported(path) else {
            warn("QAT_INT8_KERNEL=\(request) but this CPU lacks it; using \(best)")
            return best
        }
        return path
    }

    private static func warn(_ message: String) {
        FileHandle.standardError.write(Data("qat: \(message)\n".utf8))
    }

    // MARK: Convolution and linear (int8 GEMM with int32 accumulation)

    /// Convolution on codes, NCHW in and out, requantized into the next layer's codes.
    /// x: [N, C, H, W] codes with zero point `inputZeroPoint`; weights: [O, C, K, K] (w_q);
    /// bias: [O] (b_q) → [N, O, Ho, Wo]. Padding is the code `inputZeroPoint` (real zero).
    public static func conv2d(_ x: [Int8], _ g: ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                              bias: [Int32], requantize r: Requantization, cache: Int8ConvCache? = nil, path: Path = activePath) -> [Int8] {
        precondition(r.multipliers.count == g.outputChannels, "conv2d: \(r.multipliers.count) multipliers for \(g.outputChannels) channels")
        return conv(x, g, inputZeroPoint, weights, bias, path, cache: cache, kind: QAT_I8_OUT_INT8, scales: r.multipliers,
                    offsets: r.offsets, zeroPoint: Int32(r.zeroPoint), lo: r.lowerBound, hi: Int32(r.upperBound), shifts: r.shifts, roundMode: r.roundMode)
    }

    /// `conv2d` followed by a max pool (window `poolKernel`, stride `poolStride`, no padding) on
    /// each output plane; the same codes as the two kernels in turn, but each image's conv output
    /// is pooled while it is still in cache. → [N, O, (Ho − k)/s + 1, (Wo − k)/s + 1].
    public static func conv2dMaxPool(_ x: [Int8], _ g: ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                     bias: [Int32], requantize r: Requantization, poolKernel: Int, poolStride: Int,
                                     cache: Int8ConvCache? = nil, path: Path = activePath) -> [Int8] {
        precondition(r.multipliers.count == g.outputChannels, "conv2d: \(r.multipliers.count) multipliers for \(g.outputChannels) channels")
        precondition(poolKernel > 0 && poolStride > 0 && poolKernel <= g.outputHeight && poolKernel <= g.outputWidth,
                     "conv2dMaxPool: bad window \(poolKernel)/\(poolStride)")
        checkConv(x, g, weights, bias)
        let count = g.batch * g.outputChannels * ((g.outputHeight - poolKernel) / poolStride + 1)
            * ((g.outputWidth - poolKernel) / poolStride + 1)
        return withOutput(QAT_I8_OUT_INT8, r.multipliers, r.offsets, Int32(r.zeroPoint), r.lowerBound, Int32(r.upperBound), r.shifts, r.roundMode) { output in
            makeArray(count) { (out: UnsafeMutablePointer<Int8>) in
                qat_i8_conv2d_maxpool(path.c, x, Int32(g.batch), Int32(g.channels), Int32(g.height), Int32(g.width), inputZeroPoint,
                                      weights, bias, cache?.pointer, Int32(g.outputChannels), Int32(g.kernel), Int32(g.stride), Int32(g.padding),
                                      output, Int32(poolKernel), Int32(poolStride), out)
            }
        }
    }

    /// The same convolution, returning the raw accumulators Σ (q_x − o_d)·w_q + b_q.
    public static func conv2dAccumulators(_ x: [Int8], _ g: ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                          bias: [Int32], cache: Int8ConvCache? = nil, path: Path = activePath) -> [Int32] {
        conv(x, g, inputZeroPoint, weights, bias, path, cache: cache, kind: QAT_I8_OUT_INT32, scales: [], offsets: nil, zeroPoint: 0, lo: 0, hi: 0)
    }

    /// The same convolution, dequantized: `Float(acc) * scales[c] (+ offsets[c])` with
    /// scales[c] = s_d · s_w[c].
    public static func conv2dDequantized(_ x: [Int8], _ g: ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                         bias: [Int32], scales: [Float], offsets: [Float]? = nil, cache: Int8ConvCache? = nil, path: Path = activePath) -> [Float] {
        precondition(scales.count == g.outputChannels, "conv2d: \(scales.count) scales for \(g.outputChannels) channels")
        precondition(offsets == nil || offsets!.count == g.outputChannels, "conv2d: offsets for \(g.outputChannels) channels")
        return conv(x, g, inputZeroPoint, weights, bias, path, cache: cache, kind: QAT_I8_OUT_FLOAT, scales: scales, offsets: offsets, zeroPoint: 0, lo: 0, hi: 0)
    }

    /// Fully connected layer on codes: x: [N, I], weights: [O, I], bias: [O] → [N, O] codes.
    public static func linear(_ x: [Int8], batch: Int, inputZeroPoint: Int8, weights: [Int8], bias: [Int32],
                              requantize r: Requantization, path: Path = activePath) -> [Int8] {
        precondition(r.multipliers.count == bias.count, "linear: \(r.multipliers.count) multipliers for \(bias.count) outputs")
        return dense(x, batch, inputZeroPoint, weights, bias, path, kind: QAT_I8_OUT_INT8, scales: r.multipliers,
                     offsets: r.offsets, zeroPoint: Int32(r.zeroPoint), lo: r.lowerBound, hi: Int32(r.upperBound), shifts: r.shifts, roundMode: r.roundMode)
    }

    /// The same layer, returning the raw accumulators.
    public static func linearAccumulators(_ x: [Int8], batch: Int, inputZeroPoint: Int8, weights: [Int8],
                                          bias: [Int32], path: Path = activePath) -> [Int32] {
        dense(x, batch, inputZeroPoint, weights, bias, path, kind: QAT_I8_OUT_INT32, scales: [], offsets: nil, zeroPoint: 0, lo: 0, hi: 0)
    }

    /// The same layer, dequantized with scales[o] = s_d · s_w[o] (+ offsets[o]) (for example the logits).
    public static func linearDequantized(_ x: [Int8], batch: Int, inputZeroPoint: Int8, weights: [Int8],
                                         bias: [Int32], scales: [Float], offsets: [Float]? = nil, path: Path = activePath) -> [Float] {
        precondition(scales.count == bias.count, "linear: \(scales.count) scales for \(bias.count) outputs")
        precondition(offsets == nil || offsets!.count == bias.count, "linear: offsets for \(bias.count) outputs")
        return dense(x, batch, inputZeroPoint, weights, bias, path, kind: QAT_I8_OUT_FLOAT, scales: scales, offsets: offsets, zeroPoint: 0, lo: 0, hi: 0)
    }

    // MARK: General convolution (rectangular kernel, stride, dilation, asymmetric padding, groups)

    /// How a general convolution runs. `automatic` picks the direct depthwise kernel when
    /// `Int8ConvGeometry.isDepthwise`, else im2col + GEMM per group; the others force one (tests
    /// compare them). Every choice gives the same results.
    enum ConvAlgorithm { case automatic, im2colGEMM, depthwiseDirect }

    /// Convolution on codes, NCHW in and out, requantized into the next layer's codes, for any
    /// geometry the float conv accepts. x: [N, C, H, W] codes with zero point `inputZeroPoint`;
    /// weights: [O, C/groups, KH, KW] (w_q); bias: [O] (b_q) → [N, O, Ho, Wo]. Padding is the
    /// code `inputZeroPoint` (real zero). Depthwise geometries run a direct kernel.
    public static func conv2d(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                              bias: [Int32], requantize r: Requantization, cache: Int8ConvCache? = nil, path: Path = activePath) -> [Int8] {
        conv2d(x, g, inputZeroPoint: inputZeroPoint, weights: weights, bias: bias, requantize: r, cache: cache, path: path, algorithm: .automatic)
    }

    static func conv2d(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8], bias: [Int32],
                       requantize r: Requantization, cache: Int8ConvCache? = nil, path: Path, algorithm: ConvAlgorithm) -> [Int8] {
        precondition(r.multipliers.count == g.outputChannels, "conv2d: \(r.multipliers.count) multipliers for \(g.outputChannels) channels")
        return generalConv(x, g, inputZeroPoint, weights, bias, path, algorithm, cache: cache, kind: QAT_I8_OUT_INT8, scales: r.multipliers,
                           offsets: r.offsets, zeroPoint: Int32(r.zeroPoint), lo: r.lowerBound, hi: Int32(r.upperBound), shifts: r.shifts, roundMode: r.roundMode)
    }

    /// `conv2d` then a max pool (window `poolKernel`, stride `poolStride`, no padding) on each
    /// output plane, as one kernel. → [N, O, (Ho − k)/s + 1, (Wo − k)/s + 1].
    public static func conv2dMaxPool(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                     bias: [Int32], requantize r: Requantization, poolKernel: Int, poolStride: Int,
                                     cache: Int8ConvCache? = nil, path: Path = activePath) -> [Int8] {
        conv2dMaxPool(x, g, inputZeroPoint: inputZeroPoint, weights: weights, bias: bias, requantize: r,
                      poolKernel: poolKernel, poolStride: poolStride, cache: cache, path: path, algorithm: .automatic)
    }

    static func conv2dMaxPool(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8], bias: [Int32],
                              requantize r: Requantization, poolKernel: Int, poolStride: Int, cache: Int8ConvCache? = nil, path: Path,
                              algorithm: ConvAlgorithm) -> [Int8] {
        precondition(poolKernel > 0 && poolStride > 0 && poolKernel <= g.outputHeight && poolKernel <= g.outputWidth,
                     "conv2dMaxPool: bad window \(poolKernel)/\(poolStride)")
        return conv2dMaxPool(x, g, inputZeroPoint: inputZeroPoint, weights: weights, bias: bias, requantize: r,
                             pool: Int8PoolGeometry(height: g.outputHeight, width: g.outputWidth, kernel: poolKernel, stride: poolStride),
                             cache: cache, path: path, algorithm: algorithm)
    }

    /// `conv2d` then a max pool of any geometry (`pool`, whose input size is the conv's output
    /// size) on each output plane, as one kernel. → [N, O, pool.outputHeight, pool.outputWidth].
    public static func conv2dMaxPool(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                     bias: [Int32], requantize r: Requantization, pool: Int8PoolGeometry,
                                     cache: Int8ConvCache? = nil, path: Path = activePath) -> [Int8] {
        conv2dMaxPool(x, g, inputZeroPoint: inputZeroPoint, weights: weights, bias: bias, requantize: r, pool: pool,
                      cache: cache, path: path, algorithm: .automatic)
    }

    static func conv2dMaxPool(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8], bias: [Int32],
                              requantize r: Requantization, pool: Int8PoolGeometry, cache: Int8ConvCache? = nil, path: Path,
                              algorithm: ConvAlgorithm) -> [Int8] {
        precondition(r.multipliers.count == g.outputChannels, "conv2d: \(r.multipliers.count) multipliers for \(g.outputChannels) channels")
        precondition(pool.isValid && pool.height == g.outputHeight && pool.width == g.outputWidth,
                     "conv2dMaxPool: pool \(pool) does not fit the conv output \(g.outputHeight)×\(g.outputWidth)")
        return generalConv(x, g, inputZeroPoint, weights, bias, path, algorithm, cache: cache, kind: QAT_I8_OUT_INT8, scales: r.multipliers,
                           offsets: r.offsets, zeroPoint: Int32(r.zeroPoint), lo: r.lowerBound, hi: Int32(r.upperBound), shifts: r.shifts, roundMode: r.roundMode,
                           pool: pool, count: g.batch * g.outputChannels * pool.outputHeight * pool.outputWidth)
    }

    /// The same convolution, returning the raw accumulators Σ (q_x − o_d)·w_q + b_q.
    public static func conv2dAccumulators(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                          bias: [Int32], cache: Int8ConvCache? = nil, path: Path = activePath) -> [Int32] {
        conv2dAccumulators(x, g, inputZeroPoint: inputZeroPoint, weights: weights, bias: bias, cache: cache, path: path, algorithm: .automatic)
    }

    static func conv2dAccumulators(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                   bias: [Int32], cache: Int8ConvCache? = nil, path: Path, algorithm: ConvAlgorithm) -> [Int32] {
        generalConv(x, g, inputZeroPoint, weights, bias, path, algorithm, cache: cache, kind: QAT_I8_OUT_INT32, scales: [], offsets: nil,
                    zeroPoint: 0, lo: 0, hi: 0)
    }

    /// The same convolution, dequantized: `Float(acc) * scales[c] (+ offsets[c])`.
    public static func conv2dDequantized(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                         bias: [Int32], scales: [Float], offsets: [Float]? = nil,
                                         cache: Int8ConvCache? = nil, path: Path = activePath) -> [Float] {
        conv2dDequantized(x, g, inputZeroPoint: inputZeroPoint, weights: weights, bias: bias, scales: scales, offsets: offsets,
                          cache: cache, path: path, algorithm: .automatic)
    }

    static func conv2dDequantized(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8], bias: [Int32],
                                  scales: [Float], offsets: [Float]?, cache: Int8ConvCache? = nil, path: Path, algorithm: ConvAlgorithm) -> [Float] {
        precondition(scales.count == g.outputChannels, "conv2d: \(scales.count) scales for \(g.outputChannels) channels")
        precondition(offsets == nil || offsets!.count == g.outputChannels, "conv2d: offsets for \(g.outputChannels) channels")
        return generalConv(x, g, inputZeroPoint, weights, bias, path, algorithm, cache: cache, kind: QAT_I8_OUT_FLOAT, scales: scales,
                           offsets: offsets, zeroPoint: 0, lo: 0, hi: 0)
    }

    // MARK: Element-wise kernels

    /// Requantizes accumulators laid out [N, channels, planeSize] (planeSize 1 for a matrix).
    public static func requantize(_ acc: [Int32], channels: Int, planeSize: Int, _ r: Requantization,
                                  path: Path = activePath) -> [Int8] {
        precondition(channels > 0 && planeSize > 0 && acc.count % (channels * planeSize) == 0,
                     "requantize: \(acc.count) values do not split into [N, \(channels), \(planeSize)]")
        precondition(r.multipliers.count == channels, "requantize: \(r.multipliers.count) multipliers for \(channels) channels")
        return makeArray(acc.count) { out in
            func run(_ shifts: UnsafePointer<Int32>?) {
                qat_i8_requantize(path.c, acc, acc.count / (channels * planeSize), channels, planeSize,
                                  r.multipliers, shifts, Int32(r.zeroPoint), r.lowerBound, Int32(r.upperBound), r.roundMode.c, out)
            }
            guard let shifts = r.shifts else { return run(nil) }
            shifts.withUnsafeBufferPointer { run($0.baseAddress) }
        }
    }

    /// Max pool on codes over `planes` planes of height×width (NCHW: planes = N·C), no padding.
    public static func maxPool2d(_ x: [Int8], planes: Int, height: Int, width: Int, kernel: Int, stride: Int,
                                 path: Path = activePath) -> [Int8] {
        precondition(x.count == planes * height * width, "maxPool2d: \(x.count) codes for \(planes)×\(height)×\(width)")
        precondition(kernel > 0 && stride > 0 && kernel <= height && kernel <= width, "maxPool2d: bad window \(kernel)/\(stride)")
        let count = planes * ((height - kernel) / stride + 1) * ((width - kernel) / stride + 1)
        return makeArray(count) { out in qat_i8_maxpool(path.c, x, out, planes, height, width, kernel, stride) }
    }

    /// Max pool on codes with any window, stride, padding and ceil mode (`pool`), over `planes`
    /// planes of pool.height×pool.width. Padding never wins (max commutes with the monotone
    /// dequantize); a window holding no input pixel gives −128, the code of the float pool's −∞.
    public static func maxPool2d(_ x: [Int8], planes: Int, pool: Int8PoolGeometry, path: Path = activePath) -> [Int8] {
        precondition(pool.isValid, "maxPool2d: bad geometry \(pool)")
        precondition(x.count == planes * pool.height * pool.width, "maxPool2d: \(x.count) codes for \(planes)×\(pool.height)×\(pool.width)")
        var geometry = pool.c
        return makeArray(planes * pool.outputHeight * pool.outputWidth) { out in qat_i8_maxpool_padded(path.c, x, out, planes, &geometry) }
    }

    /// Residual add on codes: q = clamp(round((s_a(q_a − o_a) + s_b(q_b − o_b)) / s_y) + o_y, lo, upperBound),
    /// each product, the sum and the quotient rounded to Float, round with the tie rule of `qy`.
    public static func add(_ a: [Int8], _ qa: QuantizationGrid, _ b: [Int8], _ qb: QuantizationGrid, output qy: QuantizationGrid,
                           relu: Bool, upperBound: Int8 = 127, path: Path = activePath) -> [Int8] {
        precondition(a.count == b.count, "add: \(a.count) and \(b.count) codes")
        return makeArray(a.count) { out in
            qat_i8_add(path.c, a, qa.scale, Int32(qa.zeroPoint), b, qb.scale, Int32(qb.zeroPoint),
                       qy.scale, Int32(qy.zeroPoint), relu ? Int32(qy.zeroPoint) : Int32(qy.qmin), Int32(upperBound), qy.roundMode.c,
                       out, a.count)
        }
    }

    /// q = clamp(round(x / scale) + zeroPoint, −128, 127), round with the grid's tie rule; NaN → zeroPoint.
    /// The vectorised C form of `QuantizationGrid.quantize`, which it equals code for code.
    public static func quantize(_ x: [Float], _ q: QuantizationGrid, path: Path = activePath) -> [Int8] {
        makeArray(x.count) { out in qat_i8_quantize(path.c, x, q.scale, Int32(q.zeroPoint), Int32(q.qmin), q.roundMode.c, out, x.count) }
    }

    /// x = scale · (q − zeroPoint).
    public static func dequantize(_ codes: [Int8], _ q: QuantizationGrid, path: Path = activePath) -> [Float] {
        makeArray(codes.count) { out in qat_i8_dequantize(path.c, codes, q.scale, Int32(q.zeroPoint), out, codes.count) }
    }

    // MARK: Plumbing

    static func makeArray<T>(_ count: Int, _ fill: (UnsafeMutablePointer<T>) -> Void) -> [T] {
        [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { fill(buffer.baseAddress!) }
            initialized = count
        }
    }

    /// No int32 partial sum may overflow, in any path and any order of additions (int8_internal.h):
    /// |b_q| + 2·255·128·K < 2^31.
    static func checkAccumulatorRange(_ bias: [Int32], patch: Int, _ op: String) {
        let largestBias = bias.lazy.map { Int64($0).magnitude }.max() ?? 0
        precondition(Int64(largestBias) + 2 * 255 * 128 * Int64(patch) < Int64(Int32.max),
                     "\(op): patch size \(patch) with bias up to \(largestBias) could overflow int32")
    }

    /// The C output description, valid inside `body`.
    static func withOutput<R>(_ kind: qat_i8_out_kind, _ scales: [Float], _ offsets: [Float]?, _ zeroPoint: Int32,
                                      _ lo: Int32, _ hi: Int32, _ shifts: [Int32]? = nil, _ roundMode: RoundMode = .halfEven,
                                      _ body: (qat_i8_output) -> R) -> R {
        scales.withUnsafeBufferPointer { s in
            func run(_ o: UnsafePointer<Float>?, _ k: UnsafePointer<Int32>?) -> R {
                body(qat_i8_output(kind: kind, scale: s.baseAddress, offset: o, zero_point: zeroPoint, lo: lo, hi: hi, shift: k,
                                   round_mode: roundMode.c))
            }
            func withShifts(_ o: UnsafePointer<Float>?) -> R {
                guard let shifts else { return run(o, nil) }
                return shifts.withUnsafeBufferPointer { run(o, $0.baseAddress) }
            }
            guard let offsets else { return withShifts(nil) }
            return offsets.withUnsafeBufferPointer { withShifts($0.baseAddress) }
        }
    }

    private static func conv<T>(_ x: [Int8], _ g: ConvGeometry, _ zero: Int8, _ weights: [Int8], _ bias: [Int32],
                                _ path: Path, cache: Int8ConvCache?, kind: qat_i8_out_kind, scales: [Float], offsets: [Float]?,
                                zeroPoint: Int32, lo: Int32, hi: Int32, shifts: [Int32]? = nil, roundMode: RoundMode = .halfEven) -> [T] {
        checkConv(x, g, weights, bias)
        let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
        return withOutput(kind, scales, offsets, zeroPoint, lo, hi, shifts, roundMode) { output in
            makeArray(count) { (out: UnsafeMutablePointer<T>) in
                qat_i8_conv2d(path.c, x, Int32(g.batch), Int32(g.channels), Int32(g.height), Int32(g.width), zero,
                              weights, bias, cache?.pointer, Int32(g.outputChannels), Int32(g.kernel), Int32(g.stride),
                              Int32(g.padding), output, out)
            }
        }
    }

    private static func checkConv(_ x: [Int8], _ g: ConvGeometry, _ weights: [Int8], _ bias: [Int32]) {
        precondition(x.count == g.batch * g.channels * g.height * g.width, "conv2d: input has \(x.count) codes, geometry wants \(g)")
        precondition(weights.count == g.outputChannels * g.patchSize, "conv2d: \(weights.count) weights for \(g)")
        precondition(bias.count == g.outputChannels, "conv2d: \(bias.count) biases for \(g.outputChannels) channels")
        precondition(g.kernel > 0 && g.stride > 0 && g.padding >= 0 && g.outputHeight > 0 && g.outputWidth > 0,
                     "conv2d: bad geometry \(g)")
        checkAccumulatorRange(bias, patch: g.patchSize, "conv2d")
    }

    private static func generalConv<T>(_ x: [Int8], _ g: Int8ConvGeometry, _ zero: Int8, _ weights: [Int8], _ bias: [Int32],
                                       _ path: Path, _ algorithm: ConvAlgorithm, cache: Int8ConvCache?, kind: qat_i8_out_kind, scales: [Float],
                                       offsets: [Float]?, zeroPoint: Int32, lo: Int32, hi: Int32, shifts: [Int32]? = nil, roundMode: RoundMode = .halfEven,
                                       pool: Int8PoolGeometry? = nil, count: Int? = nil) -> [T] {
        precondition(g.isValid, "conv2d: bad geometry \(g)")
        precondition(x.count == g.batch * g.channels * g.height * g.width, "conv2d: input has \(x.count) codes, geometry wants \(g)")
        precondition(weights.count == g.outputChannels * g.patchSize, "conv2d: \(weights.count) weights for \(g)")
        precondition(bias.count == g.outputChannels, "conv2d: \(bias.count) biases for \(g.outputChannels) channels")
        checkAccumulatorRange(bias, patch: g.patchSize, "conv2d")
        let direct: Bool
        switch algorithm {
        case .automatic: direct = g.isDepthwise
        case .im2colGEMM: direct = false
        case .depthwiseDirect:
            precondition(g.groups == g.channels, "conv2d: the depthwise kernel needs groups == channels, not \(g)")
            direct = true
        }
        var geometry = g.c
        let count = count ?? g.batch * g.outputChannels * g.outputHeight * g.outputWidth
        return withOutput(kind, scales, offsets, zeroPoint, lo, hi, shifts, roundMode) { output in
            makeArray(count) { (out: UnsafeMutablePointer<T>) in
                withPoolPointer(pool) { poolGeometry in
                    if direct {
                        qat_i8_conv2d_depthwise(path.c, x, zero, &geometry, weights, bias, output, poolGeometry, out)
                    } else {
                        qat_i8_conv2d_grouped(path.c, x, zero, &geometry, weights, bias, cache?.pointer, output, poolGeometry, out)
                    }
                }
            }
        }
    }

    private static func withPoolPointer<R>(_ pool: Int8PoolGeometry?, _ body: (UnsafePointer<qat_i8_pool_geometry>?) -> R) -> R {
        guard let pool else { return body(nil) }
        return withUnsafePointer(to: pool.c) { body($0) }
    }

    private static func dense<T>(_ x: [Int8], _ batch: Int, _ zero: Int8, _ weights: [Int8], _ bias: [Int32],
                                 _ path: Path, kind: qat_i8_out_kind, scales: [Float], offsets: [Float]?,
                                 zeroPoint: Int32, lo: Int32, hi: Int32, shifts: [Int32]? = nil, roundMode: RoundMode = .halfEven) -> [T] {
        let outputs = bias.count
        precondition(batch > 0 && outputs > 0 && x.count % batch == 0, "linear: \(x.count) codes for batch \(batch)")
        let inputs = x.count / batch
        precondition(weights.count == outputs * inputs, "linear: \(weights.count) weights for \(outputs)×\(inputs)")
        checkAccumulatorRange(bias, patch: inputs, "linear")
        return withOutput(kind, scales, offsets, zeroPoint, lo, hi, shifts, roundMode) { output in
            makeArray(batch * outputs) { (out: UnsafeMutablePointer<T>) in
                qat_i8_linear(path.c, x, Int32(batch), Int32(inputs), zero, weights, bias, Int32(outputs), output, out)
            }
        }
    }
}


/// The shape of a general integer convolution (ONNX Conv, PyTorch Conv2d), NCHW: input
/// [batch, channels, height, width], weights [outputChannels, channels/groups, kernelHeight,
/// kernelWidth], output [batch, outputChannels, outputHeight, outputWidth] with
/// `outputHeight = (height + padTop + padBottom − dilationHeight·(kernelHeight − 1) − 1) / strideHeight + 1`
/// (and likewise across). Output channel o reads the input channels of its group
/// o / (outputChannels/groups). Kept apart from the float side's geometry so the INT8 kernels
/// describe their own operands.
/// What an INT8 conv derives from its weights alone (the packed weight matrix with its bias
/// corrections, the AVX2 pair kernel's int16 weight pairs, Winograd's transformed weights), kept
/// for the next call: a deployed conv runs on the same weights every batch. One per conv layer,
/// filled on its first call; every call given it must pass the same weights, bias, input zero
/// point and geometry but for the batch. Calls on several threads may share one.
public final class Int8ConvCache: @unchecked Sendable {
    let pointer: OpaquePointer
    public init() { pointer = qat_i8_conv_cache_create() }
    deinit { qat_i8_conv_cache_free(pointer) }
}

public struct Int8ConvGeometry: Equatable, Sendable {
    public var batch, channels, height, width, outputChannels: Int
    public var kernelHeight, kernelWidth: Int
    public var strideHeight, strideWidth: Int
    public var dilationHeight, dilationWidth: Int
    public var padTop, padLeft, padBottom, padRight: Int
    public var groups: Int

    public init(batch: Int, channels: Int, height: Int, width: Int, outputChannels: Int,
                kernelHeight: Int, kernelWidth: Int, strideHeight: Int = 1, strideWidth: Int = 1,
                dilationHeight: Int = 1, dilationWidth: Int = 1,
                padTop: Int = 0, padLeft: Int = 0, padBottom: Int = 0, padRight: Int = 0, groups: Int = 1) {
        (self.batch, self.channels, self.height, self.width, self.outputChannels) = (batch, channels, height, width, outputChannels)
        (self.kernelHeight, self.kernelWidth, self.strideHeight, self.strideWidth) = (kernelHeight, kernelWidth, strideHeight, strideWidth)
        (self.dilationHeight, self.dilationWidth) = (dilationHeight, dilationWidth)
        (self.padTop, self.padLeft, self.padBottom, self.padRight) = (padTop, padLeft, padBottom, padRight)
        self.groups = groups
    }

    public var outputHeight: Int { (height + padTop + padBottom - dilationHeight * (kernelHeight - 1) - 1) / strideHeight + 1 }
    public var outputWidth: Int { (width + padLeft + padRight - dilationWidth * (kernelWidth - 1) - 1) / strideWidth + 1 }
    /// Products per output: (channels/groups)·kernelHeight·kernelWidth.
    public var patchSize: Int { channels / groups * kernelHeight * kernelWidth }
    /// groups == channels > 1: each input channel has its own filters (outputChannels/channels of
    /// them); runs on the direct depthwise kernel.
    public var isDepthwise: Bool { groups > 1 && groups == channels }

    /// Positive sizes, strides and dilations, padding ≥ 0, groups dividing both channel counts,
    /// and at least one output pixel (the padded input must hold the dilated kernel).
    public var isValid: Bool {
        let positive = [batch, channels, height, width, outputChannels, kernelHeight, kernelWidth,
                        strideHeight, strideWidth, dilationHeight, dilationWidth, groups].allSatisfy { $0 > 0 }
        let padded = height + padTop + padBottom - dilationHeight * (kernelHeight - 1) - 1
        let across = width + padLeft + padRight - dilationWidth * (kernelWidth - 1) - 1
        return positive && [padTop, padLeft, padBottom, padRight].allSatisfy { $0 >= 0 }
            && channels % groups == 0 && outputChannels % groups == 0 && padded >= 0 && across >= 0
            && [batch, channels, height, width, outputChannels].allSatisfy { $0 <= Int(Int32.max) }
    }

    var c: qat_i8_conv_geometry {
        qat_i8_conv_geometry(n: Int32(batch), c: Int32(channels), h: Int32(height), w: Int32(width), oc: Int32(outputChannels),
                             kh: Int32(kernelHeight), kw: Int32(kernelWidth), sh: Int32(strideHeight), sw: Int32(strideWidth),
                             dh: Int32(dilationHeight), dw: Int32(dilationWidth),
                             pad_top: Int32(padTop), pad_left: Int32(padLeft), pad_bottom: Int32(padBottom), pad_right: Int32(padRight),
                             groups: Int32(groups))
    }
}

/// A max pool's geometry on planes of height×width (ONNX MaxPool, PyTorch max_pool2d): output
/// (oy, ox) is the max over rows oy·strideHeight − padTop … + kernelHeight − 1 and the columns
/// likewise, clipped to the plane. The output size is given (it depends on ceil mode); the
/// bottom and right padding only enter through it.
public struct Int8PoolGeometry: Equatable, Sendable {
    public var height, width, outputHeight, outputWidth: Int
    public var kernelHeight, kernelWidth, strideHeight, strideWidth: Int
    public var padTop, padLeft: Int

    public init(height: Int, width: Int, outputHeight: Int, outputWidth: Int, kernelHeight: Int, kernelWidth: Int,
                strideHeight: Int, strideWidth: Int, padTop: Int = 0, padLeft: Int = 0) {
        (self.height, self.width, self.outputHeight, self.outputWidth) = (height, width, outputHeight, outputWidth)
        (self.kernelHeight, self.kernelWidth, self.strideHeight, self.strideWidth) = (kernelHeight, kernelWidth, strideHeight, strideWidth)
        (self.padTop, self.padLeft) = (padTop, padLeft)
    }

    /// A square window without padding: (height − kernel)/stride + 1 outputs each way.
    public init(height: Int, width: Int, kernel: Int, stride: Int) {
        self.init(height: height, width: width, outputHeight: (height - kernel) / stride + 1,
                  outputWidth: (width - kernel) / stride + 1, kernelHeight: kernel, kernelWidth: kernel,
                  strideHeight: stride, strideWidth: stride)
    }

    public var isValid: Bool {
        [height, width, outputHeight, outputWidth, kernelHeight, kernelWidth, strideHeight, strideWidth].allSatisfy { $0 > 0 }
            && padTop >= 0 && padLeft >= 0
            && [height, width, outputHeight, outputWidth, kernelHeight, kernelWidth].allSatisfy { $0 <= Int(Int32.max) }
    }

    var c: qat_i8_pool_geometry {
        qat_i8_pool_geometry(h: Int32(height), w: Int32(width), oh: Int32(outputHeight), ow: Int32(outputWidth),
                             kh: Int32(kernelHeight), kw: Int32(kernelWidth), sh: Int32(strideHeight), sw: Int32(strideWidth),
                             pad_top: Int32(padTop), pad_left: Int32(padLeft))
    }
}

extension QuantizationGrid {
    /// The offset as the int8 kernels take it; only 8-bit grids have one.
    public var zeroPoint: Int8 {
        precondition(bits == 8, "an INT\(bits) grid has no int8 zero point")
        return Int8(offset)
    }
}

extension RoundMode {
    /// The C kernels' name of this tie rule.
    var c: qat_i8_round_mode {
        switch self {
        case .halfEven: return QAT_I8_ROUND_HALF_EVEN
        case .halfUp: return QAT_I8_ROUND_HALF_UP
        case .halfDown: return QAT_I8_ROUND_HALF_DOWN
        case .stdRound: return QAT_I8_ROUND_STD
        }
    }
}
