// AVX-512 VNNI GEMM: vpdpbusd adds, per 32-bit lane, four u8×s8 products of one column and
// one group of 4 k to the accumulator, exactly (no saturation). Tiles of up to 6 channels ×
// 64 columns keep 24 accumulators in zmm registers while k runs.
#include <immintrin.h>
#include <string.h>
#include "int8_internal.h"

int qat_i8_eight_row_tiles = 1;
void qat_i8_allow_eight_row_tiles(int allowed) { qat_i8_eight_row_tiles = allowed; }

enum { MR = 6, NV = 4 };  // tile: MR rows × NV vectors of 16 columns; or 8 rows × 3 vectors (MR8)
enum { MR8 = 8 };

// The int8 codes of 16 accumulators as int32 lanes: the same steps as qat_i8_store1 (convert, multiply,
// add the offset, round half even, clamp, add o_y).
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
__m512i requant16(const qat_i8_gemm *g, int row, __m512i acc) {
    const int32_t zero = g->output.zero_point;
    if (g->output.shift) {  // qat_i8_requant_shift on 16 lanes
        const int32_t k = g->output.shift[row];
        __m512i q = acc;
        if (k > 0) {
            const __m128i count = _mm_cvtsi32_si128(k);
            q = _mm512_sra_epi32(acc, count);
            const __m512i rem = _mm512_and_si512(acc, _mm512_set1_epi32((int32_t)((1u << k) - 1u)));
            const __m512i one = _mm512_set1_epi32(1);
            __m512i tie_up;  // qat_i8_shift_tie_up
            switch (g->output.round_mode) {
            case QAT_I8_ROUND_HALF_UP: tie_up = one; break;
            case QAT_I8_ROUND_HALF_DOWN: tie_up = _mm512_setzero_si512(); break;
            case QAT_I8_ROUND_STD: tie_up = _mm512_andnot_si512(_mm512_srai_epi32(acc, 31), one); break;  // acc ≥ 0
            default: tie_up = _mm512_and_si512(q, one); break;
            }
            const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(rem, tie_up), _mm512_set1_epi32((int32_t)((1u << (k - 1)) - 1u)));
            q = _mm512_add_epi32(q, _mm512_srl_epi32(sum, count));
        }
        q = _mm512_max_epi32(q, _mm512_set1_epi32(g->output.lo - zero));
        q = _mm512_min_epi32(q, _mm512_set1_epi32(g->output.hi - zero));
        return _mm512_add_epi32(q, _mm512_set1_epi32(zero));
    }
    __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(g->output.scale[row]));
    if (g->output.offset) r = _mm512_add_ps(r, _mm512_set1_ps(g->output.offset[row]));
    const __m512 x = r;
    r = _mm512_roundscale_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (g->output.round_mode != QAT_I8_ROUND_HALF_EVEN) {  // qat_i8_round: move the ties the mode breaks otherwise
        const __m512 d = _mm512_sub_ps(x, r), one = _mm512_set1_ps(1.0f);
        __mmask16 up = _mm512_cmp_ps_mask(d, _mm512_set1_ps(0.5f), _CMP_EQ_OQ);
        __mmask16 down = _mm512_cmp_ps_mask(d, _mm512_set1_ps(-0.5f), _CMP_EQ_OQ);
        switch (g->output.round_mode) {
        case QAT_I8_ROUND_HALF_UP: down = 0; break;
        case QAT_I8_ROUND_HALF_DOWN: up = 0; break;
        default:  // away from zero
            up &= _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
            down &= _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
            break;
        }
        r = _mm512_mask_add_ps(r, up, r, one);
        r = _mm512_mask_sub_ps(r, down, r, one);
    }
    r = _mm512_max_ps(r, _mm512_set1_ps((float)(g->output.lo - zero)));
    r = _mm512_min_ps(r, _mm512_set1_ps((float)(g->output.hi - zero)));
    return _mm512_add_epi32(_mm512_cvtps_epi32(r), _mm512_set1_epi32(zero));
}

