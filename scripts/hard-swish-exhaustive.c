// All 2^32 float inputs of the VNNI HardSwish (qat_i8_hard_swish_vnni16) against the scalar loop of
// QATCore's hardSwish, bit for bit (NaN payloads included).
// Run: clang -O2 -I Sources/CInt8 -I Sources/CInt8/include -o /tmp/hs scripts/hard-swish-exhaustive.c \
//        Sources/CInt8/float_nodes_simd.c && /tmp/hs     (prints "bad 0"; about 4 s)
#include <immintrin.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#pragma clang fp contract(off)
void qat_i8_hard_swish_vnni16(const float *x, float *y, size_t count);
#define hs_fast qat_i8_hard_swish_vnni16
static void hs_ref(const float *x, float *y, size_t count) {
    for (size_t i = 0; i < count; i++) {
        const float v = x[i], shifted = v + 3.0f;
        const float kept = shifted < 0.0f ? 0.0f : (shifted > 6.0f ? 6.0f : shifted);
        y[i] = v * kept / 6.0f;
    }
}
int main(void) {
    enum { B = 1 << 20 };
    static float x[B], a[B], b[B];
    uint64_t bad = 0;
    for (uint64_t base = 0; base < (1ull << 32); base += B) {
        for (uint32_t j = 0; j < B; j++) { uint32_t bits = (uint32_t)(base + j); memcpy(&x[j], &bits, 4); }
        hs_fast(x, a, B); hs_ref(x, b, B);
        for (uint32_t j = 0; j < B; j++) if (memcmp(&a[j], &b[j], 4)) { if (bad < 10) { uint32_t u, w, v; memcpy(&u,&a[j],4); memcpy(&w,&b[j],4); memcpy(&v,&x[j],4); printf("x %08x fast %08x ref %08x\n", v, u, w);} bad++; }
    }
    printf("bad %llu\n", (unsigned long long)bad);
    return 0;
}
