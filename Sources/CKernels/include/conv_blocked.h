#ifndef QAT_CONV_BLOCKED_H
#define QAT_CONV_BLOCKED_H
// Direct convolution for padded / strided layers with any channel count (conv_blocked.c; the math
// is in Sources/QATCore/Ops/Conv2D.swift, the driver in Conv2DBlocked.swift). Channels are taken
// 16 at a time (one AVX-512 vector, or two AVX2 vectors), or 8 (one ymm vector) by a pass whose
// vectorised channels (forward and weight gradient: output, input gradient: input) are at most 8;
// the instruction set is chosen once from cpuid. The input is kept as a zero-padded, stride-phased copy xq (see qat_conv_blocked_phase):
// for every tap the output pixels of a row then read consecutive addresses.
#include "float_kernels.h"

// Instruction set of the blocked kernels: 0 none (not x86 or no AVX2+FMA), 1 AVX2+FMA, 2 AVX-512F.
int qat_conv_blocked_isa(void);
// Tests: force 1 or 2 (only if the CPU has it), or 0 for the cpuid choice. Returns the ISA now used.
int qat_conv_blocked_force_isa(int isa);
// Tests: 16 makes every pass take 16 channels a vector (the layout before 8-lane passes existed),
// 0 lets the shape choose. Returns the forced width (0 or 16).
int qat_conv_blocked_force_lanes(int lanes);
// Tests: 0 turns the forward's image slots off (every plane on the per-image blocks), 1 back on
// (the default). Returns the setting now used.
int qat_conv_blocked_enable_slots(int enabled);
// Tests: 1 runs the loops that bit-identical faster ones replaced (per-float forward stores,
// per-tap stride-2 slot reads, 4-pixel 3×3 tails, the float-by-float small-image phase copies),
// 0 (the default) the faster ones. Returns the setting now used.
int qat_conv_blocked_use_reference_loops(int enabled);
// Tests: 0 runs the AVX2 weight gradient on the kernel instances (16 lanes above 8 output
// channels), 1 (the default) on the block-major 8-lane path for K ≤ 3. Returns the setting now used.
int qat_conv_blocked_enable_avx2_weight_grad(int enabled);
// Images a work unit of the forward and the input gradient: > 1 on small output planes, whose
// register blocks span consecutive images (split work over whole groups).
long qat_conv_blocked_image_group(const qat_conv_geometry *g);
// Whether the blocked kernels handle this layer: 2 ≤ K ≤ 7, stride 1 or 2, padding < K, and
// AVX2+FMA present (the shape and the CPU only).
int qat_conv_blocked_supported(const qat_conv_geometry *g);

// Floats per image of xq (its channels' phased planes and 16 zeros), and the slack after the
// last image (now 0).
long qat_conv_blocked_image_floats(const qat_conv_geometry *g);
long qat_conv_blocked_slack(void);
// Images [n0, n1): xq[n, c, a, b, u, v] = x[n, c, u·S + a − P, v·S + b − P] (0 outside).
void qat_conv_blocked_phase(const float *restrict x, float *restrict xq, const qat_conv_geometry *g,
                            long n0, long n1);
// Weight repacks: forward wf[ob, c, kh, kw, L o] and input-gradient wb[cb, o, kh, kw, L c], L the
// pass's lanes (16 or 8; lanes beyond O or C are 0). Each holds ceil(·/L)·L·(the other
// channels)·K·K floats.
long qat_conv_blocked_weight_floats(const qat_conv_geometry *g);
void qat_conv_blocked_forward_weights(const float *restrict w, float *restrict wf, const qat_conv_geometry *g);
void qat_conv_blocked_input_grad_weights(const float *restrict w, float *restrict wb, const qat_conv_geometry *g);

// Images [n0, n1): y [N, O, Ho, Wo] = W ⋆ x + bias (bias may be NULL).
void qat_conv_blocked_forward(const float *restrict xq, const float *restrict wf, const float *restrict bias,
                              float *restrict y, const qat_conv_geometry *g, long n0, long n1);
// Images [n0, n1): gx [N, C, H, W] += Wᵀ ⋆ gy. scratch: qat_conv_blocked_input_grad_scratch floats.
long qat_conv_blocked_input_grad_scratch(const qat_conv_geometry *g);
void qat_conv_blocked_input_grad(const float *restrict gy, const float *restrict wb, float *restrict gx,
                                 float *restrict scratch, const qat_conv_geometry *g, long n0, long n1);
// gy [N, O, Ho, Wo] → gyt [N, Ho·Wo, ceil(O/L)·L] (L the weight gradient's lanes; lanes beyond O
// are 0), images [n0, n1); on the AVX2 weight-gradient path block-major, gyt [O/8, N, Ho·Wo, 8]. gyt holds qat_conv_blocked_gy_pixels_major_floats floats.
long qat_conv_blocked_gy_pixels_major_floats(const qat_conv_geometry *g);
void qat_conv_blocked_gy_pixels_major(const float *restrict gy, float *restrict gyt, const qat_conv_geometry *g,
                                      long n0, long n1);
// Units [u0, u1) of qat_conv_blocked_weight_grad_units: (output-channel block, input channel) or
// (output-channel block, input channel, kernel row), as the ISA's kernel takes them. Each adds
// its weights' Σ over every image and output pixel, in a fixed order, to gw.
long qat_conv_blocked_weight_grad_units(const qat_conv_geometry *g);
void qat_conv_blocked_weight_grad(const float *restrict xq, const float *restrict gyt, float *restrict gw,
                                  const qat_conv_geometry *g, long u0, long u1);
#endif
