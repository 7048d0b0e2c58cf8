// Bodies of the element-wise kernels, included three times by elementwise.c with
// SUFFIX and TARGET defined: the same C compiled for three instruction sets. The compiler must
// keep the C semantics when it vectorises (and fp contraction is off), so the three copies give
// the same results; what differs is only their speed.
#define NAME2(a, b) a##_##b
#define NAME(a, b) NAME2(a, b)

TARGET static void NAME(requantize, SUFFIX)(const int32_t *acc, size_t n, size_t channels, size_t plane,
                                            const float *m, const int32_t *shift, int32_t zero, int32_t lo, int32_t hi,
                                            qat_i8_round_mode mode, int8_t *out) {
    for (size_t i = 0; i < n * channels; i++) {
        const int32_t *a = acc + i * plane;
        int8_t *o = out + i * plane;
        if (shift) {
            const int32_t k = shift[i % channels];
            for (size_t j = 0; j < plane; j++) o[j] = qat_i8_requant_shift(a[j], k, zero, lo, hi, mode);
            continue;
        }
        const float mc = m[i % channels];
        for (size_t j = 0; j < plane; j++) o[j] = qat_i8_requant1(a[j], mc, zero, lo, hi, mode);
    }
}

TARGET static void NAME(maxpool, SUFFIX)(const int8_t *x, int8_t *y, size_t planes,
                                         size_t h, size_t w, size_t k, size_t s) {
    const size_t oh = (h - k) / s + 1, ow = (w - k) / s + 1;
    if (k == 2 && s == 2) {  // the common case, written so the compiler vectorises the row
        for (size_t p = 0; p < planes; p++) {
            for (size_t i = 0; i < oh; i++) {
                const int8_t *r0 = x + (p * h + 2 * i) * w, *r1 = r0 + w;
                int8_t *o = y + (p * oh + i) * ow;
                for (size_t j = 0; j < ow; j++) {
                    const int8_t a = r0[2 * j] > r0[2 * j + 1] ? r0[2 * j] : r0[2 * j + 1];
                    const int8_t b = r1[2 * j] > r1[2 * j + 1] ? r1[2 * j] : r1[2 * j + 1];
                    o[j] = a > b ? a : b;
                }
            }
        }
        return;
    }
    for (size_t p = 0; p < planes; p++) {
        const int8_t *plane = x + p * h * w;
        for (size_t i = 0; i < oh; i++) {
            int8_t *o = y + (p * oh + i) * ow;
            for (size_t j = 0; j < ow; j++) o[j] = -128;
            for (size_t ki = 0; ki < k; ki++) {
                const int8_t *row = plane + (i * s + ki) * w;
                for (size_t kj = 0; kj < k; kj++)
                    for (size_t j = 0; j < ow; j++) {
                        const int8_t v = row[j * s + kj];
                        o[j] = v > o[j] ? v : o[j];
                    }
            }
        }
    }
}

// Padded or rectangular max pool: per output row, the byte max of the window's rows clipped to
// the plane (a vectorisable loop over the whole row), then per output column the max of that
// row's window, clipped. `rowmax` holds w bytes.
TARGET static void NAME(maxpool_padded, SUFFIX)(const int8_t *x, int8_t *y, size_t planes, const qat_i8_pool_geometry *g,
                                                int8_t *rowmax) {
    const int h = g->h, w = g->w, oh = g->oh, ow = g->ow, kh = g->kh, kw = g->kw, sh = g->sh, sw = g->sw;
    const int pad_top = g->pad_top, pad_left = g->pad_left;
    for (size_t p = 0; p < planes; p++) {
        const int8_t *plane = x + p * (size_t)h * w;
        for (int oy = 0; oy < oh; oy++) {
            int8_t *o = y + (p * oh + oy) * (size_t)ow;
            const int top = oy * sh - pad_top, y0 = top < 0 ? 0 : top, y1 = top + kh < h ? top + kh : h;
            if (y0 >= y1) {
                for (int ox = 0; ox < ow; ox++) o[ox] = -128;
                continue;
            }
            for (int j = 0; j < w; j++) rowmax[j] = plane[(size_t)y0 * w + j];
            for (int r = y0 + 1; r < y1; r++) {
                const int8_t *row = plane + (size_t)r * w;
                for (int j = 0; j < w; j++) rowmax[j] = row[j] > rowmax[j] ? row[j] : rowmax[j];
            }
            for (int ox = 0; ox < ow; ox++) {
                const int left = ox * sw - pad_left, x0 = left < 0 ? 0 : left, x1 = left + kw < w ? left + kw : w;
                int8_t m = -128;
                for (int j = x0; j < x1; j++) m = rowmax[j] > m ? rowmax[j] : m;
                o[ox] = m;
            }
        }
    }
}

