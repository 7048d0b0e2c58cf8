// BatchNorm fused with the clamp that reads it (ReLU, ReLU6, Clip(+0, b); see qat_bn_clamp in
// batchnorm.h): the clamp's gradient through the recomputed output, for the backward passes that
// fold it in (batchnorm.c, batchnorm_elementwise.c, batchnorm_clamp.c). With x̂ = (x − μ)·s already
// computed, y = γ·x̂ + β rounds exactly as qat_bn_normalize's did (no fused multiply-add: include
// only under FP_CONTRACT OFF), and the gradient is 0 + (g where pass_above < y ≤ pass_max, else
// +0): what the activation's pullback writes into a fresh gradient.
#pragma once
#include <stdint.h>
#include <string.h>

static inline float clamp_masked_gradient(float g, float normalized, float gamma, float beta, float above, float max) {
    const float y = gamma * normalized + beta;
    // Bit mask rather than ?: so the loops vectorise (activations.c's keep_or_zero). NaN fails both tests.
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= -(uint32_t)((y > above) & (y <= max));
    float value;
    memcpy(&value, &bits, sizeof value);
    return 0.0f + value;
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) static inline __m256 clamp_masked_gradient256(__m256 g, __m256 normalized, __m256 gamma,
                                                                              __m256 beta, __m256 above, __m256 max) {
    const __m256 y = _mm256_add_ps(_mm256_mul_ps(gamma, normalized), beta);
    const __m256 keep = _mm256_and_ps(_mm256_cmp_ps(y, above, _CMP_GT_OQ), _mm256_cmp_ps(y, max, _CMP_LE_OQ));
    return _mm256_add_ps(_mm256_setzero_ps(), _mm256_and_ps(g, keep));
}

__attribute__((target("avx512f"))) static inline __m512 clamp_masked_gradient512(__m512 g, __m512 normalized, __m512 gamma,
                                                                                 __m512 beta, __m512 above, __m512 max) {
    const __m512 y = _mm512_add_ps(_mm512_mul_ps(gamma, normalized), beta);
    const __mmask16 keep = _mm512_cmp_ps_mask(y, above, _CMP_GT_OQ) & _mm512_cmp_ps_mask(y, max, _CMP_LE_OQ);
    return _mm512_add_ps(_mm512_setzero_ps(), _mm512_maskz_mov_ps(keep, g));
}
#endif
