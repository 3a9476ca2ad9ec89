import ArgumentParser
import Foundation
import Llama

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Continue a prompt (greedy, or sampled with a temperature).")
    @OptionGroup var model: ModelOptions
    @Option(parsing: .unconditional, help: "Tokens to generate at most.") var maxTokens = 32
    @Option(parsing: .unconditional, help: "Sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(parsing: .unconditional, help: "Sample among the k most likely tokens only (0 = all).") var topK = 0
    @Option(help: "Random seed for sampling.") var seed: UInt64 = 0
    @Flag(help: "Recognize special tokens such as <|im_start|> in the prompt.") var special = false
    @Flag(help: "Print JSON {prompt, ids, text, tokens_per_second}.") var json = false
    @Argument(help: "The prompt.") var prompt: String

    /// Options are checked before anything is loaded.
    func validate() throws {
        try requirePrompt(prompt)
        try requireInt(maxTokens, "--max-tokens", in: 1...OptionLimits.tokens)
        try requireReal(temperature, "--temperature", atLeast: 0)
        try requireInt(topK, "--top-k", in: 0...Int.max)
    }

    func run() throws {
        let m = try model.open()
        let ids = m.tokenizer.encode(prompt, parseSpecial: special)
        var printed = ""
        if !json { FileHandle.standardOutput.write(prompt.data(using: .utf8)!) }
        var produced: [Int] = []
        let start = Date()
        let stops = Set([m.tokenizer.eosID].compactMap { $0 })
        let out = try m.model.generate(ids, maxTokens: maxTokens, sampler: Sampler(temperature: temperature, topK: topK),
                                       seed: seed, stop: stops) { id in
            produced.append(id)
            guard !json else { return }
            let text = m.tokenizer.decode(produced)
            if text.hasPrefix(printed) {
                FileHandle.standardOutput.write(String(text.dropFirst(printed.count)).data(using: .utf8)!)
                printed = text
            }
        }
        let seconds = Date().timeIntervalSince(start)
        if json {
            return try printJSON(["prompt": prompt, "ids": out, "text": m.tokenizer.decode(out),
                                  "tokens_per_second": Double(out.count) / seconds])
        }
        print("")
        note(String(format: "%d tokens in %.2f s (%.1f tokens/s, prompt included)", out.count, seconds,
                    Double(out.count) / seconds))
    }
}
