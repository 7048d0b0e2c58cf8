// Winograd F(2×2, 3×3) for 3×3 convs with stride 1 on the AVX2 path: the exact int32 sums Σ w·u
// of im2col + GEMM, with 16 multiplies per channel and 2×2 outputs instead of 36.
//
// Why it is exact: with G' = 2G = [[2,0,0],[1,1,1],[1,−1,1],[0,0,2]] and Lavin & Gray's Bᵀ and Aᵀ,
// Aᵀ[(G' g G'ᵀ) ⊙ (Bᵀ d B)]A = 4·(d ⋆ g) in the integers. Every step is an integer add or
// multiply, so in int32 arithmetic, which wraps, the result is exact modulo 2^32; 4·Σ w·u (at most
// 4·9·c·128·255 in size) fits in int32 for c ≤ 1827, so it is exact, and >> 2 gives Σ w·u. The
// transformed weights (|G' g G'ᵀ| ≤ 9·128) and inputs (|Bᵀ d B| ≤ 4·255) are int16, and vpmaddwd
// multiplies int16 pairs into exact int32.
//
// Lanes are images: 16 images of a block side by side, so that every transform is plain vector
// adds whatever the plane's size (ResNet's 2×2 … 14×14 planes would leave most lanes of a
// vector along a row empty). Per block:
//   1. xt[c][y][x][16 images] int16, the padded images' codes + 128 transposed (x and y up to an
//      even count: the extra row and column only reach outputs past the plane, never stored);
//   2. v[ξ][c/2][tile][16 images × 2 channels]: Bᵀ d B per 4×4 patch, channels paired as words;
//   3. per ξ of the 16, one GEMM m[ξ][oc][tile·16 + image] = Σ u[ξ][oc][pair] · v[ξ][pair][…];
//   4. Aᵀ m A per tile, >> 2, into sums[oc][image·p + position], which the caller's GEMM epilogue
//      (k4 = 0, qat_i8_gemm.initial) requantizes like any other conv.
#include <immintrin.h>
#include <string.h>
#include "int8_internal.h"

enum { LANES = 16, XI = 16, ROWS = 6 };

int qat_i8_winograd_allowed = 1;
void qat_i8_allow_winograd(int allowed) { qat_i8_winograd_allowed = allowed; }

// Where it is faster than im2col + GEMM (measured on the Zen 3, batch 256): its transforms and the
// transpose back to image order cost per output about what 8–16 channels of the direct conv's
// multiply-adds do, while im2col costs per input element and is shared by the output channels.
//   - 32 channels or more: 1.15–1.7× (32 → 32 on 4×4 … 28×28, 64 → 64 on 14×14, 128 → 128 on 7×7);
//   - 16 to 31 on an even output plane (every tile whole): 1.15× (14×14, 8×8, 4×4); on 7×7 even;
//   - 8 to 15 on an even plane with no more output channels than input: 1.1–1.2× (8 → 8 on 14×14
//     and 4×4), while 8 → 16 ran 7–15 % slower; 4 → 4 on 14×14 13 % slower.
// The upper bound keeps 4·Σ w·u within int32 (above).
int qat_i8_winograd_applies(const qat_i8_conv_geometry *g) {
    if (!qat_i8_winograd_allowed || g->groups != 1 || g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 || g->dh != 1 ||
        g->dw != 1 || g->c > 1827)
        return 0;
    const int oh = qat_i8_conv_out_h(g), ow = qat_i8_conv_out_w(g), even = oh >= 2 && ow >= 2 && oh % 2 == 0 && ow % 2 == 0;
    if (oh < 1 || ow < 1) return 0;
    return g->c >= 32 || (g->c >= 16 && even) || (g->c >= 8 && even && g->oc <= g->c);
}

// G' applied to 3 values: (2a, a + b + c, a − b + c, 2c).
static inline void g_prime(int32_t a, int32_t b, int32_t c, int32_t out[4]) {
    out[0] = 2 * a, out[1] = a + b + c, out[2] = a - b + c, out[3] = 2 * c;
}

