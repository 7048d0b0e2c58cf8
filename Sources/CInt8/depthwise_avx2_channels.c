// Depthwise convolution, AVX2, channels last inside the kernel: vectors run over 16 channels of
// one pixel instead of over the columns of one plane. Why: on mobilenet's 7×7 and 14×14 planes the
// plane kernels (depthwise_avx2_direct.c) fill 7 or 14 lanes of 16 per output row, and per-plane
// work (widening, weights, constants) weighs as much as the outputs. Here every lane is used on any
// plane size, and weights and constants are set up once per call.
//
// Per image, NCHW stays the format at both edges:
//   1. the codes go into a padded NHWC buffer of int16 ([hp][wp][c], border the zero code), by
//      16×8 transposes (16 channels, 8 flat pixels);
//   2. each output pixel takes, per 16 channels, the taps in pairs: vpunpcklwd/hwd of two taps' int16
//      vectors put the pair side by side per channel (channels 0–3 | 8–11 and 4–7 | 12–15, so the
//      weights and constants are stored in that order) and vpmaddwd sums it into int32;
//   3. the requantized codes (or floats, int32) of an output pixel go to an NHWC scratch image,
//      turned into the NCHW output by 16×16 byte (or 8×8 32-bit) transposes.
// The arithmetic is the widened kernel's: acc = Σ q·w + corr + 128·Σw over signed codes q (padding
// holds the code of zero), exact in int32, requantized by the steps of qat_i8_store1, so the
// outputs are the other paths' bit for bit.
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "int8_internal.h"

static int channels_allowed = 1;
void qat_i8_allow_channels_last_depthwise_avx2(int allowed) { channels_allowed = allowed; }

// Multiplier 1 and channels in whole vectors of 16; planes of at least 8 input and 16 output
// pixels (one block of each transpose); codes only with the scale and ties to even. And an image
// whose buffer and scratch fit in 512 KiB (a Zen 3 core's L2): past that the transposes run from
// memory and the plane kernels, whose rows are then wide, are faster (96 channels of 112×112 at
// stride 2: 0.90 ns per output there, 1.43 here; 144 of 56×56: 0.82 and 0.91).
int qat_i8_depthwise_avx2_channels_applies(const qat_i8_conv_geometry *g, const qat_i8_output *o) {
    if (!channels_allowed || g->oc != g->c || g->c % 16 != 0) return 0;
    const size_t pixels = (size_t)qat_i8_conv_out_h(g) * qat_i8_conv_out_w(g);
    if ((size_t)g->h * g->w < 8 || pixels < 16) return 0;
    const size_t padded = (size_t)(g->h + g->pad_top + g->pad_bottom) * (g->w + g->pad_left + g->pad_right);
    const size_t working = padded * g->c * sizeof(int16_t) + pixels * g->c * (o->kind == QAT_I8_OUT_INT8 ? 1 : 4);
    if (working > 512 * 1024) return 0;
    if (o->kind == QAT_I8_OUT_INT8) return !o->shift && o->round_mode == QAT_I8_ROUND_HALF_EVEN;
    return 1;
}

// The lane order of a pair's accumulators: lane k of the "lo" vector is channel lo_channel(k),
// of the "hi" vector channel lo_channel(k) + 4.
static int lo_channel(int k) { return k < 4 ? k : k + 4; }

// Per block of 16 channels, everything the output pixels reuse, in the accumulators' lane order.
// Plain arrays (malloc aligns to 16 bytes, not 32), read with unaligned loads.
typedef struct {
    int pairs;          // (taps + 1) / 2
    int16_t *weights;   // [block][pair][lo, hi][8 lanes × (w_a, w_b)], w_b = 0 past the last tap
    int32_t *corr;      // [block][lo, hi][8]: corr + 128·Σw
    float *scale, *offset;  // [block][lo, hi][8]
} channel_consts;

