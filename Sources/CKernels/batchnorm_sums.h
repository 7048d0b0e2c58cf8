// BatchNorm's per-plane Double sums: the order every path keeps, and the AVX-512 loops
// (batchnorm_sums_avx512.c) that batchnorm.c dispatches to. Internal to CKernels.
#pragma once
#include "batchnorm.h"

// The order of every Double sum (the same on every path, see batchnorm.h): a plane's sum has 8
// lanes, lane j taking positions p ≡ j (mod 8) in order from +0, folded as
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)); a channel's total adds its planes' sums in
// sample order from 0. Lanes start at +0 and never become −0, so a vector path may pad a plane's
// tail with zeros: adding +0 leaves every lane as it was.
#define LANES 8
// Planes summed side by side: independent chains, so the adds overlap instead of waiting.
#define PLANES 4
// Planes of at most this many positions take the AVX-512 small-plane blocks (8 planes a block).
#define SMALL_PLANE 4

#define INLINE static inline __attribute__((always_inline))

#if defined(__x86_64__)
// Each writes what its portable loop in batchnorm.c would (same order, same bits). The small-plane
// ones take whole blocks of 8 planes and return how many planes they did.
void qat_bn512_sums(const float *base, long plane, long planes, double *out);
void qat_bn512_squares(const float *base, long plane, long planes, const double *mean, double *out);
void qat_bn512_gradient_plain(const float *gs, const float *xs, long plane, long planes, const float *mean,
                              const float *inverse_std, double *out, double *out_normalized);
void qat_bn512_gradient_clamp(const float *gs, const float *xs, long plane, long planes, const float *mean,
                              const float *inverse_std, const float *gamma, const float *beta,
                              const qat_bn_clamp *clamp, double *out, double *out_normalized);
long qat_bn512_small_sums(const float *base, long plane, long planes, double *out);
long qat_bn512_small_squares(const float *base, long plane, long planes, const double *mean, double *out);
long qat_bn512_small_gradient(const float *gs, const float *xs, long plane, long planes, const float *mean,
                              const float *inverse_std, const float *gamma, const float *beta,
                              const qat_bn_clamp *clamp, double *out, double *out_normalized);
#endif