// u[ξ][oc][pair] words: (G' g G'ᵀ)[ξ] of channels 2·pair and 2·pair + 1 (0 past c), low half the first.
int32_t *qat_i8_winograd_weights(const int8_t *weight, int oc, int c) {
    const int pairs = (c + 1) / 2;
    uint16_t *u = qat_i8_checked_malloc((size_t)XI * oc * pairs * sizeof(int32_t));
    memset(u, 0, (size_t)XI * oc * pairs * sizeof(int32_t));
    for (int o = 0; o < oc; o++)
        for (int ch = 0; ch < c; ch++) {
            const int8_t *g = weight + ((size_t)o * c + ch) * 9;
            int32_t columns[3][4], row[4];  // G' g, column by column; then each row times G'ᵀ
            for (int b = 0; b < 3; b++) g_prime(g[b], g[3 + b], g[6 + b], columns[b]);
            for (int r = 0; r < 4; r++) {
                g_prime(columns[0][r], columns[1][r], columns[2][r], row);
                for (int t = 0; t < 4; t++) u[(((size_t)(4 * r + t) * oc + o) * pairs + ch / 2) * 2 + ch % 2] = (uint16_t)(int16_t)row[t];
            }
        }
    return (int32_t *)u;
}

// 16 rows of 16 bytes (row i at rows[i]) transposed: out[j] holds byte j of every row.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void transpose16(const int8_t *const rows[16], __m128i out[16]) {
    __m128i a[16], b[16];
    for (int i = 0; i < 16; i++) a[i] = _mm_loadu_si128((const __m128i *)rows[i]);
    for (int i = 0; i < 8; i++) b[2 * i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]), b[2 * i + 1] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    // b[2i] = rows 2i, 2i+1 interleaved for bytes 0…7; b[2i+1] for bytes 8…15.
    for (int i = 0; i < 4; i++)
        for (int h = 0; h < 2; h++) {
            a[4 * i + 2 * h] = _mm_unpacklo_epi16(b[4 * i + h], b[4 * i + 2 + h]);
            a[4 * i + 2 * h + 1] = _mm_unpackhi_epi16(b[4 * i + h], b[4 * i + 2 + h]);
        }
    // a[4i + 2h + k]: rows 4i…4i+3, bytes 8h + 4k … 8h + 4k + 3.
    for (int i = 0; i < 2; i++)
        for (int q = 0; q < 4; q++) {
            b[8 * i + 2 * q] = _mm_unpacklo_epi32(a[8 * i + q], a[8 * i + 4 + q]);
            b[8 * i + 2 * q + 1] = _mm_unpackhi_epi32(a[8 * i + q], a[8 * i + 4 + q]);
        }
    // b[8i + 2q + l]: rows 8i…8i+7, bytes 4q + 2l, 4q + 2l + 1.
    for (int q = 0; q < 8; q++) {
        out[2 * q] = _mm_unpacklo_epi64(b[q], b[8 + q]);
        out[2 * q + 1] = _mm_unpackhi_epi64(b[q], b[8 + q]);
    }
}

// The padded geometry of the transposed images: yh × xw positions (the padded image, then up to
// one more row and column so that the tiles cover an even count).
typedef struct {
    int c, h, w, hp, wp, yh, xw, pad_top, pad_left, oh, ow, th, tw;
} winograd_shape;

static winograd_shape shape_of(const qat_i8_conv_geometry *g) {
    winograd_shape s = {.c = g->c, .h = g->h, .w = g->w, .hp = g->h + g->pad_top + g->pad_bottom,
                        .wp = g->w + g->pad_left + g->pad_right, .pad_top = g->pad_top, .pad_left = g->pad_left,
                        .oh = qat_i8_conv_out_h(g), .ow = qat_i8_conv_out_w(g)};
    s.th = (s.oh + 1) / 2, s.tw = (s.ow + 1) / 2;
    s.yh = 2 * s.th + 2 > s.hp ? 2 * s.th + 2 : s.hp;
    s.xw = 2 * s.tw + 2 > s.wp ? 2 * s.tw + 2 : s.wp;
    return s;
}

