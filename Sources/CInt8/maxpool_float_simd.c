// The float max pool for the AVX2 and VNNI paths (qat_i8_maxpool_float): the same floats as the
// portable loop (elementwise_body.h) and QATCore's padded pool. Per window the elements are
// scanned in order, a strictly greater value or the first NaN replacing the best so far, from
// −∞. Which element wins is data-dependent, so as a branch per tap it mispredicts; here 8 (AVX2)
// or 16 (AVX-512) output columns of one row scan their windows side by side, each tap a compare
// and a select per lane. Columns whose window is clipped at the left or right edge take the
// scalar scan. Column strides 1 and 2 only (others: the loop of elementwise_body.h).
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "avx2_store_lanes.h"
#include "int8_internal.h"

// One window, clipped to rows [y0, y1) and columns [x0, x1), in scan order.
static inline float window_max(const float *plane, int w, int y0, int y1, int x0, int x1) {
    float best = -INFINITY;
    for (int r = y0; r < y1; r++)
        for (int c = x0; c < x1; c++) {
            const float v = plane[(size_t)r * w + c];
            best = (v > best) | ((v != v) & (best == best)) ? v : best;
        }
    return best;
}

// Output columns [ja, jb) have their whole window inside the plane across.
static void interior_columns(const qat_i8_pool_geometry *g, int *ja, int *jb) {
    int a = (g->pad_left + g->sw - 1) / g->sw;
    int b = g->w - g->kw + g->pad_left >= 0 ? (g->w - g->kw + g->pad_left) / g->sw + 1 : 0;
    if (b > g->ow) b = g->ow;
    if (a > b) a = b;
    *ja = a;
    *jb = b;
}

// n ≤ 16 output columns from ox of output row oy; lanes past n are neither read nor written.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
void columns16(const float *plane, const qat_i8_pool_geometry *g, int y0, int y1, int ox, int n, float *o) {
    const int sw = g->sw;
    const __mmask16 out = (__mmask16)((1u << n) - 1);
    // Stride 2: lane l reads offset 2l, the even elements of 2n − 1 floats over two vectors.
    const __mmask16 low = sw == 1 ? out : (__mmask16)(n > 8 ? 0xffff : (1u << (2 * n - 1)) - 1);
    const __mmask16 high = (__mmask16)(sw == 2 && n > 8 ? (1u << (2 * n - 17)) - 1 : 0);
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __m512 best = _mm512_set1_ps(-INFINITY);
    for (int r = y0; r < y1; r++) {
        const float *row = plane + (size_t)r * g->w + ox * sw - g->pad_left;
        for (int c = 0; c < g->kw; c++) {
            const __m512 v = sw == 1 ? _mm512_maskz_loadu_ps(low, row + c)
                : _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(low, row + c), evens, _mm512_maskz_loadu_ps(high, row + c + 16));
            const __mmask16 take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ)
                                 | (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
            best = _mm512_mask_mov_ps(best, take, v);
        }
    }
    _mm512_mask_storeu_ps(o, out, best);
}

// The same with 8 lanes; AVX2 masked loads do not fault on masked-off lanes either.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void columns8(const float *plane, const qat_i8_pool_geometry *g, int y0, int y1, int ox, int n, float *o) {
    const int sw = g->sw;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i out = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
    // Stride 2: offsets 0 … 2n − 2 over two vectors, then the even ones gathered by permutes.
    const __m256i low = sw == 1 ? out : _mm256_cmpgt_epi32(_mm256_set1_epi32(2 * n - 1), lane);
    const __m256i high = _mm256_cmpgt_epi32(_mm256_set1_epi32(2 * n - 9), lane);
    const __m256i evens = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    __m256 best = _mm256_set1_ps(-INFINITY);
    for (int r = y0; r < y1; r++) {
        const float *row = plane + (size_t)r * g->w + ox * sw - g->pad_left;
        for (int c = 0; c < g->kw; c++) {
            __m256 v;
            if (sw == 1) {
                v = _mm256_maskload_ps(row + c, low);
            } else {
                const __m256 a = _mm256_permutevar8x32_ps(_mm256_maskload_ps(row + c, low), evens);
                const __m256 b = _mm256_permutevar8x32_ps(_mm256_maskload_ps(row + c + 8, high), evens);
                v = _mm256_blend_ps(a, b, 0xF0);
            }
            const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ),
                                             _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(best, best, _CMP_ORD_Q)));
            best = _mm256_blendv_ps(best, v, take);
        }
    }
    if (n == 8) _mm256_storeu_ps(o, best);  // a masked store is microcoded and slow on AMD's cores
    else _mm256_maskstore_ps(o, out, best);
}

