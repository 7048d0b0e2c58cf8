// Column matrices for conv2d in the GEMM's "VNNI layout" (int8_internal.h):
//   b[q][p][t] = xu[ci][oy·sh + ky·dh][ox·sw + kx·dw]   for k = 4q + t = (ci, ky, kx), p = (oy, ox).
// k past the end (padding to a multiple of 4) repeats k = 0: its weight is zero.
#include <immintrin.h>
#include <string.h>
#include "int8_internal.h"

// Walks the taps k = 0, 1, 2, … in order, (ci, ky, kx) counted up without divisions (the
// per-group cost matters for small images): each call returns the offset into the padded image
// of the first input pixel that the next tap reads; taps past c·kh·kw read as tap 0.
typedef struct { int k, ci, ky, kx; } tap_cursor;

static size_t next_tap(tap_cursor *t, const qat_i8_im2col_shape *s) {
    if (t->k++ >= s->c * s->kh * s->kw) return 0;
    const size_t offset = ((size_t)t->ci * s->hp + (size_t)t->ky * s->dh) * s->wp + (size_t)t->kx * s->dw;
    if (++t->kx == s->kw) {
        t->kx = 0;
        if (++t->ky == s->kh) { t->ky = 0; t->ci++; }
    }
    return offset;
}

void qat_i8_im2col_portable(const uint8_t *xu, const qat_i8_im2col_shape *s, uint8_t *b) {
    // Fields in locals: stores through uint8_t * may alias *s, and would force reloads.
    const int oh = s->oh, ow = s->ow, sw = s->sw, k4 = s->k4, npad = s->npad;
    const size_t row_step = (size_t)s->sh * s->wp;
    tap_cursor taps = {0, 0, 0, 0};
    for (int q = 0; q < k4; q++) {
        for (int t = 0; t < 4; t++) {
            const uint8_t *src = xu + next_tap(&taps, s);
            uint8_t *dst = b + (size_t)q * npad * 4 + t;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++)
                    dst[((size_t)oy * ow + ox) * 4] = src[oy * row_step + (size_t)ox * sw];
        }
    }
}

// 16 bytes src[0], src[2], …, src[30]: the even bytes of 32.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2 __m128i load_even16(const uint8_t *src) {
    const __m128i even = _mm_set1_epi16(0x00FF);
    return _mm_packus_epi16(_mm_and_si128(_mm_loadu_si128((const __m128i *)src), even),
                            _mm_and_si128(_mm_loadu_si128((const __m128i *)(src + 16)), even));
}

// Column stride 1 (or 2): the four taps of a group read four input rows, contiguous (or every
// other byte), so 16 columns at a time are a byte interleave of four 16-byte loads (two rounds
// of unpack). A chunk may run up to 15 columns past the row: it reads the next bytes of the
// image (up to 31 for stride 2, within its 64 spare bytes) and writes columns that the next
// row, the next group, or nobody (the GEMM ignores columns ≥ p; b has 16 spare columns)
// overwrites. Other column strides use the portable loop.
QAT_I8_TARGET_AVX2 void qat_i8_im2col_fast(const uint8_t *xu, const qat_i8_im2col_shape *s, uint8_t *b) {
    if (s->sw > 2) { qat_i8_im2col_portable(xu, s, b); return; }
    const int oh = s->oh, ow = s->ow, k4 = s->k4, npad = s->npad, sw = s->sw;  // locals: stores through b may alias *s
    const size_t row_step = (size_t)s->sh * s->wp;
    tap_cursor taps = {0, 0, 0, 0};
    for (int q = 0; q < k4; q++) {
        const uint8_t *s0 = xu + next_tap(&taps, s);
        const uint8_t *s1 = xu + next_tap(&taps, s);
        const uint8_t *s2 = xu + next_tap(&taps, s);
        const uint8_t *s3 = xu + next_tap(&taps, s);
        uint8_t *dst = b + (size_t)q * npad * 4;
        for (int oy = 0; oy < oh; oy++) {
            const size_t row = (size_t)oy * row_step;
            uint8_t *d = dst + (size_t)oy * ow * 4;
            for (int ox = 0; ox < ow; ox += 16) {
                __m128i x0, x1, x2, x3;
                if (sw == 1) {
                    x0 = _mm_loadu_si128((const __m128i *)(s0 + row + ox));
                    x1 = _mm_loadu_si128((const __m128i *)(s1 + row + ox));
                    x2 = _mm_loadu_si128((const __m128i *)(s2 + row + ox));
                    x3 = _mm_loadu_si128((const __m128i *)(s3 + row + ox));
                } else {
                    const size_t at = row + 2 * (size_t)ox;
                    x0 = load_even16(s0 + at);
                    x1 = load_even16(s1 + at);
                    x2 = load_even16(s2 + at);
                    x3 = load_even16(s3 + at);
                }
                const __m128i lo01 = _mm_unpacklo_epi8(x0, x1), hi01 = _mm_unpackhi_epi8(x0, x1);
                const __m128i lo23 = _mm_unpacklo_epi8(x2, x3), hi23 = _mm_unpackhi_epi8(x2, x3);
                __m128i *out = (__m128i *)(d + (size_t)ox * 4);
                _mm_storeu_si128(out + 0, _mm_unpacklo_epi16(lo01, lo23));
                _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(lo01, lo23));
                _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(hi01, hi23));
                _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(hi01, hi23));
            }
        }
    }
}

