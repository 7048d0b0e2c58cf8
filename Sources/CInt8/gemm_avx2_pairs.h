// The AVX2 "pair" kernel, included by gemm_avx2.c (uses its round8 / round_shift8).
//
// b's VNNI layout holds, per group of 4 k, 8 columns in 32 bytes: (u0 u1 u2 u3) of column 0, then
// column 1, … One vpshufb (in-lane; index 0x80 gives a zero byte) turns them into "pair 0", the
// int16 pairs (u0, u1) of columns 0…7 in 32-bit lanes 0…7, and one more into "pair 1", (u2, u3).
// vpmaddwd with a broadcast weight pair (w0, w1) or (w2, w3) then gives column j's partial sum in
// lane j: the accumulators are the output columns in order, nothing to fold after the k loop.
// Sums are exact in int32 (int8_internal.h), so the order of additions does not matter.
//
// Tile: MR_PAIRS rows × 16 columns: 2·MR accumulators, 4 pair vectors, 2 weight broadcasts.
// The epilogue reads the output parameters from locals (byte stores may alias g) and writes a
// row's 16 int8 codes with one 16-byte store. The common epilogues (int32; floats with or without
// offset and ReLU; codes by scale with ties to even) are compiled as loops of their own, so that
// nothing in a tile tests the output kind, the offset or the tie rule per vector: on short k (a
// 1×1 conv of 16 channels has 4 groups of k per output) the epilogue is half of the work.

enum { MR_PAIRS = 4 };

// g's output parameters as locals (see above).
typedef struct {
    qat_i8_out_kind kind;
    const float *scale, *offset;
    const int32_t *shift;
    int32_t zero, lo, hi;
    qat_i8_round_mode mode;
    int relu, n;
    char *out;
    ptrdiff_t row_stride, col_stride;
} pair_epilogue;

// Which epilogue a loop is compiled for: constants in the specialised loops, g's values in the
// general one (gemm_avx2_pairs).
typedef struct {
    qat_i8_out_kind kind;
    int offset, relu, shift;
    int even;  // codes by scale, ties to even: the clamp before the conversion, which rounds (below)
} pair_variant;

// qat_i8_scaled1 on 8 lanes (multiply, then add: no FMA), then g->relu's ReLU (x < 0 → +0; NaN and −0 kept).
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
__m256 pair_dequantize8(const pair_variant v, float scale, float offset, __m256i acc) {
    __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(scale));
    if (v.offset) y = _mm256_add_ps(y, _mm256_set1_ps(offset));
    if (v.relu) y = _mm256_andnot_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_LT_OQ), y);
    return y;
}

// The steps of store8's INT8 case (qat_i8_store1's formula), codes as int32 lanes. With ties to
// even, the clamp to the integers lo − zero … hi − zero comes before the rounding, which
// vcvtps2dq does (to nearest, ties to even, as nearbyintf in the default rounding mode): rounding
// is monotone and the bounds are integers, so clamp∘round = round∘clamp; a NaN still becomes
// lo − zero (vmaxps returns its second operand), ±∞ the bounds.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
__m256i pair_requant8(const pair_epilogue *e, const pair_variant v, float scale, float offset, int32_t shift, __m256i acc) {
    if (v.even) {
        __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(scale));
        if (v.offset) r = _mm256_add_ps(r, _mm256_set1_ps(offset));
        r = _mm256_max_ps(r, _mm256_set1_ps((float)(e->lo - e->zero)));
        r = _mm256_min_ps(r, _mm256_set1_ps((float)(e->hi - e->zero)));
        return _mm256_add_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(e->zero));
    }
    if (v.shift) {
        __m256i q = round_shift8(acc, shift, e->mode);
        q = _mm256_max_epi32(q, _mm256_set1_epi32(e->lo - e->zero));
        q = _mm256_min_epi32(q, _mm256_set1_epi32(e->hi - e->zero));
        return _mm256_add_epi32(q, _mm256_set1_epi32(e->zero));
    }
    __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(scale));
    if (v.offset) r = _mm256_add_ps(r, _mm256_set1_ps(offset));
    r = round8(r, e->mode);
    r = _mm256_max_ps(r, _mm256_set1_ps((float)(e->lo - e->zero)));
    r = _mm256_min_ps(r, _mm256_set1_ps((float)(e->hi - e->zero)));
    return _mm256_add_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(e->zero));
}

// Codes with ties to even as pair_requant8 has them, before the zero point is added: the scaled
// sum clamped to lo − zero … hi − zero, rounded by the conversion.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
__m256i pair_even8(const pair_epilogue *e, const pair_variant v, __m256 scale, __m256 offset, __m256i acc) {
    __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale);
    if (v.offset) r = _mm256_add_ps(r, offset);
    r = _mm256_max_ps(r, _mm256_set1_ps((float)(e->lo - e->zero)));
    r = _mm256_min_ps(r, _mm256_set1_ps((float)(e->hi - e->zero)));
    return _mm256_cvtps_epi32(r);
}

