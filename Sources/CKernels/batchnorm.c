// BatchNorm loops (the math is in Sources/QATCore/Ops/BatchNorm.swift). No fused multiply-add:
// every float expression rounds as the Swift reference it replaced, so the bits do not change.
#pragma STDC FP_CONTRACT OFF
#include "batchnorm.h"
#include "batchnorm_clamp_mask.h"
#include "batchnorm_sums.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline double fold_lanes(const double l[LANES]) {
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

// ---- portable: the reference of the order above ----

static double plane_sum(const float *v, long plane) {
    double l[LANES] = {0};
    for (long p = 0; p < plane; p++) l[p % LANES] += (double)v[p];
    return fold_lanes(l);
}

static double plane_squares(const float *v, long plane, double mean) {
    double l[LANES] = {0};
    for (long p = 0; p < plane; p++) {
        const double d = (double)v[p] - mean;
        l[p % LANES] += d * d;
    }
    return fold_lanes(l);
}

// Σ dy and Σ dy·x̂ over one plane, x̂ = (x − μ)·s in float; dy = gy, or with a fused clamp
// (gamma non-NULL) the clamp's mask of gy through γ·x̂ + β.
static void plane_gradient(const float *gs, const float *xs, long plane, float mu, float s, const float *gamma,
                           const float *beta, const qat_bn_clamp *clamp, double *sum, double *sum_normalized) {
    double l[LANES] = {0}, ln[LANES] = {0};
    for (long p = 0; p < plane; p++) {
        const float normalized = (xs[p] - mu) * s;
        const float g = gamma ? clamp_masked_gradient(gs[p], normalized, *gamma, *beta, clamp->pass_above, clamp->pass_max)
                              : gs[p];
        l[p % LANES] += (double)g;
        ln[p % LANES] += (double)(g * normalized);
    }
    *sum = fold_lanes(l);
    *sum_normalized = fold_lanes(ln);
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2")))

// ---- AVX2: the 8 lanes as two ymm (l0–l3, l4–l7), PLANES planes side by side ----

AVX2 static inline double fold256(__m256d lo, __m256d hi) {
    const __m256d a = _mm256_add_pd(lo, hi);
    const __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}

// fold256 of 4 planes at once, written to out[0..3]: the same adds in the same order (a = lo + hi
// holds l0+l4, l1+l5, l2+l6, l3+l7; then (a0 + a2) + (a1 + a3)), the planes side by side in lanes
// instead of one horizontal fold each.
AVX2 static inline void fold4_avx2(const __m256d lo[4], const __m256d hi[4], double *out) {
    const __m256d a0 = _mm256_add_pd(lo[0], hi[0]), a1 = _mm256_add_pd(lo[1], hi[1]);
    const __m256d a2 = _mm256_add_pd(lo[2], hi[2]), a3 = _mm256_add_pd(lo[3], hi[3]);
    // u01 = [a0_0 + a0_2, a0_1 + a0_3, a1_0 + a1_2, a1_1 + a1_3], u23 likewise.
    const __m256d u01 = _mm256_add_pd(_mm256_permute2f128_pd(a0, a1, 0x20), _mm256_permute2f128_pd(a0, a1, 0x31));
    const __m256d u23 = _mm256_add_pd(_mm256_permute2f128_pd(a2, a3, 0x20), _mm256_permute2f128_pd(a2, a3, 0x31));
    // [plane 0, plane 2, plane 1, plane 3], then in order.
    const __m256d sums = _mm256_add_pd(_mm256_unpacklo_pd(u01, u23), _mm256_unpackhi_pd(u01, u23));
    _mm256_storeu_pd(out, _mm256_permute4x64_pd(sums, 0xd8));
}

// The mask of positions [p, p + 8) inside the plane (all ones for a full row).
AVX2 static inline __m256i mask8_avx2(long p, long plane) {
    const long n = plane - p >= 8 ? 8 : plane - p;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Planes of 8 or more positions summed one at a time (1: two sequential streams, or one, for the
// prefetcher; ~7 % of mobilenetv2-tiny's BatchNorm forward on a Zen 3) or 4 side by side (0, the
// previous loops; kept for the tests). See qat_bn_avx2_one_plane.
static int sums_one_plane = 1;

AVX2 static inline __m256d low_to_double(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
AVX2 static inline __m256d high_to_double(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

// Full rows take plain loads; the partial last row a masked one (zeros past the end add +0).
// Padded positions add +0: the square is masked to 0 before the add.
AVX2 static inline __m256d add_square_avx2(__m256d l, __m256d v, __m256d mean, __m256d keep) {
    const __m256d d = _mm256_sub_pd(v, mean);
    return _mm256_add_pd(l, _mm256_and_pd(_mm256_mul_pd(d, d), keep));
}

AVX2 static inline __m256d add_square_full_avx2(__m256d l, __m256d v, __m256d mean) {
    const __m256d d = _mm256_sub_pd(v, mean);
    return _mm256_add_pd(l, _mm256_mul_pd(d, d));
}

// One plane of at least 8 positions: two sequential loads streams' worth of work for the
// prefetcher, as the gradient sums (GRADIENT_PLANES).
AVX2 static double sum_plane_avx2(const float *v, long plane) {
    const long full = plane & ~7L;
    __m256d lo = _mm256_setzero_pd(), hi = lo;
    for (long p = 0; p < full; p += 8) {
        const __m256 x = _mm256_loadu_ps(v + p);
        lo = _mm256_add_pd(lo, low_to_double(x)); hi = _mm256_add_pd(hi, high_to_double(x));
    }
    if (full < plane) {
        const __m256 x = _mm256_maskload_ps(v + full, mask8_avx2(full, plane));
        lo = _mm256_add_pd(lo, low_to_double(x)); hi = _mm256_add_pd(hi, high_to_double(x));
    }
    return fold256(lo, hi);
}

AVX2 static void sums_avx2(const float *base, long plane, long planes, double *out) {
    const long full = plane & ~7L;
    long q = 0;
    if (full && sums_one_plane) {
        for (; q < planes; q++) out[q] = sum_plane_avx2(base + q * plane, plane);
        return;
    }
    for (; q < planes; q += PLANES) {
        const int count = planes - q < PLANES ? (int)(planes - q) : PLANES;
        __m256d lo[PLANES], hi[PLANES];
        for (int k = 0; k < PLANES; k++) lo[k] = hi[k] = _mm256_setzero_pd();
#define ADD(k, v) (lo[k] = _mm256_add_pd(lo[k], low_to_double(v)), hi[k] = _mm256_add_pd(hi[k], high_to_double(v)))
        if (count == PLANES) {
            for (long p = 0; p < full; p += 8)
                for (int k = 0; k < PLANES; k++) ADD(k, _mm256_loadu_ps(base + (q + k) * plane + p));
        } else {
            for (long p = 0; p < full; p += 8)
                for (int k = 0; k < count; k++) ADD(k, _mm256_loadu_ps(base + (q + k) * plane + p));
        }
        if (full < plane)
            for (int k = 0; k < count; k++) ADD(k, _mm256_maskload_ps(base + (q + k) * plane + full, mask8_avx2(full, plane)));
#undef ADD
        if (count == PLANES) fold4_avx2(lo, hi, out + q);
        else for (int k = 0; k < count; k++) out[q + k] = fold256(lo[k], hi[k]);
    }
}

AVX2 static double squares_plane_avx2(const float *v, long plane, double mean) {
    const long full = plane & ~7L;
    const __m256d mu = _mm256_set1_pd(mean);
    __m256d lo = _mm256_setzero_pd(), hi = lo;
    for (long p = 0; p < full; p += 8) {
        const __m256 x = _mm256_loadu_ps(v + p);
        lo = add_square_full_avx2(lo, low_to_double(x), mu); hi = add_square_full_avx2(hi, high_to_double(x), mu);
    }
    if (full < plane) {
        const __m256i m = mask8_avx2(full, plane);
        const __m256d keep_lo = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m)));
        const __m256d keep_hi = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1)));
        const __m256 x = _mm256_maskload_ps(v + full, m);
        lo = add_square_avx2(lo, low_to_double(x), mu, keep_lo); hi = add_square_avx2(hi, high_to_double(x), mu, keep_hi);
    }
    return fold256(lo, hi);
}

