// Column matrices from channel-blocked images (int8_internal.h, "Channel-blocked operands").
//
// In the blocked layout the 4 bytes a GEMM column needs for one group of 4 k (the same tap of 4
// consecutive channels) already sit together, so an output row's columns for one tap are a run
// of ow 32-bit words (every sw-th word of an input row): one vector load and store per 16
// columns instead of a byte interleave per 16 columns of every output row, which on 2×2 … 7×7
// outputs did 2–8× the useful work. For a 1×1 conv with stride 1 and no padding the blocked
// images are the column matrix itself (gemm.c passes them to the GEMM as they are).
#include <immintrin.h>
#include <string.h>
#include "int8_internal.h"

// Channels 4·cb … 4·cb + 3 of one image, row y, pixels x0 … x0 + count − 1, interleaved and
// shifted to u8: dst[4·j + t] = x[4·cb + t][y][x0 + j] + 128.
static void interleave_portable(const int8_t *src, size_t plane, int count, uint8_t *dst) {
    for (int j = 0; j < count; j++)
        for (int t = 0; t < 4; t++) dst[4 * j + t] = (uint8_t)src[t * plane + j] ^ 0x80;
}

// 16 pixels of 4 channels: two rounds of unpack put each pixel's 4 bytes together.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void interleave16(const int8_t *src, size_t plane, uint8_t *dst) {
    const __m128i flip = _mm_set1_epi8((char)0x80);
    const __m128i x0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)src), flip);
    const __m128i x1 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + plane)), flip);
    const __m128i x2 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + 2 * plane)), flip);
    const __m128i x3 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + 3 * plane)), flip);
    const __m128i lo01 = _mm_unpacklo_epi8(x0, x1), hi01 = _mm_unpackhi_epi8(x0, x1);
    const __m128i lo23 = _mm_unpacklo_epi8(x2, x3), hi23 = _mm_unpackhi_epi8(x2, x3);
    __m128i *out = (__m128i *)dst;
    _mm_storeu_si128(out + 0, _mm_unpacklo_epi16(lo01, lo23));
    _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(lo01, lo23));
    _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(hi01, hi23));
    _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(hi01, hi23));
}

// Full chunks of 16 pixels by vector (never reading past the row: the source is the caller's
// array), the rest by the portable loop.
static QAT_I8_TARGET_AVX2 void interleave_fast(const int8_t *src, size_t plane, int count, uint8_t *dst) {
    int j = 0;
    for (; j + 16 <= count; j += 16) interleave16(src + j, plane, dst + 4 * j);
    interleave_portable(src + j, plane, count - j, dst + 4 * j);
}

// The same for the VNNI path, 16 pixels at a time with masked loads and one masked store for the
// last chunk of a row: rows of 2 … 28 pixels (ResNet's planes) no longer end in the byte loop.
static QAT_I8_TARGET_VNNI void interleave_vnni(const int8_t *src, size_t plane, int count, uint8_t *dst) {
    const __m128i flip = _mm_set1_epi8((char)0x80);
    for (int j = 0; j < count; j += 16) {
        const int n = count - j < 16 ? count - j : 16;
        const __mmask16 pixels = (__mmask16)((1u << n) - 1u);
        const __m128i x0 = _mm_xor_si128(_mm_maskz_loadu_epi8(pixels, src + j), flip);
        const __m128i x1 = _mm_xor_si128(_mm_maskz_loadu_epi8(pixels, src + plane + j), flip);
        const __m128i x2 = _mm_xor_si128(_mm_maskz_loadu_epi8(pixels, src + 2 * plane + j), flip);
        const __m128i x3 = _mm_xor_si128(_mm_maskz_loadu_epi8(pixels, src + 3 * plane + j), flip);
        const __m128i lo01 = _mm_unpacklo_epi8(x0, x1), hi01 = _mm_unpackhi_epi8(x0, x1);
        const __m128i lo23 = _mm_unpacklo_epi8(x2, x3), hi23 = _mm_unpackhi_epi8(x2, x3);
        __m512i out = _mm512_castsi128_si512(_mm_unpacklo_epi16(lo01, lo23));
        out = _mm512_inserti32x4(out, _mm_unpackhi_epi16(lo01, lo23), 1);
        out = _mm512_inserti32x4(out, _mm_unpacklo_epi16(hi01, hi23), 2);
        out = _mm512_inserti32x4(out, _mm_unpackhi_epi16(hi01, hi23), 3);
        const __mmask64 bytes = n == 16 ? ~(__mmask64)0 : (((__mmask64)1 << (4 * n)) - 1);
        _mm512_mask_storeu_epi8(dst + 4 * j, bytes, out);
    }
}

