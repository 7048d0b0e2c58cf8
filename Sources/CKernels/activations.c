// Element-wise activations. Choices are bit masks over values computed unconditionally, so
// the loops vectorise; no fused multiply-add, so every value rounds as
// the Swift loops these replaced did.
#pragma STDC FP_CONTRACT OFF
#include <math.h>
#include <stdint.h>
#include "activations.h"

// gx = 0 + value (overwrite) or gx += value for i in [0, n), `value` being what the statements
// `body` compute from element i.
#define STORE_GRADIENT(body)                                                                   \
    do {                                                                                       \
        if (overwrite) { for (size_t i = 0; i < n; i++) { float value; body; gx[i] = 0.0f + value; } } \
        else { for (size_t i = 0; i < n; i++) { float value; body; gx[i] += value; } }        \
    } while (0)

// v where `keep` (0 or 1), +0 elsewhere; and a where `take_a`, b elsewhere. Bit masks rather than
// ?: so the loops vectorise as plain and/or (clang's cost model turns ?: on loads into branches).
static inline float keep_or_zero(int keep, float v) {
    union { float f; uint32_t u; } bits = { v };
    bits.u &= -(uint32_t)keep;
    return bits.f;
}
static inline float choose(int take_a, float a, float b) {
    union { float f; uint32_t u; } x = { a }, y = { b };
    const uint32_t mask = -(uint32_t)take_a;
    x.u = (x.u & mask) | (y.u & ~mask);
    return x.f;
}

void qat_relu_backward_into(const float *restrict y, const float *restrict gy, float *restrict gx,
                            size_t n, int overwrite) {
    STORE_GRADIENT(value = keep_or_zero(y[i] > 0.0f, gy[i]));
}

void qat_relu6_forward(const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float v = x[i];
        y[i] = v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);   // NaN fails both tests and passes through
    }
}

void qat_relu6_backward(const float *restrict y, const float *restrict gy, float *restrict gx,
                        size_t n, int overwrite) {
    STORE_GRADIENT(value = keep_or_zero((y[i] > 0.0f) & (y[i] < 6.0f), gy[i]));
}

void qat_clip_forward(const float *restrict x, float *restrict y, size_t n, float low, float high) {
    for (size_t i = 0; i < n; i++) {
        const float raised = x[i] < low ? low : x[i];
        y[i] = raised > high ? high : raised;
    }
}

void qat_clip_backward(const float *restrict x, const float *restrict gy, float *restrict gx,
                       size_t n, float low, float high, int overwrite) {
    STORE_GRADIENT(value = keep_or_zero((x[i] >= low) & (x[i] <= high), gy[i]));
}

void qat_leaky_relu_forward(const float *restrict x, float *restrict y, size_t n, float slope) {
    for (size_t i = 0; i < n; i++) { const float v = x[i]; y[i] = v > 0.0f ? v : v * slope; }
}

void qat_leaky_relu_backward(const float *restrict x, const float *restrict gy, float *restrict gx,
                             size_t n, float slope, int overwrite) {
    STORE_GRADIENT(value = choose(x[i] > 0.0f, gy[i], gy[i] * slope));
}

void qat_sigmoid_forward(const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

void qat_sigmoid_backward(const float *restrict y, const float *restrict gy, float *restrict gx,
                          size_t n, int overwrite) {
    STORE_GRADIENT(value = gy[i] * y[i] * (1.0f - y[i]));
}

void qat_hard_sigmoid_forward(const float *restrict x, float *restrict y, size_t n, float alpha, float beta) {
    for (size_t i = 0; i < n; i++) {
        const float t = alpha * x[i] + beta;
        y[i] = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    }
}

void qat_hard_sigmoid_backward(const float *restrict y, const float *restrict gy, float *restrict gx,
                               size_t n, float alpha, int overwrite) {
    STORE_GRADIENT(value = keep_or_zero((y[i] > 0.0f) & (y[i] < 1.0f), alpha * gy[i]));
}

void qat_hard_swish_forward(const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float v = x[i], shifted = v + 3.0f;
        y[i] = v * (shifted < 0.0f ? 0.0f : (shifted > 6.0f ? 6.0f : shifted)) / 6.0f;
    }
}

void qat_hard_swish_backward(const float *restrict x, const float *restrict gy, float *restrict gx,
                             size_t n, int overwrite) {
    // 0 below −3, g·(x/3 + 1/2) on [−3, 3], g above 3 and at NaN (which fails both tests).
    STORE_GRADIENT(const float v = x[i];
                   value = keep_or_zero(!(v < -3.0f), choose(v <= 3.0f, gy[i] * (v / 3.0f + 0.5f), gy[i])));
}

// ReLU and ReLU6 pass g where a test on y holds: once y itself is no longer needed, one byte per
// element (the test's outcome, 0 or 1) replaces it, and the backward below gives the same bits.
void qat_relu_mask(const float *restrict y, uint8_t *restrict mask, size_t n) {
    for (size_t i = 0; i < n; i++) mask[i] = y[i] > 0.0f;
}

void qat_relu6_mask(const float *restrict y, uint8_t *restrict mask, size_t n) {
    for (size_t i = 0; i < n; i++) mask[i] = (y[i] > 0.0f) & (y[i] < 6.0f);
}

void qat_clip_mask(const float *restrict x, uint8_t *restrict mask, size_t n, float low, float high) {
    for (size_t i = 0; i < n; i++) mask[i] = (x[i] >= low) & (x[i] <= high);
}

void qat_masked_backward(const uint8_t *restrict mask, const float *restrict gy, float *restrict gx,
                         size_t n, int overwrite) {
    STORE_GRADIENT(value = keep_or_zero(mask[i], gy[i]));
}

void qat_add_relu_forward(const float *restrict a, const float *restrict b, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float v = a[i] + b[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

void qat_add_relu_backward(const float *restrict y, const float *restrict gy, float *restrict gx, size_t n,
                           int overwrite) {
    STORE_GRADIENT(value = 0.0f + keep_or_zero(y[i] > 0.0f, gy[i]));
}

void qat_add_relu_masked_backward(const uint8_t *restrict mask, const float *restrict gy, float *restrict gx,
                                  size_t n, int overwrite) {
    STORE_GRADIENT(value = 0.0f + keep_or_zero(mask[i], gy[i]));
}
