// BatchNorm's loops over x [N, C, P] (P = H·W); the math is in Sources/QATCore/Ops/BatchNorm.swift.
// Every per-channel sum is one serial Double chain in a fixed order, so results do not depend on
// how channels are spread over threads; channels are walked 8 at a time (one AVX2 lane each where
// the CPU has it) so that 8 independent chains overlap instead of waiting on one add at a time.
#pragma once
#include <stddef.h>

// sums[c] = Σ_n Σ_p x[n, c, p] for channels [c0, c1), one chain per channel in (n, p) order.
void qat_bn_channel_sums(const float *restrict x, double *restrict sums,
                         long batch, long channels, long plane, long c0, long c1);
// squares[c] = Σ_n Σ_p (x[n, c, p] − mean[c])² in Double, same order, channels [c0, c1).
void qat_bn_channel_squared_deviations(const float *restrict x, const double *restrict mean,
                                       double *restrict squares,
                                       long batch, long channels, long plane, long c0, long c1);
// Planes [q0, q1) (plane q = (n, c) with c = q mod C): y = γ·((x − μ)·s) + β, all in float.
void qat_bn_normalize(const float *restrict x, float *restrict y, const float *restrict mean,
                      const float *restrict inverse_std, const float *restrict gamma,
                      const float *restrict beta, long channels, long plane, long q0, long q1);
// Channels [c0, c1): sum_grad[c] = Σ_n (Σ_p gy) and sum_grad_normalized[c] = Σ_n (Σ_p gy·x̂), with
// x̂ = (x − μ)·s recomputed in float and each plane's sum a chain of its own started at 0.
void qat_bn_gradient_sums(const float *restrict gy, const float *restrict x, const float *restrict mean,
                          const float *restrict inverse_std, double *restrict sum_grad,
                          double *restrict sum_grad_normalized,
                          long batch, long channels, long plane, long c0, long c1);
// Planes [q0, q1), training: gx (+)= k·(gy − mean_grad − x̂·mean_grad_normalized), k = γ·s per channel;
// eval (mean_grad == NULL): gx (+)= k·gy. With overwrite, gx is written as 0 + value (the same
// bits as adding into a zeroed buffer) and need not be initialised.
void qat_bn_input_grad(const float *restrict gy, const float *restrict x, const float *restrict mean,
                       const float *restrict inverse_std, const float *restrict scale,
                       const float *restrict mean_grad, const float *restrict mean_grad_normalized,
                       float *restrict gx, int overwrite, long channels, long plane, long q0, long q1);