// AVX2, padded planes narrower than 16 pixels (whose rows would all take the byte loop): the
// whole plane as one run into a scratch, by vector, then each row copied to its padded place.
enum { SCRATCH_PIXELS = 4096 };

static QAT_I8_TARGET_AVX2 void block_narrow_rows_avx2(const int8_t *src, const qat_i8_blocking *s, uint8_t *dst) {
    const size_t plane = (size_t)s->h * s->w;
    _Alignas(16) uint8_t scratch[4 * SCRATCH_PIXELS];
    if (plane == 4) {  // 2×2 planes: the 4 channels' 16 bytes are contiguous; one shuffle transposes them
        const __m128i transpose = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        const __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)src), _mm_set1_epi8((char)0x80));
        _mm_store_si128((__m128i *)scratch, _mm_shuffle_epi8(x, transpose));
    } else {
        interleave_fast(src, plane, (int)plane, scratch);
    }
    for (int y = 0; y < s->h; y++)
        memcpy(dst + ((size_t)(y + s->pad_top) * s->wp + s->pad_left) * 4, scratch + (size_t)y * s->w * 4, (size_t)s->w * 4);
}

void qat_i8_block_channels(qat_i8_path path, const int8_t *x, const qat_i8_blocking *s, int image, uint8_t *xb) {
    const size_t plane = (size_t)s->h * s->w;
    const int narrow = path == QAT_I8_AVX2 && s->w < 16 && (plane >= 16 || plane == 4) && plane <= SCRATCH_PIXELS &&
                       (s->hp != s->h || s->wp != s->w);
    for (int cb = 0; cb < s->cb; cb++) {
        const int8_t *src = x + (size_t)cb * 4 * plane;
        uint8_t *dst = xb + ((size_t)cb * s->images + image) * s->hp * s->wp * 4;
        if (narrow) { block_narrow_rows_avx2(src, s, dst); continue; }
        // Without padding the plane is one run of pixels in both layouts.
        const int unpadded = s->hp == s->h && s->wp == s->w, rows = unpadded ? 1 : s->h, run = unpadded ? s->h * s->w : s->w;
        for (int y = 0; y < rows; y++) {
            uint8_t *row = dst + ((size_t)(y + s->pad_top) * s->wp + s->pad_left) * 4;
            if (path == QAT_I8_PORTABLE) interleave_portable(src + (size_t)y * s->w, plane, run, row);
            else if (path == QAT_I8_VNNI) interleave_vnni(src + (size_t)y * s->w, plane, run, row);
            else interleave_fast(src + (size_t)y * s->w, plane, run, row);
        }
    }
}

// Walks the groups q = (cb, ky, kx) in order; runs the body for every (image, output row) with
// src at word (oy·sh + ky·dh)·wp + kx·dw of the image's block and dst at the row's first column.
// The shape is read into locals first: stores through dst may alias *s, and would force reloads.
#define FOR_EACH_ROW(s, b, npad, xb, ...)                                                                 \
    do {                                                                                                  \
        const int cbs_ = (s)->cb, images_ = (s)->images, kh_ = (s)->kh, kw_ = (s)->kw, oh_ = (s)->oh;     \
        const size_t image_words_ = (size_t)(s)->hp * (s)->wp, row_step_ = (size_t)(s)->sh * (s)->wp;   \
        const size_t ky_step_ = (size_t)(s)->dh * (s)->wp, kx_step_ = (size_t)(s)->dw;                   \
        const size_t out_image_ = (size_t)(s)->oh * (s)->ow, out_row_ = (size_t)(s)->ow;                 \
        uint32_t *row_q_ = (uint32_t *)(b);                                                               \
        for (int cb = 0; cb < cbs_; cb++)                                                                 \
            for (int ky = 0; ky < kh_; ky++)                                                              \
                for (int kx = 0; kx < kw_; kx++, row_q_ += (npad)) {                                      \
                    const uint32_t *tap_ = (const uint32_t *)(xb) + (size_t)cb * images_ * image_words_    \
                        + ky * ky_step_ + kx * kx_step_;                                                  \
                    for (int i = 0; i < images_; i++) {                                                  \
                        const uint32_t *src = tap_ + i * image_words_;                                   \
                        uint32_t *dst = row_q_ + i * out_image_;                                         \
                        for (int oy = 0; oy < oh_; oy++, src += row_step_, dst += out_row_) {             \
                            __VA_ARGS__                                                                   \
                        }                                                                                 \
                    }                                                                                     \
                }                                                                                         \
    } while (0)

