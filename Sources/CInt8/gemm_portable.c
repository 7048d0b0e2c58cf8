// The portable path's GEMM: plain C for machines without AVX2, and the reference the vector
// paths are tested against. Operands and output as int8_internal.h describes them.
#include <stdlib.h>
#include "int8_internal.h"

// Plain loops over the same operands: one row of accumulators at a time.
void qat_i8_gemm_portable(const qat_i8_gemm *g) {
    int32_t *row = qat_i8_checked_malloc((size_t)g->n * sizeof(int32_t));
    for (int i = 0; i < g->m; i++) {
        for (int j = 0; j < g->n; j++) row[j] = g->corr[i];
        const int8_t *w = g->a + (size_t)i * g->k4 * 4;
        for (int q = 0; q < g->k4; q++) {
            const int32_t w0 = w[4 * q], w1 = w[4 * q + 1], w2 = w[4 * q + 2], w3 = w[4 * q + 3];
            const uint8_t *u = g->b + (size_t)q * g->npad * 4;
            for (int j = 0; j < g->n; j++)
                row[j] += w0 * u[4 * j] + w1 * u[4 * j + 1] + w2 * u[4 * j + 2] + w3 * u[4 * j + 3];
        }
        for (int j = 0; j < g->n; j++) qat_i8_store1(g, i, j, row[j]);
    }
    free(row);
}
