// Depthwise convolution in float: the general loops (any kernel, stride, dilation, multiplier)
// and the 3×3 kernels for AVX-512, AVX2 + FMA and portable C (see include/depthwise_float.h and
// Sources/QATCore/Ops/Conv2DDepthwise.swift for the math).
#include "depthwise_float_internal.h"

#include <immintrin.h>
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

// ---------------------------------------------------------------- the loops (any geometry)
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

static void loops_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
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

static void loops_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
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

static void loops_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
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

// ---------------------------------------------------------------- 3×3 kernels
//
// The same wide, stride-phased layout as the loops, with three differences that make them fast:
// the nine taps of a vector of outputs are summed in a register (one store instead of nine
// read-modify-writes), buffers are zeroed once per call and each plane then only writes its
// in-range elements (no per-plane padding), and the input gradient gathers (each input element's
// taps summed in a register) instead of scattering. The AVX-512 and AVX2 paths skip even that copy
// for planes up to 1024 columns (depthwise_float_direct*.c); the entry points at the end choose.

// Floats of zeros after every buffer, so loops may run over whole vectors of up to 16 lanes.
enum { SLACK = 16 };

// Where place_plane writes a plane of h × w behind `top` rows and `left` columns of padding, in a
// buffer of s × s phases (as pad_plane: phase (pr, pc) holds the padded rows pr, pr + s, … and
// columns pc, pc + s, …, phase_height rows of `pitch`) of the padded rows [0, rows) and columns
// [0, width): padded rows [first_row, end_row) hold plane rows, and in phase column pc the
// columns [lo[pc], hi[pc]).
typedef struct {
    long w, top, left, s, first_row, end_row, phase_height, pitch;
    long lo[2], hi[2];
} placement;

static placement placement_of(long h, long w, long top, long left, long s, long rows, long width,
                              long phase_height, long pitch) {
    placement m = {w, top, left, s, top, rows < h + top ? rows : h + top, phase_height, pitch, {0, 0}, {0, 0}};
    for (long pc = 0; pc < s; pc++) {
        valid_range(pc - left, s, w, pitch, &m.lo[pc], &m.hi[pc]);
        const long limit = (width - pc + s - 1) / s;
        if (m.hi[pc] > limit) m.hi[pc] = limit;
        if (m.lo[pc] > m.hi[pc]) m.lo[pc] = m.hi[pc];
    }
    return m;
}

// ---- the inner loops, once per path
#define SUFFIX portable
#define TARGET
#define LANES 8
typedef struct { float v[8]; } portable_vec;
#define vec portable_vec
static inline portable_vec portable_set1(float f) {
    portable_vec r;
    for (int i = 0; i < 8; i++) r.v[i] = f;
    return r;
}
static inline portable_vec portable_load(const float *p) {
    portable_vec r;
    memcpy(r.v, p, sizeof r.v);
    return r;
}
static inline void portable_store(float *p, portable_vec v) { memcpy(p, v.v, sizeof v.v); }
// a·b + c rounded twice (the portable path does not assume an FMA unit).
static inline portable_vec portable_fma(portable_vec a, portable_vec b, portable_vec c) {
    portable_vec r;
    for (int i = 0; i < 8; i++) {
        const float product = a.v[i] * b.v[i];
        r.v[i] = product + c.v[i];
    }
    return r;
}
#define vec_zero() portable_set1(0.0f)
#define vec_set1(f) portable_set1(f)
#define vec_load(p) portable_load(p)
#define vec_store(p, v) portable_store(p, v)
#define vec_fma(a, b, c) portable_fma(a, b, c)
#pragma clang fp contract(off)
#include "depthwise_float_body.h"
#pragma clang fp contract(on)

#define SUFFIX avx2
#define TARGET __attribute__((target("avx2,fma")))
#define LANES 8
#define vec __m256
#define vec_zero() _mm256_setzero_ps()
#define vec_set1(f) _mm256_set1_ps(f)
#define vec_load(p) _mm256_loadu_ps(p)
#define vec_store(p, v) _mm256_storeu_ps(p, v)
#define vec_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#include "depthwise_float_body.h"

#define SUFFIX avx512
#define TARGET __attribute__((target("avx512f")))
#define LANES 16
#define vec __m512
#define vec_zero() _mm512_setzero_ps()
#define vec_set1(f) _mm512_set1_ps(f)
#define vec_load(p) _mm512_loadu_ps(p)
#define vec_store(p, v) _mm512_storeu_ps(p, v)
#define vec_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#include "depthwise_float_body.h"

