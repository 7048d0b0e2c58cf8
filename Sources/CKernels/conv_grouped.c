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
//
// Each input plane is first copied into a zero-padded buffer split into stride_h × stride_w
// phases (phase (pr, pc) holds the padded rows pr, pr + SH, … and columns pc, pc + SW, …), each
// `phase_height` rows of `phase_width`. Tap (kh, kw) of output (i, j) then reads row i + a,
// column j + b of one phase (a = kh·DH / SH, b = kw·DW / SW). Outputs are computed in a "wide"
// layout, rows of phase_width (the columns past out_width are scratch), so each tap is one
// contiguous loop over the whole plane: no bounds tests, no strided loads, long vector loops.

typedef struct { long rows, width, phase_height, phase_width, wide_length; } padded_layout;

static padded_layout padded_layout_of(const qat_conv2d_params *g) {
    padded_layout l;
    // Only the rows and columns some tap reads.
    l.rows = (g->out_height - 1) * g->stride_h + (g->kernel_h - 1) * g->dilation_h + 1;
    l.width = (g->out_width - 1) * g->stride_w + (g->kernel_w - 1) * g->dilation_w + 1;
    l.phase_height = (l.rows + g->stride_h - 1) / g->stride_h;
    l.phase_width = (l.width + g->stride_w - 1) / g->stride_w;
    // Wide positions i·phase_width + j up to the last real output.
    l.wide_length = (g->out_height - 1) * l.phase_width + g->out_width;
    return l;
}

static inline long padded_size(const padded_layout *l, const qat_conv2d_params *g) {
    return g->stride_h * g->stride_w * l->phase_height * l->phase_width;
}

// Where tap (kh, kw) of wide output position 0 reads; position p reads p further on.
static inline long tap_offset(const padded_layout *l, const qat_conv2d_params *g, long kh, long kw) {
    const long row = kh * g->dilation_h, column = kw * g->dilation_w;
    const long phase = (row % g->stride_h) * g->stride_w + column % g->stride_w;
    return (phase * l->phase_height + row / g->stride_h) * l->phase_width + column / g->stride_w;
}

// padded = the plane behind pad_top rows and pad_left columns of zeros (zeros after it), in phases.
static void pad_plane(const float *restrict plane, float *restrict padded, const padded_layout *l,
                      const qat_conv2d_params *g) {
    const long H = g->height, W = g->width, SH = g->stride_h, SW = g->stride_w;
    for (long pr = 0; pr < SH; pr++) {
        for (long pc = 0; pc < SW; pc++) {
            long lo, hi;   // phase columns q with 0 ≤ q·SW + pc − pad_left < W
            valid_range(pc - g->pad_left, SW, W, l->phase_width, &lo, &hi);
            for (long t = 0; t < l->phase_height; t++) {
                float *restrict dst = padded + ((pr * SW + pc) * l->phase_height + t) * l->phase_width;
                const long ir = t * SH + pr - g->pad_top;
                if (ir < 0 || ir >= H) {
                    for (long q = 0; q < l->phase_width; q++) dst[q] = 0.0f;
                    continue;
                }
                const float *restrict src = plane + ir * W + pc - g->pad_left;
                for (long q = 0; q < lo; q++) dst[q] = 0.0f;
                if (SW == 1) {
                    for (long q = lo; q < hi; q++) dst[q] = src[q];
                } else {
                    for (long q = lo; q < hi; q++) dst[q] = src[q * SW];
                }
                for (long q = hi; q < l->phase_width; q++) dst[q] = 0.0f;
            }
        }
    }
}

// The adjoint of pad_plane: plane += padded at every position copied from it.
static void unpad_plane_add(const float *restrict padded, float *restrict plane, const padded_layout *l,
                            const qat_conv2d_params *g) {
    const long H = g->height, W = g->width, SH = g->stride_h, SW = g->stride_w;
    for (long pr = 0; pr < SH; pr++) {
        for (long pc = 0; pc < SW; pc++) {
            long lo, hi;
            valid_range(pc - g->pad_left, SW, W, l->phase_width, &lo, &hi);
            for (long t = 0; t < l->phase_height; t++) {
                const long ir = t * SH + pr - g->pad_top;
                if (ir < 0 || ir >= H) continue;
                const float *restrict src = padded + ((pr * SW + pc) * l->phase_height + t) * l->phase_width;
                float *restrict dst = plane + ir * W + pc - g->pad_left;
                if (SW == 1) {
                    for (long q = lo; q < hi; q++) dst[q] += src[q];
                } else {
                    for (long q = lo; q < hi; q++) dst[q * SW] += src[q];
                }
            }
        }
    }
}

static float *scratch_floats(long count) {
    float *p = malloc((size_t)(count > 0 ? count : 1) * sizeof(float));
    if (!p) abort();
    return p;
}

