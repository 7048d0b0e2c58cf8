// Direct convolution for padded / strided layers, 16 or 8 channels at a time (declarations and
// layouts in include/conv_blocked.h; the math in Sources/QATCore/Ops/Conv2D.swift).
//
// Forward: y's 16 (or 8) output channels of a block are one vector; PB consecutive output pixels are
// register-blocked, each FMA broadcasting one input value. The input is a zero-padded copy split
// into its S×S stride phases, so that tap (kh, kw) of output pixel (i, j) sits at
// phase (kh mod S, kw mod S), offset (i + kh/S)·Wq + j + kw/S: consecutive for consecutive j, and
// flattened over rows (q = i·Wq + j) with the Wq − Wo padding columns computed and dropped. On
// small output planes (blocked_use_slots) a block's pixels are instead "slots": consecutive
// useful pixels of consecutive images, each with its own input and output address.
// Input gradient: the transposed conv as a scatter into a padded pixel-major buffer, 16 (or 8)
// input channels a vector. Weight gradient: 16 (or 8) output channels a vector, gy transposed
// pixel-major. A pass takes 8 channels a vector when the channels it vectorises over are at most 8
// (blocked_lanes): a half-empty 16-lane vector costs as much as a full 8-lane one. On AVX2 the
// stride-1 weight gradient for K ≤ 3 has a path of its own (conv_blocked_weight_grad_avx2.h).
// Every sum runs in a fixed order that depends on the shape only.
#include "conv_blocked.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define QCB_MAX_TAPS 49   // K ≤ 7

struct blocked_shape {
    long N, C, H, W, O, K, KK, S, P, oh, ow;
    long Hq, Wq, phaseFloats, channelFloats, imageFloats;
    long Q;                 // flattened output pixels of the forward: (Ho − 1)·Wq + Wo
};

static struct blocked_shape blocked_shape_of(const qat_conv_geometry *g) {
    struct blocked_shape s;
    s.N = g->batch; s.C = g->channels; s.H = g->height; s.W = g->width;
    s.O = g->out_channels; s.K = g->kernel; s.KK = g->kernel * g->kernel; s.S = g->stride; s.P = g->padding;
    s.oh = (s.H + 2 * s.P - s.K) / s.S + 1;
    s.ow = (s.W + 2 * s.P - s.K) / s.S + 1;
    s.Hq = (s.H + 2 * s.P + s.S - 1) / s.S;
    s.Wq = (s.W + 2 * s.P + s.S - 1) / s.S;
    s.phaseFloats = s.Hq * s.Wq;
    s.channelFloats = s.S * s.S * s.phaseFloats;
    // + 16 zeros: the last register block of a small plane reads up to PB − 1 floats past it.
    s.imageFloats = s.C * s.channelFloats + 16;
    s.Q = (s.oh - 1) * s.Wq + s.ow;
    return s;
}

// Tests: 16 forces 16 lanes on every pass, 0 lets the shape choose.
static int forced_lanes = 0;

// Channels a vector for a pass that vectorises over `channels`: 8 when they fit (on CPUs that run
// AVX-512 as two 256-bit halves one 8-lane FMA does the same FLOPs per cycle as a 16-lane one, and
// elsewhere it does the useful half of one), else 16. The shape and the ISA decide, never the threads.
static long blocked_lanes(long channels) { return forced_lanes != 16 && channels <= 8 ? 8 : 16; }
// Without AVX-512 a 16-lane vector is two registers, so the forward's and the input gradient's
// register blocks hold half as many pixels as at 8 lanes: on a Zen 3 core (AVX2) 8 lanes ran them at
// 55–66 % of the FMA peak against 29–33 % at 16 (vgg-small's and resnet18-tiny's 3×3 convs). The
// AVX2 weight gradient's instances keep blocked_lanes: their 8-lane one measured slower (10–45 %
// against 25–60 %); the K ≤ 3 stride-1 path below takes 8 lanes with gy block-major instead.
static long pixel_blocked_lanes(long channels) {
    return forced_lanes != 16 && qat_conv_blocked_isa() == 1 ? 8 : blocked_lanes(channels);
}
static long forward_lanes(const qat_conv_geometry *g) { return pixel_blocked_lanes(g->out_channels); }
static long input_grad_lanes(const qat_conv_geometry *g) { return pixel_blocked_lanes(g->channels); }
// The AVX2 weight gradient of conv_blocked_weight_grad_avx2.h (K ≤ 3, stride 1, 8 lanes, gy
// block-major; stride 2 measured slower there than on the instances); tests turn it off to
// compare with the instances' weight gradient.
static int avx2_weight_grad_enabled = 1;
static int use_avx2_weight_grad(const qat_conv_geometry *g) {
    return avx2_weight_grad_enabled && forced_lanes != 16 && qat_conv_blocked_isa() == 1
        && g->kernel >= 2 && g->kernel <= 3 && g->stride == 1;
}
static long weight_grad_lanes(const qat_conv_geometry *g) {
    return use_avx2_weight_grad(g) ? 8 : blocked_lanes(g->out_channels);
}
static long round_up(long n, long lanes) { return (n + lanes - 1) / lanes * lanes; }

