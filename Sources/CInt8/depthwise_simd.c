// Depthwise convolution, AVX2 and AVX-512 VNNI paths (the driver and the operand layout are in
// depthwise.c and int8_internal.h). Both sum the same exact integer products as the portable
// path, so all three give the same accumulators.
#include <immintrin.h>
#include <string.h>
#include "int8_internal.h"

// 16 bytes src[0], src[sw], …, src[15·sw] for sw = 1 or 2 (2: the even bytes of 32).
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
__m128i load_strided16(const uint8_t *src, int sw) {
    if (sw == 1) return _mm_loadu_si128((const __m128i *)src);
    const __m128i even = _mm_set1_epi16(0x00FF);
    return _mm_packus_epi16(_mm_and_si128(_mm_loadu_si128((const __m128i *)src), even),
                            _mm_and_si128(_mm_loadu_si128((const __m128i *)(src + 16)), even));
}

// The rows of int8_internal.h for column strides 1 and 2 (others: the portable loop), 32 or 16
// output columns at a time: four strided loads, one per tap, byte-interleaved by two rounds of
// unpack (as im2col_fast) and shifted to u8. A 32-column chunk is taken only while more than 16
// columns remain, so no chunk writes past owpad; the last chunk may read up to 32 bytes past a
// row (the next row, or the plane's 64 spare bytes) and writes columns that nobody reads as output.
QAT_I8_TARGET_AVX2 void qat_i8_depthwise_rows_fast(const int8_t *plane, const qat_i8_rows_shape *s, uint8_t *rows) {
    if (s->sw > 2) { qat_i8_depthwise_rows_portable(plane, s, rows); return; }
    const int sw = s->sw;
    const __m128i shift = _mm_set1_epi8((char)0x80);
    for (int y = 0; y < s->hp; y++) {
        for (int g = 0; g < s->kw4; g++) {
            const uint8_t *src[4];
            for (int t = 0; t < 4; t++) {
                const int kx = 4 * g + t;
                src[t] = (const uint8_t *)plane + (size_t)y * s->wp + (kx < s->kw ? (size_t)kx * s->dw : 0);
            }
            uint8_t *d = rows + ((size_t)y * s->kw4 + g) * s->owpad * 4;
            int ox = 0;
            if (sw == 1) {
                // 32 columns at a time: the unpacks work within 128-bit lanes, so the four results hold
                // columns 0–3|16–19, 4–7|20–23, 8–11|24–27, 12–15|28–31; lane permutes put them in order.
                const __m256i shift256 = _mm256_set1_epi8((char)0x80);
                for (; ox + 16 < s->ow; ox += 32) {
                    const __m256i x0 = _mm256_loadu_si256((const __m256i *)(src[0] + ox));
                    const __m256i x1 = _mm256_loadu_si256((const __m256i *)(src[1] + ox));
                    const __m256i x2 = _mm256_loadu_si256((const __m256i *)(src[2] + ox));
                    const __m256i x3 = _mm256_loadu_si256((const __m256i *)(src[3] + ox));
                    const __m256i lo01 = _mm256_unpacklo_epi8(x0, x1), hi01 = _mm256_unpackhi_epi8(x0, x1);
                    const __m256i lo23 = _mm256_unpacklo_epi8(x2, x3), hi23 = _mm256_unpackhi_epi8(x2, x3);
                    const __m256i a = _mm256_xor_si256(_mm256_unpacklo_epi16(lo01, lo23), shift256);
                    const __m256i b = _mm256_xor_si256(_mm256_unpackhi_epi16(lo01, lo23), shift256);
                    const __m256i c = _mm256_xor_si256(_mm256_unpacklo_epi16(hi01, hi23), shift256);
                    const __m256i e = _mm256_xor_si256(_mm256_unpackhi_epi16(hi01, hi23), shift256);
                    __m256i *out = (__m256i *)(d + (size_t)ox * 4);
                    _mm256_storeu_si256(out + 0, _mm256_permute2x128_si256(a, b, 0x20));
                    _mm256_storeu_si256(out + 1, _mm256_permute2x128_si256(c, e, 0x20));
                    _mm256_storeu_si256(out + 2, _mm256_permute2x128_si256(a, b, 0x31));
                    _mm256_storeu_si256(out + 3, _mm256_permute2x128_si256(c, e, 0x31));
                }
            }
            for (; ox < s->ow; ox += 16) {
                const size_t at = (size_t)ox * sw;
                const __m128i x0 = load_strided16(src[0] + at, sw), x1 = load_strided16(src[1] + at, sw);
                const __m128i x2 = load_strided16(src[2] + at, sw), x3 = load_strided16(src[3] + at, sw);
                const __m128i lo01 = _mm_unpacklo_epi8(x0, x1), hi01 = _mm_unpackhi_epi8(x0, x1);
                const __m128i lo23 = _mm_unpacklo_epi8(x2, x3), hi23 = _mm_unpackhi_epi8(x2, x3);
                __m128i *out = (__m128i *)(d + (size_t)ox * 4);
                _mm_storeu_si128(out + 0, _mm_xor_si128(_mm_unpacklo_epi16(lo01, lo23), shift));
                _mm_storeu_si128(out + 1, _mm_xor_si128(_mm_unpackhi_epi16(lo01, lo23), shift));
                _mm_storeu_si128(out + 2, _mm_xor_si128(_mm_unpacklo_epi16(hi01, hi23), shift));
                _mm_storeu_si128(out + 3, _mm_xor_si128(_mm_unpackhi_epi16(hi01, hi23), shift));
            }
        }
    }
}

