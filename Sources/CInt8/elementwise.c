// Requantize, max pool, residual add, quantize, dequantize and finishing depthwise accumulators: plain loops compiled three times
// (elementwise_body.h) and picked by path like the GEMM kernels.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "int8_internal.h"

#pragma clang fp contract(off)  // a·b + c must stay two roundings, as in the Swift simulation

#define SUFFIX portable
#define TARGET
#include "elementwise_body.h"
#undef SUFFIX
#undef TARGET

#define SUFFIX avx2
#define TARGET QAT_I8_TARGET_AVX2
#include "elementwise_body.h"
#undef SUFFIX
#undef TARGET

#define SUFFIX vnni
#define TARGET QAT_I8_TARGET_VNNI
#include "elementwise_body.h"
#undef SUFFIX
#undef TARGET

#define DISPATCH(fn, ...)                                      \
    switch (path) {                                            \
    case QAT_I8_VNNI: fn##_vnni(__VA_ARGS__); break;           \
    case QAT_I8_AVX2: fn##_avx2(__VA_ARGS__); break;           \
    default: fn##_portable(__VA_ARGS__); break;                \
    }

void qat_i8_requantize(qat_i8_path path, const int32_t *acc, size_t n, size_t channels, size_t plane,
                       const float *multiplier, const int32_t *shift, int32_t zero_point, int32_t lo, int32_t hi,
                       qat_i8_round_mode round_mode, int8_t *out) {
    DISPATCH(requantize, acc, n, channels, plane, multiplier, shift, zero_point, lo, hi, round_mode, out)
}

void qat_i8_maxpool(qat_i8_path path, const int8_t *x, int8_t *y, size_t planes,
                    size_t h, size_t w, size_t k, size_t s) {
    if (path != QAT_I8_PORTABLE && k == 2 && s == 2) { qat_i8_maxpool2x2_fast(x, y, planes, h, w); return; }
    DISPATCH(maxpool, x, y, planes, h, w, k, s)
}

void qat_i8_maxpool_padded(qat_i8_path path, const int8_t *x, int8_t *y, size_t planes, const qat_i8_pool_geometry *g) {
    const int plain = g->pad_top == 0 && g->pad_left == 0 && g->kh == g->kw && g->sh == g->sw && g->kh <= g->h && g->kw <= g->w &&
                      g->oh == (g->h - g->kh) / g->sh + 1 && g->ow == (g->w - g->kw) / g->sw + 1;
    if (plain) {
        qat_i8_maxpool(path, x, y, planes, (size_t)g->h, (size_t)g->w, (size_t)g->kh, (size_t)g->sh);
        return;
    }
    int8_t *rowmax = qat_i8_checked_malloc((size_t)g->w);
    DISPATCH(maxpool_padded, x, y, planes, g, rowmax)
    free(rowmax);
}

// Pooling accumulators equals pooling their floats when the dequantize is increasing (a scale
// above 0, finite, a finite offset): then it never makes a NaN or a −0, so the float pool's
// first-maximum rule picks the same value (int8_internal.h, qat_i8_maxpool_accumulators_vnni16).
int qat_i8_pool_accumulators_allowed = 1;

int qat_i8_dequantize_is_increasing(const qat_i8_output *o, int channels) {
    for (int c = 0; c < channels; c++) {
        if (!(o->scale[c] > 0.0f && isfinite(o->scale[c]))) return 0;
        if (o->offset && !isfinite(o->offset[c])) return 0;
    }
    return 1;
}

void qat_i8_allow_pool_accumulators(int allowed) { qat_i8_pool_accumulators_allowed = allowed; }

static int maxpool_float_vectorised = 1;
void qat_i8_vectorise_maxpool_float(int enabled) { maxpool_float_vectorised = enabled; }

void qat_i8_maxpool_float(qat_i8_path path, const float *x, float *y, size_t planes, const qat_i8_pool_geometry *g) {
    if (maxpool_float_vectorised && (g->sw == 1 || g->sw == 2)) {
        if (path == QAT_I8_VNNI) { qat_i8_maxpool_float_vnni16(x, y, planes, g); return; }
        if (path == QAT_I8_AVX2) { qat_i8_maxpool_float_avx2x8(x, y, planes, g); return; }
    }
    float *scratch = qat_i8_checked_malloc(((size_t)g->sw * (g->ow + g->kw) + g->w) * sizeof(float));
    DISPATCH(maxpool_float, x, y, planes, g, scratch)
    free(scratch);
}

static int hard_swish_vectorised = 1;
void qat_i8_vectorise_hard_swish(int enabled) { hard_swish_vectorised = enabled; }

void qat_i8_hard_swish(qat_i8_path path, const float *x, float *y, size_t count) {
    if (hard_swish_vectorised && path == QAT_I8_VNNI) { qat_i8_hard_swish_vnni16(x, y, count); return; }
    if (hard_swish_vectorised && path == QAT_I8_AVX2) { qat_i8_hard_swish_avx2x8(x, y, count); return; }
    DISPATCH(hard_swish, x, y, count)
}

void qat_i8_lookup(qat_i8_path path, const int8_t *q, const float *table, float *y, size_t count) {
    DISPATCH(lookup, q, table, y, count)
}

