// The activation operands and the conv2d / linear drivers. The weight operand is packed in
// gemm_pack.c (and kept per layer by conv_weights.c); the paths' GEMMs are gemm_portable.c,
// gemm_avx2.c and gemm_vnni.c, and which paths this CPU has, cpu_features.c.
// The math of the shared GEMM (u = q + 128, corr) is in int8_internal.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>
#include "int8_internal.h"

void *qat_i8_checked_malloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "qat int8: out of memory (%zu bytes)\n", bytes); abort(); }
    return p;
}

static void *checked_malloc(size_t bytes) { return qat_i8_checked_malloc(bytes); }

// On a 64-byte boundary: the AVX2 pair kernel reads 64 bytes of a GEMM operand per group of k,
// which then never straddle two cache lines (their rows are multiples of 64 bytes apart).
static void *checked_malloc_lines(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) { fprintf(stderr, "qat int8: out of memory (%zu bytes)\n", bytes); abort(); }
    return p;
}

static int round_up16(int n) { return (n + 15) / 16 * 16; }

static size_t element_size(qat_i8_out_kind kind) { return kind == QAT_I8_OUT_INT8 ? 1 : 4; }

// rows runs of `bytes` from src (src_stride apart) to dst (dst_stride apart). The small runs of
// ResNet's 2×2 … 7×7 planes (4 to 196 bytes) by constant-size copies the compiler inlines, 16
// bytes at a time with the last 16 overlapping: a call to memcpy per channel and image cost more
// than the copy (16 k calls per conv on 2×2; 32 → 64 1×1 stride 2 on 4×4: 0.136 → 0.076 ms).
static void copy_rows(char *dst, size_t dst_stride, const char *src, size_t src_stride, int rows, size_t bytes) {
    if (bytes == 4) {
        for (int r = 0; r < rows; r++) memcpy(dst + r * dst_stride, src + r * src_stride, 4);
    } else if (bytes >= 16 && bytes <= 256) {
        for (int r = 0; r < rows; r++) {
            char *d = dst + r * dst_stride;
            const char *s = src + r * src_stride;
            for (size_t j = 0; j + 16 < bytes; j += 16) memcpy(d + j, s + j, 16);
            memcpy(d + bytes - 16, s + bytes - 16, 16);
        }
    } else {
        for (int r = 0; r < rows; r++) memcpy(dst + r * dst_stride, src + r * src_stride, bytes);
    }
}

// Implicit GEMM (VNNI, groups 1, stride 1, one image per GEMM): instead of a column matrix, the
// GEMM reads the padded image itself, each group of 4 k at a fixed word offset (tap[q]) from the
// column. Column j is grid position (oy, ox) = (j / wp, j mod wp) of the padded width, so that
// the 16 columns of a vector are 16 consecutive words; the wp − ow columns at each row end are
// not outputs (qat_i8_gemm's keep / dest drop them): wp/ow more columns (7 % on 28×28 with
// padding 1) for no im2col at all. Two image layouts give the words:
//   channel-blocked (channels a multiple of 4, qat_i8_block_channels): word (cb, y, x) holds
//     channels 4·cb … 4·cb + 3 of pixel (y, x); q = (cb, ky, kx), tap = cb·hp·wp + ky·dh·wp + kx·dw;
//   row taps (other channel counts, kw ≤ 4, when c·kh groups are no more than the column matrix's
//     k4: a 1-channel stem): word (ci, y, x) holds pixels x, x + dw, x + 2·dw, x + 3·dw of row y;
//     q = (ci, ky), tap = ci·hp·wp + ky·dh·wp.
// The products are the same exact integers in another order of addition: the same sums.
typedef enum { IMPLICIT_NONE, IMPLICIT_BLOCKED, IMPLICIT_ROW_TAPS } implicit_layout;

// Off by default until an unexplained failure seen with it on is understood (docs/BENCHMARKS.md).
int qat_i8_implicit_gemm_allowed = 1;
void qat_i8_allow_implicit_gemm(int allowed) { qat_i8_implicit_gemm_allowed = allowed; }

static implicit_layout choose_implicit(qat_i8_path path, const qat_i8_conv_geometry *cg, int ow, int wp, int p, int k4) {
    if (path != QAT_I8_VNNI || !qat_i8_implicit_gemm_allowed || cg->groups != 1 || cg->sh != 1 || cg->sw != 1) return IMPLICIT_NONE;
    // One image per GEMM (p ≥ 64), and at most a quarter more columns than outputs (14×14 with
    // padding 1: 16/14; 7×7: 9/7, where the blocked copies of several images per GEMM win).
    if (p < 64 || 4 * (wp - ow) > ow) return IMPLICIT_NONE;
    if (cg->c % 4 == 0) return IMPLICIT_BLOCKED;
    if (cg->kw <= 4 && 3 * cg->dw <= 64 && cg->c * cg->kh <= k4) return IMPLICIT_ROW_TAPS;
    return IMPLICIT_NONE;
}

