#include "float_kernels.h"

#include <string.h>

void qat_relu_forward(const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float v = x[i];
        y[i] = v < 0.0f ? 0.0f : v;   // NaN passes through (as in PyTorch), so it cannot hide
    }
}

void qat_relu_backward(const float *restrict y, const float *restrict gy, float *restrict gx, size_t n) {
    // Both loads are unconditional so the compiler may turn the choice into a vector select.
    for (size_t i = 0; i < n; i++) {
        const float g = gy[i];
        gx[i] += y[i] > 0.0f ? g : 0.0f;
    }
}

void qat_add_into(float *restrict a, const float *restrict b, size_t n) {
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

int qat_all_finite(const float *restrict x, size_t n) {
    uint32_t infinite = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        infinite |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    return infinite == 0;
}

/// The common 2×2 / stride 2 case, branch-free: the comparisons become selects, so random data
/// costs no mispredictions. Same order and strict > as the general loop (first max wins).
__attribute__((always_inline)) static inline void
maxpool2x2_forward(const float *restrict x, float *restrict y, int32_t *restrict argmax,
                   size_t planes, size_t h, size_t w, const int with_argmax) {
    const size_t oh = h / 2, ow = w / 2;
    for (size_t p = 0; p < planes; p++) {
        const float *plane = x + p * h * w;
        for (size_t i = 0; i < oh; i++) {
            const float *r0 = plane + 2 * i * w, *r1 = r0 + w;
            float *yo = y + (p * oh + i) * ow;
            int32_t *ao = with_argmax ? argmax + (p * oh + i) * ow : 0;
            const int32_t base = (int32_t)(p * h * w + 2 * i * w);
            for (size_t j = 0; j < ow; j++) {
                const float a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
                float m = a;
                int32_t off = 0;
                // v wins if larger, or if it is the first NaN (so NaN propagates, as in PyTorch)
                int t = (b > m) | ((b != b) & (m == m));
                off = t ? 1 : off;              m = t ? b : m;
                t = (c > m) | ((c != c) & (m == m));
                off = t ? (int32_t)w : off;     m = t ? c : m;
                t = (d > m) | ((d != d) & (m == m));
                off = t ? (int32_t)w + 1 : off; m = t ? d : m;
                yo[j] = m;
                if (with_argmax) ao[j] = base + (int32_t)(2 * j) + off;
            }
        }
    }
}

void qat_maxpool_forward(const float *restrict x, float *restrict y, int32_t *restrict argmax,
                         size_t planes, size_t h, size_t w, size_t k, size_t s) {
    size_t oh = (h - k) / s + 1, ow = (w - k) / s + 1;
    if (k == 2 && s == 2) {
        // Two calls with a constant flag, so each inlined copy has no argmax test in its loop.
        if (argmax) maxpool2x2_forward(x, y, argmax, planes, h, w, 1);
        else maxpool2x2_forward(x, y, argmax, planes, h, w, 0);
        return;
    }
    for (size_t p = 0; p < planes; p++) {
        const float *plane = x + p * h * w;
        for (size_t i = 0; i < oh; i++) {
            for (size_t j = 0; j < ow; j++) {
                size_t best = (i * s) * w + j * s;
                float best_value = plane[best];
                for (size_t ki = 0; ki < k; ki++) {
                    const size_t row = (i * s + ki) * w + j * s;
                    for (size_t kj = 0; kj < k; kj++) {
                        // strict > keeps the first maximum on ties; a NaN wins and stays, so it propagates
                        const float v = plane[row + kj];
                        if (v > best_value || (v != v && best_value == best_value)) { best_value = v; best = row + kj; }
                    }
                }
                size_t o = (p * oh + i) * ow + j;
                y[o] = best_value;
                if (argmax) argmax[o] = (int32_t)(p * h * w + best);
            }
        }
    }
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif

void qat_keep_freed_memory(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}