// The float max pool of QATCore (pool_padded.c's forward): per output, the window's elements in
// scan order, a strictly greater value or the first NaN replacing the best so far, starting
// from −∞ (a window without elements gives −∞). Two ways, the same floats:
// - a plane without NaN and without −0: equal floats then have equal bits, so which of several
//   equal elements wins does not matter and the max may be taken in any order: per output row,
//   the max of the window's rows (contiguous, vectorised), then of each clipped window of that;
// - any other plane: the scan order itself. Each input row is copied, shifted by pad_left and
//   with −∞ outside the plane (−∞ never replaces anything), into `sw` phases (phase q holds row
//   columns q, q + sw, …), so the element kx of output column ox, row column ox·sw + kx, is
//   phase (kx mod sw) at ox + kx / sw, and each output column scans its elements in order.
// `scratch` holds sw·(ow + kw) + w floats.
TARGET static void NAME(maxpool_float, SUFFIX)(const float *x, float *y, size_t planes, const qat_i8_pool_geometry *g,
                                               float *scratch) {
    const int h = g->h, w = g->w, oh = g->oh, ow = g->ow, kh = g->kh, kw = g->kw, sh = g->sh, sw = g->sw;
    const int pad_top = g->pad_top, pad_left = g->pad_left, span = (ow - 1) * sw + kw, stride = ow + kw;
    float *phases = scratch, *rowmax = scratch + (size_t)sw * stride;
    for (size_t p = 0; p < planes; p++) {
        const float *plane = x + p * (size_t)h * w;
        int special = 0;  // a NaN or a −0 in the plane
        for (size_t i = 0; i < (size_t)h * w; i++) {
            uint32_t bits;
            memcpy(&bits, plane + i, 4);
            special |= (plane[i] != plane[i]) | (bits == 0x80000000u);
        }
        for (int oy = 0; oy < oh; oy++) {
            float *restrict o = y + (p * oh + oy) * (size_t)ow;
            const int top = oy * sh - pad_top, y0 = top < 0 ? 0 : top, y1 = top + kh < h ? top + kh : h;
            if (!special) {
                if (y0 >= y1) {
                    for (int ox = 0; ox < ow; ox++) o[ox] = -INFINITY;
                    continue;
                }
                for (int j = 0; j < w; j++) rowmax[j] = plane[(size_t)y0 * w + j];
                for (int r = y0 + 1; r < y1; r++) {
                    const float *restrict row = plane + (size_t)r * w;
                    for (int j = 0; j < w; j++) rowmax[j] = row[j] > rowmax[j] ? row[j] : rowmax[j];
                }
                for (int ox = 0; ox < ow; ox++) {
                    const int left = ox * sw - pad_left, x0 = left < 0 ? 0 : left, x1 = left + kw < w ? left + kw : w;
                    float m = -INFINITY;
                    for (int j = x0; j < x1; j++) m = rowmax[j] > m ? rowmax[j] : m;
                    o[ox] = m;
                }
                continue;
            }
            for (int ox = 0; ox < ow; ox++) o[ox] = -INFINITY;
            for (int r = y0; r < y1; r++) {
                const float *src = plane + (size_t)r * w;
                for (int q = 0; q < sw; q++) {
                    float *phase = phases + q * stride;
                    for (int i = 0, c = q - pad_left; q + i * sw < span; i++, c += sw) phase[i] = c >= 0 && c < w ? src[c] : -INFINITY;
                }
                for (int kx = 0; kx < kw; kx++) {
                    const float *restrict v = phases + (kx % sw) * stride + kx / sw;
                    for (int ox = 0; ox < ow; ox++) {
                        const float b = o[ox];
                        o[ox] = (v[ox] > b) | ((v[ox] != v[ox]) & (b == b)) ? v[ox] : b;
                    }
                }
            }
        }
    }
}

