// INT8 inference kernels (docs/ALGORITHMS.md §5). Every kernel has three code paths, AVX-512 VNNI,
// AVX2 and portable C, that produce identical integers (and identical floats where the output
// is float). The caller picks the path; Int8Kernels.swift chooses it from cpuid or
// QAT_INT8_KERNEL. Layouts are NCHW for images and row-major [rows][features] for matrices.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum {
    QAT_I8_PORTABLE = 0,
    QAT_I8_AVX2 = 1,
    QAT_I8_VNNI = 2,
} qat_i8_path;

// 1 if this CPU (and OS) can run `path`.
int qat_i8_cpu_supports(qat_i8_path path);

// What a GEMM-based kernel writes per output (channel c, column j), from the exact int32
// accumulator acc = Σ (q_x − o_d)·w_q + b_q:
//   QAT_I8_OUT_INT32: acc
//   QAT_I8_OUT_FLOAT: (float)acc · scale[c] + offset[c]                (dequantize)
//   QAT_I8_OUT_INT8:  clamp(nearbyintf((float)acc · scale[c] + offset[c]) + zero_point, lo, hi)
//                     (requantize; lo = zero_point for a fused ReLU or ReLU6, −128 otherwise;
//                     hi = the code of 6.0 for a fused ReLU6, 127 otherwise)
// The product and the sum are rounded to float separately (no fused multiply-add); without an
// offset array (NULL) nothing is added. The offset carries the part of the bias that the int32
// b_q cannot hold (the deployer's bias residual), in output units.
// With a shift array (INT8 only; power-of-two multipliers scale[c] = 2^−shift[c], shift ∈ 0…30,
// no offset) the requantization is integer: clamp(round_half_even(acc / 2^shift[c]) + zero_point,
// lo, hi), a rounding right shift (qat_i8_requant_shift). It equals the float formula whenever
// |acc| ≤ 2^24, where (float)acc is exact.
typedef enum { QAT_I8_OUT_INT32 = 0, QAT_I8_OUT_INT8 = 1, QAT_I8_OUT_FLOAT = 2 } qat_i8_out_kind;

// How every rounding to codes below breaks ties (Vitis AI's round_mode; QuantizationGrid.roundMode):
// half to even (nearbyintf's default), toward +∞, toward −∞, or away from zero (C's round).
// Values that are not ties round to the nearest integer in every mode.
typedef enum {
    QAT_I8_ROUND_HALF_EVEN = 0,
    QAT_I8_ROUND_HALF_UP = 1,
    QAT_I8_ROUND_HALF_DOWN = 2,
    QAT_I8_ROUND_STD = 3,
} qat_i8_round_mode;

typedef struct {
    qat_i8_out_kind kind;
    const float *scale;  // [channels]; unused for INT32
    const float *offset; // [channels] or NULL; unused for INT32
    int32_t zero_point;  // INT8 only
    int32_t lo, hi;      // INT8 only: lo ≤ hi
    const int32_t *shift; // [channels] or NULL; INT8 only: requantize by shifts instead of scale
    qat_i8_round_mode round_mode; // INT8 only: the tie rule of the rounding (or of the shift)
} qat_i8_output;

// What a conv derives from its weights alone: the packed weight matrix with the bias and
// zero-point corrections, the AVX2 pair kernel's int16 weight pairs, Winograd's transformed
// weights. A deployed conv runs on the same weights every batch, so the conv functions below
// keep these in a cache the caller owns, one per conv layer, and make them on the first call
// only (resnet18-tiny: the Winograd transform alone was 4 % of a batch of 256). Every call given
// a cache must pass the same weight, bias, input zero point, channel counts and kernel; NULL
// makes them for the call. Calls on several threads may share a cache (a lock guards it).
typedef struct qat_i8_conv_cache qat_i8_conv_cache;
qat_i8_conv_cache *qat_i8_conv_cache_create(void);
void qat_i8_conv_cache_free(qat_i8_conv_cache *cache);

