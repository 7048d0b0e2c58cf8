// AVX2 GEMM, two kernels (qat_i8_allow_avx2_pair_tiles picks; same results).
//
// The "quad" kernel (the first one, kept for comparison): vpmaddubsw (u8×s8 pairs into int16) would saturate: 2·255·127 > 32767. So both
// operands are widened to int16 and multiplied with vpmaddwd, whose pairwise int32 sums are
// exact (255·128·2 < 2^31). Loading 4 columns × 4 k of b and widening gives lanes
// (column, first pair of k) and (column, second pair); those two half sums accumulate
// separately and are added once, after the k loop, with vphaddd.
#include <immintrin.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include "int8_internal.h"

enum { MR = 6 };  // tile: MR rows × 8 columns, 12 ymm accumulators

// qat_i8_round_shift on 8 lanes.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
__m256i round_shift8(__m256i acc, int32_t k, qat_i8_round_mode mode) {
    if (k == 0) return acc;
    const __m128i count = _mm_cvtsi32_si128(k);
    const __m256i q = _mm256_sra_epi32(acc, count);
    const __m256i rem = _mm256_and_si256(acc, _mm256_set1_epi32((int32_t)((1u << k) - 1u)));
    const __m256i one = _mm256_set1_epi32(1);
    __m256i tie_up;  // qat_i8_shift_tie_up
    switch (mode) {
    case QAT_I8_ROUND_HALF_UP: tie_up = one; break;
    case QAT_I8_ROUND_HALF_DOWN: tie_up = _mm256_setzero_si256(); break;
    case QAT_I8_ROUND_STD: tie_up = _mm256_andnot_si256(_mm256_srai_epi32(acc, 31), one); break;  // acc ≥ 0
    default: tie_up = _mm256_and_si256(q, one); break;
    }
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(rem, tie_up), _mm256_set1_epi32((int32_t)((1u << (k - 1)) - 1u)));
    return _mm256_add_epi32(q, _mm256_srl_epi32(sum, count));
}

// qat_i8_round on 8 lanes: round to nearest even, then move the ties the mode breaks otherwise.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
__m256 round8(__m256 x, qat_i8_round_mode mode) {
    const __m256 r = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (mode == QAT_I8_ROUND_HALF_EVEN) return r;
    const __m256 d = _mm256_sub_ps(x, r), one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    __m256 up = _mm256_cmp_ps(d, _mm256_set1_ps(0.5f), _CMP_EQ_OQ);
    __m256 down = _mm256_cmp_ps(d, _mm256_set1_ps(-0.5f), _CMP_EQ_OQ);
    switch (mode) {
    case QAT_I8_ROUND_HALF_UP: down = zero; break;
    case QAT_I8_ROUND_HALF_DOWN: up = zero; break;
    default:  // away from zero
        up = _mm256_and_ps(up, _mm256_cmp_ps(x, zero, _CMP_GT_OQ));
        down = _mm256_and_ps(down, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
        break;
    }
    return _mm256_sub_ps(_mm256_add_ps(r, _mm256_and_ps(up, one)), _mm256_and_ps(down, one));
}

static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void store8(const qat_i8_gemm *g, int row, int col, __m256i acc) {
    int valid = g->n - col;
    if (valid <= 0) return;
    if (valid > 8) valid = 8;
    // Tails and linear's strided outputs: computed as a vector into lanes, then stored one by one.
    const int lanewise = valid < 8 || g->col_stride != 1;
    int8_t lanes8[8];
    const ptrdiff_t at = (ptrdiff_t)row * g->row_stride + (ptrdiff_t)col * g->col_stride;
    if (lanewise && g->output.kind != QAT_I8_OUT_INT8) {
        int32_t lanes[8];
        _mm256_storeu_si256((__m256i *)lanes, acc);
        for (int l = 0; l < valid; l++) qat_i8_store1(g, row, col + l, lanes[l]);
        return;
    }
    switch (g->output.kind) {
    case QAT_I8_OUT_INT32:
        _mm256_storeu_si256((__m256i *)((int32_t *)g->out + at), acc);
        break;
    case QAT_I8_OUT_FLOAT: {
        __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(g->output.scale[row]));
        if (g->output.offset) y = _mm256_add_ps(y, _mm256_set1_ps(g->output.offset[row]));
        _mm256_storeu_ps((float *)g->out + at, y);
        break;
    }
    case QAT_I8_OUT_INT8: {
        // Same steps as qat_i8_store1: convert, multiply, add the offset, round half even, clamp, add o_y;
        // or the rounding shift of qat_i8_requant_shift.
        const int32_t zero = g->output.zero_point;
        __m256i q;
        if (g->output.shift) {
            q = round_shift8(acc, g->output.shift[row], g->output.round_mode);
            q = _mm256_max_epi32(q, _mm256_set1_epi32(g->output.lo - zero));
            q = _mm256_min_epi32(q, _mm256_set1_epi32(g->output.hi - zero));
            q = _mm256_add_epi32(q, _mm256_set1_epi32(zero));
        } else {
            __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(g->output.scale[row]));
            if (g->output.offset) r = _mm256_add_ps(r, _mm256_set1_ps(g->output.offset[row]));
            r = round8(r, g->output.round_mode);
            r = _mm256_max_ps(r, _mm256_set1_ps((float)(g->output.lo - zero)));
            r = _mm256_min_ps(r, _mm256_set1_ps((float)(g->output.hi - zero)));
            q = _mm256_add_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(zero));
        }
        const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        int8_t *dst = lanewise ? lanes8 : (int8_t *)g->out + at;
        _mm_storel_epi64((__m128i *)dst, _mm_packs_epi16(q16, q16));
        if (lanewise)
            for (int l = 0; l < valid; l++) ((int8_t *)g->out)[at + l * g->col_stride] = lanes8[l];
        break;
    }
    }
}

