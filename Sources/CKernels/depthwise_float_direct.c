// AVX-512 3×3 depthwise kernels that read the planes in place: each output row is cut into
// vectors of 16 columns, and each tap column is a masked load of the input row at that offset (the
// mask drops columns outside the plane, which read as 0); at stride 2, two loads of 16 and a
// permute pick the even or odd columns. No padded copy and no wide layout, which on MobileNet's
// 7×7 to 28×28 planes cost more than the taps themselves.
// The forward and the input gradient sum in the same order as the wide 3×3 kernels of
// depthwise_float.c (bias, then the taps; a padding tap there adds w · 0), so they give the
// same values; the weight gradient's lanes are columns here, so its rounding differs.
#include "depthwise_float_internal.h"

#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

enum { MAX_BLOCKS = 64 };

// Block b covers output columns j = 16·b + l, l < 16, reading from input column
// base(b) = 16·b·stride + offset. Stride 1: load k (k = kw) reads columns base + k + l.
// Stride 2: loads k = 0, 1, 2, 3 read columns base + {0, 16, 2, 18} + l. `in` keeps the lanes
// whose column lies inside [0, input_width) (at stride 1 also only real outputs); `out` the real outputs.
typedef struct {
    long blocks, stride;
    __mmask16 out[MAX_BLOCKS], in[MAX_BLOCKS][4];
} column_masks;

static void column_masks_of(column_masks *m, long output_width, long input_width, long offset, long stride) {
    static const long stride2_offsets[4] = {0, 16, 2, 18};
    m->blocks = (output_width + 15) / 16;
    m->stride = stride;
    for (long b = 0; b < m->blocks; b++) {
        unsigned out = 0, in[4] = {0, 0, 0, 0};
        for (long l = 0; l < 16; l++) {
            const long j = b * 16 + l, base = b * 16 * stride + offset;
            if (j < output_width) out |= 1u << l;
            for (long k = 0; k < (stride == 1 ? 3 : 4); k++) {
                const long column = base + (stride == 1 ? k : stride2_offsets[k]) + l;
                if (column >= 0 && column < input_width && (stride == 2 || j < output_width)) in[k] |= 1u << l;
            }
        }
        m->out[b] = (__mmask16)out;
        for (long k = 0; k < 4; k++) m->in[b][k] = (__mmask16)in[k];
    }
}

// The input values tap columns kw = 0, 1, 2 meet in block b of a row (row points at base(b));
// `stride` is m's, a constant where this is inlined.
AVX512 __attribute__((always_inline)) static inline void tap_columns(const float *row, const column_masks *m, long b,
                                                                     long stride, __m512 v[3]) {
    if (stride == 1) {
        for (long kw = 0; kw < 3; kw++) v[kw] = _mm512_maskz_loadu_ps(m->in[b][kw], row + kw);
    } else {
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        const __m512 a = _mm512_maskz_loadu_ps(m->in[b][0], row), b16 = _mm512_maskz_loadu_ps(m->in[b][1], row + 16);
        const __m512 a2 = _mm512_maskz_loadu_ps(m->in[b][2], row + 2), b18 = _mm512_maskz_loadu_ps(m->in[b][3], row + 18);
        v[0] = _mm512_permutex2var_ps(a, even, b16);
        v[1] = _mm512_permutex2var_ps(a, odd, b16);
        v[2] = _mm512_permutex2var_ps(a2, even, b18);
    }
}

int qat_dw_direct_fits(const qat_conv2d_params *g) {
    return g->width <= 16 * MAX_BLOCKS && g->out_width <= 16 * MAX_BLOCKS;
}

