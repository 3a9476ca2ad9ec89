import Foundation
import Interp
import Llama

/// The comparisons of docs/tracing.md on the default model: Gaussian noise vs symmetric token replacement, probability
/// vs logit difference on negative components, sliding windows vs summed single layers, and IOI head patching.
/// `scalpel-bench study --known FILE --ioi FILE [--facts N] [--ioi-prompts N] [--svg-dir DIR]`.
func tracingStudy(_ m: ModelFile, knownPath: String, ioiPath: String, maxFacts: Int, ioiPrompts: Int,
                  svgDir: String?) throws -> [String: Any] {
    let model = m.model, tok = m.tokenizer, L = model.config.layers
    var facts: [KnownFact] = []
    for f in try KnownFact.load(path: knownPath) where facts.count < maxFacts {
        let ids = tok.encode(f.prompt)
        let top = tok.tokenText(LogitMath.topK(try model.forward([ids]).row(0), 1)[0]).trimmingCharacters(in: .whitespaces)
        if let a = f.answer, !top.isEmpty, a.hasPrefix(top) { facts.append(f) }
    }
    let std = 3 * Corruption.embeddingStd(model: model, tokenizer: tok, subjects: facts.map(\.subject))
    // STR partner: another fact's subject with the same token count whose answer differs.
    func partner(_ f: KnownFact) -> String? {
        guard let r = f.prompt.range(of: f.subject) else { return nil }
        let n = tok.encode(f.prompt).count
        for g in facts where g.subject != f.subject && g.answer != f.answer {
            let p = f.prompt.replacingCharacters(in: r, with: g.subject)
            if tok.encode(p).count == n { return p }
        }
        return nil
    }
    func profile(_ r: TraceResult) -> [Double] { r.normalized[r.subject!.upperBound] }
    func sharpness(_ p: [Double]) -> (peakOverMean: Double, top3Share: Double) {
        let pos = p.map { max($0, 0) }
        let total = pos.reduce(0, +), mean = total / Double(pos.count)
        let top3 = pos.sorted(by: >).prefix(3).reduce(0, +)
        return (mean > 0 ? (pos.max() ?? 0) / mean : .nan, total > 0 ? top3 / total : .nan)
    }
    var gnProfiles: [[Double]] = [], strProfiles: [[Double]] = []
    var gnSharp: [(Double, Double)] = [], strSharp: [(Double, Double)] = []
    var negProb: [Double] = [], negLD: [Double] = [], negCellsProb = 0, negCellsLD = 0
    var windowVsSum: [(Double, Double)] = []
    var used = 0
    for f in facts {
        guard let strPrompt = partner(f) else { continue }
        used += 1
        let gn = try Tracer(model: model, tokenizer: tok, prompt: f.prompt, subject: f.subject,
                            corruption: .noise(std: std, samples: 10, seed: 1))
        let str = try Tracer(model: model, tokenizer: tok, prompt: f.prompt, subject: f.subject, corruption: .prompt(strPrompt))
        let gMLP = try gn.trace(TraceSettings(kind: .mlp, window: 10))
        let sMLP = try str.trace(TraceSettings(kind: .mlp, window: 10))
        gnProfiles.append(profile(gMLP)); strProfiles.append(profile(sMLP))
        gnSharp.append(sharpness(profile(gMLP))); strSharp.append(sharpness(profile(sMLP)))
        // Negative components: single-layer attention patching under STR, probability vs logit difference.
        let ap = try str.trace(TraceSettings(kind: .attn, window: 1, metric: .prob))
        let al = try str.trace(TraceSettings(kind: .attn, window: 1, metric: .logitDiff))
        let np = ap.normalized.joined(), nl = al.normalized.joined()
        negProb.append(np.min() ?? 0); negLD.append(nl.min() ?? 0)
        negCellsProb += np.filter { $0 < -0.05 }.count; negCellsLD += nl.filter { $0 < -0.05 }.count
        // Sliding window vs the sum of single-layer effects over the same window (GN, MLP, last subject token).
        let single = try gn.trace(TraceSettings(kind: .mlp, window: 1))
        let t = gMLP.subject!.upperBound
        for l in 0..<L {
            let win = gn.windowLayers(l, window: 10)
            let summed = win.reduce(0.0) { $0 + single.scores[t][$1] - single.corrupted }
            windowVsSum.append((gMLP.scores[t][l] - gMLP.corrupted, summed))
        }
        if let svgDir, used <= 2 {
            let name = f.subject.replacingOccurrences(of: " ", with: "_")
            try Heatmap.svg(gMLP, title: "GN: \(f.prompt)").write(toFile: "\(svgDir)/gn-\(name).svg", atomically: true, encoding: .utf8)
            try Heatmap.svg(sMLP, title: "STR: \(f.prompt)").write(toFile: "\(svgDir)/str-\(name).svg", atomically: true, encoding: .utf8)
        }
    }
    func meanProfile(_ ps: [[Double]]) -> [Double] {
        (0..<L).map { l in ps.map { $0[l] }.reduce(0, +) / Double(max(ps.count, 1)) }
    }
    func avg(_ xs: [Double]) -> Double { xs.filter { !$0.isNaN }.reduce(0, +) / Double(max(xs.filter { !$0.isNaN }.count, 1)) }
    let corr: Double = {
        let xs = windowVsSum.map(\.0), ys = windowVsSum.map(\.1)
        let mx = avg(xs), my = avg(ys)
        let cov = zip(xs, ys).reduce(0.0) { $0 + ($1.0 - mx) * ($1.1 - my) }
        let vx = xs.reduce(0.0) { $0 + ($1 - mx) * ($1 - mx) }, vy = ys.reduce(0.0) { $0 + ($1 - my) * ($1 - my) }
        return cov / (vx * vy).squareRoot()
    }()
    var out: [String: Any] = [
        "facts_correct": facts.count, "facts_with_str_partner": used, "noise_std": Double(std),
        "gn_mlp_last_subject_profile": meanProfile(gnProfiles), "str_mlp_last_subject_profile": meanProfile(strProfiles),
        "gn_peak_layer": meanProfile(gnProfiles).enumerated().max { $0.1 < $1.1 }?.offset ?? -1,
        "str_peak_layer": meanProfile(strProfiles).enumerated().max { $0.1 < $1.1 }?.offset ?? -1,
        "gn_peak_over_mean": avg(gnSharp.map(\.0)), "str_peak_over_mean": avg(strSharp.map(\.0)),
        "gn_top3_share": avg(gnSharp.map(\.1)), "str_top3_share": avg(strSharp.map(\.1)),
        "attn_min_normalized_prob": avg(negProb), "attn_min_normalized_logit_diff": avg(negLD),
        "attn_cells_below_minus_0.05_prob": negCellsProb, "attn_cells_below_minus_0.05_logit_diff": negCellsLD,
        "window_vs_summed_correlation": corr,
        "window_effect_mean": avg(windowVsSum.map(\.0)), "summed_single_effect_mean": avg(windowVsSum.map(\.1)),
    ]
    out["ioi"] = try ioiHeads(m, path: ioiPath, prompts: ioiPrompts, svgDir: svgDir)
    return out
}