// Requantizes 8 accumulators (columns col…col+7 of output row oy) and stores the valid ones:
// the steps of qat_i8_store1 (convert, multiply, add the offset, round half even, clamp, add o_y).
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void store8_codes(const qat_i8_depthwise_plane *p, int oy, int col, __m256i acc) {
    const int valid = p->ow - col < 8 ? p->ow - col : 8;
    if (valid <= 0) return;
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

// AVX2: u8×s8 products would saturate vpmaddubsw, so the bytes are widened to int16 and
// multiplied with vpmaddwd (exact pair sums), as in gemm_avx2.c: 16 bytes are 4 columns × 4
// taps; the two half sums per column are added by vphaddd after the taps.
// 16 output columns ox…ox+15 of output row oy; kh and kw4 are constants after inlining.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void avx2_columns(const qat_i8_depthwise_plane *p, const int64_t *w16, int oy, int ox, const int kh, const int kw4) {
    const size_t block = (size_t)p->owpad * 4, row_step = (size_t)kw4 * block;
    const uint8_t *top = p->rows + (size_t)oy * p->sh * row_step + (size_t)ox * 4;
    __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
    for (int ky = 0; ky < kh; ky++) {
        const uint8_t *r = top + (size_t)ky * p->dh * row_step;
        for (int g = 0; g < kw4; g++, r += block) {
            const __m256i w = _mm256_set1_epi64x(w16[ky * kw4 + g]);
            lo0 = _mm256_add_epi32(lo0, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)r)), w));
            hi0 = _mm256_add_epi32(hi0, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r + 16))), w));
            lo1 = _mm256_add_epi32(lo1, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r + 32))), w));
            hi1 = _mm256_add_epi32(hi1, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r + 48))), w));
        }
    }
    // hadd gives columns 0 1 4 5 | 2 3 6 7; the 64-bit permute puts them in order.
    const __m256i corr = _mm256_set1_epi32(p->corr);
    const __m256i s0 = _mm256_add_epi32(_mm256_permute4x64_epi64(_mm256_hadd_epi32(lo0, hi0), 0xD8), corr);
    const __m256i s1 = _mm256_add_epi32(_mm256_permute4x64_epi64(_mm256_hadd_epi32(lo1, hi1), 0xD8), corr);
    if (p->codes) {
        store8_codes(p, oy, ox, s0);
        store8_codes(p, oy, ox + 8, s1);
    } else {
        int32_t *acc = p->acc + (size_t)oy * p->owpad + ox;
        _mm256_storeu_si256((__m256i *)acc, s0);
        _mm256_storeu_si256((__m256i *)(acc + 8), s1);
    }
}