// Offset of tap (kh, kw) from output pixel q's position in a channel's phased planes.
static void blocked_taps(const struct blocked_shape *s, long *taps) {
    for (long kh = 0; kh < s->K; kh++)
        for (long kw = 0; kw < s->K; kw++)
            taps[kh * s->K + kw] = ((kh % s->S) * s->S + kw % s->S) * s->phaseFloats
                                   + (kh / s->S) * s->Wq + kw / s->S;
}

// gxn [C, H, W] += d [Hp, Wp, L] (input-channel block cb of L channels), the padding ring dropped.
static void blocked_add_pixels_major(const float *restrict d, float *restrict gxn,
                                     const struct blocked_shape *s, long cb, const long L) {
    const long Wp = s->W + 2 * s->P;
    const long lanes = s->C - L * cb < L ? s->C - L * cb : L;
    for (long l = 0; l < lanes; l++) {
        float *plane = gxn + (L * cb + l) * s->H * s->W;
        for (long h = 0; h < s->H; h++) {
            const float *src = d + ((h + s->P) * Wp + s->P) * L + l;
            float *dst = plane + h * s->W;
            for (long w = 0; w < s->W; w++) dst[w] += src[L * w];
        }
    }
}

typedef float qv16 __attribute__((vector_size(64)));
typedef float qv4 __attribute__((vector_size(16)));
typedef float qv4u __attribute__((vector_size(16), aligned(4), may_alias));

// Tests: 1 runs the loops that issue 15's second pass replaced (the references for their
// bit-identical replacements): forward outputs stored one float at a time where no 8×8 transpose
// applies, stride-2 slot taps read one address per FMA, 3×3 per-image tails in 4-pixel blocks, and
// the small-image phase copies row by row, one float at a time. 0 (the default): the new loops.
static int reference_loops = 0;

int qat_conv_blocked_use_reference_loops(int enabled) {
    reference_loops = enabled != 0;
    return reference_loops;
}

typedef float qv16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef float qv8 __attribute__((vector_size(32)));
typedef float qv8u __attribute__((vector_size(32), aligned(4), may_alias));

// The stride-1 input gradient as a forward conv of one image: gy [O, Ho, Wo] padded by K − 1 − P.
static qat_conv_geometry transposed_geometry(const qat_conv_geometry *g) {
    const long oh = (g->height + 2 * g->padding - g->kernel) + 1, ow = (g->width + 2 * g->padding - g->kernel) + 1;
    const qat_conv_geometry t = { .batch = 1, .channels = g->out_channels, .height = oh, .width = ow,
                                  .out_channels = g->channels, .kernel = g->kernel, .stride = 1,
                                  .padding = g->kernel - 1 - g->padding };
    return t;
}

