import CInt8
import QATCore

/// Kernels for the float nodes of the INT8 engine (the layers that run between dequantize and
/// quantize, `Lowering.float`): the same float results as the training ops in eval mode, without
/// their per-element overhead.
extension Int8Kernels {
    /// y[i] = table[codes[i] + 128]: a unary op tabulated on the 256 codes of one grid
    /// (`unaryTable`).
    public static func lookup(_ codes: [Int8], table: [Float], path: Path = activePath) -> [Float] {
        precondition(table.count == 256, "lookup: a table of \(table.count) entries, not 256")
        return makeArray(codes.count) { out in qat_i8_lookup(path.c, codes, table, out, codes.count) }
    }

    /// The 256 outputs of an element-wise op on the dequantized codes −128 … 127 of `grid`, each
    /// computed by `op` itself (the training op): looking codes up in it gives the op's own floats.
    public static func unaryTable(on grid: QuantizationGrid, _ op: ([Float]) -> [Float]) -> [Float] {
        let codes = (-128...127).map { Int8($0) }
        let table = op(dequantize(codes, grid))
        precondition(table.count == 256, "unaryTable: the op returned \(table.count) values for 256")
        return table
    }

    /// Max pool on float planes with any geometry: the results of QATCore's padded max pool
    /// (first strictly greatest element of each window in scan order, NaN winning, −∞ for a
    /// window without elements), branch-free.
    public static func maxPool2d(_ x: [Float], planes: Int, pool: Int8PoolGeometry, path: Path = activePath) -> [Float] {
        precondition(pool.isValid, "maxPool2d: bad geometry \(pool)")
        precondition(x.count == planes * pool.height * pool.width, "maxPool2d: \(x.count) values for \(planes)×\(pool.height)×\(pool.width)")
        var geometry = pool.c
        return makeArray(planes * pool.outputHeight * pool.outputWidth) { out in qat_i8_maxpool_float(path.c, x, out, planes, &geometry) }
    }

    /// `conv2dDequantized`, then when `relu` QATCore's float ReLU, then when `pool` is set the
    /// float `maxPool2d` with it (input size: the conv's output size), one image at a time: the
    /// same floats as the separate passes, without another pass over the conv's output in
    /// memory. Depthwise geometries run through the GEMM here. → [N, O, pool.outputHeight,
    /// pool.outputWidth], or [N, O, Ho, Wo] without a pool.
    public static func conv2dDequantized(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                         bias: [Int32], scales: [Float], offsets: [Float]?, relu: Bool,
                                         pool: Int8PoolGeometry?, cache: Int8ConvCache? = nil, path: Path = activePath) -> [Float] {
        checkDequantizedConv(x, g, weights, bias, scales, offsets)
        var geometry = g.c
        let outputs = pool.map { p -> Int in
            precondition(p.isValid && p.height == g.outputHeight && p.width == g.outputWidth,
                         "conv2dDequantized: pool \(p) does not fit the conv output \(g.outputHeight)×\(g.outputWidth)")
            return p.outputHeight * p.outputWidth
        } ?? g.outputHeight * g.outputWidth
        return withOutput(QAT_I8_OUT_FLOAT, scales, offsets, 0, 0, 0) { output in
            makeArray(g.batch * g.outputChannels * outputs) { out in
                func run(_ p: UnsafePointer<qat_i8_pool_geometry>?) {
                    qat_i8_conv2d_float_epilogue(path.c, x, inputZeroPoint, &geometry, weights, bias, cache?.pointer, output, relu ? 1 : 0, p, out)
                }
                guard let pool else { return run(nil) }
                withUnsafePointer(to: pool.c) { run($0) }
            }
        }
    }

    /// `quantize` of the float sums a[i] + b[i] (QATCore's add of two same-shaped tensors), in
    /// one pass without the sums in memory.
    public static func addQuantized(_ a: [Float], _ b: [Float], _ q: QuantizationGrid, path: Path = activePath) -> [Int8] {
        precondition(a.count == b.count, "addQuantized: \(a.count) and \(b.count) values")
        return makeArray(a.count) { out in
            qat_i8_add_quantize(path.c, a, b, q.scale, Int32(q.zeroPoint), Int32(q.qmin), q.roundMode.c, out, a.count)
        }
    }

