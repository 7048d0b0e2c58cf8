// Float loops that Swift cannot vectorise because it cannot prove the buffers do not alias.
// Each is the inner loop of one op in Sources/QAT/Ops; the op's file documents the math.
#pragma once
#include <stddef.h>
#include <stdint.h>

// y = max(x, 0)
void qat_relu_forward(const float *restrict x, float *restrict y, size_t n);
// gx += (y > 0) ? gy : 0
void qat_relu_backward(const float *restrict y, const float *restrict gy, float *restrict gx, size_t n);
// a += b
void qat_add_into(float *restrict a, const float *restrict b, size_t n);

// Max pool over `planes` planes of h×w, window k, stride s; argmax (flat input index) may be NULL.
void qat_maxpool_forward(const float *restrict x, float *restrict y, int32_t *restrict argmax,
                         size_t planes, size_t h, size_t w, size_t k, size_t s);

// dst[j * stride] += src[j] for j in [begin, end): one image row of col2im.
void qat_strided_add(float *restrict dst, const float *restrict src, size_t begin, size_t end, size_t stride);

// Keeps large freed blocks in the heap instead of returning them to the OS (glibc mallopt).
void qat_keep_freed_memory(void);
