import CKernels
import QATIO

/// 1×1 convolution with stride 1 and no padding (MobileNet's expand, project and head convs).
///
/// Per image it is one matrix product on NCHW as it is, so there is no im2col and no transpose
/// (P = H·W, x_n the image's [C, P] block, y_n its [O, P] block):
/// - forward:         y_n = W [O, C] · x_n + b
/// - input gradient:  dx_n += Wᵀ · dy_n
/// - weight gradient: dW [O, C] += Σ_n dy_n · x_nᵀ
/// Forward and input gradient run one sgemm per image, blocks of images spread over threads; on 1×1
/// planes (squeeze-and-excitation) x is a matrix [N, C] and each pass is one sgemm over the
/// batch. The weight gradient is split into fixed blocks of dW (by the geometry alone), each
/// summing all images in order, in groups of images gathered side by side when planes are small
/// (so each sgemm sums over at least 256 values): no reduction across threads, so results do
/// not depend on `Parallel.threads`.
/// Why OpenBLAS and not a micro-kernel of our own: an AVX-512 kernel holding 8 output rows × 32
/// pixels in registers measured within ±10 % of sgemm on MobileNet's 1×1 shapes (both at 80–105
/// GFLOP/s on warm caches, 2026-11-29), ahead only where the sum has ≤ 16 terms and behind on 7×7
/// planes; what separates a layer from the FMA peak in a training step is memory traffic.
func pointwiseConv2d(_ x: Variable, weight: Variable, bias: Variable?, _ g: ConvGeometry, tape: Tape?) -> Variable {
    let record = needsPullback(tape, x, weight, bias)
    var y = Tensor(shape: [g.batch, g.outputChannels, g.height, g.width],
                   storage: uninitializedFloats(g.batch * g.outputChannels * g.height * g.width))
    pointwiseForward(x.value, weight.value, bias?.value, g, into: &y)
    let out = Variable(y, requiresGrad: record)
    guard record, let tape else { return out }
    // x itself, or (a fake quantizer's output) the recipe that recomputes it for the weight gradient
    let (savedX, wValue) = (weight.requiresGrad ? x.savedForPullback() : nil, weight.value)
    tape.record {
        guard let gy = out.grad else { return }
        if x.requiresGrad { x.withGradient { pointwiseInputGradient(gy, wValue, g, into: $0) } }
        if let savedX, weight.requiresGrad {
            let xValue = savedX.tensor()
            weight.withGradient { pointwiseWeightGradient(xValue, gy, g, into: $0) }
        }
        if let bias, bias.requiresGrad {
            gy.storage.withUnsafeBufferPointer { gys in
                bias.withGradient { gb in
                    Parallel.forEachChunk(g.outputChannels) { channels in
                        qat_channel_sums(gys.baseAddress!, gb.baseAddress!, g.batch, g.outputChannels, g.pointwisePlane,
                                         channels.lowerBound, channels.upperBound)
                    }
                }
            }
        }
    }
    return out
}

extension ConvKernels {
    /// Switch for tests and benchmarks: off, 1×1 convs take the direct or im2col + sgemm paths.
    nonisolated(unsafe) public static var pointwiseEnabled = true
}

extension ConvGeometry {
    /// Whether the 1×1 path handles this layer: kernel 1, stride 1, no padding.
    public var pointwiseSupported: Bool { kernel == 1 && stride == 1 && padding == 0 }

    /// Pixels per output plane (the same as per input plane: 1×1, stride 1, no padding).
    var pointwisePlane: Int { outputHeight * outputWidth }

    /// Blocks of the weight gradient along its longer side (output channels or input channels),
    /// fixed by the geometry: at most 4, each at least 16 wide.
    var pointwiseWeightBlocks: Int { max(1, min(4, max(outputChannels, channels) / 16)) }

    /// Blocks of images of the forward and input gradient (one sgemm per image, so any split
    /// gives the same bits): more blocks than threads, so a thread that another process delays
    /// leaves its share to the others.
    var pointwiseImageBlocks: Int { min(batch, 8) }

    func pointwiseImages(inBlock block: Int) -> Range<Int> {
        (batch * block / pointwiseImageBlocks)..<(batch * (block + 1) / pointwiseImageBlocks)
    }

    /// Images per weight-gradient sgemm: one on planes of 128 pixels or more (gathering costs
    /// more than it saves there), else enough that one sgemm sums over at least 256 values
    /// (measured on MobileNet's 7×7 planes: about 1.5× faster than one sgemm per image).
    var pointwiseImageGroup: Int { pointwisePlane >= 128 ? 1 : min(batch, max(1, (256 + pointwisePlane - 1) / pointwisePlane)) }
}

