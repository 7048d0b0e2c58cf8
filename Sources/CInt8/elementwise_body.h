// Bodies of the element-wise kernels, included three times by elementwise.c with
// SUFFIX and TARGET defined: the same C compiled for three instruction sets. The compiler must
// keep the C semantics when it vectorises (and fp contraction is off), so the three copies give
// the same results; what differs is only their speed.
#define NAME2(a, b) a##_##b
#define NAME(a, b) NAME2(a, b)

TARGET static void NAME(requantize, SUFFIX)(const int32_t *acc, size_t n, size_t channels, size_t plane,
                                            const float *m, int32_t zero, int32_t lo, int32_t hi, int8_t *out) {
    for (size_t i = 0; i < n * channels; i++) {
        const float mc = m[i % channels];
        const int32_t *a = acc + i * plane;
        int8_t *o = out + i * plane;
        for (size_t j = 0; j < plane; j++) o[j] = qat_i8_requant1(a[j], mc, zero, lo, hi);
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

TARGET static void NAME(add, SUFFIX)(const int8_t *a, float sa, int32_t za, const int8_t *b, float sb,
                                     int32_t zb, float sy, int32_t zy, int32_t lo, int32_t hi, int8_t *y, size_t count) {
    const float low = (float)(lo - zy), high = (float)(hi - zy);
    for (size_t i = 0; i < count; i++) {
        const float pa = sa * (float)(a[i] - za);
        const float pb = sb * (float)(b[i] - zb);
        float r = nearbyintf((pa + pb) / sy);
        r = r < low ? low : r;
        r = r > high ? high : r;
        y[i] = (int8_t)((int32_t)r + zy);
    }
}

TARGET static void NAME(quantize, SUFFIX)(const float *x, float scale, int32_t zero, int8_t *q, size_t count) {
    const float low = (float)(-128 - zero), high = (float)(127 - zero);
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
            if (has_offset)
                for (size_t j = 0; j < cols; j++)
                    y[j] = qat_i8_requant_scaled((float)a[j] * scale + offset, o.zero_point, o.lo, o.hi);
            else
                for (size_t j = 0; j < cols; j++) y[j] = qat_i8_requant_scaled((float)a[j] * scale, o.zero_point, o.lo, o.hi);
            break;
        }
        }
    }
}

#undef NAME
#undef NAME2