#define QCB_NAME(f) avx512_##f
#define QCB_TARGET __attribute__((target("avx512f,avx2,fma")))
#define QCB_LANES 16
#define QCB_VEC qv16
#define QCB_VECU qv16u
#define QCB_FORWARD_PB 12
#define QCB_FORWARD_ROWS 0
#define QCB_SLOTS_ROWS 1        // 12 accumulators + 3 weight vectors + 1 input value
#define QCB_WEIGHT_GRAD_ALL_TAPS 1
#define QCB_WEIGHT_GRAD_ROW_PIXELS 0
#define QCB_INPUT_GRAD_ACCS 6    // 2 pixels × 3 taps for 3×3: measured faster than wider blocks
#include "conv_blocked_body.h"
#undef QCB_NAME
#undef QCB_TARGET
#undef QCB_FORWARD_PB
#undef QCB_FORWARD_ROWS
#undef QCB_SLOTS_ROWS
#undef QCB_INPUT_GRAD_ACCS
#undef QCB_WEIGHT_GRAD_ALL_TAPS
#undef QCB_WEIGHT_GRAD_ROW_PIXELS

// Two 8-lane registers per qv16: half the accumulators of the AVX-512 blocking fit 16 registers.
#define QCB_NAME(f) avx2_##f
#define QCB_TARGET __attribute__((target("avx2,fma")))
#define QCB_FORWARD_PB 6
#define QCB_FORWARD_ROWS 0
#define QCB_SLOTS_ROWS 0        // 3 two-register weight vectors would not fit beside 6 accumulators
#define QCB_INPUT_GRAD_ACCS 6
#define QCB_WEIGHT_GRAD_ALL_TAPS 0
#define QCB_WEIGHT_GRAD_ROW_PIXELS 0
#include "conv_blocked_body.h"
#undef QCB_NAME
#undef QCB_TARGET
#undef QCB_LANES
#undef QCB_VEC
#undef QCB_VECU
#undef QCB_FORWARD_PB
#undef QCB_FORWARD_ROWS
#undef QCB_SLOTS_ROWS
#undef QCB_INPUT_GRAD_ACCS
#undef QCB_WEIGHT_GRAD_ALL_TAPS
#undef QCB_WEIGHT_GRAD_ROW_PIXELS

// 8 lanes, AVX-512VL: ymm registers, 32 of them (ymm16–31 included). A 256-bit FMA does as many
// FLOPs a cycle as a 512-bit one on CPUs that split AVX-512 in halves, so at 8 lanes a cycle
// carries twice the loads; the stride-1 kernels reuse each loaded input value for a kernel row.
#define QCB_NAME(f) avx512_8_##f
#define QCB_TARGET __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define QCB_LANES 8
#define QCB_VEC qv8
#define QCB_VECU qv8u
#define QCB_FORWARD_PB 24
#define QCB_FORWARD_ROWS 5      // 24 accumulators + K ≤ 5 weight vectors + 1 input value in 32 registers
#define QCB_SLOTS_ROWS 1
#define QCB_WEIGHT_GRAD_ALL_TAPS 1
#define QCB_WEIGHT_GRAD_ROW_PIXELS 8   // 9 accumulators + 8 gy vectors + 1 input value
#define QCB_INPUT_GRAD_ACCS 12
#include "conv_blocked_body.h"
#undef QCB_NAME
#undef QCB_TARGET
#undef QCB_FORWARD_PB
#undef QCB_FORWARD_ROWS
#undef QCB_SLOTS_ROWS
#undef QCB_INPUT_GRAD_ACCS
#undef QCB_WEIGHT_GRAD_ALL_TAPS
#undef QCB_WEIGHT_GRAD_ROW_PIXELS

// 8 lanes, AVX2: one register per accumulator, 16 registers; the stride-1 row loops take 8 pixels
// (forward) or 4 (weight gradient) so their weights, accumulators and gy vectors fit.
#define QCB_NAME(f) avx2_8_##f
#define QCB_TARGET __attribute__((target("avx2,fma")))
#define QCB_FORWARD_PB 8
#define QCB_FORWARD_ROWS 3      // 8 accumulators + 3 weight vectors + 1 input value in 16 registers
#define QCB_SLOTS_ROWS 1
#define QCB_INPUT_GRAD_ACCS 6
#define QCB_WEIGHT_GRAD_ALL_TAPS 1
#define QCB_WEIGHT_GRAD_ROW_PIXELS 4   // 9 accumulators + 4 gy vectors + 1 input value
#include "conv_blocked_body.h"

#include "conv_blocked_weight_grad_avx2.h"

