// The inner loops of the 3×3 depthwise kernels, included by depthwise_float.c once per path with
// SUFFIX, TARGET, LANES, the vector type vec and vec_zero / vec_set1 / vec_load / vec_store /
// vec_fma (a·b + c) defined; it undefines them at its end. All work in the "wide" layout of depthwise_float.c: position p of a
// plane of pitch P is row p / P, column p % P, so every tap is the same offset for all p and a
// loop over p covers all rows at once (the columns past the real ones are scratch).
// Loops run over whole vectors: buffers hold LANES floats of zeros past their last position.
#define NAME2(a, b) a##_##b
#define NAME(a, b) NAME2(a, b)

// Writes the plane's own elements into a phased buffer, as placement_of in depthwise_float.c
// describes (the padding is left alone); stride 2 splits each row into its even and odd columns.
TARGET static void NAME(place_plane, SUFFIX)(const float *restrict plane, const placement *m, float *restrict dst) {
    for (long t = m->first_row; t < m->end_row; t++) {
        const float *restrict src = plane + (t - m->top) * m->w - m->left;
        if (m->s == 1) {
            float *restrict row = dst + t * m->pitch;
            for (long q = m->lo[0]; q < m->hi[0]; q++) row[q] = src[q];
        } else {
            float *restrict even = dst + ((t & 1) * 2 * m->phase_height + (t >> 1)) * m->pitch;
            float *restrict odd = even + m->phase_height * m->pitch;
            for (long q = m->lo[0]; q < m->hi[0]; q++) even[q] = src[2 * q];
            for (long q = m->lo[1]; q < m->hi[1]; q++) odd[q] = src[2 * q + 1];
        }
    }
}

// dst rows (pitch dst_pitch) = (or += when `add`) the first `width` floats of src rows (pitch src_pitch).
TARGET static void NAME(copy_rows, SUFFIX)(const float *restrict src, long src_pitch, float *restrict dst,
                                           long dst_pitch, long rows, long width, int add) {
    for (long i = 0; i < rows; i++) {
        const float *restrict from = src + i * src_pitch;
        float *restrict to = dst + i * dst_pitch;
        if (add) {
            for (long j = 0; j < width; j++) to[j] += from[j];
        } else {
            for (long j = 0; j < width; j++) to[j] = from[j];
        }
    }
}

// dst[q] += (q + left even ? even : odd)[(q + left) / 2] for q in [0, width): one row of the
// stride-2 input gradient, its two column classes interleaved.
TARGET static void NAME(interleave_add, SUFFIX)(const float *restrict even, const float *restrict odd,
                                                float *restrict dst, long width, long left) {
    for (long q = left & 1; q < width; q += 2) dst[q] += even[(q + left) >> 1];
    for (long q = 1 - (left & 1); q < width; q += 2) dst[q] += odd[(q + left) >> 1];
}

// wide[p] = bias + Σ_t w[t] · src[p + offsets[t]] (t in order) for p in [0, length).
TARGET static void NAME(correlate9, SUFFIX)(const float *restrict src, const long offsets[9], const float w[9],
                                            float bias, float *restrict wide, long length) {
    vec taps[9];
    for (int t = 0; t < 9; t++) taps[t] = vec_set1(w[t]);
    const vec b = vec_set1(bias);
    for (long p = 0; p < length; p += LANES) {
        vec acc = b;
        for (int t = 0; t < 9; t++) acc = vec_fma(taps[t], vec_load(src + p + offsets[t]), acc);
        vec_store(wide + p, acc);
    }
}

// sums[t] (lanes) += gy[p] · src[p + offsets[t]] for p in [0, length), t = 0 … 8.
TARGET static void NAME(tap_products9, SUFFIX)(const float *restrict src, const long offsets[9],
                                               const float *restrict gy, long length, float *restrict sums) {
    vec acc[9];
    for (int t = 0; t < 9; t++) acc[t] = vec_load(sums + t * LANES);
    for (long p = 0; p < length; p += LANES) {
        const vec g = vec_load(gy + p);
        for (int t = 0; t < 9; t++) acc[t] = vec_fma(g, vec_load(src + p + offsets[t]), acc[t]);
    }
    for (int t = 0; t < 9; t++) vec_store(sums + t * LANES, acc[t]);
}

// The four stride-2 classes of the input gradient (see stride2_input_grad in depthwise_float.c):
// from gp (gy behind one row and one column of zeros, pitch `pitch`), for p in [0, length),
// with A = gp[p + pitch + 1], B = gp[p + pitch], C = gp[p + 1], D = gp[p]:
// even rows, even columns: w00·A + w02·B + w20·C + w22·D; even, odd: w01·A + w21·C;
// odd, even: w10·A + w12·B; odd, odd: w11·A.
TARGET static void NAME(stride2_classes, SUFFIX)(const float *restrict gp, long pitch, const float w[9],
                                                 float *restrict classes[4], long length) {
    vec k[9];
    for (int t = 0; t < 9; t++) k[t] = vec_set1(w[t]);
    float *restrict ee = classes[0], *restrict eo = classes[1], *restrict oe = classes[2], *restrict oo = classes[3];
    for (long p = 0; p < length; p += LANES) {
        const vec a = vec_load(gp + p + pitch + 1), b = vec_load(gp + p + pitch);
        const vec c = vec_load(gp + p + 1), d = vec_load(gp + p);
        vec sum = vec_fma(k[0], a, vec_zero());
        sum = vec_fma(k[2], b, sum);
        sum = vec_fma(k[6], c, sum);
        vec_store(ee + p, vec_fma(k[8], d, sum));
        vec_store(eo + p, vec_fma(k[7], c, vec_fma(k[1], a, vec_zero())));
        vec_store(oe + p, vec_fma(k[5], b, vec_fma(k[3], a, vec_zero())));
        vec_store(oo + p, vec_fma(k[4], a, vec_zero()));
    }
}

#undef NAME
#undef NAME2
// The parameters go too, so the next path defines its own.
#undef SUFFIX
#undef TARGET
#undef LANES
#undef vec
#undef vec_zero
#undef vec_set1
#undef vec_load
#undef vec_store
#undef vec_fma