// Convolution (cross-correlation) on codes, NCHW in and out.
// x: [n][c][h][w] codes with zero point x_zero; weight: [oc][c][k][k]; bias: [oc] (b_q);
// cache: NULL or this layer's (above);
// out: [n][oc][oh][ow] of int32, int8 or float as `output.kind` says, with
// oh = (h + 2·pad − k)/stride + 1. Padding is the code x_zero, i.e. zero in the real domain.
// Precondition (checked by the Swift wrapper): |b_q| + 2·255·128·c·k·k < 2^31, so no
// partial sum can overflow int32 in any path.
void qat_i8_conv2d(qat_i8_path path, const int8_t *x, int n, int c, int h, int w, int8_t x_zero,
                   const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, int oc, int k, int stride, int pad,
                   qat_i8_output output, void *out);

// conv2d requantized to int8 (output.kind must be QAT_I8_OUT_INT8) followed by a max pool
// (window pool_k, stride pool_s, no padding) on each output plane: the same codes as
// qat_i8_conv2d then qat_i8_maxpool, without the full conv output in memory.
// out: [n][oc][(oh − pool_k)/pool_s + 1][(ow − pool_k)/pool_s + 1].
void qat_i8_conv2d_maxpool(qat_i8_path path, const int8_t *x, int n, int c, int h, int w, int8_t x_zero,
                           const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, int oc, int k, int stride, int pad,
                           qat_i8_output output, int pool_k, int pool_s, int8_t *out);

// A general convolution's geometry (ONNX Conv / PyTorch Conv2d): input [n][c][h][w], weight
// [oc][c/groups][kh][kw], output [n][oc][oh][ow] with
//   oh = (h + pad_top + pad_bottom − dh·(kh − 1) − 1)/sh + 1,  ow likewise with w, left/right, dw, kw, sw.
// Output channel o reads input channels g·c/groups … (g + 1)·c/groups − 1 of its group g = o/(oc/groups).
// Padding pixels are the input zero point (real zero), as in qat_i8_conv2d.
typedef struct {
    int n, c, h, w;
    int oc;
    int kh, kw;                                   // kernel
    int sh, sw;                                   // stride
    int dh, dw;                                   // dilation
    int pad_top, pad_left, pad_bottom, pad_right;
    int groups;                                   // divides c and oc
} qat_i8_conv_geometry;

static inline int qat_i8_conv_out_h(const qat_i8_conv_geometry *g) {
    return (g->h + g->pad_top + g->pad_bottom - g->dh * (g->kh - 1) - 1) / g->sh + 1;
}
static inline int qat_i8_conv_out_w(const qat_i8_conv_geometry *g) {
    return (g->w + g->pad_left + g->pad_right - g->dw * (g->kw - 1) - 1) / g->sw + 1;
}

// A max pool's geometry (ONNX MaxPool / PyTorch max_pool2d) over planes of h×w: output oy, ox
// takes the max over rows oy·sh − pad_top … + kh − 1 and columns ox·sw − pad_left … + kw − 1,
// clipped to the plane (padding never wins); a window with no pixel of the plane gives −128
// (the code the float pool's −∞ quantizes to). oh, ow come from the caller (ceil mode included).
typedef struct {
    int h, w, oh, ow;
    int kh, kw, sh, sw;
    int pad_top, pad_left;
} qat_i8_pool_geometry;

// Any geometry through the int8 im2col + GEMM, one GEMM per group; the same integers and
// output formula as qat_i8_conv2d (which is this with kh = kw, one stride, symmetric padding,
// dilation 1, groups 1). Precondition (checked by the Swift wrapper): |b_q| + 2·255·128·K < 2^31
// with K = (c/groups)·kh·kw. A non-NULL `pool` (h, w the conv's output size) max pools each
// int8 output plane as qat_i8_maxpool_padded does (output.kind must then be INT8).
void qat_i8_conv2d_grouped(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                           const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output,
                           const qat_i8_pool_geometry *pool, void *out);

// qat_i8_conv2d_grouped with float output (output.kind FLOAT: dequantized), then QATCore's float
// ReLU (x < 0 → 0, NaN and −0 kept) when `relu`, then qat_i8_maxpool_float with `pool` (h, w the
// conv's output size) on each output plane, one image at a time: the same floats as the three
// passes, without the full conv output in memory. out: [n][oc][pool->oh][pool->ow], or without a
// pool (NULL) the conv's [n][oc][oh][ow], each image's ReLU applied while it is in cache.
void qat_i8_conv2d_float_epilogue(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                                 const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output, int relu,
                                 const qat_i8_pool_geometry *pool, float *out);

