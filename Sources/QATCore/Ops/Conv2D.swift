import CKernels
import QATIO

/// 2-D convolution (cross-correlation, as in PyTorch).
///
/// Four implementations of the same math, each splitting its work over `Parallel.threads`:
/// - direct (CKernels/conv_kernels.c): stride 1, few input channels, rows ≥ 16 wide (LeNet's
///   conv1), vectorised over output columns on a zero-padded copy of x;
/// - c16 (conv_kernels.c): stride 1, no padding, O a multiple of 16, K ≤ 6 (LeNet's conv2, 1×1
///   convs), vectorised over 16 output channels;
/// - blocked direct kernels, 16 channels a vector (padded or strided layers with K ≤ 7:
///   Conv2DBlocked.swift, CKernels/conv_blocked.c);
/// - im2col + sgemm in L2-sized blocks of images (everything else); the column
///   loops are in C (qat_im2col, qat_col2im_add).
///
/// x: [N, C, H, W], weight: [O, C, K, K], bias: [O] → y: [N, O, Ho, Wo]
/// with Ho = (H + 2·padding − K) / stride + 1 (the same for Wo).
public struct ConvGeometry: Equatable, Sendable {
    public var batch, channels, height, width: Int
    public var outputChannels, kernel, stride, padding: Int

    // Spelled out so it is public: the INT8 kernels and tests build one from outside.
    public init(batch: Int, channels: Int, height: Int, width: Int,
                outputChannels: Int, kernel: Int, stride: Int, padding: Int) {
        (self.batch, self.channels, self.height, self.width) = (batch, channels, height, width)
        (self.outputChannels, self.kernel, self.stride, self.padding) = (outputChannels, kernel, stride, padding)
    }

    public var outputHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
    public var outputWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
    /// Rows of the column matrix: one per (input channel, kernel row, kernel column).
    public var patchSize: Int { channels * kernel * kernel }
    /// Columns of the column matrix: one per (image, output pixel).
    public var columns: Int { batch * outputHeight * outputWidth }
}

public func conv2d(_ x: Variable, weight: Variable, bias: Variable?,
                   stride: Int = 1, padding: Int = 0, tape: Tape?) -> Variable {
    precondition(x.value.rank == 4 && weight.value.rank == 4, "conv2d wants 4-D input and weight")
    let ws = weight.value.shape
    let g = ConvGeometry(batch: x.shape[0], channels: x.shape[1], height: x.shape[2], width: x.shape[3],
                         outputChannels: ws[0], kernel: ws[2], stride: stride, padding: padding)
    precondition(ws[1] == g.channels && ws[2] == ws[3],
                 "conv2d: weight \(ws) does not fit input \(x.shape)")
    precondition(g.outputHeight > 0 && g.outputWidth > 0, "conv2d: input \(x.shape) smaller than kernel")
    if ConvKernels.pointwiseEnabled && g.pointwiseSupported {   // 1×1: Conv2DPointwise.swift
        return pointwiseConv2d(x, weight: weight, bias: bias, g, tape: tape)
    }
    let record = needsPullback(tape, x, weight, bias)
    let useDirect = ConvKernels.directEnabled && g.directSupported
    let useC16 = ConvKernels.directEnabled && !useDirect && g.c16Supported
    let useBlocked = ConvKernels.directEnabled && ConvKernels.blockedEnabled && !useDirect && !useC16 && g.blockedSupported
    // Direct path: keeps the zero-padded input; gemm path: keeps the column matrix (training only);
    // 16-channel path: keeps nothing (x itself is read again); blocked path: the phased padded x.
    var saved: [Float] = []
    var y = Tensor(shape: [g.batch, g.outputChannels, g.outputHeight, g.outputWidth],
                   storage: uninitializedFloats(g.columns * g.outputChannels))
    let xValue = useC16 && record ? x.valueForPullback() : Tensor.zeros([0])   // only the 16-channel path reads x again
    if useDirect {
        saved = directForward(x.value, weight.value, bias?.value, g, into: &y)
    } else if useC16 {
        c16Forward(x.value, weight.value, bias?.value, g, into: &y)
    } else if useBlocked {
        saved = blockedForward(x.value, weight.value, bias?.value, g, into: &y)
    } else {
        saved = gemmForward(x.value, weight.value, bias?.value, g, keepColumns: record, into: &y)
    }
    let out = Variable(y, requiresGrad: record)
    guard record, let tape else { return out }

    tape.record {
        guard let gyTensor = out.grad else { return }
        let gy2d = !useBlocked && (x.requiresGrad || (weight.requiresGrad && !useDirect && !useC16))
            ? inputGradient(gyTensor, weight.value, g, into: x.requiresGrad ? x : nil) : []
        if useBlocked && x.requiresGrad {
            x.withGradient { gx in blockedInputGradient(gyTensor, weight.value, g, into: gx) }
        }
        if weight.requiresGrad {
            weight.withGradient { gw in
                if useDirect {
                    directWeightGradient(padded: saved, gyTensor, g, into: gw)
                } else if useC16 {
                    c16WeightGradient(xValue, gyTensor, g, into: gw)
                } else if useBlocked {
                    blockedWeightGradient(phased: saved, gyTensor, g, into: gw)
                } else {
                    gemmWeightGradient(columns: saved, gy2d: gy2d, g, into: gw)
                }
            }
        }
        if let bias, bias.requiresGrad {
            gyTensor.storage.withUnsafeBufferPointer { gy in
                bias.withGradient { gb in
                    let plane = g.outputHeight * g.outputWidth
                    Parallel.forEachChunk(g.outputChannels) { channels in
                        qat_channel_sums(gy.baseAddress!, gb.baseAddress!, g.batch, g.outputChannels, plane,
                                         channels.lowerBound, channels.upperBound)
                    }
                }
            }
        }
    }
    return out
}