static void consts_init(channel_consts *k, const qat_i8_conv_geometry *g, const int8_t *weight, const int32_t *bias,
                        int8_t x_zero, const qat_i8_output *o) {
    const int taps = g->kh * g->kw, blocks = g->c / 16;
    k->pairs = (taps + 1) / 2;
    k->weights = qat_i8_checked_malloc((size_t)blocks * k->pairs * 2 * 16 * sizeof(int16_t));
    k->corr = qat_i8_checked_malloc((size_t)blocks * 2 * 8 * sizeof(int32_t));
    k->scale = qat_i8_checked_malloc((size_t)blocks * 2 * 8 * sizeof(float));
    k->offset = qat_i8_checked_malloc((size_t)blocks * 2 * 8 * sizeof(float));
    for (int b = 0; b < blocks; b++) {
        for (int half = 0; half < 2; half++) {
            int16_t w16[16];
            int32_t corr[8];
            float scale[8], offset[8];
            for (int pair = 0; pair < k->pairs; pair++) {
                for (int lane = 0; lane < 8; lane++) {
                    const int ch = 16 * b + lo_channel(lane) + 4 * half;
                    const int t = 2 * pair;
                    w16[2 * lane] = weight[(size_t)ch * taps + t];
                    w16[2 * lane + 1] = t + 1 < taps ? weight[(size_t)ch * taps + t + 1] : 0;
                }
                memcpy(k->weights + (((size_t)b * k->pairs + pair) * 2 + half) * 16, w16, sizeof w16);
            }
            for (int lane = 0; lane < 8; lane++) {
                const int ch = 16 * b + lo_channel(lane) + 4 * half;
                int64_t sum = 0;
                for (int t = 0; t < taps; t++) sum += weight[(size_t)ch * taps + t];
                // The GEMM's corr (over u = q + 128), moved to signed codes; int32 wraps as the other paths'.
                const uint32_t c = (uint32_t)((int64_t)bias[ch] - (128 + (int64_t)x_zero) * sum);
                corr[lane] = (int32_t)(c + 128u * (uint32_t)sum);
                scale[lane] = o->kind == QAT_I8_OUT_INT32 ? 0.0f : o->scale[ch];
                offset[lane] = o->kind != QAT_I8_OUT_INT32 && o->offset ? o->offset[ch] : 0.0f;
            }
            memcpy(k->corr + (2 * b + half) * 8, corr, sizeof corr);
            memcpy(k->scale + (2 * b + half) * 8, scale, sizeof scale);
            memcpy(k->offset + (2 * b + half) * 8, offset, sizeof offset);
        }
    }
}

static void consts_free(channel_consts *k) {
    free(k->weights);
    free(k->corr);
    free(k->scale);
    free(k->offset);
}

// Step 1: image x ([c][h][w] codes) into the interior of the padded NHWC buffer. Per 16 channels,
// 8 flat pixels at a time (the last block moved back to end at the plane's end, rewriting some
// pixels with the same values): row i holds channel i's 8 pixels | channel i + 8's, and three
// rounds of unpacks (rows i and i + 4 to 2i and 2i + 1) transpose both 8×8 halves at once.
// `place[p]` is flat input pixel p's position in the padded buffer, in pixels.
static QAT_I8_TARGET_AVX2 void to_channels_last(const int8_t *x, const qat_i8_conv_geometry *g, const int32_t *place,
                                                int16_t *buffer) {
    const int c = g->c, hw = g->h * g->w;
    for (int b = 0; b < c / 16; b++) {
        const int8_t *planes = x + (size_t)16 * b * hw;
        for (int start = 0; start < hw; start += 8) {
            const int p0 = start + 8 <= hw ? start : hw - 8;
            __m256i r[8];
            for (int i = 0; i < 8; i++) {
                const __m128i both = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(planes + (size_t)i * hw + p0)),
                                                        _mm_loadl_epi64((const __m128i *)(planes + (size_t)(i + 8) * hw + p0)));
                r[i] = _mm256_cvtepi8_epi16(both);  // lanes: channel i | channel i + 8
            }
            // cvtepi8_epi16 widens across lanes: low 8 bytes → lane 0, high 8 → lane 1, as wanted.
            for (int round = 0; round < 3; round++) {
                __m256i n[8];
                for (int i = 0; i < 4; i++) {
                    n[2 * i] = _mm256_unpacklo_epi16(r[i], r[i + 4]);
                    n[2 * i + 1] = _mm256_unpackhi_epi16(r[i], r[i + 4]);
                }
                memcpy(r, n, sizeof r);
            }
            for (int j = 0; j < 8; j++)  // r[j]: pixel p0 + j, channels 16b … 16b + 15
                _mm256_storeu_si256((__m256i *)(buffer + (size_t)place[p0 + j] * c + 16 * b), r[j]);
        }
    }
}

