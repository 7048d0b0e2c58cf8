// Depthwise convolution (groups == channels): the driver and the portable path.
//
// Why a direct kernel: im2col + GEMM per group would be a GEMM with one row (or `multiplier`
// rows) and K = kh·kw, all packing and no reuse. Instead each input plane is turned once into
// "rows" (int8_internal.h): per padded input row and group of 4 kernel columns, the 4 input bytes
// of each output column side by side, shared by the `multiplier` output channels of that input.
// An output row is then, per kernel row, kw4 dot products of 4 bytes per output column:
// contiguous loads, vectorised over output pixels (NCHW keeps a plane's pixels together, while
// channels are a plane apart), 16 output columns per vpdpbusd (VNNI) or 8 per two vpmaddwd
// (AVX2), 3×3 unrolled. The arithmetic is the GEMM's (int8_internal.h): u = q + 128,
// acc = Σ u·w + corr with corr = b_q − (128 + o_d)·Σ w over all taps (padding holds the code
// o_d, so its taps add 0), exact in int32, so every path gets the same acc. The vector paths
// requantize in registers with the steps of qat_i8_store1; portable (and the int32 and float
// outputs) goes through qat_i8_finish, the same formula.
#include <stdlib.h>
#include <string.h>
#include "int8_internal.h"

static int round_up16(int n) { return (n + 15) / 16 * 16; }

void qat_i8_depthwise_rows_portable(const int8_t *plane, const qat_i8_rows_shape *s, uint8_t *rows) {
    for (int y = 0; y < s->hp; y++) {
        for (int g = 0; g < s->kw4; g++) {
            for (int t = 0; t < 4; t++) {
                const int kx = 4 * g + t;
                const int8_t *src = plane + (size_t)y * s->wp + (kx < s->kw ? (size_t)kx * s->dw : 0);
                uint8_t *dst = rows + ((size_t)y * s->kw4 + g) * s->owpad * 4 + t;
                for (int ox = 0; ox < s->ow; ox++) dst[(size_t)ox * 4] = (uint8_t)src[(size_t)ox * s->sw] ^ 0x80;
            }
        }
    }
}

void qat_i8_depthwise_plane_portable(const qat_i8_depthwise_plane *p) {
    const size_t block = (size_t)p->owpad * 4;
    for (int oy = 0; oy < p->oh; oy++) {
        int32_t *acc = p->acc + (size_t)oy * p->owpad;
        for (int ox = 0; ox < p->owpad; ox++) acc[ox] = p->corr;
        for (int ky = 0; ky < p->kh; ky++) {
            const uint8_t *r = p->rows + (size_t)(oy * p->sh + ky * p->dh) * p->kw4 * block;
            for (int g = 0; g < p->kw4; g++, r += block) {
                const int8_t *w = p->w + ((size_t)ky * p->kw4 + g) * 4;
                const int32_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
                for (int ox = 0; ox < p->owpad; ox++)
                    acc[ox] += w0 * r[4 * ox] + w1 * r[4 * ox + 1] + w2 * r[4 * ox + 2] + w3 * r[4 * ox + 3];
            }
        }
    }
}

static size_t element_size(qat_i8_out_kind kind) { return kind == QAT_I8_OUT_INT8 ? 1 : 4; }

void qat_i8_conv2d_depthwise(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                             const int8_t *weight, const int32_t *bias, qat_i8_output output,
                             const qat_i8_pool_geometry *pool, void *out) {
    qat_i8_depthwise_impl(path, x, x_zero, g, weight, bias, output, pool, NULL, out);
}