#define POOL_BODY(LANES, COLUMNS)                                                                          \
    int ja, jb;                                                                                            \
    interior_columns(g, &ja, &jb);                                                                         \
    for (size_t p = 0; p < planes; p++) {                                                                  \
        const float *plane = x + p * (size_t)g->h * g->w;                                                  \
        for (int oy = 0; oy < g->oh; oy++) {                                                               \
            float *o = y + (p * g->oh + oy) * (size_t)g->ow;                                               \
            const int top = oy * g->sh - g->pad_top, y0 = top < 0 ? 0 : top;                               \
            const int y1 = top + g->kh < g->h ? top + g->kh : g->h;                                        \
            int ox = 0;                                                                                    \
            while (ox < g->ow) {                                                                           \
                if (y0 < y1 && ox >= ja && ox < jb) {                                                      \
                    const int n = jb - ox < LANES ? jb - ox : LANES;                                       \
                    COLUMNS(plane, g, y0, y1, ox, n, o + ox);                                              \
                    ox += n;                                                                               \
                    continue;                                                                              \
                }                                                                                          \
                const int left = ox * g->sw - g->pad_left, x0 = left < 0 ? 0 : left;                       \
                const int x1 = left + g->kw < g->w ? left + g->kw : g->w;                                  \
                o[ox] = window_max(plane, g->w, y0, y1, x0, x1);                                           \
                ox++;                                                                                      \
            }                                                                                              \
        }                                                                                                  \
    }

QAT_I8_TARGET_VNNI void qat_i8_maxpool_float_vnni16(const float *x, float *y, size_t planes, const qat_i8_pool_geometry *g) {
    POOL_BODY(16, columns16)
}

QAT_I8_TARGET_AVX2 void qat_i8_maxpool_float_avx2x8(const float *x, float *y, size_t planes, const qat_i8_pool_geometry *g) {
    POOL_BODY(8, columns8)
}

// qat_i8_maxpool_accumulators on planes up to 32 wide with up to 16 output columns (resnet's stem
// pool, 28 → 14): an output row is one vector. The rows' max in two vectors, then per kernel
// column kx a vpermt2d picks each output's column ox·sw + kx − pad_left (lanes whose column is
// outside the plane keep their max), then the dequantize of qat_i8_scaled1 and the ReLU on 16
// lanes. Returns 0, doing nothing, for other shapes.
QAT_I8_TARGET_VNNI int qat_i8_maxpool_accumulators_vnni16(const int32_t *x, float *y, size_t planes, const qat_i8_pool_geometry *g,
                                                          const float *scale, const float *offset, int relu) {
#pragma clang fp contract(off)
    const int h = g->h, w = g->w, oh = g->oh, ow = g->ow, kh = g->kh, kw = g->kw, sh = g->sh, sw = g->sw;
    const int pad_top = g->pad_top, pad_left = g->pad_left;
    if (w > 32 || ow > 16 || kw > 16) return 0;
    __m512i index[16];
    __mmask16 valid[16];
    for (int kx = 0; kx < kw; kx++) {
        int32_t lanes[16];
        valid[kx] = 0;
        for (int ox = 0; ox < 16; ox++) {
            const int c = ox * sw + kx - pad_left;
            const int inside = ox < ow && c >= 0 && c < w;
            lanes[ox] = inside ? c : 0;
            if (inside) valid[kx] |= (__mmask16)(1u << ox);
        }
        index[kx] = _mm512_loadu_si512(lanes);
    }
    const __mmask16 low = (__mmask16)(w >= 16 ? 0xFFFF : (1u << w) - 1), high = (__mmask16)(w <= 16 ? 0 : (1u << (w - 16)) - 1);
    const __mmask16 columns = (__mmask16)((1u << ow) - 1);
    const __m512i none = _mm512_set1_epi32(INT32_MIN);
    const __m512 zero = _mm512_setzero_ps(), minus_infinity = _mm512_set1_ps(-INFINITY);
    for (size_t p = 0; p < planes; p++) {
        const int32_t *plane = x + p * (size_t)h * w;
        const __m512 s = _mm512_set1_ps(scale[p]);
        const __m512 off = _mm512_set1_ps(offset ? offset[p] : 0.0f);
        for (int oy = 0; oy < oh; oy++) {
            float *o = y + (p * oh + oy) * (size_t)ow;
            const int top = oy * sh - pad_top, y0 = top < 0 ? 0 : top, y1 = top + kh < h ? top + kh : h;
            __m512i r0 = none, r1 = none, best = none;
            for (int r = y0; r < y1; r++) {
                r0 = _mm512_max_epi32(r0, _mm512_maskz_loadu_epi32(low, plane + (size_t)r * w));
                r1 = _mm512_max_epi32(r1, _mm512_maskz_loadu_epi32(high, plane + (size_t)r * w + 16));
            }
            if (y0 < y1)
                for (int kx = 0; kx < kw; kx++)
                    best = _mm512_mask_max_epi32(best, valid[kx], best, _mm512_permutex2var_epi32(r0, index[kx], r1));
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(best), s);
            if (offset) v = _mm512_add_ps(v, off);
            if (relu) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
            v = _mm512_mask_mov_ps(v, _mm512_cmpeq_epi32_mask(best, none), minus_infinity);
            _mm512_mask_storeu_ps(o, columns, v);
        }
    }
    return 1;
}