// Row taps of each padded u8 plane of xu ([c][hp][wp], 128 spare bytes) into words ([c][hp·wp], 64
// spare bytes): word i of a plane is its bytes i, i + dw, i + 2·dw, i + 3·dw, read flat (a word near a
// row end takes the next row's bytes: only garbage columns and zero weights see them). Planes
// in order: each one's last vector spills into the next, which overwrites it.
static QAT_I8_TARGET_VNNI void row_taps_vnni(const uint8_t *xu, int c, size_t plane, int dw, uint32_t *words) {
    for (int ci = 0; ci < c; ci++) {
        const uint8_t *src = xu + (size_t)ci * plane;
        uint32_t *dst = words + (size_t)ci * plane;
        for (size_t i = 0; i < plane; i += 16) {
            __m512i word = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
            for (int t = 1; t < 4; t++) {
                const __m512i byte = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + i + (size_t)t * dw)));
                word = _mm512_or_si512(word, _mm512_slli_epi32(byte, 8 * t));
            }
            _mm512_storeu_si512(dst + i, word);
        }
    }
}

// keep / dest of qat_i8_gemm for a grid of oh rows of wp columns, ow of them outputs.
static void implicit_columns(int oh, int ow, int wp, uint16_t *keep, int32_t *dest) {
    const int n = (oh - 1) * wp + ow;
    for (int v = 0; v * 16 < n; v++) {
        const int j0 = 16 * v;
        dest[v] = j0 / wp * ow + (j0 % wp < ow ? j0 % wp : ow);
        keep[v] = 0;
        for (int l = 0; l < 16; l++)
            if (j0 + l < n && (j0 + l) % wp < ow) keep[v] |= (uint16_t)(1u << l);
    }
}

static void run_gemm(qat_i8_path path, const qat_i8_gemm *g) {
    switch (path) {
    case QAT_I8_VNNI: qat_i8_gemm_vnni(g); break;
    case QAT_I8_AVX2: qat_i8_gemm_avx2(g); break;
    default: qat_i8_gemm_portable(g); break;
    }
}

// How many images share one GEMM. A small output image (p < 64 pixels) would leave most of a
// 64-column tile empty, so the column matrices of several images sit side by side; of the
// counts that give 64 to 256 columns, the one whose columns waste the least of their last
// 16-column vector (p = 49: 5 images, 245 of 256 columns used; p = 4: 16 images, 64 of 64).
static int images_per_gemm(int p, int n) {
    if (p >= 64) return 1;
    int best = (64 + p - 1) / p;
    for (int b = best; b * p <= 256; b++)
        if ((long)round_up16(b * p) * best * p < (long)round_up16(best * p) * b * p) best = b;
    return best < n ? best : n;
}

static void run_im2col_blocked(qat_i8_path path, const uint8_t *xb, const qat_i8_blocking *s, int npad, uint8_t *b) {
    switch (path) {
    case QAT_I8_VNNI: qat_i8_im2col_blocked_vnni(xb, s, npad, b); break;
    case QAT_I8_AVX2: qat_i8_im2col_blocked_avx2(xb, s, npad, b); break;
    default: qat_i8_im2col_blocked_portable(xb, s, npad, b); break;
    }
}

// Images through im2col + GEMM, `block` images per GEMM (images_per_gemm): their columns side
// by side (image i at columns i·p …), one GEMM writing [oc][block·p] to a staging buffer that is
// then copied out per image. With a `pool`: each image's requantized int8 output goes to a
// scratch buffer (still in L1) and is max pooled from there into `out`, so the full-size conv
// output never exists; with float output (dequantized), the float pool of qat_i8_maxpool_float,
// after QATCore's float ReLU (x < 0 → 0) on the image when `relu`. Channels per group a multiple of 4 take the channel-blocked operands
// (int8_internal.h), and a 1×1 conv with stride 1 and no padding needs no column matrix at all;
// other convs the byte-wise im2col. With a `residual` (float output), each image's floats are added
// to the addend's and quantized while in cache. The accumulators are exact, so none of this changes a result.
// A residual add after a float-output conv: the conv's floats plus `addend` (laid out as the conv
// output), quantized as qat_i8_add_quantize does.
// With `sums` (qat_i8_conv2d_add_relu): the sums, after QATCore's float ReLU when `relu`, go to
// `sums` and, when the kernel's output is not NULL, quantized to it.
typedef struct {
    const float *addend;
    float scale;
    int32_t zero, lo;
    qat_i8_round_mode round_mode;
    float *sums;
    int relu;
} residual_quantize;

// One image of a residual with `sums`: sums[at + j] = conv[j] + addend[at + j] (one IEEE add, then
// x < 0 → 0 when relu: NaN and −0 kept, as QATCore's ReLU), quantized into codes[at …] if codes.
static void add_relu(qat_i8_path path, const float *conv, const residual_quantize *r, size_t at, size_t values, int8_t *codes) {
    const float *addend = r->addend + at;
    float *sums = r->sums + at;
    if (r->relu) {
        for (size_t j = 0; j < values; j++) {
            const float v = conv[j] + addend[j];
            sums[j] = v < 0.0f ? 0.0f : v;
        }
    } else {
        for (size_t j = 0; j < values; j++) sums[j] = conv[j] + addend[j];
    }
    if (codes) qat_i8_quantize(path, sums, r->scale, r->zero, r->lo, r->round_mode, codes + at, values);
}