typedef struct {
    long lanes;
    void (*correlate9)(const float *restrict, const long[9], const float[9], float, float *restrict, long);
    void (*tap_products9)(const float *restrict, const long[9], const float *restrict, long, float *restrict);
    void (*stride2_classes)(const float *restrict, long, const float[9], float *restrict[4], long);
    void (*place_plane)(const float *restrict, const placement *, float *restrict);
    void (*copy_rows)(const float *restrict, long, float *restrict, long, long, long, int);
    void (*interleave_add)(const float *restrict, const float *restrict, float *restrict, long, long);
} kernel_set;

static kernel_set kernels_of(qat_dw_path path) {
    switch (path) {
    case QAT_DW_AVX512: return (kernel_set){16, correlate9_avx512, tap_products9_avx512, stride2_classes_avx512, place_plane_avx512,
                            copy_rows_avx512, interleave_add_avx512};
    case QAT_DW_AVX2: return (kernel_set){8, correlate9_avx2, tap_products9_avx2, stride2_classes_avx2, place_plane_avx2, copy_rows_avx2,
                            interleave_add_avx2};
    case QAT_DW_LOOPS:
    case QAT_DW_PORTABLE: break;
    }
    return (kernel_set){8, correlate9_portable, tap_products9_portable, stride2_classes_portable, place_plane_portable,
                        copy_rows_portable, interleave_add_portable};
}

int qat_depthwise_cpu_supports(qat_dw_path path) {
    __builtin_cpu_init();
    switch (path) {
    case QAT_DW_LOOPS:
    case QAT_DW_PORTABLE: return 1;
    case QAT_DW_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case QAT_DW_AVX512: return __builtin_cpu_supports("avx512f") != 0;
    }
    return 0;
}

int qat_depthwise3x3_supported(const qat_conv2d_params *g) {
    return g->groups == g->channels && g->out_channels == g->channels && g->kernel_h == 3 && g->kernel_w == 3 &&
           g->dilation_h == 1 && g->dilation_w == 1 && g->stride_h == g->stride_w &&
           (g->stride_h == 1 || g->stride_h == 2) && g->pad_top <= 2 && g->pad_left <= 2;
}

static float *zeroed_floats(long count) {
    float *p = calloc((size_t)count + SLACK, sizeof(float));
    if (!p) abort();
    return p;
}

static inline long round_up(long n, long multiple) { return (n + multiple - 1) / multiple * multiple; }

static void forward3x3(const kernel_set *k, const float *restrict x, const float *restrict w,
                       const float *restrict bias, float *restrict y, const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, oh = g->out_height, ow = g->out_width, s = g->stride_h;
    const padded_layout l = padded_layout_of(g);
    long offsets[9];
    for (long t = 0; t < 9; t++) offsets[t] = tap_offset(&l, g, t / 3, t % 3);
    const placement m = placement_of(g->height, g->width, g->pad_top, g->pad_left, s, l.rows, l.width,
                                     l.phase_height, l.phase_width);
    float *padded = zeroed_floats(padded_size(&l, g));
    float *wide = zeroed_floats(round_up(l.wide_length, k->lanes));
    for (long u = u0; u < u1; u++) {
        const long c = u % C;
        k->place_plane(x + u * g->height * g->width, &m, padded);
        k->correlate9(padded, offsets, w + c * 9, bias ? bias[c] : 0.0f, wide, l.wide_length);
        k->copy_rows(wide, l.phase_width, y + u * oh * ow, ow, oh, ow, 0);
    }
    free(wide);
    free(padded);
}

// Stride 1: gx[r, q] = Σ w[kh, kw] · gy[r + top − kh, q + left − kw], which is the forward
// correlation, with the kernel turned by 180°, of gy behind 2 − top rows and 2 − left columns of zeros.
static void stride1_input_grad(const kernel_set *k, const float *restrict gy, const float *restrict w,
                               float *restrict gx, const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long pitch = W + 2, length = (H - 1) * pitch + W;
    long offsets[9];
    for (long t = 0; t < 9; t++) offsets[t] = (t / 3) * pitch + t % 3;
    const placement m = placement_of(oh, ow, 2 - g->pad_top, 2 - g->pad_left, 1, H + 2, pitch, H + 2, pitch);
    float *padded = zeroed_floats((H + 2) * pitch);
    float *wide = zeroed_floats(round_up(length, k->lanes));
    for (long u = u0; u < u1; u++) {
        const float *taps = w + (u % C) * 9;
        const float turned[9] = {taps[8], taps[7], taps[6], taps[5], taps[4], taps[3], taps[2], taps[1], taps[0]};
        k->place_plane(gy + u * oh * ow, &m, padded);
        k->correlate9(padded, offsets, turned, 0.0f, wide, length);
        k->copy_rows(wide, pitch, gx + u * H * W, W, H, W, 1);
    }
    free(wide);
    free(padded);
}

