// A tiny persistent thread pool for sub-millisecond parallel regions.
//
// DispatchQueue.concurrentPerform and OpenBLAS's own threading cost tens of microseconds per
// region, as much as the work they split in LeNet-sized layers. Here workers stay alive, spin
// briefly on a generation counter after each region (the next region usually follows within
// microseconds) and only then sleep on a condition variable.
#include "float_kernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QAT_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define QAT_PAUSE() __asm__ __volatile__("yield")
#else
#define QAT_PAUSE() ((void)0)
#endif

#define QAT_MAX_WORKERS 63
// About 50–100 µs of spinning before a worker goes to sleep.
#define QAT_SPIN_LIMIT 2000

static pthread_mutex_t pool_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
// generation << 32 | next unclaimed index. Threads claim indices with a compare-and-swap that
// also checks the generation, so a late worker can never claim an index of a newer region.
// Claiming (rather than a fixed index-to-thread map) means that when a worker is descheduled
// (the machine is shared) the caller simply runs the remaining indices itself instead of
// waiting. Which thread runs an index never changes what the index computes.
static _Atomic uint64_t pool_state;
static atomic_long pool_done;
static _Atomic(qat_task_fn) pool_fn;
static _Atomic(void *) pool_ctx;
static atomic_long pool_count;
static int pool_started;         // worker threads created so far
static int pool_threads = 1;     // requested width (caller included)
static _Thread_local int pool_inside;
// The generation current when each worker was created: a worker that starts running only after
// the caller has already published its first region must still see that region as new.
static uint32_t pool_start_generation[QAT_MAX_WORKERS + 1];

static void claim_and_run(uint32_t generation) {
    for (;;) {
        uint64_t s = atomic_load_explicit(&pool_state, memory_order_acquire);
        if ((uint32_t)(s >> 32) != generation) return;
        const long index = (long)(uint32_t)s;
        // Acquire: if this sees the next region's count, the CAS below sees the caller's closing
        // store to pool_state (made before that count) and fails.
        if (index >= atomic_load_explicit(&pool_count, memory_order_acquire)) return;
        if (!atomic_compare_exchange_weak_explicit(&pool_state, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_relaxed)) continue;
        atomic_load_explicit(&pool_fn, memory_order_relaxed)(atomic_load_explicit(&pool_ctx, memory_order_relaxed), index);
        atomic_fetch_add_explicit(&pool_done, 1, memory_order_release);
    }
}

static void *pool_worker(void *arg) {
    const long slot = (long)arg;   // 1 … workers
    pool_inside = 1;
    uint32_t seen = pool_start_generation[slot];
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = (uint32_t)(atomic_load_explicit(&pool_state, memory_order_acquire) >> 32)) == seen) {
            if (++spins < QAT_SPIN_LIMIT) { QAT_PAUSE(); continue; }
            pthread_mutex_lock(&pool_mutex);
            while ((g = (uint32_t)(atomic_load_explicit(&pool_state, memory_order_acquire) >> 32)) == seen)
                pthread_cond_wait(&pool_wake, &pool_mutex);
            pthread_mutex_unlock(&pool_mutex);
            break;
        }
        seen = g;
        claim_and_run(g);
    }
    return 0;
}

void qat_pool_set_threads(int threads) {
    if (threads < 1) threads = 1;
    if (threads > QAT_MAX_WORKERS + 1) threads = QAT_MAX_WORKERS + 1;
    pool_threads = threads;
}

int qat_pool_threads(void) { return pool_threads; }

void qat_pool_run(long count, qat_task_fn fn, void *ctx) {
    long width = count < pool_threads ? count : pool_threads;
    if (width <= 1 || pool_inside) {
        for (long i = 0; i < count; i++) fn(ctx, i);
        return;
    }
    while (pool_started < width - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pool_start_generation[pool_started + 1] = (uint32_t)(atomic_load_explicit(&pool_state, memory_order_relaxed) >> 32);
        if (pthread_create(&thread, &attr, pool_worker, (void *)(long)(pool_started + 1)) != 0) {
            pthread_attr_destroy(&attr);
            break;
        }
        pthread_attr_destroy(&attr);
        pool_started++;
    }
    if (width > pool_started + 1) width = pool_started + 1;
    if (width <= 1) {
        for (long i = 0; i < count; i++) fn(ctx, i);
        return;
    }
    // Close the previous region before overwriting its count: a late worker that had loaded
    // (old generation, index = old count) could otherwise read the new, larger count, claim that
    // index with a CAS that still matches, run a stray task and add one to pool_done, which then
    // skips past `count` and the wait below never ends. An index of 0xFFFFFFFF claims nothing.
    atomic_store_explicit(&pool_state, atomic_load_explicit(&pool_state, memory_order_relaxed) | 0xFFFFFFFFu,
                          memory_order_relaxed);
    atomic_store_explicit(&pool_fn, fn, memory_order_relaxed);
    atomic_store_explicit(&pool_ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&pool_count, count, memory_order_release);
    atomic_store_explicit(&pool_done, 0, memory_order_relaxed);
    pthread_mutex_lock(&pool_mutex);
    const uint32_t generation = (uint32_t)(atomic_load_explicit(&pool_state, memory_order_relaxed) >> 32) + 1;
    atomic_store_explicit(&pool_state, (uint64_t)generation << 32, memory_order_release);
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mutex);

    pool_inside = 1;
    claim_and_run(generation);
    pool_inside = 0;
    int spins = 0;
    while (atomic_load_explicit(&pool_done, memory_order_acquire) != count) {
        if (++spins < 100000) QAT_PAUSE(); else sched_yield();
    }
}