// One image's conv floats (`values` of them, the image at `at` in the batch) through the residual:
// added and quantized (qat_i8_add_quantize), or with `sums` as add_relu.
__attribute__((noinline)) static void residual_epilogue(qat_i8_path path, const float *conv, const residual_quantize *r, size_t at, size_t values,
                              void *out) {
    if (r->sums) add_relu(path, conv, r, at, values, (int8_t *)out);
    else qat_i8_add_quantize(path, conv, r->addend + at, r->scale, r->zero, r->lo, r->round_mode, (int8_t *)out + at, values);
}

int qat_i8_image_columns_allowed = 1;
int qat_i8_placed_stores_allowed = 1;
void qat_i8_allow_placed_stores(int allowed) { qat_i8_placed_stores_allowed = allowed; }
void qat_i8_allow_image_columns(int allowed) { qat_i8_image_columns_allowed = allowed; }

// Images as columns (VNNI, planes under 64 outputs, channels a multiple of 4, groups 1): the
// blocked copy of up to 256 images is transposed to words xt[cb][hp][wp][image] (images side by
// side, NS = their count rounded up to 16), and each output position (oy, ox) is one implicit
// GEMM over the images: group q = (cb, ky, kx) of column `image` is the word at
// ((cb·hp + oy·sh + ky·dh)·wp + ox·sw + kx·dw)·NS + image. No column matrix (its k·p words per
// image); every column is an output, stored oc·p apart. The same exact sums as the im2col path.
__attribute__((noinline)) static void conv2d_image_columns(const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *cg, const int8_t *weight,
                                 const int32_t *bias, qat_i8_output output, void *out, int relu, const residual_quantize *residual) {
    const int c = cg->c, h = cg->h, w = cg->w, oc = cg->oc, n = cg->n;
    const int oh = qat_i8_conv_out_h(cg), ow = qat_i8_conv_out_w(cg), p = oh * ow;
    const int hp = h + cg->pad_top + cg->pad_bottom, wp = w + cg->pad_left + cg->pad_right, cb = c / 4;
    const int chunk = n < 256 ? n : 256, ns = round_up16(chunk);
    const size_t plane = (size_t)hp * wp, words = (size_t)cb * plane * ns;
    int32_t *corr;
    int8_t *a = qat_i8_pack_weights_blocked(weight, bias, oc, c, cg->kh, cg->kw, x_zero, &corr);
    const int k4 = cb * cg->kh * cg->kw;
    int32_t *tap = checked_malloc((size_t)k4 * sizeof(int32_t));
    for (int b = 0, q = 0; b < cb; b++)
        for (int ky = 0; ky < cg->kh; ky++)
            for (int kx = 0; kx < cg->kw; kx++) tap[q++] = (int32_t)((((size_t)b * hp + ky * cg->dh) * wp + kx * cg->dw) * ns);
    // The blocked images (xb[cb][image][hp][wp], border the code of real zero) and their transpose.
    uint8_t *xb = checked_malloc(words * 4 + 128);
    memset(xb, (uint8_t)x_zero ^ 0x80, words * 4 + 128);
    uint32_t *xt = checked_malloc(words * 4 + 64);
    memset(xt + words, 0, 64);
    const qat_i8_blocking blocking = {.cb = cb, .images = ns, .h = h, .w = w, .hp = hp, .wp = wp,
                                      .pad_top = cg->pad_top, .pad_left = cg->pad_left, .kh = cg->kh, .kw = cg->kw,
                                      .sh = cg->sh, .sw = cg->sw, .dh = cg->dh, .dw = cg->dw, .oh = oh, .ow = ow};
    const size_t elem = element_size(output.kind), out_image = (size_t)oc * p * elem;
    // A residual adds to each image's floats: the GEMM writes a chunk's floats here first.
    char *conv_out = residual ? checked_malloc((size_t)chunk * out_image) : NULL;
    for (int img0 = 0; img0 < n; img0 += chunk) {
        const int images = n - img0 < chunk ? n - img0 : chunk;
        for (int i = 0; i < images; i++) qat_i8_block_channels(QAT_I8_VNNI, x + (size_t)(img0 + i) * c * h * w, &blocking, i, xb);
        const uint32_t *xw = (const uint32_t *)xb;
        for (int b = 0; b < cb; b++)
            for (size_t pix = 0; pix < plane; pix++) {
                uint32_t *dst = xt + ((size_t)b * plane + pix) * ns;
                const uint32_t *src = xw + (size_t)b * ns * plane + pix;
                for (int i = 0; i < ns; i++) dst[i] = src[(size_t)i * plane];
            }
        char *chunk_out = conv_out ? conv_out : (char *)out + (size_t)img0 * out_image;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                const size_t base = ((size_t)oy * cg->sh * wp + (size_t)ox * cg->sw) * ns;
                qat_i8_gemm g = {.m = oc, .n = images, .k4 = k4, .npad = 0, .a = a, .corr = corr, .b = (const uint8_t *)(xt + base),
                                 .output = output, .out = chunk_out + (size_t)(oy * ow + ox) * elem, .row_stride = p,
                                 .col_stride = (ptrdiff_t)oc * p, .relu = relu && output.kind == QAT_I8_OUT_FLOAT, .tap = tap};
                qat_i8_gemm_vnni(&g);
            }
        if (residual)
            for (int i = 0; i < images; i++) {
                const size_t values = (size_t)oc * p;
                residual_epilogue(QAT_I8_VNNI, (const float *)(conv_out + (size_t)i * out_image), residual,
                                  (size_t)(img0 + i) * values, values, out);
            }
    }
    free(conv_out);
    free(xt);
    free(xb);
    free(tap);
    free(corr);
    free(a);
}

