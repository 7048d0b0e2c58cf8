// BatchNorm fused with the ReLU that reads it (Sources/QATCore/Ops/BatchNorm.swift): the
// backward's ReLU mask, recomputed from x. No fused multiply-add, as in batchnorm.c: the
// normalize here must round exactly as the forward's did.
#pragma STDC FP_CONTRACT OFF
#include "batchnorm.h"

#include <stdint.h>
#include <string.h>

// The portable loop: the reference of the vector one below (same expressions, same bits).
static void mask_plane(const float *restrict gs, const float *restrict xs, float *restrict out, long plane,
                       float mu, float s, float k, float b) {
    for (long p = 0; p < plane; p++) {
        const float y = k * ((xs[p] - mu) * s) + b;
        // Bit mask rather than ?: so the loop vectorises (activations.c's keep_or_zero).
        uint32_t bits;
        memcpy(&bits, &gs[p], sizeof bits);
        bits &= -(uint32_t)(y > 0.0f);
        float value;
        memcpy(&value, &bits, sizeof value);
        out[p] = 0.0f + value;
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static void mask_plane_512(const float *gs, const float *xs, float *out, long plane,
                                                              float mean, float inverse_std, float gamma, float beta) {
    const __m512 mu = _mm512_set1_ps(mean), s = _mm512_set1_ps(inverse_std), k = _mm512_set1_ps(gamma),
                 b = _mm512_set1_ps(beta), zero = _mm512_setzero_ps();
    for (long p = 0; p < plane; p += 16) {
        const __mmask16 m = p + 16 <= plane ? 0xffff : (__mmask16)((1u << (plane - p)) - 1);
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(k, _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xs + p), mu), s)), b);
        const __mmask16 keep = _mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ);
        _mm512_mask_storeu_ps(out + p, m, _mm512_add_ps(zero, _mm512_maskz_loadu_ps(m & keep, gs + p)));
    }
}
#endif

void qat_bn_relu_mask_gradient(const float *restrict gy, const float *restrict x, const float *restrict mean,
                               const float *restrict inverse_std, const float *restrict gamma,
                               const float *restrict beta, float *restrict g, long channels, long plane,
                               long q0, long q1) {
    for (long q = q0; q < q1; q++) {
        const long c = q % channels;
#if defined(__x86_64__)
        if (qat_bn_isa() == 2) {
            mask_plane_512(gy + q * plane, x + q * plane, g + q * plane, plane, mean[c], inverse_std[c], gamma[c], beta[c]);
            continue;
        }
#endif
        mask_plane(gy + q * plane, x + q * plane, g + q * plane, plane, mean[c], inverse_std[c], gamma[c], beta[c]);
    }
}