/// Switches for tests and benchmarks: the direct kernel is used only where it is supported.
public enum ConvKernels {
    nonisolated(unsafe) public static var directEnabled = true
    /// The blocked direct kernels (Conv2DBlocked.swift) for padded / strided layers; off, those
    /// layers take im2col + sgemm, the reference they are tested against.
    nonisolated(unsafe) public static var blockedEnabled = true
}

extension ConvGeometry {
    var c: qat_conv_geometry {
        qat_conv_geometry(batch: batch, channels: channels, height: height, width: width,
                          out_channels: outputChannels, kernel: kernel, stride: stride, padding: padding)
    }
    /// Whether the direct (no im2col) kernel handles this layer: stride 1, wide rows, AVX2.
    public var directSupported: Bool { withUnsafePointer(to: c) { qat_conv_direct_supported($0) != 0 } }
    /// Whether the 16-output-channel direct kernel handles this layer: stride 1, no padding,
    /// O a multiple of 16, K ≤ 6, AVX2 (LeNet's conv2).
    public var c16Supported: Bool { withUnsafePointer(to: c) { qat_conv_c16_supported($0) != 0 } }
    /// Images per block of the gemm path, so that a block's columns stay in L2 (at most
    /// 1 MB, so 16 of LeNet's conv2 images), blocks as even as possible.
    /// Blocks depend on the geometry alone, never on the thread count: each block's gemm is the
    /// same computation whichever thread runs it, so results are identical for any `threads`.
    var imagesPerBlock: Int { (batch + imageBlocks - 1) / max(1, imageBlocks) }
    var imageBlocks: Int {
        let most = max(1, 262_144 / max(1, patchSize * outputHeight * outputWidth))
        return max(1, (batch + most - 1) / most)
    }
    /// Row chunks of the weight-gradient gemm: fixed by the geometry, like `imageBlocks`.
    var weightGradientChunks: Int { patchSize >= 64 ? 2 : 1 }
}

/// Direct forward: y = W ⋆ x + b on a zero-padded copy of x, which it returns for the pullback.
private func directForward(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ g: ConvGeometry,
                           into y: inout Tensor) -> [Float] {
    let cg = g.c
    return withUnsafePointer(to: cg) { gp in
        let image = g.channels * qat_conv_padded_height(gp) * qat_conv_padded_width(gp)
        var padded = uninitializedFloats(g.batch * image)
        x.storage.withUnsafeBufferPointer { xs in
            w.storage.withUnsafeBufferPointer { ws in
                padded.withUnsafeMutableBufferPointer { xp in
                    y.storage.withUnsafeMutableBufferPointer { ys in
                        withBiasPointer(bias) { b in
                            Parallel.forEachChunk(g.batch) { images in
                                let (n0, n1) = (images.lowerBound, images.upperBound)
                                qat_conv_pad(xs.baseAddress!, xp.baseAddress!, gp, n0, n1)
                                qat_conv_direct_forward(xp.baseAddress!, ws.baseAddress!, b, ys.baseAddress!, gp, n0, n1)
                            }
                        }
                    }
                }
            }
        }
        return padded
    }
}

