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

// ---------------------------------------------------------------------------------------------
// The widened variant: the padded plane as int16 (p->plane16, built once per input channel by
// qat_i8_depthwise_avx2_widen_plane), so the taps need no sign extension per output. Why: the
// kernel above spends 2 pshufb + 2 cross-lane vpmovsxbw per kernel row and 8 outputs, and its
// store reloads every requantization constant per 8 outputs (int8 stores may alias them).
//   stride 1: lane i of (x[c + i], x[c + i + 1]) is one vpunpcklwd/hwd of two loads at c and c + 1
//             (256-bit: columns 0–3 | 8–11 and 4–7 | 12–15; one vperm2i128 per 16 outputs);
//   stride 2: the pairs (x[2i], x[2i + 1]) are a plain load at 2c, (x[2i + 2], x[2i + 3]) at 2c + 2.
// Same products and sums as above, so the same accumulators; the requantization steps are those
// of qat_i8_store1, with the constants in registers; floats and int32 go straight out.

static int widened_allowed = 1;
void qat_i8_allow_widened_depthwise_avx2(int allowed) { widened_allowed = allowed; }
int qat_i8_depthwise_avx2_widened_applies(void) { return widened_allowed; }

// Each row's codes, 16 per vpmovsxbw, into the interior (row stride wp, border already the zero
// code). A row's last store may run up to 15 elements past the row; a vector of the zero code
// written at the row's end then restores the border (the next row rewrites its own interior), so
// the plane needs 16 spare elements. src is read only inside its h·w bytes: near the plane's end
// from its last 16 bytes, shifted into place (a bounce buffer when the plane is smaller).
QAT_I8_TARGET_AVX2 void qat_i8_depthwise_avx2_widen_plane(const int8_t *src, int h, int w, int wp, int16_t zero,
                                                           int16_t *interior) {
    const size_t total = (size_t)h * w;
    const __m256i zeros = _mm256_set1_epi16(zero);
    for (int y = 0; y < h; y++) {
        int16_t *d = interior + (size_t)y * wp;
        for (int i = 0; i < w; i += 16) {
            const size_t at = (size_t)y * w + i;
            __m128i codes;
            if (at + 16 <= total) {
                codes = _mm_loadu_si128((const __m128i *)(src + at));
            } else if (total >= 16) {  // the plane's last 16 bytes, moved down by a pshufb (lanes past it: 0)
                static const int8_t from[32] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                                -128, -128, -128, -128, -128, -128, -128, -128,
                                                -128, -128, -128, -128, -128, -128, -128, -128};
                const size_t skip = at - (total - 16);
                codes = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + total - 16)),
                                         _mm_loadu_si128((const __m128i *)(from + skip)));
            } else {
                int8_t bounce[16] = {0};
                memcpy(bounce, src + at, total - at);
                codes = _mm_loadu_si128((const __m128i *)bounce);
            }
            _mm256_storeu_si256((__m256i *)(d + i), _mm256_cvtepi8_epi16(codes));
        }
        _mm256_storeu_si256((__m256i *)(d + w), zeros);
    }
}

// The requantization constants of one output channel, loaded once per plane.
typedef struct {
    __m256 scale, offset, low, high;
    __m256i zero;
    int has_offset;
} out_consts;

// Stores `valid` (1…16) bytes of q in order.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2 void store_bytes(int8_t *dst, __m128i q, int valid) {
    if (valid == 16) { _mm_storeu_si128((__m128i *)dst, q); return; }
    if (valid >= 8) { _mm_storel_epi64((__m128i *)dst, q); dst += 8; q = _mm_srli_si128(q, 8); valid -= 8; }
    if (valid >= 4) { const int32_t v = _mm_cvtsi128_si32(q); memcpy(dst, &v, 4); dst += 4; q = _mm_srli_si128(q, 4); valid -= 4; }
    if (valid >= 2) { const int16_t v = (int16_t)_mm_cvtsi128_si32(q); memcpy(dst, &v, 2); dst += 2; q = _mm_srli_si128(q, 2); valid -= 2; }
    if (valid) *dst = (int8_t)_mm_cvtsi128_si32(q);
}

