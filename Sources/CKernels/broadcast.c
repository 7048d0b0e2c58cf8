// Add and multiply loops; no fused multiply-add, so values round as the Swift loops they replace.
#pragma STDC FP_CONTRACT OFF
#include "broadcast.h"

void qat_add_same(const float *restrict a, const float *restrict b, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void qat_multiply_same(const float *restrict a, const float *restrict b, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

void qat_add_gradient(const float *restrict gy, float *restrict gx, size_t n, int overwrite) {
    if (overwrite) { for (size_t i = 0; i < n; i++) gx[i] = 0.0f + gy[i]; }
    else { for (size_t i = 0; i < n; i++) gx[i] += gy[i]; }
}

void qat_multiply_gradient(const float *restrict gy, const float *restrict other, float *restrict gx,
                           size_t n, int overwrite) {
    if (overwrite) { for (size_t i = 0; i < n; i++) gx[i] = 0.0f + gy[i] * other[i]; }
    else { for (size_t i = 0; i < n; i++) gx[i] += 0.0f + gy[i] * other[i]; }
}

void qat_row_broadcast_add(const float *restrict big, const float *restrict small, float *restrict y,
                           long length, long small_count, long r0, long r1) {
    for (long r = r0; r < r1; r++) {
        const float s = small[r % small_count];
        const float *restrict x = big + r * length;
        float *restrict out = y + r * length;
        for (long j = 0; j < length; j++) out[j] = x[j] + s;
    }
}

void qat_row_broadcast_multiply(const float *restrict big, const float *restrict small, float *restrict y,
                                long length, long small_count, long r0, long r1) {
    for (long r = r0; r < r1; r++) {
        const float s = small[r % small_count];
        const float *restrict x = big + r * length;
        float *restrict out = y + r * length;
        for (long j = 0; j < length; j++) out[j] = x[j] * s;
    }
}

void qat_row_broadcast_big_gradient(const float *restrict gy, const float *restrict small, float *restrict gx,
                                    long length, long small_count, int overwrite, long r0, long r1) {
    for (long r = r0; r < r1; r++) {
        const float *restrict g = gy + r * length;
        float *restrict out = gx + r * length;
        if (small) {
            const float s = small[r % small_count];
            if (overwrite) { for (long j = 0; j < length; j++) out[j] = 0.0f + g[j] * s; }
            else { for (long j = 0; j < length; j++) out[j] += 0.0f + g[j] * s; }
        } else {
            if (overwrite) { for (long j = 0; j < length; j++) out[j] = 0.0f + g[j]; }
            else { for (long j = 0; j < length; j++) out[j] += 0.0f + g[j]; }
        }
    }
}

#define GROUP 8

// Rows [r, r + count) (count ≤ GROUP, distinct small elements), each continuing its own chain.
__attribute__((always_inline)) static inline void
small_sums_group(const float *restrict gy, const float *restrict big, double *restrict sums,
                 long length, long small_count, long r, const long count) {
    double acc[GROUP] = {0};
    for (long k = 0; k < count; k++) acc[k] = sums[(r + k) % small_count];
    const float *restrict g = gy + r * length;
    if (big) {
        const float *restrict x = big + r * length;
        for (long j = 0; j < length; j++)
            for (long k = 0; k < count; k++) acc[k] += (double)(g[k * length + j] * x[k * length + j]);
    } else {
        for (long j = 0; j < length; j++)
            for (long k = 0; k < count; k++) acc[k] += (double)g[k * length + j];
    }
    for (long k = 0; k < count; k++) sums[(r + k) % small_count] = acc[k];
}

void qat_row_broadcast_small_sums(const float *restrict gy, const float *restrict big, double *restrict sums,
                                  long rows, long length, long small_count) {
    long r = 0;
    while (r < rows) {
        // A group never wraps past the last small element, so its rows' elements are distinct.
        long count = small_count - r % small_count;
        if (count > rows - r) count = rows - r;
        if (count >= GROUP) { small_sums_group(gy, big, sums, length, small_count, r, GROUP); r += GROUP; }
        else { small_sums_group(gy, big, sums, length, small_count, r, count); r += count; }
    }
}