/// dW += Σ gy ⋆ x, split over (output channel, input channel, kernel row): no reduction across threads.
private func directWeightGradient(padded: [Float], _ gy: Tensor, _ g: ConvGeometry,
                                  into gw: UnsafeMutableBufferPointer<Float>) {
    let cg = g.c
    withUnsafePointer(to: cg) { gp in
        padded.withUnsafeBufferPointer { xp in
            gy.storage.withUnsafeBufferPointer { gys in
                Parallel.forEachChunk(g.outputChannels * g.channels * g.kernel) { units in
                    qat_conv_direct_weight_grad(xp.baseAddress!, gys.baseAddress!, gw.baseAddress!, gp,
                                                units.lowerBound, units.upperBound)
                }
            }
        }
    }
}

/// Direct forward vectorised over 16 output channels, on x as it is; the batch split over threads
/// (each image's result is the same whichever thread computes it).
private func c16Forward(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ g: ConvGeometry, into y: inout Tensor) {
    let cg = g.c
    withUnsafePointer(to: cg) { gp in
        var wt = uninitializedFloats(w.count)
        w.storage.withUnsafeBufferPointer { ws in
            wt.withUnsafeMutableBufferPointer { qat_conv_c16_weights(ws.baseAddress!, $0.baseAddress!, gp) }
        }
        x.storage.withUnsafeBufferPointer { xs in
            wt.withUnsafeBufferPointer { wts in
                y.storage.withUnsafeMutableBufferPointer { ys in
                    withBiasPointer(bias) { b in
                        Parallel.forEachChunk(g.batch) { images in
                            qat_conv_c16_forward(xs.baseAddress!, wts.baseAddress!, b, ys.baseAddress!, gp,
                                                 images.lowerBound, images.upperBound)
                        }
                    }
                }
            }
        }
    }
}

/// dW += Σ gy ⋆ x with gy first transposed to [N, Ho, Wo, O]; split over (output-channel block,
/// input channel, kernel row): each unit sums all images in a fixed order, no reduction across threads.
private func c16WeightGradient(_ x: Tensor, _ gy: Tensor, _ g: ConvGeometry,
                               into gw: UnsafeMutableBufferPointer<Float>) {
    let cg = g.c
    let plane = g.outputHeight * g.outputWidth
    var gyt = uninitializedFloats(gy.count)
    withUnsafePointer(to: cg) { gp in
        gy.storage.withUnsafeBufferPointer { gys in
            gyt.withUnsafeMutableBufferPointer { gts in
                Parallel.forEachChunk(g.batch) { images in
                    qat_conv_nhwc(gys.baseAddress!, gts.baseAddress!, g.outputChannels, plane,
                                  images.lowerBound, images.upperBound)
                }
            }
        }
        x.storage.withUnsafeBufferPointer { xs in
            gyt.withUnsafeBufferPointer { gts in
                Parallel.forEachChunk(g.outputChannels / 16 * g.channels * g.kernel) { units in
                    qat_conv_c16_weight_grad(xs.baseAddress!, gts.baseAddress!, gw.baseAddress!, gp,
                                             units.lowerBound, units.upperBound)
                }
            }
        }
    }
}

