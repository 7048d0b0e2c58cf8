// The AVX2 + FMA counterpart of depthwise_float_direct.c: 3×3 depthwise kernels that read the
// planes in place, each output row cut into vectors of 8 columns, each tap column a masked load
// (vmaskmovps: lanes outside the plane read as 0, and fault-free) of the input row at that
// offset; blocks whose loads all lie inside the plane use plain loads. No padded copy and no
// wide layout, whose copies cost more than the taps on MobileNet's 7×7 to 28×28 planes.
//
// Stride 2 (forward and weight gradient): two loads of 8 columns and one in-lane shuffle give the
// even or the odd columns, in the lane order 0 2 8 10 | 4 6 12 14 of the loads (shufps works
// per 128-bit half). The taps are lane-wise, so the sums are made in that order and only the
// result is put back in column order (one vpermpd per stored vector), or, for the weight
// gradient, gy is put in that order once per load.
//
// The forward and the input gradient sum in the same order as the wide 3×3 kernels of
// depthwise_float.c (bias, then the taps; a padding tap there adds w · 0, skipped here), so they
// give the same values; the weight gradient's lanes are columns here, so its rounding differs.
#include "depthwise_float_avx2.h"

AVX2 __attribute__((always_inline)) static inline void
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
        __m256 taps[9];
        for (long t = 0; t < 9; t++) taps[t] = _mm256_set1_ps(w[c * 9 + t]);
        const __m256 b = _mm256_set1_ps(bias ? bias[c] : 0.0f);
        for (long block = 0; block < m.blocks; block++) {
            const long j0 = block * LANES;
            __m256i mask[4];
            block_masks(&m, block, mask);
            for (long i = 0; i < oh; i++) {
                __m256 acc = b;
                for (long kh = 0; kh < 3; kh++) {
                    const long r = i * s + kh - top;
                    if (r < 0 || r >= H) continue;
                    __m256 v[3];
                    tap_columns(plane + r * W + j0 * s - g->pad_left, mask, m.full[block], s, v);
                    for (long kw = 0; kw < 3; kw++) acc = _mm256_fmadd_ps(taps[kh * 3 + kw], v[kw], acc);
                }
                if (s == 2) acc = SWAP_MIDDLE(acc);
                if (j0 + LANES <= ow) {
                    _mm256_storeu_ps(out + i * ow + j0, acc);
                } else {
                    store_first(out + i * ow + j0, acc, ow - j0, 0);
                }
            }
        }
    }
}

AVX2 void qat_dw_direct_avx2_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                                     float *restrict y, const qat_conv2d_params *g, long u0, long u1) {
    if (g->stride_h == 1) {
        forward_stride(x, w, bias, y, g, u0, u1, 1);
    } else {
        forward_stride(x, w, bias, y, g, u0, u1, 2);
    }
}

// gx[r, q] += Σ w[kh, kw] · gy[r + top − kh, q + left − kw], taps in the order of the wide
// kernel (the kernel turned by 180°: kh' = 2 − kh, kw' = 2 − kw ascending), summed from 0, then
// added into gx.
AVX2 void qat_dw_direct_avx2_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                                        const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long top = g->pad_top, left = g->pad_left;
    column_masks m;
    column_masks_of(&m, W, ow, left - 2, 1);
    for (long u = u0; u < u1; u++) {
        const float *k = w + (u % C) * 9;
        const float *plane = gy + u * oh * ow;
        float *dst = gx + u * H * W;
        __m256 turned[9];
        for (long t = 0; t < 9; t++) turned[t] = _mm256_set1_ps(k[8 - t]);
        for (long block = 0; block < m.blocks; block++) {
            const long q0 = block * LANES;
            __m256i mask[4];
            block_masks(&m, block, mask);
            for (long r = 0; r < H; r++) {
                __m256 acc = _mm256_setzero_ps();
                for (long kh = 0; kh < 3; kh++) {
                    const long i = r + kh - 2 + top;
                    if (i < 0 || i >= oh) continue;
                    __m256 v[3];
                    tap_columns(plane + i * ow + q0 + left - 2, mask, m.full[block], 1, v);
                    for (long kw = 0; kw < 3; kw++) acc = _mm256_fmadd_ps(turned[kh * 3 + kw], v[kw], acc);
                }
                float *at = dst + r * W + q0;
                if (q0 + LANES <= W) {
                    _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), acc));
                } else {
                    store_first(at, acc, W - q0, 1);
                }
            }
        }
    }
}