// Step 2 for one output pixel and block: the accumulators of its 16 channels (lo, hi lane order).
// `taps` is a constant after inlining; tap[t] is the offset of tap t from the pixel's first tap.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void pixel_block(const int16_t *at, const ptrdiff_t *tap, const int16_t *weights, __m256i corr_lo, __m256i corr_hi,
                 const int taps, __m256i *lo, __m256i *hi) {
    __m256i a = corr_lo, b = corr_hi;
    for (int t = 0; t < taps; t += 2) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(at + tap[t]));
        const __m256i x1 = t + 1 < taps ? _mm256_loadu_si256((const __m256i *)(at + tap[t + 1])) : _mm256_setzero_si256();
        const __m256i w_lo = _mm256_loadu_si256((const __m256i *)(weights + 16 * t));  // pair t / 2: lo, then hi
        const __m256i w_hi = _mm256_loadu_si256((const __m256i *)(weights + 16 * (t + 1)));
        a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), w_lo));
        b = _mm256_add_epi32(b, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), w_hi));
    }
    *lo = a;
    *hi = b;
}

typedef struct {
    __m256 low, high;
    __m256i zero;  // the zero point in 16-bit lanes
} code_bounds;

// The steps of qat_i8_store1 for scaled codes (multiply, add the offset, round half even, clamp),
// without the zero point, which store_pixel adds to the packed int16. The clamp comes first and
// vcvtps2dq rounds (to nearest even): the bounds are integers, so clamp∘round = round∘clamp, and a
// NaN becomes the low bound (vmaxps returns its second operand), as in the GEMM's pair kernel.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
__m256i codes8(__m256i acc, __m256 scale, __m256 offset, int has_offset, const code_bounds *q) {
    __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale);
    if (has_offset) r = _mm256_add_ps(r, offset);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, q->low), q->high));
}

// One block's constants, in the accumulators' lane order.
typedef struct {
    __m256i corr_lo, corr_hi;
    __m256 scale_lo, scale_hi, offset_lo, offset_hi;
} block_consts;

// An output pixel's 16 channels into scratch at element `at`: codes (bytes), else floats or int32
// in channel order.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void store_pixel(void *scratch, size_t at, __m256i lo, __m256i hi, const block_consts *bc, int has_offset, const code_bounds *q,
                 const qat_i8_out_kind kind) {
    if (kind == QAT_I8_OUT_INT8) {
        // packs: lo lane 0 (0–3), hi lane 0 (4–7) | lo lane 1 (8–11), hi lane 1 (12–15): in order.
        // A clamped value plus the zero point is a code, so the int16 add cannot wrap.
        const __m256i q16 = _mm256_add_epi16(_mm256_packs_epi32(codes8(lo, bc->scale_lo, bc->offset_lo, has_offset, q),
                                                                codes8(hi, bc->scale_hi, bc->offset_hi, has_offset, q)),
                                             q->zero);
        _mm_storeu_si128((__m128i *)((int8_t *)scratch + at), _mm_packs_epi16(_mm256_castsi256_si128(q16), _mm256_extracti128_si256(q16, 1)));
        return;
    }
    if (kind == QAT_I8_OUT_FLOAT) {
        __m256 f_lo = _mm256_mul_ps(_mm256_cvtepi32_ps(lo), bc->scale_lo), f_hi = _mm256_mul_ps(_mm256_cvtepi32_ps(hi), bc->scale_hi);
        if (has_offset) {
            f_lo = _mm256_add_ps(f_lo, bc->offset_lo);
            f_hi = _mm256_add_ps(f_hi, bc->offset_hi);
        }
        lo = _mm256_castps_si256(f_lo);
        hi = _mm256_castps_si256(f_hi);
    }
    int32_t *dst = (int32_t *)scratch + at;
    _mm256_storeu_si256((__m256i *)dst, _mm256_permute2x128_si256(lo, hi, 0x20));        // 0–3, 4–7
    _mm256_storeu_si256((__m256i *)(dst + 8), _mm256_permute2x128_si256(lo, hi, 0x31));  // 8–11, 12–15
}

