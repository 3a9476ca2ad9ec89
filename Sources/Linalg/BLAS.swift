import CBLAS

/// The only place in Scalpel that hands pointers to BLAS. All matrices are row-major.
///
/// Shape key used in doc comments: M, N, K are the usual GEMM dimensions.
public enum BLAS {
    /// C[M,N] = alpha · op(A) · op(B) + beta · C, single precision, row-major.
    /// - Parameters:
    ///   - transA: use Aᵀ (A stored as [K,M]) instead of A ([M,K]).
    ///   - transB: use Bᵀ (B stored as [N,K]) instead of B ([K,N]).
    @inlinable
    public static func sgemm(transA: Bool = false, transB: Bool = false,
                             m: Int, n: Int, k: Int,
                             alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if m == 1 && !transA {
            // One row: a matrix–vector product avoids GEMM's packing of the whole of B (generation, one token).
            cblas_sgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans, Int32(transB ? n : k), Int32(transB ? k : n),
                        alpha, b, Int32(ldb), a, 1, beta, c, 1)
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// C[M,N] = alpha · op(A) · op(B) + beta · C, double precision, row-major.
    @inlinable
    public static func dgemm(transA: Bool = false, transB: Bool = false,
                             m: Int, n: Int, k: Int,
                             alpha: Double = 1, a: UnsafePointer<Double>, lda: Int,
                             b: UnsafePointer<Double>, ldb: Int,
                             beta: Double = 0, c: UnsafeMutablePointer<Double>, ldc: Int) {
        if m == 0 || n == 0 { return }
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Upper triangle of C[N,N] += alpha · Aᵀ A for A stored [K,N] (row-major), double precision.
    /// Used to accumulate second-moment statistics Σ k kᵀ over K rows of keys.
    @inlinable
    public static func dsyrkUpperAtA(n: Int, k: Int, alpha: Double = 1, a: UnsafePointer<Double>, lda: Int,
                                     beta: Double = 1, c: UnsafeMutablePointer<Double>, ldc: Int) {
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(k), alpha, a, Int32(lda),
                    beta, c, Int32(ldc))
    }

    /// y[M] = alpha · op(A) x + beta · y for A [M,N] row-major, single precision.
    @inlinable
    public static func sgemv(trans: Bool = false, m: Int, n: Int, alpha: Float = 1,
                             a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>,
                             beta: Float = 0, y: UnsafeMutablePointer<Float>) {
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), alpha, a, Int32(lda),
                    x, 1, beta, y, 1)
    }

    /// Number of threads OpenBLAS uses.
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// Sets the number of OpenBLAS threads.
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
}