int qat_conv_blocked_enable_avx2_weight_grad(int enabled) {
    avx2_weight_grad_enabled = enabled != 0;
    return avx2_weight_grad_enabled;
}

static int blocked_cpu_isa(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
}

static int forced_isa = 0;

int qat_conv_blocked_isa(void) {
    const int cpu = blocked_cpu_isa();
    return forced_isa != 0 && forced_isa <= cpu ? forced_isa : cpu;
}

int qat_conv_blocked_force_isa(int isa) {
    forced_isa = isa;
    return qat_conv_blocked_isa();
}

int qat_conv_blocked_force_lanes(int lanes) {
    forced_lanes = lanes == 16 ? 16 : 0;
    return forced_lanes;
}

// Which instance runs a pass: the ISA, and for 8 lanes on AVX-512 also VL (ymm16–31).
enum blocked_instance { avx2_16, avx512_16, avx2_8, avx512_8 };

static enum blocked_instance blocked_instance_for(long lanes) {
    const int isa = qat_conv_blocked_isa();
    if (lanes == 16) return isa == 2 ? avx512_16 : avx2_16;
    return isa == 2 && __builtin_cpu_supports("avx512vl") ? avx512_8 : avx2_8;
}

#define QCB_CALL(instance, f, ...) do { switch (instance) { \
    case avx2_16: avx2_##f(__VA_ARGS__); break; \
    case avx512_16: avx512_##f(__VA_ARGS__); break; \
    case avx2_8: avx2_8_##f(__VA_ARGS__); break; \
    case avx512_8: avx512_8_##f(__VA_ARGS__); break; } } while (0)

// Image slots (forward_slots) on output planes of at most 64 pixels: there a per-image block is
// mostly padding columns or 4-pixel remainders. Measured (forward alone, 8 and 16 lanes): 1.1–2×
// faster on 2×2 … 8×8 planes with C·K·K ≥ 72, and on planes up to 16 pixels from C·K·K ≥ 18;
// below that (few FMAs per slot for its scattered stores) and on 14×14 planes, slower or even.
// Tests turn them off to compare with the per-image path.
static int slots_enabled = 1;

static int blocked_use_slots(const qat_conv_geometry *g) {
    const long oh = (g->height + 2 * g->padding - g->kernel) / g->stride + 1;
    const long ow = (g->width + 2 * g->padding - g->kernel) / g->stride + 1;
    const long terms = g->channels * g->kernel * g->kernel;
    return slots_enabled && ((oh * ow <= 64 && terms >= 72) || (oh * ow <= 16 && terms >= 18));
}

int qat_conv_blocked_enable_slots(int enabled) {
    slots_enabled = enabled != 0;
    return slots_enabled;
}

// Images a work unit of a pass that runs on slots: enough for ≥ 32 slots (1 otherwise). The
// shape alone decides; a group's outputs do not depend on the grouping either.
long qat_conv_blocked_image_group(const qat_conv_geometry *g) {
    if (!blocked_use_slots(g)) return 1;
    const long oh = (g->height + 2 * g->padding - g->kernel) / g->stride + 1;
    const long ow = (g->width + 2 * g->padding - g->kernel) / g->stride + 1;
    return (32 + oh * ow - 1) / (oh * ow);
}

static void blocked_forward_images(enum blocked_instance instance, const float *restrict xq,
                                   const float *restrict wf, const float *restrict bias, float *restrict y,
                                   const qat_conv_geometry *g, long n0, long n1, int accumulate) {
    if (blocked_use_slots(g)) QCB_CALL(instance, forward_slots, xq, wf, bias, y, g, n0, n1, accumulate);
    else QCB_CALL(instance, forward, xq, wf, bias, y, g, n0, n1, accumulate);
}

void qat_conv_blocked_forward(const float *restrict xq, const float *restrict wf, const float *restrict bias,
                              float *restrict y, const qat_conv_geometry *g, long n0, long n1) {
    blocked_forward_images(blocked_instance_for(forward_lanes(g)), xq, wf, bias, y, g, n0, n1, 0);
}