// The floats of 16 accumulators as qat_i8_scaled1 computes them, then g->relu's ReLU.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
__m512 dequantize16(const qat_i8_gemm *g, int row, __m512i acc) {
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(g->output.scale[row]));
    if (g->output.offset) y = _mm512_add_ps(y, _mm512_set1_ps(g->output.offset[row]));
    if (g->relu) y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_setzero_ps());
    return y;
}

// Finishes 16 accumulators (bias already added) of row `row`, columns col…col+15.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
void store16(const qat_i8_gemm *g, int row, int col, __m512i acc) {
    int valid = g->n - col;
    if (valid <= 0) return;
    if (valid > 16) valid = 16;
    if (g->col_stride != 1) {  // linear: outputs of one channel are `outs` apart
        // Computed as a vector (the same steps as below), stored lane by lane.
        const ptrdiff_t at = (ptrdiff_t)row * g->row_stride + (ptrdiff_t)col * g->col_stride;
        if (g->output.kind == QAT_I8_OUT_INT8) {
            int8_t lanes[16];
            _mm_storeu_si128((__m128i *)lanes, _mm512_cvtepi32_epi8(requant16(g, row, acc)));
            for (int l = 0; l < valid; l++) ((int8_t *)g->out)[at + l * g->col_stride] = lanes[l];
        } else if (g->output.kind == QAT_I8_OUT_FLOAT) {
            float lanes[16];
            _mm512_storeu_ps(lanes, dequantize16(g, row, acc));
            for (int l = 0; l < valid; l++) ((float *)g->out)[at + l * g->col_stride] = lanes[l];
        } else {
            int32_t lanes[16];
            _mm512_storeu_si512(lanes, acc);
            for (int l = 0; l < valid; l++) ((int32_t *)g->out)[at + l * g->col_stride] = lanes[l];
        }
        return;
    }
    const __mmask16 mask = (__mmask16)(valid == 16 ? 0xFFFF : (1u << valid) - 1);
    const ptrdiff_t at = (ptrdiff_t)row * g->row_stride + col;
    switch (g->output.kind) {
    case QAT_I8_OUT_INT32:
        _mm512_mask_storeu_epi32((int32_t *)g->out + at, mask, acc);
        break;
    case QAT_I8_OUT_FLOAT:
        _mm512_mask_storeu_ps((float *)g->out + at, mask, dequantize16(g, row, acc));
        break;
    case QAT_I8_OUT_INT8: {
        const __m512i q = requant16(g, row, acc);
        _mm512_mask_cvtepi32_storeu_epi8((int8_t *)g->out + at, mask, q);
        break;
    }
    }
}

// 64 contiguous int8 outputs of one row (conv, NCHW) from 4 vectors of accumulators: the codes
// are already in [−128, 127], so two saturating packs and a dword permute put them in order
// for one (masked) store instead of four narrowing stores.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
void store64_int8(const qat_i8_gemm *g, int row, int col, const int nv, __m512i a0, __m512i a1, __m512i a2, __m512i a3) {
    int valid = g->n - col;
    if (valid <= 0) return;
    if (valid > 16 * nv) valid = 16 * nv;  // vectors past nv are not computed (zero, never stored)
    const __m512i zero = _mm512_setzero_si512();
    const __m512i q01 = _mm512_packs_epi32(requant16(g, row, a0), nv > 1 ? requant16(g, row, a1) : zero);
    const __m512i q23 = _mm512_packs_epi32(nv > 2 ? requant16(g, row, a2) : zero, nv > 3 ? requant16(g, row, a3) : zero);
    // Dword 4·lane + v holds vector v's outputs 4·lane…4·lane+3; move it to 4·v + lane.
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i q = _mm512_permutexvar_epi32(order, _mm512_packs_epi16(q01, q23));
    const __mmask64 mask = valid >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << valid) - 1);
    _mm512_mask_storeu_epi8((int8_t *)g->out + (ptrdiff_t)row * g->row_stride + col, mask, q);
}

