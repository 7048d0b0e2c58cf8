// The AVX-512 loops of BatchNorm's per-plane Double sums (batchnorm.c dispatches to them; the
// order they keep is in batchnorm_sums.h). No fused multiply-add, as in batchnorm.c.
#pragma STDC FP_CONTRACT OFF
#include "batchnorm_sums.h"
#include "batchnorm_clamp_mask.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512vl,avx2")))

// ---- AVX-512: one zmm of 8 Double lanes per plane, PLANES planes side by side ----

AVX512 static inline double fold512(__m512d l) {
    const __m256d a = _mm256_add_pd(_mm512_castpd512_pd256(l), _mm512_extractf64x4_pd(l, 1));
    const __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}

AVX512 void qat_bn512_sums(const float *base, long plane, long planes, double *out) {
    const long full = plane & ~7L;
    const __mmask8 tail = (__mmask8)((1u << (plane - full)) - 1);   // past the end: zeros
    long q = 0;
    for (; q + PLANES <= planes; q += PLANES) {
        __m512d l[PLANES];
        for (int k = 0; k < PLANES; k++) l[k] = _mm512_setzero_pd();
        for (long p = 0; p < full; p += 8)
            for (int k = 0; k < PLANES; k++)
                l[k] = _mm512_add_pd(l[k], _mm512_cvtps_pd(_mm256_loadu_ps(base + (q + k) * plane + p)));
        if (tail)
            for (int k = 0; k < PLANES; k++)
                l[k] = _mm512_add_pd(l[k], _mm512_cvtps_pd(_mm256_maskz_loadu_ps(tail, base + (q + k) * plane + full)));
        for (int k = 0; k < PLANES; k++) out[q + k] = fold512(l[k]);
    }
    for (; q < planes; q++) {
        __m512d l = _mm512_setzero_pd();
        for (long p = 0; p < full; p += 8) l = _mm512_add_pd(l, _mm512_cvtps_pd(_mm256_loadu_ps(base + q * plane + p)));
        if (tail) l = _mm512_add_pd(l, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(tail, base + q * plane + full)));
        out[q] = fold512(l);
    }
}

AVX512 static inline __m512d add_square512(__m512d l, __m256 v, __m512d mean) {
    const __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(v), mean);
    return _mm512_add_pd(l, _mm512_mul_pd(d, d));
}

// Padded positions must add +0, not (0 − μ)²: they are masked out of the add.
AVX512 static inline __m512d add_square512_masked(__m512d l, __m256 v, __m512d mean, __mmask8 m) {
    const __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(v), mean);
    return _mm512_mask_add_pd(l, m, l, _mm512_mul_pd(d, d));
}

// The planes of channels c .. c + planes − 1 (consecutive), with their channels' means.
AVX512 void qat_bn512_squares(const float *base, long plane, long planes, const double *mean, double *out) {
    const long full = plane & ~7L;
    const __mmask8 tail = (__mmask8)((1u << (plane - full)) - 1);
    long q = 0;
    for (; q + PLANES <= planes; q += PLANES) {
        __m512d l[PLANES], mu[PLANES];
        for (int k = 0; k < PLANES; k++) { l[k] = _mm512_setzero_pd(); mu[k] = _mm512_set1_pd(mean[q + k]); }
        for (long p = 0; p < full; p += 8)
            for (int k = 0; k < PLANES; k++) l[k] = add_square512(l[k], _mm256_loadu_ps(base + (q + k) * plane + p), mu[k]);
        if (tail)
            for (int k = 0; k < PLANES; k++)
                l[k] = add_square512_masked(l[k], _mm256_maskz_loadu_ps(tail, base + (q + k) * plane + full), mu[k], tail);
        for (int k = 0; k < PLANES; k++) out[q + k] = fold512(l[k]);
    }
    for (; q < planes; q++) {
        __m512d l = _mm512_setzero_pd();
        const __m512d mu = _mm512_set1_pd(mean[q]);
        for (long p = 0; p < full; p += 8) l = add_square512(l, _mm256_loadu_ps(base + q * plane + p), mu);
        if (tail) l = add_square512_masked(l, _mm256_maskz_loadu_ps(tail, base + q * plane + full), mu, tail);
        out[q] = fold512(l);
    }
}

