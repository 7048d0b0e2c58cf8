// Grouped, dilated, asymmetrically padded convolution: the column loops of the general path (see
// Sources/QATCore/Ops/Conv2DGrouped.swift for the math; depthwise is in depthwise_float.c).
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
