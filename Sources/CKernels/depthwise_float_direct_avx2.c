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
#include "depthwise_float_internal.h"

#include <immintrin.h>
#include <stdint.h>

#define AVX2 __attribute__((target("avx2,fma")))

enum { LANES = 8, MAX_BLOCKS = 128 };

// Block b covers output columns j = 8·b + l, l < 8, reading from input column
// base(b) = 8·b·stride + offset. Stride 1: load k (k = kw) reads columns base + k + l.
// Stride 2: loads k = 0, 1, 2, 3 read columns base + {0, 8, 2, 10} + l. `in` keeps the lanes whose
// column lies inside [0, input_width) (at stride 1 also only real outputs), `out` the real
// outputs (as masks of all-ones lanes); `full` says every load of the block keeps all its lanes,
// `left_only` that only load 0 drops some (the first block of a plane padded on the left).
typedef struct {
    long blocks;
    int32_t out[MAX_BLOCKS][LANES], in[MAX_BLOCKS][4][LANES];
    unsigned char full[MAX_BLOCKS], left_only[MAX_BLOCKS];
} column_masks;

static void column_masks_of(column_masks *m, long output_width, long input_width, long offset, long stride) {
    static const long stride2_offsets[4] = {0, 8, 2, 10};
    const long loads = stride == 1 ? 3 : 4;
    m->blocks = (output_width + LANES - 1) / LANES;
    for (long b = 0; b < m->blocks; b++) {
        int full = 1, others_full = 1;
        for (long l = 0; l < LANES; l++) {
            const long j = b * LANES + l, base = b * LANES * stride + offset;
            m->out[b][l] = j < output_width ? -1 : 0;
            for (long k = 0; k < 4; k++) {
                const long column = base + (stride == 1 ? k : stride2_offsets[k]) + l;
                const int inside = k < loads && column >= 0 && column < input_width && (stride == 2 || j < output_width);
                m->in[b][k][l] = inside ? -1 : 0;
                if (k < loads && !inside) full = 0;
                if (k > 0 && k < loads && !inside) others_full = 0;
            }
        }
        m->full[b] = (unsigned char)full;
        m->left_only[b] = (unsigned char)(!full && others_full);
    }
}

static inline __m256i AVX2 mask_of(const int32_t lanes[LANES]) { return _mm256_loadu_si256((const __m256i *)lanes); }

// Block b's load masks, loaded once for all the rows of a plane (loaded per row, they doubled the
// loads of the edge blocks).
AVX2 __attribute__((always_inline)) static inline void block_masks(const column_masks *m, long b, __m256i mask[4]) {
    for (long k = 0; k < 4; k++) mask[k] = mask_of(m->in[b][k]);
}

// dst[0 … n) = (or += when `add`) the first n < 8 lanes of v: 4, 2 and 1 lanes at a time rather
// than vmaskmovps, whose store form is microcoded and slow on AMD cores (the masked loads are
// cheap), and rather than a scalar loop, which the compiler turned into a call to memcpy (the
// call made the kernels keep their taps on the stack). Lane-wise adds: the same values.
AVX2 __attribute__((always_inline)) static inline void store_first(float *dst, __m256 v, long n, int add) {
    __m128 part = _mm256_castps256_ps128(v);
    if (n & 4) {
        _mm_storeu_ps(dst, add ? _mm_add_ps(_mm_loadu_ps(dst), part) : part);
        part = _mm256_extractf128_ps(v, 1);
        dst += 4;
    }
    if (n & 2) {
        const __m128 sum = add ? _mm_add_ps(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)dst), part) : part;
        _mm_storel_pi((__m64 *)dst, sum);
        part = _mm_movehl_ps(part, part);
        dst += 2;
    }
    if (n & 1) _mm_store_ss(dst, add ? _mm_add_ss(_mm_load_ss(dst), part) : part);
}

// Even columns of the 16 at a (8) then b (8), in the order a0 a2 b0 b2 | a4 a6 b4 b6; odd likewise.
#define EVEN(a, b) _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))
#define ODD(a, b) _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))
// Between column order (0 … 7) and the shuffled order above (0 1 4 5 | 2 3 6 7): the same swap of
// the middle 64-bit quarters both ways.
#define SWAP_MIDDLE(v) _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)))

// The input values tap columns kw = 0, 1, 2 meet in block b of a row (row points at base(b));
// `stride` and `full` (0: masked loads, 1: plain ones, 2: left_only) are constants where inlined. Stride 2 gives them in the shuffled order.
AVX2 __attribute__((always_inline)) static inline void tap_columns(const float *row, const __m256i mask[4], int full,
                                                                   long stride, __m256 v[3]) {
    if (stride == 1) {
        if (full == 2) {   // left_only: plain loads but the first
            v[0] = _mm256_maskload_ps(row, mask[0]);
            for (long kw = 1; kw < 3; kw++) v[kw] = _mm256_loadu_ps(row + kw);
        } else if (full) {
            for (long kw = 0; kw < 3; kw++) v[kw] = _mm256_loadu_ps(row + kw);
        } else {
            for (long kw = 0; kw < 3; kw++) v[kw] = _mm256_maskload_ps(row + kw, mask[kw]);
        }
    } else {
        __m256 a, b8, a2, b10;
        if (full == 2) {
            a = _mm256_maskload_ps(row, mask[0]), b8 = _mm256_loadu_ps(row + 8);
            a2 = _mm256_loadu_ps(row + 2), b10 = _mm256_loadu_ps(row + 10);
        } else if (full) {
            a = _mm256_loadu_ps(row), b8 = _mm256_loadu_ps(row + 8);
            a2 = _mm256_loadu_ps(row + 2), b10 = _mm256_loadu_ps(row + 10);
        } else {
            a = _mm256_maskload_ps(row, mask[0]);
            b8 = _mm256_maskload_ps(row + 8, mask[1]);
            a2 = _mm256_maskload_ps(row + 2, mask[2]);
            b10 = _mm256_maskload_ps(row + 10, mask[3]);
        }
        v[0] = EVEN(a, b8);
        v[1] = ODD(a, b8);
        v[2] = EVEN(a2, b10);
    }
}

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

// ---------------------------------------------------------------- row groups
//
// On planes this small the kernels above are bound by loads and per-row work, not FMAs: each
// output vector loads its 3 input rows (3 vectors each) anew. The versions below compute ROWS
// output rows of a block per step, so each input row is loaded once for the (up to 3) output
// rows it feeds. Each output still adds its taps in the same order (bias or 0, then kh, kw
// ascending: the input rows arrive in ascending order), so the forward and the input gradients
// give the same values as the kernels above; the weight gradient's partial sums run over the
// rows of a block before the next block, so its rounding differs from theirs.
// qat_dw_avx2_rows(0) sends the AVX2 path back to the kernels above (the reference in tests).

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

// One plane: every block, ROWS output rows a step, the last rows one at a time.
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
            for (; i < dst_h; i++)
                correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, 1, s, 1, add);
        } else if (m->left_only[block]) {
            for (; i + ROWS <= dst_h; i += ROWS)
                correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, ROWS, s, 2, add);
            for (; i < dst_h; i++)
                correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, 1, s, 2, add);
        } else {
            for (; i + ROWS <= dst_h; i += ROWS)
                correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, ROWS, s, 0, add);
            for (; i < dst_h; i++)
                correlate_rows(src, src_h, src_w, dst, dst_w, taps, init, top, left, m, block, mask, i, 1, s, 0, add);
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
