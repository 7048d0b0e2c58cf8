// Shared by the CInt8 sources; not part of the module's public header.
//
// The GEMM at the heart of conv and linear
// ----------------------------------------
// docs/ALGORITHMS.md §5 wants acc[c] = Σ_k (q_x − o_d)·w_q[c][k] + b_q[c]. VNNI's vpdpbusd multiplies
// unsigned by signed bytes, so activations enter as u = q_x + 128 ∈ [0, 255] (one xor with 0x80)
// and, since q_x − o_d = u − (128 + o_d),
//     acc[c] = Σ_k u·w_q[c][k]  −  (128 + o_d)·Σ_k w_q[c][k]  +  b_q[c]
//            = Σ_k u·w_q[c][k]  +  corr[c],
// where corr[c] is computed once per call. All three paths use the same u and corr and sum exact
// integer products, and the caller guarantees no partial sum leaves int32, so every path gets
// the same acc whatever its order of additions.
//
// Operands (shared by all paths):
//   a: weights [m][k4·4] int8, k padded with zero weights to a multiple of 4;
//   b: activations [k4][npad][4] uint8, "VNNI layout": the 4 bytes for k = 4g…4g+3 of column j
//      sit together, so one 32-bit lane of vpdpbusd is one (column, group of 4 k) dot product.
//      npad ≥ n is the row stride in columns; the vector paths read up to 15 columns past n
//      (within b's spare bytes). Padded k and columns may hold any byte (zero weights or
//      discarded outputs).
// Output (channel c = row i, column j) goes to out + c·row_stride + j·col_stride elements.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "int8_kernels.h"

typedef struct {
    int m, n, k4, npad;
    const int8_t *a;
    const int32_t *corr;  // [m]
    const uint8_t *b;
    qat_i8_output output;
    void *out;
    ptrdiff_t row_stride, col_stride;
    // Implicit GEMM (VNNI path only; all NULL otherwise): b is no column matrix but an image
    // layout read by per-group offsets, group q of column j being the word at b + 4·(tap[q] + j).
    // Columns are then the positions of a padded-width grid, of which only some are outputs:
    // in 16-column vector v, the lanes keep[v] are, in order, output columns dest[v], dest[v] + 1, …
    // (so row i's outputs go to out + i·row_stride + dest[v] …, col_stride 1).
    const int32_t *tap;    // [k4] word offsets
    const uint16_t *keep;  // [⌈n/16⌉]
    const int32_t *dest;   // [⌈n/16⌉]
    int relu;              // VNNI path and AVX2 pair kernel, float output: QATCore's ReLU (x < 0 → 0; NaN and −0 kept) on the stored floats
    // AVX2 pair kernel: a as int16 weight pairs (qat_i8_avx2_weight_pairs), when the caller widened
    // them once for many GEMMs over the same weights; NULL: the kernel widens a itself.
    const int32_t *a_pairs;
    // AVX2 pair kernel: sums computed elsewhere (winograd_avx2.c), [m][initial_stride]; the
    // accumulators start from corr[i] + initial[i·initial_stride + j]. With k4 = 0 the GEMM is
    // then only its epilogue.
    const int32_t *initial;
    size_t initial_stride;
} qat_i8_gemm;

void qat_i8_gemm_portable(const qat_i8_gemm *g);
void qat_i8_gemm_avx2(const qat_i8_gemm *g);
void qat_i8_gemm_vnni(const qat_i8_gemm *g);
// 1 (default): the AVX2 GEMM runs its pair kernel (gemm_avx2_pairs.h), which also applies g->relu;
// 0: the quad kernel, which does not (qat_i8_allow_avx2_pair_tiles).
extern int qat_i8_avx2_pair_tiles;
// The pair kernel's weights: rows·k4 groups of 4 int8 as two words, (w0, w1) and (w2, w3) widened to
// int16 (low half the first). Freed by the caller.
int32_t *qat_i8_avx2_weight_pairs(const int8_t *a, size_t groups);

