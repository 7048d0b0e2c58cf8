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

// QATCore's hardSwish, y = x · clamp(x + 3, 0, 6) / 6, 16 or 8 floats at a time with the scalar
// loop's operations in its order (an add, two compares and selects, a multiply, a divide), so the
// same bits: a compare with a NaN is false, so a NaN keeps its NaN through the selects, as there.
// x and y may be the same array (an epilogue's in-place pass).
// (The division stays: p / 6 from a product and two FMAs, correctly rounded by Markstein's theorem,
// was 1.9× slower than vdivps on this machine's AMD EPYC.)
QAT_I8_TARGET_VNNI void qat_i8_hard_swish_vnni16(const float *x, float *y, size_t count) {
    const __m512 three = _mm512_set1_ps(3.0f), six = _mm512_set1_ps(6.0f), zero = _mm512_setzero_ps();
    for (size_t i = 0; i < count; i += 16) {
        const __mmask16 m = count - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (count - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i), shifted = _mm512_add_ps(v, three);
        __m512 kept = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(shifted, zero, _CMP_LT_OQ), shifted, zero);
        kept = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(shifted, six, _CMP_GT_OQ), kept, six);
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(_mm512_mul_ps(v, kept), six));
    }
}

QAT_I8_TARGET_AVX2 void qat_i8_hard_swish_avx2x8(const float *x, float *y, size_t count) {
    const __m256 three = _mm256_set1_ps(3.0f), six = _mm256_set1_ps(6.0f), zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i), shifted = _mm256_add_ps(v, three);
        __m256 kept = _mm256_blendv_ps(shifted, zero, _mm256_cmp_ps(shifted, zero, _CMP_LT_OQ));
        kept = _mm256_blendv_ps(kept, six, _mm256_cmp_ps(shifted, six, _CMP_GT_OQ));
        _mm256_storeu_ps(y + i, _mm256_div_ps(_mm256_mul_ps(v, kept), six));
    }
    for (; i < count; i++) {
        const float v = x[i], shifted = v + 3.0f;
        const float kept = shifted < 0.0f ? 0.0f : (shifted > 6.0f ? 6.0f : shifted);
        y[i] = v * kept / 6.0f;
    }
}
