// Kernels of conv_blocked.c, included once per (instruction set, vector width) with QCB_NAME,
// QCB_TARGET, QCB_LANES (channels a vector: 16 or 8), its vector types QCB_VEC / QCB_VECU and the
// register-blocking sizes defined (see there). A 16-lane vector is one AVX-512 register or two AVX2
// registers, an 8-lane one a single ymm register, as the target attribute lowers it.
#define QCB_BLOCKS(n) (((n) + QCB_LANES - 1) / QCB_LANES)

// ---------------------------------------------------------------- forward
// PB consecutive pixels q0 … q0+PB−1 (q = i·Wq + j; j ≥ Wo are the padding columns, computed and
// dropped) × QCB_LANES output channels of block ob, summed over (c, kh, kw). Only pixels in
// [qFirst, Q) are stored: the remainder after the PB-pixel blocks is done in 4-pixel blocks, the
// last one moved back to end at Q (or, for planes under 4 pixels, reading past Q into the next
// plane or the image's 16 zeros), so no block is latency-bound on a single FMA chain.
#if QCB_LANES == 8
// dst[l·plane + k] = r[k][l] + b[l] (or += r[k][l]) for 8 pixels k of one row and the first `lanes`
// channels l: an 8×8 transpose in registers, then one vector store per channel instead of 8
// scalar ones (the stores were a third of the 8-lane forward's time). Same additions, same bits.
QCB_TARGET __attribute__((always_inline))
static inline void QCB_NAME(store_transposed)(const qv8 *restrict r, float *restrict dst, long plane, long lanes,
                                              const float *restrict b, int accumulate) {
    const qv8 t0 = __builtin_shufflevector(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13);
    const qv8 t1 = __builtin_shufflevector(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
    const qv8 t2 = __builtin_shufflevector(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13);
    const qv8 t3 = __builtin_shufflevector(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
    const qv8 t4 = __builtin_shufflevector(r[4], r[5], 0, 8, 1, 9, 4, 12, 5, 13);
    const qv8 t5 = __builtin_shufflevector(r[4], r[5], 2, 10, 3, 11, 6, 14, 7, 15);
    const qv8 t6 = __builtin_shufflevector(r[6], r[7], 0, 8, 1, 9, 4, 12, 5, 13);
    const qv8 t7 = __builtin_shufflevector(r[6], r[7], 2, 10, 3, 11, 6, 14, 7, 15);
    const qv8 u0 = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
    const qv8 u1 = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
    const qv8 u2 = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
    const qv8 u3 = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
    const qv8 u4 = __builtin_shufflevector(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
    const qv8 u5 = __builtin_shufflevector(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
    const qv8 u6 = __builtin_shufflevector(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
    const qv8 u7 = __builtin_shufflevector(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
    const qv8 col[8] = {   // col[l]: channel l of the 8 pixels
        __builtin_shufflevector(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11), __builtin_shufflevector(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11),
        __builtin_shufflevector(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11), __builtin_shufflevector(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11),
        __builtin_shufflevector(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15), __builtin_shufflevector(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15),
        __builtin_shufflevector(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15), __builtin_shufflevector(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15),
    };
    _Pragma("clang loop unroll(full)")
    for (long l = 0; l < 8; l++) {
        if (l >= lanes) break;
        qv8u *d = (qv8u *)(dst + l * plane);
        *d = accumulate ? *d + col[l] : col[l] + b[l];
    }
}
#endif

// dst[l·plane + k] = r[k][l] (+ bias[l], or += r[k][l]) for 4 consecutive output pixels k and the
// first `lanes` channels l: a 4×4 transpose inside each 128-bit quarter, then one 4-float store per
// channel instead of 4 scalar ones (scalar stores were a third of the 16-lane slot forward's time).
// Same additions, same bits.
QCB_TARGET __attribute__((always_inline))
static inline void QCB_NAME(store4_transposed)(const QCB_VEC *restrict r, float *restrict dst, long plane,
                                               long lanes, const float *restrict bias, int accumulate) {
    // The bias comes by address: a vector argument wider than the target's registers (qv16 on
    // AVX2) would have no agreed ABI.
    const QCB_VEC bv = *(const QCB_VECU *)bias;
    const QCB_VEC r0 = accumulate ? r[0] : r[0] + bv, r1 = accumulate ? r[1] : r[1] + bv;
    const QCB_VEC r2 = accumulate ? r[2] : r[2] + bv, r3 = accumulate ? r[3] : r[3] + bv;
#if QCB_LANES == 16
#define QCB_UNPACK_LO 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29
#define QCB_UNPACK_HI 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31
#define QCB_HALVES_LO 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define QCB_HALVES_HI 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#else
#define QCB_UNPACK_LO 0, 8, 1, 9, 4, 12, 5, 13
#define QCB_UNPACK_HI 2, 10, 3, 11, 6, 14, 7, 15
#define QCB_HALVES_LO 0, 1, 8, 9, 4, 5, 12, 13
#define QCB_HALVES_HI 2, 3, 10, 11, 6, 7, 14, 15
#endif
    const QCB_VEC t0 = __builtin_shufflevector(r0, r1, QCB_UNPACK_LO), t1 = __builtin_shufflevector(r0, r1, QCB_UNPACK_HI);
    const QCB_VEC t2 = __builtin_shufflevector(r2, r3, QCB_UNPACK_LO), t3 = __builtin_shufflevector(r2, r3, QCB_UNPACK_HI);
    // u[m], quarter k: channel 4k + m of the 4 pixels.
    const QCB_VEC u[4] = { __builtin_shufflevector(t0, t2, QCB_HALVES_LO), __builtin_shufflevector(t0, t2, QCB_HALVES_HI),
                           __builtin_shufflevector(t1, t3, QCB_HALVES_LO), __builtin_shufflevector(t1, t3, QCB_HALVES_HI) };
#undef QCB_UNPACK_LO
#undef QCB_UNPACK_HI
#undef QCB_HALVES_LO
#undef QCB_HALVES_HI
#define QCB_PUT4(m, k) if (4 * (k) + (m) < lanes) { \
        qv4u *d = (qv4u *)(dst + (4 * (k) + (m)) * plane); \
        const qv4 column = __builtin_shufflevector(u[m], u[m], 4 * (k), 4 * (k) + 1, 4 * (k) + 2, 4 * (k) + 3); \
        *d = accumulate ? *d + column : column; }
    QCB_PUT4(0, 0) QCB_PUT4(1, 0) QCB_PUT4(2, 0) QCB_PUT4(3, 0)
    QCB_PUT4(0, 1) QCB_PUT4(1, 1) QCB_PUT4(2, 1) QCB_PUT4(3, 1)
#if QCB_LANES == 16
    QCB_PUT4(0, 2) QCB_PUT4(1, 2) QCB_PUT4(2, 2) QCB_PUT4(3, 2)
    QCB_PUT4(0, 3) QCB_PUT4(1, 3) QCB_PUT4(2, 3) QCB_PUT4(3, 3)
#endif
#undef QCB_PUT4
}

QCB_TARGET __attribute__((always_inline))
static inline void QCB_NAME(forward_block)(const float *restrict xn, const float *restrict wk,
        const long *restrict taps, long C, long KK, long channelFloats, long q0, long qFirst, long Q, long Wq,
        long ow, long oh, const float *restrict bias, long o0, long O, float *restrict yn, int accumulate,
        const int PB, const int rowK) {
    // Unrolled in full, or clang keeps more than ~16 accumulators in memory instead of registers.
    QCB_VEC acc[QCB_FORWARD_PB];
    _Pragma("clang loop unroll(full)")
    for (int p = 0; p < PB; p++) acc[p] = (QCB_VEC){0};
#if QCB_FORWARD_ROWS
    // Stride 1, rowK = K: the K taps of a kernel row read shifted windows of one input row, so each
    // input value is loaded once for K FMAs (PB + K − 1 loads for PB·K FMAs, not PB·K: the loads,
    // not the FMAs, bounded the 8-lane loop). Each accumulator still adds (c, kh, kw) in order.
    if (rowK > 0) {
        for (long c = 0; c < C; c++) {
            const float *xc = xn + c * channelFloats + q0;
            for (int kh = 0; kh < rowK; kh++, wk += rowK * QCB_LANES) {
                QCB_VEC wv[7];
                _Pragma("clang loop unroll(full)")
                for (int kw = 0; kw < rowK; kw++) wv[kw] = *(const QCB_VECU *)(wk + kw * QCB_LANES);
                const float *xr = xc + kh * Wq;
                _Pragma("clang loop unroll(full)")
                for (int m = 0; m < PB + rowK - 1; m++) {
                    const float xv = xr[m];
                    _Pragma("clang loop unroll(full)")
                    for (int kw = 0; kw < rowK; kw++)
                        if (m - kw >= 0 && m - kw < PB) acc[m - kw] += wv[kw] * xv;
                }
            }
        }
    } else
#endif
    for (long c = 0; c < C; c++) {
        const float *xc = xn + c * channelFloats + q0;
        for (long t = 0; t < KK; t++, wk += QCB_LANES) {
            const QCB_VEC wv = *(const QCB_VECU *)wk;
            const float *tap = xc + taps[t];
            _Pragma("clang loop unroll(full)")
            for (int p = 0; p < PB; p++) acc[p] += wv * tap[p];
        }
    }
    const long plane = oh * ow;
    const long lanes = O - o0 < QCB_LANES ? O - o0 : QCB_LANES;
    float b[QCB_LANES] = {0};
    if (bias && !accumulate) for (long l = 0; l < lanes; l++) b[l] = bias[o0 + l];
    for (int p = 0; p < PB; p++) {
        const long q = q0 + p, i = q / Wq, j = q - i * Wq;
#if QCB_LANES == 8
        if (PB % 8 == 0 && p % 8 == 0 && j + 8 <= ow && q >= qFirst && q + 8 <= Q) {
            QCB_NAME(store_transposed)(acc + p, yn + o0 * plane + i * ow + j, plane, lanes, b, accumulate);
            p += 7;
            continue;
        }
#endif
        // 4 pixels of one row (rows and blocks need not align to 8: 14-pixel rows in 24-pixel blocks)
        if (!reference_loops && PB % 4 == 0 && p % 4 == 0 && j + 4 <= ow && q >= qFirst && q + 4 <= Q) {
            QCB_NAME(store4_transposed)(acc + p, yn + o0 * plane + i * ow + j, plane, lanes, b, accumulate);
            p += 3;
            continue;
        }
        if (j >= ow || q >= Q || q < qFirst) continue;
        float out[QCB_LANES];
        *(QCB_VECU *)out = acc[p];
        float *dst = yn + o0 * plane + i * ow + j;
        // Scalar stores: vectorised, this loop became a scatter fed by a masked reload of `out`,
        // which stalls on store forwarding.
        if (accumulate) {
            _Pragma("clang loop vectorize(disable)")
            for (long l = 0; l < lanes; l++) dst[l * plane] += out[l];
        } else {
            _Pragma("clang loop vectorize(disable)")
            for (long l = 0; l < lanes; l++) dst[l * plane] = out[l] + b[l];
        }
    }
}

QCB_TARGET
static void QCB_NAME(forward)(const float *restrict xq, const float *restrict wf, const float *restrict bias,
                              float *restrict y, const qat_conv_geometry *g, long n0, long n1, int accumulate) {
    const struct blocked_shape s = blocked_shape_of(g);
    long taps[QCB_MAX_TAPS];
    blocked_taps(&s, taps);
    for (long n = n0; n < n1; n++) {
        const float *xn = xq + n * s.imageFloats;
        float *yn = y + n * s.O * s.oh * s.ow;
        for (long ob = 0; ob < QCB_BLOCKS(s.O); ob++) {
            const float *wk = wf + ob * s.C * s.KK * QCB_LANES;
            long q0 = 0;
            for (; q0 + QCB_FORWARD_PB <= s.Q; q0 += QCB_FORWARD_PB) {
#if QCB_FORWARD_ROWS
                // K constant: weights and accumulators in registers. QCB_FORWARD_ROWS: the largest K.
                if (s.S == 1 && (s.K == 3 || (s.K == 5 && QCB_FORWARD_ROWS >= 5))) {
                    if (s.K == 3)
                        QCB_NAME(forward_block)(xn, wk, taps, s.C, s.KK, s.channelFloats, q0, q0, s.Q, s.Wq, s.ow, s.oh,
                                                bias, QCB_LANES * ob, s.O, yn, accumulate, QCB_FORWARD_PB, 3);
                    else
                        QCB_NAME(forward_block)(xn, wk, taps, s.C, s.KK, s.channelFloats, q0, q0, s.Q, s.Wq, s.ow, s.oh,
                                                bias, QCB_LANES * ob, s.O, yn, accumulate, QCB_FORWARD_PB, 5);
                    continue;
                }
#endif
                QCB_NAME(forward_block)(xn, wk, taps, s.C, s.KK, s.channelFloats, q0, q0, s.Q, s.Wq, s.ow, s.oh,
                                        bias, QCB_LANES * ob, s.O, yn, accumulate, QCB_FORWARD_PB, 0);
            }
#if QCB_FORWARD_ROWS
            // 3×3 stride 1: the tail in 8-pixel kernel-row blocks, the last one moved back to end at
            // Q (4-pixel blocks have too few accumulators to hide the FMA latency).
            if (s.S == 1 && s.K == 3 && s.Q >= 8 && !reference_loops) {
                for (; q0 < s.Q; q0 += 8) {
                    const long start = q0 + 8 <= s.Q ? q0 : s.Q - 8;
                    QCB_NAME(forward_block)(xn, wk, taps, s.C, s.KK, s.channelFloats, start, q0, s.Q, s.Wq, s.ow,
                                            s.oh, bias, QCB_LANES * ob, s.O, yn, accumulate, 8, 3);
                }
            }
#endif
            for (; q0 < s.Q; q0 += 4) {
                const long start = q0 + 4 <= s.Q || s.Q < 4 ? q0 : s.Q - 4;
                QCB_NAME(forward_block)(xn, wk, taps, s.C, s.KK, s.channelFloats, start, q0, s.Q, s.Wq, s.ow, s.oh,
                                        bias, QCB_LANES * ob, s.O, yn, accumulate, 4, 0);
            }
        }
    }
}

// ---------------------------------------------------------------- forward over image slots
// Small planes (blocked_use_slots): a block's PB pixel slots are consecutive USEFUL pixels of
// consecutive images (no padding columns), each slot with its own input base xs[p] (pixel
// (i, j) of image n: its phased planes + i·Wq + j) and output address ys[p] (NULL: a filler slot
// past the end, computed and dropped). A weight vector loaded once serves PB useful pixels; each
// output still sums (c, kh, kw) in order, one FMA each, so its bits are the per-image path's.
QCB_TARGET __attribute__((always_inline))
static inline void QCB_NAME(slots_block)(const float *const *restrict xs, float *const *restrict ys,
        const float *restrict wk, const long *restrict taps, long C, long KK, long channelFloats, long Wq,
        long plane, const float *restrict b, long lanes, int accumulate, const int PB, const int rowK,
        const int rowS) {
    QCB_VEC acc[QCB_FORWARD_PB];
    _Pragma("clang loop unroll(full)")
    for (int p = 0; p < PB; p++) acc[p] = (QCB_VEC){0};
    if (rowK > 0) {
        // Stride rowS (1 or 2): the K taps of kernel row kh read each slot's phased input at fixed
        // offsets from one row start (stride 1: K consecutive floats; stride 2: phases (kh mod 2,
        // kw mod 2), column kw / 2), so a slot's address is loaded once for K FMAs.
        const long phaseFloats = channelFloats / (rowS * rowS);
        long kwOffset[3];
        _Pragma("clang loop unroll(full)")
        for (int kw = 0; kw < rowK; kw++) kwOffset[kw] = rowS == 1 ? kw : (kw % 2) * phaseFloats + kw / 2;
        for (long c = 0; c < C; c++) {
            for (int kh = 0; kh < rowK; kh++, wk += rowK * QCB_LANES) {
                QCB_VEC wv[3];
                _Pragma("clang loop unroll(full)")
                for (int kw = 0; kw < rowK; kw++) wv[kw] = *(const QCB_VECU *)(wk + kw * QCB_LANES);
                const long row = c * channelFloats
                    + (rowS == 1 ? kh * Wq : (kh % 2) * 2 * phaseFloats + (kh / 2) * Wq);
                _Pragma("clang loop unroll(full)")
                for (int p = 0; p < PB; p++) {
                    const float *xr = xs[p] + row;
                    _Pragma("clang loop unroll(full)")
                    for (int kw = 0; kw < rowK; kw++) acc[p] += wv[kw] * xr[kwOffset[kw]];
                }
            }
        }
    } else {
        for (long c = 0; c < C; c++) {
            for (long t = 0; t < KK; t++, wk += QCB_LANES) {
                const QCB_VEC wv = *(const QCB_VECU *)wk;
                const long offset = c * channelFloats + taps[t];
                _Pragma("clang loop unroll(full)")
                for (int p = 0; p < PB; p++) acc[p] += wv * xs[p][offset];
            }
        }
    }
    for (int p = 0; p < PB; p++) {
        if (!ys[p]) continue;
        // slots p … p + 3 (p a multiple of 4) on consecutive addresses: consecutive pixels of one image
        if (!reference_loops && PB % 4 == 0 && p % 4 == 0
            && ys[p + 1] == ys[p] + 1 && ys[p + 2] == ys[p] + 2 && ys[p + 3] == ys[p] + 3) {
            QCB_NAME(store4_transposed)(acc + p, ys[p], plane, lanes, b, accumulate);
            p += 3;
            continue;
        }
        float out[QCB_LANES];
        *(QCB_VECU *)out = acc[p];
        float *dst = ys[p];
        if (accumulate) {
            _Pragma("clang loop vectorize(disable)")
            for (long l = 0; l < lanes; l++) dst[l * plane] += out[l];
        } else {
            _Pragma("clang loop vectorize(disable)")
            for (long l = 0; l < lanes; l++) dst[l * plane] = out[l] + b[l];
        }
    }
}

// Slots [u0, u0 + PB) of the useful pixels of images [n0, n1) (u = (n − n0)·plane + i·Wo + j);
// those past U become fillers that repeat the last pixel and are not stored.
static inline void QCB_NAME(slots_fill)(const struct blocked_shape *s, const float *xq, float *y, long n0,
                                        long u0, long U, long o0, const float **xs, float **ys, const int PB) {
    const long plane = s->oh * s->ow;
    // Divide once, then step (n, i, j) pixel by pixel: divisions per slot cost as much as a
    // small layer's FMAs.
    long n = n0 + u0 / plane, r = u0 % plane, i = r / s->ow, j = r % s->ow;
    for (int p = 0; p < PB; p++) {
        if (u0 + p >= U) {   // fillers: repeat the last pixel, not stored
            xs[p] = xs[p - 1];
            ys[p] = NULL;
            continue;
        }
        xs[p] = xq + n * s->imageFloats + i * s->Wq + j;
        ys[p] = y + (n * s->O + o0) * plane + r;
        r++;
        if (++j == s->ow) {
            j = 0;
            if (++i == s->oh) { i = 0; r = 0; n++; }
        }
    }
}

QCB_TARGET
static void QCB_NAME(forward_slots)(const float *restrict xq, const float *restrict wf, const float *restrict bias,
                                    float *restrict y, const qat_conv_geometry *g, long n0, long n1, int accumulate) {
    const struct blocked_shape s = blocked_shape_of(g);
    long taps[QCB_MAX_TAPS];
    blocked_taps(&s, taps);
    const long plane = s.oh * s.ow, U = (n1 - n0) * plane;
    // Kernel rows: 3×3 at stride 1, and at stride 2 unless the reference loops are asked for.
    const int rows = QCB_SLOTS_ROWS && s.K == 3 && (s.S == 1 || (s.S == 2 && !reference_loops));
    const float *xs[QCB_FORWARD_PB];
    float *ys[QCB_FORWARD_PB];
    for (long ob = 0; ob < QCB_BLOCKS(s.O); ob++) {
        const float *wk = wf + ob * s.C * s.KK * QCB_LANES;
        const long o0 = QCB_LANES * ob, lanes = s.O - o0 < QCB_LANES ? s.O - o0 : QCB_LANES;
        float b[QCB_LANES] = {0};
        if (bias && !accumulate) for (long l = 0; l < lanes; l++) b[l] = bias[o0 + l];
        long u0 = 0;
        for (; u0 + QCB_FORWARD_PB / 2 < U; u0 += QCB_FORWARD_PB) {
            QCB_NAME(slots_fill)(&s, xq, y, n0, u0, U, o0, xs, ys, QCB_FORWARD_PB);
            if (rows && s.S == 1)
                QCB_NAME(slots_block)(xs, ys, wk, taps, s.C, s.KK, s.channelFloats, s.Wq, plane, b, lanes,
                                      accumulate, QCB_FORWARD_PB, 3, 1);
            else if (rows)
                QCB_NAME(slots_block)(xs, ys, wk, taps, s.C, s.KK, s.channelFloats, s.Wq, plane, b, lanes,
                                      accumulate, QCB_FORWARD_PB, 3, 2);
            else
                QCB_NAME(slots_block)(xs, ys, wk, taps, s.C, s.KK, s.channelFloats, s.Wq, plane, b, lanes,
                                      accumulate, QCB_FORWARD_PB, 0, 1);
        }
        for (; u0 < U; u0 += 4) {   // at most half a block left: 4 slots at a time
            QCB_NAME(slots_fill)(&s, xq, y, n0, u0, U, o0, xs, ys, 4);
            if (rows && s.S == 1)
                QCB_NAME(slots_block)(xs, ys, wk, taps, s.C, s.KK, s.channelFloats, s.Wq, plane, b, lanes,
                                      accumulate, 4, 3, 1);
            else if (rows)
                QCB_NAME(slots_block)(xs, ys, wk, taps, s.C, s.KK, s.channelFloats, s.Wq, plane, b, lanes,
                                      accumulate, 4, 3, 2);
            else
                QCB_NAME(slots_block)(xs, ys, wk, taps, s.C, s.KK, s.channelFloats, s.Wq, plane, b, lanes,
                                      accumulate, 4, 0, 1);
        }
    }
}

// ---------------------------------------------------------------- input gradient
// Stride 1: the forward kernel on gy, padded by K − 1 − P, with the flipped kernel (wb's taps
// reversed) and the channels swapped, added into gx (see qat_conv_blocked_input_grad).
// Stride 2, the transposed conv as a scatter: for PIX pixels (i, j0 … j0+PIX−1) of gy and kernel row kh,
// acc[p][kw] = Σ_o wb[cb, o, kh, kw, ·] · gy[o, i, j0+p], then added into the padded
// pixel-major buffer d [Hp, Wp, QCB_LANES c] at (i·S + kh, (j0+p)·S + kw).
QCB_TARGET __attribute__((always_inline))
static inline void QCB_NAME(input_grad_block)(const float *restrict gyn, const float *restrict wcb,
        float *restrict d, long O, long plane, long i, long j0, long ow, long S, long Wp, const int K,
        const int PIX) {
    for (int kh = 0; kh < K; kh++) {
        QCB_VEC acc[QCB_INPUT_GRAD_ACCS + 7];   // PIX·K ≤ max(ACCS, K)
        for (int a = 0; a < PIX * K; a++) acc[a] = (QCB_VEC){0};
        const float *go = gyn + i * ow + j0;
        const float *wk = wcb + kh * K * QCB_LANES;
        for (long o = 0; o < O; o++, go += plane, wk += K * K * QCB_LANES) {
            for (int kw = 0; kw < K; kw++) {
                const QCB_VEC wv = *(const QCB_VECU *)(wk + kw * QCB_LANES);
                for (int p = 0; p < PIX; p++) acc[p * K + kw] += wv * go[p];
            }
        }
        for (int p = 0; p < PIX; p++) {
            float *row = d + ((i * S + kh) * Wp + (j0 + p) * S) * QCB_LANES;
            for (int kw = 0; kw < K; kw++) {
                QCB_VECU *cell = (QCB_VECU *)(row + kw * QCB_LANES);
                *cell = *cell + acc[p * K + kw];
            }
        }
    }
}

QCB_TARGET __attribute__((always_inline))
static inline void QCB_NAME(input_grad_image)(const float *restrict gyn, const float *restrict wcb,
        float *restrict d, long O, long oh, long ow, long S, long Wp, const int K) {
    const int PIX = QCB_INPUT_GRAD_ACCS / K > 0 ? QCB_INPUT_GRAD_ACCS / K : 1;
    for (long i = 0; i < oh; i++) {
        long j0 = 0;
        for (; j0 + PIX <= ow; j0 += PIX) QCB_NAME(input_grad_block)(gyn, wcb, d, O, oh * ow, i, j0, ow, S, Wp, K, PIX);
        for (; j0 < ow; j0++) QCB_NAME(input_grad_block)(gyn, wcb, d, O, oh * ow, i, j0, ow, S, Wp, K, 1);
    }
}

QCB_TARGET
static void QCB_NAME(input_grad)(const float *restrict gy, const float *restrict wb, float *restrict gx,
                                 float *restrict scratch, const qat_conv_geometry *g, long n0, long n1) {
    const struct blocked_shape s = blocked_shape_of(g);
    const long Hp = s.H + 2 * s.P, Wp = s.W + 2 * s.P;
    for (long n = n0; n < n1; n++) {
        const float *gyn = gy + n * s.O * s.oh * s.ow;
        for (long cb = 0; cb < QCB_BLOCKS(s.C); cb++) {
            memset(scratch, 0, sizeof(float) * (size_t)(Hp * Wp * QCB_LANES));
            const float *wcb = wb + cb * s.O * s.KK * QCB_LANES;
            switch (s.K) {   // constant K: the accumulators stay in registers
            case 1: QCB_NAME(input_grad_image)(gyn, wcb, scratch, s.O, s.oh, s.ow, s.S, Wp, 1); break;
            case 2: QCB_NAME(input_grad_image)(gyn, wcb, scratch, s.O, s.oh, s.ow, s.S, Wp, 2); break;
            case 3: QCB_NAME(input_grad_image)(gyn, wcb, scratch, s.O, s.oh, s.ow, s.S, Wp, 3); break;
            case 4: QCB_NAME(input_grad_image)(gyn, wcb, scratch, s.O, s.oh, s.ow, s.S, Wp, 4); break;
            case 5: QCB_NAME(input_grad_image)(gyn, wcb, scratch, s.O, s.oh, s.ow, s.S, Wp, 5); break;
            case 6: QCB_NAME(input_grad_image)(gyn, wcb, scratch, s.O, s.oh, s.ow, s.S, Wp, 6); break;
            default: QCB_NAME(input_grad_image)(gyn, wcb, scratch, s.O, s.oh, s.ow, s.S, Wp, 7); break;
            }
            blocked_add_pixels_major(scratch, gx + n * s.C * s.H * s.W, &s, cb, QCB_LANES);
        }
    }
}

// ---------------------------------------------------------------- weight gradient
// gw[QCB_LANES o of block ob, c, kh, 0 … K) summed over every image and output pixel; two accumulator
// sets (even and odd pixels of a row) keep 2·K independent FMA chains.
QCB_TARGET __attribute__((always_inline))
static inline void QCB_NAME(weight_grad_unit)(const float *restrict xq, const float *restrict gyt,
        float *restrict gw, const struct blocked_shape *s, long ob, long c, long kh, const int K) {
    QCB_VEC acc[2][7];
    for (int k = 0; k < K; k++) { acc[0][k] = (QCB_VEC){0}; acc[1][k] = (QCB_VEC){0}; }
    long tap[7];
    for (int kw = 0; kw < K; kw++)
        tap[kw] = ((kh % s->S) * s->S + kw % s->S) * s->phaseFloats + (kh / s->S) * s->Wq + kw / s->S;
    const long Op = QCB_LANES * QCB_BLOCKS(s->O);
    for (long n = 0; n < s->N; n++) {
        const float *xc = xq + n * s->imageFloats + c * s->channelFloats;
        const float *gn = gyt + n * s->oh * s->ow * Op + QCB_LANES * ob;
        for (long i = 0; i < s->oh; i++) {
            const float *xr = xc + i * s->Wq;
            const float *gr = gn + i * s->ow * Op;
            long j = 0;
            for (; j + 2 <= s->ow; j += 2) {
                const QCB_VEC g0 = *(const QCB_VECU *)(gr + j * Op), g1 = *(const QCB_VECU *)(gr + (j + 1) * Op);
                for (int kw = 0; kw < K; kw++) {
                    acc[0][kw] += g0 * xr[tap[kw] + j];
                    acc[1][kw] += g1 * xr[tap[kw] + j + 1];
                }
            }
            if (j < s->ow) {
                const QCB_VEC g0 = *(const QCB_VECU *)(gr + j * Op);
                for (int kw = 0; kw < K; kw++) acc[0][kw] += g0 * xr[tap[kw] + j];
            }
        }
    }
    const long lanes = s->O - QCB_LANES * ob < QCB_LANES ? s->O - QCB_LANES * ob : QCB_LANES;
    for (int kw = 0; kw < K; kw++) {
        float out[QCB_LANES];
        *(QCB_VECU *)out = acc[0][kw] + acc[1][kw];
        for (long l = 0; l < lanes; l++) gw[(((QCB_LANES * ob + l) * s->C + c) * K + kh) * K + kw] += out[l];
    }
}

#if QCB_WEIGHT_GRAD_ALL_TAPS
// K ≤ 3 with 32 registers: one unit is (ob, c) and all K·K taps, so each gy vector loaded feeds
// K·K FMAs (independent chains enough to hide the FMA latency).
QCB_TARGET __attribute__((always_inline))
static inline void QCB_NAME(weight_grad_taps_unit)(const float *restrict xq, const float *restrict gyt,
        float *restrict gw, const struct blocked_shape *s, long ob, long c, const int K) {
    QCB_VEC acc[9];
    long tap[9];
    for (int t = 0; t < K * K; t++) {
        acc[t] = (QCB_VEC){0};
        const long kh = t / K, kw = t % K;
        tap[t] = ((kh % s->S) * s->S + kw % s->S) * s->phaseFloats + (kh / s->S) * s->Wq + kw / s->S;
    }
    const long Op = QCB_LANES * QCB_BLOCKS(s->O);
    for (long n = 0; n < s->N; n++) {
        const float *xc = xq + n * s->imageFloats + c * s->channelFloats;
        const float *gn = gyt + n * s->oh * s->ow * Op + QCB_LANES * ob;
        for (long i = 0; i < s->oh; i++) {
            const float *xr = xc + i * s->Wq;
            const float *gr = gn + i * s->ow * Op;
            long j = 0;
#if QCB_WEIGHT_GRAD_ROW_PIXELS
            // Stride 1: tap (kh, kw) of pixel j reads x[kh·Wq + kw + j], so over JB pixels each input
            // value is loaded once for its K taps (JB + K − 1 loads per kernel row, not JB·K). Each
            // accumulator still adds its pixels in order j = 0, 1, …
            const int JB = QCB_WEIGHT_GRAD_ROW_PIXELS;
            if (s->S == 1) {
                for (; j + JB <= s->ow; j += JB) {
                    QCB_VEC gv[QCB_WEIGHT_GRAD_ROW_PIXELS];
                    _Pragma("clang loop unroll(full)")
                    for (int p = 0; p < JB; p++) gv[p] = *(const QCB_VECU *)(gr + (j + p) * Op);
                    _Pragma("clang loop unroll(full)")
                    for (int kh = 0; kh < K; kh++) {
                        const float *xk = xr + kh * s->Wq + j;
                        _Pragma("clang loop unroll(full)")
                        for (int m = 0; m < JB + K - 1; m++) {
                            const float xv = xk[m];
                            _Pragma("clang loop unroll(full)")
                            for (int kw = 0; kw < K; kw++)
                                if (m - kw >= 0 && m - kw < JB) acc[kh * K + kw] += gv[m - kw] * xv;
                        }
                    }
                }
            }
#endif
            for (; j < s->ow; j++) {
                const QCB_VEC gv = *(const QCB_VECU *)(gr + j * Op);
                for (int t = 0; t < K * K; t++) acc[t] += gv * xr[tap[t] + j];
            }
        }
    }
    const long lanes = s->O - QCB_LANES * ob < QCB_LANES ? s->O - QCB_LANES * ob : QCB_LANES;
    for (int t = 0; t < K * K; t++) {
        float out[QCB_LANES];
        *(QCB_VECU *)out = acc[t];
        for (long l = 0; l < lanes; l++) gw[((QCB_LANES * ob + l) * s->C + c) * K * K + t] += out[l];
    }
}
#endif

// Units of the weight gradient: (ob, c) when one unit takes all taps, else (ob, c, kh).
static long QCB_NAME(weight_grad_units)(const qat_conv_geometry *g) {
    const struct blocked_shape s = blocked_shape_of(g);
    return QCB_WEIGHT_GRAD_ALL_TAPS && s.K <= 3 ? QCB_BLOCKS(s.O) * s.C : QCB_BLOCKS(s.O) * s.C * s.K;
}

QCB_TARGET
static void QCB_NAME(weight_grad)(const float *restrict xq, const float *restrict gyt, float *restrict gw,
                                  const qat_conv_geometry *g, long u0, long u1) {
    const struct blocked_shape s = blocked_shape_of(g);
#if QCB_WEIGHT_GRAD_ALL_TAPS
    if (s.K <= 3) {
        for (long u = u0; u < u1; u++) {
            const long c = u % s.C, ob = u / s.C;
            switch (s.K) {
            case 1: QCB_NAME(weight_grad_taps_unit)(xq, gyt, gw, &s, ob, c, 1); break;
            case 2: QCB_NAME(weight_grad_taps_unit)(xq, gyt, gw, &s, ob, c, 2); break;
            default: QCB_NAME(weight_grad_taps_unit)(xq, gyt, gw, &s, ob, c, 3); break;
            }
        }
        return;
    }
#endif
    for (long u = u0; u < u1; u++) {
        const long kh = u % s.K, c = (u / s.K) % s.C, ob = u / (s.K * s.C);
        switch (s.K) {
        case 1: QCB_NAME(weight_grad_unit)(xq, gyt, gw, &s, ob, c, kh, 1); break;
        case 2: QCB_NAME(weight_grad_unit)(xq, gyt, gw, &s, ob, c, kh, 2); break;
        case 3: QCB_NAME(weight_grad_unit)(xq, gyt, gw, &s, ob, c, kh, 3); break;
        case 4: QCB_NAME(weight_grad_unit)(xq, gyt, gw, &s, ob, c, kh, 4); break;
        case 5: QCB_NAME(weight_grad_unit)(xq, gyt, gw, &s, ob, c, kh, 5); break;
        case 6: QCB_NAME(weight_grad_unit)(xq, gyt, gw, &s, ob, c, kh, 6); break;
        default: QCB_NAME(weight_grad_unit)(xq, gyt, gw, &s, ob, c, kh, 7); break;
        }
    }
}

#undef QCB_BLOCKS
