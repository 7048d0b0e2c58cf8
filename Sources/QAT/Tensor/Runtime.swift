import CKernels

/// Process-wide set-up, called once by the CLI and the benchmark before any work.
public enum Runtime {
    /// Sets the thread count for OpenBLAS and our own loops, and keeps large buffers in the heap.
    ///
    /// Each training step allocates and frees the same few multi-megabyte buffers. By default glibc
    /// serves those with fresh mmaps and returns them to the OS at once, so every step page-faults
    /// its whole working set again; raising both thresholds makes freed blocks reusable.
    public static func configure(threads: Int) {
        BLAS.setThreads(threads)
        Parallel.threads = threads
        qat_keep_freed_memory()
    }
}