AVX2 static void squares_avx2(const float *base, long plane, long planes, const double *mean, double *out) {
    const long full = plane & ~7L;
    long q = 0;
    if (full && sums_one_plane) {
        for (; q < planes; q++) out[q] = squares_plane_avx2(base + q * plane, plane, mean[q]);
        return;
    }
    for (; q < planes; q += PLANES) {
        const int count = planes - q < PLANES ? (int)(planes - q) : PLANES;
        __m256d lo[PLANES], hi[PLANES], mu[PLANES];
        for (int k = 0; k < PLANES; k++) {
            lo[k] = hi[k] = _mm256_setzero_pd();
            mu[k] = _mm256_set1_pd(mean[q + (k < count ? k : 0)]);
        }
#define ADD(k, v) (lo[k] = add_square_full_avx2(lo[k], low_to_double(v), mu[k]), \
                   hi[k] = add_square_full_avx2(hi[k], high_to_double(v), mu[k]))
        if (count == PLANES) {
            for (long p = 0; p < full; p += 8)
                for (int k = 0; k < PLANES; k++) ADD(k, _mm256_loadu_ps(base + (q + k) * plane + p));
        } else {
            for (long p = 0; p < full; p += 8)
                for (int k = 0; k < count; k++) ADD(k, _mm256_loadu_ps(base + (q + k) * plane + p));
        }
#undef ADD
        if (full < plane) {
            // The 32-bit mask widened to 64-bit lanes of all ones (sign extension).
            const __m256i m = mask8_avx2(full, plane);
            const __m256d keep_lo = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m)));
            const __m256d keep_hi = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1)));
            for (int k = 0; k < count; k++) {
                const __m256 v = _mm256_maskload_ps(base + (q + k) * plane + full, m);
                lo[k] = add_square_avx2(lo[k], low_to_double(v), mu[k], keep_lo);
                hi[k] = add_square_avx2(hi[k], high_to_double(v), mu[k], keep_hi);
            }
        }
        if (count == PLANES) fold4_avx2(lo, hi, out + q);
        else for (int k = 0; k < count; k++) out[q + k] = fold256(lo[k], hi[k]);
    }
}