// QATCore's hardSwish forward, operation for operation: y = x · clamp(x + 3, 0, 6) / 6, the
// product then the quotient rounded (a NaN fails both comparisons and stays NaN).
TARGET static void NAME(hard_swish, SUFFIX)(const float *x, float *y, size_t count) {
    for (size_t i = 0; i < count; i++) {
        const float v = x[i], shifted = v + 3.0f;
        const float kept = shifted < 0.0f ? 0.0f : (shifted > 6.0f ? 6.0f : shifted);
        y[i] = v * kept / 6.0f;
    }
}

TARGET static void NAME(lookup, SUFFIX)(const int8_t *q, const float *table, float *y, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = table[(int)q[i] + 128];
}

// Four planes at a time, each summed in its own scan order: four independent dependency chains
// instead of one (the same sums as one plane at a time).
TARGET static void NAME(global_avgpool, SUFFIX)(const float *x, size_t planes, size_t area, float factor, float *y) {
    size_t p = 0;
    for (; p + 4 <= planes; p += 4) {
        const float *a = x + p * area, *b = a + area, *c = b + area, *d = c + area;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma clang loop vectorize(disable)
        for (size_t i = 0; i < area; i++) {
            s0 += a[i];
            s1 += b[i];
            s2 += c[i];
            s3 += d[i];
        }
        y[p] = s0 * factor;
        y[p + 1] = s1 * factor;
        y[p + 2] = s2 * factor;
        y[p + 3] = s3 * factor;
    }
    for (; p < planes; p++) {
        float s = 0;
        for (size_t i = 0; i < area; i++) s += x[p * area + i];
        y[p] = s * factor;
    }
}

TARGET static void NAME(global_avgpool_codes, SUFFIX)(const int8_t *q, float scale, int32_t zero, size_t planes,
                                                      size_t area, float factor, float *y) {
    size_t p = 0;
    for (; p + 4 <= planes; p += 4) {
        const int8_t *a = q + p * area, *b = a + area, *c = b + area, *d = c + area;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma clang loop vectorize(disable)
        for (size_t i = 0; i < area; i++) {
            s0 += scale * (float)(a[i] - zero);
            s1 += scale * (float)(b[i] - zero);
            s2 += scale * (float)(c[i] - zero);
            s3 += scale * (float)(d[i] - zero);
        }
        y[p] = s0 * factor;
        y[p + 1] = s1 * factor;
        y[p + 2] = s2 * factor;
        y[p + 3] = s3 * factor;
    }
    for (; p < planes; p++) {
        float s = 0;
        for (size_t i = 0; i < area; i++) s += scale * (float)(q[p * area + i] - zero);
        y[p] = s * factor;
    }
}

TARGET static void NAME(scale_rows, SUFFIX)(const float *x, const float *per_row, size_t rows, size_t length, float *y) {
    for (size_t r = 0; r < rows; r++) {
        const float m = per_row[r];
        const float *a = x + r * length;
        float *o = y + r * length;
        for (size_t j = 0; j < length; j++) o[j] = a[j] * m;
    }
}