/// y_n = W · x_n (+ b), one sgemm per image.
private func pointwiseForward(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ g: ConvGeometry, into y: inout Tensor) {
    let plane = g.pointwisePlane
    x.storage.withUnsafeBufferPointer { xs in
        w.storage.withUnsafeBufferPointer { ws in
            y.storage.withUnsafeMutableBufferPointer { ys in
                if plane == 1 {   // y [N, O] = x [N, C] · Wᵀ
                    BLAS.gemm(transposeB: true, m: g.batch, n: g.outputChannels, k: g.channels,
                              a: xs.baseAddress!, lda: g.channels, b: ws.baseAddress!, ldb: g.channels,
                              c: ys.baseAddress!, ldc: g.outputChannels)
                    if let bias {
                        bias.storage.withUnsafeBufferPointer { b in
                            qat_pointwise_add_bias(ys.baseAddress!, b.baseAddress!, g.outputChannels, 1, 0, g.batch)
                        }
                    }
                    return
                }
                Parallel.forEachIndex(g.pointwiseImageBlocks) { block in
                    let images = g.pointwiseImages(inBlock: block)
                    for n in images {
                        BLAS.gemm(m: g.outputChannels, n: plane, k: g.channels,
                                  a: ws.baseAddress!, lda: g.channels,
                                  b: xs.baseAddress! + n * g.channels * plane, ldb: plane,
                                  c: ys.baseAddress! + n * g.outputChannels * plane, ldc: plane)
                    }
                    if let bias {
                        bias.storage.withUnsafeBufferPointer { b in
                            qat_pointwise_add_bias(ys.baseAddress!, b.baseAddress!, g.outputChannels, plane,
                                                   images.lowerBound, images.upperBound)
                        }
                    }
                }
            }
        }
    }
}

/// dx_n += Wᵀ · dy_n, one sgemm per image.
private func pointwiseInputGradient(_ gy: Tensor, _ w: Tensor, _ g: ConvGeometry,
                                    into gx: UnsafeMutableBufferPointer<Float>) {
    let plane = g.pointwisePlane
    gy.storage.withUnsafeBufferPointer { gys in
        w.storage.withUnsafeBufferPointer { ws in
            if plane == 1 {   // dx [N, C] += dy [N, O] · W
                BLAS.gemm(m: g.batch, n: g.channels, k: g.outputChannels,
                          a: gys.baseAddress!, lda: g.outputChannels, b: ws.baseAddress!, ldb: g.channels,
                          beta: 1, c: gx.baseAddress!, ldc: g.channels)
                return
            }
            Parallel.forEachIndex(g.pointwiseImageBlocks) { block in
                for n in g.pointwiseImages(inBlock: block) {
                    BLAS.gemm(transposeA: true, m: g.channels, n: plane, k: g.outputChannels,
                              a: ws.baseAddress!, lda: g.channels,
                              b: gys.baseAddress! + n * g.outputChannels * plane, ldb: plane,
                              beta: 1, c: gx.baseAddress! + n * g.channels * plane, ldc: plane)
                }
            }
        }
    }
}

/// dW += Σ_n dy_n · x_nᵀ: block b of `pointwiseWeightBlocks` owns a range of dW's rows (output
/// channels) or columns (input channels), whichever side is longer, and adds every group of
/// `pointwiseImageGroup` images into it in image order. A group of several images is first
/// gathered side by side ([rows, n·P] and [columns, n·P]) so one sgemm sums over all of them.
private func pointwiseWeightGradient(_ x: Tensor, _ gy: Tensor, _ g: ConvGeometry,
                                     into gw: UnsafeMutableBufferPointer<Float>) {
    let (plane, blocks, group) = (g.pointwisePlane, g.pointwiseWeightBlocks, g.pointwiseImageGroup)
    let splitRows = g.outputChannels >= g.channels
    let side = splitRows ? g.outputChannels : g.channels
    x.storage.withUnsafeBufferPointer { xs in
        gy.storage.withUnsafeBufferPointer { gys in
            Parallel.forEachIndex(blocks) { block in
                let range = (side * block / blocks)..<(side * (block + 1) / blocks)
                let rows = splitRows ? range : 0..<g.outputChannels
                let columns = splitRows ? 0..<g.channels : range
                let gyRows = gys.baseAddress! + rows.lowerBound * plane
                let xRows = xs.baseAddress! + columns.lowerBound * plane
                let gwBlock = gw.baseAddress! + rows.lowerBound * g.channels + columns.lowerBound
                if plane == 1 {   // dW [O, C] += dy [N, O]ᵀ · x [N, C]
                    BLAS.gemm(transposeA: true, m: rows.count, n: columns.count, k: g.batch,
                              a: gyRows, lda: g.outputChannels, b: xRows, ldb: g.channels,
                              beta: 1, c: gwBlock, ldc: g.channels)
                    return
                }
                if group == 1 {
                    for n in 0..<g.batch {
                        BLAS.gemm(transposeB: true, m: rows.count, n: columns.count, k: plane,
                                  a: gyRows + n * g.outputChannels * plane, lda: plane,
                                  b: xRows + n * g.channels * plane, ldb: plane,
                                  beta: 1, c: gwBlock, ldc: g.channels)
                    }
                    return
                }
                var gathered = uninitializedFloats((rows.count + columns.count) * group * plane)
                gathered.withUnsafeMutableBufferPointer { buffer in
                    let (gyGroup, xGroup) = (buffer.baseAddress!, buffer.baseAddress! + rows.count * group * plane)
                    for n0 in stride(from: 0, to: g.batch, by: group) {
                        let n1 = min(g.batch, n0 + group), sums = (n1 - n0) * plane
                        qat_pointwise_gather(gyRows, g.outputChannels * plane, rows.count, plane, n0, n1, gyGroup)
                        qat_pointwise_gather(xRows, g.channels * plane, columns.count, plane, n0, n1, xGroup)
                        BLAS.gemm(transposeB: true, m: rows.count, n: columns.count, k: sums,
                                  a: gyGroup, lda: sums, b: xGroup, ldb: sums,
                                  beta: 1, c: gwBlock, ldc: g.channels)
                    }
                }
            }
        }
    }
}