// Step 1: xt[ch][pad_top + y][pad_left + x][lane] = image lane's code (ch, y, x) + 128 as int16.
// Everything else in xt (the padding, the extra row and column) holds the code of real zero,
// written once by qat_i8_winograd_prepare. Each image is read flat, 16 codes at a time across row
// and channel ends, so that every transpose gives 16 positions (by rows, 4 × 4 planes used a
// quarter of each and 2 × 2 planes an eighth). Lanes past `images` repeat the last image; a
// 16-byte read that would pass x_end goes through a buffer.
static QAT_I8_TARGET_AVX2 void transpose_images(const int8_t *x, int images, const int8_t *x_end, const winograd_shape *s,
                                                int16_t *xt) {
    const size_t image = (size_t)s->c * s->h * s->w;
    const __m128i shift = _mm_set1_epi8((char)0x80);
    _Alignas(16) int8_t spare[16][16];
    int ch = 0, y = 0, px = 0;  // the position of the next code stored
    for (size_t f0 = 0; f0 < image; f0 += 16) {
        const int8_t *rows[16];
        for (int l = 0; l < LANES; l++) {
            rows[l] = x + (size_t)(l < images ? l : images - 1) * image + f0;
            if (x_end - rows[l] < 16) {
                memset(spare[l], 0, 16);
                memcpy(spare[l], rows[l], (size_t)(x_end - rows[l]));
                rows[l] = spare[l];
            }
        }
        __m128i bytes[16];
        transpose16(rows, bytes);
        const int count = image - f0 < 16 ? (int)(image - f0) : 16;
        for (int j = 0; j < count; j++) {
            int16_t *dst = xt + (((size_t)ch * s->yh + s->pad_top + y) * s->xw + s->pad_left + px) * LANES;
            _mm256_storeu_si256((__m256i *)dst, _mm256_cvtepu8_epi16(_mm_xor_si128(bytes[j], shift)));
            if (++px == s->w) {
                px = 0;
                if (++y == s->h) y = 0, ch++;
            }
        }
    }
}

// Bᵀ d B of one channel's 4×4 patch at p (rows `row` apart, 16 lanes each): v[4r + s].
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void input_transform(const int16_t *p, size_t row, __m256i v[16]) {
    __m256i t[16];
    for (int s = 0; s < 4; s++) {
        const __m256i d0 = _mm256_loadu_si256((const __m256i *)(p + s * LANES));
        const __m256i d1 = _mm256_loadu_si256((const __m256i *)(p + row + s * LANES));
        const __m256i d2 = _mm256_loadu_si256((const __m256i *)(p + 2 * row + s * LANES));
        const __m256i d3 = _mm256_loadu_si256((const __m256i *)(p + 3 * row + s * LANES));
        t[s] = _mm256_sub_epi16(d0, d2);
        t[4 + s] = _mm256_add_epi16(d1, d2);
        t[8 + s] = _mm256_sub_epi16(d2, d1);
        t[12 + s] = _mm256_sub_epi16(d1, d3);
    }
    for (int r = 0; r < 4; r++) {
        const __m256i *q = t + 4 * r;
        v[4 * r] = _mm256_sub_epi16(q[0], q[2]);
        v[4 * r + 1] = _mm256_add_epi16(q[1], q[2]);
        v[4 * r + 2] = _mm256_sub_epi16(q[2], q[1]);
        v[4 * r + 3] = _mm256_sub_epi16(q[1], q[3]);
    }
}

// Step 2. Words of tile t, pair: images 0–3, 8–11 (unpacklo's lanes), then 4–7, 12–15.
static QAT_I8_TARGET_AVX2 void transform_inputs(const int16_t *xt, int c, int yh, int xw, int tw, int t0, int tiles, int32_t *v) {
    const int pairs = (c + 1) / 2;
    const size_t row = (size_t)xw * LANES, plane = (size_t)yh * row;
    for (int pair = 0; pair < pairs; pair++)
        for (int t = 0; t < tiles; t++) {
            const int ty = (t0 + t) / tw, tx = (t0 + t) % tw;
            __m256i a[16], b[16];
            const int16_t *p = xt + (size_t)2 * pair * plane + (size_t)2 * ty * row + (size_t)2 * tx * LANES;
            input_transform(p, row, a);
            if (2 * pair + 1 < c) input_transform(p + plane, row, b);
            else for (int x = 0; x < 16; x++) b[x] = _mm256_setzero_si256();
            for (int x = 0; x < XI; x++) {
                __m256i *dst = (__m256i *)(v + (((size_t)x * pairs + pair) * tiles + t) * LANES);
                _mm256_storeu_si256(dst, _mm256_unpacklo_epi16(a[x], b[x]));
                _mm256_storeu_si256(dst + 1, _mm256_unpackhi_epi16(a[x], b[x]));
            }
        }
}

