// How many heap bytes the process uses now, from glibc's own bookkeeping (tests and the
// memory report of the benchmark; RSS cannot tell, since freed blocks stay mapped).
#pragma once
#include <stddef.h>

/// Bytes in allocated heap blocks: small ones in the arenas plus large mmap'ed ones.
size_t qat_heap_bytes_in_use(void);