// Rows `row` and `row + 1`, 16 whole columns from `col`, as codes by scale with ties to even: the
// steps of pair_requant8, with fewer instructions per code (on short k the epilogue is half of a
// 1×1 conv). The zero point is added to the int16 values (a clamped value plus the zero point is a
// code, so nothing wraps), and one packsswb packs both rows: its dwords are, for row A and B and
// Ak = columns 4k…4k + 3, A0 A2 B0 B2 | A1 A3 B1 B3; one vpermd puts row A in the low half.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void pair_store_two_rows_even(const pair_epilogue *e, const pair_variant v, int row, int col, __m256i a0, __m256i a1,
                              __m256i b0, __m256i b1) {
    const __m256 scale_a = _mm256_set1_ps(e->scale[row]), scale_b = _mm256_set1_ps(e->scale[row + 1]);
    const __m256 offset_a = v.offset ? _mm256_set1_ps(e->offset[row]) : _mm256_setzero_ps();
    const __m256 offset_b = v.offset ? _mm256_set1_ps(e->offset[row + 1]) : _mm256_setzero_ps();
    const __m256i zero = _mm256_set1_epi16((int16_t)e->zero);
    const __m256i a16 = _mm256_add_epi16(_mm256_packs_epi32(pair_even8(e, v, scale_a, offset_a, a0), pair_even8(e, v, scale_a, offset_a, a1)), zero);
    const __m256i b16 = _mm256_add_epi16(_mm256_packs_epi32(pair_even8(e, v, scale_b, offset_b, b0), pair_even8(e, v, scale_b, offset_b, b1)), zero);
    const __m256i both = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a16, b16), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    char *dst = e->out + (ptrdiff_t)row * e->row_stride + col;
    _mm_storeu_si128((__m128i *)dst, _mm256_castsi256_si128(both));
    _mm_storeu_si128((__m128i *)(dst + e->row_stride), _mm256_extracti128_si256(both, 1));
}

// Row `row`, columns col…col+15 from a0 (col…col+7) and a1 (col+8…), bias already in. A row's
// last columns (fewer than 16) are computed as whole vectors into a local buffer and only the
// valid ones copied out: the same formulas, so the same bits as qat_i8_store1 (which was called
// per element for them: every row of a 14×14 plane ended in 4 such calls).
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void pair_store16(const qat_i8_gemm *g, const pair_epilogue *e, const pair_variant v, int row, int col, __m256i a0, __m256i a1) {
    const int valid = e->n - col < 16 ? e->n - col : 16;
    if (e->col_stride != 1) {  // linear's strided outputs: the scalar formula
        int32_t lanes[16];
        _mm256_storeu_si256((__m256i *)lanes, a0);
        _mm256_storeu_si256((__m256i *)(lanes + 8), a1);
        for (int l = 0; l < valid; l++) {
            qat_i8_store1(g, row, col + l, lanes[l]);
            if (v.relu) {  // float output (conv2d_impl sets relu only then)
                float *y = (float *)e->out + (ptrdiff_t)row * e->row_stride + (ptrdiff_t)(col + l) * e->col_stride;
                *y = *y < 0.0f ? 0.0f : *y;
            }
        }
        return;
    }
    const float scale = v.kind != QAT_I8_OUT_INT32 && e->scale ? e->scale[row] : 0.0f, offset = v.offset ? e->offset[row] : 0.0f;
    const ptrdiff_t at = (ptrdiff_t)row * e->row_stride + col;
    _Alignas(32) char tail[64];  // 16 values of up to 4 bytes
    const size_t size = v.kind == QAT_I8_OUT_INT8 ? 1 : 4;
    char *dst = valid == 16 ? e->out + at * (ptrdiff_t)size : tail;
    switch (v.kind) {
    case QAT_I8_OUT_INT32:
        _mm256_storeu_si256((__m256i *)dst, a0);
        _mm256_storeu_si256((__m256i *)(dst + 32), a1);
        break;
    case QAT_I8_OUT_FLOAT:
        _mm256_storeu_ps((float *)dst, pair_dequantize8(v, scale, offset, a0));
        _mm256_storeu_ps((float *)(dst + 32), pair_dequantize8(v, scale, offset, a1));
        break;
    case QAT_I8_OUT_INT8: {
        const int32_t shift = v.shift ? e->shift[row] : 0;
        const __m256i q0 = pair_requant8(e, v, scale, offset, shift, a0), q1 = pair_requant8(e, v, scale, offset, shift, a1);
        // Codes are in [−128, 127], so the saturating packs are exact. Dwords after the two packs:
        // q0[0…3] q1[0…3] (twice) | q0[4…7] q1[4…7] (twice); the permute puts dwords 0 4 1 5 first.
        __m256i p = _mm256_packs_epi32(q0, q1);
        p = _mm256_packs_epi16(p, p);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5));
        _mm_storeu_si128((__m128i *)dst, _mm256_castsi256_si128(p));
        break;
    }
    }
    if (valid < 16) memcpy(e->out + at * (ptrdiff_t)size, tail, (size_t)valid * size);
}