// Winograd F(2×2, 3×3) on the AVX2 path (winograd_avx2.c): whether it takes a conv, its
// transformed weights, its scratch for one block of 16 images (prepared once per conv), and the
// exact sums Σ w·(code + 128) of a block (x: its first image's codes; x_end: the end of the
// readable codes) into sums[oc][image·p + position].
extern int qat_i8_winograd_allowed;
int qat_i8_winograd_applies(const qat_i8_conv_geometry *g);
int32_t *qat_i8_winograd_weights(const int8_t *weight, int oc, int c);
size_t qat_i8_winograd_scratch_bytes(const qat_i8_conv_geometry *g);
void qat_i8_winograd_prepare(const qat_i8_conv_geometry *g, int8_t x_zero, void *scratch);
void qat_i8_winograd_sums_avx2(const int8_t *x, int images, const int8_t *x_end, const qat_i8_conv_geometry *g,
                               const int32_t *u, void *scratch, int32_t *sums, size_t sums_stride);
// 3×3 convs of one input channel, stride 1, up to 64 output channels, on the AVX2 path
// (conv_one_channel_avx2.c): whether it takes a conv, and one image's exact sums Σ w·(code + 128)
// from its padded u8 plane (oh + 2 rows of wp = ow + 2 bytes, 16 readable bytes past it), each
// plus start[o] (the GEMM's corr: the conv's int32 output), into sums[o·sums_stride + oy·ow + ox].
enum { QAT_I8_ONE_CHANNEL_MAX_OC = 64 };
extern int qat_i8_one_channel_allowed;
int qat_i8_one_channel_applies(const qat_i8_conv_geometry *g);
void qat_i8_one_channel_sums_avx2(const uint8_t *xu, int wp, int oh, int ow, const int8_t *weight, const int32_t *start, int oc,
                                  int32_t *sums, size_t sums_stride);
// 1 (default): the VNNI GEMM runs m a multiple of 8 in 8-row tiles (qat_i8_allow_eight_row_tiles).
extern int qat_i8_eight_row_tiles;
// 1 (default): conv2d_impl reads stride-1 convs on wide planes by per-tap offsets on the VNNI path
// (qat_i8_allow_implicit_gemm).
extern int qat_i8_implicit_gemm_allowed;

// Requantize one accumulator. Float math chosen to match the fake-quant simulation in Swift,
// `(Float(acc) * m).rounded(.toNearestOrEven)`: int→float conversion, one IEEE multiply and a
// round-half-even are exactly specified per element, so the vector paths (cvtdq2ps, mulps,
// roundps/vrndscaleps with round-to-nearest) give the same bits. Clamping happens in float,
// before converting, so huge products cannot wrap.
// nearbyintf with the tie rule `mode`. r = nearbyintf(x) (ties to even) is within ½ of x, so
// d = x − r is exact and x is a tie exactly when d = ±½ (no `floor(x + 0.5)`, which rounds
// 0.49999997 up); the other modes then move r by one where half to even went the other way.
// NaN and ±∞ give d = NaN and stay as they are.
static inline float qat_i8_round(float x, qat_i8_round_mode mode) {
    const float r = nearbyintf(x);
    if (mode == QAT_I8_ROUND_HALF_EVEN) return r;
    const float d = x - r;
    if (d == 0.5f && (mode == QAT_I8_ROUND_HALF_UP || (mode == QAT_I8_ROUND_STD && x > 0))) return r + 1.0f;
    if (d == -0.5f && (mode == QAT_I8_ROUND_HALF_DOWN || (mode == QAT_I8_ROUND_STD && x < 0))) return r - 1.0f;
    return r;
}

static inline int8_t qat_i8_requant_scaled(float scaled, int32_t zero, int32_t lo, int32_t hi, qat_i8_round_mode mode) {
    float r = qat_i8_round(scaled, mode);
    const float low = (float)(lo - zero), high = (float)(hi - zero);
    r = r < low ? low : r;
    r = r > high ? high : r;
    return (int8_t)((int32_t)r + zero);
}

static inline int8_t qat_i8_requant1(int32_t acc, float m, int32_t zero, int32_t lo, int32_t hi, qat_i8_round_mode mode) {
    return qat_i8_requant_scaled((float)acc * m, zero, lo, hi, mode);
}