    /// `conv2dDequantized`, then `addQuantized` of its floats and `addend` (the conv output's
    /// shape), an image at a time: the codes of conv → residual add → quantize, without the conv's
    /// floats in memory. Depthwise geometries run through the GEMM here.
    public static func conv2dDequantizedAddQuantized(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                                     bias: [Int32], scales: [Float], offsets: [Float]?, addend: [Float],
                                                     _ q: QuantizationGrid, cache: Int8ConvCache? = nil, path: Path = activePath) -> [Int8] {
        checkDequantizedConv(x, g, weights, bias, scales, offsets)
        let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
        precondition(addend.count == count, "conv2dDequantizedAddQuantized: \(addend.count) addends for \(count) outputs")
        var geometry = g.c
        return withOutput(QAT_I8_OUT_FLOAT, scales, offsets, 0, 0, 0) { output in
            makeArray(count) { out in
                qat_i8_conv2d_add_quantize(path.c, x, inputZeroPoint, &geometry, weights, bias, cache?.pointer, output, addend, q.scale,
                                           Int32(q.zeroPoint), Int32(q.qmin), q.roundMode.c, out)
            }
        }
    }

    /// `conv2dDequantized` (depthwise geometries on the depthwise kernel), then `hardSwish` of
    /// each image's floats (depthwise: each plane's) while they are in cache: the same floats as
    /// the two passes.
    public static func conv2dDequantizedHardSwish(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                                  bias: [Int32], scales: [Float], offsets: [Float]?, cache: Int8ConvCache? = nil, path: Path = activePath) -> [Float] {
        convHardSwish(x, g, inputZeroPoint, weights, bias, scales, offsets, nil, path, cache: cache)
    }

    /// The same, then `quantize` onto `q`: the codes of conv → HardSwish → quantize, without the
    /// conv's or the HardSwish's floats in memory.
    public static func conv2dDequantizedHardSwishQuantized(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                                           bias: [Int32], scales: [Float], offsets: [Float]?, _ q: QuantizationGrid,
                                                           cache: Int8ConvCache? = nil, path: Path = activePath) -> [Int8] {
        convHardSwish(x, g, inputZeroPoint, weights, bias, scales, offsets, q, path, cache: cache)
    }

    private static func convHardSwish<T>(_ x: [Int8], _ g: Int8ConvGeometry, _ zero: Int8, _ weights: [Int8], _ bias: [Int32],
                                         _ scales: [Float], _ offsets: [Float]?, _ q: QuantizationGrid?, _ path: Path, cache: Int8ConvCache?) -> [T] {
        checkDequantizedConv(x, g, weights, bias, scales, offsets)
        var geometry = g.c
        let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
        return withOutput(QAT_I8_OUT_FLOAT, scales, offsets, 0, 0, 0) { output in
            makeArray(count) { (out: UnsafeMutablePointer<T>) in
                guard let q else { return qat_i8_conv2d_hard_swish(path.c, x, zero, &geometry, weights, bias, cache?.pointer, output, nil, out) }
                var grid = qat_i8_quantize_grid(scale: q.scale, zero: Int32(q.zeroPoint), lo: Int32(q.qmin), round_mode: q.roundMode.c)
                qat_i8_conv2d_hard_swish(path.c, x, zero, &geometry, weights, bias, cache?.pointer, output, &grid, out)
            }
        }
    }

    /// `conv2dDequantized`, plus `addend` (the conv output's shape), then QATCore's float ReLU when
    /// `relu`, an image at a time: the floats of conv → residual add → ReLU, and those floats
    /// quantized to `codesGrid` when one is given (`quantize`), without the conv's floats in memory.
    public static func conv2dDequantizedAddReLU(_ x: [Int8], _ g: Int8ConvGeometry, inputZeroPoint: Int8, weights: [Int8],
                                                bias: [Int32], scales: [Float], offsets: [Float]?, addend: [Float], relu: Bool,
                                                codesGrid q: QuantizationGrid?, cache: Int8ConvCache? = nil, path: Path = activePath) -> (floats: [Float], codes: [Int8]?) {
        checkDequantizedConv(x, g, weights, bias, scales, offsets)
        let count = g.batch * g.outputChannels * g.outputHeight * g.outputWidth
        precondition(addend.count == count, "conv2dDequantizedAddReLU: \(addend.count) addends for \(count) outputs")
        var geometry = g.c
        var codes: [Int8]?
        let floats = withOutput(QAT_I8_OUT_FLOAT, scales, offsets, 0, 0, 0) { output in
            makeArray(count) { (sums: UnsafeMutablePointer<Float>) in
                guard let q else {
                    return qat_i8_conv2d_add_relu(path.c, x, inputZeroPoint, &geometry, weights, bias, cache?.pointer, output, addend, relu ? 1 : 0,
                                                  sums, 0, 0, 0, QAT_I8_ROUND_HALF_EVEN, nil)
                }
                codes = makeArray(count) { out in
                    qat_i8_conv2d_add_relu(path.c, x, inputZeroPoint, &geometry, weights, bias, cache?.pointer, output, addend, relu ? 1 : 0,
                                           sums, q.scale, Int32(q.zeroPoint), Int32(q.qmin), q.roundMode.c, out)
                }
            }
        }
        return (floats, codes)
    }

