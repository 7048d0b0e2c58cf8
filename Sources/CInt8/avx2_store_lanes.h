// The first `count` (1 … 8) 32-bit lanes of v stored at dst (int32 or float), as the last partial
// vector of a row. Not vpmaskmovd / vmaskmovps, which AMD's cores run as slow microcoded stores,
// and no loop, which the compiler turns into a memcpy call per row.
#ifndef QAT_I8_AVX2_STORE_LANES_H
#define QAT_I8_AVX2_STORE_LANES_H
#include <immintrin.h>
#include "int8_internal.h"

static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2 void qat_i8_store_lanes_avx2(void *dst, __m256i v, int count) {
    char *d = dst;
    if (count == 8) { _mm256_storeu_si256((__m256i *)d, v); return; }
    __m128i q = _mm256_castsi256_si128(v);
    if (count >= 4) _mm_storeu_si128((__m128i *)d, q), q = _mm256_extracti128_si256(v, 1), d += 16, count -= 4;
    if (count >= 2) _mm_storeu_si64(d, q), q = _mm_srli_si128(q, 8), d += 8, count -= 2;
    if (count) _mm_storeu_si32(d, q);
}
#endif