// Requantize one accumulator by a rounding right shift (multiplier 2^−k, 0 ≤ k ≤ 30), all in
// integers: q = ⌊acc / 2^k⌋ (arithmetic shift), plus 1 when the remainder rem is above half, or
// exactly half and the tie rule says up, then clamp and add o_y. Branch-free form of the
// increment, shared with the vector paths: (rem + 2^(k−1) − 1 + e) >> k, which is 0 or 1 since
// rem < 2^k, with e = 1 where a tie goes up: q odd (half to even), always (half up), never
// (half down), acc ≥ 0 (away from zero: the tie q + ½ is positive exactly then).
static inline int32_t qat_i8_shift_tie_up(int32_t acc, int32_t q, qat_i8_round_mode mode) {
    switch (mode) {
    case QAT_I8_ROUND_HALF_UP: return 1;
    case QAT_I8_ROUND_HALF_DOWN: return 0;
    case QAT_I8_ROUND_STD: return acc >= 0;
    default: return q & 1;
    }
}

static inline int32_t qat_i8_round_shift(int32_t acc, int32_t k, qat_i8_round_mode mode) {
    if (k == 0) return acc;
    const int32_t q = acc >> k;
    const uint32_t rem = (uint32_t)acc & ((1u << k) - 1u);
    return q + (int32_t)((rem + (1u << (k - 1)) - 1u + (uint32_t)qat_i8_shift_tie_up(acc, q, mode)) >> k);
}

static inline int8_t qat_i8_requant_shift(int32_t acc, int32_t k, int32_t zero, int32_t lo, int32_t hi, qat_i8_round_mode mode) {
    int32_t r = qat_i8_round_shift(acc, k, mode);
    const int32_t low = lo - zero, high = hi - zero;
    r = r < low ? low : r;
    r = r > high ? high : r;
    return (int8_t)(r + zero);
}

// (float)acc · scale[row] (+ offset[row]): two roundings, never a fused multiply-add, so that
// the vector paths (mul, then add) give the same bits.
static inline float qat_i8_scaled1(const qat_i8_gemm *g, int row, int32_t acc) {
#pragma clang fp contract(off)
    float y = (float)acc * g->output.scale[row];
    if (g->output.offset) {
        const float off = g->output.offset[row];
        y = y + off;
    }
    return y;
}

// Writes one finished accumulator (bias already in) as the output kind asks. The vector paths
// use it for tails and strided outputs, so the scalar and vector formulas must stay the same.
static inline void qat_i8_store1(const qat_i8_gemm *g, int row, int col, int32_t acc) {
    const ptrdiff_t at = (ptrdiff_t)row * g->row_stride + (ptrdiff_t)col * g->col_stride;
    switch (g->output.kind) {
    case QAT_I8_OUT_INT32: ((int32_t *)g->out)[at] = acc; break;
    case QAT_I8_OUT_FLOAT: ((float *)g->out)[at] = qat_i8_scaled1(g, row, acc); break;
    case QAT_I8_OUT_INT8:
        if (g->output.shift) {
            ((int8_t *)g->out)[at] = qat_i8_requant_shift(acc, g->output.shift[row], g->output.zero_point, g->output.lo, g->output.hi,
                                                          g->output.round_mode);
            break;
        }
        ((int8_t *)g->out)[at] = qat_i8_requant_scaled(qat_i8_scaled1(g, row, acc), g->output.zero_point, g->output.lo,
                                                           g->output.hi, g->output.round_mode);
        break;
    }
}

// Column-matrix builders (im2col.c). `xu` is one image (or one group's channels of it), already
// shifted to u8 and padded: [c][hp][wp] with hp = h + pad_top + pad_bottom, wp likewise, followed
// by at least 64 spare bytes.
typedef struct {
    int c, hp, wp;   // padded input channels
    int kh, kw, sh, sw, dh, dw;
    int oh, ow;
    int k4, npad;    // GEMM operand: k = c·kh·kw in groups of 4, columns padded to 16
} qat_i8_im2col_shape;

void qat_i8_im2col_portable(const uint8_t *xu, const qat_i8_im2col_shape *s, uint8_t *b);
void qat_i8_im2col_fast(const uint8_t *xu, const qat_i8_im2col_shape *s, uint8_t *b);