// One row of 8 positions of one plane: x̂, the (clamp-masked) gradient, and the four Double adds.
// tail: a partial row (masked loads; a padded position's product may be −0 (0 · negative x̂),
// so it is masked to +0).
AVX2 INLINE void add_gradient_avx2(const float *gs, const float *xs, long p, long plane, int tail, __m256 mu, __m256 s,
                                   int clamped, __m256 ga, __m256 be, __m256 ab, __m256 mx, __m256d *lo, __m256d *hi, __m256d *nlo, __m256d *nhi) {
    const __m256i m = tail ? mask8_avx2(p, plane) : _mm256_set1_epi32(-1);
    const __m256 x = tail ? _mm256_maskload_ps(xs + p, m) : _mm256_loadu_ps(xs + p);
    const __m256 normalized = _mm256_mul_ps(_mm256_sub_ps(x, mu), s);
    __m256 g = tail ? _mm256_maskload_ps(gs + p, m) : _mm256_loadu_ps(gs + p);   // padded: +0, masked or not
    if (clamped) g = clamp_masked_gradient256(g, normalized, ga, be, ab, mx);
    __m256 product = _mm256_mul_ps(g, normalized);
    if (tail) product = _mm256_and_ps(product, _mm256_castsi256_ps(m));
    *lo = _mm256_add_pd(*lo, low_to_double(g)); *hi = _mm256_add_pd(*hi, high_to_double(g));
    *nlo = _mm256_add_pd(*nlo, low_to_double(product)); *nhi = _mm256_add_pd(*nhi, high_to_double(product));
}

// Planes side by side in the gradient sums: 1. Each plane then reads two purely sequential streams
// (gy and x), which the hardware prefetcher follows far better than 4 or 8 interleaved ones (on a
// Zen 3, 4 planes: 8.4 ms of mobilenetv2-tiny's BatchNorm backward, 2: 8.3, 1: 6.7); the four
// accumulators of one plane still cover the add latency, as a row is ~14 instructions. (4 planes
// also spilled their 16 accumulators out of the 16 ymm registers.)
#define GRADIENT_PLANES 1

