// Float loops that Swift cannot vectorise because it cannot prove the buffers do not alias.
// Each is the inner loop of one op in Sources/QAT/Ops; the op's file documents the math.
#pragma once
#include <stddef.h>
#include <stdint.h>

// y = max(x, 0)
void qat_relu_forward(const float *restrict x, float *restrict y, size_t n);
// gx += (y > 0) ? gy : 0
void qat_relu_backward(const float *restrict y, const float *restrict gy, float *restrict gx, size_t n);
// a += b
void qat_add_into(float *restrict a, const float *restrict b, size_t n);
// 1 when no x[i] is ±∞ or NaN (exponent bits all ones), else 0: a bit test, so it vectorises.
int qat_all_finite(const float *restrict x, size_t n);

// Max pool over `planes` planes of h×w, window k, stride s; argmax (flat input index) may be NULL.
void qat_maxpool_forward(const float *restrict x, float *restrict y, int32_t *restrict argmax,
                         size_t planes, size_t h, size_t w, size_t k, size_t s);


// Keeps large freed blocks in the heap instead of returning them to the OS (glibc mallopt).
void qat_keep_freed_memory(void);

// ---- persistent thread pool (pool.c) ----
typedef void (*qat_task_fn)(void *ctx, long index);
// How many threads (caller included) qat_pool_run spreads indices over.
void qat_pool_set_threads(int threads);
int qat_pool_threads(void);
// Runs fn(ctx, i) for i in [0, count) on the caller and up to threads − 1 workers, each index
// claimed by whichever thread is free (so a descheduled worker never stalls the caller).
// Returns when all are done; what an index computes must not depend on the thread running it. Nested calls (from inside a task) run sequentially.
void qat_pool_run(long count, qat_task_fn fn, void *ctx);

// ---- convolution helpers (conv_kernels.c) ----
typedef struct {
    long batch, channels, height, width;
    long out_channels, kernel, stride, padding;
} qat_conv_geometry;

// Unfolds images [n0, n1) of x [N, C, H, W] into columns [C·K·K, ld] at column (n − n0)·P
// of `cols` (P = Ho·Wo); padding reads as 0.
void qat_im2col(const float *restrict x, float *restrict cols, const qat_conv_geometry *g,
                long n0, long n1, long ld);
// The adjoint: adds columns [C·K·K, ld] (image n at column (n − n0)·P) into gx for images [n0, n1).
void qat_col2im_add(const float *restrict cols, float *restrict gx, const qat_conv_geometry *g,
                    long n0, long n1, long ld);
// y[n, o, p] = y2d[o, (n − n0)·P + p] + bias[o] for images [n0, n1); bias may be NULL.
void qat_channel_to_batch(const float *restrict y2d, long ld, float *restrict y, const float *restrict bias,
                          long out_channels, long plane, long n0, long n1);
// y2d[o, (n − n0)·P + p] = y[n, o, p] for images [n0, n1).
void qat_batch_to_channel(const float *restrict y, float *restrict y2d, long ld,
                          long out_channels, long plane, long n0, long n1);
// Direct stride-1 convolution (AVX2 + FMA only; qat_conv_direct_supported says when to use it).
// Works on a zero-padded copy xp [N, C, padded_height, padded_width] made by qat_conv_pad.
int qat_conv_direct_supported(const qat_conv_geometry *g);
long qat_conv_padded_height(const qat_conv_geometry *g);
long qat_conv_padded_width(const qat_conv_geometry *g);
void qat_conv_pad(const float *restrict x, float *restrict xp, const qat_conv_geometry *g, long n0, long n1);
// Images [n0, n1): y [N, O, Ho, Wo] = W ⋆ x + bias (bias may be NULL).
void qat_conv_direct_forward(const float *restrict xp, const float *restrict w, const float *restrict bias,
                             float *restrict y, const qat_conv_geometry *g, long n0, long n1);
// Weight gradient for units [u0, u1), one unit per (o, c, kh) in that nesting (O·C·K units):
// gw[o, c, kh, kw] += Σ_{n,i,j} gy[n, o, i, j] · xp[n, c, i + kh, j + kw]. Units write disjoint weights.
void qat_conv_direct_weight_grad(const float *restrict xp, const float *restrict gy, float *restrict gw,
                                 const qat_conv_geometry *g, long u0, long u1);
