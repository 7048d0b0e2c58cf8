// AVX2 + FMA 3×3 depthwise forward and input gradient, stride 1, on small planes fewer than 8
// columns wide whose output has the input's size (7×7: padding 1 on each side, or 2 on one side
// and 0 on the other), walked as one flat array of H·W floats rather than row by row. A row of 7
// columns is one masked vector per tap (masked loads issue at half rate on a Zen 3); in the flat
// plane output p = i·W + j reads input p + (kh − top)·W + (kw − left) for tap (kh, kw), so every vector of 8
// outputs is 9 loads at fixed offsets. The columns a tap must not reach (j + kw − left outside
// the row: the load wraps into the next or previous row) are zeroed by a per-vector mask; the
// vectors whose loads would leave the plane (the first and last rows) use masked loads instead,
// with the row condition in their masks too.
//
// Each output still adds init (bias or 0), then its taps, kh and kw ascending, by FMA; a tap in
// the padding adds w · 0 (as the wide kernels of depthwise_float.c; the row kernels skip padding
// rows, which gives the same values), so forward and input gradient equal the row kernels'.
// (A flat weight gradient, one partial sum per lane and tap, measured ~8 % slower than the row
// kernels' on 7×7 planes, and these kernels ~25 % slower than the row kernels on 14×14 ones.)
// qat_dw_avx2_flat(0) leaves these planes to the row kernels (the reference in tests).
#include "depthwise_float_avx2.h"

enum { FLAT_MAX_VECTORS = 32 };   // planes up to 256 floats

static int flat_enabled = 1;

int qat_dw_avx2_flat(int enabled) {
    flat_enabled = enabled != 0;
    return flat_enabled;
}

// Stride 1, output of the input's size, fewer than 8 columns, at most FLAT_MAX_VECTORS vectors.
int qat_dw_flat_avx2_takes(const qat_conv2d_params *g) {
    const long W = g->width, H = g->height;
    return flat_enabled && g->stride_h == 1 && g->out_width == W && g->out_height == H && W < LANES &&
           H * W <= LANES * FLAT_MAX_VECTORS;
}

// Offsets and masks of one geometry (the same for every plane). Vector v covers p = 8v + l.
// interior[v]: all 9 loads of vector v lie inside the plane (then every lane is in a real row and
// only the columns need masking: col[v][kw]); otherwise tap[v][t] is the whole lane condition.
typedef struct {
    long size, vectors, offset[9];
    unsigned char interior[FLAT_MAX_VECTORS];
    int32_t col[FLAT_MAX_VECTORS][3][LANES], tap[FLAT_MAX_VECTORS][9][LANES];
} flat_plane;

static void flat_plane_of(flat_plane *f, long H, long W, long top, long left) {
    f->size = H * W;
    f->vectors = (f->size + LANES - 1) / LANES;
    long lo = 0, hi = 0;
    for (long t = 0; t < 9; t++) {
        f->offset[t] = (t / 3 - top) * W + (t % 3 - left);
        lo = f->offset[t] < lo ? f->offset[t] : lo;
        hi = f->offset[t] > hi ? f->offset[t] : hi;
    }
    for (long v = 0; v < f->vectors; v++) {
        const long p0 = v * LANES;
        f->interior[v] = (unsigned char)(p0 + lo >= 0 && p0 + LANES - 1 + hi < f->size);
        for (long l = 0; l < LANES; l++) {
            const long p = p0 + l, i = p / W, j = p % W;
            for (long kw = 0; kw < 3; kw++) {
                const long q = j + kw - left;
                f->col[v][kw][l] = p < f->size && q >= 0 && q < W ? -1 : 0;
            }
            for (long t = 0; t < 9; t++) {
                const long r = i + t / 3 - top;
                f->tap[v][t][l] = f->col[v][t % 3][l] && r >= 0 && r < H ? -1 : 0;
            }
        }
    }
}

// Tap t of vector v (src points at the plane). `interior` is a constant where inlined.
AVX2 __attribute__((always_inline)) static inline __m256 flat_tap(const float *src, const flat_plane *f, long v,
                                                                  long t, const int interior) {
    const float *at = src + v * LANES + f->offset[t];
    if (interior) return _mm256_and_ps(_mm256_castsi256_ps(mask_of(f->col[v][t % 3])), _mm256_loadu_ps(at));
    return _mm256_maskload_ps(at, mask_of(f->tap[v][t]));
}

// The 9 tap vectors of vector v.
AVX2 __attribute__((always_inline)) static inline void flat_taps(const float *src, const flat_plane *f, long v,
                                                                 const int interior, __m256 x[9]) {
    for (long t = 0; t < 9; t++) x[t] = flat_tap(src, f, v, t, interior);
}

// dst (= or += when `add`) init + Σ taps · src over one plane, a vector at a time (4 side by
// side measured slower: their loads, not the FMAs' latency, bound this). `add` is a constant
// where inlined.
AVX2 __attribute__((always_inline)) static inline void
flat_correlate(const float *restrict src, float *restrict dst, const flat_plane *f, const __m256 taps[9],
               __m256 init, const int add) {
    for (long v = 0; v < f->vectors; v++) {
        __m256 x[9];
        if (f->interior[v]) {
            flat_taps(src, f, v, 1, x);
        } else {
            flat_taps(src, f, v, 0, x);
        }
        __m256 acc = init;
        for (long t = 0; t < 9; t++) acc = _mm256_fmadd_ps(taps[t], x[t], acc);
        float *at = dst + v * LANES;
        const long n = f->size - v * LANES;
        if (n >= LANES) {
            _mm256_storeu_ps(at, add ? _mm256_add_ps(_mm256_loadu_ps(at), acc) : acc);
        } else {
            store_first(at, acc, n, add);
        }
    }
}

AVX2 void qat_dw_flat_avx2_forward(const float *restrict x, const float *restrict w, const float *restrict bias,
                                   float *restrict y, const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, HW = g->height * g->width;
    flat_plane f;
    flat_plane_of(&f, g->height, g->width, g->pad_top, g->pad_left);
    for (long u = u0; u < u1; u++) {
        const long c = u % C;
        __m256 taps[9];
        for (long t = 0; t < 9; t++) taps[t] = _mm256_set1_ps(w[c * 9 + t]);
        flat_correlate(x + u * HW, y + u * HW, &f, taps, _mm256_set1_ps(bias ? bias[c] : 0.0f), 0);
    }
}

// The forward correlation of gy with the kernel turned by 180° behind 2 − top rows and 2 − left
// columns (as the row kernels), added into gx.
AVX2 void qat_dw_flat_avx2_input_grad(const float *restrict gy, const float *restrict w, float *restrict gx,
                                      const qat_conv2d_params *g, long u0, long u1) {
    const long C = g->channels, HW = g->height * g->width;
    flat_plane f;
    flat_plane_of(&f, g->height, g->width, 2 - g->pad_top, 2 - g->pad_left);
    for (long u = u0; u < u1; u++) {
        const float *k = w + (u % C) * 9;
        __m256 turned[9];
        for (long t = 0; t < 9; t++) turned[t] = _mm256_set1_ps(k[8 - t]);
        flat_correlate(gy + u * HW, gx + u * HW, &f, turned, _mm256_setzero_ps(), 1);
    }
}