static void conv2d_impl(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *cg,
                        const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output, void *out,
                        const qat_i8_pool_geometry *pool, int relu, const residual_quantize *residual,
                        const qat_i8_hard_swish_epilogue *hard_swish) {
    const int c = cg->c, h = cg->h, w = cg->w, oc = cg->oc, groups = cg->groups, n = cg->n;
    const int oh = qat_i8_conv_out_h(cg), ow = qat_i8_conv_out_w(cg);
    const int group_c = c / groups, group_oc = oc / groups;
    const int kk = group_c * cg->kh * cg->kw, k4 = (kk + 3) / 4, p = oh * ow;
    // Winograd (winograd_avx2.c): blocks of 16 images, its sums requantized by the pair kernel's epilogue.
    const int winograd = path == QAT_I8_AVX2 && qat_i8_avx2_pair_tiles && qat_i8_winograd_applies(cg);
    const int block = winograd ? 16 : images_per_gemm(p, n);
    // A float output that is max pooled: pool the exact int32 sums and dequantize only the
    // pooled ones where that gives the same floats (qat_i8_maxpool_accumulators).
    const int pool_shape = path == QAT_I8_VNNI ? pool && pool->w <= 32 && pool->ow <= 16 && pool->kw <= 16
                           : path == QAT_I8_AVX2 && pool && (pool->sw == 1 || pool->sw == 2);
    const int pool_sums = pool_shape && output.kind == QAT_I8_OUT_FLOAT && qat_i8_pool_accumulators_allowed &&
                          qat_i8_dequantize_is_increasing(&output, oc);
    qat_i8_output gemm_output = output;
    if (pool_sums) gemm_output.kind = QAT_I8_OUT_INT32;
    // One input channel, 3×3, stride 1, an int32 output of one image per GEMM (a stem before its max
    // pool; conv_one_channel_avx2.c): the sums plus the bias terms, straight from the padded image,
    // are the output, with no column matrix and no GEMM. (Before a requantizing epilogue, as the
    // GEMM's k4 = 0 pass, it was 7 % slower than im2col + GEMM: 1 → 8 on 28×28, codes out.)
    const int one_channel = !winograd && path == QAT_I8_AVX2 && block == 1 && gemm_output.kind == QAT_I8_OUT_INT32 &&
                            qat_i8_one_channel_applies(cg);
    const int hp = h + cg->pad_top + cg->pad_bottom, wp = w + cg->pad_left + cg->pad_right;
    // Blocked operands where the byte-wise im2col wastes work: outputs narrower than the 16
    // columns it fills per output row, and 1×1 convs without padding (no column matrix). Wider
    // outputs keep the byte-wise one: no faster blocked (measured on 28×28, 32 channels).
    const int direct = !winograd && group_c % 4 == 0 && cg->kh == 1 && cg->kw == 1 && cg->sh == 1 && cg->sw == 1 && hp == h && wp == w;
    // Measured on resnet18-tiny's layers: faster on 2×2 outputs with k ≥ 256 (0.39 → 0.31 ms at 64
    // channels), slower on 4×4 and 7×7 outputs and on short k, where storing each output apart costs
    // more than the column matrix saves.
    if (path == QAT_I8_VNNI && !winograd && qat_i8_image_columns_allowed && groups == 1 && c % 4 == 0 && p <= 8 && k4 >= 64 && !pool
        && !direct && n >= 16 && !hard_swish) {  // (it has no HardSwish epilogue)
        conv2d_image_columns(x, x_zero, cg, weight, bias, output, out, relu, residual);
        return;
    }
    const implicit_layout implicit = direct ? IMPLICIT_NONE : choose_implicit(path, cg, ow, wp, p, k4);
    const int blocked = implicit == IMPLICIT_BLOCKED ||
                        (implicit == IMPLICIT_NONE && !winograd && group_c % 4 == 0 && (ow < 16 || (cg->kh == 1 && cg->kw == 1 && hp == h && wp == w)));
    // Columns padded to 16. Byte-wise im2col of several images: 16 more, so that its overrun past
    // the last image (up to 15 columns) stays in its own row of b instead of the next row's
    // first image, which was written before it. Direct: the blocked images are b.
    const int npad = direct ? block * p : block == 1 ? round_up16(p) : round_up16(block * p) + 16;
    // Weights [oc][group_c·kh·kw] are one matrix whose row blocks are the groups; packed (with the
    // AVX2 pair kernel's pairs, or Winograd's transform) on the first call given this cache.
    const qat_i8_weights_key key = {
        .layout = implicit == IMPLICIT_ROW_TAPS ? QAT_I8_WEIGHTS_ROW_TAPS : blocked ? QAT_I8_WEIGHTS_BLOCKED : QAT_I8_WEIGHTS_PLAIN,
        .x_zero = x_zero, .pairs = path == QAT_I8_AVX2 && qat_i8_avx2_pair_tiles && !winograd, .winograd = winograd,
        .oc = oc, .c = c, .kh = cg->kh, .kw = cg->kw, .groups = groups};
    const qat_i8_prepared_weights *prepared = qat_i8_weights_prepared(cache, &key, weight, bias);
    const int8_t *a = prepared->a;
    const int32_t *corr = prepared->corr, *a_pairs = prepared->a_pairs, *winograd_u = prepared->winograd_u;
    // Winograd's scratch and sums ([oc][sums_stride], a block's columns).
    const size_t sums_stride = (size_t)round_up16(block * p);
    void *winograd_scratch = winograd ? checked_malloc(qat_i8_winograd_scratch_bytes(cg)) : NULL;
    if (winograd) qat_i8_winograd_prepare(cg, x_zero, winograd_scratch);
    // The implicit GEMM's groups, offsets and columns (block is 1 image: p ≥ 64).
    const int implicit_k4 = implicit == IMPLICIT_ROW_TAPS ? c * cg->kh : k4;
    const int grid_columns = (oh - 1) * wp + ow;
    int32_t *tap = NULL, *dest = NULL;
    uint16_t *keep = NULL;
    uint32_t *row_taps = NULL;
    if (implicit != IMPLICIT_NONE) {
        tap = checked_malloc((size_t)implicit_k4 * sizeof(int32_t));
        const int vectors = (grid_columns + 15) / 16;
        keep = checked_malloc((size_t)vectors * sizeof(uint16_t));
        dest = checked_malloc((size_t)vectors * sizeof(int32_t));
        implicit_columns(oh, ow, wp, keep, dest);
        int q = 0;
        if (implicit == IMPLICIT_BLOCKED) {
            for (int cb = 0; cb < c / 4; cb++)
                for (int ky = 0; ky < cg->kh; ky++)
                    for (int kx = 0; kx < cg->kw; kx++) tap[q++] = (cb * hp + ky * cg->dh) * wp + kx * cg->dw;
        } else {
            for (int ci = 0; ci < c; ci++)
                for (int ky = 0; ky < cg->kh; ky++) tap[q++] = (ci * hp + ky * cg->dh) * wp;
            row_taps = checked_malloc((size_t)c * hp * wp * 4 + 128);
            memset((char *)row_taps + (size_t)c * hp * wp * 4, 0, 128);  // garbage columns read into it
        }
    }

    // One padded image in u8 per image of a block; the border (and the spare bytes the fast
    // im2col may over-read) is the code of real zero, written once and never touched again.
    const size_t padded = (size_t)c * hp * wp;
    uint8_t *xu = winograd ? NULL : checked_malloc_lines(block * padded + 128);
    if (xu) memset(xu, (uint8_t)x_zero ^ 0x80, block * padded + 128);
    uint8_t *b = direct || implicit != IMPLICIT_NONE || winograd || one_channel ? NULL : checked_malloc_lines(((size_t)k4 * npad + 16) * 4);
    const qat_i8_im2col_shape shape = {.c = group_c, .hp = hp, .wp = wp, .kh = cg->kh, .kw = cg->kw, .sh = cg->sh,
                                       .sw = cg->sw, .dh = cg->dh, .dw = cg->dw, .oh = oh, .ow = ow, .k4 = k4, .npad = npad};
    const qat_i8_blocking blocking = {.cb = c / 4, .images = block, .h = h, .w = w, .hp = hp, .wp = wp,
                                      .pad_top = cg->pad_top, .pad_left = cg->pad_left, .kh = cg->kh, .kw = cg->kw,
                                      .sh = cg->sh, .sw = cg->sw, .dh = cg->dh, .dw = cg->dw, .oh = oh, .ow = ow};
    qat_i8_blocking group_blocking = blocking;
    group_blocking.cb = group_c / 4;
    const size_t group_bytes = (size_t)group_c * block * hp * wp;  // one group's channel blocks in xu

    int32_t *winograd_sums = winograd ? checked_malloc(((size_t)oc * sums_stride + 16) * sizeof(int32_t)) : NULL;
    // The VNNI GEMM and the AVX2 pair kernel apply a float ReLU as they store (the same floats as the loop below).
    const int gemm_relu = relu && gemm_output.kind == QAT_I8_OUT_FLOAT &&
                          (path == QAT_I8_VNNI || (path == QAT_I8_AVX2 && qat_i8_avx2_pair_tiles));
    const size_t elem = element_size(output.kind), out_image = (size_t)oc * p * elem;
    // Planes of a multiple of 16 outputs (4×4), several images per GEMM, straight to the output: each
    // vector of 16 columns lies in one image, so the VNNI GEMM stores it at its place (keep, dest as
    // the implicit GEMM's) instead of in the staging buffer that is then copied out per image.
    const int placed = path == QAT_I8_VNNI && qat_i8_placed_stores_allowed && implicit == IMPLICIT_NONE && groups == 1 &&
                       block > 1 && p % 16 == 0 && !pool && !residual && !(hard_swish && hard_swish->quantize);
    uint16_t *placed_keep = NULL;
    int32_t *placed_dest = NULL;
    if (placed) {
        const int vectors = block * p / 16;
        placed_keep = checked_malloc((size_t)vectors * sizeof(uint16_t));
        placed_dest = checked_malloc((size_t)vectors * sizeof(int32_t));
        for (int v = 0; v < vectors; v++) {
            placed_keep[v] = 0xFFFF;
            placed_dest[v] = (16 * v / p) * oc * p + 16 * v % p;
        }
    }
    // Winograd's sums requantized image by image straight into each image's output: no staging
    // buffer to copy out. On planes of 16 outputs or more, where the pair kernel's last vector of
    // 16 columns per image wastes little (a third of them on 7×7, three quarters on 2×2).
    const int winograd_per_image = winograd && groups == 1 && p >= 16;
    char *staging = block > 1 && !placed && !winograd_per_image ? checked_malloc(block * out_image) : NULL;
    qat_i8_gemm image_gemm = {0};
    int8_t *conv_image = NULL;
    size_t pooled_image = 0;
    if (pool || residual || (hard_swish && hard_swish->quantize)) conv_image = checked_malloc(out_image);
    if (pool) pooled_image = (size_t)oc * pool->oh * pool->ow;
    const int pad_top = cg->pad_top, pad_left = cg->pad_left;  // locals: byte stores may alias *cg
    for (int img0 = 0; img0 < n; img0 += block) {
        const int images = n - img0 < block ? n - img0 : block, columns = images * p;
        for (int i = 0; i < images && !winograd; i++) {  // (Winograd reads the codes themselves)
            const int8_t *src = x + (size_t)(img0 + i) * c * h * w;
            if (blocked) { qat_i8_block_channels(path, src, &blocking, i, xu); continue; }
            uint8_t *image = xu + i * padded;
            if (hp == h && wp == w) {  // no padding: one run over the image
                for (size_t j = 0; j < (size_t)c * h * w; j++) image[j] = (uint8_t)src[j] ^ 0x80;
            } else if (path == QAT_I8_VNNI) {  // a vector per row (the loop below ran a byte at a time)
                for (int ch = 0; ch < c; ch++)
                    qat_i8_copy_rows_shifted(src + (size_t)ch * h * w, h, w, image + ((size_t)ch * hp + pad_top) * wp + pad_left, wp);
            } else if (path == QAT_I8_AVX2 && w >= 16) {  // (narrower rows: the tail's blend would wait on the last row's store)
                for (int ch = 0; ch < c; ch++)
                    qat_i8_copy_rows_shifted_avx2(src + (size_t)ch * h * w, h, w, image + ((size_t)ch * hp + pad_top) * wp + pad_left,
                                                  wp, x + (size_t)n * c * h * w);
            } else for (int ch = 0; ch < c; ch++) {
                for (int y = 0; y < h; y++) {
                    const int8_t *row = src + ((size_t)ch * h + y) * w;
                    uint8_t *dst = image + ((size_t)ch * hp + y + pad_top) * wp + pad_left;
                    for (int j = 0; j < w; j++) dst[j] = (uint8_t)row[j] ^ 0x80;
                }
            }
        }
        // One image goes straight to its output (or the pool's scratch); a block to the staging buffer.
        char *gemm_out = staging ? staging : conv_image ? (char *)conv_image : (char *)out + img0 * out_image;
        for (int grp = 0; grp < groups; grp++) {
            const uint8_t *operand = b;
            if (implicit == IMPLICIT_BLOCKED) {
                operand = xu;
            } else if (implicit == IMPLICIT_ROW_TAPS) {
                row_taps_vnni(xu, c, (size_t)hp * wp, cg->dw, row_taps);
                operand = (const uint8_t *)row_taps;
            } else if (winograd) {
                qat_i8_winograd_sums_avx2(x + (size_t)img0 * c * h * w, images, x + (size_t)n * c * h * w, cg, winograd_u,
                                          winograd_scratch, winograd_sums, sums_stride);
            } else if (one_channel) {
                qat_i8_one_channel_sums_avx2(xu, wp, oh, ow, weight, corr, oc, (int32_t *)gemm_out, (size_t)p);
                continue;  // (groups is 1)
            } else if (direct) {
                operand = xu + grp * group_bytes;
            } else if (blocked) {
                run_im2col_blocked(path, xu + grp * group_bytes, &group_blocking, npad, b);
            } else {
                for (int i = 0; i < images; i++) {  // in order: each image's overrun is rewritten by the next
                    const uint8_t *group_in = xu + i * padded + (size_t)grp * group_c * hp * wp;
                    if (path == QAT_I8_PORTABLE) qat_i8_im2col_portable(group_in, &shape, b + (size_t)i * p * 4);
                    else qat_i8_im2col_fast(group_in, &shape, b + (size_t)i * p * 4);
                }
            }
            const int row0 = grp * group_oc;
            qat_i8_output group_output = gemm_output;
            if (gemm_output.kind != QAT_I8_OUT_INT32) {
                group_output.scale = output.scale + row0;
                if (output.offset) group_output.offset = output.offset + row0;
                if (output.shift) group_output.shift = output.shift + row0;
            }
            qat_i8_gemm g = {.m = group_oc, .n = columns, .k4 = k4, .npad = npad, .a = a + (size_t)row0 * k4 * 4,
                             .corr = corr + row0, .b = operand, .output = group_output,
                             .out = gemm_out + (size_t)row0 * columns * elem, .row_stride = columns, .col_stride = 1,
                             .relu = gemm_relu, .a_pairs = a_pairs ? a_pairs + (size_t)row0 * k4 * 2 : NULL};
            if (winograd) {
                g.k4 = 0;
                g.b = (const uint8_t *)winograd_sums;  // not read with k4 = 0
                g.initial = winograd_sums;
                g.initial_stride = sums_stride;
            }
            if (placed) {
                g.row_stride = p;
                g.keep = placed_keep;
                g.dest = placed_dest;
            }
            if (implicit != IMPLICIT_NONE) {
                g.n = grid_columns;
                g.k4 = implicit_k4;
                g.npad = 0;
                g.tap = tap;
                g.keep = keep;
                g.dest = dest;
            }
            if (winograd_per_image) image_gemm = g;  // run per image below
            else run_gemm(path, &g);
        }
        for (int i = 0; i < images; i++) {
            char *image_out = conv_image ? (char *)conv_image : (char *)out + (img0 + i) * out_image;
            if (winograd_per_image) {  // the pair kernel reads up to 15 sums past the image's: the next image's, or spare
                image_gemm.n = p;
                image_gemm.initial = winograd_sums + (size_t)i * p;
                image_gemm.out = image_out;
                image_gemm.row_stride = p;
                run_gemm(path, &image_gemm);
            }
            if (staging)  // [oc][images·p] → this image's [oc][p]
                copy_rows(image_out, (size_t)p * elem, staging + (size_t)i * p * elem, (size_t)columns * elem, oc, (size_t)p * elem);
            if (residual) {
                const size_t values = (size_t)oc * p;
                residual_epilogue(path, (const float *)conv_image, residual, (size_t)(img0 + i) * values, values, out);
                continue;
            }
            if (hard_swish) {  // the image's floats, still in cache
                const size_t values = (size_t)oc * p;
                qat_i8_hard_swish_epilogue_run(path, hard_swish, (float *)image_out,
                                               hard_swish->quantize ? (int8_t *)out + (size_t)(img0 + i) * values : NULL, values);
                continue;
            }
            if (pool_sums) {
                float *pooled = (float *)out + (img0 + i) * pooled_image;
                if (path == QAT_I8_VNNI)
                    qat_i8_maxpool_accumulators_vnni16((int32_t *)conv_image, pooled, (size_t)oc, pool, output.scale, output.offset, relu);
                else
                    qat_i8_maxpool_accumulators_avx2x8((int32_t *)conv_image, pooled, (size_t)oc, pool, output.scale, output.offset, relu);
                continue;
            }
            if (relu && output.kind == QAT_I8_OUT_FLOAT && !gemm_relu) {  // the image just written, still in cache
                float *image = (float *)image_out;
                for (size_t j = 0; j < (size_t)oc * p; j++) image[j] = image[j] < 0.0f ? 0.0f : image[j];
            }
            if (pool && output.kind == QAT_I8_OUT_FLOAT) {
                qat_i8_maxpool_float(path, (float *)conv_image, (float *)out + (img0 + i) * pooled_image, (size_t)oc, pool);
            } else if (pool) {
                qat_i8_maxpool_padded(path, conv_image, (int8_t *)out + (img0 + i) * pooled_image, (size_t)oc, pool);
            }
        }
    }
    qat_i8_weights_release(cache, prepared);
    free(winograd_scratch);
    free(winograd_sums);
    free(placed_keep);
    free(placed_dest);
    free(row_taps);
    free(tap);
    free(keep);
    free(dest);
    free(conv_image);
    free(staging);
    free(b);
    free(xu);
}