// Step 2 over the image: every output pixel of every block, into scratch ([oh·ow][c], bytes for
// codes, else 32-bit floats or int32 in channel order). kind and taps are constants after inlining.
// Per output row, block by block: the row's taps (kh input rows) stay in L1.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void compute_image(const int16_t *buffer, const qat_i8_conv_geometry *g, int wp, const channel_consts *k,
                   const qat_i8_output *o, const ptrdiff_t *tap, void *scratch, const qat_i8_out_kind kind, const int taps) {
    // Everything the loop reads as locals: the byte stores to scratch may alias any memory, so
    // values behind pointers would be reloaded after each.
    const int c = g->c, oh = qat_i8_conv_out_h(g), ow = qat_i8_conv_out_w(g), sh = g->sh, sw = g->sw;
    const int has_offset = o->offset != NULL;
    const int16_t *all_weights = k->weights;
    const int32_t *all_corr = k->corr;
    const float *all_scale = k->scale, *all_offset = k->offset;
    const int weights_per_block = k->pairs * 2 * 16;
    ptrdiff_t offsets[taps];
    for (int t = 0; t < taps; t++) offsets[t] = tap[t];
    code_bounds q = {0};
    if (kind == QAT_I8_OUT_INT8)
        q = (code_bounds){_mm256_set1_ps((float)(o->lo - o->zero_point)), _mm256_set1_ps((float)(o->hi - o->zero_point)),
                          _mm256_set1_epi16((int16_t)o->zero_point)};
    for (int oy = 0; oy < oh; oy++) {
        const int16_t *row = buffer + (size_t)oy * sh * wp * c;
        for (int b = 0; b < c / 16; b++) {
            const int16_t *weights = all_weights + (size_t)b * weights_per_block;
            const block_consts bc = {_mm256_loadu_si256((const __m256i *)(all_corr + 16 * b)),
                                     _mm256_loadu_si256((const __m256i *)(all_corr + 16 * b + 8)),
                                     _mm256_loadu_ps(all_scale + 16 * b), _mm256_loadu_ps(all_scale + 16 * b + 8),
                                     _mm256_loadu_ps(all_offset + 16 * b), _mm256_loadu_ps(all_offset + 16 * b + 8)};
            const size_t first = (size_t)oy * ow * c + 16 * b;
            for (int ox = 0; ox < ow; ox++) {
                __m256i lo, hi;
                pixel_block(row + (size_t)ox * sw * c + 16 * b, offsets, weights, bc.corr_lo, bc.corr_hi, taps, &lo, &hi);
                store_pixel(scratch, first + (size_t)ox * c, lo, hi, &bc, has_offset, &q, kind);
            }
        }
    }
}

// Step 3 for codes: scratch [pixels][c] bytes → out [c][pixels], 16×16 blocks (the last pixel block
// moved back to end at the plane's end). Four rounds of unpacks (rows i and i + 8 to 2i and 2i + 1).
static QAT_I8_TARGET_AVX2 void codes_to_planes(const int8_t *scratch, int pixels, int c, int8_t *out) {
    for (int b = 0; b < c / 16; b++) {
        for (int start = 0; start < pixels; start += 16) {
            const int p0 = start + 16 <= pixels ? start : pixels - 16;
            __m128i r[16];
            for (int j = 0; j < 16; j++) r[j] = _mm_loadu_si128((const __m128i *)(scratch + (size_t)(p0 + j) * c + 16 * b));
            for (int round = 0; round < 4; round++) {
                __m128i n[16];
                for (int i = 0; i < 8; i++) {
                    n[2 * i] = _mm_unpacklo_epi8(r[i], r[i + 8]);
                    n[2 * i + 1] = _mm_unpackhi_epi8(r[i], r[i + 8]);
                }
                memcpy(r, n, sizeof r);
            }
            for (int i = 0; i < 16; i++) _mm_storeu_si128((__m128i *)(out + (size_t)(16 * b + i) * pixels + p0), r[i]);
        }
    }
}

// Step 3 for floats and int32: 8×8 blocks of 32-bit values; 4×4 transposes in each lane (two
// rounds of unpacks), then the lanes of rows k and k + 4 recombined.
static QAT_I8_TARGET_AVX2 void words_to_planes(const int32_t *scratch, int pixels, int c, int32_t *out) {
    for (int b = 0; b < c / 8; b++) {
        for (int start = 0; start < pixels; start += 8) {
            const int p0 = start + 8 <= pixels ? start : pixels - 8;
            __m256i r[8];
            for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_si256((const __m256i *)(scratch + (size_t)(p0 + j) * c + 8 * b));
            __m256i t[8];
            for (int group = 0; group < 2; group++) {  // pixels 4g … 4g + 3
                __m256i *m = r + 4 * group;
                for (int round = 0; round < 2; round++) {
                    const __m256i n0 = _mm256_unpacklo_epi32(m[0], m[2]), n1 = _mm256_unpackhi_epi32(m[0], m[2]);
                    const __m256i n2 = _mm256_unpacklo_epi32(m[1], m[3]), n3 = _mm256_unpackhi_epi32(m[1], m[3]);
                    m[0] = n0, m[1] = n1, m[2] = n2, m[3] = n3;
                }
                // m[k]: channel k's 4 pixels | channel k + 4's
                for (int k = 0; k < 4; k++) t[4 * group + k] = m[k];
            }
            for (int k = 0; k < 4; k++) {
                _mm256_storeu_si256((__m256i *)(out + (size_t)(8 * b + k) * pixels + p0), _mm256_permute2x128_si256(t[k], t[4 + k], 0x20));
                _mm256_storeu_si256((__m256i *)(out + (size_t)(8 * b + k + 4) * pixels + p0),
                                    _mm256_permute2x128_si256(t[k], t[4 + k], 0x31));
            }
        }
    }
}

