import Foundation
import Linalg
import Llama

/// GFLOP/s of the GEMM shapes one forward pass of `rows` rows uses (y = x Wᵀ, W row-major [out, in]).
func benchGemmShapes(rows m: Int) -> [String: Double] {
    var out: [String: Double] = [:]
    for (name, n, k) in [("qkv", 960, 576), ("o", 576, 576), ("gateup", 3072, 576), ("down", 576, 1536), ("head", 49152, 576)] {
        let a = FloatBuffer([Float](repeating: 0.5, count: m * k)), w = FloatBuffer([Float](repeating: 0.25, count: n * k))
        let c = FloatBuffer(m * n)
        let tT = bestTime(repeats: 5) {
            BLAS.sgemm(transB: true, m: m, n: n, k: k, a: a.pointer, lda: k, b: w.pointer, ldb: k, c: c.pointer, ldc: n)
        }
        out["\(name)_xWt"] = 2 * Double(m * n * k) / tT / 1e9
        // Same product with W stored transposed ([in, out]): y = x W.
        let tN = bestTime(repeats: 5) {
            BLAS.sgemm(m: m, n: n, k: k, a: a.pointer, lda: k, b: w.pointer, ldb: n, c: c.pointer, ldc: n)
        }
        out["\(name)_xW"] = 2 * Double(m * n * k) / tN / 1e9
    }
    return out
}
