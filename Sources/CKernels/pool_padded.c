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

// The maximum of plane's window rows [h0, h1) × columns [w0, w1), scanned in order: strict >
// keeps the first maximum; a NaN wins and stays (as qat_maxpool_forward). Returns its index in
// the plane (−1 for an empty window, whose value is −∞).
static inline long window_max(const float *plane, long W, long h0, long h1, long w0, long w1, float *value) {
    long best = -1;
    float best_value = -INFINITY;
    if (h0 < h1 && w0 < w1) {
        best = h0 * W + w0;
        best_value = plane[best];
        for (long r = h0; r < h1; r++) {
            for (long c = w0; c < w1; c++) {
                const float v = plane[r * W + c];
                if (v > best_value || (v != v && best_value == best_value)) { best_value = v; best = r * W + c; }
            }
        }
    }
    *value = best_value;
    return best;
}

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))

// n ≤ 16 windows side by side (outputs j0 … j0+n−1 of one row, all inside the input across, rows
// [h0, h1) inside down), stride 1 or 2 across, lanes past n neither read nor written: each lane scans its window in window_max's order
// with the same rule, so values and indices are window_max's. The winner is data-dependent: as
// a branch it mispredicts on most taps.
AVX512 static void window_max16(const float *plane, long W, long h0, long h1, long c0, long K, long S, long n,
                                int32_t plane_offset, float *y, int32_t *argmax) {
    const __mmask16 out = (__mmask16)((1u << n) - 1);
    // Stride 2: lane l reads offset 2l, the even elements of 2n − 1 floats over two vectors.
    const __mmask16 low = S == 1 ? out : (__mmask16)(n > 8 ? 0xffff : (1u << (2 * n - 1)) - 1);
    const __mmask16 high = (__mmask16)(S == 2 && n > 8 ? (1u << (2 * n - 17)) - 1 : 0);
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i lane_columns = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int)S));
    __m512 best = _mm512_setzero_ps();
    __m512i best_index = _mm512_setzero_si512();
    for (long r = h0; r < h1; r++) {
        for (long c = 0; c < K; c++) {
            const long first = r * W + c0 + c;   // lane l reads first + l·S
            const float *src = plane + first;
            const __m512 v = S == 1 ? _mm512_maskz_loadu_ps(low, src)
                : _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(low, src), evens, _mm512_maskz_loadu_ps(high, src + 16));
            const __m512i index = _mm512_add_epi32(_mm512_set1_epi32((int32_t)first), lane_columns);
            __mmask16 take;
            if (r == h0 && c == 0) {
                take = 0xffff;
            } else {
                take = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ)
                     | (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
            }
            best = _mm512_mask_mov_ps(best, take, v);
            best_index = _mm512_mask_mov_epi32(best_index, take, index);
        }
    }
    _mm512_mask_storeu_ps(y, out, best);
    if (argmax) _mm512_mask_storeu_epi32(argmax, out, _mm512_add_epi32(best_index, _mm512_set1_epi32(plane_offset)));
}

#define AVX2 __attribute__((target("avx2,fma")))

