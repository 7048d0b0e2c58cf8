// The AVX2 + FMA row-group kernels: 3×3 depthwise in place (the block, mask and load helpers are
// in depthwise_float_avx2.h).
//
// On planes this small the one-row kernels (depthwise_float_direct_avx2.c) are bound by loads and
// per-row work, not FMAs: each output vector loads its 3 input rows (3 vectors each) anew. The
// versions below compute ROWS output rows of a block per step, so each input row is loaded once
// for the (up to 3) output rows it feeds. Each output still adds its taps in the same order (bias
// or 0, then kh, kw ascending: the input rows arrive in ascending order), so the forward and the
// input gradients give the same values as the one-row kernels; the weight gradient's partial sums
// run over the rows of a block before the next block, so its rounding differs from theirs.
// qat_dw_avx2_rows(0) sends the AVX2 path back to the one-row kernels (the reference in tests).
#include "depthwise_float_avx2.h"

enum { ROWS = 4, WEIGHT_ROWS = 2 };   // (2, 3 and 4 measured alike for the weight gradient; 2 leaves registers)

static int rows_enabled = 1;

int qat_dw_avx2_rows(int enabled) {
    rows_enabled = enabled != 0;
    return rows_enabled;
}

int qat_dw_avx2_rows_enabled(void) { return rows_enabled; }

// dst[i, j] (= or += when `add`) init + Σ taps[kh, kw] · src[i·s + kh − top, j·s + kw − left] over the
// taps inside src (src_h × src_w), for output rows [i0, i0 + R) of block `block` (m made with
// column_masks_of(m, dst_w, src_w, −left, s)). R, s, full and add are constants where inlined.
AVX2 __attribute__((always_inline)) static inline void
correlate_rows(const float *restrict src, long src_h, long src_w, float *restrict dst, long dst_w, const __m256 taps[9],
               __m256 init, long top, long left, const column_masks *m, long block, const __m256i mask[4], long i0,
               const long R, const long s, const int full, const int add) {
    const long j0 = block * LANES;
    __m256 acc[ROWS];
    for (long k = 0; k < R; k++) acc[k] = init;
#pragma clang loop unroll(full)
    for (long d = 0; d < (R - 1) * s + 3; d++) {
        const long r = i0 * s - top + d;
        if (r < 0 || r >= src_h) continue;
        __m256 v[3];
        tap_columns(src + r * src_w + j0 * s - left, mask, full, s, v);
#pragma clang loop unroll(full)
        for (long k = 0; k < R; k++) {
            const long kh = d - k * s;   // input row d is tap row kh of output row i0 + k
            if (kh < 0 || kh > 2) continue;
            for (long kw = 0; kw < 3; kw++) acc[k] = _mm256_fmadd_ps(taps[kh * 3 + kw], v[kw], acc[k]);
        }
    }
    for (long k = 0; k < R; k++) {
        __m256 out = s == 2 ? SWAP_MIDDLE(acc[k]) : acc[k];
        float *at = dst + (i0 + k) * dst_w + j0;
        if (j0 + LANES <= dst_w) {
            _mm256_storeu_ps(at, add ? _mm256_add_ps(_mm256_loadu_ps(at), out) : out);
        } else {
            store_first(at, out, dst_w - j0, add);
        }
    }
    (void)m;
}

// The last dst_h mod ROWS rows of a block from row i: in one step when accumulating (the input
// gradient: one row at a time loaded the input rows they share again; 14×14 planes ~6 % faster),
// one row at a time in the forward (a step of its own there made the 28×28 forward ~10 % slower,
// though 28 rows have no remainder: code layout, not loads). R, s, full, add: constants where inlined.
AVX2 __attribute__((always_inline)) static inline void
correlate_tail(const float *restrict src, long src_h, long src_w, float *restrict dst, long dst_h, long dst_w,
               const __m256 taps[9], __m256 init, long top, long left, const column_masks *m, long block,
               const __m256i mask[4], long i, const long s, const int full, const int add) {
    _Static_assert(ROWS == 4, "the remainder steps are written for ROWS = 4");
    if (!add) {
        for (; i < dst_h; i++)
            correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, 1, s, full, add);
        return;
    }
    switch (dst_h - i) {
    case 3: correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, 3, s, full, add); break;
    case 2: correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, 2, s, full, add); break;
    case 1: correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, 1, s, full, add); break;
    default: break;
    }
}

