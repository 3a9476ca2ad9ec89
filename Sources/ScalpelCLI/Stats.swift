import ArgumentParser
import Foundation
import Editing
import Llama

struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Key statistics C = E[k kᵀ] of MLP keys (blocks.{l}.mlp.hook_post) for ROME.",
        subcommands: [Collect.self, Merge.self, Show.self],
        defaultSubcommand: Collect.self)

    struct Collect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Collect statistics of one or more layers over a corpus.")
        @OptionGroup var model: ModelOptions
        @Option(name: .customLong("layer"), parsing: .unconditionalSingleValue, help: "Layer(s) to collect (repeat for several; one pass).") var layers: [Int]
        @Option(help: "Corpus files (.txt, .jsonl, .json with a \"text\" field); default: text sampled from the model.")
        var corpus: [String] = []
        @Option(parsing: .unconditional, help: "Texts sampled from the model (default corpus).") var texts: Int = 800
        @Option(parsing: .unconditional, help: "Tokens per sampled text.") var tokensPerText: Int = 128
        @Option(help: "Seed for sampling.") var seed: UInt64 = 0
        @Option(help: "Use only this shard (i/n) of the corpus, for parallel jobs merged later, e.g. 0/4.") var shard: String?
        @Option(help: "Output file (default: beside the model). Existing layers in it are replaced; a file that is not a statistics file is refused (replaced with --force).") var out: String?
        @OptionGroup var force: ForceOption
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var lockOptions: LockOptions

        /// Options are checked before anything is loaded.
        func validate() throws {
            try require(!layers.isEmpty, "give --layer (repeat it for several layers)")
            for l in layers { try requireInt(l, "--layer", in: 0...Int.max) }
            try requireInt(texts, "--texts", in: 1...OptionLimits.texts)
            try requireInt(tokensPerText, "--tokens-per-text", in: 1...OptionLimits.tokens)
            if let shard { _ = try Collect.parseShard(shard) }
        }

        /// `i/n` with 0 ≤ i < n.
        static func parseShard(_ s: String) throws -> (index: Int, count: Int) {
            let parts = s.split(separator: "/", omittingEmptySubsequences: false).map { Int($0) }
            guard parts.count == 2, let i = parts[0], let n = parts[1], n > 0, (0..<n).contains(i) else {
                throw OptionError("--shard must be i/n with 0 ≤ i < n, got \"\(s)\"")
            }
            return (i, n)
        }

        func run() throws {
            let input = try model.input()
            // The output: a new file or an existing statistics file (layers are added); never the model or a corpus.
            let (output, replace) = try StatsStore.output(out ?? StatsStore.defaultPath(forModel: input.path), force: force.force,
                                                          inputs: [input] + corpus.map(InputPath.init))
            let m = try ModelFile.open(input.path)
            for l in layers { try EditRequest.requireLayer(l, layers: m.config.layers) }
            var corpusData: TokenCorpus
            if corpus.isEmpty {
                var s = CorpusSampler.SamplingSettings()
                s.texts = texts; s.tokensPerText = tokensPerText; s.seed = seed
                let bar = ProgressBar(label: "sample", quiet: json)
                corpusData = try CorpusSampler.sample(model: m.model, tokenizer: m.tokenizer, settings: s) { bar.update($0, $1, unit: "texts") }
                bar.finish()
            } else {
                corpusData = try CorpusSampler.fromFiles(corpus, tokenizer: m.tokenizer)
            }
            if let shard {
                let (i, n) = try Collect.parseShard(shard)
                let shards = corpusData.shards(n)
                guard i < shards.count else {
                    throw OptionError("the corpus has only \(corpusData.sequences.count) sequences: too few for \(n) shards")
                }
                corpusData = shards[i]
            }
            let bar = ProgressBar(label: "stats", quiet: json)
            var options = CollectionOptions()
            options.toolVersion = ScalpelVersion.string
            let t0 = Date()
            let stats = try StatisticsCollector.collect(model: m.model, modelSHA256: m.provenance.sourceSHA256, layers: layers,
                                                        corpus: corpusData, options: options) {
                bar.update($0.tokensDone, $0.tokensTotal, unit: "tokens")
            }
            bar.finish()
            let seconds = Date().timeIntervalSince(t0)
            let path = output.path
            if replace {
                let lock = try lockOptions.lock(path)   // --force over another file: one writer at a time
                defer { lock.release() }
                try StatsStore.write(stats, to: path)
            } else {
                try StatsStore.save(stats, to: path, wait: lockOptions.waitLock, waiting: note)
            }
            if json {
                return try printJSON(["path": path, "layers": layers, "tokens": corpusData.tokenCount, "seconds": seconds,
                                      "tokens_per_second": Double(corpusData.tokenCount) / seconds,
                                      "corpus_sha256": corpusData.sha256, "corpus": corpusData.description,
                                      "stats_sha256": stats.map(\.hash)])
            }
            print("\(path): layers \(layers.map(String.init).joined(separator: ", ")), \(corpusData.tokenCount) tokens, "
                  + String(format: "%.1f s (%.0f tokens/s)", seconds, Double(corpusData.tokenCount) / seconds))
        }
    }

    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add up statistics shards (sums and counts).")
        @Argument(help: "Shard files.") var shards: [String]
        @Option(help: "Merged output file (may be one of the shards; another existing file only with --force).") var out: String
        @OptionGroup var force: ForceOption
        func validate() throws { try require(!shards.isEmpty, "give the shard files to merge") }
        func run() throws {
            let inputs = shards.map(InputPath.init), target = InputPath(out)
            // Merging into one of the shards is an in-place update, as documented; anything else is a new output.
            let path = inputs.contains(where: { $0.path == target.path }) ? target.path
                : try OutputPath(out, force: force.force, inputs: inputs).path
            let merged = try StatsStore.merge(paths: shards, into: path)
            print("\(out): " + merged.map { "layer \($0.layer) (\($0.count) tokens)" }.joined(separator: ", "))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the statistics in a file with their provenance.")
        @Argument(help: "A statistics file.") var path: String
        @Flag(help: "Print JSON.") var json = false
        func run() throws {
            let all = try StatsStore.readAll(path: path)
            let rows: [[String: Any]] = all.map {
                ["layer": $0.layer, "hook": $0.hookName, "tokens": $0.count, "model_sha256": $0.modelSHA256,
                 "corpus_sha256": $0.corpusSHA256, "corpus": $0.corpusDescription, "stats_sha256": $0.hash, "created": $0.created]
            }
            if json { return try printJSON(rows) }
            for r in rows {
                print("layer \(r["layer"]!)  \(r["tokens"]!) tokens  \(r["corpus"]!)\n    model \(r["model_sha256"]!)\n    stats \(r["stats_sha256"]!)")
            }
        }
    }
}
