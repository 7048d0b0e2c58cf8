// Between depthwise_float.c and depthwise_float_direct.c (not part of the module's interface).
#pragma once
#include "depthwise_float.h"

// The AVX-512 3×3 kernels that read the planes where they are, with masked loads for the padding
// (no padded copy, no wide layout), for planes up to 1024 columns wide; the input gradient
// in two, for stride 1 and for stride 2.
int qat_dw_direct_fits(const qat_conv2d_params *g);
void qat_dw_direct_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                           float *restrict y, const qat_conv2d_params *g, long u0, long u1);
void qat_dw_direct_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                              const qat_conv2d_params *g, long u0, long u1);
void qat_dw_direct_input_grad_stride2(const float *restrict gy, const float *restrict w, float *restrict gx,
                                      const qat_conv2d_params *g, long u0, long u1);
void qat_dw_direct_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                               const qat_conv2d_params *g, long c0, long c1);

// Their AVX2 + FMA counterparts (depthwise_float_direct_avx2.c), 8 columns a vector, for the same
// planes (qat_dw_direct_fits).
void qat_dw_direct_avx2_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                                float *restrict y, const qat_conv2d_params *g, long u0, long u1);
void qat_dw_direct_avx2_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                                   const qat_conv2d_params *g, long u0, long u1);
void qat_dw_direct_avx2_input_grad_stride2(const float *restrict gy, const float *restrict w, float *restrict gx,
                                           const qat_conv2d_params *g, long u0, long u1);
void qat_dw_direct_avx2_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                                    const qat_conv2d_params *g, long c0, long c1);

// The AVX2 kernels that compute several output rows per step (depthwise_float_rows_avx2.c),
// on the same planes; qat_dw_avx2_rows_enabled says whether the AVX2 path uses them.
int qat_dw_avx2_rows_enabled(void);
void qat_dw_rows_avx2_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                              float *restrict y, const qat_conv2d_params *g, long u0, long u1);
void qat_dw_rows_avx2_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                                 const qat_conv2d_params *g, long u0, long u1);
void qat_dw_rows_avx2_input_grad_stride2(const float *restrict gy, const float *restrict w, float *restrict gx,
                                         const qat_conv2d_params *g, long u0, long u1);
void qat_dw_rows_avx2_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                                  const qat_conv2d_params *g, long c0, long c1);

// The AVX2 kernels that walk a small stride-1 plane as one flat array (depthwise_float_flat_avx2.c),
// used instead of the row-group kernels' forward and input gradient on the planes
// qat_dw_flat_avx2_takes (qat_dw_avx2_flat switches them).
int qat_dw_flat_avx2_takes(const qat_conv2d_params *g);
void qat_dw_flat_avx2_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                              float *restrict y, const qat_conv2d_params *g, long u0, long u1);
void qat_dw_flat_avx2_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                                 const qat_conv2d_params *g, long u0, long u1);