// One plane: every block, ROWS output rows a step, then the rest.
AVX2 __attribute__((always_inline)) static inline void
correlate_plane(const float *restrict src, long src_h, long src_w, float *restrict dst, long dst_h, long dst_w,
                const __m256 taps[9], __m256 init, long top, long left, const column_masks *m, const long s,
                const int add) {
    for (long block = 0; block < m->blocks; block++) {
        __m256i mask[4];
        block_masks(m, block, mask);
        long i = 0;
        if (m->full[block]) {
            for (; i + ROWS <= dst_h; i += ROWS)
                correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, ROWS, s, 1, add);
            correlate_tail(src, src_h, src_w, dst, dst_h, dst_w, taps, init, top, left, m, block, mask, i, s, 1, add);
        } else if (m->left_only[block]) {
            for (; i + ROWS <= dst_h; i += ROWS)
                correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, ROWS, s, 2, add);
            correlate_tail(src, src_h, src_w, dst, dst_h, dst_w, taps, init, top, left, m, block, mask, i, s, 2, add);
        } else {
            for (; i + ROWS <= dst_h; i += ROWS)
                correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, ROWS, s, 0, add);
            correlate_tail(src, src_h, src_w, dst, dst_h, dst_w, taps, init, top, left, m, block, mask, i, s, 0, add);
        }
    }
}

AVX2 void qat_dw_rows_avx2_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                                   float *restrict y, const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long s = g->stride_h;
    column_masks m;
    column_masks_of(&m, ow, W, -g->pad_left, s);
    for (long u = u0; u < u1; u++) {
        const long c = u % C;
        __m256 taps[9];
        for (long t = 0; t < 9; t++) taps[t] = _mm256_set1_ps(w[c * 9 + t]);
        const __m256 b = _mm256_set1_ps(bias ? bias[c] : 0.0f);
        if (s == 1) {
            correlate_plane(x + u * H * W, H, W, y + u * oh * ow, oh, ow, taps, b, g->pad_top, g->pad_left, &m, 1, 0);
        } else {
            correlate_plane(x + u * H * W, H, W, y + u * oh * ow, oh, ow, taps, b, g->pad_top, g->pad_left, &m, 2, 0);
        }
    }
}

// Stride 1: the forward correlation of gy with the kernel turned by 180° behind 2 − top rows and
// 2 − left columns of zeros (as qat_dw_direct_avx2_input_grad), added into gx.
AVX2 void qat_dw_rows_avx2_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                                      const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    column_masks m;
    column_masks_of(&m, W, ow, g->pad_left - 2, 1);
    for (long u = u0; u < u1; u++) {
        const float *k = w + (u % C) * 9;
        __m256 turned[9];
        for (long t = 0; t < 9; t++) turned[t] = _mm256_set1_ps(k[8 - t]);
        correlate_plane(gy + u * oh * ow, oh, ow, gx + u * H * W, H, W, turned, _mm256_setzero_ps(), 2 - g->pad_top,
                        2 - g->pad_left, &m, 1, 1);
    }
}