static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2 __m256 scaled8(const out_consts *k, __m256i acc) {
    __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), k->scale);
    if (k->has_offset) r = _mm256_add_ps(r, k->offset);
    return r;
}

static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2 __m256i codes8(const out_consts *k, __m256i acc) {
    __m256 r = _mm256_round_ps(scaled8(k, acc), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_min_ps(_mm256_max_ps(r, k->low), k->high);
    return _mm256_add_epi32(_mm256_cvtps_epi32(r), k->zero);
}

// Stores n (≤ 8) lanes of v at dst, where `room` elements remain before the plane's end: all 8
// when they fit (lanes past n land in the next row, written after this one; masked stores are slow
// on AMD), else one at a time.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2 void store8_lanes(int32_t *dst, __m256i v, int n, size_t room) {
    if (room >= 8) { _mm256_storeu_si256((__m256i *)dst, v); return; }
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, v);
    for (int i = 0; i < n; i++) dst[i] = lanes[i];
}

// Writes columns col…col + n − 1 (n ≤ 16) of output row oy from a0 (columns col…col + 7) and a1
// (the next 8; unused when n ≤ 8): codes, floats, int32 or (other requantizations) p->acc.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void store16(const qat_i8_depthwise_plane *p, const out_consts *k, int oy, int col, int n, __m256i a0, __m256i a1) {
    const size_t at = (size_t)oy * p->ow + col, room = (size_t)p->oh * p->ow - at;
    if (p->codes) {
        const __m256i q0 = codes8(k, a0);
        __m128i q8;
        if (n > 8) {  // packs work per 128-bit lane: 0–3 8–11 | 4–7 12–15 as int16, put in order
            const __m256i q16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, codes8(k, a1)), 0xD8);
            q8 = _mm_packs_epi16(_mm256_castsi256_si128(q16), _mm256_extracti128_si256(q16, 1));
        } else {
            const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q0), _mm256_extracti128_si256(q0, 1));
            q8 = _mm_packs_epi16(q16, q16);
        }
        // Whole vectors where the plane has room (the next row overwrites the spill), else exact.
        if (room >= 16) _mm_storeu_si128((__m128i *)(p->codes + at), q8);
        else if (n <= 8 && room >= 8) _mm_storel_epi64((__m128i *)(p->codes + at), q8);
        else store_bytes(p->codes + at, q8, n);
    } else if (p->out) {
        int32_t *dst = (int32_t *)p->out + at;
        const int is_float = p->output.kind == QAT_I8_OUT_FLOAT;
        const __m256i v0 = is_float ? _mm256_castps_si256(scaled8(k, a0)) : a0;
        store8_lanes(dst, v0, n < 8 ? n : 8, room);
        if (n > 8) store8_lanes(dst + 8, is_float ? _mm256_castps_si256(scaled8(k, a1)) : a1, n - 8, room - 8);
    } else {  // acc rows hold owpad ≥ col + 16 columns
        int32_t *acc = p->acc + (size_t)oy * p->owpad + col;
        _mm256_storeu_si256((__m256i *)acc, a0);
        _mm256_storeu_si256((__m256i *)(acc + 8), a1);
    }
}

