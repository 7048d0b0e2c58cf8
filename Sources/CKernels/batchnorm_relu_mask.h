// BatchNorm fused with the ReLU that reads it: ReLU's gradient through the recomputed output,
// for the backward passes that fold it in (batchnorm.c, batchnorm_elementwise.c). With
// x̂ = (x − μ)·s already computed, y = γ·x̂ + β rounds exactly as qat_bn_normalize's did (no
// fused multiply-add: include only under FP_CONTRACT OFF), and the gradient is
// 0 + (g where y > 0, else +0): what relu's pullback writes into a fresh gradient.
#pragma once
#include <stdint.h>
#include <string.h>

static inline float relu_masked_gradient(float g, float normalized, float gamma, float beta) {
    const float y = gamma * normalized + beta;
    // Bit mask rather than ?: so the loops vectorise (activations.c's keep_or_zero).
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    bits &= -(uint32_t)(y > 0.0f);
    float value;
    memcpy(&value, &bits, sizeof value);
    return 0.0f + value;
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) static inline __m256 relu_masked_gradient256(__m256 g, __m256 normalized, __m256 gamma,
                                                                             __m256 beta) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256 y = _mm256_add_ps(_mm256_mul_ps(gamma, normalized), beta);
    return _mm256_add_ps(zero, _mm256_and_ps(g, _mm256_cmp_ps(y, zero, _CMP_GT_OQ)));
}

__attribute__((target("avx512f"))) static inline __m512 relu_masked_gradient512(__m512 g, __m512 normalized, __m512 gamma,
                                                                                __m512 beta) {
    const __m512 zero = _mm512_setzero_ps();
    const __m512 y = _mm512_add_ps(_mm512_mul_ps(gamma, normalized), beta);
    return _mm512_add_ps(zero, _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, zero, _CMP_GT_OQ), g));
}
#endif
