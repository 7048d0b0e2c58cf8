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
        public init(multipliers: [Float], zeroPoint: Int8, relu: Bool, offsets: [Float]? = nil, upperBound: Int8 = 127) {
            precondition(offsets == nil || offsets!.count == multipliers.count, "Requantization: \(offsets!.count) offsets for \(multipliers.count) multipliers")
            self.multipliers = multipliers
            self.zeroPoint = zeroPoint
            self.relu = relu
            self.offsets = offsets
            self.upperBound = upperBound
            precondition(Int32(upperBound) >= lowerBound, "Requantization: upper bound \(upperBound) below the lower bound \(lowerBound)")
        }
        var lowerBound: Int32 { relu ? Int32(zeroPoint) : -128 }
    }

    public static func isSupported(_ path: Path) -> Bool { qat_i8_cpu_supports(path.c) != 0 }

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
                              bias: [Int32], requantize r: Requantization, path: Path = activePath) -> [Int8] {
        precondition(r.multipliers.count == g.outputChannels, "conv2d: \(r.multipliers.count) multipliers for \(g.outputChannels) channels")
        return conv(x, g, inputZeroPoint, weights, bias, path, kind: QAT_I8_OUT_INT8, scales: r.multipliers,
                    offsets: r.offsets, zeroPoint: Int32(r.zeroPoint), lo: r.lowerBound, hi: Int32(r.upperBound))
    }

    /// `conv2d` followed by a max pool (window `poolKernel`, stride `poolStride`, no padding) on
    /// each output plane; the same codes as the two kernels in turn, but each image's conv output
    /// is pooled while it is still in cache. → [N, O, (Ho − k)/s + 1, (Wo − k)/s + 1].
    public static func conv2dMaxPool(_ x: [Int8], _ g: ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                     bias: [Int32], requantize r: Requantization, poolKernel: Int, poolStride: Int,
                                     path: Path = activePath) -> [Int8] {
        precondition(r.multipliers.count == g.outputChannels, "conv2d: \(r.multipliers.count) multipliers for \(g.outputChannels) channels")
        precondition(poolKernel > 0 && poolStride > 0 && poolKernel <= g.outputHeight && poolKernel <= g.outputWidth,
                     "conv2dMaxPool: bad window \(poolKernel)/\(poolStride)")
        checkConv(x, g, weights, bias)
        let count = g.batch * g.outputChannels * ((g.outputHeight - poolKernel) / poolStride + 1)
            * ((g.outputWidth - poolKernel) / poolStride + 1)
        return withOutput(QAT_I8_OUT_INT8, r.multipliers, r.offsets, Int32(r.zeroPoint), r.lowerBound, Int32(r.upperBound)) { output in
            makeArray(count) { (out: UnsafeMutablePointer<Int8>) in
                qat_i8_conv2d_maxpool(path.c, x, Int32(g.batch), Int32(g.channels), Int32(g.height), Int32(g.width), inputZeroPoint,
                                      weights, bias, Int32(g.outputChannels), Int32(g.kernel), Int32(g.stride), Int32(g.padding),
                                      output, Int32(poolKernel), Int32(poolStride), out)
            }
        }
    }

    /// The same convolution, returning the raw accumulators Σ (q_x − o_d)·w_q + b_q.
    public static func conv2dAccumulators(_ x: [Int8], _ g: ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                          bias: [Int32], path: Path = activePath) -> [Int32] {
        conv(x, g, inputZeroPoint, weights, bias, path, kind: QAT_I8_OUT_INT32, scales: [], offsets: nil, zeroPoint: 0, lo: 0, hi: 0)
    }

    /// The same convolution, dequantized: `Float(acc) * scales[c] (+ offsets[c])` with
    /// scales[c] = s_d · s_w[c].
    public static func conv2dDequantized(_ x: [Int8], _ g: ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                         bias: [Int32], scales: [Float], offsets: [Float]? = nil, path: Path = activePath) -> [Float] {
        precondition(scales.count == g.outputChannels, "conv2d: \(scales.count) scales for \(g.outputChannels) channels")
        precondition(offsets == nil || offsets!.count == g.outputChannels, "conv2d: offsets for \(g.outputChannels) channels")
        return conv(x, g, inputZeroPoint, weights, bias, path, kind: QAT_I8_OUT_FLOAT, scales: scales, offsets: offsets, zeroPoint: 0, lo: 0, hi: 0)
    }

    /// Fully connected layer on codes: x: [N, I], weights: [O, I], bias: [O] → [N, O] codes.
    public static func linear(_ x: [Int8], batch: Int, inputZeroPoint: Int8, weights: [Int8], bias: [Int32],
                              requantize r: Requantization, path: Path = activePath) -> [Int8] {
        precondition(r.multipliers.count == bias.count, "linear: \(r.multipliers.count) multipliers for \(bias.count) outputs")
        return dense(x, batch, inputZeroPoint, weights, bias, path, kind: QAT_I8_OUT_INT8, scales: r.multipliers,
                     offsets: r.offsets, zeroPoint: Int32(r.zeroPoint), lo: r.lowerBound, hi: Int32(r.upperBound))
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

    // MARK: Element-wise kernels

    /// Requantizes accumulators laid out [N, channels, planeSize] (planeSize 1 for a matrix).
    public static func requantize(_ acc: [Int32], channels: Int, planeSize: Int, _ r: Requantization,
                                  path: Path = activePath) -> [Int8] {
        precondition(channels > 0 && planeSize > 0 && acc.count % (channels * planeSize) == 0,
                     "requantize: \(acc.count) values do not split into [N, \(channels), \(planeSize)]")
        precondition(r.multipliers.count == channels, "requantize: \(r.multipliers.count) multipliers for \(channels) channels")
        return makeArray(acc.count) { out in
            qat_i8_requantize(path.c, acc, acc.count / (channels * planeSize), channels, planeSize,
                              r.multipliers, Int32(r.zeroPoint), r.lowerBound, Int32(r.upperBound), out)
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

    /// Residual add on codes: q = clamp(round((s_a(q_a − o_a) + s_b(q_b − o_b)) / s_y) + o_y, lo, upperBound),
    /// each product, the sum and the quotient rounded to Float, round half to even.
    public static func add(_ a: [Int8], _ qa: QuantizationGrid, _ b: [Int8], _ qb: QuantizationGrid, output qy: QuantizationGrid,
                           relu: Bool, upperBound: Int8 = 127, path: Path = activePath) -> [Int8] {
        precondition(a.count == b.count, "add: \(a.count) and \(b.count) codes")
        return makeArray(a.count) { out in
            qat_i8_add(path.c, a, qa.scale, Int32(qa.zeroPoint), b, qb.scale, Int32(qb.zeroPoint),
                       qy.scale, Int32(qy.zeroPoint), relu ? Int32(qy.zeroPoint) : -128, Int32(upperBound), out, a.count)
        }
    }

    /// q = clamp(round(x / scale) + zeroPoint, −128, 127), round half to even; NaN → zeroPoint.
    /// The vectorised C form of `QuantizationGrid.quantize`, which it equals code for code.
    public static func quantize(_ x: [Float], _ q: QuantizationGrid, path: Path = activePath) -> [Int8] {
        makeArray(x.count) { out in qat_i8_quantize(path.c, x, q.scale, Int32(q.zeroPoint), out, x.count) }
    }

    /// x = scale · (q − zeroPoint).
    public static func dequantize(_ codes: [Int8], _ q: QuantizationGrid, path: Path = activePath) -> [Float] {
        makeArray(codes.count) { out in qat_i8_dequantize(path.c, codes, q.scale, Int32(q.zeroPoint), out, codes.count) }
    }

    // MARK: Plumbing

    private static func makeArray<T>(_ count: Int, _ fill: (UnsafeMutablePointer<T>) -> Void) -> [T] {
        [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { fill(buffer.baseAddress!) }
            initialized = count
        }
    }

    /// No int32 partial sum may overflow, in any path and any order of additions (int8_internal.h):
    /// |b_q| + 2·255·128·K < 2^31.
    private static func checkAccumulatorRange(_ bias: [Int32], patch: Int, _ op: String) {
        let largestBias = bias.lazy.map { Int64($0).magnitude }.max() ?? 0
        precondition(Int64(largestBias) + 2 * 255 * 128 * Int64(patch) < Int64(Int32.max),
                     "\(op): patch size \(patch) with bias up to \(largestBias) could overflow int32")
    }

    /// The C output description, valid inside `body`.
    private static func withOutput<R>(_ kind: qat_i8_out_kind, _ scales: [Float], _ offsets: [Float]?, _ zeroPoint: Int32,
                                      _ lo: Int32, _ hi: Int32, _ body: (qat_i8_output) -> R) -> R {
        scales.withUnsafeBufferPointer { s in
            func run(_ o: UnsafePointer<Float>?) -> R {
                body(qat_i8_output(kind: kind, scale: s.baseAddress, offset: o, zero_point: zeroPoint, lo: lo, hi: hi))
            }
            guard let offsets else { return run(nil) }
            return offsets.withUnsafeBufferPointer { run($0.baseAddress) }
        }
    }

    private static func conv<T>(_ x: [Int8], _ g: ConvGeometry, _ zero: Int8, _ weights: [Int8], _ bias: [Int32],
                                _ path: Path, kind: qat_i8_out_kind, scales: [Float], offsets: [Float]?,
                                zeroPoint: Int32, lo: Int32, hi: Int32) -> [T] {
        checkConv(x, g, weights, bias)
        let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
        return withOutput(kind, scales, offsets, zeroPoint, lo, hi) { output in
            makeArray(count) { (out: UnsafeMutablePointer<T>) in
                qat_i8_conv2d(path.c, x, Int32(g.batch), Int32(g.channels), Int32(g.height), Int32(g.width), zero,
                              weights, bias, Int32(g.outputChannels), Int32(g.kernel), Int32(g.stride), Int32(g.padding),
                              output, out)
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

    private static func dense<T>(_ x: [Int8], _ batch: Int, _ zero: Int8, _ weights: [Int8], _ bias: [Int32],
                                 _ path: Path, kind: qat_i8_out_kind, scales: [Float], offsets: [Float]?,
                                 zeroPoint: Int32, lo: Int32, hi: Int32) -> [T] {
        let outputs = bias.count
        precondition(batch > 0 && outputs > 0 && x.count % batch == 0, "linear: \(x.count) codes for batch \(batch)")
        let inputs = x.count / batch
        precondition(weights.count == outputs * inputs, "linear: \(weights.count) weights for \(outputs)×\(inputs)")
        checkAccumulatorRange(bias, patch: inputs, "linear")
        return withOutput(kind, scales, offsets, zeroPoint, lo, hi) { output in
            makeArray(batch * outputs) { (out: UnsafeMutablePointer<T>) in
                qat_i8_linear(path.c, x, Int32(batch), Int32(inputs), zero, weights, bias, Int32(outputs), output, out)
            }
        }
    }
}


extension QuantizationGrid {
    /// The offset as the int8 kernels take it; only 8-bit grids have one.
    public var zeroPoint: Int8 {
        precondition(bits == 8, "an INT\(bits) grid has no int8 zero point")
        return Int8(offset)
    }
}
