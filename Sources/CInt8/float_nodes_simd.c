// Global average pool for the AVX2 and VNNI paths. The sum of each plane must be the float32 sum
// in scan order (QATCore's globalAveragePool), a chain of dependent adds; eight planes are
// summed side by side instead, one per lane: eight consecutive elements of each plane are
// loaded and transposed, so that adding the eight transposed vectors in turn adds each plane's
// elements in scan order. The same sums as the portable loop, bit for bit.
#include <immintrin.h>
#include "int8_internal.h"

#pragma clang fp contract(off)

// r[k] lane l ← r[l] lane k.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2 void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Eight planes of floats (codes = NULL) or of codes dequantized as scale·(q − zero); returns
// the eight sums. x or q points at the first plane.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
__m256 sum8(const float *x, const int8_t *q, float scale, int32_t zero, size_t area) {
    const __m256 s = _mm256_set1_ps(scale);
    const __m256i z = _mm256_set1_epi32(zero);
    __m256 sum = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= area; i += 8) {
        __m256 r[8];
        for (int l = 0; l < 8; l++) {
            if (q) {
                const __m256i codes = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + l * area + i)));
                r[l] = _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_sub_epi32(codes, z)));
            } else {
                r[l] = _mm256_loadu_ps(x + l * area + i);
            }
        }
        transpose8(r);
        for (int k = 0; k < 8; k++) sum = _mm256_add_ps(sum, r[k]);
    }
    for (; i < area; i++) {
        float v[8];
        for (int l = 0; l < 8; l++) v[l] = q ? scale * (float)(q[l * area + i] - zero) : x[l * area + i];
        sum = _mm256_add_ps(sum, _mm256_loadu_ps(v));
    }
    return sum;
}

QAT_I8_TARGET_AVX2 size_t qat_i8_global_avgpool_fast(const float *x, const int8_t *q, float scale, int32_t zero,
                                                     size_t planes, size_t area, float factor, float *y) {
    size_t p = 0;
    for (; p + 8 <= planes; p += 8) {
        const __m256 sum = q ? sum8(NULL, q + p * area, scale, zero, area) : sum8(x + p * area, NULL, 0, 0, area);
        _mm256_storeu_ps(y + p, _mm256_mul_ps(sum, _mm256_set1_ps(factor)));
    }
    return p;
}
