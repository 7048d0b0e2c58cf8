// Depthwise convolution in float (depthwise_float.c; the math is in
// Sources/QATCore/Ops/Conv2DDepthwise.swift): groups == C, O = C·m, output channel o reads input
// channel o / m. Two families of kernels:
// - the loops: any kernel, stride, dilation, padding and multiplier m, on a zero-padded,
//   stride-phased copy of each plane;
// - 3×3 kernels (qat_depthwise3x3_supported: m = 1, dilation 1, the same stride 1 or 2 on both
//   axes, top and left padding ≤ 2, any bottom and right padding), written once and compiled
//   for AVX-512, AVX2 + FMA and portable C; the taps of each output are summed in registers.
//   AVX-512 and AVX2 read the planes in place with masked loads (depthwise_float_direct.c,
//   depthwise_float_direct_avx2.c) for planes up to 1024 columns wide (AVX2: several output
//   rows per step, depthwise_float_rows_avx2.c, see qat_dw_avx2_rows); wider
//   planes and the portable path work on a padded copy of each plane (depthwise_float.c).
// The paths round differently (FMA, lane count), each is deterministic and independent of how
// its units are split.
#pragma once
#include "float_kernels.h"

typedef enum {
    QAT_DW_LOOPS = 0,
    QAT_DW_PORTABLE = 1,
    QAT_DW_AVX2 = 2,
    QAT_DW_AVX512 = 3,
} qat_dw_path;

// Whether this CPU can run `path` (cpuid).
int qat_depthwise_cpu_supports(qat_dw_path path);
// Tests: 0 sends the AVX-512 and AVX2 paths to the padded-copy 3×3 kernels on every plane (as
// before the in-place ones existed), 1 (the default) lets the in-place kernels take the planes
// they fit where they are faster (AVX2 keeps the padded copy at stride 1 for rows wider than 8),
// 2 every plane they fit. Returns the setting now used.
int qat_depthwise_enable_direct(int mode);
// Tests: 0 sends the AVX2 path's in-place kernels back to one output row per step (and to the
// padded copy at stride 1 on rows wider than 8, as before); 1 (the default) lets them compute
// several rows per step, on every plane they fit. Returns the setting now used.
int qat_dw_avx2_rows(int enabled);
// Tests: 0 leaves the small stride-1 planes the AVX2 flat kernels take (output of the input's size,
// fewer than 8 columns, at most 256 floats; depthwise_float_flat_avx2.c) to the row kernels; 1 (the
// default) walks their forward and input gradient flat. Returns the setting now used.
int qat_dw_avx2_flat(int enabled);
// Whether the 3×3 kernels handle this geometry (else every path runs the loops).
int qat_depthwise3x3_supported(const qat_conv2d_params *g);

// Forward, one unit per (image, input channel) plane, units [u0, u1): its m outputs
// y = Σ_taps w · x (padding read as 0) + bias (bias may be NULL).
void qat_depthwise_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                           float *restrict y, const qat_conv2d_params *g, qat_dw_path path, long u0, long u1);
// Input gradient, one unit per (image, input channel) plane, units [u0, u1):
// gx += Σ over that channel's output channels and taps of w · gy, in a fixed order.
void qat_depthwise_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                              const qat_conv2d_params *g, qat_dw_path path, long u0, long u1);
// Weight gradient for input channels [c0, c1) (their m output channels each):
// gw[o, kh, kw] += Σ_{n,i,j} gy · x, over the images in order, in fixed partial sums.
void qat_depthwise_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                               const qat_conv2d_params *g, qat_dw_path path, long c0, long c1);