void qat_conv_blocked_input_grad(const float *restrict gy, const float *restrict wb, float *restrict gx,
                                 float *restrict scratch, const qat_conv_geometry *g, long n0, long n1) {
    const enum blocked_instance instance = blocked_instance_for(input_grad_lanes(g));
    if (g->stride == 1) {
        // The transposed conv's output channels are g's input channels: same lanes as wb's.
        const qat_conv_geometry t = transposed_geometry(g);
        const long gyImage = t.channels * t.height * t.width, gxImage = t.out_channels * g->height * g->width;
        const long group = qat_conv_blocked_image_group(&t);
        for (long n = n0; n < n1; n += group) {
            const long m = n1 - n < group ? n1 - n : group;
            qat_conv_blocked_phase(gy + n * gyImage, scratch, &t, 0, m);
            blocked_forward_images(instance, scratch, wb, NULL, gx + n * gxImage, &t, 0, m, 1);
        }
        return;
    }
    QCB_CALL(instance, input_grad, gy, wb, gx, scratch, g, n0, n1);
}

long qat_conv_blocked_weight_grad_units(const qat_conv_geometry *g) {
    if (use_avx2_weight_grad(g)) return (g->out_channels + 7) / 8 * g->channels;
    switch (blocked_instance_for(weight_grad_lanes(g))) {
    case avx2_16: return avx2_weight_grad_units(g);
    case avx512_16: return avx512_weight_grad_units(g);
    case avx2_8: return avx2_8_weight_grad_units(g);
    case avx512_8: return avx512_8_weight_grad_units(g);
    }
    return 0;
}

void qat_conv_blocked_weight_grad(const float *restrict xq, const float *restrict gyt, float *restrict gw,
                                  const qat_conv_geometry *g, long u0, long u1) {
    if (use_avx2_weight_grad(g)) { avx2_wg(xq, gyt, gw, g, u0, u1); return; }
    QCB_CALL(blocked_instance_for(weight_grad_lanes(g)), weight_grad, xq, gyt, gw, g, u0, u1);
}

int qat_conv_blocked_supported(const qat_conv_geometry *g) {
    if (qat_conv_blocked_isa() == 0) return 0;
    // 1×1 convs are a plain gemm per image: the phased copy would only add a pass (and a stride-2
    // one copies 4× what it reads), so they stay on im2col + sgemm.
    return g->kernel >= 2 && g->kernel <= 7 && g->stride >= 1 && g->stride <= 2
        && g->padding >= 0 && g->padding < g->kernel;
}

long qat_conv_blocked_image_floats(const qat_conv_geometry *g) { return blocked_shape_of(g).imageFloats; }
long qat_conv_blocked_slack(void) { return 0; }   // each image carries its own 16 zeros

// Stride 1, rows of at most 16 floats: zero the image's planes (and its 16 trailing zeros),
// then copy its rows. Loops, not memset / memcpy calls per row of 2–9 floats, which cost more
// than the copying; `zero` and `same` are opaque to clang so that it does not turn the loops
// back into such calls.
static void phase_small_rows(const float *restrict src, float *restrict dst, const struct blocked_shape *s) {
    float zero = 0.0f;
    long same = 0;
    __asm__("" : "+x"(zero), "+r"(same));
    for (long k = 0; k < s->imageFloats; k++) dst[k] = zero;
    for (long c = 0; c < s->C; c++) {
        for (long h = 0; h < s->H; h++) {
            float *row = dst + c * s->channelFloats + (h + s->P) * s->Wq + s->P;
            const float *line = src + (c * s->H + h) * s->W;
            for (long w = 0; w < s->W; w++) row[w] = line[w ^ same];
        }
    }
}

// phase_small_rows for rows of 8 … 16 floats: each row as 8-float copies, the last one moved back
// to end at W (rewriting the same values). Its own function: the AVX2 target attribute made the
// loops of the narrower rows slower.
__attribute__((target("avx2")))
static void phase_small_wide_rows(const float *restrict src, float *restrict dst, const struct blocked_shape *s) {
    memset(dst, 0, sizeof(float) * (size_t)s->imageFloats);
    for (long c = 0; c < s->C; c++) {
        for (long h = 0; h < s->H; h++) {
            float *row = dst + c * s->channelFloats + (h + s->P) * s->Wq + s->P;
            const float *line = src + (c * s->H + h) * s->W;
            for (long w0 = 0; w0 < s->W; w0 += 8) {
                const long start = w0 + 8 <= s->W ? w0 : s->W - 8;
                *(qv8u *)(row + start) = *(const qv8u *)(line + start);
            }
        }
    }
}

