// Helpers of the 1×1 stride-1 convolution (Sources/QATCore/Ops/Conv2DPointwise.swift).
#include "conv_pointwise.h"

void qat_pointwise_add_bias(float *restrict y, const float *restrict bias, long out_channels, long plane,
                            long n0, long n1) {
    for (long n = n0; n < n1; n++) {
        for (long o = 0; o < out_channels; o++) {
            float *row = y + (n * out_channels + o) * plane;
            const float b = bias[o];
            for (long p = 0; p < plane; p++) row[p] += b;
        }
    }
}

void qat_pointwise_gather(const float *restrict src, long image_stride, long rows, long plane,
                          long n0, long n1, float *restrict dst) {
    const long ld = (n1 - n0) * plane;
    for (long n = n0; n < n1; n++) {
        for (long r = 0; r < rows; r++) {
            const float *from = src + n * image_stride + r * plane;
            float *to = dst + r * ld + (n - n0) * plane;
            for (long p = 0; p < plane; p++) to[p] = from[p];
        }
    }
}