AVX512 __attribute__((always_inline)) static inline void
forward_stride(const float *restrict x, const float *restrict w, const float *restrict bias, float *restrict y,
               const qat_conv2d_params *g, long u0, long u1, const long s) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long top = g->pad_top;
    column_masks m;
    column_masks_of(&m, ow, W, -g->pad_left, s);
    for (long u = u0; u < u1; u++) {
        const long c = u % C;
        const float *plane = x + u * H * W;
        float *out = y + u * oh * ow;
        __m512 taps[9];
        for (long t = 0; t < 9; t++) taps[t] = _mm512_set1_ps(w[c * 9 + t]);
        const __m512 b = _mm512_set1_ps(bias ? bias[c] : 0.0f);
        for (long i = 0; i < oh; i++) {
            for (long block = 0; block < m.blocks; block++) {
                const long j0 = block * 16;
                __m512 acc = b;
                for (long kh = 0; kh < 3; kh++) {
                    const long r = i * s + kh - top;
                    if (r < 0 || r >= H) continue;
                    __m512 v[3];
                    tap_columns(plane + r * W + j0 * s - g->pad_left, &m, block, s, v);
                    for (long kw = 0; kw < 3; kw++) acc = _mm512_fmadd_ps(taps[kh * 3 + kw], v[kw], acc);
                }
                _mm512_mask_storeu_ps(out + i * ow + j0, m.out[block], acc);
            }
        }
    }
}

AVX512 void qat_dw_direct_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                                  float *restrict y, const qat_conv2d_params *g, long u0, long u1) {
    if (g->stride_h == 1) {
        forward_stride(x, w, bias, y, g, u0, u1, 1);
    } else {
        forward_stride(x, w, bias, y, g, u0, u1, 2);
    }
}

// gx[r, q] += Σ w[kh, kw] · gy[r + top − kh, q + left − kw], taps in the order of the wide
// kernel (the kernel turned by 180°: kh' = 2 − kh, kw' = 2 − kw ascending).
AVX512 void qat_dw_direct_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                                     const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long top = g->pad_top, left = g->pad_left;
    column_masks m;
    column_masks_of(&m, W, ow, left - 2, 1);
    for (long u = u0; u < u1; u++) {
        const float *k = w + (u % C) * 9;
        const float *plane = gy + u * oh * ow;
        float *dst = gx + u * H * W;
        __m512 turned[9];
        for (long t = 0; t < 9; t++) turned[t] = _mm512_set1_ps(k[8 - t]);
        for (long r = 0; r < H; r++) {
            for (long block = 0; block < m.blocks; block++) {
                const long q0 = block * 16;
                __m512 acc = _mm512_setzero_ps();
                for (long kh = 0; kh < 3; kh++) {
                    const long i = r + kh - 2 + top;
                    if (i < 0 || i >= oh) continue;
                    __m512 v[3];
                    tap_columns(plane + i * ow + q0 + left - 2, &m, block, 1, v);
                    for (long kw = 0; kw < 3; kw++) acc = _mm512_fmadd_ps(turned[kh * 3 + kw], v[kw], acc);
                }
                float *at = dst + r * W + q0;
                _mm512_mask_storeu_ps(at, m.out[block], _mm512_add_ps(_mm512_maskz_loadu_ps(m.out[block], at), acc));
            }
        }
    }
}

// gw[c, kh, kw] += Σ_{n, i, j} gy[n, c, i, j] · x[n, c, i·s + kh − top, j·s + kw − left]: per tap one
// partial sum per lane (column within its block), images and rows in order, the lanes then
// added pairwise, halves first.
AVX512 __attribute__((always_inline)) static inline void
weight_grad_stride(const float *restrict x, const float *restrict gy, float *restrict gw, const qat_conv2d_params *g,
                   long c0, long c1, const long s) {
    const long N = g->batch, C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long top = g->pad_top;
    column_masks m;
    column_masks_of(&m, ow, W, -g->pad_left, s);
    for (long c = c0; c < c1; c++) {
        __m512 acc[9];
        for (long t = 0; t < 9; t++) acc[t] = _mm512_setzero_ps();
        for (long n = 0; n < N; n++) {
            const float *plane = x + (n * C + c) * H * W;
            const float *grad = gy + (n * C + c) * oh * ow;
            for (long i = 0; i < oh; i++) {
                for (long block = 0; block < m.blocks; block++) {
                    const long j0 = block * 16;
                    const __m512 d = _mm512_maskz_loadu_ps(m.out[block], grad + i * ow + j0);
                    for (long kh = 0; kh < 3; kh++) {
                        const long r = i * s + kh - top;
                        if (r < 0 || r >= H) continue;
                        __m512 v[3];
                        tap_columns(plane + r * W + j0 * s - g->pad_left, &m, block, s, v);
                        for (long kw = 0; kw < 3; kw++) acc[kh * 3 + kw] = _mm512_fmadd_ps(d, v[kw], acc[kh * 3 + kw]);
                    }
                }
            }
        }
        for (long t = 0; t < 9; t++) {
            float lanes[16];
            _mm512_storeu_ps(lanes, acc[t]);
            for (long half = 8; half >= 1; half /= 2) {
                for (long l = 0; l < half; l++) lanes[l] += lanes[l + half];
            }
            gw[c * 9 + t] += lanes[0];
        }
    }
}