// Implicit GEMM (g->tap): finishes 16 accumulators of row `row` for the grid columns col…col+15,
// of which the lanes g->keep[col/16] are outputs: compressed to the front, in order, and stored
// from output column g->dest[col/16] on. Garbage lanes are computed as any other (from the
// padding and neighbouring pixels) and dropped.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
void store16_kept(const qat_i8_gemm *g, int row, int col, __m512i acc) {
    if (col >= g->n) return;
    const __mmask16 keep = g->keep[col / 16];
    if (!keep) return;
    const int count = __builtin_popcount(keep);
    const __mmask16 mask = (__mmask16)(count == 16 ? 0xFFFF : (1u << count) - 1);
    const ptrdiff_t at = (ptrdiff_t)row * g->row_stride + g->dest[col / 16];
    switch (g->output.kind) {
    case QAT_I8_OUT_INT32:
        _mm512_mask_storeu_epi32((int32_t *)g->out + at, mask, _mm512_maskz_compress_epi32(keep, acc));
        break;
    case QAT_I8_OUT_FLOAT:
        _mm512_mask_storeu_ps((float *)g->out + at, mask, _mm512_maskz_compress_ps(keep, dequantize16(g, row, acc)));
        break;
    case QAT_I8_OUT_INT8:
        _mm512_mask_cvtepi32_storeu_epi8((int8_t *)g->out + at, mask, _mm512_maskz_compress_epi32(keep, requant16(g, row, acc)));
        break;
    }
}

// One tile; mr, nv and mode are constants after inlining, so acc[][] lives in registers.
// mode (one instance each, so no tile carries store code it never runs): TAPS_KEPT, an implicit
// GEMM (group q of the tile's columns read at g->tap[q], not q·npad; kept lanes stored to dest);
// TAPS_PLAIN, taps with plain stores (images as columns, col_stride apart); MATRIX_KEPT, the
// column matrix with kept stores (placed stores); MATRIX_PLAIN, the column matrix.
enum { MATRIX_PLAIN = 0, TAPS_KEPT = 1, TAPS_PLAIN = 2, MATRIX_KEPT = 3 };
static inline __attribute__((always_inline)) QAT_I8_TARGET_VNNI
void tile(const qat_i8_gemm *g, int i0, int j0, const int mr, const int nv, const int mode) {
    const int implicit = mode == TAPS_KEPT || mode == TAPS_PLAIN, kept = mode == TAPS_KEPT || mode == MATRIX_KEPT;
    // Fully unrolled loops keep acc[][] in registers (left to itself, clang kept the 5- and 6-row
    // tiles on the stack: a memset and loads and stores around every vpdpbusd).
    __m512i acc[MR8][NV];
#pragma clang loop unroll(full)
    for (int r = 0; r < mr; r++)
#pragma clang loop unroll(full)
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_si512();
    // Each group of 4 weights is read as one int32 and broadcast to all lanes.
    const int8_t *a = g->a + (size_t)i0 * g->k4 * 4;
    const uint8_t *b = g->b + (size_t)j0 * 4;
    for (int q = 0; q < g->k4; q++) {
        __m512i u[NV];
#pragma clang loop unroll(full)
        for (int v = 0; v < nv; v++)
            u[v] = _mm512_loadu_si512(b + (implicit ? (size_t)g->tap[q] : (size_t)q * g->npad) * 4 + v * 64);
#pragma clang loop unroll(full)
        for (int r = 0; r < mr; r++) {
            int32_t four;  // memcpy: the int8 array is read 32 bits at a time
            memcpy(&four, a + ((size_t)r * g->k4 + q) * 4, sizeof four);
            const __m512i w = _mm512_set1_epi32(four);
#pragma clang loop unroll(full)
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], u[v], w);
        }
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < mr; r++) {
        const __m512i corr = _mm512_set1_epi32(g->corr[i0 + r]);
        if (kept) {
#pragma clang loop unroll(full)
            for (int v = 0; v < nv; v++) store16_kept(g, i0 + r, j0 + 16 * v, _mm512_add_epi32(acc[r][v], corr));
            continue;
        }
        if (g->output.kind == QAT_I8_OUT_INT8 && g->col_stride == 1) {
            __m512i a[NV];
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v++) a[v] = v < nv ? _mm512_add_epi32(acc[r][v], corr) : _mm512_setzero_si512();
            store64_int8(g, i0 + r, j0, nv, a[0], a[1], a[2], a[3]);
            continue;
        }
