// Shared by the AVX2 3×3 depthwise kernels (depthwise_float_direct_avx2.c, one output row a step,
// and depthwise_float_rows_avx2.c, several): the column blocks and their load masks, the tap
// loads and the partial-vector stores. Internal, static inline: each kernel file gets its own copy.
#pragma once
#include "depthwise_float_internal.h"

#include <immintrin.h>
#include <stdint.h>


#define AVX2 __attribute__((target("avx2,fma")))

enum { LANES = 8, MAX_BLOCKS = 128 };

// Block b covers output columns j = 8·b + l, l < 8, reading from input column
// base(b) = 8·b·stride + offset. Stride 1: load k (k = kw) reads columns base + k + l.
// Stride 2: loads k = 0, 1, 2, 3 read columns base + {0, 8, 2, 10} + l. `in` keeps the lanes whose
// column lies inside [0, input_width) (at stride 1 also only real outputs), `out` the real
// outputs (as masks of all-ones lanes); `full` says every load of the block keeps all its lanes,
// `left_only` that only load 0 drops some (the first block of a plane padded on the left).
typedef struct {
    long blocks;
    int32_t out[MAX_BLOCKS][LANES], in[MAX_BLOCKS][4][LANES];
    unsigned char full[MAX_BLOCKS], left_only[MAX_BLOCKS];
} column_masks;

static void column_masks_of(column_masks *m, long output_width, long input_width, long offset, long stride) {
    static const long stride2_offsets[4] = {0, 8, 2, 10};
    const long loads = stride == 1 ? 3 : 4;
    m->blocks = (output_width + LANES - 1) / LANES;
    for (long b = 0; b < m->blocks; b++) {
        int full = 1, others_full = 1;
        for (long l = 0; l < LANES; l++) {
            const long j = b * LANES + l, base = b * LANES * stride + offset;
            m->out[b][l] = j < output_width ? -1 : 0;
            for (long k = 0; k < 4; k++) {
                const long column = base + (stride == 1 ? k : stride2_offsets[k]) + l;
                const int inside = k < loads && column >= 0 && column < input_width && (stride == 2 || j < output_width);
                m->in[b][k][l] = inside ? -1 : 0;
                if (k < loads && !inside) full = 0;
                if (k > 0 && k < loads && !inside) others_full = 0;
            }
        }
        m->full[b] = (unsigned char)full;
        m->left_only[b] = (unsigned char)(!full && others_full);
    }
}

static inline __m256i AVX2 mask_of(const int32_t lanes[LANES]) { return _mm256_loadu_si256((const __m256i *)lanes); }

// Block b's load masks, loaded once for all the rows of a plane (loaded per row, they doubled the
// loads of the edge blocks).
AVX2 __attribute__((always_inline)) static inline void block_masks(const column_masks *m, long b, __m256i mask[4]) {
    for (long k = 0; k < 4; k++) mask[k] = mask_of(m->in[b][k]);
}

// dst[0 … n) = (or += when `add`) the first n < 8 lanes of v: 4, 2 and 1 lanes at a time rather
// than vmaskmovps, whose store form is microcoded and slow on AMD cores (the masked loads are
// cheap), and rather than a scalar loop, which the compiler turned into a call to memcpy (the
// call made the kernels keep their taps on the stack). Lane-wise adds: the same values.
AVX2 __attribute__((always_inline)) static inline void store_first(float *dst, __m256 v, long n, int add) {
    __m128 part = _mm256_castps256_ps128(v);
    if (n & 4) {
        _mm_storeu_ps(dst, add ? _mm_add_ps(_mm_loadu_ps(dst), part) : part);
        part = _mm256_extractf128_ps(v, 1);
        dst += 4;
    }
    if (n & 2) {
        const __m128 sum = add ? _mm_add_ps(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)dst), part) : part;
        _mm_storel_pi((__m64 *)dst, sum);
        part = _mm_movehl_ps(part, part);
        dst += 2;
    }
    if (n & 1) _mm_store_ss(dst, add ? _mm_add_ss(_mm_load_ss(dst), part) : part);
}

// Even columns of the 16 at a (8) then b (8), in the order a0 a2 b0 b2 | a4 a6 b4 b6; odd likewise.
#define EVEN(a, b) _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))
#define ODD(a, b) _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))
// Between column order (0 … 7) and the shuffled order above (0 1 4 5 | 2 3 6 7): the same swap of
// the middle 64-bit quarters both ways.
#define SWAP_MIDDLE(v) _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)))

// The input values tap columns kw = 0, 1, 2 meet in block b of a row (row points at base(b));
// `stride` and `full` (0: masked loads, 1: plain ones, 2: left_only) are constants where inlined. Stride 2 gives them in the shuffled order.
AVX2 __attribute__((always_inline)) static inline void tap_columns(const float *row, const __m256i mask[4], int full,
                                                                   long stride, __m256 v[3]) {
    if (stride == 1) {
        if (full == 2) {   // left_only: plain loads but the first
            v[0] = _mm256_maskload_ps(row, mask[0]);
            for (long kw = 1; kw < 3; kw++) v[kw] = _mm256_loadu_ps(row + kw);
        } else if (full) {
            for (long kw = 0; kw < 3; kw++) v[kw] = _mm256_loadu_ps(row + kw);
        } else {
            for (long kw = 0; kw < 3; kw++) v[kw] = _mm256_maskload_ps(row + kw, mask[kw]);
        }
    } else {
        __m256 a, b8, a2, b10;
        if (full == 2) {
            a = _mm256_maskload_ps(row, mask[0]), b8 = _mm256_loadu_ps(row + 8);
            a2 = _mm256_loadu_ps(row + 2), b10 = _mm256_loadu_ps(row + 10);
        } else if (full) {
            a = _mm256_loadu_ps(row), b8 = _mm256_loadu_ps(row + 8);
            a2 = _mm256_loadu_ps(row + 2), b10 = _mm256_loadu_ps(row + 10);
        } else {
            a = _mm256_maskload_ps(row, mask[0]);
            b8 = _mm256_maskload_ps(row + 8, mask[1]);
            a2 = _mm256_maskload_ps(row + 2, mask[2]);
            b10 = _mm256_maskload_ps(row + 10, mask[3]);
        }
        v[0] = EVEN(a, b8);
        v[1] = ODD(a, b8);
        v[2] = EVEN(a2, b10);
    }
}
