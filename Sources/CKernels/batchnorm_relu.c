// BatchNorm fused with the ReLU that reads it (Sources/QATCore/Ops/BatchNorm.swift): the
// backward's ReLU mask, recomputed from x. No fused multiply-add, as in batchnorm.c: the
// normalize here must round exactly as the forward's did.
#pragma STDC FP_CONTRACT OFF
#include "batchnorm.h"

#include <stdint.h>
#include <string.h>

void qat_bn_relu_mask_gradient(const float *restrict gy, const float *restrict x, const float *restrict mean,
                               const float *restrict inverse_std, const float *restrict gamma,
                               const float *restrict beta, float *restrict g, long channels, long plane,
                               long q0, long q1) {
    for (long q = q0; q < q1; q++) {
        const long c = q % channels;
        const float mu = mean[c], s = inverse_std[c], k = gamma[c], b = beta[c];
        const float *restrict xs = x + q * plane, *restrict gs = gy + q * plane;
        float *restrict out = g + q * plane;
        for (long p = 0; p < plane; p++) {
            const float y = k * ((xs[p] - mu) * s) + b;
            // Bit mask rather than ?: so the loop vectorises (activations.c's keep_or_zero).
            uint32_t bits;
            memcpy(&bits, &gs[p], sizeof bits);
            bits &= -(uint32_t)(y > 0.0f);
            float value;
            memcpy(&value, &bits, sizeof value);
            out[p] = 0.0f + value;
        }
    }
}