// Direct stride-1, unpadded convolution vectorised over 16 output channels (AVX2 + FMA; O % 16 == 0,
// K ≤ 6; qat_conv_c16_supported says when). Works on x [N, C, H, W] as it is.
int qat_conv_c16_supported(const qat_conv_geometry *g);
// wt [O/16][C·K·K][16]: the weights [O, C·K·K] with 16 output channels innermost.
void qat_conv_c16_weights(const float *restrict w, float *restrict wt, const qat_conv_geometry *g);
// yt [n, p, c] = y [n, c, p] for images [n0, n1) (NCHW → NHWC).
void qat_conv_nhwc(const float *restrict y, float *restrict yt, long channels, long plane, long n0, long n1);
// Images [n0, n1): y [N, O, Ho, Wo] = W ⋆ x + bias (bias may be NULL), wt from qat_conv_c16_weights.
void qat_conv_c16_forward(const float *restrict x, const float *restrict wt, const float *restrict bias,
                          float *restrict y, const qat_conv_geometry *g, long n0, long n1);
// Weight gradient for units [u0, u1), one unit per (o block of 16, c, kh) (O/16·C·K units), gyt = gy
// as [N, Ho, Wo, O]: gw[o, c, kh, kw] += Σ_{n,i,j} gy[n, o, i, j] · x[n, c, i + kh, j + kw].
void qat_conv_c16_weight_grad(const float *restrict x, const float *restrict gyt, float *restrict gw,
                              const qat_conv_geometry *g, long u0, long u1);
// Max pool backward: gx[argmax[o]] += gy[o] for o in [begin, end).
void qat_maxpool_backward(const float *restrict gy, const int32_t *restrict argmax, float *restrict gx,
                          size_t begin, size_t end);
// out[c] += Σ_{n, p} gy[n, c, p] for channels [c0, c1) (bias gradients; fixed summation order).
void qat_channel_sums(const float *restrict gy, float *restrict out, long batch, long channels, long plane,
                      long c0, long c1);

// ---- padded pooling (pool_padded.c; the math is in Sources/QATCore/Ops/PoolPadded.swift) ----
typedef struct {
    long height, width, out_height, out_width;
    long kernel_h, kernel_w, stride_h, stride_w;
    long pad_top, pad_left, pad_bottom, pad_right;
} qat_pool_geometry;
// Planes [p0, p1): y = the maximum of each window's in-bounds elements (padding is −∞); argmax
// (may be NULL) gets the flat index into x of the element chosen (first maximum, first NaN), or −1
// for a window with no element inside the input (y = −∞).
void qat_maxpool_padded_forward(const float *restrict x, float *restrict y, int32_t *restrict argmax,
                                const qat_pool_geometry *g, long p0, long p1);
// Tests: caps the lanes qat_maxpool_padded_forward scans windows with at `widest` (1: the scalar
// loop, the reference; 8: AVX2; 16: AVX-512, the default) and returns the lanes it now uses,
// which is less where the CPU lacks the instructions.
int qat_maxpool_limit_lanes(int widest);
// Planes [p0, p1): gx[argmax[o]] += gy[o] where argmax[o] ≥ 0, in output order.
void qat_maxpool_padded_backward(const float *restrict gy, const int32_t *restrict argmax, float *restrict gx,
                                 const qat_pool_geometry *g, long p0, long p1);
// Planes [p0, p1): y = (sum of the window's in-bounds elements, in scan order) · (1 / divisor), the
// divisor being the window clipped to the padded extent (count_include_pad) or the number of
// in-bounds elements; a window without any gives 0.
void qat_avgpool_padded_forward(const float *restrict x, float *restrict y, const qat_pool_geometry *g,
                                int count_include_pad, long p0, long p1);
// Planes [p0, p1): each in-bounds element of a window gets gy · (1 / divisor), outputs in order.
void qat_avgpool_padded_backward(const float *restrict gy, float *restrict gx, const qat_pool_geometry *g,
                                 int count_include_pad, long p0, long p1);

// ---- grouped, dilated, asymmetrically padded convolution (conv_grouped.c; math in Conv2DGrouped.swift) ----
typedef struct {
    long batch, channels, height, width;
    long out_channels, out_height, out_width;
    long kernel_h, kernel_w, stride_h, stride_w;
    long pad_top, pad_left, dilation_h, dilation_w;
    long groups;
} qat_conv2d_params;
// Unfolds input channels [c0, c0 + C/groups) of images [n0, n1) into cols [(C/groups)·KH·KW, ld],
// image n at column (n − n0)·Ho·Wo; taps outside the input read as 0.
void qat_im2col_grouped(const float *restrict x, float *restrict cols, const qat_conv2d_params *g,
                        long c0, long n0, long n1, long ld);
// The adjoint: adds cols [(C/groups)·KH·KW, ld] into gx's channels [c0, c0 + C/groups) of images [n0, n1).
void qat_col2im_grouped_add(const float *restrict cols, float *restrict gx, const qat_conv2d_params *g,
                            long c0, long n0, long n1, long ld);
// Depthwise convolution: depthwise_float.h.
