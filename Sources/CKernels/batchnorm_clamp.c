// BatchNorm fused with the clamp that reads it (ReLU, ReLU6, Clip(+0, b); Sources/QATCore/Ops/BatchNorm.swift):
// the backward's clamp mask as its own pass, recomputed from x. No fused multiply-add, as in
// batchnorm.c: the normalize here must round exactly as the forward's did.
#pragma STDC FP_CONTRACT OFF
#include "batchnorm.h"
#include "batchnorm_clamp_mask.h"

// The portable loop: the reference of the vector one below (same expressions, same bits).
static void mask_plane(const float *restrict gs, const float *restrict xs, float *restrict out, long plane,
                       float mu, float s, float k, float b, const qat_bn_clamp *clamp) {
    for (long p = 0; p < plane; p++)
        out[p] = clamp_masked_gradient(gs[p], (xs[p] - mu) * s, k, b, clamp->pass_above, clamp->pass_max);
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static void mask_plane_512(const float *gs, const float *xs, float *out, long plane,
                                                              float mean, float inverse_std, float gamma, float beta,
                                                              const qat_bn_clamp *clamp) {
    const __m512 mu = _mm512_set1_ps(mean), s = _mm512_set1_ps(inverse_std), k = _mm512_set1_ps(gamma),
                 b = _mm512_set1_ps(beta), above = _mm512_set1_ps(clamp->pass_above), max = _mm512_set1_ps(clamp->pass_max);
    for (long p = 0; p < plane; p += 16) {
        const __mmask16 m = p + 16 <= plane ? 0xffff : (__mmask16)((1u << (plane - p)) - 1);
        const __m512 normalized = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xs + p), mu), s);
        _mm512_mask_storeu_ps(out + p, m, clamp_masked_gradient512(_mm512_maskz_loadu_ps(m, gs + p), normalized, k, b, above, max));
    }
}
#endif

void qat_bn_clamp_mask_gradient(const float *restrict gy, const float *restrict x, const float *restrict mean,
                                const float *restrict inverse_std, const float *restrict gamma,
                                const float *restrict beta, const qat_bn_clamp *clamp, float *restrict g,
                                long channels, long plane, long q0, long q1) {
    for (long q = q0; q < q1; q++) {
        const long c = q % channels;
#if defined(__x86_64__)
        if (qat_bn_isa() == 2) {
            mask_plane_512(gy + q * plane, x + q * plane, g + q * plane, plane, mean[c], inverse_std[c], gamma[c], beta[c],
                           clamp);
            continue;
        }
#endif
        mask_plane(gy + q * plane, x + q * plane, g + q * plane, plane, mean[c], inverse_std[c], gamma[c], beta[c], clamp);
    }
}