// Full rows take plain loads (no mask, no product masking); the partial last row is apart.
AVX2 INLINE void gradient_avx2(const float *gs, const float *xs, long plane, long planes, const float *mean,
                               const float *inverse_std, const float *gamma, const float *beta,
                               const qat_bn_clamp *clamp, double *out, double *out_normalized) {
    const __m256 ab = _mm256_set1_ps(gamma ? clamp->pass_above : 0), mx = _mm256_set1_ps(gamma ? clamp->pass_max : 0);
    const long full = plane & ~7L;
    const int clamped = gamma != NULL;
    long q = 0;
    if (full == 0)   // planes of fewer than 8 positions: one partial row each, so 4 planes and one fold4
        for (; q + 4 <= planes; q += 4) {
            __m256d lo[4], hi[4], nlo[4], nhi[4];
            for (int k = 0; k < 4; k++) {
                lo[k] = hi[k] = nlo[k] = nhi[k] = _mm256_setzero_pd();
                const long c = q + k;
                const __m256 mu = _mm256_set1_ps(mean[c]), s = _mm256_set1_ps(inverse_std[c]);
                const __m256 ga = clamped ? _mm256_set1_ps(gamma[c]) : mu, be = clamped ? _mm256_set1_ps(beta[c]) : mu;
                add_gradient_avx2(gs + c * plane, xs + c * plane, 0, plane, 1, mu, s, clamped, ga, be, ab, mx, &lo[k], &hi[k],
                                  &nlo[k], &nhi[k]);
            }
            fold4_avx2(lo, hi, out + q);
            fold4_avx2(nlo, nhi, out_normalized + q);
        }
    for (; q < planes; q += GRADIENT_PLANES) {
        const int count = planes - q < GRADIENT_PLANES ? (int)(planes - q) : GRADIENT_PLANES;
        __m256d lo[GRADIENT_PLANES], hi[GRADIENT_PLANES], nlo[GRADIENT_PLANES], nhi[GRADIENT_PLANES];
        __m256 mu[GRADIENT_PLANES], s[GRADIENT_PLANES], ga[GRADIENT_PLANES], be[GRADIENT_PLANES];
        for (int k = 0; k < GRADIENT_PLANES; k++) {
            lo[k] = hi[k] = nlo[k] = nhi[k] = _mm256_setzero_pd();
            const long c = q + (k < count ? k : 0);
            mu[k] = _mm256_set1_ps(mean[c]); s[k] = _mm256_set1_ps(inverse_std[c]);
            ga[k] = clamped ? _mm256_set1_ps(gamma[c]) : mu[k]; be[k] = clamped ? _mm256_set1_ps(beta[c]) : mu[k];
        }
#define ROW(k, p, tail)                                                                                                \
    add_gradient_avx2(gs + (q + (k)) * plane, xs + (q + (k)) * plane, p, plane, tail, mu[k], s[k], clamped, ga[k], be[k], \
                      ab, mx, &lo[k], &hi[k], &nlo[k], &nhi[k])
        if (count == GRADIENT_PLANES) {
            for (long p = 0; p < full; p += 8)
#pragma clang loop unroll(full)
                for (int k = 0; k < GRADIENT_PLANES; k++) ROW(k, p, 0);
        } else {
            for (long p = 0; p < full; p += 8) ROW(0, p, 0);
        }
        if (full < plane)
            for (int k = 0; k < count; k++) ROW(k, full, 1);
#undef ROW
        for (int k = 0; k < count; k++) { out[q + k] = fold256(lo[k], hi[k]); out_normalized[q + k] = fold256(nlo[k], nhi[k]); }
    }
}

AVX2 static void gradient_avx2_plain(const float *gs, const float *xs, long plane, long planes, const float *mean,
                                     const float *inverse_std, double *out, double *out_normalized) {
    gradient_avx2(gs, xs, plane, planes, mean, inverse_std, NULL, NULL, NULL, out, out_normalized);
}

AVX2 static void gradient_avx2_clamp(const float *gs, const float *xs, long plane, long planes, const float *mean,
                                     const float *inverse_std, const float *gamma, const float *beta,
                                     const qat_bn_clamp *clamp, double *out, double *out_normalized) {
    gradient_avx2(gs, xs, plane, planes, mean, inverse_std, gamma, beta, clamp, out, out_normalized);
}