QAT_I8_TARGET_AVX2 void qat_i8_depthwise_plane_avx2(const qat_i8_depthwise_plane *p) {
    const int kh = p->kh, kw4 = p->kw4, groups = kh * kw4;
    int64_t w16[groups];  // 4 weights widened to int16, broadcast 64 bits at a time
    for (int i = 0; i < groups; i++) {
        const int16_t four[4] = {p->w[4 * i], p->w[4 * i + 1], p->w[4 * i + 2], p->w[4 * i + 3]};
        memcpy(&w16[i], four, sizeof four);
    }
    for (int oy = 0; oy < p->oh; oy++) {
        if (kh == 3 && kw4 == 1) {  // 3×3 gets its own unrolled copy
            for (int ox = 0; ox < p->owpad; ox += 16) avx2_columns(p, w16, oy, ox, 3, 1);
        } else {
            for (int ox = 0; ox < p->owpad; ox += 16) avx2_columns(p, w16, oy, ox, kh, kw4);
        }
    }
}

static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
void vnni_finish(const qat_i8_depthwise_plane *p, int oy, int ox, const int nv, const __m512i *a);

// VNNI: one vpdpbusd adds a group of 4 taps for 16 output columns; 4 vectors (64 columns) at a
// time keep independent accumulators in flight, then single vectors for the rest of the row.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
void vnni_columns(const qat_i8_depthwise_plane *p, const uint8_t *top, const int32_t *w4, int oy, int ox, const int nv,
                  const int kh, const int kw4) {
    const size_t block = (size_t)p->owpad * 4, row_step = (size_t)kw4 * block;
    __m512i a[4];
    for (int v = 0; v < nv; v++) a[v] = _mm512_set1_epi32(p->corr);
    for (int ky = 0; ky < kh; ky++) {
        const uint8_t *r = top + (size_t)ky * p->dh * row_step + (size_t)ox * 4;
        for (int g = 0; g < kw4; g++, r += block) {
            const __m512i w = _mm512_set1_epi32(w4[ky * kw4 + g]);
            for (int v = 0; v < nv; v++) a[v] = _mm512_dpbusd_epi32(a[v], _mm512_loadu_si512(r + 64 * v), w);
        }
    }
    vnni_finish(p, oy, ox, nv, a);
}

// Stores nv vectors of accumulators for output columns ox…ox + 16·nv − 1 of output row oy: as
// int32 into p->acc, or requantized in registers to p->codes, the steps of qat_i8_store1
// (convert, multiply, add the offset, round half even, clamp, add o_y), then a masked narrowing
// store of the valid columns.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
void vnni_finish(const qat_i8_depthwise_plane *p, int oy, int ox, const int nv, const __m512i *a) {
    if (!p->codes) {
        for (int v = 0; v < nv; v++) _mm512_storeu_si512(p->acc + (size_t)oy * p->owpad + ox + 16 * v, a[v]);
        return;
    }
    const qat_i8_output *o = &p->output;
    const __m512 scale = _mm512_set1_ps(o->scale[p->channel]);
    const __m512 low = _mm512_set1_ps((float)(o->lo - o->zero_point)), high = _mm512_set1_ps((float)(o->hi - o->zero_point));
    const __m512i zero = _mm512_set1_epi32(o->zero_point);
    int8_t *dst = p->codes + (size_t)oy * p->ow;
    for (int v = 0; v < nv; v++) {
        const int col = ox + 16 * v, valid = p->ow - col < 16 ? p->ow - col : 16;
        if (valid <= 0) break;
        __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(a[v]), scale);
        if (o->offset) r = _mm512_add_ps(r, _mm512_set1_ps(o->offset[p->channel]));
        r = _mm512_roundscale_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm512_min_ps(_mm512_max_ps(r, low), high);
        const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(r), zero);
        _mm512_mask_cvtepi32_storeu_epi8(dst + col, (__mmask16)((1u << valid) - 1), q);
    }
}

