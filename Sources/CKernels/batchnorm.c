// BatchNorm loops (the math is in Sources/QATCore/Ops/BatchNorm.swift). No fused multiply-add:
// every float expression rounds as the Swift reference it replaced, so the bits do not change.
#pragma STDC FP_CONTRACT OFF
#include "batchnorm.h"

#include <immintrin.h>

// Channels are walked in groups of this many: one independent Double chain each, interleaved.
// Samples are the outer loop (the chains carried in the output arrays from one sample to the
// next), so memory is read in order, one [group, plane] block after the other.
#define GROUP 8

// ---- AVX2: 8 channels per vector, one lane per channel ----
// The same chains as the portable loops below (lane k is channel c + k, positions added in
// order), 8 at once: rows of 8 positions from the 8 planes are loaded and transposed so that each
// vector holds one position of all 8 channels. AVX2 without FMA, so every value rounds the same.
#define AVX2 __attribute__((target("avx2")))

// r[j] lane k ← r[k] lane j (an 8 × 8 transpose).
AVX2 static inline void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Position p of the 8 planes starting at `base`, `plane` apart.
AVX2 static inline __m256 column8(const float *base, long plane, long p) {
    return _mm256_setr_ps(base[p], base[plane + p], base[2 * plane + p], base[3 * plane + p],
                          base[4 * plane + p], base[5 * plane + p], base[6 * plane + p], base[7 * plane + p]);
}

// Positions [p, p + 8) of the 8 planes, transposed: v[j] = position p + j of every channel.
AVX2 static inline void load_block8(const float *base, long plane, long p, __m256 v[8]) {
    for (int k = 0; k < 8; k++) v[k] = _mm256_loadu_ps(base + k * plane + p);
    transpose8(v);
}