// Step 3 for one ξ: m[oc][n] = Σ_pair u[oc][pair] · v[pair][n], n = tiles·16, by ROWS × 16 tiles.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void gemm_tile(const int32_t *u, const int32_t *v, int pairs, size_t n, int32_t *m, int o0, size_t j0, const int rows) {
    __m256i c0[ROWS], c1[ROWS];
    for (int r = 0; r < rows; r++) c0[r] = c1[r] = _mm256_setzero_si256();
    const int32_t *uo = u + (size_t)o0 * pairs;
    for (int q = 0; q < pairs; q++) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(v + q * n + j0));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(v + q * n + j0 + 8));
        for (int r = 0; r < rows; r++) {
            const __m256i w = _mm256_set1_epi32(uo[(size_t)r * pairs + q]);
            c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(b0, w));
            c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(b1, w));
        }
    }
    for (int r = 0; r < rows; r++) {
        _mm256_storeu_si256((__m256i *)(m + (size_t)(o0 + r) * n + j0), c0[r]);
        _mm256_storeu_si256((__m256i *)(m + (size_t)(o0 + r) * n + j0 + 8), c1[r]);
    }
}

static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void multiply_pairs(const int32_t *u, const int32_t *v, int oc, const int pairs, size_t n, int32_t *m) {
    for (size_t j0 = 0; j0 < n; j0 += 16)
        for (int o0 = 0; o0 < oc; o0 += ROWS) switch (oc - o0 < ROWS ? oc - o0 : ROWS) {
            case 1: gemm_tile(u, v, pairs, n, m, o0, j0, 1); break;
            case 2: gemm_tile(u, v, pairs, n, m, o0, j0, 2); break;
            case 3: gemm_tile(u, v, pairs, n, m, o0, j0, 3); break;
            case 4: gemm_tile(u, v, pairs, n, m, o0, j0, 4); break;
            case 5: gemm_tile(u, v, pairs, n, m, o0, j0, 5); break;
            default: gemm_tile(u, v, pairs, n, m, o0, j0, ROWS); break;
            }
}

// ResNet's channel counts (8 … 64: 4 … 32 pairs) as constants, so that the short k loops unroll:
// 3–5 % faster on its 8 → 8, 32 → 32 and 64 → 64 convs (batch 256, Zen 3).
static QAT_I8_TARGET_AVX2 void multiply(const int32_t *u, const int32_t *v, int oc, int pairs, size_t n, int32_t *m) {
    switch (pairs) {
    case 4: multiply_pairs(u, v, oc, 4, n, m); break;
    case 8: multiply_pairs(u, v, oc, 8, n, m); break;
    case 16: multiply_pairs(u, v, oc, 16, n, m); break;
    case 32: multiply_pairs(u, v, oc, 32, n, m); break;
    default: multiply_pairs(u, v, oc, pairs, n, m); break;
    }
}

// Step 4: Aᵀ m A of every (oc, tile), Aᵀ = [[1,1,1,0],[0,1,−1,−1]], >> 2, into sums.
// Aᵀ m A, >> 2, of the 8 lanes at `at` (ξ planes xi_stride apart): y00, y01, y10, y11.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void output_transform(const int32_t *at, size_t xi_stride, __m256i y[4]) {
    __m256i mm[16];
    for (int x = 0; x < XI; x++) mm[x] = _mm256_loadu_si256((const __m256i *)(at + x * xi_stride));
    __m256i t0[4], t1[4];  // Aᵀ applied down each column s
    for (int s = 0; s < 4; s++) {
        t0[s] = _mm256_add_epi32(_mm256_add_epi32(mm[s], mm[4 + s]), mm[8 + s]);
        t1[s] = _mm256_sub_epi32(_mm256_sub_epi32(mm[4 + s], mm[8 + s]), mm[12 + s]);
    }
    const __m256i *rows[2] = {t0, t1};
    for (int i = 0; i < 2; i++) {
        const __m256i *q = rows[i];
        y[2 * i] = _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), q[2]), 2);
        y[2 * i + 1] = _mm256_srai_epi32(_mm256_sub_epi32(_mm256_sub_epi32(q[1], q[2]), q[3]), 2);
    }
}