// Stride 2, rows of 8 … 32 floats: zero the image once, then send each source row's even and odd
// columns to their phases, 8 source floats a load split into two 4-float stores (the general
// copy's per-row memset calls and loops over 1–8 floats cost more than the copying). Writes the
// same values as the general copy.
__attribute__((target("avx2")))   // the blocked path runs only where AVX2 is present
static void phase_small_stride2(const float *restrict src, float *restrict dst, const struct blocked_shape *s) {
    memset(dst, 0, sizeof(float) * (size_t)s->imageFloats);
    for (long c = 0; c < s->C; c++) {
        for (long h = 0; h < s->H; h++) {
            const long a = (h + s->P) % 2, u = (h + s->P) / 2;
            const float *line = src + (c * s->H + h) * s->W;
            float *phaseRows[2];   // row u of phases (a, 0) and (a, 1)
            phaseRows[0] = dst + c * s->channelFloats + 2 * a * s->phaseFloats + u * s->Wq;
            phaseRows[1] = phaseRows[0] + s->phaseFloats;
            // source column w goes to phase (w + P) mod 2, column (w + P) / 2; the last 8 floats
            // are moved back to end at W (rewriting the same values)
            for (long w0 = 0; w0 < s->W; w0 += 8) {
                const long start = w0 + 8 <= s->W ? w0 : s->W - 8, b = (start + s->P) % 2;
                const qv8 v = *(const qv8u *)(line + start);
                *(qv4u *)(phaseRows[b] + (start + s->P) / 2) = __builtin_shufflevector(v, v, 0, 2, 4, 6);
                *(qv4u *)(phaseRows[1 - b] + (start + 1 + s->P) / 2) = __builtin_shufflevector(v, v, 1, 3, 5, 7);
            }
        }
    }
}

// phase_small_stride2 for rows under 8 floats: one float at a time (no target attribute, which
// made these loops slower).
static void phase_small_stride2_narrow(const float *restrict src, float *restrict dst, const struct blocked_shape *s) {
    memset(dst, 0, sizeof(float) * (size_t)s->imageFloats);
    for (long c = 0; c < s->C; c++) {
        for (long h = 0; h < s->H; h++) {
            const long a = (h + s->P) % 2, u = (h + s->P) / 2;
            const float *line = src + (c * s->H + h) * s->W;
            float *row = dst + c * s->channelFloats + 2 * a * s->phaseFloats + u * s->Wq;
            for (long w = 0; w < s->W; w++) row[((w + s->P) % 2) * s->phaseFloats + (w + s->P) / 2] = line[w];
        }
    }
}

void qat_conv_blocked_phase(const float *restrict x, float *restrict xq, const qat_conv_geometry *g,
                            long n0, long n1) {
    const struct blocked_shape s = blocked_shape_of(g);
    for (long n = n0; n < n1; n++) {
        if (s.S == 1 && s.W >= 8 && s.W <= 16 && !reference_loops) {
            phase_small_wide_rows(x + n * s.C * s.H * s.W, xq + n * s.imageFloats, &s);
            continue;
        }
        if (s.S == 1 && s.W <= 16) {
            phase_small_rows(x + n * s.C * s.H * s.W, xq + n * s.imageFloats, &s);
            continue;
        }
        if (s.S == 2 && s.W <= 32 && !reference_loops) {
            if (s.W >= 8) phase_small_stride2(x + n * s.C * s.H * s.W, xq + n * s.imageFloats, &s);
            else phase_small_stride2_narrow(x + n * s.C * s.H * s.W, xq + n * s.imageFloats, &s);
            continue;
        }
        for (long c = 0; c < s.C; c++) {
            const float *src = x + (n * s.C + c) * s.H * s.W;
            float *dst = xq + n * s.imageFloats + c * s.channelFloats;
            for (long a = 0; a < s.S; a++) {
                for (long b = 0; b < s.S; b++) {
                    float *phase = dst + (a * s.S + b) * s.phaseFloats;
                    // Columns v whose source column v·S + b − P lies inside the image.
                    long vLo = s.P - b > 0 ? (s.P - b + s.S - 1) / s.S : 0;
                    long vHi = s.W - 1 + s.P - b < 0 ? 0 : (s.W - 1 + s.P - b) / s.S + 1;
                    if (vHi > s.Wq) vHi = s.Wq;
                    if (vLo > vHi) vLo = vHi;
                    for (long u = 0; u < s.Hq; u++) {
                        const long h = u * s.S + a - s.P;
                        float *row = phase + u * s.Wq;
                        if (h < 0 || h >= s.H) { memset(row, 0, sizeof(float) * (size_t)s.Wq); continue; }
                        const float *line = src + h * s.W;
                        for (long v = 0; v < vLo; v++) row[v] = 0.0f;
                        if (s.S == 1) memcpy(row + vLo, line + vLo + b - s.P, sizeof(float) * (size_t)(vHi - vLo));
                        else for (long v = vLo; v < vHi; v++) row[v] = line[v * s.S + b - s.P];
                        for (long v = vHi; v < s.Wq; v++) row[v] = 0.0f;
                    }
                }
            }
        }
        memset(xq + n * s.imageFloats + s.C * s.channelFloats, 0, sizeof(float) * 16);
    }
}

