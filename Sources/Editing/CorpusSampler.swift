import Foundation
import Hashing
import Linalg
import Llama

/// Token sequences to collect statistics over, with a hash and a description for provenance.
public struct TokenCorpus: Sendable, Equatable {
    /// Each sequence is run from position 0 on its own.
    public var sequences: [[Int]]
    /// SHA-256 of the token ids and the settings that produced them (see `TokenCorpus.hash`).
    public var sha256: String
    /// Human-readable origin: file names, or "model-sampled: N texts, seed S, temperature T, …".
    public var description: String
    /// Total tokens.
    public var tokenCount: Int { sequences.reduce(0) { $0 + $1.count } }

    /// A corpus whose hash is computed from `sequences` and `settings`.
    public init(sequences: [[Int]], settings: String, description: String) {
        self.sequences = sequences
        self.description = description
        sha256 = TokenCorpus.hash(sequences: sequences, settings: settings)
    }

    /// SHA-256 (hex) of: the ASCII header `scalpel-corpus-v1`, a newline, `settings`, a newline, then for each
    /// sequence its length as UInt32 and its ids as Int32, all little-endian.
    public static func hash(sequences: [[Int]], settings: String) -> String {
        var h = SHA256()
        h.update(Array("scalpel-corpus-v1\n\(settings)\n".utf8))
        var words: [UInt32] = []
        for s in sequences {
            words.removeAll(keepingCapacity: true)
            words.append(UInt32(truncatingIfNeeded: s.count).littleEndian)
            for id in s { words.append(UInt32(bitPattern: Int32(truncatingIfNeeded: id)).littleEndian) }
            words.withUnsafeBytes { h.update($0) }
        }
        return SHA256.hexString(h.finalize())
    }

    /// Splits the sequences into `min(count, sequences.count)` consecutive, non-empty shards of about equal token
    /// counts (each its own corpus, for collecting separately and merging with `StatsStore.merge`).
    public func shards(_ count: Int) -> [TokenCorpus] {
        let n = max(1, min(count, sequences.count))
        let perShard = Double(tokenCount) / Double(n)
        var out: [TokenCorpus] = [], current: [[Int]] = [], tokens = 0
        for (i, s) in sequences.enumerated() {
            current.append(s); tokens += s.count
            let shardsLeft = n - out.count - 1, sequencesLeft = sequences.count - i - 1
            if shardsLeft > 0 && (Double(tokens) >= perShard * Double(out.count + 1) || sequencesLeft == shardsLeft) {
                out.append(shard(current, index: out.count, of: n)); current = []
            }
        }
        out.append(shard(current, index: out.count, of: n))
        return out
    }

    private func shard(_ seqs: [[Int]], index: Int, of n: Int) -> TokenCorpus {
        TokenCorpus(sequences: seqs, settings: "shard \(index + 1)/\(n) of \(sha256)",
                    description: "\(description) [shard \(index + 1)/\(n)]")
    }
}

/// Produces corpora for key statistics: from text files, or (the default, needing no data download) sampled from
/// the model itself.
///
/// Trade-off: ROME estimates C on Wikipedia text. Text sampled from the model follows the model's own distribution,
/// needs no download and is reproducible from a seed, but it is less diverse than curated text (short neutral
/// seeds, 128-token texts, sampling artefacts) and its statistics differ from those of natural text; pass text files
/// when a reference corpus is available. `docs/rome.md` compares the two.
public enum CorpusSampler {
    /// Neutral start words of model-sampled texts.
    public static let neutralSeeds = ["The", "In", "A", "It", "This", "He", "She", "When", "There", "On",
                                      "After", "One", "We", "They", "As", "For", "I", "At", "His", "Her"]

