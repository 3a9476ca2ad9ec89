import Foundation
import Llama

/// A fact to trace: a prompt, its subject and (optionally) the expected answer.
public struct KnownFact: Codable, Sendable, Equatable {
    public var prompt: String
    public var subject: String
    public var answer: String?
    public var relation: String?
    public init(prompt: String, subject: String, answer: String? = nil, relation: String? = nil) {
        self.prompt = prompt; self.subject = subject; self.answer = answer; self.relation = relation
    }

    /// Facts from a JSON array of objects with `prompt`, `subject` and `attribute`/`answer`/`target_true`
    /// (ROME's known_1000.json and CounterFact both work).
    public static func load(path: String) throws -> [KnownFact] {
        guard let data = FileManager.default.contents(atPath: path),
              let list = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
            throw InterpError.invalidDataset("\(path) is not a JSON array of objects")
        }
        return try list.enumerated().map { i, o in
            guard let p = o["prompt"] as? String, let s = o["subject"] as? String else {
                throw InterpError.invalidDataset("\(path): record \(i) lacks \"prompt\" or \"subject\"")
            }
            let a = (o["attribute"] as? String) ?? (o["answer"] as? String) ?? (o["ground_truth"] as? String)
            return KnownFact(prompt: p, subject: s, answer: a, relation: o["relation_id"] as? String)
        }
    }

    /// A small built-in set of well-known facts (used when no dataset is given).
    public static let builtIn: [KnownFact] = [
        ("The Eiffel Tower is located in the city of", "The Eiffel Tower", "Paris"),
        ("The Colosseum is located in the city of", "The Colosseum", "Rome"),
        ("The Statue of Liberty is located in the city of", "The Statue of Liberty", "New York"),
        ("Big Ben is located in the city of", "Big Ben", "London"),
        ("The Brandenburg Gate is located in the city of", "The Brandenburg Gate", "Berlin"),
        ("The Kremlin is located in the city of", "The Kremlin", "Moscow"),
        ("The capital of France is the city of", "France", "Paris"),
        ("The capital of Japan is the city of", "Japan", "Tokyo"),
        ("The capital of Italy is the city of", "Italy", "Rome"),
        ("The capital of Germany is the city of", "Germany", "Berlin"),
        ("Danielle Darrieux's mother tongue is", "Danielle Darrieux", "French"),
        ("The official language of Spain is", "Spain", "Spanish"),
        ("The Louvre is located in the city of", "The Louvre", "Paris"),
        ("The Sydney Opera House is located in the city of", "The Sydney Opera House", "Sydney"),
        ("Mount Fuji is located in the country of", "Mount Fuji", "Japan"),
        ("The Taj Mahal is located in the country of", "The Taj Mahal", "India"),
    ].map { KnownFact(prompt: $0.0, subject: $0.1, answer: $0.2) }
}

/// ROME's token buckets for averaging traces over facts.
public enum TokenBucket: String, CaseIterable, Sendable {
    case firstSubject = "first subject token", middleSubject = "middle subject tokens", lastSubject = "last subject token"
    case firstAfter = "first subsequent token", further = "further tokens", last = "last token"

    /// Bucket of position `t` for a prompt of `length` tokens with subject `s`.
    public static func of(_ t: Int, subject s: ClosedRange<Int>, length: Int) -> TokenBucket {
        if t == length - 1 { return .last }
        if t == s.lowerBound { return .firstSubject }
        if t == s.upperBound { return .lastSubject }
        if s.contains(t) { return .middleSubject }
        if t == s.upperBound + 1 { return .firstAfter }
        return .further
    }
}

/// Averaged traces over many facts and the recommended edit layer.
public struct LocateResult: Sendable {
    public var kind: TraceKind
    public var window: Int
    public var factsTried: Int
    /// Facts whose answer the model predicted (the ones traced).
    public var factsUsed: [KnownFact]
    /// Mean indirect effect (patched − corrupted probability) per bucket (TokenBucket order) × layer.
    public var bucketEffects: [[Double]]
    /// Mean indirect effect at the last subject token, per layer.
    public var lastSubjectEffect: [Double] { bucketEffects[TokenBucket.allCases.firstIndex(of: .lastSubject)!] }
    /// Layer with the largest effect at the last subject token.
    public var recommendedLayer: Int {
        lastSubjectEffect.enumerated().max { $0.element < $1.element }?.offset ?? 0
    }
    public var seconds: Double
}

public enum Locator {
    /// Traces `kind` (ROME: MLP, window 10) over each fact the model answers correctly and averages by bucket.
    /// - Parameters:
    ///   - noiseStd: ν; default 3 × the std of the facts' subject-token embeddings.
    ///   - method: exact traces, or attribution estimates (windows = sums of single-layer estimates).
    ///   - progress: (facts done, total).
    public static func run(model: LlamaModel, tokenizer: Tokenizer, facts: [KnownFact], kind: TraceKind = .mlp,
                           window: Int = 10, samples: Int = 10, seed: UInt64 = 1, noiseStd: Float? = nil,
                           method: TraceMethod = .exact, progress: ((Int, Int) -> Void)? = nil) throws -> LocateResult {
        let t0 = Date()
        let std = noiseStd ?? 3 * Corruption.embeddingStd(model: model, tokenizer: tokenizer, subjects: facts.map(\.subject))
        let L = model.config.layers
        var sums = [[Double]](repeating: [Double](repeating: 0, count: L), count: TokenBucket.allCases.count)
        var counts = sums
        var used: [KnownFact] = []
        for (i, fact) in facts.enumerated() {
            defer { progress?(i + 1, facts.count) }
            let ids = tokenizer.encode(fact.prompt)
            guard !ids.isEmpty else { continue }
            // Keep only facts the model gets right (its top token starts the expected answer).
            let top = tokenizer.tokenText(LogitMath.topK(try model.forward([ids]).row(0), 1)[0])
            if let a = fact.answer {
                let t = top.trimmingCharacters(in: .whitespaces), ans = a.trimmingCharacters(in: .whitespaces)
                guard !t.isEmpty, ans.hasPrefix(t) else { continue }
            }
            guard let tracer = try? Tracer(model: model, tokenizer: tokenizer, prompt: fact.prompt, subject: fact.subject,
                                           corruption: .noise(std: std, samples: samples, seed: seed &+ UInt64(i))),
                  let subject = tracer.subject else { continue }
            let r = try tracer.trace(TraceSettings(kind: kind, window: window, metric: .prob, method: method))
            used.append(fact)
            for t in 0..<ids.count {
                let b = TokenBucket.allCases.firstIndex(of: TokenBucket.of(t, subject: subject, length: ids.count))!
                for l in 0..<L { sums[b][l] += r.scores[t][l] - r.corrupted; counts[b][l] += 1 }
            }
        }
        let means = zip(sums, counts).map { s, c in zip(s, c).map { $1 > 0 ? $0 / $1 : .nan } }
        return LocateResult(kind: kind, window: window, factsTried: facts.count, factsUsed: used, bucketEffects: means,
                            seconds: Date().timeIntervalSince(t0))
    }
}
