// The GEMM's weight operand (int8_internal.h): weights packed for each operand layout, and the
// per-row constant corr that folds the input zero point and the bias into the sums.
#include <stdio.h>
#include <stdlib.h>
#include "int8_internal.h"

// Weights [m][k] → [m][k4·4] with zero weights in the padding, and
// corr[i] = b_q[i] − (128 + o_d)·Σ_k w[i][k]   (see int8_internal.h).
int8_t *qat_i8_pack_weights(const int8_t *w, const int32_t *bias, int m, int k, int k4,
                            int8_t x_zero, int32_t **corr_out) {
    int8_t *a = calloc((size_t)m * k4 * 4, 1);
    int32_t *corr = qat_i8_checked_malloc((size_t)m * sizeof(int32_t));
    if (!a) { fprintf(stderr, "qat int8: out of memory\n"); abort(); }
    for (int i = 0; i < m; i++) {
        int64_t sum = 0;
        for (int j = 0; j < k; j++) {
            a[(size_t)i * k4 * 4 + j] = w[(size_t)i * k + j];
            sum += w[(size_t)i * k + j];
        }
        corr[i] = (int32_t)((int64_t)bias[i] - (128 + (int64_t)x_zero) * sum);
    }
    *corr_out = corr;
    return a;
}

// The same for channel-blocked operands (int8_internal.h): weights [m][c][kh][kw] with c a
// multiple of 4 → a[i][((cb·kh + ky)·kw + kx)·4 + t] = w[i][4·cb + t][ky][kx], and the same corr.
int8_t *qat_i8_pack_weights_blocked(const int8_t *w, const int32_t *bias, int m, int c, int kh, int kw,
                                    int8_t x_zero, int32_t **corr_out) {
    const int taps = kh * kw, k = c * taps;
    int8_t *a = qat_i8_checked_malloc((size_t)m * k);
    int32_t *corr = qat_i8_checked_malloc((size_t)m * sizeof(int32_t));
    for (int i = 0; i < m; i++) {
        const int8_t *row = w + (size_t)i * k;
        int64_t sum = 0;
        for (int j = 0; j < k; j++) sum += row[j];
        for (int ci = 0; ci < c; ci++)
            for (int tap = 0; tap < taps; tap++)
                a[(size_t)i * k + ((size_t)(ci / 4) * taps + tap) * 4 + ci % 4] = row[(size_t)ci * taps + tap];
        corr[i] = (int32_t)((int64_t)bias[i] - (128 + (int64_t)x_zero) * sum);
    }
    *corr_out = corr;
    return a;
}

// The same for the row-tap layout of an implicit GEMM (below): a[i][(ci·kh + ky)·4 + t] = w[i][ci][ky][t]
// for t < kw (kw ≤ 4), zero weights past kw; k4 = c·kh; the same corr.
int8_t *qat_i8_pack_weights_row_taps(const int8_t *w, const int32_t *bias, int m, int c, int kh, int kw,
                                     int8_t x_zero, int32_t **corr_out) {
    const int k4 = c * kh;
    int8_t *a = calloc((size_t)m * k4 * 4, 1);
    int32_t *corr = qat_i8_checked_malloc((size_t)m * sizeof(int32_t));
    if (!a) { fprintf(stderr, "qat int8: out of memory\n"); abort(); }
    for (int i = 0; i < m; i++) {
        const int8_t *row = w + (size_t)i * c * kh * kw;
        int64_t sum = 0;
        for (int j = 0; j < c * kh * kw; j++) sum += row[j];
        for (int q = 0; q < k4; q++)  // q = ci·kh + ky
            for (int t = 0; t < kw; t++) a[((size_t)i * k4 + q) * 4 + t] = row[(size_t)q * kw + t];
        corr[i] = (int32_t)((int64_t)bias[i] - (128 + (int64_t)x_zero) * sum);
    }
    *corr_out = corr;
    return a;
}
