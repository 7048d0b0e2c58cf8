// Depthwise convolution, AVX2, straight from the padded plane of int8 codes (no rows), for
// kernels up to 4 columns wide without column dilation at column stride 1 or 2 (3×3 and its
// stride-2 form in mobilenetv2). Why: the row kernel (depthwise_simd.c) first writes each padded
// input row 4× over as rows and fills 16 output columns per output row, so a 7×7 output plane
// computes 16 columns for 7 and most of a 14×14 one is building rows.
//
// For output row oy, columns ox…ox + 7 and kernel row ky, lane i needs the codes
// x[ox·sw + i·sw + t], t = 0…3, of plane row oy·sh + ky·dh. vpmaddwd takes them in two pairs
// (t = 0, 1) and (t = 2, 3): one pshufb of a 16-byte load (stride 1) or two loads (stride 2)
// puts each pair side by side, sign-extended to int16, and the pair of weights is broadcast.
// Products and pair sums are exact in int32, as in the other paths. They sum the signed codes
// q = u − 128, so the constant is corr + 128·Σw: acc = Σ q·w + corr + 128·Σw = Σ u·w + corr,
// the row kernel's accumulators exactly (int32 wraps alike), requantized by the same steps.
#include <immintrin.h>
#include <string.h>
#include "int8_internal.h"

static int direct_allowed = 1;
void qat_i8_allow_direct_depthwise_avx2(int allowed) { direct_allowed = allowed; }

int qat_i8_depthwise_avx2_direct_applies(const qat_i8_conv_geometry *g) {
    return direct_allowed && g->kw <= 4 && g->dw == 1 && (g->sw == 1 || g->sw == 2);
}

// Requantizes 8 accumulators of output row oy, columns col…col + 7, into p->codes: the steps
// of qat_i8_store1 (convert, multiply, add the offset, round half even, clamp, add o_y).
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void store8_codes(const qat_i8_depthwise_plane *p, int oy, int col, __m256i acc) {
    const int valid = p->ow - col < 8 ? p->ow - col : 8;
    const qat_i8_output *o = &p->output;
    __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(o->scale[p->channel]));
    if (o->offset) r = _mm256_add_ps(r, _mm256_set1_ps(o->offset[p->channel]));
    r = _mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_max_ps(r, _mm256_set1_ps((float)(o->lo - o->zero_point)));
    r = _mm256_min_ps(r, _mm256_set1_ps((float)(o->hi - o->zero_point)));
    const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(o->zero_point));
    const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    const __m128i q8 = _mm_packs_epi16(q16, q16);
    int8_t *dst = p->codes + (size_t)oy * p->ow + col;
    if (valid == 8) { _mm_storel_epi64((__m128i *)dst, q8); return; }
    int8_t lanes[16];
    _mm_storeu_si128((__m128i *)lanes, q8);
    memcpy(dst, lanes, (size_t)valid);
}

// 8 output columns; kh and sw are constants after inlining. w01/w23: per kernel row, the
// weight pairs (t = 0, 1) and (t = 2, 3) as one int32 to broadcast.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void direct8(const qat_i8_depthwise_plane *p, const int32_t *w01, const int32_t *w23, __m128i pick01, __m128i pick23,
             __m256i corr, int oy, int ox, const int kh, const int sw) {
    __m256i a0 = corr, a1 = _mm256_setzero_si256();
    for (int ky = 0; ky < kh; ky++) {
        const int8_t *row = (const int8_t *)p->plane + (size_t)(oy * p->sh + ky * p->dh) * p->wp + (size_t)ox * sw;
        __m256i x01, x23;
        if (sw == 1) {  // bytes 0…10 hold every tap of the 8 columns
            const __m128i bytes = _mm_loadu_si128((const __m128i *)row);
            x01 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(bytes, pick01));
            x23 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(bytes, pick23));
        } else {  // stride 2: column i's pairs are bytes 2i, 2i + 1 and 2i + 2, 2i + 3
            x01 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)row));
            x23 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(row + 2)));
        }
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(x01, _mm256_set1_epi32(w01[ky])));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(x23, _mm256_set1_epi32(w23[ky])));
    }
    const __m256i acc = _mm256_add_epi32(a0, a1);
    if (p->codes) store8_codes(p, oy, ox, acc);
    else _mm256_storeu_si256((__m256i *)(p->acc + (size_t)oy * p->owpad + ox), acc);
}

// One output plane from p->plane (int8 codes, [hp][wp] and 128 spare bytes), p->w with kw4 = 1.
// Columns are taken 8 at a time while any remain (ox < ow ≤ owpad, so acc rows never overflow);
// the last group reads at most 7·sw + 18 bytes past a row, inside the next row or the spare bytes.
QAT_I8_TARGET_AVX2 void qat_i8_depthwise_plane_avx2_direct(const qat_i8_depthwise_plane *p) {
    const int kh = p->kh;
    int32_t w01[kh], w23[kh];
    int64_t sum = 0;
    for (int ky = 0; ky < kh; ky++) {
        const int8_t *w = p->w + (size_t)ky * 4;
        const int16_t pair01[2] = {w[0], w[1]}, pair23[2] = {w[2], w[3]};
        memcpy(&w01[ky], pair01, 4);
        memcpy(&w23[ky], pair23, 4);
        sum += w[0] + w[1] + w[2] + w[3];
    }
    const __m256i corr = _mm256_set1_epi32((int32_t)(uint32_t)((uint32_t)p->corr + 128u * (uint32_t)sum));
    const __m128i pick01 = _mm_setr_epi8(0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8);
    const __m128i pick23 = _mm_setr_epi8(2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10);
    for (int oy = 0; oy < p->oh; oy++) {
        if (kh == 3 && p->sw == 1) {
            for (int ox = 0; ox < p->ow; ox += 8) direct8(p, w01, w23, pick01, pick23, corr, oy, ox, 3, 1);
        } else if (kh == 3) {
            for (int ox = 0; ox < p->ow; ox += 8) direct8(p, w01, w23, pick01, pick23, corr, oy, ox, 3, 2);
        } else if (p->sw == 1) {
            for (int ox = 0; ox < p->ow; ox += 8) direct8(p, w01, w23, pick01, pick23, corr, oy, ox, kh, 1);
        } else {
            for (int ox = 0; ox < p->ow; ox += 8) direct8(p, w01, w23, pick01, pick23, corr, oy, ox, kh, 2);
        }
    }
}