// qat_i8_conv2d_grouped with float output (output.kind FLOAT: dequantized), then the float sums
// with `addend` ([n][oc][oh][ow] floats, as the conv output) quantized as qat_i8_add_quantize does,
// one image at a time: the codes of conv → residual add → quantize, without the conv's floats in
// memory. out: [n][oc][oh][ow] codes.
void qat_i8_conv2d_add_quantize(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                                const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output, const float *addend,
                                float scale, int32_t zero, int32_t lo, qat_i8_round_mode round_mode, int8_t *out);

// A grid to quantize floats onto, as qat_i8_quantize takes it.
typedef struct {
    float scale;
    int32_t zero, lo;
    qat_i8_round_mode round_mode;
} qat_i8_quantize_grid;

// A float-output conv (output.kind FLOAT: dequantized; depthwise geometries on the depthwise
// kernel, others as qat_i8_conv2d_grouped), then QATCore's hardSwish (qat_i8_hard_swish) on each
// image's floats (depthwise: each plane's) while they are in cache, then, when `quantize` is not
// NULL, qat_i8_quantize onto it: the floats or codes of the separate passes, without the conv's
// floats in memory. out: [n][oc][oh][ow] floats, or codes with `quantize`.
void qat_i8_conv2d_hard_swish(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                              const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output,
                              const qat_i8_quantize_grid *quantize, void *out);
// qat_i8_conv2d_grouped with float output, plus `addend` (as above), then QATCore's float ReLU
// (x < 0 → 0, NaN and −0 kept) when `relu`: the floats of conv → residual add → ReLU into `sums`
// ([n][oc][oh][ow]) and, when `codes` is not NULL, those floats quantized there as qat_i8_quantize
// does, one image at a time, without the conv's floats in memory.
void qat_i8_conv2d_add_relu(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                            const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output, const float *addend, int relu,
                            float *sums, float scale, int32_t zero, int32_t lo, qat_i8_round_mode round_mode, int8_t *codes);
// Whether the engine fuses conv → residual add → ReLU (qat_i8_conv2d_add_relu); 0 keeps the three
// passes (tests compare both).
extern int qat_i8_residual_relu_fusion_allowed;
void qat_i8_allow_residual_relu_fusion(int allowed);

// Depthwise convolution (groups == c, oc = c·multiplier; output channel o reads input channel
// o / multiplier) by a direct kernel: no column matrix over channels, one pass per plane. The
// same integers, output formula and precondition (K = kh·kw) as qat_i8_conv2d_grouped, and the
// same results on every path; `pool` as there.
void qat_i8_conv2d_depthwise(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                             const int8_t *weight, const int32_t *bias, qat_i8_output output,
                             const qat_i8_pool_geometry *pool, void *out);

// Fully connected: out[i][o] = Σ_j (x[i][j] − x_zero)·weight[o][j] + bias[o], then `output`.
// x: [n][in], weight: [outs][in], out: [n][outs]. Same overflow precondition with K = in.
void qat_i8_linear(qat_i8_path path, const int8_t *x, int n, int in, int8_t x_zero,
                   const int8_t *weight, const int32_t *bias, int outs,
                   qat_i8_output output, void *out);

// Requantize int32 accumulators laid out [n][channels][plane] (plane = h·w, or 1 for a
// matrix) with a per-channel multiplier, or a per-channel shift when `shift` is not NULL, as
// QAT_I8_OUT_INT8 above.
void qat_i8_requantize(qat_i8_path path, const int32_t *acc, size_t n, size_t channels, size_t plane,
                       const float *multiplier, const int32_t *shift, int32_t zero_point, int32_t lo, int32_t hi,
                       qat_i8_round_mode round_mode, int8_t *out);

// Max pool on codes over `planes` planes of h×w, window k, stride s, no padding.
// Quantization is monotone, so pooling codes equals quantizing the pooled values.
void qat_i8_maxpool(qat_i8_path path, const int8_t *x, int8_t *y, size_t planes,
                    size_t h, size_t w, size_t k, size_t s);