    /// Settings of a model-sampled corpus.
    public struct SamplingSettings: Sendable, Equatable {
        /// Number of texts.
        public var texts = 800
        /// New tokens generated after each seed.
        public var tokensPerText = 128
        public var temperature: Float = 1.0
        public var topK = 50
        public var seed: UInt64 = 0
        /// Start words, cycled over the texts.
        public var seeds = CorpusSampler.neutralSeeds
        /// Texts generated together (one batched forward per step). Does not change which texts are produced
        /// except through float rounding of differently sized matrix products.
        public var batchSize = 200
        /// Batches generated at once, each with single-threaded BLAS (see `CollectionOptions.workers`); nil = one
        /// per processor, at most 4. Like `batchSize`, it does not change which texts are produced.
        public var workers: Int?

        public init(texts: Int = 800, tokensPerText: Int = 128, temperature: Float = 1.0, topK: Int = 50,
                    seed: UInt64 = 0, seeds: [String] = CorpusSampler.neutralSeeds, batchSize: Int = 200,
                    workers: Int? = nil) {
            self.texts = texts; self.tokensPerText = tokensPerText; self.temperature = temperature
            self.topK = topK; self.seed = seed; self.seeds = seeds; self.batchSize = batchSize
            self.workers = workers
        }

        /// The settings line hashed with the tokens (batch size and workers excluded: they do not define the corpus).
        var canonical: String {
            "model-sampled texts=\(texts) tokens_per_text=\(tokensPerText) temperature=\(temperature) top_k=\(topK) "
                + "seed=\(seed) seeds=\(seeds.joined(separator: "|")) no_control_tokens"
        }

        var summary: String {
            "model-sampled: \(texts) texts, seed \(seed), temperature \(temperature), top-k \(topK), "
                + "\(tokensPerText) tokens after each of \(seeds.count) seed words"
        }
    }

    // MARK: Model-sampled text

    /// Generates `settings.texts` texts from the model: text i starts with seed word `seeds[i % seeds.count]`
    /// (after BOS when the tokenizer adds one) and continues with `tokensPerText` tokens sampled at `temperature`
    /// from the top-k, control tokens (end of text, chat markers) excluded so every text has the same length.
    /// Text i draws from its own random stream (derived from `seed` and i). The corpus hash covers the token ids and
    /// the settings.
    /// - Parameter progress: called after each batch with (texts done, texts total); from a worker thread when there
    ///   are several workers, one call at a time.
    public static func sample(model: LlamaModel, tokenizer: Tokenizer, settings s: SamplingSettings = SamplingSettings(),
                              progress: ((Int, Int) -> Void)? = nil) throws -> TokenCorpus {
        guard s.texts > 0, s.tokensPerText > 0, s.batchSize > 0, s.topK >= 0, (s.workers ?? 1) > 0 else {
            throw EditingError.invalidArgument(name: "sampling settings",
                                               reason: "texts, tokensPerText, batchSize and workers must be positive")
        }
        let c = model.config
        let bos: [Int] = tokenizer.addBOS ? tokenizer.bosID.map { [$0] } ?? [] : []
        let seedIDs: [[Int]] = s.seeds.isEmpty ? [tokenizer.bosID.map { [$0] } ?? [0]]
            : s.seeds.map { bos + tokenizer.encode($0, addBOS: false) }
        let excluded = (0..<min(c.vocabSize, tokenizer.vocabularySize)).filter {
            tokenizer.isControl($0) || $0 == tokenizer.eosID
        }
        let longest = seedIDs.map(\.count).max() ?? 0
        guard longest + s.tokensPerText <= c.contextLength else {
            throw EditingError.invalidArgument(name: "tokensPerText",
                                               reason: "\(longest + s.tokensPerText) tokens exceed the context length \(c.contextLength)")
        }
        try model.validate(seedIDs)

        // Texts idx, generated together with a KV cache, one random stream per text.
        func generate(_ idx: Range<Int>) throws -> [[Int]] {
            var seqs = idx.map { seedIDs[$0 % seedIDs.count] }
            var rngs = idx.map { SeededRandom(seed: s.seed &+ UInt64($0) &* 0xD1B5_4A32_D192_ED03) }
            let cache = KVCache(config: c, sequences: seqs.count)
            var out = try model.forward(seqs, cache: cache)
            for step in 0..<s.tokensPerText {
                var next: [Int] = []
                next.reserveCapacity(seqs.count)
                for b in 0..<seqs.count {
                    let row = out.logits.pointer + b * c.vocabSize
                    for id in excluded { row[id] = -.infinity }
                    next.append(sampleTopK(row, count: c.vocabSize, k: s.topK, temperature: s.temperature, rng: &rngs[b]))
                }
                for b in 0..<seqs.count { seqs[b].append(next[b]) }
                if step + 1 < s.tokensPerText { out = try model.forward(next.map { [$0] }, cache: cache) }
            }
            return seqs
        }

        let batches = stride(from: 0, to: s.texts, by: s.batchSize).map { $0..<min($0 + s.batchSize, s.texts) }
        let workers = min(s.workers ?? CollectionOptions.automaticWorkers, batches.count)
        var results = [[[Int]]](repeating: [], count: batches.count)
        if workers == 1 {
            for (i, idx) in batches.enumerated() {
                results[i] = try generate(idx)
                progress?(idx.upperBound, s.texts)
            }
        } else {
            // One short pass over the longest length first grows the model's position tables, so the concurrent
            // passes only read them.
            _ = try model.forward([[Int](repeating: seedIDs[0][0], count: longest + s.tokensPerText)], logitRows: .none,
                                  upTo: 1)
            let lock = NSLock()
            var done = 0, failure: Error?
            // One batch per core at a time, each single-threaded (BLAS and element-wise kernels).
            Kernels.dataParallel(workers) { w in
                for i in stride(from: w, to: batches.count, by: workers) {
                    if lock.withLock({ failure != nil }) { return }
                    do {
                        let seqs = try generate(batches[i])
                        lock.lock(); defer { lock.unlock() }
                        results[i] = seqs
                        done += seqs.count
                        progress?(done, s.texts)
                    } catch {
                        lock.withLock { failure = failure ?? error }
                    }
                }
            }
            if let failure { throw failure }
        }
        return TokenCorpus(sequences: Array(results.joined()), settings: s.canonical, description: s.summary)
    }