// Stride 2: in padded coordinates (a, b) = (r + top, q + left), input element (r, q) gets the taps
// kh ≡ a (mod 2) from output row (a − kh) / 2, and the same for columns. Writing a = 2v + pa,
// b = 2u + pb, each parity class (pa, pb) is a small correlation over (v, u) of gy behind one
// row and one column of zeros (stride2_classes); the classes are then interleaved into gx.
static void stride2_input_grad(const kernel_set *k, const float *restrict gy, const float *restrict w,
                               float *restrict gx, const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long top = g->pad_top, left = g->pad_left;
    const long rows = (H + top + 1) / 2, columns = (W + left + 1) / 2, pitch = columns + 1;
    const long length = (rows - 1) * pitch + columns, stride = round_up(length, k->lanes) + SLACK;
    const placement m = placement_of(oh, ow, 1, 1, 1, rows + 1, pitch, rows + 1, pitch);
    float *padded = zeroed_floats((rows + 1) * pitch);
    float *class_buffer = zeroed_floats(4 * stride);
    float *classes[4] = {class_buffer, class_buffer + stride, class_buffer + 2 * stride, class_buffer + 3 * stride};
    for (long u = u0; u < u1; u++) {
        k->place_plane(gy + u * oh * ow, &m, padded);
        k->stride2_classes(padded, pitch, w + (u % C) * 9, classes, length);
        float *plane = gx + u * H * W;
        for (long r = 0; r < H; r++) {
            const long a = r + top;
            const float *restrict even = classes[(a & 1) * 2] + (a >> 1) * pitch;
            const float *restrict odd = classes[(a & 1) * 2 + 1] + (a >> 1) * pitch;
            k->interleave_add(even, odd, plane + r * W, W, left);
        }
    }
    free(class_buffer);
    free(padded);
}

// The lanes' partial sums added pairwise, halves first: a fixed order for a given lane count.
static float sum_lanes(float *lanes, long count) {
    for (long half = count / 2; half >= 1; half /= 2) {
        for (long i = 0; i < half; i++) lanes[i] += lanes[i + half];
    }
    return lanes[0];
}

static void weight_grad3x3(const kernel_set *k, const float *restrict x, const float *restrict gy,
                           float *restrict gw, const qat_conv2d_params *g, long c0, long c1) {
    const long N = g->batch, C = g->channels, oh = g->out_height, ow = g->out_width, s = g->stride_h;
    const padded_layout l = padded_layout_of(g);
    long offsets[9];
    for (long t = 0; t < 9; t++) offsets[t] = tap_offset(&l, g, t / 3, t % 3);
    const placement m = placement_of(g->height, g->width, g->pad_top, g->pad_left, s, l.rows, l.width,
                                     l.phase_height, l.phase_width);
    float *padded = zeroed_floats(padded_size(&l, g));
    // gy in the wide layout: its scratch columns and tail stay zero, so they add nothing.
    float *wide = zeroed_floats(round_up(l.wide_length, k->lanes));
    float sums[9 * 16];
    for (long c = c0; c < c1; c++) {
        memset(sums, 0, sizeof sums);
        for (long n = 0; n < N; n++) {
            const long u = n * C + c;
            k->place_plane(x + u * g->height * g->width, &m, padded);
            k->copy_rows(gy + u * oh * ow, ow, wide, l.phase_width, oh, ow, 0);
            k->tap_products9(padded, offsets, wide, l.wide_length, sums);
        }
        for (long t = 0; t < 9; t++) gw[c * 9 + t] += sum_lanes(sums + t * k->lanes, k->lanes);
    }
    free(wide);
    free(padded);
}

// ---------------------------------------------------------------- entry points

static int direct_mode = 1;

int qat_depthwise_enable_direct(int mode) {
    direct_mode = mode < 0 ? 0 : mode > 2 ? 2 : mode;
    return direct_mode;
}