#pragma clang loop unroll(full)
        for (int v = 0; v < nv; v++) store16(g, i0 + r, j0 + 16 * v, _mm512_add_epi32(acc[r][v], corr));
    }
}

#define TILE_ROWS(R, IMPLICIT)                                         \
    case R:                                                      \
        switch (nv) {                                            \
        case 1: tile(g, i0, j0, R, 1, IMPLICIT); break;          \
        case 2: tile(g, i0, j0, R, 2, IMPLICIT); break;          \
        case 3: tile(g, i0, j0, R, 3, IMPLICIT); break;          \
        default: tile(g, i0, j0, R, 4, IMPLICIT); break;         \
        }                                                        \
        break;

#define TILE_8ROWS(NVEC, IMPLICIT)                                     \
    case NVEC: tile(g, i0, j0, 8, NVEC, IMPLICIT); break;

// The tile loops, once per mode of tile (column matrix or taps, plain or kept stores).
#define GEMM_LOOPS(IMPLICIT)                                                                      \
    do {                                                                                          \
        if (g->m % 8 == 0 && qat_i8_eight_row_tiles) {                                            \
            for (int j0 = 0; j0 < columns; j0 += 48) {                                            \
                const int nv = (columns - j0) / 16 < 3 ? (columns - j0) / 16 : 3;                 \
                for (int i0 = 0; i0 < g->m; i0 += 8) {                                            \
                    switch (nv) { TILE_8ROWS(1, IMPLICIT) TILE_8ROWS(2, IMPLICIT) default: tile(g, i0, j0, 8, 3, IMPLICIT); break; } \
                }                                                                                 \
            }                                                                                     \
            return;                                                                               \
        }                                                                                         \
        for (int j0 = 0; j0 < columns; j0 += 16 * NV) {                                          \
            const int nv = (columns - j0) / 16 < NV ? (columns - j0) / 16 : NV;                   \
            for (int i0 = 0; i0 < g->m; i0 += MR) {                                               \
                const int mr = g->m - i0 < MR ? g->m - i0 : MR;                                   \
                switch (mr) {                                                                     \
                    TILE_ROWS(1, IMPLICIT) TILE_ROWS(2, IMPLICIT) TILE_ROWS(3, IMPLICIT) TILE_ROWS(4, IMPLICIT) TILE_ROWS(5, IMPLICIT) TILE_ROWS(6, IMPLICIT) \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    } while (0)

// One function per tile mode: each compiled as the single mode it runs.
#define GEMM_MODE(NAME, MODE)                                                     \
    __attribute__((noinline)) static QAT_I8_TARGET_VNNI void NAME(const qat_i8_gemm *g) { \
        const int columns = (g->n + 15) / 16 * 16;                                \
        GEMM_LOOPS(MODE);                                                         \
    }
GEMM_MODE(gemm_taps_kept, TAPS_KEPT)
GEMM_MODE(gemm_taps_plain, TAPS_PLAIN)
GEMM_MODE(gemm_matrix_kept, MATRIX_KEPT)
GEMM_MODE(gemm_matrix_plain, MATRIX_PLAIN)

QAT_I8_TARGET_VNNI void qat_i8_gemm_vnni(const qat_i8_gemm *g) {
    // Column tiles outside: the 64-column slice of b (k4 × 256 bytes) stays in L1 while
    // every row tile passes over it. Output channels a multiple of 8 run 8 rows × 3 vectors
    // (24 accumulators, as 6 × 4): 8-channel layers in one row tile instead of 6 + 2, whose
    // 2-row tile loads as many columns for a third of the products. Columns: b's row stride
    // npad may be longer (or, direct 1×1, not a multiple of 16).
    if (g->tap && g->keep) gemm_taps_kept(g);
    else if (g->tap) gemm_taps_plain(g);
    else if (g->keep) gemm_matrix_kept(g);
    else gemm_matrix_plain(g);
}