// Channel-blocked operands (im2col_blocked.c), for convs whose channels per group are a multiple
// of 4. A block of `images` images, shifted to u8 and padded, is stored as
//   xb[cb][image][hp][wp][4]:  the 4 bytes of channels 4·cb … 4·cb + 3 of one pixel side by side,
// followed by at least 128 spare bytes; the border is the code of real zero. The GEMM's k runs
// over (cb, ky, kx, t) in that order (gemm.c packs the weights to match), so group q = (cb, ky, kx)
// of column (image, oy, ox) is the 4-byte word xb[cb][image][oy·sh + ky·dh][ox·sw + kx·dw]:
//   b[q][image·oh·ow + oy·ow + ox] = that word.
// K order does not change a result: the products are exact and summed in int32.
typedef struct {
    int cb, images;          // channel blocks (all groups), images per block
    int h, w, hp, wp;        // input and padded size
    int pad_top, pad_left;
    int kh, kw, sh, sw, dh, dw;
    int oh, ow;
} qat_i8_blocking;

// Writes image `image` of the block (channels 4·cb … of x, [c][h][w] codes) into xb's interior.
void qat_i8_block_channels(qat_i8_path path, const int8_t *x, const qat_i8_blocking *s, int image, uint8_t *xb);
// The column matrix of channel blocks cb0 … cb0 + s->cb − 1 (xb points at block cb0), rows npad words apart.
void qat_i8_im2col_blocked_portable(const uint8_t *xb, const qat_i8_blocking *s, int npad, uint8_t *b);
void qat_i8_im2col_blocked_avx2(const uint8_t *xb, const qat_i8_blocking *s, int npad, uint8_t *b);
void qat_i8_im2col_blocked_vnni(const uint8_t *xb, const qat_i8_blocking *s, int npad, uint8_t *b);

// Depthwise conv's per-channel operand (depthwise.c): for each padded input row y and group of 4
// kernel columns g (kw4 = ⌈kw/4⌉ groups), the 4 bytes of output column ox sit together,
//   rows[((y·kw4 + g)·owpad + ox)·4 + t] = plane[y][ox·sw + (4g + t)·dw] + 128   (4g + t < kw; else column 0, weight zero)
// from a padded plane of int8 codes, shifted to u8 on the way (u = q + 128, as in the GEMM),
// so kernel row ky of output row oy is kw4 "4 taps × owpad columns" blocks at row y = oy·sh + ky·dh:
// the GEMM's VNNI layout with the kernel row's taps as k. owpad is a multiple of 16.
typedef struct {
    int hp, wp, kw, sw, dw, ow, kw4, owpad;
} qat_i8_rows_shape;

void qat_i8_depthwise_rows_portable(const int8_t *plane, const qat_i8_rows_shape *s, uint8_t *rows);
void qat_i8_depthwise_rows_fast(const int8_t *plane, const qat_i8_rows_shape *s, uint8_t *rows);

// One output plane's accumulators: acc[oy·owpad + ox] = corr + Σ_ky Σ_g Σ_t rows(oy·sh + ky·dh, g, ox, t)·w[ky][g][t],
// w: [kh][kw4][4] int8 with zero weights past kw. Columns ow…owpad − 1 are scratch.
// With `codes` set (the vector paths, INT8 output), the accumulators are requantized in registers
// as qat_i8_store1 does and written to codes[oy·ow + ox] instead (channel `channel` of `output`).
typedef struct {
    const uint8_t *rows;
    const int8_t *w;
    int32_t corr;
    int kh, sh, dh, kw4, oh, ow, owpad;
    int32_t *acc;
    int8_t *codes;
    qat_i8_output output;
    int channel;
    // The VBMI kernels read the padded plane itself, shifted to u8 ([hp][wp] and 128 spare bytes),
    // instead of rows; sw is its column stride (1 or 2).
    const uint8_t *plane;
    int wp, sw;
    // The AVX2 widened kernel: the padded plane as int16 codes ([hp][wp] and 64 spare elements),
    // and, when set (float or int32 output), where the oh·ow outputs go instead of acc.
    const int16_t *plane16;
    void *out;
} qat_i8_depthwise_plane;