QAT_I8_TARGET_VNNI void qat_i8_depthwise_plane_vnni(const qat_i8_depthwise_plane *p) {
    const size_t row_step = (size_t)p->kw4 * p->owpad * 4;
    const int groups = p->kh * p->kw4;
    int32_t w4[groups];  // 4 weights read as one int32 and broadcast
    memcpy(w4, p->w, (size_t)groups * 4);
    // kh, kw4 and the vector count are constants after inlining; 3×3 (kh 3, kw4 1) gets its own copy.
    const int kh = p->kh, kw4 = p->kw4;
    for (int oy = 0; oy < p->oh; oy++) {
        const uint8_t *top = p->rows + (size_t)oy * p->sh * row_step;
        int ox = 0;
        if (kh == 3 && kw4 == 1) {
            for (; ox + 64 <= p->owpad; ox += 64) vnni_columns(p, top, w4, oy, ox, 4, 3, 1);
            for (; ox < p->owpad; ox += 16) vnni_columns(p, top, w4, oy, ox, 1, 3, 1);
        } else {
            for (; ox + 64 <= p->owpad; ox += 64) vnni_columns(p, top, w4, oy, ox, 4, kh, kw4);
            for (; ox < p->owpad; ox += 16) vnni_columns(p, top, w4, oy, ox, 1, kh, kw4);
        }
    }
}

// VNNI with VBMI, kernels up to 4 columns wide without column dilation (3×3, stride 1 or 2): no
// rows at all. For output columns ox…ox + 15 and kernel row ky, one vpermb picks, from a masked
// load of the u8 plane row, the bytes u[ox·sw + t] for t = 0…3 side by side in each 32-bit lane:
// the operand the rows would hold (tap 3, past kw, has weight zero), so the products and
// accumulators are the same.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VBMI
void vbmi_columns(const qat_i8_depthwise_plane *p, const int32_t *w4, __m512i index, __mmask64 mask, int oy, int ox,
                  const int nv, const int kh) {
    __m512i a[4];
    for (int v = 0; v < nv; v++) a[v] = _mm512_set1_epi32(p->corr);
    for (int ky = 0; ky < kh; ky++) {
        const uint8_t *row = p->plane + (size_t)(oy * p->sh + ky * p->dh) * p->wp + (size_t)ox * p->sw;
        const __m512i w = _mm512_set1_epi32(w4[ky]);
        for (int v = 0; v < nv; v++) {
            const __m512i u = _mm512_permutexvar_epi8(index, _mm512_maskz_loadu_epi8(mask, row + (size_t)16 * v * p->sw));
            a[v] = _mm512_dpbusd_epi32(a[v], u, w);
        }
    }
    vnni_finish(p, oy, ox, nv, a);
}

QAT_I8_TARGET_VBMI void qat_i8_depthwise_plane_vbmi(const qat_i8_depthwise_plane *p) {
    const int kh = p->kh;
    int32_t w4[kh];  // kw4 = 1: one group of 4 weights per kernel row
    memcpy(w4, p->w, (size_t)kh * 4);
    // Lane i of a vector takes bytes i·sw … i·sw + 3 of a load that starts at column ox·sw.
    uint8_t bytes[64];
    for (int i = 0; i < 16; i++)
        for (int t = 0; t < 4; t++) bytes[4 * i + t] = (uint8_t)(i * p->sw + t);
    const __m512i index = _mm512_loadu_si512(bytes);
    const __mmask64 mask = (((__mmask64)1) << (15 * p->sw + 4)) - 1;  // the bytes one vector reads
    for (int oy = 0; oy < p->oh; oy++) {
        int ox = 0;
        if (kh == 3) {
            for (; ox + 64 <= p->owpad; ox += 64) vbmi_columns(p, w4, index, mask, oy, ox, 4, 3);
            for (; ox < p->owpad; ox += 16) vbmi_columns(p, w4, index, mask, oy, ox, 1, 3);
        } else {
            for (; ox + 64 <= p->owpad; ox += 64) vbmi_columns(p, w4, index, mask, oy, ox, 4, kh);
            for (; ox < p->owpad; ox += 16) vbmi_columns(p, w4, index, mask, oy, ox, 1, kh);
        }
    }
}

