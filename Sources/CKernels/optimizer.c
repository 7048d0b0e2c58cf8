// SGD's update loops (see optimizer.h). No contraction into FMA: each product rounds on its own,
// as in the Swift loops these replace.
#pragma STDC FP_CONTRACT OFF
#include "optimizer.h"

void qat_sgd_momentum_step(float *restrict w, float *restrict v, float *restrict g, size_t n,
                           float learning_rate, float momentum, float decay) {
    for (size_t i = 0; i < n; i++) {
        const float velocity = (momentum * v[i] + g[i]) + decay * w[i];
        v[i] = velocity;
        w[i] = w[i] - learning_rate * velocity;
        g[i] = 0.0f;
    }
}

void qat_sgd_step(float *restrict w, float *restrict g, size_t n, float learning_rate, float decay) {
    for (size_t i = 0; i < n; i++) {
        w[i] = w[i] - learning_rate * (g[i] + decay * w[i]);
        g[i] = 0.0f;
    }
}
