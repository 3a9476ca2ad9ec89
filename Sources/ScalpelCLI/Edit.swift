import ArgumentParser
import Foundation
import Editing
import Interp
import Llama

struct EditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edit",
        abstract: "Rewrite facts with ROME: a rank-one update of one MLP's output matrix per request.",
        discussion: """
            Each edit is appended to the edit log of the model store (/edits), one atomic transaction per edit; the \
            base weights are never modified, and `scalpel log`, `revert`, `reapply` and `audit` work on the log. \
            --model M.h5 records in place; --out NEW.h5 records in a new copy (required for a .gguf, which is \
            imported first). --dry-run computes and reports without writing anything.
            """)
    @OptionGroup var model: ModelOptions
    @Argument(help: "Edit request files (JSON object, array or JSON Lines; CounterFact records accepted).")
    var requests: [String] = []
    @Option(parsing: .unconditional, help: "The layer to edit, or auto (run locate on built-in facts).") var layer: String = "auto"
    @Option(help: "Key statistics file (default: beside the model, computed if missing); an existing file must hold the layer unless --corpus is given.")
    var stats: String?
    @Option(help: "Corpus files for new statistics (default: text sampled from the model).") var corpus: [String] = []
    @Option(parsing: .unconditional, help: "Texts sampled from the model for new statistics.") var corpusTexts: Int = 800
    @OptionGroup var rome: ROMEOptions
    @Option(help: "Record the edits in this new .h5 store (a copy of the model's store, or the imported .gguf) instead of in place.")
    var out: String?
    @Flag(help: "Compute and report the edits without recording them.") var dryRun = false
    @OptionGroup var lockOptions: LockOptions
    @OptionGroup var force: ForceOption
    @Flag(help: "Print JSON.") var json = false

    /// Options are checked before anything is loaded.
    func validate() throws {
        try require(!requests.isEmpty, "give at least one edit request file (JSON object, array or JSON Lines)")
        if layer != "auto" {
            guard let l = Int(layer) else { throw OptionError("--layer must be a layer number (0, 1, …) or auto, got \"\(layer)\"") }
            try requireInt(l, "--layer", in: 0...Int.max)
        }
        try requireInt(corpusTexts, "--corpus-texts", in: 1...OptionLimits.texts)
        if let out { try require(["h5", "hdf5"].contains((out as NSString).pathExtension.lowercased()),
                                 "--out \(out): edits are recorded in a .h5 store (name it NAME.h5)") }
    }

    func run() throws {
        let modelPath = try model.input()
        let inputs = [modelPath] + (requests + corpus + [stats].compactMap { $0 }).map(InputPath.init)
        // --out: a new store; never the model itself, and an existing file only with --force.
        let outPath = try out.map { try OutputPath($0, force: force.force, inputs: inputs) }
        let list = try requests.flatMap { try EditRequest.load(path: $0) }
        let path = modelPath.path
        let isStore = ["h5", "hdf5"].contains((path as NSString).pathExtension.lowercased())
        if !dryRun && !isStore && out == nil { throw EditingError.storeRequired(path: path) }
        // The target's lock is held from reading its log (opening the model) to the last commit.
        let lock = dryRun ? nil : try lockOptions.lock(out ?? path)
        let m = try ModelFile.open(path)
        for r in list { try r.validate(tokenizer: m.tokenizer) }
        let writer = dryRun ? nil : try EditLogWriter(model: m, out: outPath?.path, toolVersion: ScalpelVersion.string, lock: lock)
        if !json, !m.appliedEdits.isEmpty {
            note("\(path): effective model = base + \(m.appliedEdits.count) active edit\(m.appliedEdits.count == 1 ? "" : "s") (\(m.appliedEdits.joined(separator: ", ")))")
        }
        let layerIndex = try resolveLayer(m)
        var plan = StatisticsPlan(corpusFiles: corpus, path: stats)
        plan.sampling.texts = corpusTexts
        let session = EditSession(model: m, plan: plan)
        session.toolVersion = ScalpelVersion.string
        let h = try rome.hyperParameters(layer: layerIndex)
        var outputs: [[String: Any]] = []
        for r in list {
            let bar = ProgressBar(label: "edit \(r.subject)", quiet: json)
            let (o, entry) = try session.editAndRecord(r, hparams: h, writer: writer, log: { if !json { note($0) } },
                                                       progress: { bar.update($1, $2, unit: $0) })
            bar.finish()
            if !json { printOutcome(o) }
            var item = outcomeJSON(o)
            if let entry, let writer {
                item["id"] = entry.id; item["store"] = writer.path; item["entry_sha256"] = entry.entrySHA256 ?? ""
                item["weight_sha256_before"] = entry.weightSHA256Before; item["weight_sha256_after"] = entry.weightSHA256After
                if !json {
                    print("  logged as \(entry.id) in \(writer.path) (\(entry.parameter) sha256 "
                          + "\(entry.weightSHA256Before.prefix(12))… → \(entry.weightSHA256After.prefix(12))…)")
                }
            }
            outputs.append(item)
        }
        // The head digest after the last commit: record it outside the store for `scalpel audit --expect`.
        let digest = try writer.flatMap { w in w.committed.isEmpty ? nil : try HeadDigest.compute(path: w.path) }
        if json {
            var d: [String: Any] = ["layer": layerIndex, "edits": outputs]
            if let writer { d["store"] = writer.path; d["active"] = writer.activeIDs }
            if let digest { d["head_digest"] = digest.hex }
            try printJSON(d)
        } else if dryRun {
            print("\ndry run: nothing was recorded")
        } else if let digest {
            print("\nhead digest \(digest.hex)  (keep it; `scalpel audit --expect` checks the store against it)")
        }
    }

    func resolveLayer(_ m: ModelFile) throws -> Int {
        if layer != "auto" {
            let l = Int(layer)!  // validate()
            try EditRequest.requireLayer(l, layers: m.config.layers)
            return l
        }
        let bar = ProgressBar(label: "locate", quiet: json)
        let r = try Locator.run(model: m.model, tokenizer: m.tokenizer, facts: KnownFact.builtIn, samples: 5,
                                progress: { bar.update($0, $1, unit: "facts") })
        bar.finish()
        if !json { note("locate: layer \(r.recommendedLayer) has the largest MLP effect at the last subject token (\(r.factsUsed.count) facts)") }
        return r.recommendedLayer
    }

    func printOutcome(_ o: EditOutcome) {
        let r = o.request
        print("\n\(r.subject): \(r.targetTrue ?? "?") → \(r.targetNew)   (layer \(o.result.layer), \(o.result.losses.count) steps, "
              + String(format: "loss %.3f → %.3f, %.1f s)", o.result.losses.first ?? 0, o.result.losses.last ?? 0, o.result.seconds))
        func line(_ tag: String, _ b: EditScores.Pair, _ a: EditScores.Pair) {
            print(String(format: "  %-11@ p(new) %.3f → %.3f   p(true) %.3f → %.3f   ", tag, b.probNew, a.probNew,
                         b.probTrue.isFinite ? b.probTrue : 0, a.probTrue.isFinite ? a.probTrue : 0) + show(a.prompt))
        }
        for (b, a) in zip(o.before.rewrite, o.after.rewrite) { line("prompt", b, a) }
        for (b, a) in zip(o.before.paraphrases, o.after.paraphrases) { line("paraphrase", b, a) }
        for (i, (b, a)) in zip(o.before.neighborhood, o.after.neighborhood).enumerated() {
            line("neighbour", b, a)
            print("              top answer \(show(o.neighborAnswersBefore[i])) → \(show(o.neighborAnswersAfter[i]))")
        }
    }

    func outcomeJSON(_ o: EditOutcome) -> [String: Any] {
        func pairs(_ xs: [EditScores.Pair]) -> [[String: Any]] {
            xs.map { ["prompt": $0.prompt, "p_new": $0.probNew, "p_true": $0.probTrue.isFinite ? $0.probTrue : NSNull()] }
        }
        return ["request": EditEntry.requestObject(o.request), "layer": o.result.layer, "losses": o.result.losses.map(Double.init),
                "seconds": o.result.seconds, "delta_norm": Double(o.result.deltaNorm),
                "before": ["rewrite": pairs(o.before.rewrite), "paraphrases": pairs(o.before.paraphrases),
                           "neighborhood": pairs(o.before.neighborhood)],
                "after": ["rewrite": pairs(o.after.rewrite), "paraphrases": pairs(o.after.paraphrases),
                          "neighborhood": pairs(o.after.neighborhood)],
                "neighbor_answers_before": o.neighborAnswersBefore, "neighbor_answers_after": o.neighborAnswersAfter]
    }
}