// Step 4: Aᵀ m A of every (oc, tile), Aᵀ = [[1,1,1,0],[0,1,−1,−1]], >> 2, into sums. Two whole
// tiles side by side give each image 4 sums per output row: one 16-byte store (a lane's sums
// gathered by unpacks) instead of one store per sum.
static QAT_I8_TARGET_AVX2 void transform_outputs(const int32_t *m, int oc, int tw, int t0, int tiles, int oh, int ow, int images,
                                                 int32_t *sums, size_t sums_stride) {
    static const int lane_image[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};
    const size_t n = (size_t)tiles * LANES, xi_stride = (size_t)oc * n, p = (size_t)oh * ow;
    for (int o = 0; o < oc; o++)
        for (int t = 0; t < tiles;) {
            const int ty = (t0 + t) / tw, tx = (t0 + t) % tw, oy = 2 * ty, ox = 2 * tx;
            const int32_t *at = m + (size_t)o * n + (size_t)t * LANES;
            int32_t *dst = sums + (size_t)o * sums_stride + (size_t)oy * ow + ox;
            if (images == LANES && t + 1 < tiles && tx + 1 < tw && oy + 2 <= oh && ox + 4 <= ow) {
                for (int half = 0; half < 2; half++) {
                    __m256i a[4], b[4];
                    output_transform(at + 8 * half, xi_stride, a);
                    output_transform(at + LANES + 8 * half, xi_stride, b);
                    for (int i = 0; i < 2; i++) {
                        const __m256i a_lo = _mm256_unpacklo_epi32(a[2 * i], a[2 * i + 1]), a_hi = _mm256_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
                        const __m256i b_lo = _mm256_unpacklo_epi32(b[2 * i], b[2 * i + 1]), b_hi = _mm256_unpackhi_epi32(b[2 * i], b[2 * i + 1]);
                        // Vector lanes k and k + 4 of each: (a_i0, a_i1, b_i0, b_i1) in its low and high 16 bytes.
                        const __m256i rows4[4] = {_mm256_unpacklo_epi64(a_lo, b_lo), _mm256_unpackhi_epi64(a_lo, b_lo),
                                                  _mm256_unpacklo_epi64(a_hi, b_hi), _mm256_unpackhi_epi64(a_hi, b_hi)};
                        for (int k = 0; k < 4; k++) {
                            int32_t *low = dst + (size_t)lane_image[8 * half + k] * p + (size_t)i * ow;
                            int32_t *high = dst + (size_t)lane_image[8 * half + k + 4] * p + (size_t)i * ow;
                            _mm_storeu_si128((__m128i *)low, _mm256_castsi256_si128(rows4[k]));
                            _mm_storeu_si128((__m128i *)high, _mm256_extracti128_si256(rows4[k], 1));
                        }
                    }
                }
                t += 2;
                continue;
            }
            if (images == LANES && ow == 2 && oy + 2 <= oh) {  // 2-wide planes: a lane's 2×2 sums are 4 in a row
                for (int half = 0; half < 2; half++) {
                    __m256i v[4];
                    output_transform(at + 8 * half, xi_stride, v);
                    const __m256i lo01 = _mm256_unpacklo_epi32(v[0], v[1]), hi01 = _mm256_unpackhi_epi32(v[0], v[1]);
                    const __m256i lo23 = _mm256_unpacklo_epi32(v[2], v[3]), hi23 = _mm256_unpackhi_epi32(v[2], v[3]);
                    // Vector lanes k and k + 4 of each: (y00, y01, y10, y11) in its low and high 16 bytes.
                    const __m256i lanes4[4] = {_mm256_unpacklo_epi64(lo01, lo23), _mm256_unpackhi_epi64(lo01, lo23),
                                               _mm256_unpacklo_epi64(hi01, hi23), _mm256_unpackhi_epi64(hi01, hi23)};
                    for (int k = 0; k < 4; k++) {
                        _mm_storeu_si128((__m128i *)(dst + (size_t)lane_image[8 * half + k] * p), _mm256_castsi256_si128(lanes4[k]));
                        _mm_storeu_si128((__m128i *)(dst + (size_t)lane_image[8 * half + k + 4] * p), _mm256_extracti128_si256(lanes4[k], 1));
                    }
                }
                t++;
                continue;
            }
            _Alignas(32) int32_t y[4][16];  // y00, y01, y10, y11 of each lane
            for (int half = 0; half < 2; half++) {
                __m256i v[4];
                output_transform(at + 8 * half, xi_stride, v);
                for (int k = 0; k < 4; k++) _mm256_store_si256((__m256i *)(y[k] + 8 * half), v[k]);
            }
            const int rows = oh - oy < 2 ? 1 : 2, cols = ow - ox < 2 ? 1 : 2;
            for (int l = 0; l < LANES; l++) {
                if (lane_image[l] >= images) continue;
                int32_t *out = dst + (size_t)lane_image[l] * p;
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < cols; j++) out[(size_t)i * ow + j] = y[2 * i + j][l];
            }
            t++;
        }
}