// The in-place kernels (depthwise_float_direct.c, depthwise_float_direct_avx2.c) take the plane.
// AVX2's row-group kernels (the default) beat the padded copy on every plane of mobilenetv2-tiny
// (1.3–2× on a Zen 3). Without them (qat_dw_avx2_rows(0)), AVX2's padded-copy kernels stay faster
// at stride 1 once a row spans more than one 8-column block (the in-place ones' edge blocks cost masked loads and a scalar tail; on a Zen 3 core the forward and input gradient ran at 0.7–0.8× on 14×14 and 28×28 planes,
// and in mobilenetv2-tiny's training step the stride-1 backward took ~10 % longer with the
// in-place weight gradient). Mode 2 (tests) takes every plane that fits.
static int use_direct(qat_dw_path path, const qat_conv2d_params *g) {
    if (direct_mode == 0 || !qat_dw_direct_fits(g)) return 0;
    if (path == QAT_DW_AVX512) return 1;
    if (path != QAT_DW_AVX2) return 0;
    // The row-group kernels beat the padded copy on every plane (see depthwise_float_rows_avx2.c).
    return direct_mode == 2 || qat_dw_avx2_rows_enabled() || g->stride_h == 2 || (g->width <= 8 && g->out_width <= 8);
}

void qat_depthwise_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                           float *restrict y, const qat_conv2d_params *g, qat_dw_path path, long u0, long u1) {
    if (path == QAT_DW_LOOPS || !qat_depthwise3x3_supported(g)) {
        loops_forward(x, w, bias, y, g, u0, u1);
        return;
    }
    if (use_direct(path, g)) {
        if (path == QAT_DW_AVX512) {
            qat_dw_direct_forward(x, w, bias, y, g, u0, u1);
        } else if (qat_dw_avx2_rows_enabled() && qat_dw_flat_avx2_takes(g)) {
            qat_dw_flat_avx2_forward(x, w, bias, y, g, u0, u1);
        } else if (qat_dw_avx2_rows_enabled()) {
            qat_dw_rows_avx2_forward(x, w, bias, y, g, u0, u1);
        } else {
            qat_dw_direct_avx2_forward(x, w, bias, y, g, u0, u1);
        }
        return;
    }
    const kernel_set k = kernels_of(path);
    forward3x3(&k, x, w, bias, y, g, u0, u1);
}

void qat_depthwise_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                              const qat_conv2d_params *g, qat_dw_path path, long u0, long u1) {
    if (path == QAT_DW_LOOPS || !qat_depthwise3x3_supported(g)) {
        loops_input_grad(gy, w, gx, g, u0, u1);
        return;
    }
    if (use_direct(path, g)) {
        if (path == QAT_DW_AVX512) {
            if (g->stride_h == 1) {
                qat_dw_direct_input_grad(gy, w, gx, g, u0, u1);
            } else {
                qat_dw_direct_input_grad_stride2(gy, w, gx, g, u0, u1);
            }
        } else if (g->stride_h == 1) {
            if (qat_dw_avx2_rows_enabled() && qat_dw_flat_avx2_takes(g)) {
                qat_dw_flat_avx2_input_grad(gy, w, gx, g, u0, u1);
            } else if (qat_dw_avx2_rows_enabled()) {
                qat_dw_rows_avx2_input_grad(gy, w, gx, g, u0, u1);
            } else {
                qat_dw_direct_avx2_input_grad(gy, w, gx, g, u0, u1);
            }
        } else if (qat_dw_avx2_rows_enabled()) {
            qat_dw_rows_avx2_input_grad_stride2(gy, w, gx, g, u0, u1);
        } else {
            qat_dw_direct_avx2_input_grad_stride2(gy, w, gx, g, u0, u1);
        }
        return;
    }
    const kernel_set k = kernels_of(path);
    if (g->stride_h == 1) {
        stride1_input_grad(&k, gy, w, gx, g, u0, u1);
    } else {
        stride2_input_grad(&k, gy, w, gx, g, u0, u1);
    }
}

void qat_depthwise_weight_grad(const float *restrict x, const float *restrict gy, float *restrict gw,
                               const qat_conv2d_params *g, qat_dw_path path, long c0, long c1) {
    if (path == QAT_DW_LOOPS || !qat_depthwise3x3_supported(g)) {
        loops_weight_grad(x, gy, gw, g, c0, c1);
        return;
    }
    if (use_direct(path, g)) {
        if (path == QAT_DW_AVX512) {
            qat_dw_direct_weight_grad(x, gy, gw, g, c0, c1);
        } else if (qat_dw_avx2_rows_enabled()) {
            qat_dw_rows_avx2_weight_grad(x, gy, gw, g, c0, c1);
        } else {
            qat_dw_direct_avx2_weight_grad(x, gy, gw, g, c0, c1);
        }
        return;
    }
    const kernel_set k = kernels_of(path);
    weight_grad3x3(&k, x, gy, gw, g, c0, c1);
}
