// Convolution and pooling loops (see Sources/QAT/Ops/Conv2D.swift and Pool.swift for the math).
#include "float_kernels.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QAT_X86 1
#endif

// ---------------------------------------------------------------- im2col / col2im / layouts

void qat_im2col(const float *restrict x, float *restrict cols, const qat_conv_geometry *g,
                long n0, long n1, long ld) {
    const long C = g->channels, H = g->height, W = g->width, K = g->kernel, S = g->stride, P = g->padding;
    const long oh = (H + 2 * P - K) / S + 1, ow = (W + 2 * P - K) / S + 1, plane = oh * ow;
    const long rows = C * K * K;
    for (long row = 0; row < rows; row++) {
        const long kw = row % K, kh = (row / K) % K, c = row / (K * K);
        // valid output columns j: 0 ≤ j·S − P + kw < W
        long lo = (P - kw + S - 1) / S;
        if (P - kw <= 0) lo = 0;
        long hiIncl = W - 1 + P - kw;
        long hi = hiIncl < 0 ? 0 : hiIncl / S + 1;
        if (hi > ow) hi = ow;
        if (lo > hi) lo = hi;
        for (long n = n0; n < n1; n++) {
            const float *image = x + (n * C + c) * H * W;
            float *out = cols + row * ld + (n - n0) * plane;
            for (long i = 0; i < oh; i++) {
                const long ih = i * S - P + kh;
                float *dst = out + i * ow;
                if (ih < 0 || ih >= H || lo == hi) {
                    for (long j = 0; j < ow; j++) dst[j] = 0.0f;
                    continue;
                }
                for (long j = 0; j < lo; j++) dst[j] = 0.0f;
                for (long j = hi; j < ow; j++) dst[j] = 0.0f;
                const float *src = image + ih * W - P + kw;
                if (S == 1) {
                    for (long j = lo; j < hi; j++) dst[j] = src[j];
                } else {
                    for (long j = lo; j < hi; j++) dst[j] = src[j * S];
                }
            }
        }
    }
}

void qat_col2im_add(const float *restrict cols, float *restrict gx, const qat_conv_geometry *g,
                    long n0, long n1, long ld) {
    const long C = g->channels, H = g->height, W = g->width, K = g->kernel, S = g->stride, P = g->padding;
    const long oh = (H + 2 * P - K) / S + 1, ow = (W + 2 * P - K) / S + 1, plane = oh * ow;
    // Image by image, so each image's gradient stays in cache while all its rows add into it.
    for (long n = n0; n < n1; n++) {
        for (long c = 0; c < C; c++) {
            float *image = gx + (n * C + c) * H * W;
            for (long kh = 0; kh < K; kh++) {
                for (long kw = 0; kw < K; kw++) {
                    const long row = (c * K + kh) * K + kw;
                    long lo = (P - kw + S - 1) / S;
                    if (P - kw <= 0) lo = 0;
                    long hiIncl = W - 1 + P - kw;
                    long hi = hiIncl < 0 ? 0 : hiIncl / S + 1;
                    if (hi > ow) hi = ow;
                    if (lo >= hi) continue;
                    const float *src = cols + row * ld + (n - n0) * plane;
                    // Rows of this tap that land inside the image: i·S − P + kh ∈ [0, H).
                    const long iLo = kh >= P ? 0 : (P - kh + S - 1) / S;
                    const long top = H - 1 + P - kh;
                    long iHi = top < 0 ? 0 : top / S + 1;
                    if (iHi > oh) iHi = oh;
                    // The stride test sits outside the row loop: the stride-1 rows then vectorise
                    // without -O3's loop unswitching (the library builds at the default level).
                    if (S == 1) {
                        for (long i = iLo; i < iHi; i++) {
                            float *restrict dst = image + (i - P + kh) * W - P + kw;
                            const float *restrict line = src + i * ow;
                            for (long j = lo; j < hi; j++) dst[j] += line[j];
                        }
                    } else {
                        for (long i = iLo; i < iHi; i++) {
                            float *restrict dst = image + (i * S - P + kh) * W - P + kw;
                            const float *restrict line = src + i * ow;
                            for (long j = lo; j < hi; j++) dst[j * S] += line[j];
                        }
                    }
                }
            }
        }
    }
}