static qat_i8_conv_geometry square_geometry(int n, int c, int h, int w, int oc, int k, int stride, int pad) {
    return (qat_i8_conv_geometry){.n = n, .c = c, .h = h, .w = w, .oc = oc, .kh = k, .kw = k, .sh = stride, .sw = stride,
                                  .dh = 1, .dw = 1, .pad_top = pad, .pad_left = pad, .pad_bottom = pad, .pad_right = pad,
                                  .groups = 1};
}

void qat_i8_conv2d(qat_i8_path path, const int8_t *x, int n, int c, int h, int w, int8_t x_zero,
                   const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, int oc, int k, int stride, int pad,
                   qat_i8_output output, void *out) {
    const qat_i8_conv_geometry g = square_geometry(n, c, h, w, oc, k, stride, pad);
    conv2d_impl(path, x, x_zero, &g, weight, bias, cache, output, out, NULL, 0, NULL, NULL);
}

void qat_i8_conv2d_maxpool(qat_i8_path path, const int8_t *x, int n, int c, int h, int w, int8_t x_zero,
                           const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, int oc, int k, int stride, int pad,
                           qat_i8_output output, int pool_k, int pool_s, int8_t *out) {
    output.kind = QAT_I8_OUT_INT8;
    const qat_i8_conv_geometry g = square_geometry(n, c, h, w, oc, k, stride, pad);
    const int oh = qat_i8_conv_out_h(&g), ow = qat_i8_conv_out_w(&g);
    const qat_i8_pool_geometry pool = {.h = oh, .w = ow, .oh = (oh - pool_k) / pool_s + 1, .ow = (ow - pool_k) / pool_s + 1,
                                       .kh = pool_k, .kw = pool_k, .sh = pool_s, .sw = pool_s};
    conv2d_impl(path, x, x_zero, &g, weight, bias, cache, output, out, &pool, 0, NULL, NULL);
}

