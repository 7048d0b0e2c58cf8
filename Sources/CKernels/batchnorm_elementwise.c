// BatchNorm's element-wise passes (the math is in Sources/QATCore/Ops/BatchNorm.swift): the
// normalize of the forward and the input gradient of the backward, optionally with the clamp after
// BatchNorm (ReLU, ReLU6, Clip(+0, b): qat_bn_clamp) folded in. No fused multiply-add: every float expression rounds as the Swift
// reference it replaced, so the bits do not change.
#pragma STDC FP_CONTRACT OFF
#include "batchnorm.h"
#include "batchnorm_clamp_mask.h"

// What the input gradient reads per channel: mean_grad NULL in eval (then dx = k·dy), gamma and
// beta NULL without a fused clamp (then dy = gy, else dy = the clamp's mask of gy through γ·x̂ + β,
// passing where above < γ·x̂ + β ≤ max).
typedef struct {
    const float *mean, *inverse_std, *scale, *mean_grad, *mean_grad_normalized, *gamma, *beta;
    float above, max;
} input_grad_channels;

// Element-wise passes on planes of at most 16 positions: one vector per plane would leave the
// per-plane setup (and masked tails) dominant, so the parameters are spread per (channel,
// position) once and a run of one sample's consecutive planes is walked as one flat array.
// Same expressions per element: the same bits.
#define SPREAD_MAX 1024

// params[i] = the channel value of element i of channels [0, channels), `plane` positions each.
static void spread(const float *restrict values, long channels, long plane, float *restrict params) {
    for (long c = 0; c < channels; c++)
        for (long p = 0; p < plane; p++) params[c * plane + p] = values[c];
}

// The input gradient's per-channel values spread per element (those the pass reads).
typedef struct {
    float k[SPREAD_MAX], mu[SPREAD_MAX], s[SPREAD_MAX], mg[SPREAD_MAX], mgn[SPREAD_MAX], ga[SPREAD_MAX], be[SPREAD_MAX];
} spread_input_grad_channels;

static void spread_input_grad(const input_grad_channels *ch, long channels, long plane, spread_input_grad_channels *p) {
    const int training = ch->mean_grad != NULL, clamped = ch->gamma != NULL;
    spread(ch->scale, channels, plane, p->k);
    if (training || clamped) { spread(ch->mean, channels, plane, p->mu); spread(ch->inverse_std, channels, plane, p->s); }
    if (training) { spread(ch->mean_grad, channels, plane, p->mg); spread(ch->mean_grad_normalized, channels, plane, p->mgn); }
    if (clamped) { spread(ch->gamma, channels, plane, p->ga); spread(ch->beta, channels, plane, p->be); }
}


#if defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512vl,avx2")))

// Element-wise passes, 16 floats a vector: the same float expressions as the portable loops.
// The clamp as qat_relu6_forward / qat_clip_forward: v < 0 ? 0 : v, then that > top ? top : that
// (−0 and NaN pass through; top = +∞ is ReLU).
AVX512 static inline __m512 clamp512(__m512 v, __m512 top) {
    const __m512 raised = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps());
    return _mm512_mask_mov_ps(raised, _mm512_cmp_ps_mask(raised, top, _CMP_GT_OQ), top);
}

AVX512 static void normalize_plane_512(const float *xs, float *ys, long plane, float mean, float inverse_std,
                                       float gamma, float beta, int clamped, float top) {
    const __m512 mu = _mm512_set1_ps(mean), s = _mm512_set1_ps(inverse_std), g = _mm512_set1_ps(gamma),
                 b = _mm512_set1_ps(beta), t = _mm512_set1_ps(top);
    for (long p = 0; p < plane; p += 16) {
        const __mmask16 m = p + 16 <= plane ? 0xffff : (__mmask16)((1u << (plane - p)) - 1);
        const __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xs + p), mu), s);
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(g, v), b);
        _mm512_mask_storeu_ps(ys + p, m, clamped ? clamp512(y, t) : y);
    }
}

