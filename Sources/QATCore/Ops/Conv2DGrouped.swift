import CKernels
import QATIO

/// 2-D convolution with groups, dilation, asymmetric padding and rectangular kernels and strides
/// (ONNX Conv, PyTorch conv2d).
///
/// x: [N, C, H, W], weight: [O, C / groups, KH, KW], bias: [O] → y: [N, O, Ho, Wo] with
/// Ho = (H + top + bottom − dilation·(KH − 1) − 1) / stride + 1 (the same for Wo). Output channel
/// o sees input channels [g·C/groups, (g + 1)·C/groups) of its group g = o / (O / groups).
///
/// Three implementations, picked by the shape:
/// - groups 1, dilation 1, square kernel and stride, the same padding on all sides: the original
///   `conv2d(_:weight:bias:stride:padding:tape:)` (same bytes, same speed);
/// - depthwise (groups == C > 1, O a multiple of C): direct kernels in C, Conv2DDepthwise.swift
///   (im2col + sgemm with one row per group is slower);
/// - everything else: im2col (with dilation and padding) and one sgemm per group.
/// All split their work by image, plane, channel or fixed block, never by the thread count, so
/// results do not depend on `Parallel.threads`.
public func conv2d(_ x: Variable, weight: Variable, bias: Variable?, stride: Size2D, padding: Padding2D,
                   dilation: Size2D, groups: Int, tape: Tape?) -> Variable {
    precondition(x.value.rank == 4 && weight.value.rank == 4, "conv2d wants 4-D input and weight")
    let ws = weight.shape
    if groups == 1 && dilation == Size2D(1) && ws[2] == ws[3] && stride.isSquare && padding.isUniform {
        return conv2d(x, weight: weight, bias: bias, stride: stride.height, padding: padding.top, tape: tape)
    }
    let g = GroupedConvGeometry(input: x.shape, weight: ws, stride: stride, padding: padding,
                                dilation: dilation, groups: groups)
    precondition(bias == nil || bias!.shape == [ws[0]], "conv2d: bias \(bias!.shape) does not fit weight \(ws)")
    let depthwise = ConvKernels.depthwiseEnabled && g.isDepthwise
    var y = Tensor(shape: [g.batch, g.outputChannels, g.outputHeight, g.outputWidth],
                   storage: uninitializedFloats(g.batch * g.outputChannels * g.plane))
    if depthwise {
        depthwiseForward(x.value, weight.value, bias?.value, g, into: &y)
    } else {
        groupedForward(x.value, weight.value, bias?.value, g, into: &y)
    }
    let record = needsPullback(tape, x, weight, bias)
    let out = Variable(y, requiresGrad: record)
    guard record, let tape else { return out }
    // x itself, or (a fake quantizer's output) the recipe that recomputes it in backward
    let (savedX, wValue) = (x.savedForPullback(), weight.value)
    tape.record {
        guard let gy = out.grad else { return }
        if depthwise {
            if x.requiresGrad { x.withGradient { depthwiseInputGradient(gy, wValue, g, into: $0) } }
            if weight.requiresGrad {
                let xValue = savedX.tensor()
                weight.withGradient { depthwiseWeightGradient(xValue, gy, g, into: $0) }
            }
        } else if x.requiresGrad || weight.requiresGrad {
            groupedBackward(savedX.tensor(), wValue, gy, g, x: x.requiresGrad ? x : nil,
                            weight: weight.requiresGrad ? weight : nil)
        }
        if let bias, bias.requiresGrad {
            gy.storage.withUnsafeBufferPointer { gys in
                bias.withGradient { gb in
                    Parallel.forEachChunk(g.outputChannels) { channels in
                        qat_channel_sums(gys.baseAddress!, gb.baseAddress!, g.batch, g.outputChannels, g.plane,
                                         channels.lowerBound, channels.upperBound)
                    }
                }
            }
        }
    }
    return out
}

/// The sizes of a grouped convolution, checked against each other.
struct GroupedConvGeometry {
    let c: qat_conv2d_params

