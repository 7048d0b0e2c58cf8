// FMA-peak loops (include/fma_peak.h). Each chain is acc = acc · a + b with a < 1, so values stay
// bounded and normal. A chain waits for its previous FMA (4 cycles of latency on current cores),
// so two FMA units need at least 8 chains in flight: 16 for AVX-512 (32 zmm registers), 12 for
// AVX2 (16 ymm registers, two of them holding a and b).
#include "fma_peak.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

int qat_fma_peak_has_avx512(void) { return __builtin_cpu_supports("avx512f"); }
int qat_fma_peak_has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

enum { AVX512_CHAINS = 16, AVX2_CHAINS = 12 };

long qat_fma_peak_flops_avx512(void) { return AVX512_CHAINS * 16 * 2; }
long qat_fma_peak_flops_avx2(void) { return AVX2_CHAINS * 8 * 2; }

__attribute__((target("avx512f")))
float qat_fma_peak_avx512(long iterations) {
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
    __m512 acc[AVX512_CHAINS];
    for (int i = 0; i < AVX512_CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iterations; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < AVX512_CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    __m512 sum = acc[0];
    for (int i = 1; i < AVX512_CHAINS; i++) sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma")))
float qat_fma_peak_avx2(long iterations) {
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
    __m256 acc[AVX2_CHAINS];
    for (int i = 0; i < AVX2_CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iterations; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < AVX2_CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    __m256 sum = acc[0];
    for (int i = 1; i < AVX2_CHAINS; i++) sum = _mm256_add_ps(sum, acc[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    float total = 0;
    for (int i = 0; i < 8; i++) total += lanes[i];
    return total;
}

// The exact INT8 engine's multiply-accumulate without VNNI: vpmaddwd (16 products of int16 pairs,
// summed in pairs to 8 int32) and a vpaddd into an accumulator, as the AVX2 GEMM's inner loop
// does. 12 accumulators; the empty asm makes `y` opaque each round, so the multiplies cannot be
// hoisted out of the loop.
enum { INT8_CHAINS = 12 };

long qat_int8_mac_peak_products_avx2(void) { return INT8_CHAINS * 16; }

__attribute__((target("avx2")))
int qat_int8_mac_peak_avx2(long iterations) {
    __m256i acc[INT8_CHAINS], x[INT8_CHAINS], y = _mm256_set1_epi32(0x00030002);
    for (int i = 0; i < INT8_CHAINS; i++) {
        acc[i] = _mm256_set1_epi32(i);
        x[i] = _mm256_set1_epi32(0x00010001 * (i + 1));
    }
    for (long it = 0; it < iterations; it++) {
        __asm__ volatile("" : "+x"(y));
#pragma GCC unroll 12
        for (int i = 0; i < INT8_CHAINS; i++) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(x[i], y));
    }
    __m256i sum = acc[0];
    for (int i = 1; i < INT8_CHAINS; i++) sum = _mm256_add_epi32(sum, acc[i]);
    return _mm256_extract_epi32(sum, 0);
}

#else
long qat_int8_mac_peak_products_avx2(void) { return 0; }
int qat_int8_mac_peak_avx2(long iterations) { (void)iterations; return 0; }
int qat_fma_peak_has_avx512(void) { return 0; }
int qat_fma_peak_has_avx2(void) { return 0; }
long qat_fma_peak_flops_avx512(void) { return 0; }
long qat_fma_peak_flops_avx2(void) { return 0; }
float qat_fma_peak_avx512(long iterations) { (void)iterations; return 0; }
float qat_fma_peak_avx2(long iterations) { (void)iterations; return 0; }
#endif