void qat_i8_depthwise_plane_portable(const qat_i8_depthwise_plane *p);
void qat_i8_depthwise_plane_avx2(const qat_i8_depthwise_plane *p);
void qat_i8_depthwise_plane_vnni(const qat_i8_depthwise_plane *p);
// AVX2 from p->plane (int8 codes, not shifted) for kw ≤ 4, dw = 1, sw 1 or 2 (depthwise_avx2_direct.c):
// the same accumulators and codes; _applies says whether the driver may use it for g.
int qat_i8_depthwise_avx2_direct_applies(const qat_i8_conv_geometry *g);
void qat_i8_depthwise_plane_avx2_direct(const qat_i8_depthwise_plane *p);
// Its widened form (same file): 1 unless qat_i8_allow_widened_depthwise_avx2 turned it off; the
// interior of a padded int16 plane whose border holds `zero` and which has 64 spare elements; the kernel.
int qat_i8_depthwise_avx2_widened_applies(void);
void qat_i8_depthwise_avx2_widen_plane(const int8_t *src, int h, int w, int wp, int16_t zero, int16_t *interior);
void qat_i8_depthwise_plane_avx2_widened(const qat_i8_depthwise_plane *p);
// VNNI + VBMI, for kw ≤ 4, dw = 1, sw ≤ 2, from p->plane: the same accumulators and codes.
void qat_i8_depthwise_plane_vbmi(const qat_i8_depthwise_plane *p);
// The flat kernel for small output planes (depthwise_flat.c), VNNI + VBMI, kw ≤ 4: output j = oy·ow + ox
// in lane j mod 16 of vector j / 16, its operand bytes picked from 128 bytes of the padded u8 plane
// at base[v] + ky·row_step by index[64v…64v + 63]. Built per call from the shape only.
typedef struct {
    int n, vectors, row_step;
    int two_sources;  // some index ≥ 64: two loads and vpermi2b, else one load and vpermb
    int32_t *base;
    uint8_t *index;
} qat_i8_flat_table;
// 1 and a table when the flat kernel applies and needs fewer vectors than the row kernels
// (owpad / 16 per output row); else 0 and an empty table. wp: the padded plane's row stride.
int qat_i8_flat_table_init(const qat_i8_conv_geometry *g, int wp, int owpad, qat_i8_flat_table *t);
void qat_i8_flat_table_free(qat_i8_flat_table *t);
// The accumulators of one output plane as p->codes says, else to `out` (floats for output kind
// FLOAT, else int32, oh·ow contiguous); reads p->plane (with 128 spare bytes), p->w, corr, kh, output.
void qat_i8_depthwise_plane_flat(const qat_i8_depthwise_plane *p, const qat_i8_flat_table *t, void *out);
// The VBMI kernel's plane: h rows of w codes from src into dst (row stride wp), shifted to u8.
// Also the VNNI path's padded conv input (gemm.c); needs AVX-512 BW only.
void qat_i8_copy_rows_shifted(const int8_t *src, int h, int w, uint8_t *dst, int wp);
// The same on AVX2 (depthwise_simd.c): a row's last part of n < 16 codes is blended into the bytes
// already there; its codes are read as a vector while 16 bytes stay below src_end.
void qat_i8_copy_rows_shifted_avx2(const int8_t *src, int h, int w, uint8_t *dst, int wp, const int8_t *src_end);
// qat_i8_copy_rows_shifted for a padded width wp ≤ 64, `rows` = 64 / wp rows per vector (VBMI;
// depthwise_simd.c): index[j] is the code under padded byte j of a run of rows, keep its mask.
typedef struct {
    uint8_t index[64];
    uint64_t keep;
    int rows;
} qat_i8_row_packing;
// 0 when the plane does not fit (or qat_i8_allow_packed_plane_copy turned it off).
int qat_i8_row_packing_init(int w, int wp, qat_i8_row_packing *t);
void qat_i8_copy_plane_packed(const int8_t *src, int h, int w, int wp, const qat_i8_row_packing *t, uint8_t *dst);
// 1 when the CPU has AVX-512 VBMI and qat_i8_allow_vbmi has not turned it off.
int qat_i8_cpu_has_vbmi(void);