// Max pool 2×2, stride 2 (the LeNet case) for the AVX2 and VNNI paths. Each output row is the
// byte max of two input rows, then of each adjacent pair: a shuffle puts even bytes in the low
// half and odd bytes in the high half. Rows go in chunks of 16 (or 8) input bytes; the last
// chunk is moved back to end at 2·ow, so it may recompute outputs the previous chunk wrote
// (same values). Narrower rows (2·ow < 8) use the scalar loop. Max is exact: same codes as portable.
QAT_I8_TARGET_AVX2 void qat_i8_maxpool2x2_fast(const int8_t *x, int8_t *y, size_t planes, size_t h, size_t w) {
    const size_t oh = h / 2, ow = w / 2, we = 2 * ow;
    const __m128i even_odd = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m128i even_odd8 = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (size_t p = 0; p < planes; p++) {
        for (size_t i = 0; i < oh; i++) {
            const int8_t *r0 = x + (p * h + 2 * i) * w, *r1 = r0 + w;
            int8_t *o = y + (p * oh + i) * ow;
            if (we >= 16) {
                for (size_t j = 0;; j += 16) {
                    if (j + 16 > we) j = we - 16;
                    const __m128i v = _mm_max_epi8(_mm_loadu_si128((const __m128i *)(r0 + j)),
                                                   _mm_loadu_si128((const __m128i *)(r1 + j)));
                    const __m128i s = _mm_shuffle_epi8(v, even_odd);
                    _mm_storel_epi64((__m128i *)(o + j / 2), _mm_max_epi8(s, _mm_srli_si128(s, 8)));
                    if (j + 16 == we) break;
                }
            } else if (we >= 8) {
                for (size_t j = 0;; j += 8) {
                    if (j + 8 > we) j = we - 8;
                    const __m128i v = _mm_max_epi8(_mm_loadl_epi64((const __m128i *)(r0 + j)),
                                                   _mm_loadl_epi64((const __m128i *)(r1 + j)));
                    const __m128i s = _mm_shuffle_epi8(v, even_odd8);
                    const int32_t four = _mm_cvtsi128_si32(_mm_max_epi8(s, _mm_srli_si128(s, 4)));
                    memcpy(o + j / 2, &four, 4);
                    if (j + 8 == we) break;
                }
            } else {
                for (size_t j = 0; j < ow; j++) {
                    const int8_t a = r0[2 * j] > r0[2 * j + 1] ? r0[2 * j] : r0[2 * j + 1];
                    const int8_t b = r1[2 * j] > r1[2 * j + 1] ? r1[2 * j] : r1[2 * j + 1];
                    o[j] = a > b ? a : b;
                }
            }
        }
    }
}
