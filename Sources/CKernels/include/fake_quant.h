// The ULQ fake-quantizer's passes with the half-to-even tie rule (the math is in
// Sources/QATCore/Ops/FakeQuantULQ.swift and docs/ALGORITHMS.md §1). AVX-512, AVX2 and portable
// paths, chosen once from cpuid, give the same bits: the forward is element-wise and the backward
// keeps eight Float partial sums per block, lane k adding elements k, k + 8, … in order.
#pragma once
#include <stddef.h>

// y[i] = round_half_even(clamp(x[i] / s, low, high)) · s; x and y may be the same buffer.
void qat_ulq_forward(const float *x, float *y, size_t n, float s, float low, float high);

// The three sums of one block (the clip gradients' ingredients) and dL/dx:
// sums[0] = Σ g·(round(x/s) − x/s) over x in [lower, upper], sums[1] = Σ g over x > upper,
// sums[2] = Σ g over x < lower, each the eight lanes added in Double in lane order (elements past
// the last multiple of 8 go into lane 0). gx (may be NULL) gets g where x is inside: stored as
// 0 + g·inside when `overwrite`, added otherwise.
void qat_ulq_backward_block(const float *restrict x, const float *restrict g, float *restrict gx, size_t n,
                            float s, float lower, float upper, int overwrite, double sums[3]);

// The path the two functions above take: 2 AVX-512, 1 AVX2, 0 portable. Tests force a path the
// CPU has and compare them; −1 (or a path the CPU lacks) returns to cpuid's choice.
int qat_ulq_isa(void);
int qat_ulq_force_isa(int isa);
