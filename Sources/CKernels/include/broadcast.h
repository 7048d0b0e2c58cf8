// Add and multiply loops (the math is in Sources/QATCore/Ops/Add.swift and Multiply.swift).
// "Row broadcast": an output of `rows` rows of `length`, where one operand (big) has the
// output's shape and the other (small) one value per row, row r using small[r mod small_count]
// ([N, C, H, W] with [N, C, 1, 1] or [1, C, 1, 1]). Backward functions take `overwrite` as in
// activations.h: 1 stores 0 + value into a fresh gx, 0 adds.
#pragma once
#include <stddef.h>

// y = a + b and y = a · b, same shapes.
void qat_add_same(const float *restrict a, const float *restrict b, float *restrict y, size_t n);
void qat_multiply_same(const float *restrict a, const float *restrict b, float *restrict y, size_t n);
// gx (+)= gy (the same-shape add's gradient).
void qat_add_gradient(const float *restrict gy, float *restrict gx, size_t n, int overwrite);
// gx (+)= 0 + gy·other (the same-shape multiply's gradient, as rounded through the Double sums
// of the general path).
void qat_multiply_gradient(const float *restrict gy, const float *restrict other, float *restrict gx,
                           size_t n, int overwrite);

// Rows [r0, r1): y = big + small[r mod small_count] (add) or big · small[…] (multiply).
void qat_row_broadcast_add(const float *restrict big, const float *restrict small, float *restrict y,
                           long length, long small_count, long r0, long r1);
void qat_row_broadcast_multiply(const float *restrict big, const float *restrict small, float *restrict y,
                                long length, long small_count, long r0, long r1);
// Rows [r0, r1): gx (+)= 0 + gy · small[r mod small_count], or 0 + gy when small is NULL (the
// gradient of the big operand).
void qat_row_broadcast_big_gradient(const float *restrict gy, const float *restrict small, float *restrict gx,
                                    long length, long small_count, int overwrite, long r0, long r1);
// All rows in order: sums[r mod small_count] += Σ_j gy·big (or Σ_j gy when big is NULL), one
// Double chain per small element continued across its rows in output order (the general path's
// order, so the same bits); up to 8 rows with distinct small elements run interleaved.
void qat_row_broadcast_small_sums(const float *restrict gy, const float *restrict big, double *restrict sums,
                                  long rows, long length, long small_count);
