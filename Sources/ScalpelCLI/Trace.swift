import ArgumentParser
import Foundation
import Editing
import Interp
import Llama

extension TraceKind: ExpressibleByArgument {}
extension MetricKind: ExpressibleByArgument {}
extension PatchDirection: ExpressibleByArgument {}
extension TraceMethod: ExpressibleByArgument {}

struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Causal tracing: restore one component at a time in a corrupted run and measure the answer.",
        discussion: """
        --kind all runs ROME's three panels (resid, mlp and attn with --window, default 10 for mlp/attn).
        Scores are raw metric values; the SVG and JSON also carry them normalized (clean = 1, corrupted = 0).
        """)
    @OptionGroup var model: ModelOptions
    @Option(help: "The clean prompt.") var prompt: String
    @Option(help: "The subject inside the prompt (noised for --corruption noise).") var subject: String?
    @Option(help: "The answer to measure (default: the clean run's most likely token).") var target: String?
    @Option(help: "noise (Gaussian on the subject's embeddings) or str (a corrupted prompt of the same length).")
    var corruption: String = "noise"
    @Option(help: "The corrupted prompt, for --corruption str.") var corruptedPrompt: String?
    @Option(parsing: .unconditional, help: "Noise standard deviation ν (default 3 × std of subject-token embeddings).") var noiseStd: Float?
    @Option(help: "A JSON dataset (prompt/subject records) whose subjects set the default ν.") var noiseDataset: String?
    @Option(help: "prob, logit-diff or kl.") var metric: MetricKind = .prob
    @Option(help: "The foil token for logit-diff (default: the corrupted run's answer).") var foil: String?
    @Option(help: "resid, mlp, attn, heads, neurons (attribution only) or all (= resid, mlp, attn).") var kind: String = "all"
    @Option(help: "exact (patch every cell) or attribution (first-order estimates from one backward pass; AtP).")
    var method: TraceMethod = .exact
    @Option(parsing: .unconditional, help: "Attribution: how many top heads × positions (heads) or neurons × positions (neurons) to report.")
    var topK: Int = 20
    @Option(parsing: .unconditional, help: "Attribution: exact patching of the K top-ranked cells and of K random others, side by side.")
    var verify: Int?
    @Flag(help: "Attribution: AtP*'s GradDrop magnitudes (L backward passes), signed by the plain estimate.")
    var graddrop = false
    @Option(parsing: .unconditional, help: "Layers restored together for mlp/attn (ROME: 10).") var window: Int?
    @Option(parsing: .unconditional, help: "Noise samples.") var samples: Int = 10
    @Option(help: "Random seed for the noise.") var seed: UInt64 = 1
    @Option(help: "denoise (restore clean into corrupted) or noise (insert corrupted into clean).")
    var direction: PatchDirection = .denoise
    @Option(help: "Write the results to this HDF5 file.") var out: String?
    @Option(help: "Write the heatmap(s) to this SVG file.") var svg: String?
    @Option(help: "Write an HTML report.") var html: String?
    @OptionGroup var force: ForceOption
    @Flag(help: "Recompute every patched run from scratch (the correctness oracle).") var naive = false
    @Flag(help: "Print JSON.") var json = false

    /// Options are checked before anything is loaded.
    func validate() throws {
        try requirePrompt(prompt)
        try requireInt(samples, "--samples", in: 1...OptionLimits.samples)
        if let noiseStd { try requireReal(noiseStd, "--noise-std", atLeast: 0, open: true) }
        if let window { try requireInt(window, "--window", in: 1...OptionLimits.samples) }
        switch corruption {
        case "noise": try require(subject != nil, "--corruption noise needs --subject")
        case "str", "prompt": try require(corruptedPrompt != nil, "--corruption str needs --corrupted-prompt")
        default: throw OptionError("--corruption must be noise or str, got \"\(corruption)\"")
        }
        try require(kind == "all" || TraceKind(rawValue: kind) != nil, "--kind must be resid, mlp, attn, heads, neurons or all, got \"\(kind)\"")
        try require(kind != "neurons" || method == .attribution, "--kind neurons needs --method attribution")
        try requireInt(topK, "--top-k", in: 1...1_000_000)
        if let verify { try requireInt(verify, "--verify", in: 1...100_000) }
        try require(method == .attribution || (verify == nil && !graddrop), "--verify and --graddrop need --method attribution")
    }

    func run() throws {
        // Outputs: new files (existing ones only with --force), never the model or the noise dataset, all distinct.
        let inputs = [try model.input()] + [noiseDataset].compactMap { $0 }.map(InputPath.init)
        let outPath = try out.map { try OutputPath($0, force: force.force, inputs: inputs) }
        let svgPath = try svg.map { try OutputPath($0, force: force.force, inputs: inputs) }
        let htmlPath = try html.map { try OutputPath($0, force: force.force, inputs: inputs) }
        try OutputPath.requireDistinct([outPath, svgPath, htmlPath].compactMap { $0 })
        let m = try model.open()
        let corr: Corruption
        switch corruption {
        case "noise":
            var std = noiseStd
            if std == nil, let path = noiseDataset {
                let facts = try KnownFact.load(path: path)
                std = 3 * Corruption.embeddingStd(model: m.model, tokenizer: m.tokenizer, subjects: facts.map(\.subject))
            }
            if std == nil, let subject {
                std = 3 * Corruption.embeddingStd(model: m.model, tokenizer: m.tokenizer, subjects: [subject])
            }
            corr = .noise(std: std!, samples: samples, seed: seed)
        case "str", "prompt":
            corr = .prompt(corruptedPrompt!)  // validate()
        default:
            throw OptionError("--corruption must be noise or str")
        }
        let tracer = try Tracer(model: m.model, tokenizer: m.tokenizer, prompt: prompt, subject: subject, corruption: corr,
                                target: target)
        let foilID = try foil.map { f -> Int in
            guard let id = m.tokenizer.encode(f.hasPrefix(" ") ? f : " " + f).first else { throw InterpError.emptyTarget }
            return id
        }
        let kinds: [(TraceKind, Int)]
        switch kind {
        case "all": kinds = [(.resid, 1), (.mlp, window ?? 10), (.attn, window ?? 10)]
        default:
            guard let k = TraceKind(rawValue: kind) else { throw OptionError("--kind must be resid, mlp, attn, heads, neurons or all") }
            kinds = [(k, k == .resid || k == .heads || k == .neurons ? 1 : (window ?? 1))]
        }
        var results: [TraceResult] = []
        for (k, w) in kinds {
            let bar = ProgressBar(label: "trace \(k.rawValue)", quiet: json)
            var r = try tracer.trace(TraceSettings(kind: k, window: w, metric: metric, direction: direction, naive: naive,
                                                   method: method, topK: topK, gradDrop: graddrop),
                                     foil: foilID, progress: { bar.update($0, $1, unit: "cells") })
            bar.finish()
            if let verify, method == .attribution { r = try tracer.verify(r, top: verify, sample: verify, foil: foilID) }
            results.append(r)
        }
        if let out = outPath?.path { try TraceStore.write(results, prompt: prompt, provenance: m.provenance, to: out) }
        let foilText = results.first?.foil.map { m.tokenizer.tokenText($0) }
        if let svg = svgPath?.path {
            let text = results.count == 3 ? Heatmap.threePanel(results, title: prompt, foilText: foilText)
                : Heatmap.svg(results[0], title: prompt, foilText: foilText)
            try text.write(toFile: svg, atomically: true, encoding: .utf8)
        }
        if let html = htmlPath?.path {
            try TraceReport.html(results, prompt: prompt, provenance: m.provenance, foilText: foilText).write(toFile: html, atomically: true, encoding: .utf8)
        }
        if json { return try printJSON(TraceStore.json(results, prompt: prompt)) }
        printSummary(results, tracer: tracer)
    }

    func printSummary(_ results: [TraceResult], tracer: Tracer) {
        guard let first = results.first else { return }
        print("prompt: \(show(prompt))  answer: \(show(first.answerText))")
        print(String(format: "clean %@ = %.4f, corrupted = %.4f", first.settings.metric.rawValue, first.clean, first.corrupted))
        for r in results {
            var best = (score: -Double.infinity, row: 0, layer: 0)
            for (i, row) in r.scores.enumerated() { for (l, v) in row.enumerated() where v > best.score { best = (v, i, l) } }
            guard best.score.isFinite else {
                print("\(r.settings.kind.rawValue.padding(toLength: 6, withPad: " ", startingAt: 0)) window \(r.settings.window): no finite score")
                continue
            }
            let rowName = r.settings.kind == .heads ? "head \(best.row)" : "token \(best.row) \(show(r.tokens[best.row]))"
            print(String(format: "%-6@ window %2d: peak %.4f at layer %d, %@ (%.2f s)%@", r.settings.kind.rawValue,
                         r.settings.window, best.score, best.layer, rowName, r.seconds,
                         r.settings.method == .attribution ? " [attribution estimate]" : ""))
            for c in r.components.prefix(5) {
                let what = r.settings.kind == .heads ? "head" : "neuron"
                print(String(format: "       L%d %@ %d at token %d %@: effect %+.4f", c.layer, what, c.index, c.position,
                             show(r.tokens[c.position]), c.effect))
            }
            if !r.verified.isEmpty {
                print("       verified (row, layer: estimate vs exact):")
                for v in r.verified {
                    print(String(format: "       %@ %3d, %2d: %.4f vs %.4f", v.topRanked ? "top " : "rand", v.row, v.layer,
                                 v.estimate, v.exact))
                }
            }
            if r.settings.kind == .mlp, let s = r.subject {
                let row = r.scores[s.upperBound]
                let l = row.enumerated().max { $0.element < $1.element }!.offset
                print("       peak MLP layer at the last subject token \(show(r.tokens[s.upperBound])): \(l)")
            }
        }
    }
}