void qat_i8_im2col_blocked_portable(const uint8_t *xb, const qat_i8_blocking *s, int npad, uint8_t *b) {
    const int ow = s->ow, sw = s->sw;
    FOR_EACH_ROW(s, b, npad, xb, {
        for (int ox = 0; ox < ow; ox++) memcpy(dst + ox, src + (size_t)ox * sw, 4);
    });
}

// Strides 1 and 2 by 8 columns at a time, overrunning as the VNNI version below does (stride 2
// reads up to 15 words past the last one it needs, less than the VNNI version's 31).
QAT_I8_TARGET_AVX2 void qat_i8_im2col_blocked_avx2(const uint8_t *xb, const qat_i8_blocking *s, int npad, uint8_t *b) {
    const int ow = s->ow, sw = s->sw;
    if (sw > 2) { qat_i8_im2col_blocked_portable(xb, s, npad, b); return; }
    // Stride 1 on 2- and 4-wide output rows (ResNet's last planes): the narrowest vector that
    // holds a row, and for 2-wide rows two rows per 16-byte store.
    if (sw == 1 && ow == 2 && s->oh % 2 == 0) {
        FOR_EACH_ROW(s, b, npad, xb, {
            if (oy % 2 == 0) {
                const __m128i upper = _mm_loadl_epi64((const __m128i *)src), lower = _mm_loadl_epi64((const __m128i *)(src + row_step_));
                _mm_storeu_si128((__m128i *)dst, _mm_unpacklo_epi64(upper, lower));
            }
        });
        return;
    }
    if (sw == 1 && ow <= 4) {
        FOR_EACH_ROW(s, b, npad, xb, { _mm_storeu_si128((__m128i *)dst, _mm_loadu_si128((const __m128i *)src)); });
        return;
    }
    if (sw == 1) {
        FOR_EACH_ROW(s, b, npad, xb, {
            for (int ox = 0; ox < ow; ox += 8)
                _mm256_storeu_si256((__m256i *)(dst + ox), _mm256_loadu_si256((const __m256i *)(src + ox)));
        });
        return;
    }
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);  // each half's even words, then a blend
    FOR_EACH_ROW(s, b, npad, xb, {
        for (int ox = 0; ox < ow; ox += 8) {
            const __m256i lo = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(src + 2 * ox)), even);
            const __m256i hi = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(src + 2 * ox + 8)), even);
            _mm256_storeu_si256((__m256i *)(dst + ox), _mm256_blend_epi32(lo, hi, 0xF0));
        }
    });
}

// 16 columns at a time, with whole-vector loads and stores: a row's last chunk may read up to
// 31 words past its input row (for stride 2; within the image block or its 128 spare bytes) and
// write up to 15 columns past its output row, which the next row, the next group, or nobody
// (b's 16 spare words) overwrites, so rows go in order. (Masked stores cost more on this CPU.)
QAT_I8_TARGET_VNNI void qat_i8_im2col_blocked_vnni(const uint8_t *xb, const qat_i8_blocking *s, int npad, uint8_t *b) {
    const int ow = s->ow, sw = s->sw;
    if (sw > 2) { qat_i8_im2col_blocked_portable(xb, s, npad, b); return; }
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // Stride 1: the narrowest vector that holds a row (fewer wasted bytes and cache-line splits
    // on the 2- and 4-wide rows of small outputs).
    if (sw == 1 && ow <= 4) {
        FOR_EACH_ROW(s, b, npad, xb, { _mm_storeu_si128((__m128i *)dst, _mm_loadu_si128((const __m128i *)src)); });
        return;
    }
    if (sw == 1 && ow <= 8) {
        FOR_EACH_ROW(s, b, npad, xb, { _mm256_storeu_si256((__m256i *)dst, _mm256_loadu_si256((const __m256i *)src)); });
        return;
    }
    if (sw == 1) {
        FOR_EACH_ROW(s, b, npad, xb, {
            for (int ox = 0; ox < ow; ox += 16) _mm512_storeu_si512(dst + ox, _mm512_loadu_si512(src + ox));
        });
        return;
    }
    if (ow <= 8) {  // one load of 16 words, the even 8 kept
        FOR_EACH_ROW(s, b, npad, xb, {
            _mm256_storeu_si256((__m256i *)dst, _mm512_castsi512_si256(_mm512_permutexvar_epi32(even, _mm512_loadu_si512(src))));
        });
        return;
    }
    FOR_EACH_ROW(s, b, npad, xb, {
        for (int ox = 0; ox < ow; ox += 16) {
            const __m512i a = _mm512_loadu_si512(src + 2 * ox), c = _mm512_loadu_si512(src + 2 * ox + 16);
            _mm512_storeu_si512(dst + ox, _mm512_permutex2var_epi32(a, even, c));
        }
    });
}