void qat_i8_conv2d_grouped(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                           const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output,
                           const qat_i8_pool_geometry *pool, void *out) {
    if (pool) output.kind = QAT_I8_OUT_INT8;
    conv2d_impl(path, x, x_zero, g, weight, bias, cache, output, out, pool, 0, NULL, NULL);
}

void qat_i8_conv2d_float_epilogue(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                                 const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output, int relu,
                                 const qat_i8_pool_geometry *pool, float *out) {
    output.kind = QAT_I8_OUT_FLOAT;
    conv2d_impl(path, x, x_zero, g, weight, bias, cache, output, out, pool, relu, NULL, NULL);
}

void qat_i8_conv2d_add_quantize(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                                const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output, const float *addend,
                                float scale, int32_t zero, int32_t lo, qat_i8_round_mode round_mode, int8_t *out) {
    output.kind = QAT_I8_OUT_FLOAT;
    const residual_quantize residual = {.addend = addend, .scale = scale, .zero = zero, .lo = lo, .round_mode = round_mode};
    conv2d_impl(path, x, x_zero, g, weight, bias, cache, output, out, NULL, 0, &residual, NULL);
}

void qat_i8_conv2d_hard_swish(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                              const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output,
                              const qat_i8_quantize_grid *quantize, void *out) {
    output.kind = QAT_I8_OUT_FLOAT;
    const qat_i8_hard_swish_epilogue epilogue = {.quantize = quantize};
    if (g->groups > 1 && g->groups == g->c) qat_i8_depthwise_impl(path, x, x_zero, g, weight, bias, output, NULL, &epilogue, out);
    else conv2d_impl(path, x, x_zero, g, weight, bias, cache, output, out, NULL, 0, NULL, &epilogue);
}

