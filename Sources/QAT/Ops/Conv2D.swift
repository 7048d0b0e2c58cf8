import CKernels

/// 2-D convolution (cross-correlation, as in PyTorch) by im2col + one sgemm per batch.
///
/// x: [N, C, H, W], weight: [O, C, K, K], bias: [O] → y: [N, O, Ho, Wo]
/// with Ho = (H + 2·padding − K) / stride + 1 (the same for Wo).
public struct ConvGeometry: Equatable, Sendable {
    public var batch, channels, height, width: Int
    public var outputChannels, kernel, stride, padding: Int

    // Spelled out so it is public: the INT8 kernels take a ConvGeometry from outside the library.
    public init(batch: Int, channels: Int, height: Int, width: Int, outputChannels: Int, kernel: Int,
                stride: Int, padding: Int) {
        self.batch = batch
        self.channels = channels
        self.height = height
        self.width = width
        self.outputChannels = outputChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
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

    let columns = im2col(x.value, g)
    // y2d [O, N·P] = W [O, CKK] · columns [CKK, N·P]
    var y2d = uninitializedFloats(g.outputChannels * g.columns)
    weight.value.storage.withUnsafeBufferPointer { w in
        columns.withUnsafeBufferPointer { c in
            y2d.withUnsafeMutableBufferPointer { y in
                BLAS.gemm(m: g.outputChannels, n: g.columns, k: g.patchSize,
                          a: w.baseAddress!, lda: g.patchSize, b: c.baseAddress!, ldb: g.columns,
                          c: y.baseAddress!, ldc: g.columns)
            }
        }
    }
    let y = Variable(channelMajorToBatchMajor(y2d, g, bias: bias?.value),
                     requiresGrad: needsPullback(tape, x, weight, bias))
    guard y.requiresGrad, let tape else { return y }

    tape.record {
        guard let gyTensor = y.grad else { return }
        let gy2d = batchMajorToChannelMajor(gyTensor, g)   // [O, N·P]
        gy2d.withUnsafeBufferPointer { gy in
            if weight.requiresGrad {
                // dW [O, CKK] += gy2d [O, N·P] · columnsᵀ
                columns.withUnsafeBufferPointer { c in
                    weight.withGradient { gw in
                        BLAS.gemm(transposeB: true, m: g.outputChannels, n: g.patchSize, k: g.columns,
                                  a: gy.baseAddress!, lda: g.columns, b: c.baseAddress!, ldb: g.columns,
                                  beta: 1, c: gw.baseAddress!, ldc: g.patchSize)
                    }
                }
            }
            if let bias, bias.requiresGrad {
                let perChannel = g.columns
                bias.withGradient { gb in
                    for o in 0..<g.outputChannels {
                        var sum: Float = 0
                        let row = gy.baseAddress! + o * perChannel
                        for j in 0..<perChannel { sum += row[j] }
                        gb[o] += sum
                    }
                }
            }
            if x.requiresGrad {
                // dColumns [CKK, N·P] = Wᵀ · gy2d, then scatter-add back onto the image.
                var gradColumns = uninitializedFloats(g.patchSize * g.columns)
                weight.value.storage.withUnsafeBufferPointer { w in
                    gradColumns.withUnsafeMutableBufferPointer { gc in
                        BLAS.gemm(transposeA: true, m: g.patchSize, n: g.columns, k: g.outputChannels,
                                  a: w.baseAddress!, lda: g.patchSize, b: gy.baseAddress!, ldb: g.columns,
                                  c: gc.baseAddress!, ldc: g.columns)
                    }
                }
                x.withGradient { gx in col2imAdd(gradColumns, g, into: gx) }
            }
        }
    }
    return y
}

/// The output columns j whose input column j·stride − padding + kw lies inside the image.
@inline(__always)
func validColumns(_ g: ConvGeometry, kw: Int) -> Range<Int> {
    let ow = g.outputWidth
    // j ≥ ceil((padding − kw) / stride) and j ≤ floor((width − 1 + padding − kw) / stride)
    let low = max(0, (g.padding - kw + g.stride - 1) / g.stride)
    let highInclusive = g.width - 1 + g.padding - kw
    let high = highInclusive < 0 ? 0 : min(ow, highInclusive / g.stride + 1)
    return low..<max(low, high)
}

/// Unfolds x [N, C, H, W] into columns [C·K·K, N·Ho·Wo]; padding reads as 0.
func im2col(_ x: Tensor, _ g: ConvGeometry) -> [Float] {
    let (oh, ow) = (g.outputHeight, g.outputWidth)
    let plane = oh * ow
    // Every element is written below (copied or zeroed), so the buffer starts uninitialised.
    return [Float](unsafeUninitializedCapacity: g.patchSize * g.columns) { cols, initialized in
        x.storage.withUnsafeBufferPointer { xs in
            Parallel.forEachChunk(g.patchSize) { rows in
                for row in rows {
                    let kw = row % g.kernel, kh = (row / g.kernel) % g.kernel, c = row / (g.kernel * g.kernel)
                    let valid = validColumns(g, kw: kw)
                    for n in 0..<g.batch {
                        let image = xs.baseAddress! + (n * g.channels + c) * g.height * g.width
                        let out = cols.baseAddress! + row * g.columns + n * plane
                        for i in 0..<oh {
                            let ih = i * g.stride - g.padding + kh
                            let dst = out + i * ow
                            if ih < 0 || ih >= g.height || valid.isEmpty {
                                dst.update(repeating: 0, count: ow)
                                continue
                            }
                            dst.update(repeating: 0, count: valid.lowerBound)
                            (dst + valid.upperBound).update(repeating: 0, count: ow - valid.upperBound)
                            let src = image + ih * g.width - g.padding + kw
                            if g.stride == 1 {
                                (dst + valid.lowerBound).update(from: src + valid.lowerBound, count: valid.count)
                            } else {
                                for j in valid { dst[j] = src[j * g.stride] }
                            }
                        }
                    }
                }
            }
        }
        initialized = g.patchSize * g.columns
    }
}

/// The adjoint of im2col: adds columns [C·K·K, N·Ho·Wo] back into gx [N, C, H, W].
func col2imAdd(_ columns: [Float], _ g: ConvGeometry, into gx: UnsafeMutableBufferPointer<Float>) {
    let (oh, ow) = (g.outputHeight, g.outputWidth)
    let plane = oh * ow
    columns.withUnsafeBufferPointer { cols in
        // Each input channel's rows touch only that channel, so channels split safely over threads.
        Parallel.forEachChunk(g.channels) { channels in
            for c in channels {
                for kh in 0..<g.kernel {
                    for kw in 0..<g.kernel {
                        let row = (c * g.kernel + kh) * g.kernel + kw
                        let valid = validColumns(g, kw: kw)
                        for n in 0..<g.batch {
                            let image = gx.baseAddress! + (n * g.channels + c) * g.height * g.width
                            let src = cols.baseAddress! + row * g.columns + n * plane
                            for i in 0..<oh {
                                let ih = i * g.stride - g.padding + kh
                                if ih < 0 || ih >= g.height { continue }
                                let dst = image + ih * g.width - g.padding + kw
                                let line = src + i * ow
                                qat_strided_add(dst, line, valid.lowerBound, valid.upperBound, g.stride)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [O, N·P] → [N, O, P] (+ bias per channel).
func channelMajorToBatchMajor(_ y2d: [Float], _ g: ConvGeometry, bias: Tensor?) -> Tensor {
    let plane = g.outputHeight * g.outputWidth
    var y = Tensor(shape: [g.batch, g.outputChannels, g.outputHeight, g.outputWidth],
                   storage: uninitializedFloats(g.columns * g.outputChannels))
    y2d.withUnsafeBufferPointer { src in
        y.storage.withUnsafeMutableBufferPointer { dst in
            for n in 0..<g.batch {
                for o in 0..<g.outputChannels {
                    let b = bias?.storage[o] ?? 0
                    let s = src.baseAddress! + o * g.columns + n * plane
                    let d = dst.baseAddress! + (n * g.outputChannels + o) * plane
                    for p in 0..<plane { d[p] = s[p] + b }
                }
            }
        }
    }
    return y
}

/// [N, O, P] → [O, N·P], the layout the weight-gradient gemm wants.
func batchMajorToChannelMajor(_ y: Tensor, _ g: ConvGeometry) -> [Float] {
    let plane = g.outputHeight * g.outputWidth
    var out = uninitializedFloats(y.count)
    y.storage.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            for n in 0..<g.batch {
                for o in 0..<g.outputChannels {
                    let s = src.baseAddress! + (n * g.outputChannels + o) * plane
                    let d = dst.baseAddress! + o * g.columns + n * plane
                    for p in 0..<plane { d[p] = s[p] }
                }
            }
        }
    }
    return out
}