// qat_i8_maxpool_accumulators on AVX2, any plane width, column strides 1 and 2. First, per plane,
// each output row's max over its window rows goes into a row of int32 with INT32_MIN on both
// sides (the columns outside the plane); then, 8 output columns at a time, the max over the
// kernel columns, dequantized as qat_i8_scaled1 and, with relu, x < 0 → 0. (Two passes: the
// second's unaligned loads would stall reading the first's stores right after them.) A window
// without pixels (known from the geometry, not the values) gives −∞ as the float pool's.
// The body, for a kernel (kh, kw) and column stride sw that are constants in the common instance.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void accumulator_pool(const int32_t *x, float *y, size_t planes, const qat_i8_pool_geometry *g, const float *scale,
                      const float *offset, int relu, const int kh, const int kw, const int sw) {
#pragma clang fp contract(off)
    const int h = g->h, w = g->w, oh = g->oh, ow = g->ow, sh = g->sh;
    const int pad_top = g->pad_top, pad_left = g->pad_left;
    // Row oy's column c at rowmax[oy·width + pad_left + c]; the second pass reads up to
    // (ow rounded to 8)·sw + kw + 8 columns of a row, the first writes w rounded to 8.
    const int vectors = (ow + 7) / 8, span = vectors * 8 * sw + kw + 8;
    const int stored = pad_left + (w + 7) / 8 * 8, width = span > stored ? span : stored;
    const size_t count = (size_t)oh * width;
    int32_t *rowmax = qat_i8_checked_malloc(count * sizeof(int32_t));
    for (size_t i = 0; i < count; i++) rowmax[i] = INT32_MIN;
    // Output columns [ja, jb) have at least one pixel across (left edge ≤ w − 1, right edge ≥ 0).
    int ja = 0, jb = 0;
    for (int ox = 0; ox < ow; ox++) {
        const int left = ox * sw - pad_left;
        if (left + kw <= 0) ja = ox + 1;
        if (left < w) jb = ox + 1;
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), evens = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    const __m256i none = _mm256_set1_epi32(INT32_MIN);
    const __m256 zero = _mm256_setzero_ps(), minus_infinity = _mm256_set1_ps(-INFINITY);
    for (size_t p = 0; p < planes; p++) {
        const int32_t *plane = x + p * (size_t)h * w;
        for (int oy = 0; oy < oh; oy++) {
            int32_t *row = rowmax + (size_t)oy * width + pad_left;
            const int top = oy * sh - pad_top, y0 = top < 0 ? 0 : top, y1 = top + kh < h ? top + kh : h;
            int c = 0;
            for (; c + 8 <= w; c += 8) {
                __m256i m = none;
                for (int r = y0; r < y1; r++) m = _mm256_max_epi32(m, _mm256_loadu_si256((const __m256i *)(plane + (size_t)r * w + c)));
                _mm256_storeu_si256((__m256i *)(row + c), m);
            }
            if (c < w) {  // the last vector's lanes past w: masked loads, stored as INT32_MIN
                const __m256i inside = _mm256_cmpgt_epi32(_mm256_set1_epi32(w - c), lane);
                __m256i m = none;
                for (int r = y0; r < y1; r++) m = _mm256_max_epi32(m, _mm256_maskload_epi32(plane + (size_t)r * w + c, inside));
                _mm256_storeu_si256((__m256i *)(row + c), _mm256_blendv_epi8(none, m, inside));
            }
        }
        const __m256 s = _mm256_set1_ps(scale[p]), off = _mm256_set1_ps(offset ? offset[p] : 0.0f);
        for (int oy = 0; oy < oh; oy++) {
            float *o = y + (p * oh + oy) * (size_t)ow;
            const int top = oy * sh - pad_top, y0 = top < 0 ? 0 : top, y1 = top + kh < h ? top + kh : h;
            for (int ox = 0; ox < ow; ox += 8) {
                const int32_t *at = rowmax + (size_t)oy * width + ox * sw;  // output column ox's window starts here
                __m256i best = none;
                for (int kx = 0; kx < kw; kx++) {
                    __m256i v;
                    if (sw == 1) {
                        v = _mm256_loadu_si256((const __m256i *)(at + kx));
                    } else {
                        const __m256i a = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(at + kx)), evens);
                        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(at + kx + 8)), evens);
                        v = _mm256_blend_epi32(a, b, 0xF0);
                    }
                    best = _mm256_max_epi32(best, v);
                }
                __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(best), s);
                if (offset) f = _mm256_add_ps(f, off);
                if (relu) f = _mm256_blendv_ps(f, zero, _mm256_cmp_ps(f, zero, _CMP_LT_OQ));
                const __m256i column = _mm256_add_epi32(_mm256_set1_epi32(ox), lane);
                const __m256i empty = _mm256_or_si256(_mm256_set1_epi32(-(y0 >= y1)),
                                                      _mm256_or_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(ja), column),
                                                                      _mm256_cmpgt_epi32(column, _mm256_set1_epi32(jb - 1))));
                f = _mm256_blendv_ps(f, minus_infinity, _mm256_castsi256_ps(empty));
                if (ow - ox >= 8) {
                    _mm256_storeu_ps(o + ox, f);
                } else {  // not vmaskmovps: a masked store is microcoded and slow on AMD's cores
                    float lanes[8];
                    _mm256_storeu_ps(lanes, f);
                    memcpy(o + ox, lanes, (size_t)(ow - ox) * sizeof(float));
                }
            }
        }
    }
    free(rowmax);
}

