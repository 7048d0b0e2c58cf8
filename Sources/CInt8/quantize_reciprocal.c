// Quantize (and HardSwish → quantize) on AVX2 without a division per value: the same codes as
// qat_i8_quantize's ties-to-even loop, which vdivps bounds (one division per 8 values, two with
// HardSwish's /6).
//
// Why the codes are the same. Let r = RN(1/scale) (a normal float: the caller checks) and
// Q = x / scale. The loop rounds t = RN(Q) to an integer; here t' = RN(x · r) = Q(1 + α)(1 + β)
// with |α|, |β| ≤ 2^-24, so |t' − t| ≤ 3.0001 · 2^-24 · |Q|. Both are clamped to the code range
// [low, high] (integers with |low|, |high| ≤ 255; clamping first is the same as rounding first,
// and takes two values no further apart), where the bound gives |t' − t| < 2^-14.4. Two values that
// close round to different integers only if a half-integer lies between them, and then t' is within
// 2^-14.4 of it: so every vector whose t' lies within 2^-12 of a half-integer (or is NaN) is done
// again by the exact loop, and every other one rounds as the loop does. With HardSwish, its /6 is a
// product with RN(1/6) too: t' then lies within 6.001 · 2^-24 · |Q| < 2^-13.4 of t, still inside the
// margin. About 1 value in 2000 is that close to a tie.
#include <immintrin.h>
#include <math.h>
#include "int8_internal.h"

#pragma clang fp contract(off)  // each product rounded on its own, as the error bound counts them

enum { BLOCK = 32 };  // values per check: a block with a near tie or a NaN is redone exactly

int qat_i8_reciprocal_quantize_allowed = 1;
void qat_i8_allow_reciprocal_quantize(int allowed) { qat_i8_reciprocal_quantize_allowed = allowed; }

int qat_i8_reciprocal_quantize_applies(float scale) {
    const float r = 1.0f / scale;
    return qat_i8_reciprocal_quantize_allowed && isnormal(scale) && isnormal(r);
}

// Eight quotients t' (already products): flagged when near a tie or NaN, then clamped and rounded
// (vcvtps2dq rounds to nearest even; clamp∘round = round∘clamp, the bounds being integers). The
// distance to the nearest integer is taken before the clamp: a clamped value differs from the
// loop's only near a half-integer inside the range, where clamping changes nothing; one compare,
// "not less than" (true for NaN), flags both cases.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
__m256i codes8(__m256 t, __m256 low, __m256 high, __m256 *flag) {
    const __m256 rounded = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 distance = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(t, rounded));
    *flag = _mm256_or_ps(*flag, _mm256_cmp_ps(distance, _mm256_set1_ps(0.5f - 0x1p-12f), _CMP_NLT_UQ));
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t, low), high));
}

// 32 int32 codes (without the zero point) from four vectors, stored as bytes in order.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void store32(__m256i c0, __m256i c1, __m256i c2, __m256i c3, __m256i zero, int8_t *q) {
    // packs work per 128-bit lane: dwords end as c0[0–3] c1[0–3] c2[0–3] c3[0–3] | the [4–7]s.
    const __m256i w01 = _mm256_add_epi16(_mm256_packs_epi32(c0, c1), zero), w23 = _mm256_add_epi16(_mm256_packs_epi32(c2, c3), zero);
    const __m256i bytes = _mm256_packs_epi16(w01, w23);
    _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

// HardSwish's x · clamp(x + 3, 0, 6) before its /6. min/max instead of the exact kernel's compares:
// they differ only for a NaN x + 3, whose vector is redone, and in the sign of a zero, which a code
// does not have.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2 __m256 swish_product8(__m256 x) {
    const __m256 kept = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(x, _mm256_set1_ps(3.0f)), _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
    return _mm256_mul_ps(x, kept);
}

static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void quantize_blocks(const float *x, float scale, int32_t zero, int32_t lo, int8_t *q, size_t count, const int swish) {
    const __m256 r = _mm256_set1_ps(1.0f / scale), sixth = _mm256_set1_ps(1.0f / 6.0f);
    const __m256 low = _mm256_set1_ps((float)(lo - zero)), high = _mm256_set1_ps((float)(127 - zero));
    const __m256i zero16 = _mm256_set1_epi16((int16_t)zero);
    size_t i = 0;
    for (; i + BLOCK <= count; i += BLOCK) {
        __m256 flag = _mm256_setzero_ps();
        __m256i c[4];
        for (int v = 0; v < 4; v++) {
            __m256 value = _mm256_loadu_ps(x + i + 8 * v);
            if (swish) value = _mm256_mul_ps(swish_product8(value), sixth);
            c[v] = codes8(_mm256_mul_ps(value, r), low, high, &flag);
        }
        if (_mm256_movemask_ps(flag)) {
            if (swish) qat_i8_hard_swish_quantize_exact(QAT_I8_AVX2, x + i, scale, zero, lo, QAT_I8_ROUND_HALF_EVEN, q + i, BLOCK);
            else qat_i8_quantize_exact(QAT_I8_AVX2, x + i, scale, zero, lo, QAT_I8_ROUND_HALF_EVEN, q + i, BLOCK);
            continue;
        }
        store32(c[0], c[1], c[2], c[3], zero16, q + i);
    }
    if (i == count) return;
    if (swish) qat_i8_hard_swish_quantize_exact(QAT_I8_AVX2, x + i, scale, zero, lo, QAT_I8_ROUND_HALF_EVEN, q + i, count - i);
    else qat_i8_quantize_exact(QAT_I8_AVX2, x + i, scale, zero, lo, QAT_I8_ROUND_HALF_EVEN, q + i, count - i);
}

QAT_I8_TARGET_AVX2 void qat_i8_quantize_reciprocal_avx2(const float *x, float scale, int32_t zero, int32_t lo, int8_t *q,
                                                        size_t count) {
    quantize_blocks(x, scale, zero, lo, q, count, 0);
}

QAT_I8_TARGET_AVX2 void qat_i8_hard_swish_quantize_reciprocal_avx2(const float *x, float scale, int32_t zero, int32_t lo,
                                                                   int8_t *q, size_t count) {
    quantize_blocks(x, scale, zero, lo, q, count, 1);
}