// Stride 2: gx[r, q] gets tap (kh, kw) from gy[i, j] when 2i + kh = r + top and 2j + kw = q + left.
// In a block of 8 columns q = q0 + l, the lanes with q + left even take kw = 0 from
// j = (q + left) / 2 and kw = 2 from j − 1, the others kw = 1 from j = (q + left − 1) / 2: one load of
// gy's row from j_base = (q0 + left) / 2 − 1 (8 columns cover the ≤ 6 needed) and three permutes,
// each with the lanes of the other class zeroed, give the three columns.
// Taps sum in (kh, kw) order from 0, then add into gx.
AVX2 void qat_dw_direct_avx2_input_grad_stride2(const float *restrict gy, const float *restrict w,
                                                float *restrict gx, const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long top = g->pad_top, left = g->pad_left, blocks = (W + LANES - 1) / LANES;
    int32_t pick[3][LANES], even_lanes[LANES];
    for (long l = 0; l < LANES; l++) {
        const long at = (l + left) / 2 - left / 2 + 1;   // (q + left) / 2 − j_base
        even_lanes[l] = (l + left) % 2 == 0 ? -1 : 0;
        pick[0][l] = (int32_t)at;
        pick[1][l] = (int32_t)((l + left - 1 + 2) / 2 - 1 - left / 2 + 1);   // (q + left − 1) / 2 − j_base
        pick[2][l] = (int32_t)(at - 1);   // (only the low 3 bits count; odd lanes' picks are unused)
    }
    const __m256 even = _mm256_castsi256_ps(mask_of(even_lanes));
    const __m256i index0 = mask_of(pick[0]), index1 = mask_of(pick[1]), index2 = mask_of(pick[2]);
    int32_t row_masks[MAX_BLOCKS][LANES];
    for (long b = 0; b < blocks; b++) {
        const long j_base = (b * LANES + left) / 2 - 1;
        for (long l = 0; l < LANES; l++) row_masks[b][l] = j_base + l >= 0 && j_base + l < ow ? -1 : 0;
    }
    for (long u = u0; u < u1; u++) {
        const float *k = w + (u % C) * 9;
        const float *plane = gy + u * oh * ow;
        float *dst = gx + u * H * W;
        for (long b = 0; b < blocks; b++) {
            const long q0 = b * LANES, j_base = (q0 + left) / 2 - 1;
            const __m256i row_mask = mask_of(row_masks[b]);
            for (long r = 0; r < H; r++) {
                __m256 acc = _mm256_setzero_ps();
                for (long kh = 0; kh < 3; kh++) {
                    const long a = r + top - kh;
                    if (a < 0 || a % 2 != 0 || a / 2 >= oh) continue;
                    const __m256 row = _mm256_maskload_ps(plane + (a / 2) * ow + j_base, row_mask);
                    const __m256 v0 = _mm256_and_ps(even, _mm256_permutevar8x32_ps(row, index0));
                    const __m256 v1 = _mm256_andnot_ps(even, _mm256_permutevar8x32_ps(row, index1));
                    const __m256 v2 = _mm256_and_ps(even, _mm256_permutevar8x32_ps(row, index2));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(k[kh * 3]), v0, acc);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(k[kh * 3 + 1]), v1, acc);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(k[kh * 3 + 2]), v2, acc);
                }
                float *at = dst + r * W + q0;
                if (q0 + LANES <= W) {
                    _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), acc));
                } else {
                    store_first(at, acc, W - q0, 1);
                }
            }
        }
    }
}

// gw[c, kh, kw] += Σ_{n, i, j} gy[n, c, i, j] · x[n, c, i·s + kh − top, j·s + kw − left]: per tap one
// partial sum per lane (column within its block), images and rows in order, the lanes then
// added pairwise, halves first (in column order: stride 2 puts its sums back first).
AVX2 __attribute__((always_inline)) static inline void
weight_grad_stride(const float *restrict x, const float *restrict gy, float *restrict gw, const qat_conv2d_params *g,
                   long c0, long c1, const long s) {
    const long N = g->batch, C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long top = g->pad_top;
    column_masks m;
    column_masks_of(&m, ow, W, -g->pad_left, s);
    for (long c = c0; c < c1; c++) {
        __m256 acc[9];
        for (long t = 0; t < 9; t++) acc[t] = _mm256_setzero_ps();
        for (long n = 0; n < N; n++) {
            const float *plane = x + (n * C + c) * H * W;
            const float *grad = gy + (n * C + c) * oh * ow;
            for (long i = 0; i < oh; i++) {
                for (long block = 0; block < m.blocks; block++) {
                    const long j0 = block * LANES;
                    __m256 d = j0 + LANES <= ow ? _mm256_loadu_ps(grad + i * ow + j0)
                                                : _mm256_maskload_ps(grad + i * ow + j0, mask_of(m.out[block]));
                    if (s == 2) d = SWAP_MIDDLE(d);
                    __m256i mask[4];
                    block_masks(&m, block, mask);
                    for (long kh = 0; kh < 3; kh++) {
                        const long r = i * s + kh - top;
                        if (r < 0 || r >= H) continue;
                        __m256 v[3];
                        tap_columns(plane + r * W + j0 * s - g->pad_left, mask, m.full[block], s, v);
                        for (long kw = 0; kw < 3; kw++) acc[kh * 3 + kw] = _mm256_fmadd_ps(d, v[kw], acc[kh * 3 + kw]);
                    }
                }
            }
        }
        for (long t = 0; t < 9; t++) {
            float lanes[LANES];
            _mm256_storeu_ps(lanes, s == 2 ? SWAP_MIDDLE(acc[t]) : acc[t]);
            for (long half = LANES / 2; half >= 1; half /= 2) {
                for (long l = 0; l < half; l++) lanes[l] += lanes[l + half];
            }
            gw[c * 9 + t] += lanes[0];
        }
    }
}

AVX2 void qat_dw_direct_avx2_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                                         const qat_conv2d_params *g, long c0, long c1) {
    if (g->stride_h == 1) {
        weight_grad_stride(x, gy, gw, g, c0, c1, 1);
    } else {
        weight_grad_stride(x, gy, gw, g, c0, c1, 2);
    }
}