TARGET static void NAME(add, SUFFIX)(const int8_t *a, float sa, int32_t za, const int8_t *b, float sb,
                                     int32_t zb, float sy, int32_t zy, int32_t lo, int32_t hi, qat_i8_round_mode mode,
                                     int8_t *y, size_t count) {
    const float low = (float)(lo - zy), high = (float)(hi - zy);
    for (size_t i = 0; i < count; i++) {
        const float pa = sa * (float)(a[i] - za);
        const float pb = sb * (float)(b[i] - zb);
        float r = qat_i8_round((pa + pb) / sy, mode);
        r = r < low ? low : r;
        r = r > high ? high : r;
        y[i] = (int8_t)((int32_t)r + zy);
    }
}

TARGET static void NAME(quantize, SUFFIX)(const float *x, float scale, int32_t zero, int32_t lo, qat_i8_round_mode mode,
                                          int8_t *q, size_t count) {
    const float low = (float)(lo - zero), high = (float)(127 - zero);
    if (mode != QAT_I8_ROUND_HALF_EVEN) {  // the other tie rules: a loop of their own keeps the one below as it was
        for (size_t i = 0; i < count; i++) {
            float r = qat_i8_round(x[i] / scale, mode);
            r = r < low ? low : r;
            r = r > high ? high : r;
            r = r == r ? r : 0.0f;
            q[i] = (int8_t)((int32_t)r + zero);
        }
        return;
    }
    for (size_t i = 0; i < count; i++) {
        float r = nearbyintf(x[i] / scale);
        r = r < low ? low : r;  // NaN fails both tests and would stay NaN: see below
        r = r > high ? high : r;
        r = r == r ? r : 0.0f;  // NaN input → the zero point, the same on every path
        q[i] = (int8_t)((int32_t)r + zero);
    }
}

TARGET static void NAME(dequantize, SUFFIX)(const int8_t *q, float scale, int32_t zero, float *x, size_t count) {
    for (size_t i = 0; i < count; i++) x[i] = scale * (float)(q[i] - zero);
}

TARGET static void NAME(finish, SUFFIX)(const int32_t *acc, size_t rows, size_t cols, size_t acc_stride,
                                        qat_i8_output o, int channel, void *out) {
    const float scale = o.kind == QAT_I8_OUT_INT32 ? 0.0f : o.scale[channel];
    const float offset = o.kind != QAT_I8_OUT_INT32 && o.offset ? o.offset[channel] : 0.0f;
    const int has_offset = o.kind != QAT_I8_OUT_INT32 && o.offset != NULL;
    for (size_t r = 0; r < rows; r++) {
        const int32_t *a = acc + r * acc_stride;
        switch (o.kind) {
        case QAT_I8_OUT_INT32: {
            int32_t *y = (int32_t *)out + r * cols;
            for (size_t j = 0; j < cols; j++) y[j] = a[j];
            break;
        }
        case QAT_I8_OUT_FLOAT: {
            float *y = (float *)out + r * cols;
            if (has_offset) for (size_t j = 0; j < cols; j++) y[j] = (float)a[j] * scale + offset;
            else for (size_t j = 0; j < cols; j++) y[j] = (float)a[j] * scale;
            break;
        }
        case QAT_I8_OUT_INT8: {
            int8_t *y = (int8_t *)out + r * cols;
            if (o.shift) {
                const int32_t k = o.shift[channel];
                for (size_t j = 0; j < cols; j++) y[j] = qat_i8_requant_shift(a[j], k, o.zero_point, o.lo, o.hi, o.round_mode);
            } else if (has_offset)
                for (size_t j = 0; j < cols; j++)
                    y[j] = qat_i8_requant_scaled((float)a[j] * scale + offset, o.zero_point, o.lo, o.hi, o.round_mode);
            else
                for (size_t j = 0; j < cols; j++)
                    y[j] = qat_i8_requant_scaled((float)a[j] * scale, o.zero_point, o.lo, o.hi, o.round_mode);
            break;
        }
        }
    }
}

#undef NAME
#undef NAME2