// Padded positions load gy = 0 (Σ gy adds +0, masked or not); their product may be −0, so it
// is masked out. With clamp, gy is the clamp's mask of it through γ·x̂ + β (ga, be; bounds ab, mx).
AVX512 INLINE void add_gradient512(const float *gs, const float *xs, long p, __mmask8 m, __m256 mu, __m256 s, int clamped,
                                   __m256 ga, __m256 be, __m256 ab, __m256 mx, __m512d *sum, __m512d *sum_normalized) {
    const __m256 x = _mm256_maskz_loadu_ps(m, xs + p), normalized = _mm256_mul_ps(_mm256_sub_ps(x, mu), s);
    __m256 g = _mm256_maskz_loadu_ps(m, gs + p);
    if (clamped) g = clamp_masked_gradient256(g, normalized, ga, be, ab, mx);
    const __m256 product = _mm256_mul_ps(g, normalized);
    *sum = _mm512_add_pd(*sum, _mm512_cvtps_pd(g));
    *sum_normalized = _mm512_mask_add_pd(*sum_normalized, m, *sum_normalized, _mm512_cvtps_pd(product));
}

// gamma, beta: the fused clamp's per-plane γ and β, or NULL (always inlined, so each caller's
// loops are compiled for its case).
AVX512 INLINE void gradient_512(const float *gs, const float *xs, long plane, long planes, const float *mean,
                                const float *inverse_std, const float *gamma, const float *beta,
                                const qat_bn_clamp *clamp, double *out, double *out_normalized) {
    const long full = plane & ~7L;
    const __mmask8 tail = (__mmask8)((1u << (plane - full)) - 1);
    const int clamped = gamma != NULL;
    const __m256 ab = _mm256_set1_ps(clamped ? clamp->pass_above : 0), mx = _mm256_set1_ps(clamped ? clamp->pass_max : 0);
    long q = 0;
    for (; q + PLANES <= planes; q += PLANES) {
        __m512d l[PLANES], ln[PLANES];
        __m256 mu[PLANES], s[PLANES], ga[PLANES], be[PLANES];
        for (int k = 0; k < PLANES; k++) {
            l[k] = ln[k] = _mm512_setzero_pd();
            mu[k] = _mm256_set1_ps(mean[q + k]); s[k] = _mm256_set1_ps(inverse_std[q + k]);
            ga[k] = clamped ? _mm256_set1_ps(gamma[q + k]) : mu[k]; be[k] = clamped ? _mm256_set1_ps(beta[q + k]) : mu[k];
        }
        for (long p = 0; p < full; p += 8)
            for (int k = 0; k < PLANES; k++)
                add_gradient512(gs + (q + k) * plane, xs + (q + k) * plane, p, 0xff, mu[k], s[k], clamped, ga[k], be[k],
                                ab, mx, &l[k], &ln[k]);
        if (tail)
            for (int k = 0; k < PLANES; k++)
                add_gradient512(gs + (q + k) * plane, xs + (q + k) * plane, full, tail, mu[k], s[k], clamped, ga[k], be[k],
                                ab, mx, &l[k], &ln[k]);
        for (int k = 0; k < PLANES; k++) { out[q + k] = fold512(l[k]); out_normalized[q + k] = fold512(ln[k]); }
    }
    for (; q < planes; q++) {
        __m512d l = _mm512_setzero_pd(), ln = l;
        const __m256 mu = _mm256_set1_ps(mean[q]), s = _mm256_set1_ps(inverse_std[q]);
        const __m256 ga = clamped ? _mm256_set1_ps(gamma[q]) : mu, be = clamped ? _mm256_set1_ps(beta[q]) : mu;
        for (long p = 0; p < full; p += 8)
            add_gradient512(gs + q * plane, xs + q * plane, p, 0xff, mu, s, clamped, ga, be, ab, mx, &l, &ln);
        if (tail) add_gradient512(gs + q * plane, xs + q * plane, full, tail, mu, s, clamped, ga, be, ab, mx, &l, &ln);
        out[q] = fold512(l); out_normalized[q] = fold512(ln);
    }
}


// Each case compiled apart: the loops without the clamp stay as they were.
AVX512 void qat_bn512_gradient_plain(const float *gs, const float *xs, long plane, long planes, const float *mean,
                                      const float *inverse_std, double *out, double *out_normalized) {
    gradient_512(gs, xs, plane, planes, mean, inverse_std, NULL, NULL, NULL, out, out_normalized);
}

AVX512 void qat_bn512_gradient_clamp(const float *gs, const float *xs, long plane, long planes, const float *mean,
                                      const float *inverse_std, const float *gamma, const float *beta,
                                      const qat_bn_clamp *clamp, double *out, double *out_normalized) {
    gradient_512(gs, xs, plane, planes, mean, inverse_std, gamma, beta, clamp, out, out_normalized);
}

