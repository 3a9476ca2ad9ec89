import ArgumentParser
import Foundation
import Editing
import Llama

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Forensics on two checkpoints of one model: which matrices changed, the rank of each change, and for "
            + "low-rank edits of an MLP down projection the subjects they rewrite and what the model now says about them.",
        discussion: """
            A and B are .gguf files, Scalpel .h5 stores or safetensors folders of the same architecture. \
            Every parameter is compared bitwise; for matrices that differ the numerical rank of Δ = B − A is the \
            number of singular values above max(--atol · ‖W‖, --rtol · σ₁). For low-rank changes of \
            blk.L.ffn_down.weight (ROME-style edits), candidate subjects are scored by ‖ΔW·k‖ / ‖W·k‖, k being the \
            subject's MLP key at layer L (its last token, averaged over a few contexts), and the best are probed \
            under A and B.
            """)

    @Argument(help: "The original checkpoint.") var a: String
    @Argument(help: "The checkpoint to compare with it.") var b: String
    @Option(help: ArgumentHelp("Candidate subjects: a JSON array of strings or of objects with \"subject\" (known_1000, "
                               + "CounterFact), JSON Lines, or one subject per line. Repeatable.", valueName: "file"))
    var candidates: [String] = []
    @Flag(help: "Use only the --candidates files, not the built-in subjects.") var noBuiltinCandidates = false
    @Option(parsing: .unconditional, help: "Candidate subjects listed per edit.") var top: Int = 10
    @Option(parsing: .unconditional, help: "Leading subjects per edit probed under A and B (0: none).") var probe: Int = 3
    @Option(parsing: .unconditional, help: "Tokens of greedy continuation per probe.") var continuation: Int = 6
    @Option(parsing: .unconditional, help: "Singular values ≤ rtol · σ₁ are noise.") var rtol: Double = 1e-3
    @Option(parsing: .unconditional, help: "Singular values ≤ atol · ‖W‖_F are noise (float32 rounding).") var atol: Double = 1e-6
    @Flag(help: "Skip the subject forensics.") var noForensics = false
    @Flag(help: "List identical parameters too.") var all = false
    @Flag(help: "Include the singular vectors of low-rank changes in the JSON.") var vectors = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        try requireInt(top, "--top", in: 1...OptionLimits.samples)
        try requireInt(probe, "--probe", in: 0...OptionLimits.samples)
        try requireInt(continuation, "--continuation", in: 0...OptionLimits.tokens)
        try requireReal(rtol, "--rtol", atLeast: 0)
        try requireReal(atol, "--atol", atLeast: 0)
    }

    func run() throws {
        if !json { note("loading \(a)") }
        let ma = try ModelFile.open(a)
        if !json { note("loading \(b)") }
        let mb = try ModelFile.open(b)
        let tol = DiffTolerance(relative: rtol, absolute: atol)
        let bar = ProgressBar(label: "compare", quiet: json)
        let report = try CheckpointDiff.compare(ma, mb, tolerance: tol) { bar.update($0, $1, unit: "tensors") }
        bar.finish()

        var forensics: [EditForensics] = []
        var candidateCount = 0
        if !noForensics && !SubjectForensics.downProjectionEdits(report).isEmpty {
            let extra = try candidates.flatMap { try SubjectCandidates.load(path: $0) }
            let subjects = SubjectCandidates.standard(extra: extra, builtIn: !noBuiltinCandidates)
            candidateCount = subjects.count
            guard !subjects.isEmpty else { throw OptionError("no candidate subjects (the --candidates files are empty and --no-builtin-candidates is set)") }
            var options = ForensicsOptions()
            options.top = top
            options.probedSubjects = probe
            options.continuationTokens = continuation
            let keysBar = ProgressBar(label: "subject keys", quiet: json), probeBar = ProgressBar(label: "probe", quiet: json)
            forensics = try SubjectForensics.analyze(report, a: ma, b: mb, candidates: subjects, options: options) { stage, done, total in
                (stage == "keys" ? keysBar : probeBar).update(done, total, unit: stage == "keys" ? "sequences" : "models")
            }
            keysBar.finish()
            if probe > 0 { probeBar.finish() }
        }
        if json { return try printJSON(reportJSON(report, forensics, candidates: candidateCount)) }
        printReport(report, forensics, candidates: candidateCount)
    }

    // MARK: Text

    func printReport(_ r: DiffReport, _ forensics: [EditForensics], candidates: Int) {
        print("A  \(r.pathA)")
        print("B  \(r.pathB)")
        for n in r.notes { print("note: \(n)") }
        let changed = r.changed
        let kinds = Dictionary(grouping: changed, by: \.kind).mapValues(\.count)
        let summary = [ParameterDiff.Kind.lowRank, .highRank, .negligible, .nonFinite, .vector].compactMap { k -> String? in
            guard let n = kinds[k] else { return nil }
            let what = k == .vector ? "vector" : "\(k.rawValue) matri\(n == 1 ? "x" : "ces")"
            return "\(n) \(what)\(k == .vector && n != 1 ? "s" : "")"
        }
        print("\(r.parameters.count) parameters compared in \(String(format: "%.1f", r.seconds)) s: "
              + (changed.isEmpty ? "the checkpoints hold identical weights"
                 : "\(changed.count) changed (\(summary.joined(separator: ", "))), \(r.parameters.count - changed.count) identical"))
        let rows = all ? r.parameters : changed
        if !rows.isEmpty {
            print("")
            print(pad("parameter", 30) + pad("shape", 12) + lpad("max|Δ|", 10) + lpad("‖Δ‖/‖A‖", 10) + lpad("rank", 11)
                  + lpad("σ₁", 10) + lpad("σ₂", 10) + lpad("σ₃", 10) + "  kind")
            for d in rows {
                let shape = d.shape.map(String.init).joined(separator: "×")
                var line = pad(d.name, 30) + pad(shape, 12)
                if d.identical {
                    print(line + lpad("0", 10) + lpad("0", 10) + lpad("-", 11) + "  identical")
                    continue
                }
                line += lpad(sci(d.maxAbsDelta), 10) + lpad(sci(d.relativeNorm), 10)
                if let s = d.spectrum {
                    line += lpad("\(s.rank)/\(s.fullRank)", 11)
                    for i in 0..<3 { line += lpad(i < s.singularValues.count ? sci(s.singularValues[i]) : "-", 10) }
                } else {
                    line += lpad("-", 11) + lpad("-", 10) + lpad("-", 10) + lpad("-", 10)
                }
                print(line + "  " + d.kind.rawValue)
            }
        }
        let analysable = Set(SubjectForensics.downProjectionEdits(r).map(\.parameter))
        for d in r.lowRank where !analysable.contains(d.parameter) {
            print("\n\(d.name): rank-\(d.spectrum!.rank) change; subject forensics covers MLP down projections "
                  + "(blk.L.ffn_down.weight) only")
        }
        for f in forensics { printForensics(f, candidates: candidates) }
    }

    func printForensics(_ f: EditForensics, candidates: Int) {
        print("\n\(f.parameter.ggufName): rank-\(f.rank) edit of the MLP down projection at layer \(f.layer)")
        print("  subjects whose keys it moves most (\(f.candidatesScored) of \(candidates) candidates scored; "
              + "score = ‖ΔW·k‖ / ‖W·k‖, alignment = cos(k, edited key space)):")
        let width = min(40, (f.top.map { $0.subject.count }.max() ?? 10) + 2)
        for (i, s) in f.top.enumerated() {
            print(String(format: "  %3d. ", i + 1) + pad(s.subject, width)
                  + String(format: "%8.4f   alignment %.3f", s.relativeChange, s.alignment))
        }
        if f.top.count >= 2, f.top[1].relativeChange > 0, f.top[0].relativeChange >= 2 * f.top[1].relativeChange {
            print(String(format: "  → %@ stands out: %.1f× the runner-up's score", f.top[0].subject,
                         f.top[0].relativeChange / f.top[1].relativeChange))
        }
        guard !f.probes.isEmpty else { return }
        print("  what the model says, A → B:")
        let pw = min(48, (f.probes.map { $0.prompt.count }.max() ?? 20) + 3)
        for p in f.probes {
            let ta = p.topA[0], tb = p.topB[0]
            let mark = p.changed ? "≠" : "="
            var line = "  \(mark) " + pad(show(p.prompt), pw)
            line += show(ta.text) + String(format: " %.2f", ta.probability) + " → " + show(tb.text)
                + String(format: " %.2f", tb.probability)
            if ta.id != tb.id { line += String(format: "   (B gives %@ %.2f)", show(ta.text), p.probabilityBOfTopA) }
            print(line)
            if p.continuationA != p.continuationB {
                print("      A: " + show(p.continuationA))
                print("      B: " + show(p.continuationB))
            } else if !p.continuationA.isEmpty {
                print("      A, B: " + show(p.continuationA))
            }
        }
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? " " + s : String(repeating: " ", count: n - s.count) + s }
    func sci(_ x: Double) -> String { x.isFinite ? String(format: "%.2e", x) : "\(x)" }

    // MARK: JSON

    func reportJSON(_ r: DiffReport, _ forensics: [EditForensics], candidates: Int) -> [String: Any] {
        func num(_ x: Double) -> Any { x.isFinite ? x : NSNull() }
        let t = r.tolerance
        let changed: [[String: Any]] = r.changed.map { d in
            var o: [String: Any] = [
                "name": d.name, "layer": d.layer.map { $0 as Any } ?? NSNull(), "shape": d.shape, "kind": d.kind.rawValue,
                "changed_elements": d.changedElements, "max_abs_delta": num(d.maxAbsDelta), "norm_a": num(d.normA),
                "norm_b": num(d.normB), "norm_delta": num(d.normDelta), "relative_norm": num(d.relativeNorm),
            ]
            if let s = d.spectrum {
                var sj: [String: Any] = [
                    "rank": s.rank, "full_rank": s.fullRank, "threshold": num(s.threshold),
                    "singular_values": s.singularValues.map(num), "energy_in_rank": num(s.energyInRank),
                    "method": s.method.rawValue,
                ]
                if vectors && s.hasVectors { sj["left"] = s.left; sj["right"] = s.right }
                o["spectrum"] = sj
            }
            return o
        }
        let edits: [[String: Any]] = forensics.map { f in
            [
                "parameter": f.parameter.ggufName, "layer": f.layer, "rank": f.rank, "candidates_scored": f.candidatesScored,
                "top": f.top.map { s -> [String: Any] in
                    ["subject": s.subject, "score": num(s.relativeChange), "change_norm": num(s.changeNorm),
                     "output_norm": num(s.outputNorm), "alignment": num(s.alignment)]
                },
                "probes": f.probes.map { p -> [String: Any] in
                    func side(_ top: [TokenProbability], _ cont: String) -> [String: Any] {
                        ["top": top.map { ["id": $0.id, "token": $0.text, "prob": num($0.probability)] }, "continuation": cont]
                    }
                    return ["subject": p.subject, "prompt": p.prompt, "a": side(p.topA, p.continuationA),
                            "b": side(p.topB, p.continuationB), "p_b_of_top_a": num(p.probabilityBOfTopA),
                            "p_a_of_top_b": num(p.probabilityAOfTopB), "changed": p.changed]
                },
            ]
        }
        return [
            "a": r.pathA, "b": r.pathB, "identical": r.isIdentical, "seconds": r.seconds, "notes": r.notes,
            "parameters": r.parameters.count, "identical_count": r.parameters.count - r.changed.count,
            "tolerance": ["relative": t.relative, "absolute": t.absolute],
            "changed": changed, "candidates": candidates, "edits": edits,
        ]
    }
}
