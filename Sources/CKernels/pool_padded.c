// Pooling with rectangular windows, strides and asymmetric padding (see PoolPadded.swift).
#include "float_kernels.h"

#include <math.h>

// The in-bounds part [lo, hi) of the window that starts at `start` (which may be negative).
static inline void clip_window(long start, long kernel, long size, long *lo, long *hi) {
    *lo = start < 0 ? 0 : start;
    *hi = start + kernel < size ? start + kernel : size;
    if (*hi < *lo) *hi = *lo;
}

// 1 / divisor of the window starting at (hs, ws), per count_include_pad (0 for an empty window).
static inline float average_factor(const qat_pool_geometry *g, long hs, long ws, long h0, long h1, long w0,
                                   long w1, int count_include_pad) {
    long area;
    if (count_include_pad) {
        // The window clipped to the padded extent [−pad_top, H + pad_bottom) (PyTorch, ONNX).
        const long he = hs + g->kernel_h < g->height + g->pad_bottom ? hs + g->kernel_h : g->height + g->pad_bottom;
        const long we = ws + g->kernel_w < g->width + g->pad_right ? ws + g->kernel_w : g->width + g->pad_right;
        area = (he - hs) * (we - ws);
    } else {
        area = (h1 - h0) * (w1 - w0);
    }
    return area > 0 ? 1.0f / (float)area : 0.0f;
}

void qat_maxpool_padded_forward(const float *restrict x, float *restrict y, int32_t *restrict argmax,
                                const qat_pool_geometry *g, long p0, long p1) {
    const long H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    for (long p = p0; p < p1; p++) {
        const float *plane = x + p * H * W;
        for (long i = 0; i < oh; i++) {
            long h0, h1;
            clip_window(i * g->stride_h - g->pad_top, g->kernel_h, H, &h0, &h1);
            for (long j = 0; j < ow; j++) {
                long w0, w1;
                clip_window(j * g->stride_w - g->pad_left, g->kernel_w, W, &w0, &w1);
                long best = -1;
                float best_value = -INFINITY;
                if (h0 < h1 && w0 < w1) {
                    best = h0 * W + w0;
                    best_value = plane[best];
                    for (long r = h0; r < h1; r++) {
                        for (long c = w0; c < w1; c++) {
                            // strict > keeps the first maximum; a NaN wins and stays (as qat_maxpool_forward)
                            const float v = plane[r * W + c];
                            if (v > best_value || (v != v && best_value == best_value)) { best_value = v; best = r * W + c; }
                        }
                    }
                }
                const long o = (p * oh + i) * ow + j;
                y[o] = best_value;
                if (argmax) argmax[o] = best < 0 ? -1 : (int32_t)(p * H * W + best);
            }
        }
    }
}

void qat_maxpool_padded_backward(const float *restrict gy, const int32_t *restrict argmax, float *restrict gx,
                                 const qat_pool_geometry *g, long p0, long p1) {
    const long plane = g->out_height * g->out_width;
    for (long o = p0 * plane; o < p1 * plane; o++) {
        if (argmax[o] >= 0) gx[argmax[o]] += gy[o];
    }
}

void qat_avgpool_padded_forward(const float *restrict x, float *restrict y, const qat_pool_geometry *g,
                                int count_include_pad, long p0, long p1) {
    const long H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    for (long p = p0; p < p1; p++) {
        const float *plane = x + p * H * W;
        for (long i = 0; i < oh; i++) {
            const long hs = i * g->stride_h - g->pad_top;
            long h0, h1;
            clip_window(hs, g->kernel_h, H, &h0, &h1);
            for (long j = 0; j < ow; j++) {
                const long ws = j * g->stride_w - g->pad_left;
                long w0, w1;
                clip_window(ws, g->kernel_w, W, &w0, &w1);
                float sum = 0.0f;
                for (long r = h0; r < h1; r++) {
                    for (long c = w0; c < w1; c++) sum += plane[r * W + c];
                }
                y[(p * oh + i) * ow + j] = sum * average_factor(g, hs, ws, h0, h1, w0, w1, count_include_pad);
            }
        }
    }
}

void qat_avgpool_padded_backward(const float *restrict gy, float *restrict gx, const qat_pool_geometry *g,
                                 int count_include_pad, long p0, long p1) {
    const long H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    for (long p = p0; p < p1; p++) {
        float *plane = gx + p * H * W;
        for (long i = 0; i < oh; i++) {
            const long hs = i * g->stride_h - g->pad_top;
            long h0, h1;
            clip_window(hs, g->kernel_h, H, &h0, &h1);
            for (long j = 0; j < ow; j++) {
                const long ws = j * g->stride_w - g->pad_left;
                long w0, w1;
                clip_window(ws, g->kernel_w, W, &w0, &w1);
                const float share = gy[(p * oh + i) * ow + j]
                                    * average_factor(g, hs, ws, h0, h1, w0, w1, count_include_pad);
                for (long r = h0; r < h1; r++) {
                    for (long c = w0; c < w1; c++) plane[r * W + c] += share;
                }
            }
        }
    }
}
