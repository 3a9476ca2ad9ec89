import Foundation
import Llama

/// ROME's CounterFact evaluation: each request edited into the model (alone, or accumulating), scored before and
/// after, with efficacy / paraphrase / neighbourhood scores and magnitudes and their harmonic mean S.
public struct CounterFactSummary: Codable, Sendable {
    public var records: Int
    /// Scores in percent (ES, PS, NS: fraction of prompts where the right answer wins; S: harmonic mean).
    public var efficacy: Double, paraphrase: Double, neighborhood: Double, score: Double
    /// Magnitudes in percent (mean probability differences).
    public var efficacyMagnitude: Double, paraphraseMagnitude: Double, neighborhoodMagnitude: Double

    /// Summary of per-record scores (each record's fractions averaged, as ROME does).
    public init(_ scores: [EditScores]) {
        func avg(_ f: (EditScores) -> Double) -> Double {
            let xs = scores.map(f).filter { !$0.isNaN }
            return xs.isEmpty ? .nan : 100 * xs.reduce(0, +) / Double(xs.count)
        }
        records = scores.count
        efficacy = avg(\.efficacy); paraphrase = avg(\.paraphrase); neighborhood = avg(\.neighborhoodScore)
        efficacyMagnitude = avg(\.efficacyMagnitude); paraphraseMagnitude = avg(\.paraphraseMagnitude)
        neighborhoodMagnitude = avg(\.neighborhoodMagnitude)
        let parts = [efficacy, paraphrase, neighborhood]
        score = parts.contains { $0.isNaN || $0 <= 0 } ? 0 : 3 / parts.reduce(0) { $0 + 1 / $1 }
    }
}

/// One evaluated record.
public struct CounterFactRecord: Sendable {
    public var request: EditRequest
    public var before: EditScores
    public var after: EditScores
    public var seconds: Double
    public var steps: Int
}

public enum CounterFactEvaluation {
    /// Runs the evaluation.
    /// - Parameters:
    ///   - sequential: keep every edit (edits accumulate) instead of restoring the model after each one.
    ///   - progress: (records done, total).
    public static func run(session: EditSession, requests: [EditRequest], hparams: ROMEHyperParameters,
                           sequential: Bool = false, log: (String) -> Void = { _ in },
                           progress: ((Int, Int) -> Void)? = nil) throws -> (records: [CounterFactRecord], before: CounterFactSummary,
                                                                              after: CounterFactSummary) {
        let m = session.model.model
        let original = m.weights.values(.wDown(hparams.layer))
        defer { if !sequential { m.weights.setValues(.wDown(hparams.layer), original) } }
        _ = try session.statistics(layer: hparams.layer, log: log)
        _ = try session.contexts()
        var records: [CounterFactRecord] = []
        for (i, r) in requests.enumerated() {
            let t0 = Date()
            let o = try session.edit(r, hparams: hparams)
            records.append(CounterFactRecord(request: r, before: o.before, after: o.after,
                                             seconds: Date().timeIntervalSince(t0), steps: o.result.losses.count))
            if !sequential { m.weights.setValues(.wDown(hparams.layer), original) }
            progress?(i + 1, requests.count)
        }
        return (records, CounterFactSummary(records.map(\.before)), CounterFactSummary(records.map(\.after)))
    }

    /// Fluency: weighted n-gram entropy of greedy continuations of `prompts` (ROME's measure), and the perplexity of
    /// `heldOut` token chunks.
    public static func fluency(model: LlamaModel, tokenizer: Tokenizer, prompts: [String], tokens: Int = 40,
                               heldOut: [[Int]]) throws -> (entropy: Double, perplexity: Double) {
        var entropies: [Double] = []
        if !prompts.isEmpty {
            let gen = try model.generateBatch(prompts.map { tokenizer.encode($0) }, maxTokens: tokens,
                                              sampler: Sampler(temperature: 1, topK: 5), seed: 7)
            entropies = gen.map { EditEvaluator.ngramEntropy(tokenizer.decode($0)) }
        }
        let h = entropies.isEmpty ? .nan : entropies.reduce(0, +) / Double(entropies.count)
        let ppl = heldOut.isEmpty ? .nan : try EditEvaluator.perplexity(model: model, chunks: heldOut)
        return (h, ppl)
    }
}