/// IOI: per-head patching of `attn.hook_z` (all positions) with symmetric name swaps at S2, logit difference IO − S.
func ioiHeads(_ m: ModelFile, path: String, prompts n: Int, svgDir: String?) throws -> [String: Any] {
    let model = m.model, tok = m.tokenizer, c = model.config
    guard let data = FileManager.default.contents(atPath: path),
          let list = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return ["error": "unreadable"] }
    var sum = [[Double]](repeating: [Double](repeating: 0, count: c.layers), count: c.heads)
    var used = 0, correct = 0, antisymmetry: [Double] = []
    var example: TraceResult?
    for rec in list where used < n {
        guard let prompt = rec["prompt"] as? String, let io = rec["answer"] as? String else { continue }
        // The subject S is the name repeated before the final clause; swap its second occurrence for IO.
        let words = prompt.split(separator: " ").map(String.init)
        let names = words.map { $0.trimmingCharacters(in: .punctuationCharacters) }
        guard let s = names.first(where: { n in n != io && names.filter { $0 == n }.count == 2 && n.first?.isUppercase == true }),
              let r = prompt.range(of: " \(s) ", options: .backwards) else { continue }
        let corrupted = prompt.replacingCharacters(in: r, with: " \(io) ")
        guard tok.encode(corrupted).count == tok.encode(prompt).count else { continue }
        let ids = tok.encode(prompt)
        let logits = try model.forward([ids]).row(0)
        let ioID = tok.encode(" " + io)[0], sID = tok.encode(" " + s)[0]
        guard logits[ioID] > logits[sID] else { used += 0; continue }
        correct += 1
        let tracer = try Tracer(model: model, tokenizer: tok, prompt: prompt, subject: nil, corruption: .prompt(corrupted),
                                target: " " + io)
        let res = try tracer.trace(TraceSettings(kind: .heads, metric: .logitDiff), foil: sID)
        antisymmetry.append(res.corrupted / res.clean)
        for h in 0..<c.heads { for l in 0..<c.layers { sum[h][l] += res.normalized[h][l] } }
        if example == nil { example = res }
        used += 1
    }
    let mean = sum.map { $0.map { $0 / Double(max(used, 1)) } }
    let flat = mean.joined()
    let mu = flat.reduce(0, +) / Double(flat.count)
    let sd = (flat.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(flat.count)).squareRoot()
    var flagged: [[String: Any]] = []
    for h in 0..<c.heads { for l in 0..<c.layers where abs(mean[h][l] - mu) > 2 * sd {
        flagged.append(["layer": l, "head": h, "effect": mean[h][l]])
    } }
    flagged.sort { abs($0["effect"] as! Double) > abs($1["effect"] as! Double) }
    if let svgDir, var ex = example {
        ex.scores = mean.map { $0.map { ex.corrupted + $0 * (ex.clean - ex.corrupted) } }
        try Heatmap.svg(ex, title: "IOI: mean over \(used) prompts, per-head patching (logit diff IO − S)")
            .write(toFile: "\(svgDir)/ioi-heads.svg", atomically: true, encoding: .utf8)
    }
    return ["prompts_used": used, "mean": mu, "sd": sd, "heads_beyond_2sd": flagged,
            "corrupted_over_clean_logit_diff": antisymmetry.reduce(0, +) / Double(max(antisymmetry.count, 1))]
}
