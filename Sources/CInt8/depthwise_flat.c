// Depthwise convolution on small output planes, VNNI + VBMI path: the output plane taken as one
// flat run of oh·ow values, 16 per vector, rows wrapping from one vector lane to the next.
//
// Why: the row kernels (depthwise_simd.c) fill one vector per output row, so a 7×7 output is 7
// vectors with 7 of 16 lanes used, each with its own requantize; flat, it is 4 full vectors
// (14×14: 13 instead of 14). Lane i of vector v is output j = 16v + i at (oy, ox) = (j / ow, j % ow);
// for kernel row ky its 4 operand bytes are the padded u8 plane's bytes
//     plane[(oy·sh + ky·dh)·wp + ox·sw + t·dw],  t = 0…3 (t ≥ kw: weight zero, any byte),
// which lie within 128 bytes of the vector's first lane: one vpermi2b out of two 64-byte loads picks
// them, an index vector per v built once per call (the same for every channel, image and ky).
// The products and the accumulators are the row kernels' (same u, weights and corr), and the
// requantize in registers takes the steps of qat_i8_store1, so the codes are the same bit for bit.
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "int8_internal.h"

static int flat_allowed = 1;
void qat_i8_allow_flat_depthwise(int allowed) { flat_allowed = allowed; }

int qat_i8_flat_table_init(const qat_i8_conv_geometry *g, int wp, int owpad, qat_i8_flat_table *t) {
    memset(t, 0, sizeof *t);
    if (!flat_allowed || g->kw > 4) return 0;
    const int oh = qat_i8_conv_out_h(g), ow = qat_i8_conv_out_w(g), n = oh * ow;
    const int vectors = (n + 15) / 16;
    // Only where it saves vectors: the row kernels use owpad / 16 per output row.
    if (vectors >= oh * (owpad / 16)) return 0;
    int32_t *base = qat_i8_checked_malloc((size_t)vectors * sizeof(int32_t));
    uint8_t *index = qat_i8_checked_malloc((size_t)vectors * 64);
    for (int v = 0; v < vectors; v++) {
        const int first = 16 * v;
        base[v] = first / ow * g->sh * wp + first % ow * g->sw;
        for (int i = 0; i < 16; i++) {
            const int j = first + i < n ? first + i : first;  // lanes past the plane: any byte
            const int offset = j / ow * g->sh * wp + j % ow * g->sw - base[v];
            for (int k = 0; k < 4; k++) {
                const int at = k < g->kw ? offset + k * g->dw : 0;
                if (at < 0 || at >= 128) { free(base); free(index); return 0; }
                index[64 * v + 4 * i + k] = (uint8_t)at;
            }
        }
    }
    int widest = 0;
    for (int i = 0; i < vectors * 64; i++) widest = index[i] > widest ? index[i] : widest;
    *t = (qat_i8_flat_table){.n = n, .vectors = vectors, .row_step = g->dh * wp, .two_sources = widest >= 64,
                             .base = base, .index = index};
    return 1;
}

void qat_i8_flat_table_free(qat_i8_flat_table *t) {
    free(t->base);
    free(t->index);
    memset(t, 0, sizeof *t);
}

// Vector v's accumulators go out as p->codes says (requantized codes), or to `out` as floats
// (output kind FLOAT) or int32 (anything else, finished by the caller); lanes past n are not written.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VBMI
void flat_store(const qat_i8_depthwise_plane *p, const qat_i8_flat_table *t, int v, __m512i a, void *out) {
    const int first = 16 * v, valid = t->n - first < 16 ? t->n - first : 16;
    const __mmask16 mask = (__mmask16)((1u << valid) - 1);
    const qat_i8_output *o = &p->output;
    if (p->codes) {
        __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(o->scale[p->channel]));
        if (o->offset) r = _mm512_add_ps(r, _mm512_set1_ps(o->offset[p->channel]));
        r = _mm512_roundscale_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps((float)(o->lo - o->zero_point))),
                          _mm512_set1_ps((float)(o->hi - o->zero_point)));
        const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(r), _mm512_set1_epi32(o->zero_point));
        _mm512_mask_cvtepi32_storeu_epi8(p->codes + first, mask, q);
    } else if (o->kind == QAT_I8_OUT_FLOAT) {
        __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(o->scale[p->channel]));
        if (o->offset) y = _mm512_add_ps(y, _mm512_set1_ps(o->offset[p->channel]));
        _mm512_mask_storeu_ps((float *)out + first, mask, y);
    } else {
        _mm512_mask_storeu_epi32((int32_t *)out + first, mask, a);
    }
}

// kh and two_sources are constants after inlining (3 gets its own copy). With one source, every
// index is below 64 and one load and vpermb do (stride 1 mostly); else two loads and vpermi2b.
static inline __attribute__((always_inline)) QAT_I8_TARGET_VBMI
void flat_plane(const qat_i8_depthwise_plane *p, const qat_i8_flat_table *t, void *out, const int kh, const int two_sources) {
    __m512i w[kh];
    for (int ky = 0; ky < kh; ky++) {
        int32_t four;
        memcpy(&four, p->w + 4 * ky, 4);
        w[ky] = _mm512_set1_epi32(four);
    }
    const __m512i corr = _mm512_set1_epi32(p->corr);
    for (int v = 0; v < t->vectors; v++) {
        const __m512i index = _mm512_loadu_si512(t->index + 64 * v);
        const uint8_t *row = p->plane + t->base[v];
        __m512i a = corr;
        for (int ky = 0; ky < kh; ky++, row += t->row_step) {
            const __m512i u = two_sources ? _mm512_permutex2var_epi8(_mm512_loadu_si512(row), index, _mm512_loadu_si512(row + 64))
                                          : _mm512_permutexvar_epi8(index, _mm512_loadu_si512(row));
            a = _mm512_dpbusd_epi32(a, u, w[ky]);
        }
        flat_store(p, t, v, a, out);
    }
}

QAT_I8_TARGET_VBMI void qat_i8_depthwise_plane_flat(const qat_i8_depthwise_plane *p, const qat_i8_flat_table *t, void *out) {
    if (p->kh == 3 && !t->two_sources) flat_plane(p, t, out, 3, 0);
    else if (p->kh == 3) flat_plane(p, t, out, 3, 1);
    else flat_plane(p, t, out, p->kh, 1);
}
