// The optimizers' per-element updates (Sources/QATTrain/Optimizer.swift), in C so they vectorise
// (Swift cannot prove the three buffers apart). The float operations and their order are the
// Swift loops', without fused multiply-add: the same bits.
#pragma once
#include <stddef.h>

// SGD with momentum, element i of n: v = (μ·v + g) + λ·w; w = w − η·v; then g = 0.
void qat_sgd_momentum_step(float *restrict w, float *restrict v, float *restrict g, size_t n,
                           float learning_rate, float momentum, float decay);
// SGD without momentum: w = w − η·(g + λ·w); then g = 0.
void qat_sgd_step(float *restrict w, float *restrict g, size_t n, float learning_rate, float decay);