// The vector paths take groups of eight planes (float_nodes_simd.c), the loops the rest.
void qat_i8_global_avgpool(qat_i8_path path, const float *x, size_t planes, size_t area, float factor, float *y) {
    const size_t done = path == QAT_I8_PORTABLE ? 0 : qat_i8_global_avgpool_fast(x, NULL, 0, 0, planes, area, factor, y);
    DISPATCH(global_avgpool, x + done * area, planes - done, area, factor, y + done)
}

void qat_i8_global_avgpool_codes(qat_i8_path path, const int8_t *q, float scale, int32_t zero, size_t planes,
                                 size_t area, float factor, float *y) {
    const size_t done = path == QAT_I8_PORTABLE ? 0 : qat_i8_global_avgpool_fast(NULL, q, scale, zero, planes, area, factor, y);
    DISPATCH(global_avgpool_codes, q + done * area, scale, zero, planes - done, area, factor, y + done)
}

void qat_i8_scale_rows(qat_i8_path path, const float *x, const float *per_row, size_t rows, size_t length, float *y) {
    DISPATCH(scale_rows, x, per_row, rows, length, y)
}

void qat_i8_add(qat_i8_path path, const int8_t *a, float scale_a, int32_t zero_a,
                const int8_t *b, float scale_b, int32_t zero_b,
                float scale_y, int32_t zero_y, int32_t lo, int32_t hi, qat_i8_round_mode round_mode, int8_t *y, size_t count) {
    DISPATCH(add, a, scale_a, zero_a, b, scale_b, zero_b, scale_y, zero_y, lo, hi, round_mode, y, count)
}

void qat_i8_quantize_exact(qat_i8_path path, const float *x, float scale, int32_t zero, int32_t lo, qat_i8_round_mode round_mode,
                           int8_t *q, size_t count) {
    DISPATCH(quantize, x, scale, zero, lo, round_mode, q, count)
}

// On AVX2, ties to even: by a product with 1/scale where that gives the same codes (quantize_reciprocal.c).
static int reciprocal_applies(qat_i8_path path, float scale, qat_i8_round_mode round_mode) {
    return path == QAT_I8_AVX2 && round_mode == QAT_I8_ROUND_HALF_EVEN && qat_i8_reciprocal_quantize_applies(scale);
}

void qat_i8_quantize(qat_i8_path path, const float *x, float scale, int32_t zero, int32_t lo, qat_i8_round_mode round_mode,
                     int8_t *q, size_t count) {
    if (reciprocal_applies(path, scale, round_mode)) qat_i8_quantize_reciprocal_avx2(x, scale, zero, lo, q, count);
    else qat_i8_quantize_exact(path, x, scale, zero, lo, round_mode, q, count);
}

// The float sums go through a small buffer, a block at a time, into the quantize loop above.
void qat_i8_add_quantize(qat_i8_path path, const float *a, const float *b, float scale, int32_t zero, int32_t lo,
                         qat_i8_round_mode round_mode, int8_t *q, size_t count) {
    float sum[1024];
    for (size_t i = 0; i < count; i += 1024) {
        const size_t block = count - i < 1024 ? count - i : 1024;
        for (size_t j = 0; j < block; j++) sum[j] = a[i + j] + b[i + j];
        qat_i8_quantize(path, sum, scale, zero, lo, round_mode, q + i, block);
    }
}

void qat_i8_hard_swish_quantize_exact(qat_i8_path path, const float *x, float scale, int32_t zero, int32_t lo,
                                      qat_i8_round_mode round_mode, int8_t *q, size_t count) {
    float y[1024];
    for (size_t i = 0; i < count; i += 1024) {
        const size_t block = count - i < 1024 ? count - i : 1024;
        qat_i8_hard_swish(path, x + i, y, block);
        qat_i8_quantize_exact(path, y, scale, zero, lo, round_mode, q + i, block);
    }
}

void qat_i8_hard_swish_quantize(qat_i8_path path, const float *x, float scale, int32_t zero, int32_t lo,
                                qat_i8_round_mode round_mode, int8_t *q, size_t count) {
    if (reciprocal_applies(path, scale, round_mode)) qat_i8_hard_swish_quantize_reciprocal_avx2(x, scale, zero, lo, q, count);
    else qat_i8_hard_swish_quantize_exact(path, x, scale, zero, lo, round_mode, q, count);
}

void qat_i8_hard_swish_epilogue_run(qat_i8_path path, const qat_i8_hard_swish_epilogue *e, float *floats, int8_t *codes,
                                    size_t count) {
    const qat_i8_quantize_grid *q = e->quantize;
    if (q) qat_i8_hard_swish_quantize(path, floats, q->scale, q->zero, q->lo, q->round_mode, codes, count);
    else qat_i8_hard_swish(path, floats, floats, count);
}

void qat_i8_dequantize(qat_i8_path path, const int8_t *q, float scale, int32_t zero, float *x, size_t count) {
    DISPATCH(dequantize, q, scale, zero, x, count)
}

void qat_i8_finish(qat_i8_path path, const int32_t *acc, size_t rows, size_t cols, size_t acc_stride,
                   qat_i8_output output, int channel, void *out) {
    DISPATCH(finish, acc, rows, cols, acc_stride, output, channel, out)
}
