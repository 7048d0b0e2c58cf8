// ULQ fake quantization (declarations in include/fake_quant.h). No fused multiply-add and the
// same operations in the same order as the Swift loops these replaced, so the bits do not change:
// t = x / s; max then min as Swift's max(t, low) and min(·, high) (a NaN passes through);
// (v + 1.5·2^23) − 1.5·2^23 rounds half to even for |v| < 2^22.
#pragma STDC FP_CONTRACT OFF
#include "fake_quant.h"

#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static const float magic = 12582912.0f;   // 1.5 · 2^23

static inline float clamp_round(float t, float low, float high) {
    float v = low >= t ? low : t;
    v = high < v ? high : v;
    return (v + magic) - magic;
}

static void forward_portable(const float *x, float *y, size_t n, float s, float low, float high) {
    for (size_t i = 0; i < n; i++) y[i] = clamp_round(x[i] / s, low, high) * s;
}

// One element of the backward, added into lane `lane`.
static inline void backward_element(float xi, float gi, float *gx, int overwrite, float s, float lower, float upper,
                                    float *residual, float *above, float *below) {
    if (overwrite && gx) *gx = 0.0f;
    if (xi > upper) {
        *above += gi;
    } else if (xi < lower) {
        *below += gi;
    } else {
        const float t = xi / s;
        *residual += gi * (((t + magic) - magic) - t);
        if (gx) *gx += gi;
    }
}

static void finish(const float residual[8], const float above[8], const float below[8], double sums[3]) {
    sums[0] = sums[1] = sums[2] = 0.0;
    for (int lane = 0; lane < 8; lane++) {
        sums[0] += (double)residual[lane];
        sums[1] += (double)above[lane];
        sums[2] += (double)below[lane];
    }
}

static void backward_portable(const float *restrict x, const float *restrict g, float *restrict gx, size_t n,
                              float s, float lower, float upper, int overwrite, double sums[3]) {
    float residual[8] = {0}, above[8] = {0}, below[8] = {0};
    const size_t vectorEnd = n - n % 8;
    for (size_t i = 0; i < vectorEnd; i++) {
        // The vector paths' lane arithmetic: every lane adds its masked value (+0 when masked).
        const int lane = (int)(i % 8);
        const float xi = x[i], gi = g[i];
        const int isAbove = xi > upper, isBelow = xi < lower, outside = isAbove | isBelow;
        const float t = xi / s;
        const float r = ((t + magic) - magic) - t;
        residual[lane] += outside ? 0.0f : gi * r;
        above[lane] += isAbove ? gi : 0.0f;
        below[lane] += isBelow ? gi : 0.0f;
        if (gx) gx[i] = (overwrite ? 0.0f : gx[i]) + (outside ? 0.0f : gi);
    }
    for (size_t i = vectorEnd; i < n; i++)
        backward_element(x[i], g[i], gx ? gx + i : NULL, overwrite, s, lower, upper, &residual[0], &above[0], &below[0]);
    finish(residual, above, below, sums);
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2")))
#define AVX512 __attribute__((target("avx512f,avx2")))

AVX2 static void forward_avx2(const float *x, float *y, size_t n, float s, float low, float high) {
    const __m256 vs = _mm256_set1_ps(s), vlow = _mm256_set1_ps(low), vhigh = _mm256_set1_ps(high);
    const __m256 vmagic = _mm256_set1_ps(magic);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 t = _mm256_div_ps(_mm256_loadu_ps(x + i), vs);
        // max_ps(a, b) returns b when either is NaN: (low, t) gives t for a NaN t, as Swift's max.
        __m256 v = _mm256_max_ps(vlow, t);
        v = _mm256_min_ps(vhigh, v);
        v = _mm256_sub_ps(_mm256_add_ps(v, vmagic), vmagic);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v, vs));
    }
    forward_portable(x + i, y + i, n - i, s, low, high);
}

