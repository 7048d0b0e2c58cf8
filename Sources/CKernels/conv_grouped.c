// Grouped, dilated, asymmetrically padded convolution: the column loops of the general path and
// the direct depthwise loops (see Sources/QATCore/Ops/Conv2DGrouped.swift for the math).
#include "float_kernels.h"

#include <stdlib.h>
#include <string.h>

// Output columns j whose tap at offset `offset` (= kw·dilation − pad_left) lands inside a row of
// `size`: 0 ≤ j·stride + offset < size, as the range [*lo, *hi) within [0, count).
static inline void valid_range(long offset, long stride, long size, long count, long *lo, long *hi) {
    long first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    const long top = size - 1 - offset;
    long last = top < 0 ? 0 : top / stride + 1;
    if (last > count) last = count;
    if (first > last) first = last;
    *lo = first;
    *hi = last;
}

void qat_im2col_grouped(const float *restrict x, float *restrict cols, const qat_conv2d_params *g,
                        long c0, long n0, long n1, long ld) {
    const long C = g->channels, H = g->height, W = g->width, KH = g->kernel_h, KW = g->kernel_w;
    const long oh = g->out_height, ow = g->out_width, plane = oh * ow;
    const long SH = g->stride_h, SW = g->stride_w, cg = C / g->groups;
    for (long row = 0; row < cg * KH * KW; row++) {
        const long kw = row % KW, kh = (row / KW) % KH, c = c0 + row / (KH * KW);
        const long column_offset = kw * g->dilation_w - g->pad_left;
        const long row_offset = kh * g->dilation_h - g->pad_top;
        long lo, hi;
        valid_range(column_offset, SW, W, ow, &lo, &hi);
        for (long n = n0; n < n1; n++) {
            const float *image = x + (n * C + c) * H * W;
            float *out = cols + row * ld + (n - n0) * plane;
            for (long i = 0; i < oh; i++) {
                const long ih = i * SH + row_offset;
                float *dst = out + i * ow;
                if (ih < 0 || ih >= H || lo == hi) {
                    for (long j = 0; j < ow; j++) dst[j] = 0.0f;
                    continue;
                }
                for (long j = 0; j < lo; j++) dst[j] = 0.0f;
                for (long j = hi; j < ow; j++) dst[j] = 0.0f;
                const float *src = image + ih * W + column_offset;
                if (SW == 1) {
                    for (long j = lo; j < hi; j++) dst[j] = src[j];
                } else {
                    for (long j = lo; j < hi; j++) dst[j] = src[j * SW];
                }
            }
        }
    }
}

