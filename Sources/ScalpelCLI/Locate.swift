import ArgumentParser
import Foundation
import Interp
import Llama

struct LocateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "locate",
        abstract: "Find the layer whose MLP carries facts: trace many facts and average the effect at the last subject token.")
    @OptionGroup var model: ModelOptions
    @Option(help: "A JSON array of facts with prompt, subject and attribute/answer (e.g. ROME's known_1000.json); default: a built-in set.")
    var dataset: String?
    @Option(help: "Keep only facts of this relation id (e.g. P30).") var relation: String?
    @Option(parsing: .unconditional, help: "Trace at most this many facts.") var limit: Int?
    @Option(help: "Component: mlp (ROME) or attn / resid.") var kind: TraceKind = .mlp
    @Option(parsing: .unconditional, help: "Layers restored together.") var window: Int = 10
    @Option(parsing: .unconditional, help: "Noise samples per fact.") var samples: Int = 10
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "exact traces or attribution (first-order estimates, one backward pass per fact).")
    var method: TraceMethod = .exact
    @Flag(help: "Print JSON.") var json = false

    /// Options are checked before anything is loaded.
    func validate() throws {
        if let limit { try requireInt(limit, "--limit", in: 1...Int.max) }
        try requireInt(window, "--window", in: 1...OptionLimits.samples)
        try requireInt(samples, "--samples", in: 1...OptionLimits.samples)
    }

    func run() throws {
        let m = try model.open()
        var facts = try dataset.map { try KnownFact.load(path: $0) } ?? KnownFact.builtIn
        if let relation { facts = facts.filter { $0.relation == relation } }
        if let limit { facts = Array(facts.prefix(limit)) }
        guard !facts.isEmpty else { throw OptionError("no facts to trace (the dataset, --relation and --limit leave none)") }
        let bar = ProgressBar(label: "locate", quiet: json)
        let r = try Locator.run(model: m.model, tokenizer: m.tokenizer, facts: facts, kind: kind, window: window,
                                samples: samples, seed: seed, method: method, progress: { bar.update($0, $1, unit: "facts") })
        bar.finish()
        if json {
            return try printJSON([
                "recommended_layer": r.recommendedLayer, "kind": r.kind.rawValue, "method": method.rawValue, "window": r.window,
                "facts_tried": r.factsTried, "facts_used": r.factsUsed.count, "seconds": r.seconds,
                "last_subject_effect": r.lastSubjectEffect.map { $0.isNaN ? NSNull() as Any : $0 as Any },
                "bucket_effects": Dictionary(uniqueKeysWithValues: zip(TokenBucket.allCases.map(\.rawValue),
                    r.bucketEffects.map { $0.map { $0.isNaN ? NSNull() as Any : $0 as Any } })),
            ])
        }
        print("traced \(r.factsUsed.count) of \(r.factsTried) facts (the ones the model answers correctly), "
              + "\(r.kind.rawValue) window \(r.window), \(samples) noise samples, \(String(format: "%.0f", r.seconds)) s")
        print("average indirect effect at the last subject token, by layer:")
        let maxEffect = r.lastSubjectEffect.filter { !$0.isNaN }.max() ?? 1
        for (l, e) in r.lastSubjectEffect.enumerated() {
            let bar = String(repeating: "█", count: max(0, Int((e / max(maxEffect, 1e-9)) * 40)))
            print(String(format: "  layer %2d  %+.4f  ", l, e) + bar)
        }
        print("recommended edit layer: \(r.recommendedLayer)")
    }
}