// a32: the weights widened to int16 pairs, [m][k4][2] words (w0, w1) and (w2, w3).
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void pair_tile(const qat_i8_gemm *g, const pair_epilogue *e, const pair_variant v, const int32_t *a32, int k4, size_t b_stride,
               const uint8_t *b, const int32_t *corr, int i0, int j0, const int mr) {
    // Bytes 0, 1 (pair 0) or 2, 3 (pair 1) of each 4-byte column word, each followed by a zero byte.
    const __m256i pick0 = _mm256_setr_epi8(0, -128, 1, -128, 4, -128, 5, -128, 8, -128, 9, -128, 12, -128, 13, -128,
                                           0, -128, 1, -128, 4, -128, 5, -128, 8, -128, 9, -128, 12, -128, 13, -128);
    const __m256i pick1 = _mm256_add_epi8(pick0, _mm256_set1_epi8(2));  // 0x80 + 2 still has the top bit: zero
    __m256i c0[MR_PAIRS], c1[MR_PAIRS];  // columns j0…j0+7, j0+8…j0+15
    // The accumulators start from the bias term (int32 sums wrap in any order to the same bits).
    for (int r = 0; r < mr; r++) c0[r] = c1[r] = _mm256_set1_epi32(corr[i0 + r]);
    if (g->initial)
        for (int r = 0; r < mr; r++) {
            const int32_t *sums = g->initial + (size_t)(i0 + r) * g->initial_stride + j0;
            c0[r] = _mm256_add_epi32(c0[r], _mm256_loadu_si256((const __m256i *)sums));
            c1[r] = _mm256_add_epi32(c1[r], _mm256_loadu_si256((const __m256i *)(sums + 8)));
        }
    const uint8_t *bj = b + (size_t)j0 * 4;
    const int32_t *ai = a32 + (size_t)i0 * k4 * 2;
    for (int q = 0; q < k4; q++) {
        const uint8_t *bq = bj + (size_t)q * b_stride;
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)bq), b1 = _mm256_loadu_si256((const __m256i *)(bq + 32));
        const __m256i p00 = _mm256_shuffle_epi8(b0, pick0), p01 = _mm256_shuffle_epi8(b0, pick1);
        const __m256i p10 = _mm256_shuffle_epi8(b1, pick0), p11 = _mm256_shuffle_epi8(b1, pick1);
        for (int r = 0; r < mr; r++) {
            const int32_t *w = ai + ((size_t)r * k4 + q) * 2;
            const __m256i w01 = _mm256_set1_epi32(w[0]), w23 = _mm256_set1_epi32(w[1]);
            c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(p00, w01));
            c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(p10, w01));
            c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(p01, w23));
            c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(p11, w23));
        }
    }
    if (v.kind == QAT_I8_OUT_INT8 && v.even && e->col_stride == 1 && e->n - j0 >= 16) {
#pragma clang loop unroll(full)  // the accumulators stay in registers, not an array on the stack
        for (int r = 0; r + 1 < mr; r += 2) pair_store_two_rows_even(e, v, i0 + r, j0, c0[r], c1[r], c0[r + 1], c1[r + 1]);
        if (mr % 2) pair_store16(g, e, v, i0 + mr - 1, j0, c0[mr - 1], c1[mr - 1]);
        return;
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < mr; r++) pair_store16(g, e, v, i0 + r, j0, c0[r], c1[r]);
}

// Every tile of the GEMM, for one epilogue variant.
static inline __attribute__((always_inline)) QAT_I8_TARGET_AVX2
void pair_loop(const qat_i8_gemm *g, const pair_epilogue *shared, const pair_variant v, const int32_t *a32) {
    // A copy whose address no store can alias: its bounds and pointers stay in registers.
    const pair_epilogue local = *shared, *e = &local;
    const int m = g->m, n = g->n, k4 = g->k4;
    const uint8_t *b = g->b;
    const int32_t *corr = g->corr;
    const size_t b_stride = (size_t)g->npad * 4;
    for (int j0 = 0; j0 < n; j0 += 16) {
        for (int i0 = 0; i0 < m; i0 += MR_PAIRS) {
            // The last tile's rows (the min keeps the cases past MR_PAIRS, never taken, in bounds).
#define PAIR_TILE(rows) pair_tile(g, e, v, a32, k4, b_stride, b, corr, i0, j0, (rows) < MR_PAIRS ? (rows) : MR_PAIRS)
            switch (m - i0 < MR_PAIRS ? m - i0 : MR_PAIRS) {
            case 1: PAIR_TILE(1); break;
            case 2: PAIR_TILE(2); break;
            case 3: PAIR_TILE(3); break;
            case 4: PAIR_TILE(4); break;
            case 5: PAIR_TILE(5); break;
            default: PAIR_TILE(MR_PAIRS); break;
            }
#undef PAIR_TILE
        }
    }
}