void qat_col2im_grouped_add(const float *restrict cols, float *restrict gx, const qat_conv2d_params *g,
                            long c0, long n0, long n1, long ld) {
    const long C = g->channels, H = g->height, W = g->width, KH = g->kernel_h, KW = g->kernel_w;
    const long oh = g->out_height, ow = g->out_width, plane = oh * ow;
    const long SH = g->stride_h, SW = g->stride_w, cg = C / g->groups;
    // Image by image, so each image's gradient stays in cache while all its rows add into it.
    for (long n = n0; n < n1; n++) {
        for (long cc = 0; cc < cg; cc++) {
            float *image = gx + (n * C + c0 + cc) * H * W;
            for (long kh = 0; kh < KH; kh++) {
                const long row_offset = kh * g->dilation_h - g->pad_top;
                long iLo, iHi;
                valid_range(row_offset, SH, H, oh, &iLo, &iHi);
                for (long kw = 0; kw < KW; kw++) {
                    const long column_offset = kw * g->dilation_w - g->pad_left;
                    long lo, hi;
                    valid_range(column_offset, SW, W, ow, &lo, &hi);
                    if (lo >= hi) continue;
                    const float *src = cols + ((cc * KH + kh) * KW + kw) * ld + (n - n0) * plane;
                    for (long i = iLo; i < iHi; i++) {
                        float *restrict dst = image + (i * SH + row_offset) * W + column_offset;
                        const float *restrict line = src + i * ow;
                        if (SW == 1) {
                            for (long j = lo; j < hi; j++) dst[j] += line[j];
                        } else {
                            for (long j = lo; j < hi; j++) dst[j * SW] += line[j];
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- depthwise

void qat_depthwise_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                           float *restrict y, const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, O = g->out_channels, KH = g->kernel_h, KW = g->kernel_w;
    const long oh = g->out_height, ow = g->out_width, SH = g->stride_h, SW = g->stride_w, m = O / C;
    for (long u = u0; u < u1; u++) {
        const long n = u / O, o = u % O;
        const float *image = x + (n * C + o / m) * H * W;
        float *out = y + u * oh * ow;
        for (long p = 0; p < oh * ow; p++) out[p] = 0.0f;
        for (long kh = 0; kh < KH; kh++) {
            const long row_offset = kh * g->dilation_h - g->pad_top;
            long iLo, iHi;
            valid_range(row_offset, SH, H, oh, &iLo, &iHi);
            for (long kw = 0; kw < KW; kw++) {
                const float tap = w[(o * KH + kh) * KW + kw];
                const long column_offset = kw * g->dilation_w - g->pad_left;
                long lo, hi;
                valid_range(column_offset, SW, W, ow, &lo, &hi);
                for (long i = iLo; i < iHi; i++) {
                    const float *restrict src = image + (i * SH + row_offset) * W + column_offset;
                    float *restrict dst = out + i * ow;
                    if (SW == 1) {
                        for (long j = lo; j < hi; j++) dst[j] += tap * src[j];
                    } else {
                        for (long j = lo; j < hi; j++) dst[j] += tap * src[j * SW];
                    }
                }
            }
        }
        if (bias) {
            const float b = bias[o];
            for (long p = 0; p < oh * ow; p++) out[p] += b;
        }
    }
}

void qat_depthwise_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                              const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, O = g->out_channels, KH = g->kernel_h, KW = g->kernel_w;
    const long oh = g->out_height, ow = g->out_width, SH = g->stride_h, SW = g->stride_w, m = O / C;
    for (long u = u0; u < u1; u++) {
        const long n = u / C, c = u % C;
        float *image = gx + u * H * W;
        for (long o = c * m; o < (c + 1) * m; o++) {
            const float *grad = gy + (n * O + o) * oh * ow;
            for (long kh = 0; kh < KH; kh++) {
                const long row_offset = kh * g->dilation_h - g->pad_top;
                long iLo, iHi;
                valid_range(row_offset, SH, H, oh, &iLo, &iHi);
                for (long kw = 0; kw < KW; kw++) {
                    const float tap = w[(o * KH + kh) * KW + kw];
                    const long column_offset = kw * g->dilation_w - g->pad_left;
                    long lo, hi;
                    valid_range(column_offset, SW, W, ow, &lo, &hi);
                    for (long i = iLo; i < iHi; i++) {
                        float *restrict dst = image + (i * SH + row_offset) * W + column_offset;
                        const float *restrict line = grad + i * ow;
                        if (SW == 1) {
                            for (long j = lo; j < hi; j++) dst[j] += tap * line[j];
                        } else {
                            for (long j = lo; j < hi; j++) dst[j * SW] += tap * line[j];
                        }
                    }
                }
            }
        }
    }
}

void qat_depthwise_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                               const qat_conv2d_params *g, long o0, long o1) {
    const long N = g->batch, C = g->channels, H = g->height, W = g->width, O = g->out_channels;
    const long KH = g->kernel_h, KW = g->kernel_w;
    const long oh = g->out_height, ow = g->out_width, SH = g->stride_h, SW = g->stride_w, m = O / C;
    // One partial sum per output column: the products add up without a loop-carried dependency
    // (so they vectorise) and still in a fixed order.
    float *columns = malloc((size_t)(ow > 0 ? ow : 1) * sizeof(float));
    if (!columns) abort();
    for (long o = o0; o < o1; o++) {
        const long c = o / m;
        for (long kh = 0; kh < KH; kh++) {
            const long row_offset = kh * g->dilation_h - g->pad_top;
            long iLo, iHi;
            valid_range(row_offset, SH, H, oh, &iLo, &iHi);
            for (long kw = 0; kw < KW; kw++) {
                const long column_offset = kw * g->dilation_w - g->pad_left;
                long lo, hi;
                valid_range(column_offset, SW, W, ow, &lo, &hi);
                for (long j = 0; j < ow; j++) columns[j] = 0.0f;
                for (long n = 0; n < N; n++) {
                    const float *image = x + (n * C + c) * H * W;
                    const float *grad = gy + (n * O + o) * oh * ow;
                    for (long i = iLo; i < iHi; i++) {
                        const float *restrict src = image + (i * SH + row_offset) * W + column_offset;
                        const float *restrict line = grad + i * ow;
                        float *restrict acc = columns;
                        if (SW == 1) {
                            for (long j = lo; j < hi; j++) acc[j] += line[j] * src[j];
                        } else {
                            for (long j = lo; j < hi; j++) acc[j] += line[j] * src[j * SW];
                        }
                    }
                }
                float sum = 0.0f;
                for (long j = lo; j < hi; j++) sum += columns[j];
                gw[(o * KH + kh) * KW + kw] += sum;
            }
        }
    }
    free(columns);
}