void qat_channel_to_batch(const float *restrict y2d, long ld, float *restrict y, const float *restrict bias,
                          long out_channels, long plane, long n0, long n1) {
    for (long n = n0; n < n1; n++) {
        for (long o = 0; o < out_channels; o++) {
            const float b = bias ? bias[o] : 0.0f;
            const float *s = y2d + o * ld + (n - n0) * plane;
            float *d = y + (n * out_channels + o) * plane;
            for (long p = 0; p < plane; p++) d[p] = s[p] + b;
        }
    }
}

void qat_batch_to_channel(const float *restrict y, float *restrict y2d, long ld,
                          long out_channels, long plane, long n0, long n1) {
    for (long n = n0; n < n1; n++) {
        for (long o = 0; o < out_channels; o++) {
            const float *s = y + (n * out_channels + o) * plane;
            float *d = y2d + o * ld + (n - n0) * plane;
            for (long p = 0; p < plane; p++) d[p] = s[p];
        }
    }
}

// ---------------------------------------------------------------- direct stride-1 convolution
//
// For layers with few input channels and wide outputs (LeNet's conv1: 1 channel, 28 wide), a
// direct loop beats im2col + sgemm: no column matrix, and the 6 output channels that make a
// poor gemm shape become register blocking. Vectorised over output columns, 32 at a time.
// The input is first copied into a zero-padded buffer so the inner loop has no bounds tests.

long qat_conv_padded_width(const qat_conv_geometry *g) {
    const long ow = g->width + 2 * g->padding - g->kernel + 1;
    return ((ow + 31) / 32) * 32 + g->kernel - 1;
}

long qat_conv_padded_height(const qat_conv_geometry *g) { return g->height + 2 * g->padding; }

void qat_conv_pad(const float *restrict x, float *restrict xp, const qat_conv_geometry *g, long n0, long n1) {
    const long C = g->channels, H = g->height, W = g->width, P = g->padding;
    const long hp = qat_conv_padded_height(g), wp = qat_conv_padded_width(g);
    for (long n = n0; n < n1; n++) {
        for (long c = 0; c < C; c++) {
            const float *src = x + (n * C + c) * H * W;
            float *dst = xp + (n * C + c) * hp * wp;
            memset(dst, 0, sizeof(float) * (size_t)(P * wp));
            for (long i = 0; i < H; i++) {
                float *d = dst + (i + P) * wp;
                for (long j = 0; j < P; j++) d[j] = 0.0f;
                for (long j = 0; j < W; j++) d[P + j] = src[i * W + j];
                for (long j = P + W; j < wp; j++) d[j] = 0.0f;
            }
            memset(dst + (H + P) * wp, 0, sizeof(float) * (size_t)((hp - H - P) * wp));
        }
    }
}

#if QAT_X86
int qat_conv_direct_supported(const qat_conv_geometry *g) {
    if (g->stride != 1 || g->kernel > 8 || g->padding >= g->kernel) return 0;
    const long ow = g->width + 2 * g->padding - g->kernel + 1;
    // Below ~16 columns the vector lanes idle; there the gemm wins.
    if (ow < 16 || g->channels * g->kernel * g->kernel > 64) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

__attribute__((target("avx2,fma")))
static inline __m256i tail_mask(long remaining) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(remaining > 8 ? 8 : remaining)), lanes);
}