// Tiles per pass of steps 2–4: their transformed inputs and products (1 KiB per tile and pair
// or output channel) within about 192 KiB, in L2 (the whole plane's were megabytes on 28×28).
static int chunk_tiles(const winograd_shape *s, int oc) {
    const int fit = 192 / ((s->c + 1) / 2 + oc), all = s->th * s->tw;
    if (fit >= all) return all;
    const int chunks = (all + (fit < 1 ? 1 : fit) - 1) / (fit < 1 ? 1 : fit);
    return (all + chunks - 1) / chunks;  // even chunks (the last one not a sliver)
}

size_t qat_i8_winograd_scratch_bytes(const qat_i8_conv_geometry *g) {
    const winograd_shape s = shape_of(g);
    const size_t xt = (size_t)s.c * s.yh * s.xw * LANES * sizeof(int16_t);
    const int tiles = chunk_tiles(&s, g->oc);
    const size_t v = (size_t)XI * ((s.c + 1) / 2) * tiles * LANES * sizeof(int32_t);
    const size_t m = (size_t)XI * g->oc * tiles * LANES * sizeof(int32_t);
    return (xt + 31) / 32 * 32 + v + m + 32;
}

static int16_t *scratch_images(void *scratch) { return (int16_t *)(((uintptr_t)scratch + 31) & ~(uintptr_t)31); }

void qat_i8_winograd_prepare(const qat_i8_conv_geometry *g, int8_t x_zero, void *scratch) {
    const winograd_shape s = shape_of(g);
    int16_t *xt = scratch_images(scratch);
    const int16_t zero = (int16_t)(uint8_t)(x_zero ^ 0x80);
    for (size_t i = 0; i < (size_t)s.c * s.yh * s.xw * LANES; i++) xt[i] = zero;
}

void qat_i8_winograd_sums_avx2(const int8_t *x, int images, const int8_t *x_end, const qat_i8_conv_geometry *g,
                               const int32_t *u, void *scratch, int32_t *sums, size_t sums_stride) {
    const winograd_shape s = shape_of(g);
    const int oc = g->oc, pairs = (s.c + 1) / 2;
    int16_t *xt = scratch_images(scratch);
    int32_t *v = (int32_t *)((char *)xt + ((size_t)s.c * s.yh * s.xw * LANES * sizeof(int16_t) + 31) / 32 * 32);
    const int chunk = chunk_tiles(&s, oc), all = s.th * s.tw;
    int32_t *m = v + (size_t)XI * pairs * chunk * LANES;
    transpose_images(x, images, x_end, &s, xt);
    for (int t0 = 0; t0 < all; t0 += chunk) {
        const int tiles = all - t0 < chunk ? all - t0 : chunk;
        const size_t n = (size_t)tiles * LANES;
        transform_inputs(xt, s.c, s.yh, s.xw, s.tw, t0, tiles, v);
        for (int x = 0; x < XI; x++) multiply(u + (size_t)x * oc * pairs, v + (size_t)x * pairs * n, oc, pairs, n, m + (size_t)x * oc * n);
        transform_outputs(m, oc, s.tw, t0, tiles, s.oh, s.ow, images, sums, sums_stride);
    }
}
