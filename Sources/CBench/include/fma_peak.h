// The FMA-peak microbenchmark of qat-bench (`--mode fma-peak`): independent chains of fused
// multiply-adds held in registers, no memory traffic, so the time is the FMA units' throughput.
#pragma once

// Whether this CPU (and OS) runs the AVX-512F / AVX2+FMA loop.
int qat_fma_peak_has_avx512(void);
int qat_fma_peak_has_avx2(void);

// Floating-point operations (2 per lane per FMA) of one iteration of each loop.
long qat_fma_peak_flops_avx512(void);
long qat_fma_peak_flops_avx2(void);

// Runs `iterations` rounds of the loop; returns a sum of every chain, so none is optimised away.
float qat_fma_peak_avx512(long iterations);
float qat_fma_peak_avx2(long iterations);

// The exact INT8 multiply-accumulate of the AVX2 engine (vpmaddwd + vpaddd per 16 products):
// products per iteration, and `iterations` rounds (runs where qat_fma_peak_has_avx2 says so);
// returns a lane of the sum, so nothing is optimised away.
long qat_int8_mac_peak_products_avx2(void);
int qat_int8_mac_peak_avx2(long iterations);