// With `hard_swish` (float output, no pool): each image's float planes are written (to a scratch
// image when they are then quantized), then hardSwish'ed (and quantized) while in cache.
void qat_i8_depthwise_impl(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                           const int8_t *weight, const int32_t *bias, qat_i8_output output, const qat_i8_pool_geometry *pool,
                           const qat_i8_hard_swish_epilogue *hard_swish, void *out) {
    if (pool) output.kind = QAT_I8_OUT_INT8;
    if (path == QAT_I8_AVX2 && !pool && qat_i8_depthwise_avx2_channels_applies(g, &output)) {
        qat_i8_depthwise_avx2_channels(x, x_zero, g, weight, bias, output, hard_swish, out);
        return;
    }
    const int c = g->c, h = g->h, w = g->w, oc = g->oc, multiplier = oc / c;
    const int kh = g->kh, kw = g->kw, kw4 = (kw + 3) / 4;
    const int oh = qat_i8_conv_out_h(g), ow = qat_i8_conv_out_w(g), owpad = round_up16(ow);
    const int hp = h + g->pad_top + g->pad_bottom, wp = w + g->pad_left + g->pad_right;

    // Weights [oc][kh][kw] → [oc][kh][kw4][4] with zero weights past kw; corr as in the GEMM.
    const size_t taps4 = (size_t)kh * kw4 * 4;
    int8_t *wpack = qat_i8_checked_malloc((size_t)oc * taps4);
    memset(wpack, 0, (size_t)oc * taps4);
    int32_t *corr = qat_i8_checked_malloc((size_t)oc * sizeof(int32_t));
    for (int o = 0; o < oc; o++) {
        int64_t sum = 0;
        for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++) {
                const int8_t v = weight[((size_t)o * kh + ky) * kw + kx];
                wpack[(size_t)o * taps4 + ((size_t)ky * kw4 + kx / 4) * 4 + kx % 4] = v;
                sum += v;
            }
        corr[o] = (int32_t)((int64_t)bias[o] - (128 + (int64_t)x_zero) * sum);
    }

    // One padded plane of codes; its border and 128 spare bytes (over-read by the fast row
    // builder and the flat kernel) are the code of real zero, written once: every channel copies in the same interior.
    // The row builders shift the codes to u8; for the VBMI kernel, which needs no rows, the
    // plane holds u8 itself (shifted as it is copied in).
    const int vbmi = path == QAT_I8_VNNI && kw <= 4 && g->dw == 1 && g->sw <= 2 && qat_i8_cpu_has_vbmi();
    const int8_t shift = vbmi ? (int8_t)0x80 : 0;
    // Small output planes on that kernel: flat, 16 outputs per vector across row ends (depthwise_flat.c).
    qat_i8_flat_table flat;
    const int use_flat = vbmi && qat_i8_flat_table_init(g, wp, owpad, &flat);
    qat_i8_row_packing packing;  // that plane's copy, several rows per vector
    const int packed_copy = vbmi && qat_i8_row_packing_init(w, wp, &packing);
    // AVX2, kernels up to 4 wide at column stride 1 or 2: no rows, the plane itself (depthwise_avx2_direct.c).
    const int avx2_direct = path == QAT_I8_AVX2 && qat_i8_depthwise_avx2_direct_applies(g);
    // Its widened form: the padded plane as int16 instead, built from the codes in one pass.
    const int widened = avx2_direct && qat_i8_depthwise_avx2_widened_applies();
    const size_t padded = (size_t)hp * wp;
    int8_t *plane = qat_i8_checked_malloc(padded + 128);
    memset(plane, x_zero ^ shift, padded + 128);
    int16_t *plane16 = NULL;
    if (widened) {
        plane16 = qat_i8_checked_malloc((padded + 64) * sizeof(int16_t));
        for (size_t i = 0; i < padded + 64; i++) plane16[i] = x_zero;
    }
    const qat_i8_rows_shape rs = {.hp = hp, .wp = wp, .kw = kw, .sw = g->sw, .dw = g->dw, .ow = ow, .kw4 = kw4, .owpad = owpad};
    // Zeroed: the portable builder leaves columns ow…owpad − 1 alone, and the vector kernels read them.
    const size_t rows_bytes = vbmi || avx2_direct ? 0 : (size_t)hp * kw4 * owpad * 4;
    uint8_t *rows = qat_i8_checked_malloc(rows_bytes);
    memset(rows, 0, rows_bytes);
    int32_t *acc = qat_i8_checked_malloc((size_t)oh * owpad * sizeof(int32_t));

    const size_t elem = element_size(output.kind), out_plane = (size_t)oh * ow * elem;
    int8_t *conv_plane = NULL;
    size_t pooled_plane = 0;
    if (pool) {
        conv_plane = qat_i8_checked_malloc(out_plane);
        pooled_plane = (size_t)pool->oh * pool->ow;
    }
    // An image's float planes to a scratch image when they are then quantized (else to out).
    const int swish_codes = hard_swish && hard_swish->quantize;
    float *swish_image = swish_codes ? qat_i8_checked_malloc((size_t)oc * oh * ow * sizeof(float)) : NULL;
    for (int img = 0; img < g->n; img++) {
        for (int ci = 0; ci < c; ci++) {
            const int8_t *src = x + ((size_t)img * c + ci) * h * w;
            if (packed_copy) {
                qat_i8_copy_plane_packed(src, h, w, wp, &packing, (uint8_t *)plane + (size_t)g->pad_top * wp + g->pad_left);
            } else if (vbmi) {
                qat_i8_copy_rows_shifted(src, h, w, (uint8_t *)plane + (size_t)g->pad_top * wp + g->pad_left, wp);
            } else if (widened) {
                qat_i8_depthwise_avx2_widen_plane(src, h, w, wp, x_zero, plane16 + (size_t)g->pad_top * wp + g->pad_left);
            } else {
                for (int y = 0; y < h; y++) memcpy(plane + (size_t)(y + g->pad_top) * wp + g->pad_left, src + (size_t)y * w, (size_t)w);
                if (avx2_direct) {}
                else if (path == QAT_I8_PORTABLE) qat_i8_depthwise_rows_portable(plane, &rs, rows);
                else qat_i8_depthwise_rows_fast(plane, &rs, rows);
            }
            for (int j = 0; j < multiplier; j++) {
                const int o = ci * multiplier + j;
                const size_t at = (size_t)img * oc + o;
                int8_t *codes = NULL;  // the vector paths requantize in registers
                // Shifts and tie rules other than half to even: qat_i8_finish.
                if (output.kind == QAT_I8_OUT_INT8 && !output.shift && output.round_mode == QAT_I8_ROUND_HALF_EVEN &&
                    path != QAT_I8_PORTABLE)
                    codes = pool ? conv_plane : (int8_t *)out + at * out_plane;
                const qat_i8_depthwise_plane p = {.rows = rows, .w = wpack + (size_t)o * taps4, .corr = corr[o], .kh = kh,
                                                  .sh = g->sh, .dh = g->dh, .kw4 = kw4, .oh = oh, .ow = ow, .owpad = owpad,
                                                  .acc = acc, .codes = codes, .output = output, .channel = o,
                                                  .plane = (const uint8_t *)plane, .wp = wp, .sw = g->sw};
                void *plane_out = pool ? (void *)conv_plane : swish_codes ? (void *)(swish_image + (size_t)o * oh * ow)
                                                                          : (void *)((char *)out + at * out_plane);
                if (widened) {  // floats and int32 straight out; other requantizations through acc
                    qat_i8_depthwise_plane q = p;
                    q.plane16 = plane16;
                    if (output.kind != QAT_I8_OUT_INT8) q.out = plane_out;
                    qat_i8_depthwise_plane_avx2_widened(&q);
                    if (!codes && !q.out) qat_i8_finish(path, acc, (size_t)oh, (size_t)ow, (size_t)owpad, output, o, plane_out);
                    if (pool) qat_i8_maxpool_padded(path, conv_plane, (int8_t *)out + at * pooled_plane, 1, pool);
                    continue;
                }
                if (use_flat) {
                    // Codes, floats and int32 go straight out; other requantizations through acc.
                    const int direct = codes || output.kind != QAT_I8_OUT_INT8;
                    qat_i8_depthwise_plane_flat(&p, &flat, direct ? plane_out : acc);
                    if (!direct) qat_i8_finish(path, acc, 1, (size_t)flat.n, (size_t)flat.n, output, o, plane_out);
                    if (pool) qat_i8_maxpool_padded(path, conv_plane, (int8_t *)out + at * pooled_plane, 1, pool);
                    continue;
                }
                switch (path) {
                case QAT_I8_VNNI: if (vbmi) qat_i8_depthwise_plane_vbmi(&p); else qat_i8_depthwise_plane_vnni(&p); break;
                case QAT_I8_AVX2: if (avx2_direct) qat_i8_depthwise_plane_avx2_direct(&p); else qat_i8_depthwise_plane_avx2(&p); break;
                default: qat_i8_depthwise_plane_portable(&p); break;
                }
                if (!codes) qat_i8_finish(path, acc, (size_t)oh, (size_t)ow, (size_t)owpad, output, o, plane_out);
                if (pool) qat_i8_maxpool_padded(path, conv_plane, (int8_t *)out + at * pooled_plane, 1, pool);
            }
        }
        if (hard_swish) {  // the image's float planes, still in cache
            const size_t values = (size_t)oc * oh * ow;
            float *floats = swish_codes ? swish_image : (float *)out + (size_t)img * values;
            qat_i8_hard_swish_epilogue_run(path, hard_swish, floats, swish_codes ? (int8_t *)out + (size_t)img * values : NULL, values);
        }
    }
    if (use_flat) qat_i8_flat_table_free(&flat);
    free(conv_plane);
    free(swish_image);
    free(acc);
    free(rows);
    free(plane);
    free(plane16);
    free(corr);
    free(wpack);
}
