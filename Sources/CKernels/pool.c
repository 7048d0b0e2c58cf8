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
static atomic_ulong pool_generation;
static atomic_long pool_pending;
static qat_task_fn pool_fn;
static void *pool_ctx;
static long pool_count;
static long pool_width;          // workers + caller taking part in the current region
static int pool_started;         // worker threads created so far
static int pool_threads = 1;     // requested width (caller included)
static _Thread_local int pool_inside;
// The generation current when each worker was created: a worker that starts running only after
// the caller has already published its first region must still see that region as new.
static unsigned long pool_start_generation[QAT_MAX_WORKERS + 1];

static void run_indices(long first, long width) {
    for (long i = first; i < pool_count; i += width) pool_fn(pool_ctx, i);
}

static void *pool_worker(void *arg) {
    const long slot = (long)arg;   // 1 … workers
    pool_inside = 1;
    unsigned long seen = pool_start_generation[slot];
    for (;;) {
        unsigned long g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool_generation, memory_order_acquire)) == seen) {
            if (++spins < QAT_SPIN_LIMIT) { QAT_PAUSE(); continue; }
            pthread_mutex_lock(&pool_mutex);
            while ((g = atomic_load_explicit(&pool_generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&pool_wake, &pool_mutex);
            pthread_mutex_unlock(&pool_mutex);
            break;
        }
        seen = g;
        if (slot < pool_width) {
            run_indices(slot, pool_width);
            atomic_fetch_sub_explicit(&pool_pending, 1, memory_order_acq_rel);
        }
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
        pool_start_generation[pool_started + 1] = atomic_load_explicit(&pool_generation, memory_order_relaxed);
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
    pool_fn = fn;
    pool_ctx = ctx;
    pool_count = count;
    pool_width = width;
    atomic_store_explicit(&pool_pending, width - 1, memory_order_relaxed);
    pthread_mutex_lock(&pool_mutex);
    atomic_fetch_add_explicit(&pool_generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_mutex);

    pool_inside = 1;
    run_indices(0, width);
    pool_inside = 0;
    int spins = 0;
    while (atomic_load_explicit(&pool_pending, memory_order_acquire) != 0) {
        if (++spins < 100000) QAT_PAUSE(); else sched_yield();
    }
}
