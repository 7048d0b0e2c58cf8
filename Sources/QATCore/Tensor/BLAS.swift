import CBLAS
import QATIO

/// The only door to OpenBLAS. Everything else calls these wrappers, never `cblas_*` directly.
public enum BLAS {
    /// OpenBLAS runs one thread per call; our own pool splits the work (Parallel), so results do
    /// not depend on the thread count. Set before the first GEMM, not only when Parallel.threads is
    /// assigned: OpenBLAS starts with a thread per core, and a program that never assigned it got
    /// multi-threaded GEMMs, whose sums round differently.
    private static let oneThreadPerCall: Void = openblas_set_num_threads(1)

    /// C[m×n] = alpha · op(A) · op(B) + beta · C, all row-major.
    /// op(A) is [m×k] (A stored [k×m] when `transposeA`), op(B) is [k×n] (B stored [n×k] when `transposeB`).
    @inline(__always)
    public static func gemm(
        transposeA: Bool = false, transposeB: Bool = false,
        m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        _ = oneThreadPerCall
        cblas_sgemm(CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Sets how many threads OpenBLAS may use inside one call.
    public static func setThreads(_ count: Int) { openblas_set_num_threads(Int32(count)) }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// The kernel family OpenBLAS picked for this CPU (for example "Haswell" or "SkylakeX").
    public static var coreName: String { String(cString: openblas_get_corename()) }
}