AVX512 static void input_grad_plane_512(const float *gs, const float *xs, float *out, long plane, int overwrite,
                                        const input_grad_channels *ch, long c) {
    const int training = ch->mean_grad != NULL, clamped = ch->gamma != NULL;
    const __m512 k = _mm512_set1_ps(ch->scale[c]), zero = _mm512_setzero_ps();
    const __m512 above = _mm512_set1_ps(ch->above), max = _mm512_set1_ps(ch->max);
    const __m512 mu = _mm512_set1_ps(ch->mean[c]), s = _mm512_set1_ps(ch->inverse_std[c]);
    const __m512 mg = training ? _mm512_set1_ps(ch->mean_grad[c]) : zero;
    const __m512 mgn = training ? _mm512_set1_ps(ch->mean_grad_normalized[c]) : zero;
    const __m512 gamma = clamped ? _mm512_set1_ps(ch->gamma[c]) : zero, beta = clamped ? _mm512_set1_ps(ch->beta[c]) : zero;
    for (long p = 0; p < plane; p += 16) {
        const __mmask16 m = p + 16 <= plane ? 0xffff : (__mmask16)((1u << (plane - p)) - 1);
        __m512 g = _mm512_maskz_loadu_ps(m, gs + p);
        const __m512 normalized = training || clamped ? _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xs + p), mu), s) : zero;
        if (clamped) g = clamp_masked_gradient512(g, normalized, gamma, beta, above, max);
        const __m512 value = training ? _mm512_mul_ps(k, _mm512_sub_ps(_mm512_sub_ps(g, mg), _mm512_mul_ps(normalized, mgn)))
                                      : _mm512_mul_ps(k, g);
        const __m512 base = overwrite ? zero : _mm512_maskz_loadu_ps(m, out + p);
        _mm512_mask_storeu_ps(out + p, m, _mm512_add_ps(base, value));
    }
}

static inline __mmask16 mask16(long i, long count) {
    return i + 16 <= count ? 0xffff : (__mmask16)((1u << (count - i)) - 1);
}

AVX512 static void normalize_small_512(const float *x, float *y, const float *mean, const float *inverse_std,
                                       const float *gamma, const float *beta, long channels, long plane,
                                       long q0, long q1, int clamped, float top) {
    const __m512 t = _mm512_set1_ps(top);
    float mu[SPREAD_MAX], s[SPREAD_MAX], g[SPREAD_MAX], b[SPREAD_MAX];
    spread(mean, channels, plane, mu); spread(inverse_std, channels, plane, s);
    spread(gamma, channels, plane, g); spread(beta, channels, plane, b);
    for (long q = q0; q < q1;) {
        const long c = q % channels, planes = channels - c < q1 - q ? channels - c : q1 - q;
        const long count = planes * plane, first = c * plane;
        const float *xs = x + q * plane;
        float *ys = y + q * plane;
        for (long i = 0; i < count; i += 16) {
            const __mmask16 m = mask16(i, count);
            const __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xs + i), _mm512_maskz_loadu_ps(m, mu + first + i)),
                                           _mm512_maskz_loadu_ps(m, s + first + i));
            const __m512 out = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, g + first + i), v),
                                             _mm512_maskz_loadu_ps(m, b + first + i));
            _mm512_mask_storeu_ps(ys + i, m, clamped ? clamp512(out, t) : out);
        }
        q += planes;
    }
}

