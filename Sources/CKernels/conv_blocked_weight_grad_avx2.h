// The AVX2 weight gradient of conv_blocked.c for K ≤ 3, stride 1 (included there once; the older AVX2
// instances stay reachable through qat_conv_blocked_enable_avx2_weight_grad(0)).
//
// Why a path of its own: the instances' units (ob, c[, kh]) each stream gy of every image, and gy
// is pixel-major over all output channels, so a unit of 8 or 16 lanes used a quarter to an eighth
// of each cache line it read from L3 (25–35 % of the FMA peak on vgg-small). Here gy is stored
// block-major, gyt[ob][n][p][8] (a unit's pixels are consecutive), and a call walks images in the
// outer loop and a group of units inside it, so one image's gy block (≤ 25 KB at 28×28) is read
// from L1/L2 by every input channel of the group. Each unit's 9 accumulators are kept in memory
// between images; they add the same terms in the same order as in registers, so the sums are those
// of the avx2_8 instance (8 lanes, all taps, 4-pixel row blocks): per accumulator every pixel in
// order (n, i, j), one FMA chain.
//
// Register blocking (16 ymm): 9 accumulators (all taps) + 4 gy vectors (4 pixels of a row) +
// 1 broadcast input; stride 1 reads each input value once for the K taps of its kernel row, so a
// 4-pixel block is 36 FMAs for 4 + 3·6 = 22 loads (Zen 3: 2 FMAs and 2 loads a cycle).

#define QCB_WG_GROUP 32   // units a group: 32 × 9 accumulators = 9 KB beside the image's gy block

// Images [n0, n1) of unit (ob, c) added to acc[0 … K·K). Row blocks of 4 pixels, then 2, then
// single pixels; per accumulator the pixels still come in order (n, i, j). Stride 1: tap
// (kh, kw) of pixel j reads x[kh·Wq + kw + j], so a block of JB pixels loads each of its kernel
// row's JB + K − 1 input values once for its K taps.
__attribute__((target("avx2,fma"), always_inline))
static inline void avx2_wg_images(const float *restrict xq, const float *restrict gyt, const struct blocked_shape *s,
                                  long ob, long c, long n0, long n1, const long *restrict tap, qv8 *restrict accs,
                                  const int K) {
    qv8 acc[9];
    for (int t = 0; t < K * K; t++) acc[t] = accs[t];
    const long plane = s->oh * s->ow;
    for (long n = n0; n < n1; n++) {
        const float *xc = xq + n * s->imageFloats + c * s->channelFloats;
        const float *gn = gyt + (ob * s->N + n) * plane * 8;
        long i = 0;
        if (s->ow == 2) {
            // Rows of 2 pixels (2×2 planes): blocks of 2 rows, so the 4 pixels' gy vectors (consecutive
            // in gyt) share (K + 1)² input loads, 20 loads for 36 FMAs (28 as two 2-pixel row
            // blocks). Per accumulator the pixels still come in order (i, j).
            for (; i + 2 <= s->oh; i += 2) {
                const float *xr = xc + i * s->Wq;
                const float *gr = gn + i * 2 * 8;
                qv8 gv[4];
                _Pragma("clang loop unroll(full)")
                for (int p = 0; p < 4; p++) gv[p] = *(const qv8u *)(gr + p * 8);
                _Pragma("clang loop unroll(full)")
                for (int r = 0; r < K + 1; r++) {
                    _Pragma("clang loop unroll(full)")
                    for (int m = 0; m < K + 1; m++) {
                        const float xv = xr[r * s->Wq + m];
                        _Pragma("clang loop unroll(full)")
                        for (int kh = 0; kh < K; kh++) {
                            _Pragma("clang loop unroll(full)")
                            for (int kw = 0; kw < K; kw++)
                                if (r - kh >= 0 && r - kh < 2 && m - kw >= 0 && m - kw < 2)
                                    acc[kh * K + kw] += gv[(r - kh) * 2 + m - kw] * xv;
                        }
                    }
                }
            }
        }
        for (; i < s->oh; i++) {
            const float *xr = xc + i * s->Wq;
            const float *gr = gn + i * s->ow * 8;
            long j = 0;
#define QCB_WG_ROW_BLOCK(JB) \
            for (; j + JB <= s->ow; j += JB) { \
                qv8 gv[JB]; \
                _Pragma("clang loop unroll(full)") \
                for (int p = 0; p < JB; p++) gv[p] = *(const qv8u *)(gr + (j + p) * 8); \
                _Pragma("clang loop unroll(full)") \
                for (int kh = 0; kh < K; kh++) { \
                        const float *xk = xr + kh * s->Wq + j; \
                    _Pragma("clang loop unroll(full)") \
                    for (int m = 0; m < JB + K - 1; m++) { \
                        const float xv = xk[m]; \
                        _Pragma("clang loop unroll(full)") \
                        for (int kw = 0; kw < K; kw++) \
                            if (m - kw >= 0 && m - kw < JB) acc[kh * K + kw] += gv[m - kw] * xv; \
                    } \
                } \
            }
            QCB_WG_ROW_BLOCK(4)
            QCB_WG_ROW_BLOCK(2)
#undef QCB_WG_ROW_BLOCK
            for (; j < s->ow; j++) {
                const qv8 gv = *(const qv8u *)(gr + j * 8);
                for (int t = 0; t < K * K; t++) acc[t] += gv * xr[tap[t] + j];
            }
        }
    }
    for (int t = 0; t < K * K; t++) accs[t] = acc[t];
}