// One instance of pair_loop per common epilogue (constant variant), and the general one.
#define PAIR_LOOP_INSTANCE(name, ...) \
    static QAT_I8_TARGET_AVX2 void name(const qat_i8_gemm *g, const pair_epilogue *e, const int32_t *a32) { \
        pair_loop(g, e, (pair_variant){__VA_ARGS__}, a32); \
    }
PAIR_LOOP_INSTANCE(pair_loop_int32, .kind = QAT_I8_OUT_INT32)
PAIR_LOOP_INSTANCE(pair_loop_float, .kind = QAT_I8_OUT_FLOAT)
PAIR_LOOP_INSTANCE(pair_loop_float_relu, .kind = QAT_I8_OUT_FLOAT, .relu = 1)
PAIR_LOOP_INSTANCE(pair_loop_float_offset, .kind = QAT_I8_OUT_FLOAT, .offset = 1)
PAIR_LOOP_INSTANCE(pair_loop_float_offset_relu, .kind = QAT_I8_OUT_FLOAT, .offset = 1, .relu = 1)
PAIR_LOOP_INSTANCE(pair_loop_codes_even, .kind = QAT_I8_OUT_INT8, .even = 1)
PAIR_LOOP_INSTANCE(pair_loop_codes_even_offset, .kind = QAT_I8_OUT_INT8, .offset = 1, .even = 1)
#undef PAIR_LOOP_INSTANCE

static QAT_I8_TARGET_AVX2 __attribute__((noinline)) void pair_loop_general(const qat_i8_gemm *g, const pair_epilogue *e,
                                                                          const int32_t *a32) {
    const pair_variant v = {.kind = e->kind, .offset = e->offset != NULL, .relu = e->relu, .shift = e->shift != NULL};
    pair_loop(g, e, v, a32);
}

int qat_i8_avx2_pair_epilogues = 1;
void qat_i8_allow_avx2_pair_epilogues(int allowed) { qat_i8_avx2_pair_epilogues = allowed; }

int32_t *qat_i8_avx2_weight_pairs(const int8_t *a, size_t groups) {
    const size_t words = groups * 2;
    int32_t *pairs = qat_i8_checked_malloc(words * sizeof(int32_t));
    for (size_t i = 0; i < words; i++)
        pairs[i] = (int32_t)((uint32_t)(uint16_t)(int16_t)a[2 * i] | (uint32_t)(uint16_t)(int16_t)a[2 * i + 1] << 16);
    return pairs;
}

static QAT_I8_TARGET_AVX2 void gemm_avx2_pairs(const qat_i8_gemm *g) {
    // Weight pairs as words, one broadcast each: the caller's, or widened here.
    static const int32_t no_weights[1];  // k4 = 0 (the epilogue of sums made elsewhere): none to read
    int32_t *widened = g->a_pairs || g->k4 == 0 ? NULL : qat_i8_avx2_weight_pairs(g->a, (size_t)g->m * g->k4);
    const int32_t *a32 = g->a_pairs ? g->a_pairs : widened ? widened : no_weights;
    const pair_epilogue e = {.kind = g->output.kind, .scale = g->output.scale, .offset = g->output.offset,
                             .shift = g->output.shift, .zero = g->output.zero_point, .lo = g->output.lo,
                             .hi = g->output.hi, .mode = g->output.round_mode,
                             .relu = g->relu && g->output.kind == QAT_I8_OUT_FLOAT, .n = g->n, .out = g->out,
                             .row_stride = g->row_stride, .col_stride = g->col_stride};
    void (*loop)(const qat_i8_gemm *, const pair_epilogue *, const int32_t *) = pair_loop_general;
    if (qat_i8_avx2_pair_epilogues) switch (e.kind) {
    case QAT_I8_OUT_INT32: loop = pair_loop_int32; break;
    case QAT_I8_OUT_FLOAT:
        loop = e.offset ? (e.relu ? pair_loop_float_offset_relu : pair_loop_float_offset)
                        : (e.relu ? pair_loop_float_relu : pair_loop_float);
        break;
    case QAT_I8_OUT_INT8:
        if (!e.shift && e.mode == QAT_I8_ROUND_HALF_EVEN) loop = e.offset ? pair_loop_codes_even_offset : pair_loop_codes_even;
        break;
    }
    loop(g, &e, a32);
    free(widened);
}