AVX512 static void input_grad_small_512(const float *gy, const float *x, const input_grad_channels *ch, float *gx,
                                        int overwrite, long channels, long plane, long q0, long q1) {
    const int training = ch->mean_grad != NULL, clamped = ch->gamma != NULL;
    spread_input_grad_channels p;
    spread_input_grad(ch, channels, plane, &p);
    const float *k = p.k, *mu = p.mu, *s = p.s, *mg = p.mg, *mgn = p.mgn, *ga = p.ga, *be = p.be;
    for (long q = q0; q < q1;) {
        const long c = q % channels, planes = channels - c < q1 - q ? channels - c : q1 - q;
        const long count = planes * plane, first = c * plane;
        const float *gs = gy + q * plane, *xs = x + q * plane;
        float *out = gx + q * plane;
        for (long i = 0; i < count; i += 16) {
            const __mmask16 m = mask16(i, count);
            const long e = first + i;
            __m512 g = _mm512_maskz_loadu_ps(m, gs + i);
            const __m512 kv = _mm512_maskz_loadu_ps(m, k + e);
            const __m512 normalized = training || clamped
                ? _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xs + i), _mm512_maskz_loadu_ps(m, mu + e)),
                                _mm512_maskz_loadu_ps(m, s + e))
                : _mm512_setzero_ps();
            if (clamped)
                g = clamp_masked_gradient512(g, normalized, _mm512_maskz_loadu_ps(m, ga + e), _mm512_maskz_loadu_ps(m, be + e),
                                             _mm512_set1_ps(ch->above), _mm512_set1_ps(ch->max));
            const __m512 value = training
                ? _mm512_mul_ps(kv, _mm512_sub_ps(_mm512_sub_ps(g, _mm512_maskz_loadu_ps(m, mg + e)),
                                                  _mm512_mul_ps(normalized, _mm512_maskz_loadu_ps(m, mgn + e))))
                : _mm512_mul_ps(kv, g);
            const __m512 base = overwrite ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, out + i);
            _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(base, value));
        }
        q += planes;
    }
}
#endif

// The portable loops: the reference of the vector paths (same expressions, same bits). Each is
// compiled twice, for the baseline ISA and (on x86-64) for AVX2, where clang vectorises it 8 floats
// wide instead of 4: an element's value is the same sequence of float operations either way.
#define BN_INLINE static inline __attribute__((always_inline))

// out[p] = 0 + value, or out[p] + value, for p in [0, n): two loops rather than a test per
// element, which clang compiles to a masked load of out even when overwriting.
#define OVERWRITE_OR_ADD(n, value)                                  \
    do {                                                            \
        if (overwrite)                                              \
            for (long p = 0; p < (n); p++) out[p] = 0.0f + (value); \
        else                                                        \
            for (long p = 0; p < (n); p++) out[p] += (value);       \
    } while (0)

// The small-plane walk of normalize_small_512 / input_grad_small_512 as plain loops, for AVX2:
// a run of one sample's consecutive planes is one flat array with the parameters spread per
// element, so clang vectorises across planes instead of over a few positions. Each element's
// value is the same sequence of float operations as in normalize_loops / input_grad_loops.
BN_INLINE void normalize_spread_loops(const float *restrict x, float *restrict y, const float *restrict mean,
                                      const float *restrict inverse_std, const float *restrict gamma,
                                      const float *restrict beta, long channels, long plane, long q0, long q1,
                                      int clamped, float top) {
    float mu[SPREAD_MAX], s[SPREAD_MAX], g[SPREAD_MAX], b[SPREAD_MAX];
    spread(mean, channels, plane, mu); spread(inverse_std, channels, plane, s);
    spread(gamma, channels, plane, g); spread(beta, channels, plane, b);
    for (long q = q0; q < q1;) {
        const long c = q % channels, planes = channels - c < q1 - q ? channels - c : q1 - q;
        const long count = planes * plane, first = c * plane;
        const float *restrict xs = x + q * plane;
        float *restrict ys = y + q * plane;
        const float *restrict m = mu + first, *restrict sv = s + first, *restrict gv = g + first, *restrict bv = b + first;
        if (clamped) {
            for (long i = 0; i < count; i++) {
                const float out = gv[i] * ((xs[i] - m[i]) * sv[i]) + bv[i];
                const float raised = out < 0.0f ? 0.0f : out;
                ys[i] = raised > top ? top : raised;
            }
        } else {
            for (long i = 0; i < count; i++) ys[i] = gv[i] * ((xs[i] - m[i]) * sv[i]) + bv[i];
        }
        q += planes;
    }
}

