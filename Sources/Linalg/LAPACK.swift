import CLAPACKE

/// LAPACKE's `lapack_int` (a C macro for int32_t).
typealias LInt = Int32

/// Errors from the dense linear algebra layer.
public enum LinalgError: Error, CustomStringConvertible, Equatable {
    /// LAPACK routine `routine` returned `info` ≠ 0.
    case lapackFailed(routine: String, info: Int)
    /// The matrix given to a Cholesky routine is not symmetric positive definite (leading minor `order` fails).
    case notPositiveDefinite(order: Int)
    /// Dimensions of the arguments disagree.
    case shapeMismatch(String)

    public var description: String {
        switch self {
        case let .lapackFailed(routine, info):
            return "LAPACK \(routine) failed with info=\(info)"
        case let .notPositiveDefinite(order):
            return "matrix is not positive definite (leading minor of order \(order) fails); "
                + "hint: add a ridge (λI) or collect statistics over more tokens"
        case let .shapeMismatch(what):
            return "shape mismatch: \(what)"
        }
    }
}

/// Dense LAPACK solvers in double precision, row-major.
public enum LAPACK {
    /// Solves A X = B for symmetric positive definite A[N,N] by Cholesky (dposv). Never forms A⁻¹.
    /// - Parameters:
    ///   - a: A, row-major [N,N]; only the upper triangle is read.
    ///   - b: B, row-major [N,NRHS].
    /// - Returns: X [N,NRHS].
    public static func choleskySolve(_ a: [Double], _ b: [Double], n: Int, nrhs: Int = 1) throws -> [Double] {
        guard a.count == n * n, b.count == n * nrhs else {
            throw LinalgError.shapeMismatch("choleskySolve: A has \(a.count) values, B has \(b.count), n=\(n)")
        }
        var a = a, x = b
        let info = LAPACKE_dposv(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), LInt(n), LInt(nrhs),
                                 &a, LInt(n), &x, LInt(nrhs))
        if info > 0 { throw LinalgError.notPositiveDefinite(order: Int(info)) }
        if info < 0 { throw LinalgError.lapackFailed(routine: "dposv", info: Int(info)) }
        return x
    }

    /// Least-squares solution of min ‖A X − B‖ for A[M,N] (M ≥ N, full rank) by QR (dgels).
    /// - Returns: X [N,NRHS].
    public static func leastSquares(_ a: [Double], _ b: [Double], m: Int, n: Int, nrhs: Int = 1) throws -> [Double] {
        guard a.count == m * n, b.count == m * nrhs, m >= n else {
            throw LinalgError.shapeMismatch("leastSquares: A \(a.count) (m=\(m), n=\(n)), B \(b.count)")
        }
        var a = a, bb = b
        let info = LAPACKE_dgels(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "N")), LInt(m), LInt(n),
                                 LInt(nrhs), &a, LInt(n), &bb, LInt(nrhs))
        if info != 0 { throw LinalgError.lapackFailed(routine: "dgels", info: Int(info)) }
        return Array(bb[0..<(n * nrhs)])
    }

    /// Singular value decomposition A = U Σ Vᵀ of A[M,N] (dgesdd), thin.
    /// - Returns: singular values (descending, min(M,N)), U [M,r] and Vᵀ [r,N] row-major with r = min(M,N).
    public static func svd(_ a: [Double], m: Int, n: Int) throws -> (s: [Double], u: [Double], vt: [Double]) {
        guard a.count == m * n else { throw LinalgError.shapeMismatch("svd: \(a.count) values for \(m)x\(n)") }
        let r = min(m, n)
        var a = a
        var s = [Double](repeating: 0, count: r)
        var u = [Double](repeating: 0, count: m * r)
        var vt = [Double](repeating: 0, count: r * n)
        let info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "S")), LInt(m), LInt(n), &a,
                                  LInt(n), &s, &u, LInt(r), &vt, LInt(n))
        if info != 0 { throw LinalgError.lapackFailed(routine: "dgesdd", info: Int(info)) }
        return (s, u, vt)
    }

    /// Singular values only of A[M,N] (dgesdd with jobz = N), descending.
    public static func singularValues(_ a: [Double], m: Int, n: Int) throws -> [Double] {
        guard a.count == m * n else { throw LinalgError.shapeMismatch("singularValues: \(a.count) for \(m)x\(n)") }
        var a = a
        var s = [Double](repeating: 0, count: min(m, n))
        // Row-major LAPACKE checks ldvt ≥ n even when no vectors are computed.
        var dummyU = [Double](repeating: 0, count: 1)
        var dummyVt = [Double](repeating: 0, count: max(n, 1))
        let info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "N")), LInt(m), LInt(n), &a,
                                  LInt(n), &s, &dummyU, 1, &dummyVt, LInt(max(n, 1)))
        if info != 0 { throw LinalgError.lapackFailed(routine: "dgesdd", info: Int(info)) }
        return s
    }
}
