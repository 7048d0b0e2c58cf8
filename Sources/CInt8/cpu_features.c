// Which INT8 kernel paths this CPU runs (cpuid, through the compiler's builtins).
#include "int8_internal.h"

int qat_i8_cpu_supports(qat_i8_path path) {
    switch (path) {
    case QAT_I8_PORTABLE: return 1;
    case QAT_I8_AVX2: return __builtin_cpu_supports("avx2") != 0;
    case QAT_I8_VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }
    return 0;
}

static int vbmi_allowed = 1;
void qat_i8_allow_vbmi(int allowed) { vbmi_allowed = allowed; }
int qat_i8_cpu_has_vbmi(void) { return vbmi_allowed && __builtin_cpu_supports("avx512vbmi") != 0; }