AVX512 void qat_dw_direct_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                                      const qat_conv2d_params *g, long c0, long c1) {
    if (g->stride_h == 1) {
        weight_grad_stride(x, gy, gw, g, c0, c1, 1);
    } else {
        weight_grad_stride(x, gy, gw, g, c0, c1, 2);
    }
}

// Stride 2: gx[r, q] gets tap (kh, kw) from gy[i, j] when 2i + kh = r + top and 2j + kw = q + left.
// In a block of 16 columns q = q0 + l, the lanes with q + left even take kw = 0 from
// j = (q + left) / 2 and kw = 2 from j − 1, the others kw = 1 from j = (q + left − 1) / 2: one load of
// gy's row from j_base = (q0 + left) / 2 − 1 and three masked permutes give the three columns.
// Taps sum in (kh, kw) order from 0, then add into gx.
AVX512 void qat_dw_direct_input_grad_stride2(const float *restrict gy, const float *restrict w, float *restrict gx,
                                             const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long top = g->pad_top, left = g->pad_left, blocks = (W + 15) / 16;
    int pick[3][16];
    unsigned even_lanes = 0;
    for (long l = 0; l < 16; l++) {
        const long at = (l + left) / 2 - left / 2 + 1;   // (q + left) / 2 − j_base
        if ((l + left) % 2 == 0) even_lanes |= 1u << l;
        pick[0][l] = (int)at;
        pick[1][l] = (int)((l + left - 1 + 2) / 2 - 1 - left / 2 + 1);   // (q + left − 1) / 2 − j_base
        pick[2][l] = (int)(at - 1);
    }
    const __mmask16 even = (__mmask16)even_lanes, odd = (__mmask16)~even_lanes;
    const __m512i index0 = _mm512_loadu_si512(pick[0]), index1 = _mm512_loadu_si512(pick[1]);
    const __m512i index2 = _mm512_loadu_si512(pick[2]);
    __mmask16 row_masks[MAX_BLOCKS], out_masks[MAX_BLOCKS];
    for (long b = 0; b < blocks; b++) {
        const long j_base = (b * 16 + left) / 2 - 1;
        unsigned in = 0, out = 0;
        for (long l = 0; l < 16; l++) {
            if (j_base + l >= 0 && j_base + l < ow) in |= 1u << l;
            if (b * 16 + l < W) out |= 1u << l;
        }
        row_masks[b] = (__mmask16)in;
        out_masks[b] = (__mmask16)out;
    }
    for (long u = u0; u < u1; u++) {
        const float *k = w + (u % C) * 9;
        const float *plane = gy + u * oh * ow;
        float *dst = gx + u * H * W;
        for (long r = 0; r < H; r++) {
            for (long b = 0; b < blocks; b++) {
                const long q0 = b * 16, j_base = (q0 + left) / 2 - 1;
                __m512 acc = _mm512_setzero_ps();
                for (long kh = 0; kh < 3; kh++) {
                    const long a = r + top - kh;
                    if (a < 0 || a % 2 != 0 || a / 2 >= oh) continue;
                    const __m512 row = _mm512_maskz_loadu_ps(row_masks[b], plane + (a / 2) * ow + j_base);
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(k[kh * 3]), _mm512_maskz_permutexvar_ps(even, index0, row), acc);
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(k[kh * 3 + 1]), _mm512_maskz_permutexvar_ps(odd, index1, row), acc);
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(k[kh * 3 + 2]), _mm512_maskz_permutexvar_ps(even, index2, row), acc);
                }
                float *at = dst + r * W + q0;
                _mm512_mask_storeu_ps(at, out_masks[b], _mm512_add_ps(_mm512_maskz_loadu_ps(out_masks[b], at), acc));
            }
        }
    }
}