// OB output channels × 32 output columns of row i, accumulated over (c, kh, kw).
#define QAT_DIRECT_FORWARD_BLOCK(OB)                                                                   \
__attribute__((target("avx2,fma"), always_inline))                                                     \
static inline void direct_forward_block_##OB(const float *restrict xp, const float *restrict w,         \
        const float *restrict bias, float *restrict y, long C, long K, long hp, long wp,                 \
        long oh, long ow, long o0, long i, long j0) {                                                   \
    __m256 acc[OB][4];                                                                                   \
    for (int b = 0; b < OB; b++) {                                                                      \
        const __m256 v = _mm256_set1_ps(bias ? bias[o0 + b] : 0.0f);                                    \
        for (int v4 = 0; v4 < 4; v4++) acc[b][v4] = v;                                                   \
    }                                                                                                    \
    for (long c = 0; c < C; c++) {                                                                      \
        for (long kh = 0; kh < K; kh++) {                                                               \
            const float *row = xp + (c * hp + i + kh) * wp + j0;                                        \
            const float *wk = w + (o0 * C + c) * K * K + kh * K;                                        \
            for (long kw = 0; kw < K; kw++) {                                                           \
                /* OB broadcasts + 4·OB accumulators + 1 input vector ≤ 16 registers for OB ≤ 3 */       \
                __m256 wv[OB];                                                                           \
                for (int b = 0; b < OB; b++) wv[b] = _mm256_broadcast_ss(wk + b * C * K * K + kw);      \
                for (int v4 = 0; v4 < 4; v4++) {                                                        \
                    const __m256 xv = _mm256_loadu_ps(row + kw + 8 * v4);                               \
                    for (int b = 0; b < OB; b++) acc[b][v4] = _mm256_fmadd_ps(wv[b], xv, acc[b][v4]);   \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    for (int b = 0; b < OB; b++) {                                                                      \
        float *out = y + ((o0 + b) * oh + i) * ow + j0;                                                 \
        for (int v4 = 0; v4 < 4; v4++) {                                                                \
            const long left = ow - j0 - 8 * v4;                                                          \
            if (left >= 8) _mm256_storeu_ps(out + 8 * v4, acc[b][v4]);                                   \
            else if (left > 0) _mm256_maskstore_ps(out + 8 * v4, tail_mask(left), acc[b][v4]);          \
        }                                                                                                \
    }                                                                                                    \
}
QAT_DIRECT_FORWARD_BLOCK(1)
QAT_DIRECT_FORWARD_BLOCK(2)
QAT_DIRECT_FORWARD_BLOCK(3)

__attribute__((target("avx2,fma")))
void qat_conv_direct_forward(const float *restrict xp, const float *restrict w, const float *restrict bias,
                             float *restrict y, const qat_conv_geometry *g, long n0, long n1) {
    const long C = g->channels, K = g->kernel, O = g->out_channels;
    const long hp = qat_conv_padded_height(g), wp = qat_conv_padded_width(g);
    const long oh = hp - K + 1, ow = g->width + 2 * g->padding - K + 1;
    for (long n = n0; n < n1; n++) {
        const float *xn = xp + n * C * hp * wp;
        float *yn = y + n * O * oh * ow;
        for (long o0 = 0; o0 < O; o0 += 3) {
            const long ob = O - o0 < 3 ? O - o0 : 3;
            for (long i = 0; i < oh; i++) {
                for (long j0 = 0; j0 < ow; j0 += 32) {
                    if (ob == 3) direct_forward_block_3(xn, w, bias, yn, C, K, hp, wp, oh, ow, o0, i, j0);
                    else if (ob == 2) direct_forward_block_2(xn, w, bias, yn, C, K, hp, wp, oh, ow, o0, i, j0);
                    else direct_forward_block_1(xn, w, bias, yn, C, K, hp, wp, oh, ow, o0, i, j0);
                }
            }
        }
    }
}

__attribute__((target("avx2,fma")))
static inline float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// gw[o, c, kh, 0..K) for one (o, c, kh), summed over every image, output row and column.
// Instantiated per kernel size KK so every loop over kw has a constant trip count and the
// accumulators stay in registers (a run-time K would index them, forcing them to memory).
// Two accumulator sets (even and odd 8-column groups) keep two independent FMA chains per kw.
#define QAT_DIRECT_WEIGHT_GRAD_ROW(KK)                                                                 \
__attribute__((target("avx2,fma")))                                                                    \
static void direct_weight_grad_row_##KK(const float *restrict xp, const float *restrict gy,             \
        float *restrict gw, long N, long C, long O, long hp, long wp, long oh, long ow,                  \
        long o, long c, long kh) {                                                                      \
    __m256 acc[KK], acc2[KK];                                                                           \
    for (int k = 0; k < KK; k++) { acc[k] = _mm256_setzero_ps(); acc2[k] = _mm256_setzero_ps(); }        \
    const long full = ow / 8, left = ow - 8 * full;                                                     \
    const __m256i mask = tail_mask(left);                                                               \
    for (long n = 0; n < N; n++) {                                                                      \
        for (long i = 0; i < oh; i++) {                                                                 \
            const float *grow = gy + ((n * O + o) * oh + i) * ow;                                       \
            const float *xrow = xp + ((n * C + c) * hp + i + kh) * wp;                                  \
            long v = 0;                                                                                  \
            for (; v + 2 <= full; v += 2) {                                                             \
                const __m256 g0 = _mm256_loadu_ps(grow + 8 * v), g1 = _mm256_loadu_ps(grow + 8 * v + 8); \
                for (int kw = 0; kw < KK; kw++) {                                                       \
                    acc[kw] = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xrow + 8 * v + kw), acc[kw]);         \
                    acc2[kw] = _mm256_fmadd_ps(g1, _mm256_loadu_ps(xrow + 8 * v + 8 + kw), acc2[kw]);   \
                }                                                                                        \
            }                                                                                            \
            if (v < full) {                                                                             \
                const __m256 g0 = _mm256_loadu_ps(grow + 8 * v);                                        \
                for (int kw = 0; kw < KK; kw++)                                                         \
                    acc[kw] = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xrow + 8 * v + kw), acc[kw]);         \
                v++;                                                                                     \
            }                                                                                            \
            if (left) {                                                                                  \
                const __m256 g1 = _mm256_maskload_ps(grow + 8 * full, mask);                            \
                for (int kw = 0; kw < KK; kw++)                                                         \
                    acc2[kw] = _mm256_fmadd_ps(g1, _mm256_loadu_ps(xrow + 8 * full + kw), acc2[kw]);    \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    float *out = gw + ((o * C + c) * KK + kh) * KK;                                                     \
    for (int kw = 0; kw < KK; kw++) out[kw] += horizontal_sum(_mm256_add_ps(acc[kw], acc2[kw]));         \
}
QAT_DIRECT_WEIGHT_GRAD_ROW(1)
QAT_DIRECT_WEIGHT_GRAD_ROW(2)
QAT_DIRECT_WEIGHT_GRAD_ROW(3)
QAT_DIRECT_WEIGHT_GRAD_ROW(4)
QAT_DIRECT_WEIGHT_GRAD_ROW(5)
QAT_DIRECT_WEIGHT_GRAD_ROW(6)
QAT_DIRECT_WEIGHT_GRAD_ROW(7)
QAT_DIRECT_WEIGHT_GRAD_ROW(8)

void qat_conv_direct_weight_grad(const float *restrict xp, const float *restrict gy, float *restrict gw,
                                 const qat_conv_geometry *g, long unit0, long unit1) {
    const long C = g->channels, K = g->kernel, O = g->out_channels;
    const long hp = qat_conv_padded_height(g), wp = qat_conv_padded_width(g);
    const long oh = hp - K + 1, ow = g->width + 2 * g->padding - K + 1;
    // One unit per (o, c, kh); each writes its own K weights, so any split is race-free and exact.
    for (long u = unit0; u < unit1; u++) {
        const long kh = u % K, c = (u / K) % C, o = u / (K * C);
        switch (K) {   // qat_conv_direct_supported guarantees K ≤ 8
        case 1: direct_weight_grad_row_1(xp, gy, gw, g->batch, C, O, hp, wp, oh, ow, o, c, kh); break;
        case 2: direct_weight_grad_row_2(xp, gy, gw, g->batch, C, O, hp, wp, oh, ow, o, c, kh); break;
        case 3: direct_weight_grad_row_3(xp, gy, gw, g->batch, C, O, hp, wp, oh, ow, o, c, kh); break;
        case 4: direct_weight_grad_row_4(xp, gy, gw, g->batch, C, O, hp, wp, oh, ow, o, c, kh); break;
        case 5: direct_weight_grad_row_5(xp, gy, gw, g->batch, C, O, hp, wp, oh, ow, o, c, kh); break;
        case 6: direct_weight_grad_row_6(xp, gy, gw, g->batch, C, O, hp, wp, oh, ow, o, c, kh); break;
        case 7: direct_weight_grad_row_7(xp, gy, gw, g->batch, C, O, hp, wp, oh, ow, o, c, kh); break;
        default: direct_weight_grad_row_8(xp, gy, gw, g->batch, C, O, hp, wp, oh, ow, o, c, kh); break;
        }
    }
}

// ---------------------------------------------------------------- direct convolution over 16 output channels
//
// For layers with several input channels, narrow outputs and a multiple of 16 output channels
// (LeNet's conv2: 6 → 16 channels, 10×10 outputs), vectorised over the output channels: two
// 8-lane accumulators per output pixel, up to 5 pixels of a row at a time (10 accumulators).
// No column matrix and no layout transposes in the forward pass. Weights are first rearranged
// to wt [O/16][C·K·K][16]; the weight gradient reads gy as [N, Ho, Wo, O] (qat_conv_nhwc).

int qat_conv_c16_supported(const qat_conv_geometry *g) {
    if (g->stride != 1 || g->padding != 0 || g->kernel > 6 || g->out_channels % 16 != 0) return 0;
    if (g->height < g->kernel || g->width < g->kernel) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

void qat_conv_c16_weights(const float *restrict w, float *restrict wt, const qat_conv_geometry *g) {
    const long O = g->out_channels, R = g->channels * g->kernel * g->kernel;
    for (long o = 0; o < O; o++)
        for (long r = 0; r < R; r++) wt[((o / 16) * R + r) * 16 + o % 16] = w[o * R + r];
}

void qat_conv_nhwc(const float *restrict y, float *restrict yt, long channels, long plane, long n0, long n1) {
    for (long n = n0; n < n1; n++) {
        const float *s = y + n * channels * plane;
        float *d = yt + n * channels * plane;
        for (long c = 0; c < channels; c++)
            for (long p = 0; p < plane; p++) d[p * channels + c] = s[c * plane + p];
    }
}

#define QAT_C16_FORWARD_BLOCK(PB)                                                                      \
__attribute__((target("avx2,fma"), always_inline))                                                     \
static inline void c16_forward_block_##PB(const float *restrict xn, const float *restrict wt,           \
        const float *restrict bias, float *restrict yn, long C, long K, long H, long W,                  \
        long plane, long ow, long ob, long i, long j0) {                                                \
    __m256 acc[PB][2];                                                                                   \
    const __m256 b0 = bias ? _mm256_loadu_ps(bias + 16 * ob) : _mm256_setzero_ps();                      \
    const __m256 b1 = bias ? _mm256_loadu_ps(bias + 16 * ob + 8) : _mm256_setzero_ps();                  \
    for (int p = 0; p < PB; p++) { acc[p][0] = b0; acc[p][1] = b1; }                                     \
    const float *wk = wt + ob * C * K * K * 16;                                                          \
    for (long c = 0; c < C; c++) {                                                                      \
        for (long kh = 0; kh < K; kh++) {                                                               \
            const float *row = xn + (c * H + i + kh) * W + j0;                                          \
            for (long kw = 0; kw < K; kw++, wk += 16) {                                                 \
                const __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);                   \
                for (int p = 0; p < PB; p++) {                                                          \
                    const __m256 xv = _mm256_broadcast_ss(row + kw + p);                                \
                    acc[p][0] = _mm256_fmadd_ps(w0, xv, acc[p][0]);                                     \
                    acc[p][1] = _mm256_fmadd_ps(w1, xv, acc[p][1]);                                     \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    float out[PB][16];                                                                                   \
    for (int p = 0; p < PB; p++) { _mm256_storeu_ps(out[p], acc[p][0]); _mm256_storeu_ps(out[p] + 8, acc[p][1]); } \
    float *dst = yn + 16 * ob * plane + i * ow + j0;                                                     \
    for (int o = 0; o < 16; o++)                                                                        \
        for (int p = 0; p < PB; p++) dst[o * plane + p] = out[p][o];                                     \
}
QAT_C16_FORWARD_BLOCK(1)
QAT_C16_FORWARD_BLOCK(5)

__attribute__((target("avx2,fma")))
void qat_conv_c16_forward(const float *restrict x, const float *restrict wt, const float *restrict bias,
                          float *restrict y, const qat_conv_geometry *g, long n0, long n1) {
    const long C = g->channels, H = g->height, W = g->width, K = g->kernel, O = g->out_channels;
    const long oh = H - K + 1, ow = W - K + 1, plane = oh * ow;
    for (long n = n0; n < n1; n++) {
        const float *xn = x + n * C * H * W;
        float *yn = y + n * O * plane;
        for (long ob = 0; ob < O / 16; ob++) {
            for (long i = 0; i < oh; i++) {
                long j0 = 0;
                for (; j0 + 5 <= ow; j0 += 5) c16_forward_block_5(xn, wt, bias, yn, C, K, H, W, plane, ow, ob, i, j0);
                for (; j0 < ow; j0++) c16_forward_block_1(xn, wt, bias, yn, C, K, H, W, plane, ow, ob, i, j0);
            }
        }
    }
}

// gw[o, c, kh, 0..K) for the 16 o of block ob and one (c, kh), summed over every image and pixel
// in a fixed order. gyt is gy as [N, Ho, Wo, O].
#define QAT_C16_WEIGHT_GRAD_ROW(KK)                                                                    \
__attribute__((target("avx2,fma")))                                                                    \
static void c16_weight_grad_row_##KK(const float *restrict x, const float *restrict gyt,                \
        float *restrict gw, long N, long C, long H, long W, long O, long oh, long ow,                    \
        long ob, long c, long kh) {                                                                     \
    __m256 acc[KK][2];                                                                                   \
    for (int k = 0; k < KK; k++) { acc[k][0] = _mm256_setzero_ps(); acc[k][1] = _mm256_setzero_ps(); }  \
    for (long n = 0; n < N; n++) {                                                                      \
        for (long i = 0; i < oh; i++) {                                                                 \
            const float *xrow = x + ((n * C + c) * H + i + kh) * W;                                     \
            const float *grow = gyt + ((n * oh + i) * ow) * O + 16 * ob;                                \
            for (long j = 0; j < ow; j++) {                                                             \
                const __m256 g0 = _mm256_loadu_ps(grow + j * O), g1 = _mm256_loadu_ps(grow + j * O + 8); \
                for (int kw = 0; kw < KK; kw++) {                                                       \
                    const __m256 xv = _mm256_broadcast_ss(xrow + j + kw);                               \
                    acc[kw][0] = _mm256_fmadd_ps(g0, xv, acc[kw][0]);                                   \
                    acc[kw][1] = _mm256_fmadd_ps(g1, xv, acc[kw][1]);                                   \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    float out[KK][16];                                                                                   \
    for (int k = 0; k < KK; k++) { _mm256_storeu_ps(out[k], acc[k][0]); _mm256_storeu_ps(out[k] + 8, acc[k][1]); } \
    for (int o = 0; o < 16; o++)                                                                        \
        for (int kw = 0; kw < KK; kw++) gw[(((16 * ob + o) * C + c) * KK + kh) * KK + kw] += out[kw][o]; \
}
QAT_C16_WEIGHT_GRAD_ROW(1)
QAT_C16_WEIGHT_GRAD_ROW(2)
QAT_C16_WEIGHT_GRAD_ROW(3)
QAT_C16_WEIGHT_GRAD_ROW(4)
QAT_C16_WEIGHT_GRAD_ROW(5)
QAT_C16_WEIGHT_GRAD_ROW(6)

void qat_conv_c16_weight_grad(const float *restrict x, const float *restrict gyt, float *restrict gw,
                              const qat_conv_geometry *g, long unit0, long unit1) {
    const long C = g->channels, H = g->height, W = g->width, K = g->kernel, O = g->out_channels;
    const long oh = H - K + 1, ow = W - K + 1, N = g->batch;
    // One unit per (o block, c, kh); each writes its own 16·K weights.
    for (long u = unit0; u < unit1; u++) {
        const long kh = u % K, c = (u / K) % C, ob = u / (K * C);
        switch (K) {   // qat_conv_c16_supported guarantees K ≤ 6
        case 1: c16_weight_grad_row_1(x, gyt, gw, N, C, H, W, O, oh, ow, ob, c, kh); break;
        case 2: c16_weight_grad_row_2(x, gyt, gw, N, C, H, W, O, oh, ow, ob, c, kh); break;
        case 3: c16_weight_grad_row_3(x, gyt, gw, N, C, H, W, O, oh, ow, ob, c, kh); break;
        case 4: c16_weight_grad_row_4(x, gyt, gw, N, C, H, W, O, oh, ow, ob, c, kh); break;
        case 5: c16_weight_grad_row_5(x, gyt, gw, N, C, H, W, O, oh, ow, ob, c, kh); break;
        default: c16_weight_grad_row_6(x, gyt, gw, N, C, H, W, O, oh, ow, ob, c, kh); break;
        }
    }
}
#else
int qat_conv_c16_supported(const qat_conv_geometry *g) { (void)g; return 0; }
void qat_conv_c16_weights(const float *restrict w, float *restrict wt, const qat_conv_geometry *g) {
    (void)w; (void)wt; (void)g;
}
void qat_conv_nhwc(const float *restrict y, float *restrict yt, long channels, long plane, long n0, long n1) {
    (void)y; (void)yt; (void)channels; (void)plane; (void)n0; (void)n1;
}
void qat_conv_c16_forward(const float *restrict x, const float *restrict wt, const float *restrict bias,
                          float *restrict y, const qat_conv_geometry *g, long n0, long n1) {
    (void)x; (void)wt; (void)bias; (void)y; (void)g; (void)n0; (void)n1;
}
void qat_conv_c16_weight_grad(const float *restrict x, const float *restrict gyt, float *restrict gw,
                              const qat_conv_geometry *g, long unit0, long unit1) {
    (void)x; (void)gyt; (void)gw; (void)g; (void)unit0; (void)unit1;
}
int qat_conv_direct_supported(const qat_conv_geometry *g) { (void)g; return 0; }
void qat_conv_direct_forward(const float *restrict xp, const float *restrict w, const float *restrict bias,
                             float *restrict y, const qat_conv_geometry *g, long n0, long n1) {
    (void)xp; (void)w; (void)bias; (void)y; (void)g; (void)n0; (void)n1;
}
void qat_conv_direct_weight_grad(const float *restrict xp, const float *restrict gy, float *restrict gw,
                                 const qat_conv_geometry *g, long unit0, long unit1) {
    (void)xp; (void)gy; (void)gw; (void)g; (void)unit0; (void)unit1;
}
#endif

// ---------------------------------------------------------------- max pooling

void qat_maxpool_backward(const float *restrict gy, const int32_t *restrict argmax, float *restrict gx,
                          size_t begin, size_t end) {
    for (size_t o = begin; o < end; o++) gx[argmax[o]] += gy[o];
}

void qat_channel_sums(const float *restrict gy, float *restrict out, long batch, long channels, long plane,
                      long c0, long c1) {
    for (long c = c0; c < c1; c++) {
        // Eight interleaved partial sums, added in a fixed order: vectorises, and the same result
        // whatever the thread count.
        float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        float tail = 0.0f;
        for (long n = 0; n < batch; n++) {
            const float *p = gy + (n * channels + c) * plane;
            long i = 0;
            for (; i + 8 <= plane; i += 8)
                for (int l = 0; l < 8; l++) s[l] += p[i + l];
            for (; i < plane; i++) tail += p[i];
        }
        out[c] += ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + tail;
    }
}