long qat_conv_blocked_weight_floats(const qat_conv_geometry *g) {
    const long KK = g->kernel * g->kernel;
    const long forward = round_up(g->out_channels, forward_lanes(g)) * g->channels * KK;
    const long backward = round_up(g->channels, input_grad_lanes(g)) * g->out_channels * KK;
    return forward > backward ? forward : backward;
}

void qat_conv_blocked_forward_weights(const float *restrict w, float *restrict wf, const qat_conv_geometry *g) {
    const struct blocked_shape s = blocked_shape_of(g);
    const long L = forward_lanes(g);
    for (long ob = 0; ob < (s.O + L - 1) / L; ob++)
        for (long c = 0; c < s.C; c++)
            for (long t = 0; t < s.KK; t++)
                for (long l = 0; l < L; l++) {
                    const long o = L * ob + l;
                    wf[((ob * s.C + c) * s.KK + t) * L + l] = o < s.O ? w[(o * s.C + c) * s.KK + t] : 0.0f;
                }
}

void qat_conv_blocked_input_grad_weights(const float *restrict w, float *restrict wb, const qat_conv_geometry *g) {
    const struct blocked_shape s = blocked_shape_of(g);
    const long L = input_grad_lanes(g);
    for (long cb = 0; cb < (s.C + L - 1) / L; cb++)
        for (long o = 0; o < s.O; o++)
            for (long t = 0; t < s.KK; t++)
                for (long l = 0; l < L; l++) {
                    const long c = L * cb + l;
                    // stride 1: taps reversed, the kernel of the transposed forward conv
                    const long tap = s.S == 1 ? s.KK - 1 - t : t;
                    wb[((cb * s.O + o) * s.KK + t) * L + l] = c < s.C ? w[(o * s.C + c) * s.KK + tap] : 0.0f;
                }
}

long qat_conv_blocked_input_grad_scratch(const qat_conv_geometry *g) {
    if (g->stride == 1) {
        const qat_conv_geometry t = transposed_geometry(g);
        return qat_conv_blocked_image_group(&t) * qat_conv_blocked_image_floats(&t) + qat_conv_blocked_slack();
    }
    return (g->height + 2 * g->padding) * (g->width + 2 * g->padding) * input_grad_lanes(g);
}

long qat_conv_blocked_gy_pixels_major_floats(const qat_conv_geometry *g) {
    const struct blocked_shape s = blocked_shape_of(g);
    return s.N * s.oh * s.ow * round_up(s.O, weight_grad_lanes(g));
}

