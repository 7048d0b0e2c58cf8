import CKernels

// The blocked direct path of conv2d (CKernels/conv_blocked.c): padded or strided layers with any
// channel count, 16 channels a vector (8 for a pass whose vectorised channels fit 8), AVX-512 or
// AVX2 chosen once from cpuid. Every pass splits
// its work into units fixed by the geometry (images, or weight rows that each sum all images in a
// fixed order), so the result is the same for any `Parallel.threads`.

extension ConvGeometry {
    /// Whether the blocked kernels handle this layer: 2 ≤ K ≤ 7, stride 1 or 2, padding < K, AVX2+FMA.
    /// Measured on 8–128 channels they match or beat im2col + sgemm; the choice depends on the
    /// shape alone.
    public var blockedSupported: Bool { withUnsafePointer(to: c) { qat_conv_blocked_supported($0) != 0 } }
}

extension ConvKernels {
    /// The instruction set the blocked kernels run on: 2 AVX-512, 1 AVX2+FMA, 0 none.
    public static var blockedInstructionSet: Int { Int(qat_conv_blocked_isa()) }
    /// Tests: run the blocked kernels on `isa` (1 or 2, if the CPU has it), or 0 for cpuid's choice.
    @discardableResult
    public static func forceBlockedInstructionSet(_ isa: Int) -> Int {
        Int(qat_conv_blocked_force_isa(Int32(isa)))
    }
    /// Tests: 16 makes every blocked pass take 16 channels a vector (the reference for the 8-lane
    /// passes), 0 lets the shape choose. Returns the forced width (0 or 16).
    @discardableResult
    public static func forceBlockedLanes(_ lanes: Int) -> Int {
        Int(qat_conv_blocked_force_lanes(Int32(lanes)))
    }
    /// Tests: false runs the AVX2 weight gradient on the kernel instances (the reference for the
    /// block-major 8-lane path, K ≤ 3), true (the default) on that path.
    @discardableResult
    public static func enableBlockedAVX2WeightGradient(_ enabled: Bool) -> Bool {
        qat_conv_blocked_enable_avx2_weight_grad(enabled ? 1 : 0) != 0
    }
    /// Tests: false runs small output planes on the per-image register blocks (the reference for
    /// the blocks that span images), true (the default) lets the shape choose.
    @discardableResult
    public static func enableBlockedImageSlots(_ enabled: Bool) -> Bool {
        qat_conv_blocked_enable_slots(enabled ? 1 : 0) != 0
    }
    /// Tests: true runs the loops that bit-identical faster ones replaced (per-float forward
    /// stores, per-tap stride-2 slot reads, 4-pixel 3×3 tails, the float-by-float small-image
    /// phase copies), the reference for them; false (the default) the faster ones.
    @discardableResult
    public static func useBlockedReferenceLoops(_ enabled: Bool) -> Bool {
        qat_conv_blocked_use_reference_loops(enabled ? 1 : 0) != 0
    }
}

/// Runs body on images [n0, n1) split over the pool in whole groups of `group` images (fixed by
/// the shape: small planes register-block across a group's images).
private func forEachImageGroup(batch: Int, group: Int, _ body: (Int, Int) -> Void) {
    Parallel.forEachChunk((batch + group - 1) / group) { groups in
        body(groups.lowerBound * group, min(groups.upperBound * group, batch))
    }
}

/// Forward on the blocked path; returns the phased, zero-padded copy of x for the weight gradient.
func blockedForward(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, _ g: ConvGeometry,
                    into y: inout Tensor) -> [Float] {
    let cg = g.c
    return withUnsafePointer(to: cg) { gp in
        var phased = uninitializedFloats(g.batch * qat_conv_blocked_image_floats(gp) + qat_conv_blocked_slack())
        var packed = uninitializedFloats(qat_conv_blocked_weight_floats(gp))
        w.storage.withUnsafeBufferPointer { ws in
            packed.withUnsafeMutableBufferPointer { qat_conv_blocked_forward_weights(ws.baseAddress!, $0.baseAddress!, gp) }
        }
        x.storage.withUnsafeBufferPointer { xs in
            packed.withUnsafeBufferPointer { wf in
                phased.withUnsafeMutableBufferPointer { xq in
                    y.storage.withUnsafeMutableBufferPointer { ys in
                        withBiasPointer(bias) { b in
                            forEachImageGroup(batch: g.batch, group: qat_conv_blocked_image_group(gp)) { n0, n1 in
                                qat_conv_blocked_phase(xs.baseAddress!, xq.baseAddress!, gp, n0, n1)
                                qat_conv_blocked_forward(xq.baseAddress!, wf.baseAddress!, b, ys.baseAddress!, gp, n0, n1)
                            }
                        }
                    }
                }
            }
        }
        return phased
    }
}

/// gx += Wᵀ ⋆ gy on the blocked path, split over images.
func blockedInputGradient(_ gy: Tensor, _ w: Tensor, _ g: ConvGeometry,
                          into gx: UnsafeMutableBufferPointer<Float>) {
    let cg = g.c
    withUnsafePointer(to: cg) { gp in
        var packed = uninitializedFloats(qat_conv_blocked_weight_floats(gp))
        w.storage.withUnsafeBufferPointer { ws in
            packed.withUnsafeMutableBufferPointer { qat_conv_blocked_input_grad_weights(ws.baseAddress!, $0.baseAddress!, gp) }
        }
        gy.storage.withUnsafeBufferPointer { gys in
            packed.withUnsafeBufferPointer { wb in
                forEachImageGroup(batch: g.batch, group: qat_conv_blocked_image_group(gp)) { n0, n1 in
                    var scratch = uninitializedFloats(qat_conv_blocked_input_grad_scratch(gp))
                    scratch.withUnsafeMutableBufferPointer { sb in
                        qat_conv_blocked_input_grad(gys.baseAddress!, wb.baseAddress!, gx.baseAddress!, sb.baseAddress!,
                                                    gp, n0, n1)
                    }
                }
            }
        }
    }
}

/// gw += Σ gy ⋆ x on the blocked path: gy transposed pixel-major (split over images), then units
/// of (16 or 8 output channels, input channel[, kernel row]), each summing every image.
func blockedWeightGradient(phased: [Float], _ gy: Tensor, _ g: ConvGeometry,
                           into gw: UnsafeMutableBufferPointer<Float>) {
    let cg = g.c
    withUnsafePointer(to: cg) { gp in
        var pixelsMajor = uninitializedFloats(qat_conv_blocked_gy_pixels_major_floats(gp))
        gy.storage.withUnsafeBufferPointer { gys in
            pixelsMajor.withUnsafeMutableBufferPointer { gyt in
                Parallel.forEachChunk(g.batch) { images in
                    qat_conv_blocked_gy_pixels_major(gys.baseAddress!, gyt.baseAddress!, gp,
                                                     images.lowerBound, images.upperBound)
                }
            }
        }
        phased.withUnsafeBufferPointer { xq in
            pixelsMajor.withUnsafeBufferPointer { gyt in
                Parallel.forEachChunk(qat_conv_blocked_weight_grad_units(gp)) { units in
                    qat_conv_blocked_weight_grad(xq.baseAddress!, gyt.baseAddress!, gw.baseAddress!, gp,
                                                 units.lowerBound, units.upperBound)
                }
            }
        }
    }
}