// Copies the h rows of w codes of one plane into the padded u8 plane (row stride wp, the first
// at `dst`), shifted to u8, 64 bytes at a time with a masked store for each row's tail, so the
// padding around the rows is never written. AVX-512 BW only: the VNNI path's convs use it too.
QAT_I8_TARGET_VNNI void qat_i8_copy_rows_shifted(const int8_t *src, int h, int w, uint8_t *dst, int wp) {
    const __m512i shift = _mm512_set1_epi8((char)0x80);
    for (int y = 0; y < h; y++) {
        const int8_t *s = src + (size_t)y * w;
        uint8_t *d = dst + (size_t)y * wp;
        for (int i = 0; i < w; i += 64) {
            const int n = w - i < 64 ? w - i : 64;
            const __mmask64 mask = n == 64 ? ~(__mmask64)0 : (((__mmask64)1) << n) - 1;
            _mm512_mask_storeu_epi8(d + i, mask, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, s + i), shift));
        }
    }
}

// qat_i8_copy_rows_shifted on AVX2: 16 codes at a time; a row's last (or only) part of n < 16
// codes is blended into the bytes already there (the padding read and written back unchanged), its
// codes loaded as a vector while 16 bytes stay below src_end, else through a buffer.
QAT_I8_TARGET_AVX2 void qat_i8_copy_rows_shifted_avx2(const int8_t *src, int h, int w, uint8_t *dst, int wp, const int8_t *src_end) {
    const __m128i shift = _mm_set1_epi8((char)0x80), lane = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int y = 0; y < h; y++) {
        const int8_t *s = src + (size_t)y * w;
        uint8_t *d = dst + (size_t)y * wp;
        int i = 0;
        for (; i + 16 <= w; i += 16)
            _mm_storeu_si128((__m128i *)(d + i), _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + i)), shift));
        if (i == w) continue;
        __m128i codes;
        if (src_end - (s + i) >= 16) {
            codes = _mm_loadu_si128((const __m128i *)(s + i));
        } else {
            _Alignas(16) int8_t tail[16] = {0};
            memcpy(tail, s + i, (size_t)(w - i));
            codes = _mm_load_si128((const __m128i *)tail);
        }
        const __m128i inside = _mm_cmpgt_epi8(_mm_set1_epi8((char)(w - i)), lane);
        const __m128i old = _mm_loadu_si128((const __m128i *)(d + i));
        _mm_storeu_si128((__m128i *)(d + i), _mm_blendv_epi8(old, _mm_xor_si128(codes, shift), inside));
    }
}

// The padded-plane copy of qat_i8_copy_rows_shifted for planes whose padded rows fit a vector
// (wp ≤ 64): t->rows rows at a time, one masked load of their codes, one vpermb putting each code
// at its padded column, one masked store that skips the padding columns (never written). A 7×7
// plane is one vector instead of seven rows, 14×14 four instead of fourteen.
static int packed_plane_copy_allowed = 1;
void qat_i8_allow_packed_plane_copy(int allowed) { packed_plane_copy_allowed = allowed; }

int qat_i8_row_packing_init(int w, int wp, qat_i8_row_packing *t) {
    if (!packed_plane_copy_allowed || wp > 64 || w > wp) return 0;
    t->rows = 64 / wp;
    t->keep = 0;
    for (int j = 0; j < 64; j++) {
        const int r = j / wp, col = j % wp, inside = r < t->rows && col < w;
        t->index[j] = (uint8_t)(inside ? r * w + col : 0);
        if (inside) t->keep |= 1ull << j;
    }
    return 1;
}

QAT_I8_TARGET_VBMI void qat_i8_copy_plane_packed(const int8_t *src, int h, int w, int wp, const qat_i8_row_packing *t, uint8_t *dst) {
    const __m512i index = _mm512_loadu_si512(t->index), shift = _mm512_set1_epi8((char)0x80);
    for (int y = 0; y < h; y += t->rows) {
        const int rows = h - y < t->rows ? h - y : t->rows, n = rows * w, span = rows * wp;  // n ≤ span ≤ 64
        const __mmask64 load = n == 64 ? ~(__mmask64)0 : (((__mmask64)1) << n) - 1;
        const __mmask64 store = t->keep & (span == 64 ? ~(__mmask64)0 : (((__mmask64)1) << span) - 1);
        const __m512i codes = _mm512_maskz_loadu_epi8(load, src + (size_t)y * w);
        _mm512_mask_storeu_epi8(dst + (size_t)y * wp, store, _mm512_xor_si512(_mm512_permutexvar_epi8(index, codes), shift));
    }
}
