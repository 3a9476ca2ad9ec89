import Foundation
import Llama

/// ROME's CounterFact measures for one request on the current model.
public struct EditScores: Codable, Sendable {
    /// Per prompt: mean negative log-likelihood per token of target_new and of target_true.
    public struct Pair: Codable, Sendable {
        public var prompt: String
        public var nllNew: Double
        public var nllTrue: Double
        public var probNew: Double { exp(-nllNew) }
        public var probTrue: Double { exp(-nllTrue) }
    }
    public var rewrite: [Pair]
    public var paraphrases: [Pair]
    /// Neighbourhood prompts: "true" is the neighbour's own answer, "new" the edit's target.
    public var neighborhood: [Pair]

    /// Efficacy: fraction of rewrite prompts where P(new) > P(true).
    public var efficacy: Double { fraction(rewrite) { $0.nllNew < $0.nllTrue } }
    public var efficacyMagnitude: Double { mean(rewrite) { $0.probNew - $0.probTrue } }
    public var paraphrase: Double { fraction(paraphrases) { $0.nllNew < $0.nllTrue } }
    public var paraphraseMagnitude: Double { mean(paraphrases) { $0.probNew - $0.probTrue } }
    /// Neighbourhood: fraction where the neighbour still prefers its own answer.
    public var neighborhoodScore: Double { fraction(neighborhood) { $0.nllTrue < $0.nllNew } }
    public var neighborhoodMagnitude: Double { mean(neighborhood) { $0.probTrue - $0.probNew } }

    func fraction(_ xs: [Pair], _ ok: (Pair) -> Bool) -> Double {
        xs.isEmpty ? .nan : Double(xs.filter(ok).count) / Double(xs.count)
    }
    func mean(_ xs: [Pair], _ f: (Pair) -> Double) -> Double {
        xs.isEmpty ? .nan : xs.map(f).reduce(0, +) / Double(xs.count)
    }
}

/// Scoring of targets after prompts by teacher forcing.
public enum EditEvaluator {
    /// Mean NLL per token of each (prompt, target) pair, in one batched forward pass.
    public static func meanNLL(model: LlamaModel, tokenizer: Tokenizer, pairs: [(prompt: String, target: String)]) throws -> [Double] {
        guard !pairs.isEmpty else { return [] }
        var seqs: [[Int]] = [], spans: [(promptLength: Int, target: [Int])] = []
        for (p, t) in pairs {
            let pi = tokenizer.encode(p)
            let ti = tokenizer.encode(t.hasPrefix(" ") ? t : " " + t)
            guard !pi.isEmpty, !ti.isEmpty else { throw EditingError.badRequest(subject: p, reason: "empty prompt or target") }
            seqs.append(pi + ti.dropLast()); spans.append((pi.count, ti))
        }
        let layout = BatchLayout(lengths: seqs.map(\.count))
        var rows: [Int] = []
        for (i, s) in spans.enumerated() { for j in 0..<s.target.count { rows.append(layout.offsets[i] + s.promptLength - 1 + j) } }
        let out = try model.forward(seqs, logitRows: .rows(rows))
        var result: [Double] = [], k = 0
        let v = model.config.vocabSize
        for s in spans {
            var total = 0.0
            for t in s.target {
                let row = out.logits.pointer + k * v
                total += Double(Kernels.logSumExp(row, count: v) - row[t])
                k += 1
            }
            result.append(total / Double(s.target.count))
        }
        return result
    }

    /// CounterFact scores of `request` on the model as it is now. Neighbour prompts without a known answer use
    /// `fallbackAnswers` (their answers before the edit), else target_true.
    public static func scores(model: LlamaModel, tokenizer: Tokenizer, request r: EditRequest,
                              neighborAnswers: [String?]? = nil) throws -> EditScores {
        let truth = r.targetTrue ?? ""
        var prompts: [(String, String, Int)] = [(r.filledPrompt, "rewrite", 0)]
        for p in r.paraphrases { prompts.append((p, "paraphrase", 0)) }
        for (i, n) in r.neighborhood.enumerated() { prompts.append((n.prompt, "neighbor", i)) }
        var pairs: [(prompt: String, target: String)] = []
        var trueTargets: [String] = []
        for (p, kind, i) in prompts {
            let t = kind == "neighbor" ? (r.neighborhood[i].answer ?? neighborAnswers?[i] ?? truth) : truth
            trueTargets.append(t)
            pairs.append((p, r.targetNew))
        }
        let hasTruth = trueTargets.map { !$0.isEmpty }
        let truePairs = zip(prompts, trueTargets).filter { !$0.1.isEmpty }.map { (prompt: $0.0.0, target: $0.1) }
        let nllNew = try meanNLL(model: model, tokenizer: tokenizer, pairs: pairs)
        let nllTrueList = try meanNLL(model: model, tokenizer: tokenizer, pairs: truePairs)
        var k = 0
        var s = EditScores(rewrite: [], paraphrases: [], neighborhood: [])
        for (i, (p, kind, _)) in prompts.enumerated() {
            let nt: Double
            if hasTruth[i] { nt = nllTrueList[k]; k += 1 } else { nt = .infinity }
            let pair = EditScores.Pair(prompt: p, nllNew: nllNew[i], nllTrue: nt)
            switch kind {
            case "rewrite": s.rewrite.append(pair)
            case "paraphrase": s.paraphrases.append(pair)
            default: s.neighborhood.append(pair)
            }
        }
        return s
    }

    /// The most likely next token's text after each prompt (greedy).
    public static func topAnswers(model: LlamaModel, tokenizer: Tokenizer, prompts: [String]) throws -> [String] {
        guard !prompts.isEmpty else { return [] }
        let out = try model.forward(prompts.map { tokenizer.encode($0) })
        return (0..<prompts.count).map { tokenizer.tokenText(LogitMath.topK(out.row($0), 1)[0]) }
    }

    /// Weighted 2- and 3-gram entropy of text (ROME's fluency measure: weights 2/3 and 4/3).
    public static func ngramEntropy(_ text: String) -> Double {
        let words = text.split(whereSeparator: { $0.isWhitespace }).map(String.init)
        var total = 0.0
        for (n, w) in [(2, 2.0 / 3), (3, 4.0 / 3)] {
            guard words.count >= n else { continue }
            var counts: [String: Int] = [:]
            for i in 0...(words.count - n) { counts[words[i..<(i + n)].joined(separator: " "), default: 0] += 1 }
            let sum = Double(counts.values.reduce(0, +))
            let h = counts.values.reduce(0.0) { acc, c in let p = Double(c) / sum; return acc - p * log2(p) }
            total += w * h
        }
        return total / 2
    }

    /// Perplexity of the model on token chunks (teacher forcing over every position).
    public static func perplexity(model: LlamaModel, chunks: [[Int]]) throws -> Double {
        var nll = 0.0, count = 0
        for chunk in chunks where chunk.count > 1 {
            let out = try model.forward([chunk], logitRows: .all)
            let v = model.config.vocabSize
            for t in 0..<(chunk.count - 1) {
                let row = out.logits.pointer + t * v
                nll += Double(Kernels.logSumExp(row, count: v) - row[chunk[t + 1]])
                count += 1
            }
        }
        return exp(nll / Double(max(count, 1)))
    }
}