// Max pool on codes with any window, stride, padding and output size (qat_i8_pool_geometry);
// planes are [planes][h][w] → [planes][oh][ow]. Plain geometries take qat_i8_maxpool.
void qat_i8_maxpool_padded(qat_i8_path path, const int8_t *x, int8_t *y, size_t planes, const qat_i8_pool_geometry *g);

// The same pool on float planes, with the results of QATCore's padded float max pool: per window
// the first strictly greatest element in scan order, a NaN winning (the first one), −∞ for a
// window without elements.
void qat_i8_maxpool_float(qat_i8_path path, const float *x, float *y, size_t planes, const qat_i8_pool_geometry *g);
// 1 (default): the AVX2 and VNNI paths of qat_i8_maxpool_float scan 8 or 16 windows side by side
// (maxpool_float_simd.c); 0: the loop they ran before, kept for agreement tests. Same results.
void qat_i8_vectorise_maxpool_float(int enabled);

// Hard swish on floats with QATCore's hardSwish results: y = x · clamp(x + 3, 0, 6) / 6, product
// and quotient each rounded.
void qat_i8_hard_swish(qat_i8_path path, const float *x, float *y, size_t count);
// Whether the AVX2 and VNNI paths run qat_i8_hard_swish on explicit vectors (the same bits as the
// loop; tests switch it off to compare).
void qat_i8_vectorise_hard_swish(int enabled);
// Whether the AVX2 path's quantize (alone, after an add, after HardSwish) with ties to even may
// multiply by 1/scale instead of dividing (the same codes; tests switch it off to compare).
void qat_i8_allow_reciprocal_quantize(int allowed);

// y[i] = table[q[i] + 128]: a unary float op on the 256 codes of one grid, tabulated by the caller.
void qat_i8_lookup(qat_i8_path path, const int8_t *q, const float *table, float *y, size_t count);

// Global average pool of `planes` planes of `area` floats: y[p] = (Σ x in scan order, float32,
// starting from 0) · factor, as QATCore's globalAveragePool. The codes form adds
// scale·(q − zero) (dequantized as qat_i8_dequantize does) instead of x.
void qat_i8_global_avgpool(qat_i8_path path, const float *x, size_t planes, size_t area, float factor, float *y);
void qat_i8_global_avgpool_codes(qat_i8_path path, const int8_t *q, float scale, int32_t zero, size_t planes,
                                 size_t area, float factor, float *y);

// y[r·length + j] = x[r·length + j] · per_row[r]: a broadcasting multiply by one value per row
// (squeeze-and-excitation, [N, C, H, W] · [N, C, 1, 1]); one IEEE product per element.
void qat_i8_scale_rows(qat_i8_path path, const float *x, const float *per_row, size_t rows, size_t length, float *y);

// Whether the VNNI path may use AVX-512 VBMI where the CPU has it (the depthwise kernel for
// kernels up to 4 wide; same results). 1 by default; tests turn it off to check the other kernel.
void qat_i8_allow_vbmi(int allowed);
// Whether that VBMI depthwise kernel may take small output planes as one flat run of outputs,
// 16 per vector across row ends (same results). 1 by default; tests turn it off to compare.
void qat_i8_allow_flat_depthwise(int allowed);
// Whether that kernel's padded input planes up to 64 bytes wide are copied several rows per vector
// (same planes). 1 by default; tests turn it off to compare with the row-by-row copy.
void qat_i8_allow_packed_plane_copy(int allowed);
// Whether the AVX2 depthwise conv may read kernels up to 4 wide (column stride 1 or 2) straight
// from the padded plane instead of building rows (same results). 1 by default; tests compare.
void qat_i8_allow_direct_depthwise_avx2(int allowed);
// Whether that direct kernel reads the plane widened to int16 once per channel, with the output's
// constants in registers and floats and int32 written straight out (same results). 1 by default.
void qat_i8_allow_widened_depthwise_avx2(int allowed);
// Whether the AVX2 depthwise conv may run channels last inside the kernel (16 channels of a pixel
// per vector, NCHW at both edges) where channels are a multiple of 16 (same results). 1 by default.
void qat_i8_allow_channels_last_depthwise_avx2(int allowed);

