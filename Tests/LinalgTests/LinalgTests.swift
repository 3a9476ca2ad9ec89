import XCTest
@testable import Linalg

final class LinalgTests: XCTestCase {
    /// Deterministic pseudo-random values in [-1, 1).
    func values(_ n: Int, seed: Int) -> [Float] {
        (0..<n).map { i in Float(((i &* 2654435761 &+ seed &* 40503) % 2000)) / 1000 - 1 }
    }

    /// Naive row-major product, written independently of BLAS.
    func naive(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, transA: Bool, transB: Bool) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n {
            var s: Float = 0
            for p in 0..<k {
                let x = transA ? a[p * m + i] : a[i * k + p]
                let y = transB ? b[j * k + p] : b[p * n + j]
                s += x * y
            }
            c[i * n + j] = s
        } }
        return c
    }

    func testSgemmAllTranspositionsAndSingleRow() {
        for (m, n, k) in [(5, 7, 3), (1, 9, 4), (1, 1, 6), (12, 1, 5)] {
            for transA in [false, true] { for transB in [false, true] {
                let a = values(m * k, seed: 1), b = values(k * n, seed: 2)
                var c = [Float](repeating: 0, count: m * n)
                a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                    BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: ap.baseAddress!, lda: transA ? m : k,
                               b: bp.baseAddress!, ldb: transB ? k : n, c: cp.baseAddress!, ldc: n)
                } } }
                let expected = naive(a, b, m: m, n: n, k: k, transA: transA, transB: transB)
                for (x, y) in zip(c, expected) { XCTAssertEqual(x, y, accuracy: 1e-5, "\(m)x\(n)x\(k) tA=\(transA) tB=\(transB)") }
            } }
        }
    }

    func testCholeskySolveOnHandComputedSystem() throws {
        // A = [[4, 2], [2, 3]], b = [2, 1] → x = [0.5, 0] (by hand: 4·0.5 + 2·0 = 2, 2·0.5 + 3·0 = 1).
        let x = try LAPACK.choleskySolve([4, 2, 2, 3], [2, 1], n: 2)
        XCTAssertEqual(x[0], 0.5, accuracy: 1e-12)
        XCTAssertEqual(x[1], 0, accuracy: 1e-12)
        XCTAssertThrowsError(try LAPACK.choleskySolve([1, 2, 2, 1], [1, 1], n: 2)) {
            XCTAssertEqual($0 as? LinalgError, .notPositiveDefinite(order: 2))
        }
        XCTAssertThrowsError(try LAPACK.choleskySolve([1, 0, 0], [1, 1], n: 2))
    }

    func testLeastSquaresExactFit() throws {
        // Points on y = 2 + 3t: the solution is exactly (2, 3).
        let t: [Double] = [0, 1, 2, 3]
        let a: [Double] = t.flatMap { [1.0, $0] }
        let b: [Double] = t.map { 2 + 3 * $0 }
        let x = try LAPACK.leastSquares(a, b, m: 4, n: 2)
        XCTAssertEqual(x[0], 2, accuracy: 1e-10)
        XCTAssertEqual(x[1], 3, accuracy: 1e-10)
    }

    func testSVDOfRankOneMatrix() throws {
        // u vᵀ with u = (1, 2, 2) (norm 3), v = (3, 4) (norm 5): one singular value 15, the other 0.
        let a: [Double] = [3, 4, 6, 8, 6, 8]
        let s = try LAPACK.singularValues(a, m: 3, n: 2)
        XCTAssertEqual(s[0], 15, accuracy: 1e-10)
        XCTAssertEqual(s[1], 0, accuracy: 1e-10)
        let (s2, u, vt) = try LAPACK.svd(a, m: 3, n: 2)
        XCTAssertEqual(s2[0], 15, accuracy: 1e-10)
        XCTAssertEqual(abs(u[0]), 1.0 / 3, accuracy: 1e-10)
        XCTAssertEqual(abs(vt[0]), 0.6, accuracy: 1e-10)
    }

    func testSyrkAccumulatesOuterProducts() {
        // Rows (1, 2) and (3, 4): Σ xxᵀ = [[10, 14], [14, 20]] (upper triangle).
        let a: [Double] = [1, 2, 3, 4]
        var c: [Double] = [1, 1, 1, 1]
        a.withUnsafeBufferPointer { ap in c.withUnsafeMutableBufferPointer { cp in
            BLAS.dsyrkUpperAtA(n: 2, k: 2, a: ap.baseAddress!, lda: 2, beta: 1, c: cp.baseAddress!, ldc: 2)
        } }
        XCTAssertEqual(c[0], 11); XCTAssertEqual(c[1], 15); XCTAssertEqual(c[3], 21)
    }
}
