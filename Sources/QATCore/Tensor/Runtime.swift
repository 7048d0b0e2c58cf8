import CKernels
import QATIO

/// Process-wide set-up, called once by the CLI and the benchmark before any work.
public enum Runtime {
    /// Sets the thread count for our own loops (`Parallel.threads`), keeps OpenBLAS to one
    /// thread inside each call (the ops split their gemms over the batch themselves, which pays
    /// on LeNet-sized layers where OpenBLAS's threading does not), and keeps large buffers in
    /// the heap.
    ///
    /// Each training step allocates and frees the same few multi-megabyte buffers. By default glibc
    /// serves those with fresh mmaps and returns them to the OS at once, so every step page-faults
    /// its whole working set again; raising both thresholds makes freed blocks reusable.
    public static func configure(threads: Int) {
        BLAS.setThreads(1)
        Parallel.threads = max(1, threads)
        qat_keep_freed_memory()
    }

    /// Heap bytes in use now (glibc's count, all threads): what tests of memory use compare.
    public static var heapBytesInUse: Int { Int(qat_heap_bytes_in_use()) }
}

import Dispatch

/// Timing for benchmarks and `--speed` flags.
public enum Stopwatch {
    /// Seconds per call of `body`: the best of 5 rounds of at least 0.2 s each, after a warm-up.
    /// The best round is the one least disturbed by other processes on a shared machine.
    public static func bestSecondsPerCall(_ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        for _ in 0..<5 {
            var calls = 0
            let start = DispatchTime.now().uptimeNanoseconds
            var elapsed = 0.0
            repeat {
                body()
                calls += 1
                elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            } while elapsed < 0.2
            best = min(best, elapsed / Double(calls))
        }
        return best
    }
}
