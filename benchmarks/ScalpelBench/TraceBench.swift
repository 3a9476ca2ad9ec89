import Foundation
import Interp
import Llama

/// ROME's three-panel causal trace of the Eiffel Tower prompt (10 noise samples, window 10), fast vs naive,
/// and a single-component STR sweep.
func benchTrace(_ m: ModelFile, naive: Bool) throws -> [String: Any] {
    let std = 3 * Corruption.embeddingStd(model: m.model)
    let tracer = try Tracer(model: m.model, tokenizer: m.tokenizer, prompt: "The Eiffel Tower is located in the city of",
                            subject: "Eiffel Tower", corruption: .noise(std: std, samples: 10, seed: 1))
    var out: [String: Any] = ["noise_std": Double(std)]
    var fastTotal = 0.0, naiveTotal = 0.0
    var maxDiff = 0.0
    for (kind, window) in [(TraceKind.resid, 1), (.mlp, 10), (.attn, 10)] {
        let t0 = Date()
        let fast = try tracer.trace(TraceSettings(kind: kind, window: window))
        let tf = Date().timeIntervalSince(t0)
        fastTotal += tf
        out["fast_\(kind.rawValue)_seconds"] = tf
        if naive {
            let t1 = Date()
            let slow = try tracer.trace(TraceSettings(kind: kind, window: window, naive: true))
            let tn = Date().timeIntervalSince(t1)
            naiveTotal += tn
            out["naive_\(kind.rawValue)_seconds"] = tn
            for (a, b) in zip(fast.scores.joined(), slow.scores.joined()) { maxDiff = max(maxDiff, abs(a - b)) }
        }
    }
    out["three_panel_fast_seconds"] = fastTotal
    if naive {
        out["three_panel_naive_seconds"] = naiveTotal
        out["speedup_vs_naive"] = naiveTotal / fastTotal
        out["max_abs_diff_fast_vs_naive"] = maxDiff
    }
    let str = try Tracer(model: m.model, tokenizer: m.tokenizer, prompt: "The Eiffel Tower is located in the city of",
                         subject: "Eiffel Tower", corruption: .prompt("The Big Ben Tower is located in the city of"))
    let t2 = Date()
    _ = try str.trace(TraceSettings(kind: .resid, metric: .logitDiff))
    out["str_single_sweep_seconds"] = Date().timeIntervalSince(t2)
    return out
}