// a16: the weights widened once per call, [m][k4][4] int16, broadcast 4 at a time.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void tile(const qat_i8_gemm *g, const int16_t *a16, int i0, int j0, const int mr) {
    __m256i lo[MR], hi[MR];  // columns j0…j0+3 and j0+4…j0+7, as half sums
    for (int r = 0; r < mr; r++) lo[r] = hi[r] = _mm256_setzero_si256();
    const uint8_t *b = g->b + (size_t)j0 * 4;
    for (int q = 0; q < g->k4; q++) {
        const uint8_t *bq = b + (size_t)q * g->npad * 4;
        const __m256i u0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)bq));
        const __m256i u1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(bq + 16)));
        for (int r = 0; r < mr; r++) {
            int64_t four;  // memcpy: the int16 array is read 64 bits at a time
            memcpy(&four, a16 + ((size_t)(i0 + r) * g->k4 + q) * 4, sizeof four);
            const __m256i w = _mm256_set1_epi64x(four);
            lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(u0, w));
            hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(u1, w));
        }
    }
    for (int r = 0; r < mr; r++) {
        // hadd gives columns 0 1 4 5 | 2 3 6 7; the 64-bit permute puts them in order.
        __m256i sum = _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo[r], hi[r]), 0xD8);
        sum = _mm256_add_epi32(sum, _mm256_set1_epi32(g->corr[i0 + r]));
        store8(g, i0 + r, j0, sum);
    }
}

static QAT_I8_TARGET_AVX2 void gemm_avx2_quads(const qat_i8_gemm *g) {
    const size_t count = (size_t)g->m * g->k4 * 4;
    int16_t *a16 = aligned_alloc(32, (count * sizeof(int16_t) + 31) / 32 * 32);
    if (!a16) { fprintf(stderr, "qat int8: out of memory\n"); abort(); }
    for (size_t i = 0; i < count; i++) a16[i] = g->a[i];
    for (int j0 = 0; j0 < g->n; j0 += 8) {
        for (int i0 = 0; i0 < g->m; i0 += MR) {
            switch (g->m - i0 < MR ? g->m - i0 : MR) {
            case 1: tile(g, a16, i0, j0, 1); break;
            case 2: tile(g, a16, i0, j0, 2); break;
            case 3: tile(g, a16, i0, j0, 3); break;
            case 4: tile(g, a16, i0, j0, 4); break;
            case 5: tile(g, a16, i0, j0, 5); break;
            default: tile(g, a16, i0, j0, 6); break;
            }
        }
    }
    free(a16);
}

#include "gemm_avx2_pairs.h"

int qat_i8_avx2_pair_tiles = 1;
void qat_i8_allow_avx2_pair_tiles(int allowed) { qat_i8_avx2_pair_tiles = allowed; }

QAT_I8_TARGET_AVX2 void qat_i8_gemm_avx2(const qat_i8_gemm *g) {
    if (qat_i8_avx2_pair_tiles) gemm_avx2_pairs(g);
    else gemm_avx2_quads(g);
}