// ---- AVX-512, planes of at most SMALL_PLANE positions: 8 planes a block, one zmm lane per plane ----
// Folding one zmm per plane would cost more than its few adds. Instead the 8 planes (at most 32
// floats) are loaded into two zmm, register j holds lane j of the 8 planes (position p of each
// plane picked by a permute), and the fold is the same tree across registers: the same bits as
// one plane at a time.

AVX512 static inline __m512d fold_registers(const __m512d l[LANES]) {
    return _mm512_add_pd(_mm512_add_pd(_mm512_add_pd(l[0], l[4]), _mm512_add_pd(l[2], l[6])),
                         _mm512_add_pd(_mm512_add_pd(l[1], l[5]), _mm512_add_pd(l[3], l[7])));
}

// The 8 planes at `base` (8·plane ≤ 32 floats) as two zmm, and position p of each plane picked out.
typedef struct { __m512 low, high; } small_block;

AVX512 static inline small_block load_small_block(const float *base, long plane) {
    const long n = 8 * plane;
    const __mmask16 low = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
    const __mmask16 high = n <= 16 ? 0 : n >= 32 ? 0xffff : (__mmask16)((1u << (n - 16)) - 1);
    return (small_block){_mm512_maskz_loadu_ps(low, base), _mm512_maskz_loadu_ps(high, base + 16)};
}

AVX512 static inline __m256 position_of_planes(small_block b, long plane, long p) {
    const __m512i index = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0),
                                                              _mm512_set1_epi32((int)plane)),
                                           _mm512_set1_epi32((int)p));
    return _mm512_castps512_ps256(_mm512_permutex2var_ps(b.low, index, b.high));
}

AVX512 long qat_bn512_small_sums(const float *base, long plane, long planes, double *out) {
    long q = 0;
    for (; q + 8 <= planes; q += 8) {
        __m512d l[LANES];
        for (int j = 0; j < LANES; j++) l[j] = _mm512_setzero_pd();
        const small_block b = load_small_block(base + q * plane, plane);
        for (long p = 0; p < plane; p++) l[p] = _mm512_add_pd(l[p], _mm512_cvtps_pd(position_of_planes(b, plane, p)));
        _mm512_storeu_pd(out + q, fold_registers(l));
    }
    return q;
}

AVX512 long qat_bn512_small_squares(const float *base, long plane, long planes, const double *mean, double *out) {
    long q = 0;
    for (; q + 8 <= planes; q += 8) {
        const __m512d mu = _mm512_loadu_pd(mean + q);
        __m512d l[LANES];
        for (int j = 0; j < LANES; j++) l[j] = _mm512_setzero_pd();
        const small_block b = load_small_block(base + q * plane, plane);
        for (long p = 0; p < plane; p++) {
            const __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(position_of_planes(b, plane, p)), mu);
            l[p] = _mm512_add_pd(l[p], _mm512_mul_pd(d, d));
        }
        _mm512_storeu_pd(out + q, fold_registers(l));
    }
    return q;
}

AVX512 long qat_bn512_small_gradient(const float *gs, const float *xs, long plane, long planes, const float *mean,
                                      const float *inverse_std, const float *gamma, const float *beta,
                                      const qat_bn_clamp *clamp, double *out, double *out_normalized) {
    const __m256 ab = _mm256_set1_ps(gamma ? clamp->pass_above : 0), mx = _mm256_set1_ps(gamma ? clamp->pass_max : 0);
    long q = 0;
    for (; q + 8 <= planes; q += 8) {
        const __m256 mu = _mm256_loadu_ps(mean + q), s = _mm256_loadu_ps(inverse_std + q);
        const __m256 ga = gamma ? _mm256_loadu_ps(gamma + q) : mu, be = gamma ? _mm256_loadu_ps(beta + q) : mu;
        __m512d l[LANES], ln[LANES];
        for (int j = 0; j < LANES; j++) l[j] = ln[j] = _mm512_setzero_pd();
        const small_block gb = load_small_block(gs + q * plane, plane), xb = load_small_block(xs + q * plane, plane);
        for (long p = 0; p < plane; p++) {
            const __m256 x = position_of_planes(xb, plane, p), normalized = _mm256_mul_ps(_mm256_sub_ps(x, mu), s);
            __m256 g = position_of_planes(gb, plane, p);
            if (gamma) g = clamp_masked_gradient256(g, normalized, ga, be, ab, mx);
            const __m256 product = _mm256_mul_ps(g, normalized);
            l[p] = _mm512_add_pd(l[p], _mm512_cvtps_pd(g));
            ln[p] = _mm512_add_pd(ln[p], _mm512_cvtps_pd(product));
        }
        _mm512_storeu_pd(out + q, fold_registers(l));
        _mm512_storeu_pd(out_normalized + q, fold_registers(ln));
    }
    return q;
}
#endif