__attribute__((target("avx2,fma"), always_inline))
static inline void avx2_wg_group(const float *restrict xq, const float *restrict gyt, float *restrict gw,
                                 const struct blocked_shape *s, long u0, long u1, const int K) {
    qv8 accs[QCB_WG_GROUP][9];
    long tap[9];
    for (int t = 0; t < K * K; t++) {
        const long kh = t / K, kw = t % K;
        tap[t] = kh * s->Wq + kw;   // stride 1: one phase
    }
    for (long u = u0; u < u1; u++)
        for (int t = 0; t < K * K; t++) accs[u - u0][t] = (qv8){0};
    // Images a pass over the group: ≥ 64 pixels, so that small planes load and store their
    // accumulators once per several images (the shape alone decides).
    const long plane = s->oh * s->ow, images = plane >= 64 ? 1 : (64 + plane - 1) / plane;
    for (long n = 0; n < s->N; n += images) {
        const long n1 = s->N - n < images ? s->N : n + images;
        for (long u = u0; u < u1; u++)
            avx2_wg_images(xq, gyt, s, u / s->C, u % s->C, n, n1, tap, accs[u - u0], K);
    }
    for (long u = u0; u < u1; u++) {
        const long c = u % s->C, ob = u / s->C;
        const long lanes = s->O - 8 * ob < 8 ? s->O - 8 * ob : 8;
        for (int t = 0; t < K * K; t++) {
            float out[8];
            *(qv8u *)out = accs[u - u0][t];
            for (long l = 0; l < lanes; l++) gw[((8 * ob + l) * s->C + c) * K * K + t] += out[l];
        }
    }
}

// Units [u0, u1) of (ob, c), u = ob·C + c, in groups of QCB_WG_GROUP.
__attribute__((target("avx2,fma")))
static void avx2_wg(const float *restrict xq, const float *restrict gyt, float *restrict gw,
                    const qat_conv_geometry *g, long u0, long u1) {
    const struct blocked_shape s = blocked_shape_of(g);
    for (long v0 = u0; v0 < u1; v0 += QCB_WG_GROUP) {
        const long v1 = u1 - v0 < QCB_WG_GROUP ? u1 : v0 + QCB_WG_GROUP;
        if (s.K == 2) avx2_wg_group(xq, gyt, gw, &s, v0, v1, 2);
        else avx2_wg_group(xq, gyt, gw, &s, v0, v1, 3);
    }
}

#undef QCB_WG_GROUP
