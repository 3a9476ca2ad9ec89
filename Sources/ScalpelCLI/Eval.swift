import ArgumentParser
import Foundation
import Editing
import Llama

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "CounterFact evaluation of ROME: efficacy, paraphrase, neighbourhood (scores, magnitudes, S).")
    @OptionGroup var model: ModelOptions
    @Option(help: "Edit requests (CounterFact JSON, a JSON array or JSON Lines).") var dataset: String
    @Option(parsing: .unconditional, help: "Evaluate the first N records.") var limit: Int?
    @Option(parsing: .unconditional, help: "The layer to edit.") var layer: Int
    @Flag(help: "Keep every edit (edits accumulate) instead of evaluating each on a fresh model.") var sequential = false
    @Option(help: "Key statistics file (default: beside the model, computed if missing); an existing file must hold the layer unless --corpus is given.")
    var stats: String?
    @Option(help: "Corpus files for new statistics (default: text sampled from the model).") var corpus: [String] = []
    @OptionGroup var rome: ROMEOptions
    @Option(help: "Context seeds for k*/v* prefixes (comma-separated; empty = ROME's unseeded samples).")
    var contextSeeds: String?
    @Option(help: "Held-out text file for perplexity before/after (first 20 chunks of 128 tokens).") var heldOut: String?
    @Option(help: "Write per-record results as JSON Lines.") var records: String?
    @OptionGroup var force: ForceOption
    @Flag(help: "Print JSON.") var json = false

    /// Options are checked before anything is loaded.
    func validate() throws {
        if let limit { try requireInt(limit, "--limit", in: 1...Int.max) }
        try requireInt(layer, "--layer", in: 0...Int.max)
    }

    func run() throws {
        let recordsPath = try records.map { try OutputPath($0, force: force.force, inputs: [try model.input(), InputPath(dataset)]).path }
        var list = try EditRequest.load(path: dataset)
        if let limit { list = Array(list.prefix(limit)) }
        guard !list.isEmpty else { throw OptionError("\(dataset): no records to evaluate") }
        let m = try model.open()
        for r in list { try r.validate(tokenizer: m.tokenizer) }
        try EditRequest.requireLayer(layer, layers: m.config.layers)
        let session = EditSession(model: m, plan: StatisticsPlan(corpusFiles: corpus, path: stats))
        session.toolVersion = ScalpelVersion.string
        if let contextSeeds { session.contextSeeds = contextSeeds.isEmpty ? [] : contextSeeds.split(separator: ",").map(String.init) }
        let h = try rome.hyperParameters(layer: layer)
        var heldOutChunks: [[Int]] = []
        if let heldOut {
            let text = try String(contentsOfFile: heldOut, encoding: .utf8)
            let ids = m.tokenizer.encode(String(text.prefix(200_000)))
            heldOutChunks = stride(from: 0, to: min(ids.count, 20 * 128), by: 128).map { Array(ids[$0..<min($0 + 128, ids.count)]) }
        }
        let fluencyPrompts = list.prefix(20).map(\.filledPrompt)
        let fBefore = try CounterFactEvaluation.fluency(model: m.model, tokenizer: m.tokenizer, prompts: fluencyPrompts, heldOut: heldOutChunks)
        let bar = ProgressBar(label: "eval", quiet: json)
        let t0 = Date()
        let r = try CounterFactEvaluation.run(session: session, requests: list, hparams: h, sequential: sequential,
                                              log: { if !json { note($0) } }, progress: { bar.update($0, $1, unit: "edits") })
        bar.finish()
        let seconds = Date().timeIntervalSince(t0)
        // Fluency after edits is measured in sequential runs, where the model holds every edit; one edit at a time
        // leaves no edited model behind, so "after" is reported as null rather than a copy of "before".
        let fAfter = sequential ? try CounterFactEvaluation.fluency(model: m.model, tokenizer: m.tokenizer,
                                                                    prompts: fluencyPrompts, heldOut: heldOutChunks) : nil
        if let recordsPath {
            let lines = try r.records.map { rec -> String in
                let d: [String: Any] = ["request": rec.request.json, "seconds": rec.seconds, "steps": rec.steps,
                                        "before": summary(CounterFactSummary([rec.before])), "after": summary(CounterFactSummary([rec.after]))]
                return String(decoding: try JSONSerialization.data(withJSONObject: d, options: [.sortedKeys]), as: UTF8.self)
            }
            try (lines.joined(separator: "\n") + "\n").write(toFile: recordsPath, atomically: true, encoding: .utf8)
        }
        let mean = r.records.map(\.seconds).reduce(0, +) / Double(r.records.count)
        if json {
            return try printJSON(["records": list.count, "layer": layer, "sequential": sequential, "seconds": seconds,
                                  "seconds_per_edit": mean, "unedited": summary(r.before), "edited": summary(r.after),
                                  "fluency_entropy_before": nan(fBefore.entropy),
                                  "fluency_entropy_after": fAfter.map { nan($0.entropy) } ?? NSNull(),
                                  "perplexity_before": nan(fBefore.perplexity),
                                  "perplexity_after": fAfter.map { nan($0.perplexity) } ?? NSNull()])
        }
        print("CounterFact, \(list.count) records, layer \(layer), \(sequential ? "sequential" : "one edit at a time"), "
              + String(format: "%.1f s per edit", mean))
        print("            ES     PS     NS      S     EM     PM     NM")
        for (name, s) in [("unedited", r.before), ("ROME", r.after)] {
            print(String(format: "%-9@ %6.1f %6.1f %6.1f %6.1f %6.1f %6.1f %6.1f", name, s.efficacy, s.paraphrase,
                         s.neighborhood, s.score, s.efficacyMagnitude, s.paraphraseMagnitude, s.neighborhoodMagnitude))
        }
        if let fAfter {
            print(String(format: "fluency (n-gram entropy) %.3f → %.3f, perplexity %.2f → %.2f", fBefore.entropy, fAfter.entropy,
                         fBefore.perplexity, fAfter.perplexity))
        } else {
            print(String(format: "fluency (n-gram entropy) of the unedited model %.3f, perplexity %.2f "
                         + "(after edits: run with --sequential)", fBefore.entropy, fBefore.perplexity))
        }
    }

    func nan(_ x: Double) -> Any { x.isNaN ? NSNull() : x }

    func summary(_ s: CounterFactSummary) -> [String: Any] {
        ["ES": nan(s.efficacy), "PS": nan(s.paraphrase), "NS": nan(s.neighborhood), "S": nan(s.score),
         "EM": nan(s.efficacyMagnitude), "PM": nan(s.paraphraseMagnitude), "NM": nan(s.neighborhoodMagnitude)]
    }
}