// The taps as a constant count where it pays: 3×3 (mobilenet's), else any kh·kw.
static QAT_I8_TARGET_AVX2 void compute_dispatch(const int16_t *buffer, const qat_i8_conv_geometry *g, int wp,
                                                const channel_consts *k, const qat_i8_output *o, const ptrdiff_t *tap,
                                                void *scratch) {
    const int taps = g->kh * g->kw;
    switch (o->kind) {
    case QAT_I8_OUT_INT8:
        if (taps == 9) compute_image(buffer, g, wp, k, o, tap, scratch, QAT_I8_OUT_INT8, 9);
        else compute_image(buffer, g, wp, k, o, tap, scratch, QAT_I8_OUT_INT8, taps);
        break;
    case QAT_I8_OUT_FLOAT:
        if (taps == 9) compute_image(buffer, g, wp, k, o, tap, scratch, QAT_I8_OUT_FLOAT, 9);
        else compute_image(buffer, g, wp, k, o, tap, scratch, QAT_I8_OUT_FLOAT, taps);
        break;
    default: compute_image(buffer, g, wp, k, o, tap, scratch, QAT_I8_OUT_INT32, taps); break;
    }
}

void qat_i8_depthwise_avx2_channels(const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g, const int8_t *weight,
                                    const int32_t *bias, qat_i8_output output, const qat_i8_hard_swish_epilogue *hard_swish,
                                    void *out) {
    const int c = g->c, oh = qat_i8_conv_out_h(g), ow = qat_i8_conv_out_w(g), pixels = oh * ow;
    const int hp = g->h + g->pad_top + g->pad_bottom, wp = g->w + g->pad_left + g->pad_right;
    channel_consts k;
    consts_init(&k, g, weight, bias, x_zero, &output);
    // Tap t = ky·kw + kx (the weights' order) lies ky·dh rows and kx·dw columns from the first.
    const int taps = g->kh * g->kw;
    ptrdiff_t *tap = qat_i8_checked_malloc((size_t)(taps + 1) * sizeof(ptrdiff_t));
    for (int t = 0; t < taps; t++) tap[t] = ((ptrdiff_t)(t / g->kw) * g->dh * wp + (ptrdiff_t)(t % g->kw) * g->dw) * c;
    tap[taps] = 0;
    int32_t *place = qat_i8_checked_malloc((size_t)g->h * g->w * sizeof(int32_t));
    for (int p = 0; p < g->h * g->w; p++) place[p] = (p / g->w + g->pad_top) * wp + p % g->w + g->pad_left;

    // The border keeps the code of zero; every image rewrites the interior.
    const size_t buffer_size = (size_t)hp * wp * c;
    int16_t *buffer = qat_i8_checked_malloc(buffer_size * sizeof(int16_t));
    for (size_t i = 0; i < buffer_size; i++) buffer[i] = x_zero;
    const size_t elem = output.kind == QAT_I8_OUT_INT8 ? 1 : 4, image_out = (size_t)c * pixels;
    void *scratch = qat_i8_checked_malloc(image_out * elem);
    const int swish_codes = hard_swish && hard_swish->quantize;
    float *swish_image = swish_codes ? qat_i8_checked_malloc(image_out * sizeof(float)) : NULL;

    for (int img = 0; img < g->n; img++) {
        to_channels_last(x + (size_t)img * c * g->h * g->w, g, place, buffer);
        compute_dispatch(buffer, g, wp, &k, &output, tap, scratch);
        if (output.kind == QAT_I8_OUT_INT8) {
            codes_to_planes(scratch, pixels, c, (int8_t *)out + (size_t)img * image_out);
            continue;
        }
        int32_t *planes = swish_codes ? (int32_t *)swish_image : (int32_t *)out + (size_t)img * image_out;
        words_to_planes(scratch, pixels, c, planes);
        if (hard_swish)  // the image's float planes, still in cache
            qat_i8_hard_swish_epilogue_run(QAT_I8_AVX2, hard_swish, (float *)planes,
                                           swish_codes ? (int8_t *)out + (size_t)img * image_out : NULL, image_out);
    }
    free(swish_image);
    free(scratch);
    free(buffer);
    free(tap);
    free(place);
    consts_free(&k);
}