    init(input x: [Int], weight w: [Int], stride: Size2D, padding: Padding2D, dilation: Size2D, groups: Int) {
        precondition(groups > 0 && x[1] % groups == 0 && w[0] % groups == 0 && w[1] == x[1] / groups,
                     "conv2d: weight \(w) with \(groups) groups does not fit input \(x)")
        precondition(stride.height > 0 && stride.width > 0 && dilation.height > 0 && dilation.width > 0
                     && padding.top >= 0 && padding.left >= 0 && padding.bottom >= 0 && padding.right >= 0,
                     "conv2d: stride \(stride), dilation \(dilation) and padding \(padding) must be positive")
        let oh = slidingWindowCount(input: x[2], kernel: w[2], stride: stride.height, padBegin: padding.top,
                                    padEnd: padding.bottom, dilation: dilation.height)
        let ow = slidingWindowCount(input: x[3], kernel: w[3], stride: stride.width, padBegin: padding.left,
                                    padEnd: padding.right, dilation: dilation.width)
        precondition(oh > 0 && ow > 0, "conv2d: input \(x) smaller than the dilated kernel \(w)")
        c = qat_conv2d_params(batch: x[0], channels: x[1], height: x[2], width: x[3],
                              out_channels: w[0], out_height: oh, out_width: ow,
                              kernel_h: w[2], kernel_w: w[3], stride_h: stride.height, stride_w: stride.width,
                              pad_top: padding.top, pad_left: padding.left,
                              dilation_h: dilation.height, dilation_w: dilation.width, groups: groups)
    }

    var batch: Int { c.batch }
    var channels: Int { c.channels }
    var groups: Int { c.groups }
    var outputChannels: Int { c.out_channels }
    var outputHeight: Int { c.out_height }
    var outputWidth: Int { c.out_width }
    var plane: Int { c.out_height * c.out_width }
    /// Input and output channels of one group.
    var groupChannels: Int { c.channels / c.groups }
    var groupOutputChannels: Int { c.out_channels / c.groups }
    /// Rows of one group's column matrix: one per (input channel of the group, kernel row, kernel column).
    var patchSize: Int { groupChannels * c.kernel_h * c.kernel_w }
    /// Columns of the whole batch's column matrix: one per (image, output pixel).
    var columns: Int { c.batch * plane }
    var isDepthwise: Bool { c.groups == c.channels && c.groups > 1 }
    /// Images per block of the gemm path, so a block's columns stay near L2 (as ConvGeometry):
    /// fixed by the geometry, never by the thread count.
    var imagesPerBlock: Int { (batch + imageBlocks - 1) / imageBlocks }
    var imageBlocks: Int {
        let most = max(1, 262_144 / max(1, patchSize * plane))
        return max(1, (batch + most - 1) / most)
    }
    /// Row chunks of each group's weight-gradient gemm, fixed by the geometry.
    var weightGradientChunks: Int { patchSize >= 64 ? 2 : 1 }
}

// MARK: - im2col + one sgemm per group

