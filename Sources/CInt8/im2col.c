// Column matrices for conv2d in the GEMM's "VNNI layout" (int8_internal.h):
//   b[q][p][t] = xu[ci][oy·stride + ky][ox·stride + kx]   for k = 4q + t = (ci, ky, kx), p = (oy, ox).
// k past the end (padding to a multiple of 4) repeats k = 0: its weight is zero.
#include <immintrin.h>
#include "int8_internal.h"

// Offset into the padded image of the first input pixel that tap k reads.
static size_t tap_offset(int k_index, int kk, int k, int hp, int wp) {
    if (k_index >= kk) k_index = 0;
    const int ci = k_index / (k * k), ky = k_index / k % k, kx = k_index % k;
    return ((size_t)ci * hp + ky) * wp + kx;
}

void qat_i8_im2col_portable(const uint8_t *xu, int c, int hp, int wp, int k, int stride,
                            int oh, int ow, int k4, int npad, uint8_t *b) {
    const int kk = c * k * k;
    for (int q = 0; q < k4; q++) {
        for (int t = 0; t < 4; t++) {
            const uint8_t *src = xu + tap_offset(4 * q + t, kk, k, hp, wp);
            uint8_t *dst = b + (size_t)q * npad * 4 + t;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++)
                    dst[((size_t)oy * ow + ox) * 4] = src[(size_t)oy * stride * wp + (size_t)ox * stride];
        }
    }
}

// Stride 1: the four taps of a group read four contiguous input rows, so 16 columns at a time
// are a byte interleave of four 16-byte loads (two rounds of unpack). A chunk may run up to 15
// columns past the row: it reads the next bytes of the image (or its 64 spare bytes) and writes
// columns that the next row, the next group, or nobody (the GEMM ignores columns ≥ p; b has 16
// spare columns) overwrites. Other strides use the portable loop.
QAT_I8_TARGET_AVX2 void qat_i8_im2col_fast(const uint8_t *xu, int c, int hp, int wp, int k, int stride,
                                           int oh, int ow, int k4, int npad, uint8_t *b) {
    if (stride != 1) { qat_i8_im2col_portable(xu, c, hp, wp, k, stride, oh, ow, k4, npad, b); return; }
    const int kk = c * k * k;
    for (int q = 0; q < k4; q++) {
        const uint8_t *s0 = xu + tap_offset(4 * q, kk, k, hp, wp);
        const uint8_t *s1 = xu + tap_offset(4 * q + 1, kk, k, hp, wp);
        const uint8_t *s2 = xu + tap_offset(4 * q + 2, kk, k, hp, wp);
        const uint8_t *s3 = xu + tap_offset(4 * q + 3, kk, k, hp, wp);
        uint8_t *dst = b + (size_t)q * npad * 4;
        for (int oy = 0; oy < oh; oy++) {
            const size_t row = (size_t)oy * wp;
            uint8_t *d = dst + (size_t)oy * ow * 4;
            for (int ox = 0; ox < ow; ox += 16) {
                const __m128i x0 = _mm_loadu_si128((const __m128i *)(s0 + row + ox));
                const __m128i x1 = _mm_loadu_si128((const __m128i *)(s1 + row + ox));
                const __m128i x2 = _mm_loadu_si128((const __m128i *)(s2 + row + ox));
                const __m128i x3 = _mm_loadu_si128((const __m128i *)(s3 + row + ox));
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