// Whether the AVX2 GEMM runs its pair kernel (16-column tiles whose lanes are output columns, a
// vector epilogue) rather than the first one (same results). 1 by default; tests turn it off to compare.
void qat_i8_allow_avx2_pair_tiles(int allowed);

// Whether the pair kernel runs its specialised epilogue loops (int32; floats by offset and ReLU;
// codes by scale with ties to even) rather than its general one (same results). 1 by default;
// tests turn it off to compare.
void qat_i8_allow_avx2_pair_epilogues(int allowed);

// Whether the VNNI GEMM may run m a multiple of 8 in 8-row tiles (same results). 1 by default;
// tests turn it off to compare with the 6-row tiles.
void qat_i8_allow_eight_row_tiles(int allowed);

// Whether the VNNI path may run stride-1 convs on planes of 64 or more outputs (groups 1, padded width
// at most 5/4 of the output width)
// as an implicit GEMM that reads the padded image by per-tap offsets instead of an im2col matrix
// (same results). 1 by default; tests turn it off to compare.
void qat_i8_allow_implicit_gemm(int allowed);
// Whether the VNNI path runs convs on planes under 64 outputs (groups 1, channels a multiple of 4,
// at least 16 images, no pool) with the images as the GEMM's columns, one GEMM per output
// position, instead of a column matrix (same results; tests switch it off to compare).
void qat_i8_allow_image_columns(int allowed);
// Whether the VNNI path stores convs on planes of a multiple of 16 outputs run several images per
// GEMM straight to each image's place, without a staging copy (same results; tests switch it off).
void qat_i8_allow_placed_stores(int allowed);
// 1 (default): 3×3 convs with stride 1 on the AVX2 path run as Winograd F(2×2, 3×3) in exact
// integers where measured faster (winograd_avx2.c); 0: im2col + GEMM. The same results either way.
void qat_i8_allow_winograd(int allowed);
// 1 (default): 3×3 convs of one input channel with stride 1 on the AVX2 path take their sums
// straight from the padded image (conv_one_channel_avx2.c); 0: im2col + GEMM. The same results.
void qat_i8_allow_one_channel(int allowed);

// Whether qat_i8_conv2d_float_epilogue may max pool the int32 accumulators and dequantize only
// the pooled ones (when every scale is above 0; the same floats). 1 by default; tests turn it off.
void qat_i8_allow_pool_accumulators(int allowed);

// Residual add on codes:
//   q = clamp(round((s_a·(q_a − o_a) + s_b·(q_b − o_b)) / s_y) + o_y, lo, hi)
// with the two products and the sum each rounded to float (no fused multiply-add), round with
// the tie rule round_mode.
void qat_i8_add(qat_i8_path path, const int8_t *a, float scale_a, int32_t zero_a,
                const int8_t *b, float scale_b, int32_t zero_b,
                float scale_y, int32_t zero_y, int32_t lo, int32_t hi, qat_i8_round_mode round_mode, int8_t *y, size_t count);

// q = clamp(round(x / scale) + zero, lo, 127), round with the tie rule round_mode; lo is −128,
// or −127 on a narrow-range grid.
void qat_i8_quantize(qat_i8_path path, const float *x, float scale, int32_t zero, int32_t lo, qat_i8_round_mode round_mode,
                     int8_t *q, size_t count);

// q = qat_i8_quantize of the float sums a[i] + b[i] (one IEEE add each): a residual add on
// floats and the quantize after it in one pass, without the sums in memory.
void qat_i8_add_quantize(qat_i8_path path, const float *a, const float *b, float scale, int32_t zero, int32_t lo,
                         qat_i8_round_mode round_mode, int8_t *q, size_t count);

// q = qat_i8_quantize of qat_i8_hard_swish(x), a block at a time, without the floats in memory.
void qat_i8_hard_swish_quantize(qat_i8_path path, const float *x, float scale, int32_t zero, int32_t lo,
                                qat_i8_round_mode round_mode, int8_t *q, size_t count);

// x = scale · (q − zero).
void qat_i8_dequantize(qat_i8_path path, const int8_t *q, float scale, int32_t zero, float *x, size_t count);
