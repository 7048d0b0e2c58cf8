// Cost of the INT8 GEMM alone, per output, as a function of its depth: operands in L1, one
// thread, the AVX2 path's kernel (qat_i8_gemm_avx2). T(k4) ns per output for k = 4·k4 and
// 16 rows × 256 columns, with codes (scale, offset, ties to even) or floats out. A 1×1 conv of
// k input channels costs at least T(k/4) per output whatever its layout: the numbers behind the
// "floor" of docs/BENCHMARKS.md ("Issue 15 on the Zen 3, sixth pass").
//
//     make bench-int8-gemm        (builds this against Sources/CInt8 and runs it on CPU 0)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "int8_internal.h"

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    if (!qat_i8_cpu_supports(QAT_I8_AVX2)) {
        printf("no AVX2 on this CPU\n");
        return 0;
    }
    const int m = 16, n = 256, depths[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 36};
    printf("k4 (k = 4·k4)   codes ns/output   floats ns/output   codes GMAC/s\n");
    for (size_t d = 0; d < sizeof depths / sizeof *depths; d++) {
        const int k4 = depths[d];
        int8_t *a = malloc((size_t)m * k4 * 4);
        uint8_t *b = aligned_alloc(64, ((size_t)k4 * n * 4 + 127) / 64 * 64);
        int32_t *corr = malloc(m * sizeof(int32_t));
        float *scale = malloc(m * sizeof(float)), *offset = malloc(m * sizeof(float));
        void *out = malloc((size_t)m * n * 4);
        srand(1);
        for (int i = 0; i < m * k4 * 4; i++) a[i] = (int8_t)rand();
        for (int i = 0; i < k4 * n * 4; i++) b[i] = (uint8_t)rand();
        for (int i = 0; i < m; i++) corr[i] = rand() % 1000, scale[i] = 1e-3f * (1 + i % 3), offset[i] = 0.25f;
        double ns[2];
        for (int kind = 0; kind < 2; kind++) {
            const qat_i8_output o = {.kind = kind ? QAT_I8_OUT_FLOAT : QAT_I8_OUT_INT8, .scale = scale, .offset = offset,
                                     .zero_point = -128, .lo = -128, .hi = 127, .round_mode = QAT_I8_ROUND_HALF_EVEN};
            const qat_i8_gemm g = {.m = m, .n = n, .k4 = k4, .npad = n, .a = a, .corr = corr, .b = b, .output = o, .out = out,
                                   .row_stride = n, .col_stride = 1};
            const int reps = 200000 / (k4 + 2);
            double best = 1e9;
            for (int round = 0; round < 5; round++) {
                const double t = seconds();
                for (int i = 0; i < reps; i++) qat_i8_gemm_avx2(&g);
                const double each = (seconds() - t) / reps;
                if (each < best) best = each;
            }
            ns[kind] = best * 1e9 / (m * n);
        }
        printf("%2d               %.3f             %.3f              %.1f\n", k4, ns[0], ns[1], 4.0 * k4 / ns[0]);
        free(a), free(b), free(corr), free(scale), free(offset), free(out);
    }
    return 0;
}