// ResNet's stem pool, 3×3 with stride 2 and padding 1, on planes 18 to 32 wide (even) and
// ow = w/2: every window has a pixel and none reaches past the right edge. Per output row, the
// max over its 2 or 3 rows in four vectors R (columns 0…31; lanes past w read 0, and feed only
// outputs past ow), then output j = max(R[2j − 1], R[2j], R[2j + 1]) from the even and odd
// columns E, O of R: max(E[j], O[j], O[j − 1]), O[−1] being the padding. All in registers: the
// general kernel's two passes through memory cost 43 % of the stem conv.
static int stem_pool_applies(const qat_i8_pool_geometry *g) {
    return g->kh == 3 && g->kw == 3 && g->sh == 2 && g->sw == 2 && g->pad_top == 1 && g->pad_left == 1 && g->w % 2 == 0 &&
           g->w >= 18 && g->w <= 32 && g->ow == g->w / 2 && g->oh >= 1 && 2 * g->oh - 3 < g->h;
}

static QAT_I8_TARGET_AVX2 void stem_pool(const int32_t *x, float *y, size_t planes, const qat_i8_pool_geometry *g,
                                         const float *scale, const float *offset, int relu) {
#pragma clang fp contract(off)
    const int h = g->h, w = g->w, oh = g->oh, ow = g->ow;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mask2 = _mm256_cmpgt_epi32(_mm256_set1_epi32(w - 16), lane), mask3 = _mm256_cmpgt_epi32(_mm256_set1_epi32(w - 24), lane);
    const __m256i split = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7), back_one = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
    const __m256 zero = _mm256_setzero_ps();
    for (size_t p = 0; p < planes; p++) {
        const int32_t *plane = x + p * (size_t)h * w;
        const __m256 s = _mm256_set1_ps(scale[p]), off = _mm256_set1_ps(offset ? offset[p] : 0.0f);
        for (int oy = 0; oy < oh; oy++) {
            const int y0 = oy == 0 ? 0 : 2 * oy - 1, y1 = 2 * oy + 2 < h ? 2 * oy + 2 : h;
            __m256i r[4];
            for (int k = 0; k < 4; k++) r[k] = _mm256_set1_epi32(INT32_MIN);
            for (int row = y0; row < y1; row++) {
                const int32_t *at = plane + (size_t)row * w;
                r[0] = _mm256_max_epi32(r[0], _mm256_loadu_si256((const __m256i *)at));
                r[1] = _mm256_max_epi32(r[1], _mm256_loadu_si256((const __m256i *)(at + 8)));
                r[2] = _mm256_max_epi32(r[2], _mm256_maskload_epi32(at + 16, mask2));
                r[3] = _mm256_max_epi32(r[3], _mm256_maskload_epi32(at + 24, mask3));
            }
            float *o = y + (p * oh + oy) * (size_t)ow;
            __m256i previous_odd = _mm256_set1_epi32(INT32_MIN);  // O[j − 1] for the first lane: the padding
            for (int half = 0; half < 2; half++) {
                // Evens then odds of each vector in its lanes 0–3 and 4–7; then E, O of 8 outputs.
                const __m256i a = _mm256_permutevar8x32_epi32(r[2 * half], split), b = _mm256_permutevar8x32_epi32(r[2 * half + 1], split);
                const __m256i even = _mm256_permute2x128_si256(a, b, 0x20), odd = _mm256_permute2x128_si256(a, b, 0x31);
                const __m256i odd_before = _mm256_blend_epi32(_mm256_permutevar8x32_epi32(odd, back_one), previous_odd, 0x01);
                previous_odd = _mm256_permutevar8x32_epi32(odd, _mm256_set1_epi32(7));
                const __m256i best = _mm256_max_epi32(_mm256_max_epi32(even, odd), odd_before);
                __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(best), s);
                if (offset) f = _mm256_add_ps(f, off);
                if (relu) f = _mm256_blendv_ps(f, zero, _mm256_cmp_ps(f, zero, _CMP_LT_OQ));
                const int count = ow - 8 * half < 8 ? ow - 8 * half : 8;
                if (count == 8) {
                    _mm256_storeu_ps(o + 8 * half, f);
                } else {
                    qat_i8_store_lanes_avx2(o + 8 * half, _mm256_castps_si256(f), count);
                }
            }
        }
    }
}

// ResNet's stem pool (3×3, stride 2) by stem_pool, or with its kernel and stride as constants;
// any other shape with column stride 1 or 2 through the general instance. Returns 0, doing
// nothing, for other strides.
QAT_I8_TARGET_AVX2 int qat_i8_maxpool_accumulators_avx2x8(const int32_t *x, float *y, size_t planes, const qat_i8_pool_geometry *g,
                                                          const float *scale, const float *offset, int relu) {
    if (g->sw != 1 && g->sw != 2) return 0;
    if (stem_pool_applies(g)) stem_pool(x, y, planes, g, scale, offset, relu);
    else if (g->kh == 3 && g->kw == 3 && g->sw == 2) accumulator_pool(x, y, planes, g, scale, offset, relu, 3, 3, 2);
    else accumulator_pool(x, y, planes, g, scale, offset, relu, g->kh, g->kw, g->sw);
    return 1;
}