int qat_i8_residual_relu_fusion_allowed = 1;
void qat_i8_allow_residual_relu_fusion(int allowed) { qat_i8_residual_relu_fusion_allowed = allowed; }

void qat_i8_conv2d_add_relu(qat_i8_path path, const int8_t *x, int8_t x_zero, const qat_i8_conv_geometry *g,
                            const int8_t *weight, const int32_t *bias, qat_i8_conv_cache *cache, qat_i8_output output, const float *addend, int relu,
                            float *sums, float scale, int32_t zero, int32_t lo, qat_i8_round_mode round_mode, int8_t *codes) {
    output.kind = QAT_I8_OUT_FLOAT;
    const residual_quantize residual = {.addend = addend, .scale = scale, .zero = zero, .lo = lo, .round_mode = round_mode,
                                        .sums = sums, .relu = relu};
    conv2d_impl(path, x, x_zero, g, weight, bias, cache, output, codes, NULL, 0, &residual, NULL);
}

void qat_i8_linear(qat_i8_path path, const int8_t *x, int n, int in, int8_t x_zero,
                   const int8_t *weight, const int32_t *bias, int outs,
                   qat_i8_output output, void *out) {
    const int k4 = (in + 3) / 4, npad = round_up16(n);
    int32_t *corr;
    int8_t *a = qat_i8_pack_weights(weight, bias, outs, in, k4, x_zero, &corr);

    // Samples become columns: b[g][j][t] = x[j][4g + t] + 128 (the padding k get code 0).
    uint8_t *b = checked_malloc((size_t)k4 * npad * 4);
    memset(b, 0x80, (size_t)k4 * npad * 4);
    for (int j = 0; j < n; j++) {
        const int8_t *row = x + (size_t)j * in;
        for (int kk = 0; kk < in; kk++) b[((size_t)(kk / 4) * npad + j) * 4 + kk % 4] = (uint8_t)row[kk] ^ 0x80;
    }
    // Channels are rows of the GEMM, samples its columns: out[j][i] is at i·1 + j·outs.
    qat_i8_gemm g = {.m = outs, .n = n, .k4 = k4, .npad = npad, .a = a, .corr = corr, .b = b,
                     .output = output, .out = out, .row_stride = 1, .col_stride = outs};
    run_gemm(path, &g);
    free(b);
    free(corr);
    free(a);
}