// Writes rows × cols accumulators (row r at acc + r·acc_stride) of channel `channel` to `out`
// (rows·cols contiguous elements) as output.kind says: the formula of qat_i8_store1 (elementwise.c).
void qat_i8_finish(qat_i8_path path, const int32_t *acc, size_t rows, size_t cols, size_t acc_stride,
                   qat_i8_output output, int channel, void *out);

// What follows a float-output conv in qat_i8_conv2d_hard_swish: hardSwish, then a quantize when set.
typedef struct {
    const qat_i8_quantize_grid *quantize;
} qat_i8_hard_swish_epilogue;
// hardSwish on count floats in place, or (e->quantize) from them into `codes` (elementwise.c).
void qat_i8_hard_swish_epilogue_run(qat_i8_path path, const qat_i8_hard_swish_epilogue *e, float *floats, int8_t *codes,
                                    size_t count);
// qat_i8_conv2d_depthwise, with a hardSwish epilogue on each float output plane when `hard_swish` is set.
void qat_i8_depthwise_impl(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                           const int8_t *weight, const int32_t *bias, qat_i8_output output, const qat_i8_pool_geometry *pool,
                           const qat_i8_hard_swish_epilogue *hard_swish, void *out);
// AVX2, channels last inside the kernel (depthwise_avx2_channels.c): the whole call, every image,
// the hardSwish epilogue included; the same outputs as the plane kernels. _applies says whether
// it takes g and this output (multiplier 1, channels a multiple of 16, no pool).
int qat_i8_depthwise_avx2_channels_applies(const qat_i8_conv_geometry *g, const qat_i8_output *o);
void qat_i8_depthwise_avx2_channels(const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g, const int8_t *weight,
                                    const int32_t *bias, qat_i8_output output, const qat_i8_hard_swish_epilogue *hard_swish,
                                    void *out);

// 2×2 stride-2 max pool for the AVX2 and VNNI paths (im2col.c); h, w ≥ 2.
void qat_i8_maxpool2x2_fast(const int8_t *x, int8_t *y, size_t planes, size_t h, size_t w);

// Global average pool of the first planes − planes mod 8 planes, eight at a time (float_nodes_simd.c),
// of floats x or, when q is set, codes dequantized as scale·(q − zero); returns how many it did.
size_t qat_i8_global_avgpool_fast(const float *x, const int8_t *q, float scale, int32_t zero,
                                  size_t planes, size_t area, float factor, float *y);

// qat_i8_hard_swish's loop, 16 or 8 floats at a time, the same bits (float_nodes_simd.c); x may be y.
void qat_i8_hard_swish_vnni16(const float *x, float *y, size_t count);
void qat_i8_hard_swish_avx2x8(const float *x, float *y, size_t count);

// qat_i8_quantize and qat_i8_hard_swish_quantize as their plain loops, with a division per value;
// and, for ties to even on AVX2 where qat_i8_reciprocal_quantize_applies(scale) (1/scale a normal
// float), the same codes by products with 1/scale (and 1/6), near ties redone by the loops
// (quantize_reciprocal.c).
void qat_i8_quantize_exact(qat_i8_path path, const float *x, float scale, int32_t zero, int32_t lo, qat_i8_round_mode round_mode,
                           int8_t *q, size_t count);
void qat_i8_hard_swish_quantize_exact(qat_i8_path path, const float *x, float scale, int32_t zero, int32_t lo,
                                      qat_i8_round_mode round_mode, int8_t *q, size_t count);
int qat_i8_reciprocal_quantize_applies(float scale);
void qat_i8_quantize_reciprocal_avx2(const float *x, float scale, int32_t zero, int32_t lo, int8_t *q, size_t count);
void qat_i8_hard_swish_quantize_reciprocal_avx2(const float *x, float scale, int32_t zero, int32_t lo, int8_t *q, size_t count);

// The float max pool of qat_i8_maxpool_float, 16 or 8 output columns at a time (maxpool_float_simd.c);
// column strides 1 and 2.
void qat_i8_maxpool_float_vnni16(const float *x, float *y, size_t planes, const qat_i8_pool_geometry *g);
void qat_i8_maxpool_float_avx2x8(const float *x, float *y, size_t planes, const qat_i8_pool_geometry *g);