/// Per block of images: each group's columns and y2d[group rows] = W_g · columns, then the
/// [O, n·P] → [n, O, P] transpose with the bias.
private func groupedForward(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ g: GroupedConvGeometry,
                            into y: inout Tensor) {
    let (block, og, patch) = (g.imagesPerBlock, g.groupOutputChannels, g.patchSize)
    let ld = block * g.plane
    withUnsafePointer(to: g.c) { gp in
        x.storage.withUnsafeBufferPointer { xs in
            w.storage.withUnsafeBufferPointer { ws in
                y.storage.withUnsafeMutableBufferPointer { ys in
                    withOptionalPointer(bias) { b in
                        Parallel.forEachIndex(g.imageBlocks) { blockIndex in
                            let n0 = blockIndex * block, n1 = min(g.batch, n0 + block)
                            if n0 >= n1 { return }
                            var scratch = uninitializedFloats((patch + g.outputChannels) * ld)
                            scratch.withUnsafeMutableBufferPointer { sb in
                                let (columns, y2d) = (sb.baseAddress!, sb.baseAddress! + patch * ld)
                                for group in 0..<g.groups {
                                    qat_im2col_grouped(xs.baseAddress!, columns, gp, group * g.groupChannels, n0, n1, ld)
                                    BLAS.gemm(m: og, n: (n1 - n0) * g.plane, k: patch,
                                              a: ws.baseAddress! + group * og * patch, lda: patch,
                                              b: columns, ldb: ld, c: y2d + group * og * ld, ldc: ld)
                                }
                                qat_channel_to_batch(y2d, ld, ys.baseAddress!, b, g.outputChannels, g.plane, n0, n1)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// gy as [O, N·P]; then, group by group, dW_g += gy_g · columns_gᵀ (the whole batch's columns,
/// rows split in fixed chunks) and, per block of images, dx += col2im(W_gᵀ · gy_g).
private func groupedBackward(_ xValue: Tensor, _ w: Tensor, _ gy: Tensor, _ g: GroupedConvGeometry,
                             x: Variable?, weight: Variable?) {
    let (og, patch, columns, block) = (g.groupOutputChannels, g.patchSize, g.columns, g.imagesPerBlock)
    var gy2d = uninitializedFloats(gy.count)
    withUnsafePointer(to: g.c) { gp in
        gy.storage.withUnsafeBufferPointer { gys in
            gy2d.withUnsafeMutableBufferPointer { g2 in
                Parallel.forEachChunk(g.batch) { images in
                    qat_batch_to_channel(gys.baseAddress!, g2.baseAddress! + images.lowerBound * g.plane, columns,
                                         g.outputChannels, g.plane, images.lowerBound, images.upperBound)
                }
            }
        }
        gy2d.withUnsafeBufferPointer { g2 in
            if let weight {
                var cols = uninitializedFloats(patch * columns)
                xValue.storage.withUnsafeBufferPointer { xs in
                    cols.withUnsafeMutableBufferPointer { cb in
                        weight.withGradient { gw in
                            for group in 0..<g.groups {
                                Parallel.forEachChunk(g.batch) { images in
                                    qat_im2col_grouped(xs.baseAddress!, cb.baseAddress! + images.lowerBound * g.plane, gp,
                                                       group * g.groupChannels, images.lowerBound, images.upperBound, columns)
                                }
                                Parallel.forEachIndex(g.weightGradientChunks) { chunk in
                                    let rows = (patch * chunk / g.weightGradientChunks)..<(patch * (chunk + 1) / g.weightGradientChunks)
                                    BLAS.gemm(transposeB: true, m: og, n: rows.count, k: columns,
                                              a: g2.baseAddress! + group * og * columns, lda: columns,
                                              b: cb.baseAddress! + rows.lowerBound * columns, ldb: columns,
                                              beta: 1, c: gw.baseAddress! + group * og * patch + rows.lowerBound, ldc: patch)
                                }
                            }
                        }
                    }
                }
            }
            if let x {
                w.storage.withUnsafeBufferPointer { ws in
                    x.withGradient { gx in
                        Parallel.forEachIndex(g.imageBlocks) { blockIndex in
                            let n0 = blockIndex * block, n1 = min(g.batch, n0 + block)
                            if n0 >= n1 { return }
                            var gradColumns = uninitializedFloats(patch * block * g.plane)
                            gradColumns.withUnsafeMutableBufferPointer { gc in
                                for group in 0..<g.groups {
                                    // dColumns [patch, n·P] = W_gᵀ · gy_g[:, n0·P ..< n1·P], then scatter-add.
                                    BLAS.gemm(transposeA: true, m: patch, n: (n1 - n0) * g.plane, k: og,
                                              a: ws.baseAddress! + group * og * patch, lda: patch,
                                              b: g2.baseAddress! + group * og * columns + n0 * g.plane, ldb: columns,
                                              c: gc.baseAddress!, ldc: block * g.plane)
                                    qat_col2im_grouped_add(gc.baseAddress!, gx.baseAddress!, gp, group * g.groupChannels,
                                                           n0, n1, block * g.plane)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

@inline(__always)
private func withOptionalPointer<R>(_ tensor: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let tensor else { return body(nil) }
    return tensor.storage.withUnsafeBufferPointer { body($0.baseAddress!) }
}