// window_max16 in 8 lanes for CPUs without AVX-512: the same scan, the same rule, the same bits.
AVX2 static void window_max8(const float *plane, long W, long h0, long h1, long c0, long K, long S, long n,
                             int32_t plane_offset, float *y, int32_t *argmax) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // maskload/maskstore take a lane when its top bit is set: lane < count.
    const __m256i out = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lanes);
    // Stride 2: lane l reads offset 2l, the even elements of 2n − 1 floats over two vectors.
    const long spread = S == 1 ? n : 2 * n - 1;
    const __m256i low = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)spread), lanes);
    const __m256i high = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)spread - 8), lanes);
    const __m256i lane_columns = _mm256_mullo_epi32(lanes, _mm256_set1_epi32((int)S));
    __m256 best = _mm256_setzero_ps();
    __m256 best_index = _mm256_setzero_ps();   // int32 lanes, moved with float blends
    for (long r = h0; r < h1; r++) {
        for (long c = 0; c < K; c++) {
            const long first = r * W + c0 + c;   // lane l reads first + l·S
            const float *src = plane + first;
            __m256 v = _mm256_maskload_ps(src, low);
            if (S == 2) {
                // [a0 a2 b0 b2 | a4 a6 b4 b6] → [a0 a2 a4 a6 b0 b2 b4 b6]
                const __m256 pairs = _mm256_shuffle_ps(v, _mm256_maskload_ps(src + 8, high), 0x88);
                v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(pairs), 0xd8));
            }
            const __m256 index = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_set1_epi32((int32_t)first), lane_columns));
            if (r == h0 && c == 0) {
                best = v;
                best_index = index;
                continue;
            }
            const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ),
                                             _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q),
                                                           _mm256_cmp_ps(best, best, _CMP_ORD_Q)));
            best = _mm256_blendv_ps(best, v, take);
            best_index = _mm256_blendv_ps(best_index, index, take);
        }
    }
    // Whole vectors with plain stores: a masked store is microcoded and slow on AMD's cores.
    const __m256i indices = _mm256_add_epi32(_mm256_castps_si256(best_index), _mm256_set1_epi32(plane_offset));
    if (n == 8) {
        _mm256_storeu_ps(y, best);
        if (argmax) _mm256_storeu_si256((__m256i *)argmax, indices);
    } else {
        _mm256_maskstore_ps(y, out, best);
        if (argmax) _mm256_maskstore_epi32(argmax, out, indices);
    }
}

static int widest_allowed = 16;   // qat_maxpool_limit_lanes

// The lanes of the widest vector path this CPU has: 16 (AVX-512), 8 (AVX2) or 1 (scalar).
static int pool_lanes_available(void) {
    static int lanes = 0;
    if (lanes == 0) {
        __builtin_cpu_init();
        lanes = __builtin_cpu_supports("avx512f") ? 16 : __builtin_cpu_supports("avx2") ? 8 : 1;
    }
    return lanes;
}

static int pool_lanes(void) {
    const int available = pool_lanes_available();
    return available < widest_allowed ? available : widest_allowed >= 16 ? 16 : widest_allowed >= 8 ? 8 : 1;
}
#endif

void qat_maxpool_padded_forward(const float *restrict x, float *restrict y, int32_t *restrict argmax,
                                const qat_pool_geometry *g, long p0, long p1) {
    const long H = g->height, W = g->width, oh = g->out_height, ow = g->out_width;
    const long K = g->kernel_w, S = g->stride_w, P = g->pad_left;
    // Outputs [jA, jB) have their window inside the input across.
    long jA = (P + S - 1) / S, jB = W - K + P >= 0 ? (W - K + P) / S + 1 : 0;
    if (jB > ow) jB = ow;
    if (jA > jB) jA = jB;
    long lanes = 1;
#if defined(__x86_64__)
    if ((S == 1 || S == 2) && H * W <= INT32_MAX / 2) lanes = pool_lanes();
#endif
    for (long p = p0; p < p1; p++) {
        const float *plane = x + p * H * W;
        for (long i = 0; i < oh; i++) {
            long h0, h1;
            clip_window(i * g->stride_h - g->pad_top, g->kernel_h, H, &h0, &h1);
            const long row = (p * oh + i) * ow;
            long j = 0;
            while (j < ow) {
#if defined(__x86_64__)
                if (lanes > 1 && h0 < h1 && j >= jA && j < jB) {
                    const long n = jB - j < lanes ? jB - j : lanes;
                    (lanes == 16 ? window_max16 : window_max8)(plane, W, h0, h1, j * S - P, K, S, n,
                                                               (int32_t)(p * H * W), y + row + j,
                                                               argmax ? argmax + row + j : NULL);
                    j += n;
                    continue;
                }
#endif
                long w0, w1;
                clip_window(j * S - P, K, W, &w0, &w1);
                float value;
                const long best = window_max(plane, W, h0, h1, w0, w1, &value);
                y[row + j] = value;
                if (argmax) argmax[row + j] = best < 0 ? -1 : (int32_t)(p * H * W + best);
                j++;
            }
        }
    }
}

int qat_maxpool_limit_lanes(int widest) {
#if defined(__x86_64__)
    widest_allowed = widest;
    return pool_lanes();
#else
    (void)widest;
    return 1;
#endif
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