// A conv's float output pooled on its accumulators, VNNI path, planes up to 32 wide with up to 16
// output columns (maxpool_float_simd.c): max pool (g) each int32 plane c, then dequantize as
// qat_i8_scaled1 ((float)acc · scale[c] (+ offset[c])) and, with relu, x < 0 → 0. The floats of
// dequantize → ReLU → qat_i8_maxpool_float whenever qat_i8_dequantize_is_increasing: every step
// is then non-decreasing and no NaN or −0 arises, so the max of the floats is the float of the
// max accumulator (a window without pixels: −∞ either way). Returns 0, doing nothing, for other shapes.
int qat_i8_maxpool_accumulators_vnni16(const int32_t *x, float *y, size_t planes, const qat_i8_pool_geometry *g,
                                       const float *scale, const float *offset, int relu);
// The same on AVX2 for any plane width, column strides 1 and 2 (returns 0 for others), 8 output columns at a time.
int qat_i8_maxpool_accumulators_avx2x8(const int32_t *x, float *y, size_t planes, const qat_i8_pool_geometry *g,
                                       const float *scale, const float *offset, int relu);
// 1 when every scale[c] is finite and above 0 and every offset[c] (if any) finite.
int qat_i8_dequantize_is_increasing(const qat_i8_output *o, int channels);
// 1 (default): conv2d_impl pools accumulators where it may; 0 (tests): the float epilogue.
extern int qat_i8_pool_accumulators_allowed;

// The weight operand a of qat_i8_gemm and its corr (gemm_pack.c), for the three b layouts: the
// byte-wise im2col ([m][k] → [m][k4·4], zero weights in the padding), channel-blocked operands
// (c a multiple of 4) and the implicit GEMM's row taps (kw ≤ 4). corr[i] = b_q[i] − (128 + o_d)·Σ_k w[i][k].
int8_t *qat_i8_pack_weights(const int8_t *w, const int32_t *bias, int m, int k, int k4, int8_t x_zero, int32_t **corr_out);
int8_t *qat_i8_pack_weights_blocked(const int8_t *w, const int32_t *bias, int m, int c, int kh, int kw, int8_t x_zero,
                                    int32_t **corr_out);
int8_t *qat_i8_pack_weights_row_taps(const int8_t *w, const int32_t *bias, int m, int c, int kh, int kw, int8_t x_zero,
                                     int32_t **corr_out);

// malloc that aborts with a message when memory runs out (gemm.c).
void *qat_i8_checked_malloc(size_t bytes);
// A conv's weights as its GEMM takes them (conv_weights.c): packed in one of three layouts with
// corr (bias and zero-point corrections), the AVX2 pair kernel's int16 pairs when `pairs`, and
// Winograd's transformed weights when `winograd`. All fields int, so keys compare as bytes.
typedef enum { QAT_I8_WEIGHTS_PLAIN, QAT_I8_WEIGHTS_BLOCKED, QAT_I8_WEIGHTS_ROW_TAPS } qat_i8_weight_layout;
typedef struct {
    int layout, x_zero, pairs, winograd, oc, c, kh, kw, groups;
} qat_i8_weights_key;
typedef struct qat_i8_prepared_weights {
    qat_i8_weights_key key;
    int8_t *a;
    int32_t *corr, *a_pairs, *winograd_u;
    struct qat_i8_prepared_weights *next;
} qat_i8_prepared_weights;
// The cache's entry for key, made on first use; with no cache (NULL), made for this call and
// freed by qat_i8_weights_release.
const qat_i8_prepared_weights *qat_i8_weights_prepared(qat_i8_conv_cache *cache, const qat_i8_weights_key *key,
                                                      const int8_t *weight, const int32_t *bias);
void qat_i8_weights_release(qat_i8_conv_cache *cache, const qat_i8_prepared_weights *prepared);


#define QAT_I8_TARGET_AVX2 __attribute__((target("avx2")))
#define QAT_I8_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define QAT_I8_TARGET_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
