// 3×3 convs of one input channel with stride 1 (ResNet's stem on grey images) on the AVX2 path:
// the exact int32 sums Σ w·u straight from the padded image, with no column matrix.
//
// im2col + GEMM gave each output 12 k (9 taps and 3 zeros) and the pair kernel widened every
// column word to int16 pairs with shuffles, per row tile of output channels. Here the 9 taps are
// 5 int16 pairs, (0,1) (2,3) (4,5) (6,7) (8,–) in ky·3 + kx order, built once per 16 outputs from
// the u8 image rows and shared by every output channel: one vpmaddwd per pair and channel.
// Sums are exact in int32, so the order of additions does not change them (int8_internal.h).
#include <immintrin.h>
#include "avx2_store_lanes.h"
#include "int8_internal.h"

int qat_i8_one_channel_allowed = 1;
void qat_i8_allow_one_channel(int allowed) { qat_i8_one_channel_allowed = allowed; }

int qat_i8_one_channel_applies(const qat_i8_conv_geometry *g) {
    return qat_i8_one_channel_allowed && g->c == 1 && g->groups == 1 && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 &&
           g->dh == 1 && g->dw == 1 && g->oc <= QAT_I8_ONE_CHANNEL_MAX_OC && qat_i8_conv_out_w(g) >= 1 && qat_i8_conv_out_h(g) >= 1;
}

// Words (first[j], second[j]) of 16 outputs j as two vectors: outputs 0–3 and 8–11, then
// 4–7 and 12–15 (vpunpck works within 128-bit lanes; the stores put them back in order).
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void pair_words(const uint8_t *first, const uint8_t *second, __m256i *lo, __m256i *hi) {
    const __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)first));
    const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)second));
    *lo = _mm256_unpacklo_epi16(a, b), *hi = _mm256_unpackhi_epi16(a, b);
}

// One image (see int8_internal.h), oc as a constant where inlined with one.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void sums_of_image(const uint8_t *xu, int wp, int oh, int ow, const int8_t *weight, const int32_t *start, const int oc, int32_t *sums,
                   size_t sums_stride) {
    int32_t w[QAT_I8_ONE_CHANNEL_MAX_OC][5];
    for (int o = 0; o < oc; o++) {
        const int8_t *k = weight + (size_t)o * 9;
        for (int q = 0; q < 5; q++) {
            const int16_t w0 = k[2 * q], w1 = 2 * q + 1 < 9 ? k[2 * q + 1] : 0;
            w[o][q] = (int32_t)((uint32_t)(uint16_t)w0 | (uint32_t)(uint16_t)w1 << 16);
        }
    }
    for (int oy = 0; oy < oh; oy++) {
        const uint8_t *r0 = xu + (size_t)oy * wp, *r1 = r0 + wp, *r2 = r1 + wp;
        for (int ox = 0; ox < ow; ox += 16) {
            // Pairs (r0[x], r0[x+1]), (r0[x+2], r1[x]), (r1[x+1], r1[x+2]), (r2[x], r2[x+1]), (r2[x+2], r2[x+3]·0).
            __m256i lo[5], hi[5];
            pair_words(r0 + ox, r0 + ox + 1, &lo[0], &hi[0]);
            pair_words(r0 + ox + 2, r1 + ox, &lo[1], &hi[1]);
            pair_words(r1 + ox + 1, r1 + ox + 2, &lo[2], &hi[2]);
            pair_words(r2 + ox, r2 + ox + 1, &lo[3], &hi[3]);
            pair_words(r2 + ox + 2, r2 + ox + 3, &lo[4], &hi[4]);  // its weight word's high half is 0
            const int valid = ow - ox < 16 ? ow - ox : 16;
            for (int o = 0; o < oc; o++) {
                __m256i s_lo = _mm256_set1_epi32(start[o]), s_hi = s_lo;
                for (int q = 0; q < 5; q++) {
                    const __m256i wq = _mm256_set1_epi32(w[o][q]);
                    s_lo = _mm256_add_epi32(s_lo, _mm256_madd_epi16(lo[q], wq));
                    s_hi = _mm256_add_epi32(s_hi, _mm256_madd_epi16(hi[q], wq));
                }
                const __m256i first = _mm256_permute2x128_si256(s_lo, s_hi, 0x20);   // outputs 0–7
                const __m256i second = _mm256_permute2x128_si256(s_lo, s_hi, 0x31);  // outputs 8–15
                int32_t *dst = sums + (size_t)o * sums_stride + (size_t)oy * ow + ox;
                if (valid == 16) {
                    _mm256_storeu_si256((__m256i *)dst, first);
                    _mm256_storeu_si256((__m256i *)(dst + 8), second);
                } else if (valid > 8) {  // a row's last block: only its outputs (the next row's may be written already)
                    _mm256_storeu_si256((__m256i *)dst, first);
                    qat_i8_store_lanes_avx2(dst + 8, second, valid - 8);
                } else {
                    qat_i8_store_lanes_avx2(dst, first, valid);
                }
            }
        }
    }
}

QAT_I8_TARGET_AVX2 void qat_i8_one_channel_sums_avx2(const uint8_t *xu, int wp, int oh, int ow, const int8_t *weight,
                                                     const int32_t *start, int oc, int32_t *sums, size_t sums_stride) {
    if (oc == 8) sums_of_image(xu, wp, oh, ow, weight, start, 8, sums, sums_stride);  // ResNet's stem
    else sums_of_image(xu, wp, oh, ow, weight, start, oc, sums, sums_stride);
}
