// BatchNorm's loops over x [N, C, P] (P = H·W); the math is in Sources/QATCore/Ops/BatchNorm.swift.
// Every per-channel sum is in Double, in one fixed order on every path and thread count:
// a plane's sum has 8 lanes, lane j adding positions p ≡ j (mod 8) in order from +0, folded as
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)); a channel's total adds its planes' sums in
// sample order from 0. Paths: AVX-512 (4 planes side by side, one zmm each), AVX2 (two ymm each),
// portable C; all give the same bits.
#pragma once
#include <stddef.h>

// The path the functions below take: 2 AVX-512 (F + VL), 1 AVX2, 0 portable.
int qat_bn_isa(void);
// Tests: force a path (taken only if the CPU has it), or −1 for cpuid's choice. Returns the path now used.
int qat_bn_force_isa(int isa);
// Tests: the AVX2 sums and squared deviations on planes of 8 or more positions one plane at a time
// (1, the default) or 4 side by side (0, the previous loops); the same bits. Returns the previous setting.
int qat_bn_avx2_one_plane(int on);

// Plane q = (n, c) with c = q mod C. Planes [q0, q1): sums[q] = Σ_p x[q, p] in the order above
// (any split of the planes gives the same bits).
void qat_bn_plane_sums(const float *restrict x, double *restrict sums, long channels, long plane, long q0, long q1);
// Planes [q0, q1): squares[q] = Σ_p (x[q, p] − mean[c])² in Double, same order.
void qat_bn_plane_squared_deviations(const float *restrict x, const double *restrict mean, double *restrict squares,
                                     long channels, long plane, long q0, long q1);
// totals[c] = Σ_n planes[n·C + c], added in sample order from 0: a channel's total from its planes'.
void qat_bn_channel_totals(const double *restrict planes, double *restrict totals, long batch, long channels);
// The activation BatchNorm may apply in its own passes (ReLU, ReLU6, Clip(+0, b)): forward
// v < 0 ? 0 : v, then that > top ? top : that (qat_relu6_forward / qat_clip_forward's rule; −0 and
// NaN pass through); backward g where pass_above < v ≤ pass_max (NaN fails), +0 elsewhere.
// ReLU: {+∞, 0, +∞}; ReLU6: {6, 0, the float below 6}; Clip(+0, b): {b, −least subnormal, b}.
typedef struct { float top, pass_above, pass_max; } qat_bn_clamp;

// Planes [q0, q1) (plane q = (n, c) with c = q mod C): y = γ·((x − μ)·s) + β, all in float; with
// a clamp (non-NULL), then clamped as above.
void qat_bn_normalize(const float *restrict x, float *restrict y, const float *restrict mean,
                      const float *restrict inverse_std, const float *restrict gamma,
                      const float *restrict beta, long channels, long plane, long q0, long q1,
                      const qat_bn_clamp *clamp);
// BatchNorm fused with the clamp after it, backward: planes [q0, q1), g = 0 + (gy where the clamp
// passes γ·((x − μ)·s) + β, else +0): the activation's input gradient, the test on the recomputed
// normalize (the same float expression as qat_bn_normalize, so the same outcome as the forward's).
void qat_bn_clamp_mask_gradient(const float *restrict gy, const float *restrict x, const float *restrict mean,
                                const float *restrict inverse_std, const float *restrict gamma,
                                const float *restrict beta, const qat_bn_clamp *clamp, float *restrict g,
                                long channels, long plane, long q0, long q1);
// Planes [q0, q1): sums[q] = Σ_p gy and sums_normalized[q] = Σ_p gy·x̂, same order, with
// x̂ = (x − μ)·s and gy·x̂ computed in float.
void qat_bn_plane_gradient_sums(const float *restrict gy, const float *restrict x, const float *restrict mean,
                                const float *restrict inverse_std, double *restrict sums,
                                double *restrict sums_normalized, long channels, long plane, long q0, long q1);
// BatchNorm fused with the clamp after it: qat_bn_plane_gradient_sums with gy replaced by
// qat_bn_clamp_mask_gradient's g, computed on the fly (the same bits, without g in memory).
void qat_bn_clamp_plane_gradient_sums(const float *restrict gy, const float *restrict x, const float *restrict mean,
                                      const float *restrict inverse_std, const float *restrict gamma,
                                      const float *restrict beta, const qat_bn_clamp *clamp, double *restrict sums,
                                      double *restrict sums_normalized, long channels, long plane, long q0, long q1);
// Planes [q0, q1), training: gx (+)= k·(gy − mean_grad − x̂·mean_grad_normalized), k = γ·s per channel;
// eval (mean_grad == NULL): gx (+)= k·gy. With overwrite, gx is written as 0 + value (the same
// bits as adding into a zeroed buffer) and need not be initialised.
void qat_bn_input_grad(const float *restrict gy, const float *restrict x, const float *restrict mean,
                       const float *restrict inverse_std, const float *restrict scale,
                       const float *restrict mean_grad, const float *restrict mean_grad_normalized,
                       float *restrict gx, int overwrite, long channels, long plane, long q0, long q1);
// BatchNorm fused with the clamp after it: qat_bn_input_grad with gy replaced by
// qat_bn_clamp_mask_gradient's g, computed on the fly (the same bits, without g in memory).
void qat_bn_clamp_input_grad(const float *restrict gy, const float *restrict x, const float *restrict mean,
                             const float *restrict inverse_std, const float *restrict gamma,
                             const float *restrict beta, const qat_bn_clamp *clamp, const float *restrict scale,
                             const float *restrict mean_grad, const float *restrict mean_grad_normalized,
                             float *restrict gx, int overwrite, long channels, long plane, long q0, long q1);
