// BatchNorm loops (the math is in Sources/QATCore/Ops/BatchNorm.swift). No fused multiply-add:
// every float expression rounds as the Swift reference it replaced, so the bits do not change.
#pragma STDC FP_CONTRACT OFF
#include "batchnorm.h"

// The sums are compiled twice, for AVX2 (more registers for the 8 interleaved chains; AVX2 does
// not include FMA, so the bits stay) and for any x86-64, and the loader picks one per CPU.
#define PER_CPU __attribute__((target_clones("avx2", "default")))

// Channels are walked in groups of this many: one independent Double chain each, interleaved.
#define GROUP 8

// The group bodies are inlined with g = GROUP (a constant: the accumulators stay in registers)
// and once more for the last, partial group.
__attribute__((always_inline)) static inline void
sums_group(const float *restrict x, double *restrict sums, long batch, long channels, long plane,
           long c, const long g) {
    double acc[GROUP] = {0};
    for (long n = 0; n < batch; n++) {
        const float *base = x + (n * channels + c) * plane;
        for (long p = 0; p < plane; p++)
            for (long k = 0; k < g; k++) acc[k] += (double)base[k * plane + p];
    }
    for (long k = 0; k < g; k++) sums[c + k] = acc[k];
}

PER_CPU
void qat_bn_channel_sums(const float *restrict x, double *restrict sums,
                         long batch, long channels, long plane, long c0, long c1) {
    long c = c0;
    for (; c + GROUP <= c1; c += GROUP) sums_group(x, sums, batch, channels, plane, c, GROUP);
    if (c < c1) sums_group(x, sums, batch, channels, plane, c, c1 - c);
}

__attribute__((always_inline)) static inline void
squares_group(const float *restrict x, const double *restrict mean, double *restrict squares,
              long batch, long channels, long plane, long c, const long g) {
    double acc[GROUP] = {0}, mu[GROUP] = {0};
    for (long k = 0; k < g; k++) mu[k] = mean[c + k];
    for (long n = 0; n < batch; n++) {
        const float *base = x + (n * channels + c) * plane;
        for (long p = 0; p < plane; p++)
            for (long k = 0; k < g; k++) {
                const double d = (double)base[k * plane + p] - mu[k];
                acc[k] += d * d;
            }
    }
    for (long k = 0; k < g; k++) squares[c + k] = acc[k];
}

PER_CPU
void qat_bn_channel_squared_deviations(const float *restrict x, const double *restrict mean,
                                       double *restrict squares,
                                       long batch, long channels, long plane, long c0, long c1) {
    long c = c0;
    for (; c + GROUP <= c1; c += GROUP) squares_group(x, mean, squares, batch, channels, plane, c, GROUP);
    if (c < c1) squares_group(x, mean, squares, batch, channels, plane, c, c1 - c);
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

__attribute__((always_inline)) static inline void
gradient_sums_group(const float *restrict gy, const float *restrict x, const float *restrict mean,
                    const float *restrict inverse_std, double *restrict sum_grad,
                    double *restrict sum_grad_normalized, long batch, long channels, long plane,
                    long c, const long g) {
    double total[GROUP] = {0}, total_normalized[GROUP] = {0};
    float mu[GROUP] = {0}, s[GROUP] = {0};
    for (long k = 0; k < g; k++) { mu[k] = mean[c + k]; s[k] = inverse_std[c + k]; }
    for (long n = 0; n < batch; n++) {
        const long base = (n * channels + c) * plane;
        const float *restrict gs = gy + base, *restrict xs = x + base;
        double plane_sum[GROUP] = {0}, plane_sum_normalized[GROUP] = {0};
        for (long p = 0; p < plane; p++)
            for (long k = 0; k < g; k++) {
                const float grad = gs[k * plane + p];
                const float normalized = (xs[k * plane + p] - mu[k]) * s[k];
                plane_sum[k] += (double)grad;
                plane_sum_normalized[k] += (double)(grad * normalized);
            }
        for (long k = 0; k < g; k++) { total[k] += plane_sum[k]; total_normalized[k] += plane_sum_normalized[k]; }
    }
    for (long k = 0; k < g; k++) { sum_grad[c + k] = total[k]; sum_grad_normalized[c + k] = total_normalized[k]; }
}

PER_CPU
void qat_bn_gradient_sums(const float *restrict gy, const float *restrict x, const float *restrict mean,
                          const float *restrict inverse_std, double *restrict sum_grad,
                          double *restrict sum_grad_normalized,
                          long batch, long channels, long plane, long c0, long c1) {
    long c = c0;
    for (; c + GROUP <= c1; c += GROUP)
        gradient_sums_group(gy, x, mean, inverse_std, sum_grad, sum_grad_normalized, batch, channels, plane, c, GROUP);
    if (c < c1)
        gradient_sums_group(gy, x, mean, inverse_std, sum_grad, sum_grad_normalized, batch, channels, plane, c, c1 - c);
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