AVX512 static void forward_avx512(const float *x, float *y, size_t n, float s, float low, float high) {
    const __m512 vs = _mm512_set1_ps(s), vlow = _mm512_set1_ps(low), vhigh = _mm512_set1_ps(high);
    const __m512 vmagic = _mm512_set1_ps(magic);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 t = _mm512_div_ps(_mm512_loadu_ps(x + i), vs);
        __m512 v = _mm512_max_ps(vlow, t);
        v = _mm512_min_ps(vhigh, v);
        v = _mm512_sub_ps(_mm512_add_ps(v, vmagic), vmagic);
        _mm512_storeu_ps(y + i, _mm512_mul_ps(v, vs));
    }
    forward_avx2(x + i, y + i, n - i, s, low, high);
}

// Eight elements at i: the masked contributions, added into the eight-lane sums.
AVX2 static inline void backward8_avx2(const float *x, const float *g, float *gx, int overwrite,
                                       __m256 vs, __m256 vlower, __m256 vupper, __m256 vmagic,
                                       __m256 *residual, __m256 *above, __m256 *below) {
    const __m256 xv = _mm256_loadu_ps(x), gv = _mm256_loadu_ps(g);
    const __m256 isAbove = _mm256_cmp_ps(xv, vupper, _CMP_GT_OQ), isBelow = _mm256_cmp_ps(xv, vlower, _CMP_LT_OQ);
    const __m256 outside = _mm256_or_ps(isAbove, isBelow);
    const __m256 t = _mm256_div_ps(xv, vs);
    const __m256 r = _mm256_sub_ps(_mm256_sub_ps(_mm256_add_ps(t, vmagic), vmagic), t);
    *residual = _mm256_add_ps(*residual, _mm256_andnot_ps(outside, _mm256_mul_ps(gv, r)));
    *above = _mm256_add_ps(*above, _mm256_and_ps(isAbove, gv));
    *below = _mm256_add_ps(*below, _mm256_and_ps(isBelow, gv));
    if (gx) {
        const __m256 previous = overwrite ? _mm256_setzero_ps() : _mm256_loadu_ps(gx);
        _mm256_storeu_ps(gx, _mm256_add_ps(previous, _mm256_andnot_ps(outside, gv)));
    }
}

AVX2 static void backward_avx2(const float *restrict x, const float *restrict g, float *restrict gx, size_t n,
                               float s, float lower, float upper, int overwrite, double sums[3]) {
    const __m256 vs = _mm256_set1_ps(s), vlower = _mm256_set1_ps(lower), vupper = _mm256_set1_ps(upper);
    const __m256 vmagic = _mm256_set1_ps(magic);
    __m256 residual = _mm256_setzero_ps(), above = _mm256_setzero_ps(), below = _mm256_setzero_ps();
    const size_t vectorEnd = n - n % 8;
    for (size_t i = 0; i < vectorEnd; i += 8)
        backward8_avx2(x + i, g + i, gx ? gx + i : NULL, overwrite, vs, vlower, vupper, vmagic, &residual, &above, &below);
    float r[8], a[8], b[8];
    _mm256_storeu_ps(r, residual); _mm256_storeu_ps(a, above); _mm256_storeu_ps(b, below);
    for (size_t i = vectorEnd; i < n; i++)
        backward_element(x[i], g[i], gx ? gx + i : NULL, overwrite, s, lower, upper, &r[0], &a[0], &b[0]);
    finish(r, a, b, sums);
}

// Lanes 8…15 (AVX-512F alone has no 32-bit-lane extract of a half).
AVX512 static inline __m256 high_half(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }

