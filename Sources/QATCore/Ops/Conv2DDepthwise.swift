import CKernels

// Depthwise convolution (groups == C > 1, O = C·m): output channel o = c·m + k reads input channel c
// alone, y[n, o] = Σ_{kh, kw} w[o, 0, kh, kw] · x[n, c, i·sh + kh·dh − top, j·sw + kw·dw − left]
// + bias[o] (padding reads 0). `conv2d(_:weight:bias:stride:padding:dilation:groups:tape:)` in
// Conv2DGrouped.swift sends these layers here. The backward passes:
//   gx[n, c, r, q] += Σ_{k, kh, kw} w[o, kh, kw] · gy[n, o, i, j] over (i, j) with r = i·sh + kh·dh − top, …
//   gw[o, kh, kw]  += Σ_{n, i, j} gy[n, o, i, j] · x[n, c, i·sh + kh·dh − top, j·sw + kw·dw − left]
//
// Units are fixed by the shape, never by the thread count: one (image, channel) plane for the
// forward and the input gradient, one channel (all images, in order) for the weight gradient.
// So results do not depend on `Parallel.threads`.

/// The code paths of the depthwise kernels (Sources/CKernels/include/depthwise_float.h).
public enum DepthwiseConvPath: String, CaseIterable, Sendable {
    /// The general loops, for any kernel, stride, dilation and multiplier (the only path for
    /// shapes the 3×3 kernels do not take).
    case loops
    /// The 3×3 kernels in portable C, 8 lanes, products and sums rounded separately.
    case portable
    /// The 3×3 kernels with AVX2 and FMA, 8 lanes, reading the planes in place with masked loads,
    /// several output rows per step (planes up to 1024 columns; wider ones on a padded copy).
    case avx2
    /// The 3×3 kernels with AVX-512, 16 lanes, reading the planes in place with masked loads.
    case avx512

    var c: qat_dw_path {
        switch self {
        case .loops: return QAT_DW_LOOPS
        case .portable: return QAT_DW_PORTABLE
        case .avx2: return QAT_DW_AVX2
        case .avx512: return QAT_DW_AVX512
        }
    }

    /// Whether this CPU can run the path.
    public var isSupported: Bool { qat_depthwise_cpu_supports(c) != 0 }

    /// The fastest path this CPU supports.
    public static var best: DepthwiseConvPath {
        avx512.isSupported ? .avx512 : avx2.isSupported ? .avx2 : .portable
    }
}

extension ConvKernels {
    /// Switch for tests: off, depthwise layers take the im2col + sgemm path.
    nonisolated(unsafe) public static var depthwiseEnabled = true

    /// The path of the depthwise kernels; starts as the fastest this CPU supports. Tests set it
    /// to compare the paths; setting a path the CPU lacks is a programmer error.
    public static var depthwisePath: DepthwiseConvPath {
        get { chosenDepthwisePath }
        set {
            precondition(newValue.isSupported, "ConvKernels: this CPU cannot run the \(newValue) depthwise path")
            chosenDepthwisePath = newValue
        }
    }

    nonisolated(unsafe) private static var chosenDepthwisePath = DepthwiseConvPath.best

    /// Tests: false sends the AVX-512 and AVX2 paths to their padded-copy 3×3 kernels on every
    /// plane (the reference for the kernels that read the planes in place); true (the default)
    /// lets the in-place kernels take planes up to 1024 columns where they are faster (AVX2 keeps
    /// the padded copy at stride 1 for rows wider than 8), and
    /// `everywhere` every such plane. Returns whether they are enabled.
    @discardableResult
    public static func enableDepthwiseDirect(_ enabled: Bool, everywhere: Bool = false) -> Bool {
        qat_depthwise_enable_direct(enabled ? (everywhere ? 2 : 1) : 0) != 0
    }

    /// Tests: false sends the AVX2 path's in-place kernels back to one output row per step (and
    /// to the padded copy at stride 1 on rows wider than 8, unless `enableDepthwiseDirect(true,
    /// everywhere: true)`), the reference for the kernels that compute several rows per step;
    /// true (the default) uses those. Returns whether they are enabled.
    @discardableResult
    public static func enableDepthwiseRows(_ enabled: Bool) -> Bool {
        qat_dw_avx2_rows(enabled ? 1 : 0) != 0
    }

    /// Tests: false leaves the small stride-1 planes (output of the input's size, fewer than 8
    /// columns) to the row-group kernels, the reference for the AVX2 kernels whose forward and
    /// input gradient walk such a plane as one flat array; true (the default) uses those. Returns whether they are enabled.
    @discardableResult
    public static func enableDepthwiseFlat(_ enabled: Bool) -> Bool {
        qat_dw_avx2_flat(enabled ? 1 : 0) != 0
    }
}

extension GroupedConvGeometry {
    /// Whether the 3×3 kernels take this layer (multiplier 1, dilation 1, stride 1 or 2 on both
    /// axes, top and left padding ≤ 2); other depthwise layers run the loops on every path.
    var depthwise3x3Supported: Bool { withUnsafePointer(to: c) { qat_depthwise3x3_supported($0) != 0 } }
}

func depthwiseForward(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ g: GroupedConvGeometry, into y: inout Tensor) {
    let path = ConvKernels.depthwisePath.c
    withUnsafePointer(to: g.c) { gp in
        x.storage.withUnsafeBufferPointer { xs in
            w.storage.withUnsafeBufferPointer { ws in
                y.storage.withUnsafeMutableBufferPointer { ys in
                    withOptionalStorage(bias) { b in
                        Parallel.forEachChunk(g.batch * g.channels) { planes in
                            qat_depthwise_forward(xs.baseAddress!, ws.baseAddress!, b, ys.baseAddress!, gp, path,
                                                  planes.lowerBound, planes.upperBound)
                        }
                    }
                }
            }
        }
    }
}

func depthwiseInputGradient(_ gy: Tensor, _ w: Tensor, _ g: GroupedConvGeometry,
                            into gx: UnsafeMutableBufferPointer<Float>) {
    let path = ConvKernels.depthwisePath.c
    withUnsafePointer(to: g.c) { gp in
        gy.storage.withUnsafeBufferPointer { gys in
            w.storage.withUnsafeBufferPointer { ws in
                Parallel.forEachChunk(g.batch * g.channels) { planes in
                    qat_depthwise_input_grad(gys.baseAddress!, ws.baseAddress!, gx.baseAddress!, gp, path,
                                             planes.lowerBound, planes.upperBound)
                }
            }
        }
    }
}

func depthwiseWeightGradient(_ x: Tensor, _ gy: Tensor, _ g: GroupedConvGeometry,
                             into gw: UnsafeMutableBufferPointer<Float>) {
    let path = ConvKernels.depthwisePath.c
    withUnsafePointer(to: g.c) { gp in
        x.storage.withUnsafeBufferPointer { xs in
            gy.storage.withUnsafeBufferPointer { gys in
                Parallel.forEachChunk(g.channels) { channels in
                    qat_depthwise_weight_grad(xs.baseAddress!, gys.baseAddress!, gw.baseAddress!, gp, path,
                                              channels.lowerBound, channels.upperBound)
                }
            }
        }
    }
}

@inline(__always)
private func withOptionalStorage<R>(_ tensor: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let tensor else { return body(nil) }
    return tensor.storage.withUnsafeBufferPointer { body($0.baseAddress!) }
}