// Stride 2 (see qat_dw_direct_avx2_input_grad_stride2 for the lanes): gy row v gives gx row
// 2v − top its kh = 0 taps, row 2v + 1 − top its kh = 1 taps and row 2v + 2 − top its kh = 2 taps.
// So gy's rows are loaded once each, ascending, and each row's columns are permuted once into A
// (column kw = 0 in the even lanes, kw = 1 in the odd ones) and B (kw = 2 in the even lanes; the odd
// ones are weighted by 0): tap row kh adds wA[kh] · A + wB[kh] · B. A lane gets its nonzero terms in
// the same order as before (kh, then kw, ascending), so the values are the same.
AVX2 void qat_dw_rows_avx2_input_grad_stride2(const float *restrict gy, const float *restrict w, float *restrict gx,
                                              const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long top = g->pad_top, left = g->pad_left, blocks = (W + LANES - 1) / LANES;
    int32_t pick_a[LANES], pick_b[LANES], even_lanes[LANES];
    for (long l = 0; l < LANES; l++) {
        const long at = (l + left) / 2 - left / 2 + 1;   // (q + left) / 2 − j_base
        const int even = (l + left) % 2 == 0;
        even_lanes[l] = even ? -1 : 0;
        pick_a[l] = (int32_t)(even ? at : (l + left - 1 + 2) / 2 - 1 - left / 2 + 1);
        pick_b[l] = (int32_t)(even ? at - 1 : 0);
    }
    const __m256 even = _mm256_castsi256_ps(mask_of(even_lanes));
    const __m256i index_a = mask_of(pick_a), index_b = mask_of(pick_b);
    int32_t row_masks[MAX_BLOCKS][LANES];
    for (long b = 0; b < blocks; b++) {
        const long j_base = (b * LANES + left) / 2 - 1;
        for (long l = 0; l < LANES; l++) row_masks[b][l] = j_base + l >= 0 && j_base + l < ow ? -1 : 0;
    }
    const long v_end = (H - 1 + top) / 2 + 1;   // gy rows (padded) up to the one feeding gx's last row
    for (long u = u0; u < u1; u++) {
        const float *k = w + (u % C) * 9;
        const float *plane = gy + u * oh * ow;
        float *dst = gx + u * H * W;
        __m256 wa[3], wb[3];
        for (long kh = 0; kh < 3; kh++) {
            wa[kh] = _mm256_blendv_ps(_mm256_set1_ps(k[kh * 3 + 1]), _mm256_set1_ps(k[kh * 3]), even);
            wb[kh] = _mm256_and_ps(even, _mm256_set1_ps(k[kh * 3 + 2]));
        }
        for (long b = 0; b < blocks; b++) {
            const long q0 = b * LANES, j_base = (q0 + left) / 2 - 1, n = W - q0 < LANES ? W - q0 : LANES;
            const __m256i row_mask = mask_of(row_masks[b]);
            // The previous gy row's A and B, and whether it exists.
            __m256 prev_a = _mm256_setzero_ps(), prev_b = _mm256_setzero_ps();
            int have_prev = 0;
            for (long v = 0; v <= v_end; v++) {
                const int have = v < oh;
                __m256 a = _mm256_setzero_ps(), bb = _mm256_setzero_ps();
                if (have) {
                    const __m256 row = _mm256_maskload_ps(plane + v * ow + j_base, row_mask);
                    a = _mm256_permutevar8x32_ps(row, index_a);
                    bb = _mm256_and_ps(even, _mm256_permutevar8x32_ps(row, index_b));   // (odd lanes: 0, not 0 · gy)
                }
                // gx row 2v − top: kh = 0 from this row, then kh = 2 from the previous one.
                const long r0 = 2 * v - top;
                if (r0 >= 0 && r0 < H && (have || have_prev)) {
                    __m256 acc = _mm256_setzero_ps();
                    if (have) acc = _mm256_fmadd_ps(wb[0], bb, _mm256_fmadd_ps(wa[0], a, acc));
                    if (have_prev) acc = _mm256_fmadd_ps(wb[2], prev_b, _mm256_fmadd_ps(wa[2], prev_a, acc));
                    float *at = dst + r0 * W + q0;
                    if (n == LANES) {
                        _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), acc));
                    } else {
                        store_first(at, acc, n, 1);
                    }
                }
                // gx row 2v + 1 − top: kh = 1 from this row.
                const long r1 = r0 + 1;
                if (have && r1 >= 0 && r1 < H) {
                    const __m256 acc = _mm256_fmadd_ps(wb[1], bb, _mm256_fmadd_ps(wa[1], a, _mm256_setzero_ps()));
                    float *at = dst + r1 * W + q0;
                    if (n == LANES) {
                        _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), acc));
                    } else {
                        store_first(at, acc, n, 1);
                    }
                }
                prev_a = a, prev_b = bb, have_prev = have;
            }
        }
    }
}