    /// Whether the engine runs conv → residual add on floats → ReLU as one kernel
    /// (conv2dDequantizedAddReLU; the same bytes as the node-by-node passes; tests switch it off to compare).
    static func allowResidualReLUFusion(_ allowed: Bool) { qat_i8_allow_residual_relu_fusion(allowed ? 1 : 0) }
    static var residualReLUFusionAllowed: Bool { qat_i8_residual_relu_fusion_allowed != 0 }

    /// The operands of a conv with float output fit its geometry, and its int32 sums cannot overflow.
    private static func checkDequantizedConv(_ x: [Int8], _ g: Int8ConvGeometry, _ weights: [Int8], _ bias: [Int32],
                                             _ scales: [Float], _ offsets: [Float]?) {
        precondition(g.isValid, "conv2d: bad geometry \(g)")
        precondition(x.count == g.batch * g.channels * g.height * g.width, "conv2d: input has \(x.count) codes, geometry wants \(g)")
        precondition(weights.count == g.outputChannels * g.patchSize, "conv2d: \(weights.count) weights for \(g)")
        precondition(bias.count == g.outputChannels && scales.count == g.outputChannels
                     && (offsets == nil || offsets!.count == g.outputChannels), "conv2d: per-channel values for \(g.outputChannels) channels")
        checkAccumulatorRange(bias, patch: g.patchSize, "conv2d")
    }

    /// `quantize` of `hardSwish(x)`, in one pass without the floats in memory.
    public static func hardSwishQuantized(_ x: [Float], _ q: QuantizationGrid, path: Path = activePath) -> [Int8] {
        makeArray(x.count) { out in
            qat_i8_hard_swish_quantize(path.c, x, q.scale, Int32(q.zeroPoint), Int32(q.qmin), q.roundMode.c, out, x.count)
        }
    }

    /// QATCore's hardSwish on floats, the same floats (x · clamp(x + 3, 0, 6) / 6), vectorised.
    public static func hardSwish(_ x: [Float], path: Path = activePath) -> [Float] {
        makeArray(x.count) { out in qat_i8_hard_swish(path.c, x, out, x.count) }
    }

    /// [planes, area] floats → [planes]: each plane's float32 sum in scan order, times `factor`
    /// (QATCore's globalAveragePool with factor 1 / area).
    public static func globalAveragePool(_ x: [Float], planes: Int, area: Int, factor: Float, path: Path = activePath) -> [Float] {
        precondition(planes > 0 && area > 0 && x.count == planes * area, "globalAveragePool: \(x.count) values for \(planes)×\(area)")
        return makeArray(planes) { out in qat_i8_global_avgpool(path.c, x, planes, area, factor, out) }
    }

    /// The same on codes of `grid`, each dequantized as `dequantize` does before it is added.
    public static func globalAveragePool(_ codes: [Int8], _ grid: QuantizationGrid, planes: Int, area: Int, factor: Float,
                                         path: Path = activePath) -> [Float] {
        precondition(planes > 0 && area > 0 && codes.count == planes * area,
                     "globalAveragePool: \(codes.count) codes for \(planes)×\(area)")
        return makeArray(planes) { out in
            qat_i8_global_avgpool_codes(path.c, codes, grid.scale, Int32(grid.zeroPoint), planes, area, factor, out)
        }
    }

    /// y[r·length + j] = x[r·length + j] · perRow[r] (a [N, C, H, W] · [N, C, 1, 1] multiply).
    public static func scaleRows(_ x: [Float], by perRow: [Float], path: Path = activePath) -> [Float] {
        precondition(!perRow.isEmpty && x.count % perRow.count == 0, "scaleRows: \(x.count) values for \(perRow.count) rows")
        return makeArray(x.count) { out in qat_i8_scale_rows(path.c, x, perRow, perRow.count, x.count / perRow.count, out) }
    }
}