// Sixteen elements per step, the masked contributions computed at once and then added into the
// eight-lane sums low half first, so every lane adds the same values in the same order.
AVX512 static void backward_avx512(const float *restrict x, const float *restrict g, float *restrict gx, size_t n,
                                   float s, float lower, float upper, int overwrite, double sums[3]) {
    const __m512 vs = _mm512_set1_ps(s), vlower = _mm512_set1_ps(lower), vupper = _mm512_set1_ps(upper);
    const __m512 vmagic = _mm512_set1_ps(magic);
    __m256 residual = _mm256_setzero_ps(), above = _mm256_setzero_ps(), below = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 xv = _mm512_loadu_ps(x + i), gv = _mm512_loadu_ps(g + i);
        const __mmask16 isAbove = _mm512_cmp_ps_mask(xv, vupper, _CMP_GT_OQ);
        const __mmask16 isBelow = _mm512_cmp_ps_mask(xv, vlower, _CMP_LT_OQ);
        const __mmask16 inside = (__mmask16)~(isAbove | isBelow);
        const __m512 t = _mm512_div_ps(xv, vs);
        const __m512 r = _mm512_sub_ps(_mm512_sub_ps(_mm512_add_ps(t, vmagic), vmagic), t);
        const __m512 residualTerms = _mm512_maskz_mul_ps(inside, gv, r);
        const __m512 aboveTerms = _mm512_maskz_mov_ps(isAbove, gv), belowTerms = _mm512_maskz_mov_ps(isBelow, gv);
        residual = _mm256_add_ps(residual, _mm512_castps512_ps256(residualTerms));
        residual = _mm256_add_ps(residual, high_half(residualTerms));
        above = _mm256_add_ps(above, _mm512_castps512_ps256(aboveTerms));
        above = _mm256_add_ps(above, high_half(aboveTerms));
        below = _mm256_add_ps(below, _mm512_castps512_ps256(belowTerms));
        below = _mm256_add_ps(below, high_half(belowTerms));
        if (gx) {
            const __m512 previous = overwrite ? _mm512_setzero_ps() : _mm512_loadu_ps(gx + i);
            _mm512_storeu_ps(gx + i, _mm512_add_ps(previous, _mm512_maskz_mov_ps(inside, gv)));
        }
    }
    const __m256 vs8 = _mm256_set1_ps(s), vlower8 = _mm256_set1_ps(lower), vupper8 = _mm256_set1_ps(upper);
    const __m256 vmagic8 = _mm256_set1_ps(magic);
    const size_t vectorEnd = n - n % 8;
    for (; i < vectorEnd; i += 8)
        backward8_avx2(x + i, g + i, gx ? gx + i : NULL, overwrite, vs8, vlower8, vupper8, vmagic8, &residual, &above, &below);
    float rs[8], as[8], bs[8];
    _mm256_storeu_ps(rs, residual); _mm256_storeu_ps(as, above); _mm256_storeu_ps(bs, below);
    for (; i < n; i++)
        backward_element(x[i], g[i], gx ? gx + i : NULL, overwrite, s, lower, upper, &rs[0], &as[0], &bs[0]);
    finish(rs, as, bs, sums);
}

static int cpu_isa(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
}
#else
static int cpu_isa(void) { return 0; }
#endif

static int forced_isa = -1;

static int ulq_isa(void) {
    static int cpu = -1;
    if (cpu < 0) cpu = cpu_isa();
    return forced_isa >= 0 && forced_isa <= cpu ? forced_isa : cpu;
}

int qat_ulq_isa(void) { return ulq_isa(); }

int qat_ulq_force_isa(int isa) {
    forced_isa = isa;
    return ulq_isa();
}

void qat_ulq_forward(const float *x, float *y, size_t n, float s, float low, float high) {
#if defined(__x86_64__)
    switch (ulq_isa()) {
    case 2: forward_avx512(x, y, n, s, low, high); return;
    case 1: forward_avx2(x, y, n, s, low, high); return;
    default: break;
    }
#endif
    forward_portable(x, y, n, s, low, high);
}

void qat_ulq_backward_block(const float *restrict x, const float *restrict g, float *restrict gx, size_t n,
                            float s, float lower, float upper, int overwrite, double sums[3]) {
#if defined(__x86_64__)
    switch (ulq_isa()) {
    case 2: backward_avx512(x, g, gx, n, s, lower, upper, overwrite, sums); return;
    case 1: backward_avx2(x, g, gx, n, s, lower, upper, overwrite, sums); return;
    default: break;
    }
#endif
    backward_portable(x, g, gx, n, s, lower, upper, overwrite, sums);
}