BN_INLINE void input_grad_spread_loops(const float *restrict gy, const float *restrict x, const input_grad_channels *ch,
                                       float *restrict gx, int overwrite, long channels, long plane, long q0, long q1) {
    const int training = ch->mean_grad != NULL, clamped = ch->gamma != NULL;
    const float above = ch->above, max = ch->max;
    spread_input_grad_channels p;
    spread_input_grad(ch, channels, plane, &p);
    const float *k = p.k, *mu = p.mu, *s = p.s, *mg = p.mg, *mgn = p.mgn, *ga = p.ga, *be = p.be;
    for (long q = q0; q < q1;) {
        const long c = q % channels, planes = channels - c < q1 - q ? channels - c : q1 - q;
        const long count = planes * plane, e = c * plane;
        const float *restrict gs = gy + q * plane, *restrict xs = x + q * plane;
        float *restrict out = gx + q * plane;
#define NORMALIZED ((xs[p] - mu[e + p]) * s[e + p])
#define MASKED clamp_masked_gradient(gs[p], NORMALIZED, ga[e + p], be[e + p], above, max)
        if (clamped && training) {
            OVERWRITE_OR_ADD(count, k[e + p] * (MASKED - mg[e + p] - NORMALIZED * mgn[e + p]));
        } else if (clamped) {
            OVERWRITE_OR_ADD(count, k[e + p] * MASKED);
        } else if (training) {
#undef MASKED
#undef NORMALIZED
            if (overwrite)
                for (long i = 0; i < count; i++)
                    out[i] = 0.0f + k[e + i] * (gs[i] - mg[e + i] - ((xs[i] - mu[e + i]) * s[e + i]) * mgn[e + i]);
            else
                for (long i = 0; i < count; i++)
                    out[i] += k[e + i] * (gs[i] - mg[e + i] - ((xs[i] - mu[e + i]) * s[e + i]) * mgn[e + i]);
        } else {
            if (overwrite)
                for (long i = 0; i < count; i++) out[i] = 0.0f + k[e + i] * gs[i];
            else
                for (long i = 0; i < count; i++) out[i] += k[e + i] * gs[i];
        }
        q += planes;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void normalize_spread_avx2(const float *restrict x, float *restrict y,
                                                                  const float *restrict mean,
                                                                  const float *restrict inverse_std,
                                                                  const float *restrict gamma, const float *restrict beta,
                                                                  long channels, long plane, long q0, long q1,
                                                                  int clamped, float top) {
    normalize_spread_loops(x, y, mean, inverse_std, gamma, beta, channels, plane, q0, q1, clamped, top);
}

__attribute__((target("avx2"))) static void input_grad_spread_avx2(const float *restrict gy, const float *restrict x,
                                                                   const input_grad_channels *ch, float *restrict gx,
                                                                   int overwrite, long channels, long plane, long q0,
                                                                   long q1) {
    input_grad_spread_loops(gy, x, ch, gx, overwrite, channels, plane, q0, q1);
}
#endif


BN_INLINE void normalize_loops(const float *restrict x, float *restrict y, const float *restrict mean,
                               const float *restrict inverse_std, const float *restrict gamma,
                               const float *restrict beta, long channels, long plane, long q0, long q1, int clamped,
                               float top) {
    for (long q = q0; q < q1; q++) {
        const long c = q % channels;
        const float mu = mean[c], s = inverse_std[c], g = gamma[c], b = beta[c];
        const float *restrict xs = x + q * plane;
        float *restrict ys = y + q * plane;
        // Two loops rather than a test per element: the clamped one then compiles to max/min
        // (x86's maxps(0, v) is v < 0 ? 0 : v exactly, NaN and −0 included; minps(top, r) is
        // r > top ? top : r).
        if (clamped) {
            for (long p = 0; p < plane; p++) {
                const float out = g * ((xs[p] - mu) * s) + b;
                const float raised = out < 0.0f ? 0.0f : out;
                ys[p] = raised > top ? top : raised;
            }
        } else {
            for (long p = 0; p < plane; p++) ys[p] = g * ((xs[p] - mu) * s) + b;
        }
    }
}

static void normalize_portable(const float *restrict x, float *restrict y, const float *restrict mean,
                               const float *restrict inverse_std, const float *restrict gamma,
                               const float *restrict beta, long channels, long plane, long q0, long q1, int clamped,
                               float top) {
    normalize_loops(x, y, mean, inverse_std, gamma, beta, channels, plane, q0, q1, clamped, top);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void normalize_avx2(const float *restrict x, float *restrict y, const float *restrict mean,
                                                           const float *restrict inverse_std, const float *restrict gamma,
                                                           const float *restrict beta, long channels, long plane, long q0,
                                                           long q1, int clamped, float top) {
    normalize_loops(x, y, mean, inverse_std, gamma, beta, channels, plane, q0, q1, clamped, top);
}
#endif

void qat_bn_normalize(const float *restrict x, float *restrict y, const float *restrict mean,
                      const float *restrict inverse_std, const float *restrict gamma,
                      const float *restrict beta, long channels, long plane, long q0, long q1,
                      const qat_bn_clamp *clamp) {
    const int clamped = clamp != NULL;
    const float top = clamped ? clamp->top : 0.0f;
#if defined(__x86_64__)
    if (qat_bn_isa() == 2 && plane <= 16 && channels * plane <= SPREAD_MAX) {
        normalize_small_512(x, y, mean, inverse_std, gamma, beta, channels, plane, q0, q1, clamped, top);
        return;
    }
    if (qat_bn_isa() == 2) {
        for (long q = q0; q < q1; q++) {
            const long c = q % channels;
            normalize_plane_512(x + q * plane, y + q * plane, plane, mean[c], inverse_std[c], gamma[c], beta[c], clamped, top);
        }
        return;
    }
    if (qat_bn_isa() == 1 && plane <= 16 && channels * plane <= SPREAD_MAX) {
        normalize_spread_avx2(x, y, mean, inverse_std, gamma, beta, channels, plane, q0, q1, clamped, top);
        return;
    }
    if (qat_bn_isa() == 1) {
        normalize_avx2(x, y, mean, inverse_std, gamma, beta, channels, plane, q0, q1, clamped, top);
        return;
    }
#endif
    normalize_portable(x, y, mean, inverse_std, gamma, beta, channels, plane, q0, q1, clamped, top);
}

// The input gradient's portable loops, with the fused clamp (compiled twice, as normalize_loops).
BN_INLINE void input_grad_clamp_plane(const float *restrict gs, const float *restrict xs, float *restrict out, long plane,
                                  int overwrite, const input_grad_channels *ch, long c) {
    const float k = ch->scale[c], mu = ch->mean[c], s = ch->inverse_std[c], ga = ch->gamma[c], be = ch->beta[c];
    const float above = ch->above, max = ch->max;
    // x̂ and the masked gradient at p (the same float expressions in each loop below).
#define NORMALIZED ((xs[p] - mu) * s)
#define MASKED clamp_masked_gradient(gs[p], NORMALIZED, ga, be, above, max)
    if (ch->mean_grad) {
        const float mg = ch->mean_grad[c], mgn = ch->mean_grad_normalized[c];
        OVERWRITE_OR_ADD(plane, k * (MASKED - mg - NORMALIZED * mgn));
    } else {
        OVERWRITE_OR_ADD(plane, k * MASKED);
    }
#undef MASKED
#undef NORMALIZED
}

BN_INLINE void input_grad_loops(const float *restrict gy, const float *restrict x, const input_grad_channels *ch,
                                float *restrict gx, int overwrite, long channels, long plane, long q0, long q1) {
    for (long q = q0; q < q1; q++) {
        const long c = q % channels;
        const float k = ch->scale[c];
        const float *restrict gs = gy + q * plane;
        float *restrict out = gx + q * plane;
        if (ch->gamma) {
            input_grad_clamp_plane(gs, x + q * plane, out, plane, overwrite, ch, c);
        } else if (ch->mean_grad) {
            const float mu = ch->mean[c], s = ch->inverse_std[c], mg = ch->mean_grad[c], mgn = ch->mean_grad_normalized[c];
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

static void input_grad_portable(const float *restrict gy, const float *restrict x, const input_grad_channels *ch,
                                float *restrict gx, int overwrite, long channels, long plane, long q0, long q1) {
    input_grad_loops(gy, x, ch, gx, overwrite, channels, plane, q0, q1);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void input_grad_avx2(const float *restrict gy, const float *restrict x,
                                                            const input_grad_channels *ch, float *restrict gx,
                                                            int overwrite, long channels, long plane, long q0, long q1) {
    input_grad_loops(gy, x, ch, gx, overwrite, channels, plane, q0, q1);
}
#endif

static void input_grad(const float *restrict gy, const float *restrict x, const input_grad_channels *ch,
                       float *restrict gx, int overwrite, long channels, long plane, long q0, long q1) {
#if defined(__x86_64__)
    if (qat_bn_isa() == 2 && plane <= 16 && channels * plane <= SPREAD_MAX) {
        input_grad_small_512(gy, x, ch, gx, overwrite, channels, plane, q0, q1);
        return;
    }
    if (qat_bn_isa() == 2) {
        for (long q = q0; q < q1; q++)
            input_grad_plane_512(gy + q * plane, x + q * plane, gx + q * plane, plane, overwrite, ch, q % channels);
        return;
    }
    if (qat_bn_isa() == 1 && plane <= 16 && channels * plane <= SPREAD_MAX) {
        input_grad_spread_avx2(gy, x, ch, gx, overwrite, channels, plane, q0, q1);
        return;
    }
    if (qat_bn_isa() == 1) {
        input_grad_avx2(gy, x, ch, gx, overwrite, channels, plane, q0, q1);
        return;
    }
#endif
    input_grad_portable(gy, x, ch, gx, overwrite, channels, plane, q0, q1);
}

void qat_bn_input_grad(const float *restrict gy, const float *restrict x, const float *restrict mean,
                       const float *restrict inverse_std, const float *restrict scale,
                       const float *restrict mean_grad, const float *restrict mean_grad_normalized,
                       float *restrict gx, int overwrite, long channels, long plane, long q0, long q1) {
    const input_grad_channels ch = {mean, inverse_std, scale, mean_grad, mean_grad_normalized, NULL, NULL, 0.0f, 0.0f};
    input_grad(gy, x, &ch, gx, overwrite, channels, plane, q0, q1);
}

void qat_bn_clamp_input_grad(const float *restrict gy, const float *restrict x, const float *restrict mean,
                             const float *restrict inverse_std, const float *restrict gamma,
                             const float *restrict beta, const qat_bn_clamp *clamp, const float *restrict scale,
                             const float *restrict mean_grad, const float *restrict mean_grad_normalized,
                             float *restrict gx, int overwrite, long channels, long plane, long q0, long q1) {
    const input_grad_channels ch = {mean, inverse_std, scale, mean_grad, mean_grad_normalized, gamma, beta,
                                    clamp->pass_above, clamp->pass_max};
    input_grad(gy, x, &ch, gx, overwrite, channels, plane, q0, q1);
}
