import CKernels
import QATIO

/// How many threads our own loops split work over; the single source of truth for threading.
///
/// `Runtime.configure(threads:)` sets it (from `--threads`) and keeps OpenBLAS single-threaded:
/// every op splits its own work (usually the batch) over a persistent pool (CKernels/pool.c),
/// which costs a few microseconds per parallel region where DispatchQueue.concurrentPerform and
/// OpenBLAS's own threads cost tens, as much as a LeNet layer's whole work.
public enum Parallel {
    nonisolated(unsafe) public static var threads = 1 {
        didSet {
            qat_pool_set_threads(Int32(clamping: threads))
            BLAS.setThreads(1)
        }
    }

    /// Splits 0..<count into at most `threads` contiguous chunks and runs them concurrently.
    /// Chunks are fixed by count and thread number alone, so results never depend on timing.
    public static func forEachChunk(_ count: Int, minimumChunk: Int = 1,
                                    _ body: (Range<Int>) -> Void) {
        let chunks = max(1, min(threads, count / max(minimumChunk, 1)))
        if chunks == 1 { body(0..<count); return }
        forEachIndex(chunks) { index in
            body((count * index / chunks)..<(count * (index + 1) / chunks))
        }
    }

    /// Runs body(0), …, body(count − 1), spread over the pool: free threads claim the next index.
    /// Use a count that does not depend on `threads` when the result must not either.
    public static func forEachIndex(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threads == 1 { for i in 0..<count { body(i) }; return }
        withoutActuallyEscaping(body) { escapable in
            var job = Job(body: escapable)
            withUnsafeMutablePointer(to: &job) { pointer in
                qat_pool_run(count, { context, index in
                    context!.assumingMemoryBound(to: Job.self).pointee.body(index)
                }, pointer)
            }
        }
    }

    private struct Job { let body: (Int) -> Void }
}
