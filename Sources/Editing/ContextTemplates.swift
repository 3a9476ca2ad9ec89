import Foundation
import Llama

/// Context prefixes put before the edit prompt when computing k* and v* (ROME): the bare prompt plus short texts
/// sampled from the model, so the edit holds in varied contexts.
public struct ContextTemplates: Sendable, Equatable {
    /// Each template contains `{}` where the prompt goes; the first is always the bare `{}`.
    public var templates: [String]

    /// Seeds the sampled texts start from (MEMIT's choice; the model's unseeded samples are often noise such as
    /// "-_10. {}").
    public static let defaultSeeds = ["The", "Therefore", "Because", "I", "You"]

    /// The bare prompt only.
    public static let bare = ContextTemplates(templates: ["{}"])

    public init(templates: [String]) { self.templates = templates }

    /// Samples `count` texts of each length in `lengths` (tokens), cycling through `seeds`, top-k 5 as in ROME.
    /// - Parameter seeds: start words; pass [] to sample from the beginning-of-text token alone (ROME's original).
    public static func sample(model: LlamaModel, tokenizer: Tokenizer, lengths: [(tokens: Int, count: Int)] = [(5, 10), (10, 10)],
                              seeds: [String] = defaultSeeds, seed: UInt64 = 0) throws -> ContextTemplates {
        var templates = ["{}"]
        let start = tokenizer.bosID ?? tokenizer.eosID ?? 0
        for (k, (length, count)) in lengths.enumerated() {
            let prompts: [[Int]] = (0..<count).map { i in
                seeds.isEmpty ? [start] : tokenizer.encode(seeds[i % seeds.count])
            }
            let gen = try model.generateBatch(prompts, maxTokens: length, sampler: Sampler(temperature: 1, topK: 5),
                                              seed: seed &+ UInt64(k) &* 7919)
            for (p, g) in zip(prompts, gen) {
                let ids = (seeds.isEmpty ? [] : p) + g
                var text = tokenizer.decode(ids, skipSpecial: true)
                text = text.replacingOccurrences(of: "{", with: "").replacingOccurrences(of: "}", with: "")
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                templates.append(text + ". {}")
            }
        }
        return ContextTemplates(templates: templates)
    }
}