static int cpu_isa(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#else
static int cpu_isa(void) { return 0; }
#endif

static int forced_isa = -1;

int qat_bn_isa(void) {
    static int cpu = -1;
    if (cpu < 0) cpu = cpu_isa();
    return forced_isa >= 0 && forced_isa <= cpu ? forced_isa : cpu;
}

int qat_bn_avx2_one_plane(int on) {
#if defined(__x86_64__)
    const int previous = sums_one_plane;
    sums_one_plane = on != 0;
    return previous;
#else
    (void)on;
    return 0;
#endif
}

int qat_bn_force_isa(int isa) {
    forced_isa = isa;
    return qat_bn_isa();
}

// ---- one sample's planes of channels [c0, c1) → per-plane sums ----

static void plane_sums(const float *base, long plane, long planes, double *out) {
#if defined(__x86_64__)
    switch (qat_bn_isa()) {
    case 2: {
        const long done = plane <= SMALL_PLANE ? qat_bn512_small_sums(base, plane, planes, out) : 0;
        qat_bn512_sums(base + done * plane, plane, planes - done, out + done);
        return;
    }
    case 1: sums_avx2(base, plane, planes, out); return;
    }
#endif
    for (long q = 0; q < planes; q++) out[q] = plane_sum(base + q * plane, plane);
}

static void plane_squared_deviations(const float *base, long plane, long planes, const double *mean, double *out) {
#if defined(__x86_64__)
    switch (qat_bn_isa()) {
    case 2: {
        const long done = plane <= SMALL_PLANE ? qat_bn512_small_squares(base, plane, planes, mean, out) : 0;
        qat_bn512_squares(base + done * plane, plane, planes - done, mean + done, out + done);
        return;
    }
    case 1: squares_avx2(base, plane, planes, mean, out); return;
    }
#endif
    for (long q = 0; q < planes; q++) out[q] = plane_squares(base + q * plane, plane, mean[q]);
}

// gamma, beta, clamp: the fused clamp's, or NULL.
static void plane_gradients(const float *gs, const float *xs, long plane, long planes, const float *mean,
                            const float *inverse_std, const float *gamma, const float *beta,
                            const qat_bn_clamp *clamp, double *out, double *out_normalized) {
#if defined(__x86_64__)
    switch (qat_bn_isa()) {
    case 2: {
        const long done = plane <= SMALL_PLANE
            ? qat_bn512_small_gradient(gs, xs, plane, planes, mean, inverse_std, gamma, beta, clamp, out, out_normalized) : 0;
        gs += done * plane; xs += done * plane; mean += done; inverse_std += done; out += done; out_normalized += done;
        if (gamma)
            qat_bn512_gradient_clamp(gs, xs, plane, planes - done, mean, inverse_std, gamma + done, beta + done, clamp, out,
                               out_normalized);
        else
            qat_bn512_gradient_plain(gs, xs, plane, planes - done, mean, inverse_std, out, out_normalized);
        return;
    }
    case 1:
        if (gamma) gradient_avx2_clamp(gs, xs, plane, planes, mean, inverse_std, gamma, beta, clamp, out, out_normalized);
        else gradient_avx2_plain(gs, xs, plane, planes, mean, inverse_std, out, out_normalized);
        return;
    }
#endif
    for (long q = 0; q < planes; q++)
        plane_gradient(gs + q * plane, xs + q * plane, plane, mean[q], inverse_std[q], gamma ? gamma + q : NULL,
                       gamma ? beta + q : NULL, clamp, out + q, out_normalized + q);
}

// ---- drivers: planes [q0, q1) in runs of one sample's consecutive channels ----

void qat_bn_plane_sums(const float *restrict x, double *restrict sums, long channels, long plane, long q0, long q1) {
    for (long q = q0; q < q1;) {
        const long c = q % channels, count = channels - c < q1 - q ? channels - c : q1 - q;
        plane_sums(x + q * plane, plane, count, sums + q);
        q += count;
    }
}

void qat_bn_plane_squared_deviations(const float *restrict x, const double *restrict mean, double *restrict squares,
                                     long channels, long plane, long q0, long q1) {
    for (long q = q0; q < q1;) {
        const long c = q % channels, count = channels - c < q1 - q ? channels - c : q1 - q;
        plane_squared_deviations(x + q * plane, plane, count, mean + c, squares + q);
        q += count;
    }
}

void qat_bn_plane_gradient_sums(const float *restrict gy, const float *restrict x, const float *restrict mean,
                                const float *restrict inverse_std, double *restrict sums,
                                double *restrict sums_normalized, long channels, long plane, long q0, long q1) {
    for (long q = q0; q < q1;) {
        const long c = q % channels, count = channels - c < q1 - q ? channels - c : q1 - q;
        plane_gradients(gy + q * plane, x + q * plane, plane, count, mean + c, inverse_std + c, NULL, NULL, NULL,
                        sums + q, sums_normalized + q);
        q += count;
    }
}

void qat_bn_clamp_plane_gradient_sums(const float *restrict gy, const float *restrict x, const float *restrict mean,
                                      const float *restrict inverse_std, const float *restrict gamma,
                                      const float *restrict beta, const qat_bn_clamp *clamp, double *restrict sums,
                                      double *restrict sums_normalized, long channels, long plane, long q0, long q1) {
    for (long q = q0; q < q1;) {
        const long c = q % channels, count = channels - c < q1 - q ? channels - c : q1 - q;
        plane_gradients(gy + q * plane, x + q * plane, plane, count, mean + c, inverse_std + c, gamma + c, beta + c,
                        clamp, sums + q, sums_normalized + q);
        q += count;
    }
}

void qat_bn_channel_totals(const double *restrict planes, double *restrict totals, long batch, long channels) {
    for (long c = 0; c < channels; c++) totals[c] = 0;
    for (long n = 0; n < batch; n++)
        for (long c = 0; c < channels; c++) totals[c] += planes[n * channels + c];
}
