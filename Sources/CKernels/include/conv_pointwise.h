// Helpers of the 1×1 stride-1 convolution (Sources/QATCore/Ops/Conv2DPointwise.swift documents
// the math); the matrix products themselves are OpenBLAS sgemm calls on NCHW as it is.
#pragma once

// y[n, o, p] += bias[o] for images [n0, n1) of y [N, O, P].
void qat_pointwise_add_bias(float *restrict y, const float *restrict bias, long out_channels, long plane,
                            long n0, long n1);

// Gathers `rows` consecutive channels of images [n0, n1) of a [N, ·, plane] tensor into
// dst [rows, (n1 − n0)·plane]: src points at the first row of image 0, image_stride is the
// floats between images (channels · plane).
void qat_pointwise_gather(const float *restrict src, long image_stride, long rows, long plane,
                          long n0, long n1, float *restrict dst);