void qat_depthwise_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                           float *restrict y, const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, O = g->out_channels, KH = g->kernel_h, KW = g->kernel_w;
    const long oh = g->out_height, ow = g->out_width, m = O / C;
    const padded_layout l = padded_layout_of(g);
    float *padded = scratch_floats(padded_size(&l, g));
    float *wide = scratch_floats(l.wide_length);
    for (long u = u0; u < u1; u++) {
        const long n = u / C, c = u % C;
        pad_plane(x + u * g->height * g->width, padded, &l, g);
        for (long o = c * m; o < (c + 1) * m; o++) {
            for (long p = 0; p < l.wide_length; p++) wide[p] = 0.0f;
            for (long kh = 0; kh < KH; kh++) {
                for (long kw = 0; kw < KW; kw++) {
                    const float tap = w[(o * KH + kh) * KW + kw];
                    const float *restrict src = padded + tap_offset(&l, g, kh, kw);
                    float *restrict dst = wide;
                    for (long p = 0; p < l.wide_length; p++) dst[p] += tap * src[p];
                }
            }
            const float b = bias ? bias[o] : 0.0f;
            float *out = y + (n * O + o) * oh * ow;
            for (long i = 0; i < oh; i++) {
                for (long j = 0; j < ow; j++) out[i * ow + j] = wide[i * l.phase_width + j] + b;
            }
        }
    }
    free(wide);
    free(padded);
}

// gy's plane in the wide layout, zeros in the scratch columns (so they add nothing).
static void widen(const float *restrict plane, float *restrict wide, const padded_layout *l, long oh, long ow) {
    for (long i = 0; i < oh; i++) {
        float *restrict row = wide + i * l->phase_width;
        const long end = i == oh - 1 ? ow : l->phase_width;
        for (long j = 0; j < ow; j++) row[j] = plane[i * ow + j];
        for (long j = ow; j < end; j++) row[j] = 0.0f;
    }
}

void qat_depthwise_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                              const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, O = g->out_channels, KH = g->kernel_h, KW = g->kernel_w;
    const long oh = g->out_height, ow = g->out_width, m = O / C;
    const padded_layout l = padded_layout_of(g);
    const long size = padded_size(&l, g);
    float *padded = scratch_floats(size);
    float *wide = scratch_floats(l.wide_length);
    for (long u = u0; u < u1; u++) {
        const long n = u / C, c = u % C;
        for (long p = 0; p < size; p++) padded[p] = 0.0f;
        for (long o = c * m; o < (c + 1) * m; o++) {
            widen(gy + (n * O + o) * oh * ow, wide, &l, oh, ow);
            for (long kh = 0; kh < KH; kh++) {
                for (long kw = 0; kw < KW; kw++) {
                    const float tap = w[(o * KH + kh) * KW + kw];
                    float *restrict dst = padded + tap_offset(&l, g, kh, kw);
                    const float *restrict src = wide;
                    for (long p = 0; p < l.wide_length; p++) dst[p] += tap * src[p];
                }
            }
        }
        unpad_plane_add(padded, gx + u * g->height * g->width, &l, g);
    }
    free(wide);
    free(padded);
}

void qat_depthwise_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                               const qat_conv2d_params *g, long c0, long c1) {
    const long N = g->batch, C = g->channels, O = g->out_channels, KH = g->kernel_h, KW = g->kernel_w;
    const long oh = g->out_height, ow = g->out_width, m = O / C, taps = KH * KW;
    const padded_layout l = padded_layout_of(g);
    const long L = l.wide_length;
    float *padded = scratch_floats(padded_size(&l, g));
    float *wide = scratch_floats(L);
    // One partial sum per (tap, wide position): the products add up over the images without a
    // loop-carried dependency (so they vectorise) and still in a fixed order.
    float *sums = scratch_floats(taps * L);
    for (long c = c0; c < c1; c++) {
        for (long k = 0; k < m; k++) {
            const long o = c * m + k;
            for (long p = 0; p < taps * L; p++) sums[p] = 0.0f;
            for (long n = 0; n < N; n++) {
                // The copy is redone per output channel of c: cheap next to the taps.
                pad_plane(x + (n * C + c) * g->height * g->width, padded, &l, g);
                widen(gy + (n * O + o) * oh * ow, wide, &l, oh, ow);
                for (long kh = 0; kh < KH; kh++) {
                    for (long kw = 0; kw < KW; kw++) {
                        float *restrict acc = sums + (kh * KW + kw) * L;
                        const float *restrict src = padded + tap_offset(&l, g, kh, kw);
                        const float *restrict line = wide;
                        for (long p = 0; p < L; p++) acc[p] += line[p] * src[p];
                    }
                }
            }
            // Each tap's positions in 8 interleaved partial sums, then those in a fixed order.
            for (long t = 0; t < taps; t++) {
                const float *acc = sums + t * L;
                float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                long p = 0;
                for (; p + 8 <= L; p += 8) {
                    for (int k8 = 0; k8 < 8; k8++) lanes[k8] += acc[p + k8];
                }
                for (; p < L; p++) lanes[p % 8] += acc[p];
                const float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
                                  + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
                gw[o * taps + t] += sum;
            }
        }
    }
    free(sums);
    free(wide);
    free(padded);
}
