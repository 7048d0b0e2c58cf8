import Dispatch

/// How many threads our own loops (not OpenBLAS) split work over. Set once from `--threads`.
public enum Parallel {
    nonisolated(unsafe) public static var threads = 1

    /// Splits 0..<count into at most `threads` contiguous chunks and runs them concurrently.
    /// Chunks are fixed by count and thread number alone, so results never depend on timing.
    public static func forEachChunk(_ count: Int, minimumChunk: Int = 1,
                                    _ body: (Range<Int>) -> Void) {
        let chunks = max(1, min(threads, count / max(minimumChunk, 1)))
        if chunks == 1 { body(0..<count); return }
        DispatchQueue.concurrentPerform(iterations: chunks) { index in
            let start = count * index / chunks
            let end = count * (index + 1) / chunks
            body(start..<end)
        }
    }
}
