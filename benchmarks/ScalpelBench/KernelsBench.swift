import Foundation
import Llama

/// Element-wise kernels on one core: nanoseconds per element of the SwiGLU and per logit of log-sum-exp, for the
/// version this process dispatches to (`SCALPEL_PORTABLE_KERNELS=1` selects the portable Swift one, for the baseline).
func benchKernels() -> [String: Any] {
    var out: [String: Any] = ["avx2": Kernels.usesAVX2]
    let f = 1536
    for rows in [16, 1024] {
        let gu = FloatBuffer((0..<(rows * 2 * f)).map { Float($0 % 97) / 20 - 2 })
        let o = FloatBuffer(rows * f)
        let t = bestTime(repeats: 20) {
            // Inside a data-parallel part the kernel stays on its core (the other part has nothing to do).
            Kernels.dataParallel(2) { p in
                if p == 0 { Kernels.swigluForward(out: o.pointer, gateUp: gu.pointer, rows: rows, width: f) }
            }
        }
        out["swiglu_\(rows)_rows_ns_per_element"] = t / Double(rows * f) * 1e9
    }
    let logits = FloatBuffer((0..<49152).map { Float($0 % 1013) / 50 - 10 })
    let t = bestTime(repeats: 50) { _ = Kernels.logSumExp(logits.pointer, count: logits.count) }
    out["log_sum_exp_ns_per_logit"] = t / Double(logits.count) * 1e9
    return out
}