    /// Samples from the `k` largest logits of `row` (all when k is 0) at `temperature` (0 = greedy) with Llama's
    /// `Sampler`.
    static func sampleTopK(_ row: UnsafePointer<Float>, count: Int, k: Int, temperature: Float,
                           rng: inout SeededRandom) -> Int {
        Sampler(temperature: temperature, topK: k).sample(UnsafeBufferPointer(start: row, count: count), rng: &rng)
    }

    // MARK: Text files

    /// Reads texts from a corpus file: `.txt` gives its whole content as one text; `.jsonl` one JSON object per
    /// non-empty line and `.json` an array of objects (or one object), each with a string field `field`.
    public static func readTexts(path: String, field: String = "text") throws -> [String] {
        guard FileManager.default.fileExists(atPath: path) else { throw EditingError.fileNotFound(path: path) }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EditingError.corpusUnreadable(path: path, reason: "cannot read the file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw EditingError.corpusUnreadable(path: path, reason: "not UTF-8 text")
        }
        func textField(_ object: Any, record: Int) throws -> String {
            guard let d = object as? [String: Any], let t = d[field] as? String else {
                throw EditingError.corpusMissingTextField(path: path, record: record, field: field)
            }
            return t
        }
        switch (path as NSString).pathExtension.lowercased() {
        case "txt", "text":
            return [text]
        case "jsonl", "ndjson":
            var out: [String] = []
            for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
                if trimmed.isEmpty { continue }
                let object: Any
                do { object = try JSONSerialization.jsonObject(with: Data(trimmed.utf8)) } catch {
                    throw EditingError.corpusUnreadable(path: path, reason: "line \(i + 1) is not valid JSON")
                }
                out.append(try textField(object, record: i + 1))
            }
            return out
        case "json":
            let object: Any
            do { object = try JSONSerialization.jsonObject(with: data) } catch {
                throw EditingError.corpusUnreadable(path: path, reason: "not valid JSON")
            }
            if let list = object as? [Any] {
                return try list.enumerated().map { try textField($1, record: $0 + 1) }
            }
            return [try textField(object, record: 1)]
        default:
            throw EditingError.unsupportedCorpusFile(path: path)
        }
    }

    /// A corpus from text files: each text is tokenized (no BOS inside) and cut into consecutive chunks of
    /// `chunkTokens` tokens (the last may be shorter), each starting with BOS when the tokenizer adds one.
    /// - Parameters:
    ///   - maxTokens: stop once the corpus holds this many tokens (the last chunk is cut short).
    ///   - field: the text field of JSON records.
    public static func fromFiles(_ paths: [String], tokenizer: Tokenizer, chunkTokens: Int = 256,
                                 maxTokens: Int? = nil, field: String = "text") throws -> TokenCorpus {
        guard !paths.isEmpty else { throw EditingError.invalidArgument(name: "corpus files", reason: "no file given") }
        let bos: [Int] = tokenizer.addBOS ? tokenizer.bosID.map { [$0] } ?? [] : []
        guard chunkTokens > bos.count else {
            throw EditingError.invalidArgument(name: "chunkTokens", reason: "\(chunkTokens) is too small")
        }
        if let maxTokens, maxTokens <= 0 {
            throw EditingError.invalidArgument(name: "maxTokens", reason: "must be positive")
        }
        let body = chunkTokens - bos.count
        var sequences: [[Int]] = [], total = 0, names: [String] = []
        files: for path in paths {
            let texts = try readTexts(path: path, field: field)
            let fileHash = (try? SHA256.hex(fileAt: path)) ?? "?"
            names.append("\((path as NSString).lastPathComponent) (sha256 \(fileHash.prefix(12)))")
            for text in texts {
                let ids = tokenize(text, tokenizer: tokenizer, limit: maxTokens.map { $0 - total })
                var i = 0
                while i < ids.count {
                    var n = min(body, ids.count - i)
                    if let maxTokens { n = min(n, maxTokens - total - bos.count) }
                    if n <= 0 { break files }
                    sequences.append(bos + ids[i..<(i + n)])
                    total += n + bos.count; i += n
                    if let maxTokens, total >= maxTokens { break files }
                }
            }
        }
        guard total > 0 else { throw EditingError.emptyCorpus(source: paths.joined(separator: ", ")) }
        var description = "files: " + names.joined(separator: ", ") + "; chunks of \(chunkTokens) tokens"
        if let maxTokens { description += "; first \(min(total, maxTokens)) tokens" }
        let settings = "files chunk_tokens=\(chunkTokens) max_tokens=\(maxTokens.map(String.init) ?? "all") "
            + "field=\(field) bos=\(bos.first.map(String.init) ?? "none")"
        return TokenCorpus(sequences: sequences, settings: settings, description: description)
    }

    /// Token ids of `text` (no BOS), encoded in blocks of about `blockBytes` bytes cut just after a newline that
    /// is followed by a printable ASCII character. Pre-tokenizers never join a newline with the next word, so this
    /// equals encoding the whole text; it lets a token `limit` stop early (at least `limit` tokens are returned when
    /// the text has that many).
    static func tokenize(_ text: String, tokenizer: Tokenizer, limit: Int?, blockBytes: Int = 1 << 16) -> [Int] {
        let bytes = Array(text.utf8)
        var out: [Int] = [], start = 0
        while start < bytes.count {
            var end = min(start + blockBytes, bytes.count)
            while end < bytes.count && !(bytes[end - 1] == 0x0A && (0x21...0x7E).contains(bytes[end])) { end += 1 }
            out += tokenizer.encode(String(decoding: bytes[start..<end], as: UTF8.self), addBOS: false)
            if let limit, out.count >= limit { break }
            start = end
        }
        return out
    }
}