/// im2col + sgemm, the batch split over threads (each thread: its images' columns, their gemm,
/// and the [O, n·P] → [n, O, P] transpose with the bias). With `keepColumns` the whole column
/// matrix [CKK, N·P] is built and returned for the weight gradient; without, each thread works
/// through L2-sized blocks of images and nothing is kept.
private func gemmForward(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ g: ConvGeometry,
                         keepColumns: Bool, into y: inout Tensor) -> [Float] {
    let cg = g.c
    let plane = g.outputHeight * g.outputWidth
    var columns = keepColumns ? uninitializedFloats(g.patchSize * g.columns) : []
    withUnsafePointer(to: cg) { gp in
        x.storage.withUnsafeBufferPointer { xs in
            w.storage.withUnsafeBufferPointer { ws in
                y.storage.withUnsafeMutableBufferPointer { ys in
                    columns.withUnsafeMutableBufferPointer { cols in
                        withBiasPointer(bias) { b in
                            Parallel.forEachIndex(g.imageBlocks) { first in
                                let blocks = first..<(first + 1)   // one block per task: claimed dynamically
                                let block = g.imagesPerBlock
                                var scratch = uninitializedFloats((keepColumns ? 0 : g.patchSize * block * plane)
                                                                  + g.outputChannels * block * plane)
                                scratch.withUnsafeMutableBufferPointer { sb in
                                    let y2d = sb.baseAddress!
                                    let ownColumns = y2d + g.outputChannels * block * plane
                                    for blockIndex in blocks {
                                        let n0 = blockIndex * block, n1 = min(g.batch, n0 + block)
                                        if n0 >= n1 { continue }
                                        let (c, ldc) = keepColumns ? (cols.baseAddress! + n0 * plane, g.columns)
                                                                   : (ownColumns, block * plane)
                                        qat_im2col(xs.baseAddress!, c, gp, n0, n1, ldc)
                                        // y2d [O, n·P] = W [O, CKK] · columns [CKK, n·P]
                                        BLAS.gemm(m: g.outputChannels, n: (n1 - n0) * plane, k: g.patchSize,
                                                  a: ws.baseAddress!, lda: g.patchSize, b: c, ldb: ldc,
                                                  c: y2d, ldc: block * plane)
                                        qat_channel_to_batch(y2d, block * plane, ys.baseAddress!, b,
                                                             g.outputChannels, plane, n0, n1)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    return columns
}

/// Returns gy as [O, N·P] (the weight-gradient gemm's layout) and, when `x` is given, adds
/// dx = col2im(Wᵀ · gy2d) into its gradient; both split over the batch.
private func inputGradient(_ gy: Tensor, _ w: Tensor, _ g: ConvGeometry, into x: Variable?) -> [Float] {
    let cg = g.c
    let plane = g.outputHeight * g.outputWidth
    var gy2d = uninitializedFloats(gy.count)
    withUnsafePointer(to: cg) { gp in
        gy.storage.withUnsafeBufferPointer { gys in
            w.storage.withUnsafeBufferPointer { ws in
                gy2d.withUnsafeMutableBufferPointer { g2 in
                    func run(_ gx: UnsafeMutableBufferPointer<Float>?) {
                        Parallel.forEachIndex(g.imageBlocks) { first in
                                let blocks = first..<(first + 1)   // one block per task: claimed dynamically
                            let block = g.imagesPerBlock
                            var gradColumns = gx == nil ? [] : uninitializedFloats(g.patchSize * block * plane)
                            gradColumns.withUnsafeMutableBufferPointer { gc in
                                for blockIndex in blocks {
                                    let n0 = blockIndex * block, n1 = min(g.batch, n0 + block)
                                    if n0 >= n1 { continue }
                                    qat_batch_to_channel(gys.baseAddress!, g2.baseAddress! + n0 * plane,
                                                         g.columns, g.outputChannels, plane, n0, n1)
                                    guard let gx else { continue }
                                    // dColumns [CKK, n·P] = Wᵀ · gy2d[:, n0·P ..< n1·P], then scatter-add.
                                    BLAS.gemm(transposeA: true, m: g.patchSize, n: (n1 - n0) * plane,
                                              k: g.outputChannels, a: ws.baseAddress!, lda: g.patchSize,
                                              b: g2.baseAddress! + n0 * plane, ldb: g.columns,
                                              c: gc.baseAddress!, ldc: block * plane)
                                    qat_col2im_add(gc.baseAddress!, gx.baseAddress!, gp, n0, n1, block * plane)
                                }
                            }
                        }
                    }
                    if let x { x.withGradient { gx in run(gx) } } else { run(nil) }
                }
            }
        }
    }
    return gy2d
}

/// dW [O, CKK] += gy2d [O, N·P] · columnsᵀ, split over column-matrix rows (no reduction across threads).
private func gemmWeightGradient(columns: [Float], gy2d: [Float], _ g: ConvGeometry,
                                into gw: UnsafeMutableBufferPointer<Float>) {
    columns.withUnsafeBufferPointer { c in
        gy2d.withUnsafeBufferPointer { gy in
            Parallel.forEachChunk(g.weightGradientChunks) { chunks in
                for chunk in chunks {
                let rows = (g.patchSize * chunk / g.weightGradientChunks)..<(g.patchSize * (chunk + 1) / g.weightGradientChunks)
                BLAS.gemm(transposeB: true, m: g.outputChannels, n: rows.count, k: g.columns,
                          a: gy.baseAddress!, lda: g.columns,
                          b: c.baseAddress! + rows.lowerBound * g.columns, ldb: g.columns,
                          beta: 1, c: gw.baseAddress! + rows.lowerBound, ldc: g.patchSize)
                }
            }
        }
    }
}

@inline(__always)
func withBiasPointer<R>(_ bias: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let bias else { return body(nil) }
    return bias.storage.withUnsafeBufferPointer { body($0.baseAddress!) }
}