// Up to 16 output columns (wide: 16, else 8) of output row oy at column ox; kh and sw constants
// after inlining. w01/w23 per kernel row: the weight pairs broadcast.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void widened16(const qat_i8_depthwise_plane *p, const out_consts *k, const __m256i *w01, const __m256i *w23, __m256i corr,
               int oy, int ox, const int wide, const int kh, const int sw) {
    __m256i a0 = corr, a1 = _mm256_setzero_si256(), b0 = corr, b1 = _mm256_setzero_si256();
    // Narrow stride 1: the words (0, 1), (1, 2), (2, 3), (3, 4) and (2, 3) … (5, 6) of a lane.
    const __m256i pick01 = _mm256_setr_epi8(0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9);
    const __m256i pick23 = _mm256_setr_epi8(4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11, 12, 13,
                                            4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11, 12, 13);
    for (int ky = 0; ky < kh; ky++) {
        const int16_t *row = p->plane16 + (size_t)(oy * p->sh + ky * p->dh) * p->wp + (size_t)ox * sw;
        if (sw == 1 && wide) {  // a: columns 0–3 | 8–11, b: 4–7 | 12–15
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)row), x1 = _mm256_loadu_si256((const __m256i *)(row + 1));
            const __m256i x2 = _mm256_loadu_si256((const __m256i *)(row + 2)), x3 = _mm256_loadu_si256((const __m256i *)(row + 3));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), w01[ky]));
            b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), w01[ky]));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpacklo_epi16(x2, x3), w23[ky]));
            b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(_mm256_unpackhi_epi16(x2, x3), w23[ky]));
        } else if (sw == 1) {  // a: columns 0–7; the lanes hold x[0…7] and x[4…11], each pair one in-lane pshufb away
            const __m256i x = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)row)),
                                                      _mm_loadu_si128((const __m128i *)(row + 4)), 1);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_shuffle_epi8(x, pick01), w01[ky]));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_shuffle_epi8(x, pick23), w23[ky]));
        } else {  // stride 2, a: columns 0–7, b: 8–15
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)row), w01[ky]));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(row + 2)), w23[ky]));
            if (wide) {
                b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(row + 16)), w01[ky]));
                b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(row + 18)), w23[ky]));
            }
        }
    }
    const int left = p->ow - ox, n = left < (wide ? 16 : 8) ? left : (wide ? 16 : 8);
    __m256i lo = _mm256_add_epi32(a0, a1), hi = _mm256_add_epi32(b0, b1);
    if (sw == 1 && wide) {
        const __m256i t = lo;
        lo = _mm256_permute2x128_si256(t, hi, 0x20);
        hi = _mm256_permute2x128_si256(t, hi, 0x31);
    }
    store16(p, k, oy, ox, n, lo, hi);
}

// One output row: 16 columns at a time while more than 8 remain, then 8.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void widened_row(const qat_i8_depthwise_plane *p, const out_consts *k, const __m256i *w01, const __m256i *w23, __m256i corr,
                 int oy, const int kh, const int sw) {
    int ox = 0;
    for (; p->ow - ox > 8; ox += 16) widened16(p, k, w01, w23, corr, oy, ox, 1, kh, sw);
    if (ox < p->ow) widened16(p, k, w01, w23, corr, oy, ox, 0, kh, sw);
}

// One output plane from p->plane16 ([hp][wp] int16 codes and 64 spare elements), p->w with kw4 = 1.
// Reads at most 15·sw + 19 elements past a row's last output tap: the next rows or the spare.
QAT_I8_TARGET_AVX2 void qat_i8_depthwise_plane_avx2_widened(const qat_i8_depthwise_plane *p) {
    const int kh = p->kh;
    __m256i w01[kh], w23[kh];
    int64_t sum = 0;
    for (int ky = 0; ky < kh; ky++) {
        const int8_t *w = p->w + (size_t)ky * 4;
        w01[ky] = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)w[1] << 16) | (uint16_t)w[0]));
        w23[ky] = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)w[3] << 16) | (uint16_t)w[2]));
        sum += w[0] + w[1] + w[2] + w[3];
    }
    const __m256i corr = _mm256_set1_epi32((int32_t)(uint32_t)((uint32_t)p->corr + 128u * (uint32_t)sum));
    out_consts k = {0};
    const qat_i8_output *o = &p->output;
    if (p->codes || (p->out && o->kind == QAT_I8_OUT_FLOAT)) {
        k.scale = _mm256_set1_ps(o->scale[p->channel]);
        k.has_offset = o->offset != NULL;
        k.offset = _mm256_set1_ps(o->offset ? o->offset[p->channel] : 0.0f);
        k.low = _mm256_set1_ps((float)(o->lo - o->zero_point));
        k.high = _mm256_set1_ps((float)(o->hi - o->zero_point));
        k.zero = _mm256_set1_epi32(o->zero_point);
    }
    for (int oy = 0; oy < p->oh; oy++) {
        if (kh == 3 && p->sw == 1) widened_row(p, &k, w01, w23, corr, oy, 3, 1);
        else if (kh == 3) widened_row(p, &k, w01, w23, corr, oy, 3, 2);
        else if (p->sw == 1) widened_row(p, &k, w01, w23, corr, oy, kh, 1);
        else widened_row(p, &k, w01, w23, corr, oy, kh, 2);
    }
}