AVX2 static inline __m256d low_to_double(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
AVX2 static inline __m256d high_to_double(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

// 8 or 16 planes read side by side defeat the hardware prefetcher on large tensors: fetch each
// plane's line PREFETCH_AHEAD floats ahead (a hint: an address past a plane does not fault).
#define PREFETCH_AHEAD 128
AVX2 static inline void prefetch_block8(const float *a, long plane, long p) {
    for (int k = 0; k < 8; k++) _mm_prefetch((const char *)(a + k * plane + p), _MM_HINT_T0);
}

// acc[c..c+8) += Σ_p plane values, for the 8 planes at `base`.
AVX2 static void sums_block8_avx2(const float *base, long plane, double *acc) {
    __m256d lo = _mm256_loadu_pd(acc), hi = _mm256_loadu_pd(acc + 4);
    long p = 0;
    for (; p + 8 <= plane; p += 8) {
        __m256 v[8];
        if ((p & 15) == 0) prefetch_block8(base, plane, p + PREFETCH_AHEAD);
        load_block8(base, plane, p, v);
        for (int j = 0; j < 8; j++) { lo = _mm256_add_pd(lo, low_to_double(v[j])); hi = _mm256_add_pd(hi, high_to_double(v[j])); }
    }
    for (; p < plane; p++) {
        const __m256 v = column8(base, plane, p);
        lo = _mm256_add_pd(lo, low_to_double(v)); hi = _mm256_add_pd(hi, high_to_double(v));
    }
    _mm256_storeu_pd(acc, lo); _mm256_storeu_pd(acc + 4, hi);
}

AVX2 static inline void add_square(__m256d *acc, __m256d value, __m256d mean) {
    const __m256d d = _mm256_sub_pd(value, mean);
    *acc = _mm256_add_pd(*acc, _mm256_mul_pd(d, d));
}

AVX2 static void squares_block8_avx2(const float *base, long plane, const double *mean, double *acc) {
    const __m256d mu_lo = _mm256_loadu_pd(mean), mu_hi = _mm256_loadu_pd(mean + 4);
    __m256d lo = _mm256_loadu_pd(acc), hi = _mm256_loadu_pd(acc + 4);
    long p = 0;
    for (; p + 8 <= plane; p += 8) {
        __m256 v[8];
        if ((p & 15) == 0) prefetch_block8(base, plane, p + PREFETCH_AHEAD);
        load_block8(base, plane, p, v);
        for (int j = 0; j < 8; j++) { add_square(&lo, low_to_double(v[j]), mu_lo); add_square(&hi, high_to_double(v[j]), mu_hi); }
    }
    for (; p < plane; p++) {
        const __m256 v = column8(base, plane, p);
        add_square(&lo, low_to_double(v), mu_lo); add_square(&hi, high_to_double(v), mu_hi);
    }
    _mm256_storeu_pd(acc, lo); _mm256_storeu_pd(acc + 4, hi);
}

// One position of the 8 channels: Σ gy and Σ gy·x̂, x̂ = (x − μ)·s in float.
AVX2 static inline void add_gradient(__m256 g, __m256 x, __m256 mu, __m256 s,
                                     __m256d *sum_lo, __m256d *sum_hi, __m256d *norm_lo, __m256d *norm_hi) {
    const __m256 product = _mm256_mul_ps(g, _mm256_mul_ps(_mm256_sub_ps(x, mu), s));
    *sum_lo = _mm256_add_pd(*sum_lo, low_to_double(g)); *sum_hi = _mm256_add_pd(*sum_hi, high_to_double(g));
    *norm_lo = _mm256_add_pd(*norm_lo, low_to_double(product)); *norm_hi = _mm256_add_pd(*norm_hi, high_to_double(product));
}

// total[c..c+8) += (this sample's plane sum, a chain started at 0), for Σ gy and Σ gy·x̂.
AVX2 static void gradient_block8_avx2(const float *gs, const float *xs, long plane, const float *mean,
                                      const float *inverse_std, double *total, double *total_normalized) {
    const __m256 mu = _mm256_loadu_ps(mean), s = _mm256_loadu_ps(inverse_std);
    __m256d sum_lo = _mm256_setzero_pd(), sum_hi = sum_lo, norm_lo = sum_lo, norm_hi = sum_lo;
    long p = 0;
    for (; p + 8 <= plane; p += 8) {
        __m256 g[8], v[8];
        if ((p & 15) == 0) { prefetch_block8(gs, plane, p + PREFETCH_AHEAD); prefetch_block8(xs, plane, p + PREFETCH_AHEAD); }
        load_block8(gs, plane, p, g);
        load_block8(xs, plane, p, v);
        for (int j = 0; j < 8; j++) add_gradient(g[j], v[j], mu, s, &sum_lo, &sum_hi, &norm_lo, &norm_hi);
    }
    for (; p < plane; p++)
        add_gradient(column8(gs, plane, p), column8(xs, plane, p), mu, s, &sum_lo, &sum_hi, &norm_lo, &norm_hi);
    _mm256_storeu_pd(total, _mm256_add_pd(_mm256_loadu_pd(total), sum_lo));
    _mm256_storeu_pd(total + 4, _mm256_add_pd(_mm256_loadu_pd(total + 4), sum_hi));
    _mm256_storeu_pd(total_normalized, _mm256_add_pd(_mm256_loadu_pd(total_normalized), norm_lo));
    _mm256_storeu_pd(total_normalized + 4, _mm256_add_pd(_mm256_loadu_pd(total_normalized + 4), norm_hi));
}

// ---- portable: the same chains, `count` ≤ GROUP channels interleaved ----

static void sums_block(const float *base, long plane, double *acc, long count) {
    double a[GROUP];
    for (long k = 0; k < count; k++) a[k] = acc[k];
    for (long p = 0; p < plane; p++)
        for (long k = 0; k < count; k++) a[k] += (double)base[k * plane + p];
    for (long k = 0; k < count; k++) acc[k] = a[k];
}

static void squares_block(const float *base, long plane, const double *mean, double *acc, long count) {
    double a[GROUP];
    for (long k = 0; k < count; k++) a[k] = acc[k];
    for (long p = 0; p < plane; p++)
        for (long k = 0; k < count; k++) {
            const double d = (double)base[k * plane + p] - mean[k];
            a[k] += d * d;
        }
    for (long k = 0; k < count; k++) acc[k] = a[k];
}

static void gradient_block(const float *gs, const float *xs, long plane, const float *mean, const float *inverse_std,
                           double *total, double *total_normalized, long count) {
    double sum[GROUP] = {0}, sum_normalized[GROUP] = {0};
    for (long p = 0; p < plane; p++)
        for (long k = 0; k < count; k++) {
            const float grad = gs[k * plane + p];
            const float normalized = (xs[k * plane + p] - mean[k]) * inverse_std[k];
            sum[k] += (double)grad;
            sum_normalized[k] += (double)(grad * normalized);
        }
    for (long k = 0; k < count; k++) { total[k] += sum[k]; total_normalized[k] += sum_normalized[k]; }
}

// ---- drivers: samples outer, groups of channels inner ----

void qat_bn_channel_sums(const float *restrict x, double *restrict sums,
                         long batch, long channels, long plane, long c0, long c1) {
    const int avx2 = __builtin_cpu_supports("avx2");
    for (long c = c0; c < c1; c++) sums[c] = 0;
    for (long n = 0; n < batch; n++)
        for (long c = c0; c < c1; c += GROUP) {
            const float *base = x + (n * channels + c) * plane;
            const long count = c1 - c < GROUP ? c1 - c : GROUP;
            if (avx2 && count == GROUP) sums_block8_avx2(base, plane, sums + c);
            else sums_block(base, plane, sums + c, count);
        }
}

void qat_bn_channel_squared_deviations(const float *restrict x, const double *restrict mean,
                                       double *restrict squares,
                                       long batch, long channels, long plane, long c0, long c1) {
    const int avx2 = __builtin_cpu_supports("avx2");
    for (long c = c0; c < c1; c++) squares[c] = 0;
    for (long n = 0; n < batch; n++)
        for (long c = c0; c < c1; c += GROUP) {
            const float *base = x + (n * channels + c) * plane;
            const long count = c1 - c < GROUP ? c1 - c : GROUP;
            if (avx2 && count == GROUP) squares_block8_avx2(base, plane, mean + c, squares + c);
            else squares_block(base, plane, mean + c, squares + c, count);
        }
}

void qat_bn_gradient_sums(const float *restrict gy, const float *restrict x, const float *restrict mean,
                          const float *restrict inverse_std, double *restrict sum_grad,
                          double *restrict sum_grad_normalized,
                          long batch, long channels, long plane, long c0, long c1) {
    const int avx2 = __builtin_cpu_supports("avx2");
    for (long c = c0; c < c1; c++) { sum_grad[c] = 0; sum_grad_normalized[c] = 0; }
    for (long n = 0; n < batch; n++)
        for (long c = c0; c < c1; c += GROUP) {
            const long offset = (n * channels + c) * plane;
            const long count = c1 - c < GROUP ? c1 - c : GROUP;
            if (avx2 && count == GROUP)
                gradient_block8_avx2(gy + offset, x + offset, plane, mean + c, inverse_std + c, sum_grad + c,
                                     sum_grad_normalized + c);
            else
                gradient_block(gy + offset, x + offset, plane, mean + c, inverse_std + c, sum_grad + c,
                               sum_grad_normalized + c, count);
        }
}

void qat_bn_normalize(const float *restrict x, float *restrict y, const float *restrict mean,
                      const float *restrict inverse_std, const float *restrict gamma,
                      const float *restrict beta, long channels, long plane, long q0, long q1) {
    for (long q = q0; q < q1; q++) {
        const long c = q % channels;
        const float mu = mean[c], s = inverse_std[c], g = gamma[c], b = beta[c];
        const float *restrict xs = x + q * plane;
        float *restrict ys = y + q * plane;
        for (long p = 0; p < plane; p++) {
            const float v = (xs[p] - mu) * s;
            ys[p] = g * v + b;
        }
    }
}

void qat_bn_input_grad(const float *restrict gy, const float *restrict x, const float *restrict mean,
                       const float *restrict inverse_std, const float *restrict scale,
                       const float *restrict mean_grad, const float *restrict mean_grad_normalized,
                       float *restrict gx, int overwrite, long channels, long plane, long q0, long q1) {
    for (long q = q0; q < q1; q++) {
        const long c = q % channels;
        const float k = scale[c];
        const float *restrict gs = gy + q * plane;
        float *restrict out = gx + q * plane;
        if (mean_grad) {
            const float mu = mean[c], s = inverse_std[c], mg = mean_grad[c], mgn = mean_grad_normalized[c];
            const float *restrict xs = x + q * plane;
            if (overwrite)
                for (long p = 0; p < plane; p++) out[p] = 0.0f + k * (gs[p] - mg - ((xs[p] - mu) * s) * mgn);
            else
                for (long p = 0; p < plane; p++) out[p] += k * (gs[p] - mg - ((xs[p] - mu) * s) * mgn);
        } else {
            if (overwrite)
                for (long p = 0; p < plane; p++) out[p] = 0.0f + k * gs[p];
            else
                for (long p = 0; p < plane; p++) out[p] += k * gs[p];
        }
    }
}
