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

// The rows of int8_internal.h for column strides 1 and 2 (others: the portable loop), 16 output
// columns at a time: four strided loads, one per tap, byte-interleaved by two rounds of unpack
// (as im2col_fast). The last chunk may read up to 32 bytes past a row (the next row, or the
// plane's 64 spare bytes) and writes columns up to owpad, which nobody reads as output.
QAT_I8_TARGET_AVX2 void qat_i8_depthwise_rows_fast(const uint8_t *plane, const qat_i8_rows_shape *s, uint8_t *rows) {
    if (s->sw > 2) { qat_i8_depthwise_rows_portable(plane, s, rows); return; }
    const int sw = s->sw;
    for (int y = 0; y < s->hp; y++) {
        for (int g = 0; g < s->kw4; g++) {
            const uint8_t *src[4];
            for (int t = 0; t < 4; t++) {
                const int kx = 4 * g + t;
                src[t] = plane + (size_t)y * s->wp + (kx < s->kw ? (size_t)kx * s->dw : 0);
            }
            uint8_t *d = rows + ((size_t)y * s->kw4 + g) * s->owpad * 4;
            for (int ox = 0; ox < s->ow; ox += 16) {
                const size_t at = (size_t)ox * sw;
                const __m128i x0 = load_strided16(src[0] + at, sw), x1 = load_strided16(src[1] + at, sw);
                const __m128i x2 = load_strided16(src[2] + at, sw), x3 = load_strided16(src[3] + at, sw);
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

// AVX2: u8×s8 products would saturate vpmaddubsw, so the bytes are widened to int16 and
// multiplied with vpmaddwd (exact pair sums), as in gemm_avx2.c: 16 bytes are 4 columns × 4
// taps; the two half sums per column are added by vphaddd after the taps.
QAT_I8_TARGET_AVX2 void qat_i8_depthwise_plane_avx2(const qat_i8_depthwise_plane *p) {
    const size_t block = (size_t)p->owpad * 4, row_step = (size_t)p->kw4 * block;
    const int groups = p->kh * p->kw4;
    int64_t w16[groups];  // 4 weights widened to int16, broadcast 64 bits at a time
    for (int i = 0; i < groups; i++) {
        const int16_t four[4] = {p->w[4 * i], p->w[4 * i + 1], p->w[4 * i + 2], p->w[4 * i + 3]};
        memcpy(&w16[i], four, sizeof four);
    }
    const __m256i corr = _mm256_set1_epi32(p->corr);
    for (int oy = 0; oy < p->oh; oy++) {
        int32_t *acc = p->acc + (size_t)oy * p->owpad;
        const uint8_t *top = p->rows + (size_t)oy * p->sh * row_step;
        for (int ox = 0; ox < p->owpad; ox += 16) {
            __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
            for (int ky = 0; ky < p->kh; ky++) {
                const uint8_t *r = top + (size_t)ky * p->dh * row_step + (size_t)ox * 4;
                for (int g = 0; g < p->kw4; g++, r += block) {
                    const __m256i w = _mm256_set1_epi64x(w16[ky * p->kw4 + g]);
                    lo0 = _mm256_add_epi32(lo0, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)r)), w));
                    hi0 = _mm256_add_epi32(hi0, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r + 16))), w));
                    lo1 = _mm256_add_epi32(lo1, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r + 32))), w));
                    hi1 = _mm256_add_epi32(hi1, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r + 48))), w));
                }
            }
            // hadd gives columns 0 1 4 5 | 2 3 6 7; the 64-bit permute puts them in order.
            const __m256i s0 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo0, hi0), 0xD8);
            const __m256i s1 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo1, hi1), 0xD8);
            _mm256_storeu_si256((__m256i *)(acc + ox), _mm256_add_epi32(s0, corr));
            _mm256_storeu_si256((__m256i *)(acc + ox + 8), _mm256_add_epi32(s1, corr));
        }
    }
}

// VNNI: one vpdpbusd adds a group of 4 taps for 16 output columns; 4 vectors (64 columns) at a
// time keep independent accumulators in flight, then single vectors for the rest of the row.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
void vnni_columns(const qat_i8_depthwise_plane *p, const uint8_t *top, const int32_t *w4, int ox, int32_t *acc,
                  const int nv) {
    const size_t block = (size_t)p->owpad * 4, row_step = (size_t)p->kw4 * block;
    __m512i a[4];
    for (int v = 0; v < nv; v++) a[v] = _mm512_set1_epi32(p->corr);
    for (int ky = 0; ky < p->kh; ky++) {
        const uint8_t *r = top + (size_t)ky * p->dh * row_step + (size_t)ox * 4;
        for (int g = 0; g < p->kw4; g++, r += block) {
            const __m512i w = _mm512_set1_epi32(w4[ky * p->kw4 + g]);
            for (int v = 0; v < nv; v++) a[v] = _mm512_dpbusd_epi32(a[v], _mm512_loadu_si512(r + 64 * v), w);
        }
    }
    for (int v = 0; v < nv; v++) _mm512_storeu_si512(acc + ox + 16 * v, a[v]);
}

QAT_I8_TARGET_VNNI void qat_i8_depthwise_plane_vnni(const qat_i8_depthwise_plane *p) {
    const size_t row_step = (size_t)p->kw4 * p->owpad * 4;
    const int groups = p->kh * p->kw4;
    int32_t w4[groups];  // 4 weights read as one int32 and broadcast
    memcpy(w4, p->w, (size_t)groups * 4);
    for (int oy = 0; oy < p->oh; oy++) {
        int32_t *acc = p->acc + (size_t)oy * p->owpad;
        const uint8_t *top = p->rows + (size_t)oy * p->sh * row_step;
        int ox = 0;
        for (; ox + 64 <= p->owpad; ox += 64) vnni_columns(p, top, w4, ox, acc, 4);
        for (; ox < p->owpad; ox += 16) vnni_columns(p, top, w4, ox, acc, 1);
    }
}
