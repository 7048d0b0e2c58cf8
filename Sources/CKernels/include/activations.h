// Element-wise activations and their backward passes (the math, NaN and boundary rules are in
// Sources/QATCore/Ops/ReLU.swift, ReLU6.swift and Activations.swift). Every backward takes
// `overwrite`: 1 stores 0 + value into gx (the bits adding into zeros gives; gx need not be
// initialised), 0 adds into gx.
#pragma once
#include <stddef.h>
#include <stdint.h>

void qat_relu_backward_into(const float *restrict y, const float *restrict gy, float *restrict gx,
                            size_t n, int overwrite);
void qat_relu6_forward(const float *restrict x, float *restrict y, size_t n);
void qat_relu6_backward(const float *restrict y, const float *restrict gy, float *restrict gx,
                        size_t n, int overwrite);
void qat_clip_forward(const float *restrict x, float *restrict y, size_t n, float low, float high);
void qat_clip_backward(const float *restrict x, const float *restrict gy, float *restrict gx,
                       size_t n, float low, float high, int overwrite);
void qat_leaky_relu_forward(const float *restrict x, float *restrict y, size_t n, float slope);
void qat_leaky_relu_backward(const float *restrict x, const float *restrict gy, float *restrict gx,
                             size_t n, float slope, int overwrite);
void qat_sigmoid_forward(const float *restrict x, float *restrict y, size_t n);
void qat_sigmoid_backward(const float *restrict y, const float *restrict gy, float *restrict gx,
                          size_t n, int overwrite);
void qat_hard_sigmoid_forward(const float *restrict x, float *restrict y, size_t n, float alpha, float beta);
void qat_hard_sigmoid_backward(const float *restrict y, const float *restrict gy, float *restrict gx,
                               size_t n, float alpha, int overwrite);
void qat_hard_swish_forward(const float *restrict x, float *restrict y, size_t n);
void qat_hard_swish_backward(const float *restrict x, const float *restrict gy, float *restrict gx,
                             size_t n, int overwrite);

// Where ReLU (y > 0) or ReLU6 (0 < y < 6) passes the gradient, one byte per element, and the
// backward from such a mask (the same bits as the backward from y or x).
void qat_relu_mask(const float *restrict y, uint8_t *restrict mask, size_t n);
void qat_relu6_mask(const float *restrict y, uint8_t *restrict mask, size_t n);
// Where clip (low ≤ x ≤ high) passes the gradient.
void qat_clip_mask(const float *restrict x, uint8_t *restrict mask, size_t n, float low, float high);
void qat_masked_backward(const uint8_t *restrict mask, const float *restrict gy, float *restrict gx,
                         size_t n, int overwrite);

// Add fused with the ReLU after it (Sources/QATCore/Ops/Add.swift): y = relu(a + b), qat_relu_forward's rule.
void qat_add_relu_forward(const float *restrict a, const float *restrict b, float *restrict y, size_t n);
// Its pullback into one operand: gx (+)= 0 + (gy where the test holds, else +0), the test y > 0
// (saved y) or mask[i] (saved mask, qat_relu_mask): what ReLU's pullback writes into a fresh
// gradient and add's then adds into gx, in one pass.
void qat_add_relu_backward(const float *restrict y, const float *restrict gy, float *restrict gx, size_t n,
                           int overwrite);
void qat_add_relu_masked_backward(const uint8_t *restrict mask, const float *restrict gy, float *restrict gx,
                                  size_t n, int overwrite);