void qat_conv_blocked_gy_pixels_major(const float *restrict gy, float *restrict gyt, const qat_conv_geometry *g,
                                      long n0, long n1) {
    const struct blocked_shape s = blocked_shape_of(g);
    const long plane = s.oh * s.ow, Op = round_up(s.O, weight_grad_lanes(g));
    if (use_avx2_weight_grad(g)) {   // block-major: gyt[ob][n][p][8]
        for (long n = n0; n < n1; n++) {
            const float *src = gy + n * s.O * plane;
            for (long ob = 0; ob < Op / 8; ob++) {
                float *dst = gyt + (ob * s.N + n) * plane * 8;
                for (long l = 0; l < 8; l++) {
                    const long o = 8 * ob + l;
                    if (o < s.O) for (long p = 0; p < plane; p++) dst[p * 8 + l] = src[o * plane + p];
                    else for (long p = 0; p < plane; p++) dst[p * 8 + l] = 0.0f;
                }
            }
        }
        return;
    }
    for (long n = n0; n < n1; n++) {
        const float *src = gy + n * s.O * plane;
        float *dst = gyt + n * plane * Op;
        for (long p = 0; p < plane; p++)
            for (long o = s.O; o < Op; o++) dst[p * Op + o] = 0.0f;
        for (long o = 0; o < s.O; o++)
            for (long p = 0; p < plane; p++) dst[p * Op + o] = src[o * plane + p];
    }
}

#else   // not x86-64: the gemm path handles every layer

int qat_conv_blocked_isa(void) { return 0; }
int qat_conv_blocked_force_isa(int isa) { (void)isa; return 0; }
int qat_conv_blocked_force_lanes(int lanes) { (void)lanes; return 0; }
int qat_conv_blocked_enable_slots(int enabled) { (void)enabled; return 0; }
int qat_conv_blocked_use_reference_loops(int enabled) { (void)enabled; return 0; }
int qat_conv_blocked_enable_avx2_weight_grad(int enabled) { (void)enabled; return 0; }
long qat_conv_blocked_image_group(const qat_conv_geometry *g) { (void)g; return 1; }
int qat_conv_blocked_supported(const qat_conv_geometry *g) { (void)g; return 0; }
long qat_conv_blocked_image_floats(const qat_conv_geometry *g) { (void)g; return 0; }
long qat_conv_blocked_slack(void) { return 0; }
void qat_conv_blocked_phase(const float *restrict x, float *restrict xq, const qat_conv_geometry *g,
                            long n0, long n1) { (void)x; (void)xq; (void)g; (void)n0; (void)n1; }
long qat_conv_blocked_weight_floats(const qat_conv_geometry *g) { (void)g; return 0; }
void qat_conv_blocked_forward_weights(const float *restrict w, float *restrict wf, const qat_conv_geometry *g) {
    (void)w; (void)wf; (void)g;
}
void qat_conv_blocked_input_grad_weights(const float *restrict w, float *restrict wb, const qat_conv_geometry *g) {
    (void)w; (void)wb; (void)g;
}
void qat_conv_blocked_forward(const float *restrict xq, const float *restrict wf, const float *restrict bias,
                              float *restrict y, const qat_conv_geometry *g, long n0, long n1) {
    (void)xq; (void)wf; (void)bias; (void)y; (void)g; (void)n0; (void)n1;
}
long qat_conv_blocked_input_grad_scratch(const qat_conv_geometry *g) { (void)g; return 0; }
long qat_conv_blocked_weight_grad_units(const qat_conv_geometry *g) { (void)g; return 0; }
void qat_conv_blocked_input_grad(const float *restrict gy, const float *restrict wb, float *restrict gx,
                                 float *restrict scratch, const qat_conv_geometry *g, long n0, long n1) {
    (void)gy; (void)wb; (void)gx; (void)scratch; (void)g; (void)n0; (void)n1;
}
void qat_conv_blocked_gy_pixels_major(const float *restrict gy, float *restrict gyt, const qat_conv_geometry *g,
                                      long n0, long n1) { (void)gy; (void)gyt; (void)g; (void)n0; (void)n1; }
long qat_conv_blocked_gy_pixels_major_floats(const qat_conv_geometry *g) { (void)g; return 0; }
void qat_conv_blocked_weight_grad(const float *restrict xq, const float *restrict gyt, float *restrict gw,
                                  const qat_conv_geometry *g, long u0, long u1) {
    (void)xq; (void)gyt; (void)gw; (void)g; (void)u0; (void)u1;
}
#endif