// Weight gradient: per tap one partial sum per lane, as weight_grad_stride, but a block's WEIGHT_ROWS
// output rows a step (each input row loaded once for them).
AVX2 __attribute__((always_inline)) static inline void
weight_rows(const float *restrict plane, const float *restrict grad, const qat_conv2d_params *g, const column_masks *m,
            long block, const __m256i mask[4], long i0, __m256 acc[9], const long R, const long s, const int full) {
    const long H = g->height, W = g->width, ow = g->out_width, top = g->pad_top, j0 = block * LANES;
    __m256 d[WEIGHT_ROWS];
    for (long k = 0; k < R; k++) {
        const float *at = grad + (i0 + k) * ow + j0;
        d[k] = j0 + LANES <= ow ? _mm256_loadu_ps(at) : _mm256_maskload_ps(at, mask_of(m->out[block]));
        if (s == 2) d[k] = SWAP_MIDDLE(d[k]);
    }
#pragma clang loop unroll(full)
    for (long dd = 0; dd < (R - 1) * s + 3; dd++) {
        const long r = i0 * s - top + dd;
        if (r < 0 || r >= H) continue;
        __m256 v[3];
        tap_columns(plane + r * W + j0 * s - g->pad_left, mask, full, s, v);
#pragma clang loop unroll(full)
        for (long k = 0; k < R; k++) {
            const long kh = dd - k * s;
            if (kh < 0 || kh > 2) continue;
            for (long kw = 0; kw < 3; kw++) acc[kh * 3 + kw] = _mm256_fmadd_ps(d[k], v[kw], acc[kh * 3 + kw]);
        }
    }
}

// One block of one plane, all its rows, into 9 sums of its own (kept in registers), which are then
// added to acc: a fixed order (images, blocks, then the rows' sums).
AVX2 __attribute__((always_inline)) static inline void
weight_block(const float *restrict plane, const float *restrict grad, const qat_conv2d_params *g, const column_masks *m,
             long block, __m256 acc[9], const long s, const int full) {
    const long oh = g->out_height;
    __m256i mask[4];
    block_masks(m, block, mask);
    __m256 sums[9];
    for (long t = 0; t < 9; t++) sums[t] = _mm256_setzero_ps();
    long i = 0;
    for (; i + WEIGHT_ROWS <= oh; i += WEIGHT_ROWS) weight_rows(plane, grad, g, m, block, mask, i, sums, WEIGHT_ROWS, s, full);
    for (; i < oh; i++) weight_rows(plane, grad, g, m, block, mask, i, sums, 1, s, full);
    for (long t = 0; t < 9; t++) acc[t] = _mm256_add_ps(acc[t], sums[t]);
}

AVX2 __attribute__((always_inline)) static inline void
weight_grad_rows(const float *restrict x, const float *restrict gy, float *restrict gw, const qat_conv2d_params *g,
                 long c0, long c1, const long s) {
    const long N = g->batch, C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    column_masks m;
    column_masks_of(&m, ow, W, -g->pad_left, s);
    for (long c = c0; c < c1; c++) {
        __m256 acc[9];
        for (long t = 0; t < 9; t++) acc[t] = _mm256_setzero_ps();
        for (long n = 0; n < N; n++) {
            const float *plane = x + (n * C + c) * H * W;
            const float *grad = gy + (n * C + c) * oh * ow;
            for (long block = 0; block < m.blocks; block++) {
                if (m.full[block]) {
                    weight_block(plane, grad, g, &m, block, acc, s, 1);
                } else if (m.left_only[block]) {
                    weight_block(plane, grad, g, &m, block, acc, s, 2);
                } else {
                    weight_block(plane, grad, g, &m, block, acc, s, 0);
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

AVX2 void qat_dw_rows_avx2_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                                       const qat_conv2d_params *g, long c0, long c1) {
    if (g->stride_h == 1) {
        weight_grad_rows(x, gy, gw, g, c0, c1, 1);
    } else {
        weight_grad_rows(x, gy, gw, g, c0, c1, 2);
    }
}
