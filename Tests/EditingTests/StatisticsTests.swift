import Foundation
import XCTest
import HDF5Store
import Linalg
import Llama
@testable import Editing

/// Paths for the statistics tests.
enum EditingPaths {
    /// The package root (two levels above this file's folder).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let defaultGGUF = root.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path
    static let wikitext = "/work/shared/data/text/wikitext2_raw_valid.txt"

    static func requireModel() throws -> String {
        guard FileManager.default.fileExists(atPath: defaultGGUF) else {
            throw XCTSkip("default model not fetched (scripts/fetch-model.sh)")
        }
        return defaultGGUF
    }

    /// A fresh temporary directory, removed when the test ends.
    static func tempDir(_ test: XCTestCase) throws -> String {
        let dir = NSTemporaryDirectory() + "scalpel-stats-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }
}

/// A tiny random Llama (2 layers, D 16, 4 heads over 2 KV heads, F 24, V 40), as `TinyModel` in LlamaTests.
enum EditingTiny {
    static let config = LlamaConfig(layers: 2, dModel: 16, heads: 4, kvHeads: 2, headDim: 4, ffnDim: 24, vocabSize: 40,
                                    contextLength: 64, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: true)

    static func make(seed: UInt64 = 7, config c: LlamaConfig = config) -> LlamaModel {
        var rng = SeededRandom(seed: seed)
        let w = LlamaWeights(zeros: c)
        for p in LlamaParameter.all(c) {
            let count = p.shape(c).reduce(1, *)
            let isNorm: Bool = { switch p { case .attnNorm, .ffnNorm, .outputNorm: return true; default: return false } }()
            let values = (0..<count).map { _ in isNorm ? Float(1 + 0.1 * rng.normal()) : Float(0.3 * rng.normal()) }
            w.setValues(p, values)
        }
        return LlamaModel(weights: w)
    }

    /// A 40-token byte-level vocabulary for the tiny model: an end-of-text control token and single characters.
    static func tokenizer() throws -> Tokenizer {
        let chars = Array("abcdefghijklmnopqrstuvwxyzTIAHSWO") + ["Ġ", ".", ",", "Ċ", "'", "-"]
        let tokens = ["<|endoftext|>"] + chars.map { String($0) }
        precondition(tokens.count == 40)
        return try Tokenizer(tokens: tokens, tokenTypes: [3] + chars.map { _ in 1 }, merges: [], pre: "gpt2",
                             bosID: 0, eosID: 0, unknownID: nil, addBOS: false)
    }

    static func randomSequences(_ count: Int, lengths: ClosedRange<Int>, seed: UInt64 = 3) -> [[Int]] {
        var rng = SeededRandom(seed: seed)
        return (0..<count).map { _ in
            let n = lengths.lowerBound + Int(rng.next() % UInt64(lengths.count))
            return (0..<n).map { _ in Int(rng.next() % UInt64(config.vocabSize)) }
        }
    }
}

final class StatisticsTests: XCTestCase {
    let modelHash = String(repeating: "ab", count: 32)

    /// Σ k, Σ k kᵀ (float64) and the row count of `mlp.hook_post` keys at `layer`, from one forward per batch.
    private func naiveMoments(_ model: LlamaModel, batches: [[[Int]]], layer: Int) throws
        -> (count: Int, sum: [Double], moment: [Double]) {
        let f = model.config.ffnDim
        var keys: [[Double]] = []
        for batch in batches {
            var hooks = Hooks()
            hooks.add(HookPoint(layer, .mlpPost)) { a in
                for r in 0..<a.layout.rows { keys.append((0..<f).map { Double(a.data[r * f + $0]) }) }
            }
            _ = try model.forward(batch, hooks: hooks, logitRows: .none)
        }
        var sum = [Double](repeating: 0, count: f), m = [Double](repeating: 0, count: f * f)
        for k in keys {
            for i in 0..<f {
                sum[i] += k[i]
                for j in 0..<f { m[i * f + j] += k[i] * k[j] }
            }
        }
        return (keys.count, sum, m)
    }

    private func relativeDifference(_ a: [Double], _ b: [Double]) -> Double {
        var num = 0.0, den = 0.0
        for (x, y) in zip(a, b) { num += (x - y) * (x - y); den += y * y }
        return (num / den).squareRoot()
    }

    private func corpus(_ seqs: [[Int]], _ name: String = "test") -> TokenCorpus {
        TokenCorpus(sequences: seqs, settings: name, description: name)
    }

    // MARK: Accumulation

    func testMomentMatchesNaiveSumOfOuterProducts() throws {
        let model = EditingTiny.make()
        let seqs = EditingTiny.randomSequences(9, lengths: 3...40)
        // All sequences in one forward (rowsPerBatch large), both layers in one pass.
        let opts = CollectionOptions(rowsPerBatch: 4096, maxSequenceLength: 64)
        let stats = try StatisticsCollector.collect(model: model, modelSHA256: modelHash, layers: [1, 0],
                                                    corpus: corpus(seqs), options: opts)
        XCTAssertEqual(stats.map(\.layer), [0, 1])
        for s in stats {
            let naive = try naiveMoments(model, batches: [seqs], layer: s.layer)
            XCTAssertEqual(s.count, naive.count)
            XCTAssertEqual(s.count, seqs.reduce(0) { $0 + $1.count })
            XCTAssertEqual(s.dimension, 24)
            XCTAssertEqual(s.hookName, "blocks.\(s.layer).mlp.hook_post")
            XCTAssertLessThan(relativeDifference(s.secondMoment, naive.moment), 1e-9)
            XCTAssertLessThan(relativeDifference(s.sum, naive.sum), 1e-9)
            XCTAssertEqual(s.asymmetry, 0)
            // E[k kᵀ] and the centered covariance.
            let c = s.covariance(), cc = s.covariance(centered: true), mu = s.mean, n = Double(s.count)
            for i in 0..<24 { for j in 0..<24 {
                XCTAssertEqual(c[i * 24 + j], naive.moment[i * 24 + j] / n, accuracy: 1e-9 * max(1, abs(c[i * 24 + j])))
                XCTAssertEqual(cc[i * 24 + j], c[i * 24 + j] - mu[i] * mu[j], accuracy: 1e-12)
            } }
        }

        // One sequence per forward (rowsPerBatch 1): several rank-k updates, still the exact sum.
        let single = try StatisticsCollector.collect(model: model, modelSHA256: modelHash, layer: 1, corpus: corpus(seqs),
                                                     options: CollectionOptions(rowsPerBatch: 1, maxSequenceLength: 64))
        let naive = try naiveMoments(model, batches: seqs.map { [$0] }, layer: 1)
        XCTAssertLessThan(relativeDifference(single.secondMoment, naive.moment), 1e-9)
        XCTAssertEqual(single.count, naive.count)
    }

    func testBatchingAndSplittingOfLongSequences() throws {
        let model = EditingTiny.make()
        let seqs = EditingTiny.randomSequences(12, lengths: 20...60)
        // Sequences longer than 16 tokens run as pieces of ≤ 16; batches of ≤ 50 rows.
        var reports: [CollectionProgress] = []
        let collector = try StatisticsCollector(model: model, layers: [1], modelSHA256: modelHash,
                                                options: CollectionOptions(rowsPerBatch: 50, maxSequenceLength: 16))
        try collector.accumulate(seqs) { reports.append($0) }
        let s = try collector.finish(corpusSHA256: "x", corpusDescription: "x")[0]
        let total = seqs.reduce(0) { $0 + $1.count }
        XCTAssertEqual(s.count, total)
        XCTAssertEqual(reports.last?.tokensDone, total)
        XCTAssertEqual(reports.last?.tokensTotal, total)
        XCTAssertGreaterThan(reports.count, 5)
        let pieces = seqs.flatMap { q in stride(from: 0, to: q.count, by: 16).map { Array(q[$0..<min($0 + 16, q.count)]) } }
        var batches: [[[Int]]] = [], current: [[Int]] = [], rows = 0
        for p in pieces {
            if !current.isEmpty && rows + p.count > 50 { batches.append(current); current = []; rows = 0 }
            current.append(p); rows += p.count
        }
        batches.append(current)
        let naive = try naiveMoments(model, batches: batches, layer: 1)
        XCTAssertLessThan(relativeDifference(s.secondMoment, naive.moment), 1e-9)
    }

    func testParallelWorkersAgreeAndAreReproducible() throws {
        let model = EditingTiny.make()
        let c = corpus(EditingTiny.randomSequences(40, lengths: 5...60))
        func run(_ workers: Int) throws -> [KeyStatistics] {
            try StatisticsCollector.collect(model: model, modelSHA256: modelHash, layers: [0, 1], corpus: c,
                                            options: CollectionOptions(rowsPerBatch: 100, workers: workers))
        }
        let threadsBefore = BLAS.threads
        let one = try run(1), three = try run(3), again = try run(3)
        XCTAssertEqual(BLAS.threads, threadsBefore, "BLAS threads are restored")
        for (a, b) in zip(one, three) {
            XCTAssertEqual(a.count, b.count)
            XCTAssertLessThan(relativeDifference(b.secondMoment, a.secondMoment), 1e-12)
            XCTAssertLessThan(relativeDifference(b.sum, a.sum), 1e-12)
            XCTAssertEqual(b.asymmetry, 0)
        }
        XCTAssertEqual(three.map(\.hash), again.map(\.hash), "same worker count, same bits")
        // Several accumulate calls add up.
        let collector = try StatisticsCollector(model: model, layers: [1], modelSHA256: modelHash,
                                                options: CollectionOptions(rowsPerBatch: 100, workers: 2))
        try collector.accumulate(Array(c.sequences.prefix(15)))
        try collector.accumulate(Array(c.sequences.dropFirst(15)))
        XCTAssertEqual(collector.tokenCount, c.tokenCount)
        let split = try collector.finish(corpusSHA256: c.sha256, corpusDescription: c.description)[0]
        XCTAssertLessThan(relativeDifference(split.secondMoment, one[1].secondMoment), 1e-12)
    }

    func testCollectorRejectsBadLayersAndEmptyCorpus() throws {
        let model = EditingTiny.make()
        XCTAssertThrowsError(try StatisticsCollector(model: model, layers: [2], modelSHA256: modelHash)) {
            XCTAssertEqual($0 as? EditingError, .layerOutOfRange(layer: 2, layers: 2))
        }
        XCTAssertThrowsError(try StatisticsCollector.collect(model: model, modelSHA256: modelHash, layer: 0,
                                                             corpus: corpus([]))) {
            guard case .emptyCorpus? = $0 as? EditingError else { return XCTFail("\($0)") }
        }
        let c = try StatisticsCollector(model: model, layers: [0], modelSHA256: modelHash)
        XCTAssertThrowsError(try c.finish(corpusSHA256: "", corpusDescription: "")) {
            XCTAssertEqual($0 as? EditingError, .noTokensCollected(layer: 0))
        }
    }

    // MARK: Merging

    func testShardsMergedEqualOnePassOverTheWholeCorpus() throws {
        let model = EditingTiny.make()
        let whole = corpus(EditingTiny.randomSequences(20, lengths: 5...30), "whole")
        // One sequence per forward so each key is computed identically whichever shard it is in.
        let opts = CollectionOptions(rowsPerBatch: 1, maxSequenceLength: 64)
        let onePass = try StatisticsCollector.collect(model: model, modelSHA256: modelHash, layers: [0, 1],
                                                      corpus: whole, options: opts)
        let shards = whole.shards(3)
        XCTAssertEqual(shards.count, 3)
        XCTAssertEqual(shards.flatMap(\.sequences), whole.sequences)
        XCTAssertEqual(Set(shards.map(\.sha256)).count, 3)
        let skewed = corpus([[1], [2], Array(repeating: 3, count: 100), [4]]).shards(3)
        XCTAssertEqual(skewed.map(\.sequences.count), [2, 1, 1])
        XCTAssertEqual(corpus([[1], [2]]).shards(5).count, 2)
        XCTAssertEqual(corpus([]).shards(2).map(\.tokenCount), [0])

        let dir = try EditingPaths.tempDir(self)
        var paths: [String] = []
        for (i, shard) in shards.enumerated() {
            let s = try StatisticsCollector.collect(model: model, modelSHA256: modelHash, layers: [0, 1], corpus: shard,
                                                    options: opts)
            let p = dir + "/shard\(i).stats.h5"
            try StatsStore.write(s, to: p)
            paths.append(p)
        }
        let out = dir + "/merged.stats.h5"
        let merged = try StatsStore.merge(paths: paths, into: out)
        XCTAssertEqual(try StatsStore.readAll(path: out), merged)
        for (m, o) in zip(merged, onePass) {
            XCTAssertEqual(m.layer, o.layer)
            XCTAssertEqual(m.count, o.count)
            XCTAssertLessThan(relativeDifference(m.secondMoment, o.secondMoment), 1e-12)
            XCTAssertLessThan(relativeDifference(m.sum, o.sum), 1e-12)
            XCTAssertEqual(m.corpusParts, shards.map(\.sha256))
            XCTAssertEqual(m.corpusSHA256, KeyStatistics.mergedCorpusHash(shards.map(\.sha256)))
            XCTAssertTrue(m.corpusDescription.contains("[shard 3/3]"))
        }

        // In-memory merge agrees, and refuses statistics of another layer, model or hook.
        let a = try StatsStore.read(path: paths[0], layer: 1), b = try StatsStore.read(path: paths[1], layer: 1)
        XCTAssertEqual(try a.merged(with: b).count, a.count + b.count)
        let layer0 = try StatsStore.read(path: paths[1], layer: 0)
        XCTAssertThrowsError(try a.merged(with: layer0)) {
            XCTAssertEqual($0 as? EditingError, .statisticsMismatch(field: "layer", expected: "0", found: "1",
                                                                    source: "being merged"))
        }
        var other = b
        other.modelSHA256 = String(repeating: "cd", count: 32)
        XCTAssertThrowsError(try a.merged(with: other)) { error in
            guard case let .statisticsMismatch(field, _, _, _)? = error as? EditingError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "model_sha256")
            XCTAssertNotNil((error as? EditingError)?.hint)
        }
        // Shards of another model cannot be merged into one file.
        try StatsStore.write([other], to: dir + "/other.stats.h5")
        XCTAssertThrowsError(try StatsStore.merge(paths: [paths[0], dir + "/other.stats.h5"], into: dir + "/bad.h5"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad.h5"))
    }

    // MARK: Storage

    private func sampleStats() throws -> [KeyStatistics] {
        let model = EditingTiny.make()
        return try StatisticsCollector.collect(model: model, modelSHA256: modelHash, layers: [0, 1],
                                               corpus: corpus(EditingTiny.randomSequences(6, lengths: 10...30), "sample"),
                                               options: CollectionOptions(toolVersion: "test 1.0"))
    }

    func testHDF5RoundTripIsBitExact() throws {
        let stats = try sampleStats()
        let dir = try EditingPaths.tempDir(self)
        let path = dir + "/m.stats.h5"
        try StatsStore.write(stats, to: path)
        let back = try StatsStore.readAll(path: path)
        XCTAssertEqual(back, stats)
        for (b, s) in zip(back, stats) {
            XCTAssertEqual(b.secondMoment.map(\.bitPattern), s.secondMoment.map(\.bitPattern))
            XCTAssertEqual(b.hash, s.hash)
            XCTAssertEqual(b.toolVersion, "test 1.0")
            XCTAssertEqual(b.dtype, "float64")
        }
        XCTAssertEqual(try StatsStore.layers(path: path), [0, 1])
        let summaries = try StatsStore.summaries(path: path)
        XCTAssertEqual(summaries.map(\.statsSHA256), stats.map(\.hash))
        XCTAssertEqual(summaries[0].corpusDescription, "sample")

        // Attributes and datasets are where the format says, as HDF5 types other tools read.
        let file = try HDF5File(openingForReading: path)
        let g = try file.root.group("stats/layer_1")
        XCTAssertEqual(try g.intAttribute("count"), stats[1].count)
        XCTAssertEqual(try g.stringAttribute("hook_name"), "blocks.1.mlp.hook_post")
        XCTAssertEqual(try g.stringAttribute("model_sha256"), modelHash)
        XCTAssertEqual(try g.stringAttribute("corpus_sha256"), stats[1].corpusSHA256)
        XCTAssertEqual(try g.stringAttribute("dtype"), "float64")
        XCTAssertEqual(try g.datasetShape("second_moment"), [24, 24])
        XCTAssertEqual(try g.datasetShape("sum"), [24])
        try file.close()

        // save() adds a layer and replaces an existing one.
        var replaced = stats[1]
        replaced.corpusDescription = "replaced"
        try StatsStore.save([replaced], to: path)
        XCTAssertEqual(try StatsStore.read(path: path, layer: 1).corpusDescription, "replaced")
        XCTAssertEqual(try StatsStore.read(path: path, layer: 0), stats[0])
        var foreign = stats[0]
        foreign.modelSHA256 = String(repeating: "0", count: 64)
        XCTAssertThrowsError(try StatsStore.save([foreign], to: path))

        XCTAssertEqual(StatsStore.defaultPath(forModel: "weights/SmolLM2-135M-Instruct.Q4_1.gguf"),
                       "weights/SmolLM2-135M-Instruct.Q4_1.stats.h5")
        XCTAssertEqual(StatsStore.defaultPath(forModel: "/m/x.h5"), "/m/x.stats.h5")
    }

    func testH5DumpReadsTheFile() throws {
        let h5dump = ["/usr/bin/h5dump", "/usr/local/bin/h5dump"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let h5dump else { throw XCTSkip("h5dump not installed") }
        let dir = try EditingPaths.tempDir(self)
        let path = dir + "/m.stats.h5"
        try StatsStore.write(try sampleStats(), to: path)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: h5dump)
        p.arguments = ["-H", path]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        for needle in ["GROUP \"layer_0\"", "DATASET \"second_moment\"", "H5T_IEEE_F64LE", "( 24, 24 )",
                       "ATTRIBUTE \"model_sha256\"", "ATTRIBUTE \"stats_sha256\"", "ATTRIBUTE \"corpus_description\""] {
            XCTAssertTrue(out.contains(needle), "h5dump -H lacks \(needle)")
        }
    }

    func testLoadRefusesWrongLayerWrongModelAndDamagedFiles() throws {
        let stats = try sampleStats()
        let dir = try EditingPaths.tempDir(self)
        let path = dir + "/m.stats.h5"
        try StatsStore.write([stats[1]], to: path)
        XCTAssertEqual(try StatsStore.load(path: path, layer: 1, modelSHA256: modelHash, dimension: 24), stats[1])

        XCTAssertThrowsError(try StatsStore.load(path: path, layer: 0, modelSHA256: modelHash)) {
            XCTAssertEqual($0 as? EditingError, .statisticsNotFound(path: path, layer: 0, available: [1]))
        }
        let otherModel = String(repeating: "ef", count: 32)
        XCTAssertThrowsError(try StatsStore.load(path: path, layer: 1, modelSHA256: otherModel)) { error in
            XCTAssertEqual(error as? EditingError, .statisticsMismatch(field: "model_sha256", expected: otherModel,
                                                                       found: self.modelHash, source: "\(path) layer 1"))
            XCTAssertTrue("\(error)".contains(otherModel))
        }
        XCTAssertThrowsError(try StatsStore.load(path: path, layer: 1, modelSHA256: modelHash, dimension: 1536)) { error in
            guard case let .statisticsMismatch(field, _, _, _)? = error as? EditingError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "dimension")
        }
        XCTAssertThrowsError(try StatsStore.load(path: dir + "/missing.h5", layer: 1, modelSHA256: modelHash)) {
            XCTAssertEqual($0 as? EditingError, .fileNotFound(path: dir + "/missing.h5"))
        }
        // Statistics stored under another layer's group (a mislabelled file) are refused too.
        try HDF5File.updateAtomically(at: path) { f in try f.root.group("stats/layer_1").setAttribute("layer", 5) }
        XCTAssertThrowsError(try StatsStore.load(path: path, layer: 1, modelSHA256: modelHash)) {
            guard case .statisticsCorrupt? = $0 as? EditingError else { return XCTFail("\($0)") }
        }
        // Tampered numbers no longer match stats_sha256.
        try StatsStore.write([stats[1]], to: path)
        try HDF5File.updateAtomically(at: path) { f in try f.root.group("stats/layer_1").setAttribute("count", 1) }
        XCTAssertThrowsError(try StatsStore.read(path: path, layer: 1)) {
            XCTAssertEqual($0 as? EditingError, .statisticsCorrupt(path: path,
                                                                   problem: "layer 1: contents do not match stats_sha256"))
        }
        // Not a statistics file.
        try HDF5File.createAtomically(at: dir + "/other.h5") { f in try f.root.setAttribute("format", "scalpel-model") }
        XCTAssertThrowsError(try StatsStore.readAll(path: dir + "/other.h5")) {
            guard case .statisticsCorrupt? = $0 as? EditingError else { return XCTFail("\($0)") }
        }
    }

    func testHashCoversNumbersAndIdentity() throws {
        let s = try sampleStats()[0]
        XCTAssertEqual(s.hash.count, 64)
        XCTAssertEqual(s.hash, s.hash)
        var t = s
        t.corpusDescription = "other words"; t.created = "2000-01-01T00:00:00Z"
        XCTAssertEqual(t.hash, s.hash, "provenance text does not change the numbers")
        for change in [{ (x: inout KeyStatistics) in x.secondMoment[5] += 1e-12 }, { $0.count += 1 },
                       { $0.layer = 3 }, { $0.modelSHA256 = "x" }, { $0.sum[0] = -$0.sum[0] }] {
            var u = s
            change(&u)
            XCTAssertNotEqual(u.hash, s.hash)
        }
    }

    // MARK: Corpora

    func testCorpusFileParsing() throws {
        let dir = try EditingPaths.tempDir(self)
        let tok = try EditingTiny.tokenizer()
        let txt = dir + "/a.txt"
        try "The cat sat on the mat. It was warm.\nHe said hello.".write(toFile: txt, atomically: true, encoding: .utf8)
        XCTAssertEqual(try CorpusSampler.readTexts(path: txt).count, 1)
        let c = try CorpusSampler.fromFiles([txt], tokenizer: tok, chunkTokens: 10)
        let ids = tok.encode("The cat sat on the mat. It was warm.\nHe said hello.")
        XCTAssertEqual(c.sequences.flatMap { $0 }, ids)
        let multi = String(repeating: "The cat sat.\n  It was warm, he said.\n\nOn a mat.\n", count: 20)
        for block in [1, 7, 30, 1 << 16] {
            XCTAssertEqual(CorpusSampler.tokenize(multi, tokenizer: tok, limit: nil, blockBytes: block),
                           tok.encode(multi, addBOS: false))
        }
        XCTAssertGreaterThanOrEqual(CorpusSampler.tokenize(multi, tokenizer: tok, limit: 50, blockBytes: 10).count, 50)
        XCTAssertTrue(c.sequences.dropLast().allSatisfy { $0.count == 10 })
        XCTAssertTrue(c.description.contains("a.txt"))
        let capped = try CorpusSampler.fromFiles([txt], tokenizer: tok, chunkTokens: 10, maxTokens: 25)
        XCTAssertEqual(capped.sequences.map(\.count), [10, 10, 5])
        XCTAssertNotEqual(capped.sha256, c.sha256)

        let jsonl = dir + "/b.jsonl"
        try "{\"text\": \"one two\"}\n\n{\"text\": \"three\", \"id\": 2}\n".write(toFile: jsonl, atomically: true, encoding: .utf8)
        XCTAssertEqual(try CorpusSampler.readTexts(path: jsonl), ["one two", "three"])
        let j = try CorpusSampler.fromFiles([jsonl], tokenizer: tok, chunkTokens: 4)
        XCTAssertEqual(j.sequences, [tok.encode("one "), tok.encode("two"), tok.encode("thre"), tok.encode("e")])

        let json = dir + "/c.json"
        try "[{\"text\": \"abc\"}, {\"text\": \"de\"}]".write(toFile: json, atomically: true, encoding: .utf8)
        XCTAssertEqual(try CorpusSampler.readTexts(path: json), ["abc", "de"])

        let bad = dir + "/d.jsonl"
        try "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try CorpusSampler.readTexts(path: bad)) { error in
            XCTAssertEqual(error as? EditingError, .corpusMissingTextField(path: bad, record: 2, field: "text"))
            XCTAssertNotNil((error as? EditingError)?.hint)
        }
        let badJSON = dir + "/e.json"
        try "[{\"content\": \"x\"}]".write(toFile: badJSON, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try CorpusSampler.readTexts(path: badJSON)) {
            XCTAssertEqual($0 as? EditingError, .corpusMissingTextField(path: badJSON, record: 1, field: "text"))
        }
        let other = dir + "/h.jsonl"
        try "{\"body\": \"x\"}\n".write(toFile: other, atomically: true, encoding: .utf8)
        XCTAssertEqual(try CorpusSampler.readTexts(path: other, field: "body"), ["x"])
        let csv = dir + "/f.csv"
        try "a,b".write(toFile: csv, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try CorpusSampler.readTexts(path: csv)) {
            XCTAssertEqual($0 as? EditingError, .unsupportedCorpusFile(path: csv))
        }
        let empty = dir + "/g.txt"
        try "".write(toFile: empty, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try CorpusSampler.fromFiles([empty], tokenizer: tok)) {
            guard case .emptyCorpus? = $0 as? EditingError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try CorpusSampler.readTexts(path: dir + "/none.txt")) {
            XCTAssertEqual($0 as? EditingError, .fileNotFound(path: dir + "/none.txt"))
        }
    }

    func testModelSampledCorpusIsDeterministicForASeed() throws {
        let model = EditingTiny.make()
        let tok = try EditingTiny.tokenizer()
        var s = CorpusSampler.SamplingSettings(texts: 7, tokensPerText: 12, seed: 42, seeds: ["The", "It", "He"], batchSize: 4)
        let a = try CorpusSampler.sample(model: model, tokenizer: tok, settings: s)
        let b = try CorpusSampler.sample(model: model, tokenizer: tok, settings: s)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.sequences.count, 7)
        XCTAssertEqual(a.sequences[0].prefix(3), ArraySlice(tok.encode("The")))
        XCTAssertEqual(a.sequences[1].prefix(2), ArraySlice(tok.encode("It")))
        XCTAssertEqual(a.sequences.map(\.count), [15, 14, 14, 15, 14, 14, 15])
        XCTAssertFalse(a.sequences.joined().contains(0), "control tokens are never sampled")
        XCTAssertTrue(a.description.contains("model-sampled: 7 texts, seed 42, temperature 1.0"))
        // Texts are generated per text stream: the batch size does not change them (nor the hash).
        s.batchSize = 1
        XCTAssertEqual(try CorpusSampler.sample(model: model, tokenizer: tok, settings: s), a)
        s.batchSize = 2
        var progress: [Int] = []
        for workers in [1, 3] {
            s.workers = workers
            progress = []
            XCTAssertEqual(try CorpusSampler.sample(model: model, tokenizer: tok, settings: s) { done, _ in progress.append(done) }, a)
            XCTAssertEqual(progress.count, 4)
            XCTAssertEqual(progress.max(), 7)
            if workers == 1 { XCTAssertEqual(progress, [2, 4, 6, 7]) }
        }
        s.batchSize = 4; s.workers = nil
        s.seed = 43
        let c = try CorpusSampler.sample(model: model, tokenizer: tok, settings: s)
        XCTAssertNotEqual(c.sequences, a.sequences)
        XCTAssertNotEqual(c.sha256, a.sha256)
        s.seed = 42; s.temperature = 0.5
        XCTAssertNotEqual(try CorpusSampler.sample(model: model, tokenizer: tok, settings: s).sha256, a.sha256)
    }

    func testTopKSamplingMatchesTheSampler() throws {
        var rng = SeededRandom(seed: 9)
        let logits = (0..<500).map { _ in Float(rng.normal() * 3) }
        for seed in 0..<50 as Range<UInt64> {
            var r1 = SeededRandom(seed: seed), r2 = SeededRandom(seed: seed)
            let fast = logits.withUnsafeBufferPointer {
                CorpusSampler.sampleTopK($0.baseAddress!, count: 500, k: 20, temperature: 0.8, rng: &r1)
            }
            let reference = logits.withUnsafeBufferPointer { Sampler(temperature: 0.8, topK: 20).sample($0, rng: &r2) }
            XCTAssertEqual(fast, reference)
        }
        var r = SeededRandom(seed: 1)
        XCTAssertEqual(logits.withUnsafeBufferPointer {
            CorpusSampler.sampleTopK($0.baseAddress!, count: 500, k: 5, temperature: 0, rng: &r)
        }, logits.indices.max { logits[$0] < logits[$1] })
    }

    // MARK: Real model

    func testRealModelStatisticsArePositiveDefinite() throws {
        let path = try EditingPaths.requireModel()
        let mf = try ModelFile.openGGUF(path)
        // 2,048 tokens: WikiText when the shared data is there, else text sampled from the model (slower).
        let corpus: TokenCorpus
        if FileManager.default.fileExists(atPath: EditingPaths.wikitext) {
            corpus = try CorpusSampler.fromFiles([EditingPaths.wikitext], tokenizer: mf.tokenizer, chunkTokens: 256,
                                                 maxTokens: 2048)
        } else {
            corpus = try CorpusSampler.sample(model: mf.model, tokenizer: mf.tokenizer,
                                              settings: .init(texts: 16, tokensPerText: 127, seed: 1, batchSize: 16))
        }
        XCTAssertEqual(corpus.tokenCount, 2048)
        let t1 = Date()
        let stats = try StatisticsCollector.collect(model: mf.model, modelSHA256: mf.provenance.sourceSHA256, layer: 8,
                                                    corpus: corpus)
        let tCollect = Date().timeIntervalSince(t1)
        print("[stats] real model: collected layer 8 over \(stats.count) tokens in \(tCollect) s "
              + "(\(Double(stats.count) / tCollect) tokens/s)")
        XCTAssertEqual(stats.count, 2048)
        XCTAssertEqual(stats.dimension, 1536)
        XCTAssertEqual(stats.hookName, "blocks.8.mlp.hook_post")
        XCTAssertEqual(stats.modelSHA256, ModelFile.defaultGGUFSHA256)
        XCTAssertEqual(stats.corpusSHA256, corpus.sha256)
        XCTAssertEqual(stats.asymmetry, 0)
        let c = stats.covariance()
        for i in 0..<1536 { XCTAssertGreaterThan(c[i * 1536 + i], 0) }
        // Cholesky succeeds (C is symmetric positive definite): solve C x = C e₀ and get e₀ back.
        let b = (0..<1536).map { c[$0 * 1536] }
        let x = try LAPACK.choleskySolve(c, b, n: 1536)
        XCTAssertEqual(x[0], 1, accuracy: 1e-3)
        // Round trip through the default file name in a temporary folder, loaded for the right model only.
        let dir = try EditingPaths.tempDir(self)
        let statsPath = StatsStore.defaultPath(forModel: dir + "/" + ModelFile.defaultGGUFName)
        XCTAssertTrue(statsPath.hasSuffix("SmolLM2-135M-Instruct.Q4_1.stats.h5"))
        try StatsStore.write([stats], to: statsPath)
        XCTAssertEqual(try StatsStore.load(path: statsPath, layer: 8, modelSHA256: mf.provenance.sourceSHA256), stats)
        XCTAssertThrowsError(try StatsStore.load(path: statsPath, layer: 8, modelSHA256: modelHash))
        XCTAssertThrowsError(try StatsStore.load(path: statsPath, layer: 7, modelSHA256: mf.provenance.sourceSHA256))
    }

    func testRealModelSampledTextAndBlockTokenization() throws {
        let mf = try ModelFile.openGGUF(try EditingPaths.requireModel(), hash: false)
        let settings = CorpusSampler.SamplingSettings(texts: 4, tokensPerText: 20, seed: 5)
        let a = try CorpusSampler.sample(model: mf.model, tokenizer: mf.tokenizer, settings: settings)
        XCTAssertEqual(a, try CorpusSampler.sample(model: mf.model, tokenizer: mf.tokenizer, settings: settings))
        for (i, seq) in a.sequences.enumerated() {
            let text = mf.tokenizer.decode(seq)
            XCTAssertTrue(text.hasPrefix(CorpusSampler.neutralSeeds[i]), text)
            XCTAssertFalse(seq.contains { mf.tokenizer.isControl($0) })
            XCTAssertEqual(seq.count, mf.tokenizer.encode(CorpusSampler.neutralSeeds[i]).count + 20)
        }
        // Block-wise tokenization of a text file equals tokenizing it whole.
        if let text = try? String(contentsOfFile: EditingPaths.wikitext, encoding: .utf8) {
            let part = String(text.prefix(60_000))
            XCTAssertEqual(CorpusSampler.tokenize(part, tokenizer: mf.tokenizer, limit: nil, blockBytes: 2048),
                           mf.tokenizer.encode(part, addBOS: false))
        }
    }
}

/// Measurements for docs/rome.md (run with SCALPEL_STATS_BENCH=1 in a release build; skipped otherwise).
final class StatisticsBenchmarks: XCTestCase {
    private func requireBench() throws {
        guard ProcessInfo.processInfo.environment["SCALPEL_STATS_BENCH"] == "1" else {
            throw XCTSkip("set SCALPEL_STATS_BENCH=1 to run the statistics benchmarks")
        }
    }

    private func time(_ body: () throws -> Void) rethrows -> Double {
        let t0 = Date(); try body(); return Date().timeIntervalSince(t0)
    }

    func testForwardAndBLASRates() throws {
        try requireBench()
        let mf = try ModelFile.openGGUF(try EditingPaths.requireModel(), hash: false)
        let m = mf.model, f = m.config.ffnDim
        var rng = SeededRandom(seed: 1)
        let batch = (0..<8).map { _ in (0..<256).map { _ in Int(rng.next() % 49152) } }
        _ = try m.forward(batch, logitRows: .none, upTo: 9)
        let tf = try time { _ = try m.forward(batch, logitRows: .none, upTo: 9) }
        let a = [Double](repeating: 0.01, count: 2048 * f)
        var c = [Double](repeating: 0, count: f * f)
        let ts = time { a.withUnsafeBufferPointer { ap in c.withUnsafeMutableBufferPointer { cp in
            BLAS.dsyrkUpperAtA(n: f, k: 2048, a: ap.baseAddress!, lda: f, c: cp.baseAddress!, ldc: f) } } }
        let x = [Float](repeating: 0.5, count: 2048 * 576), w = [Float](repeating: 0.5, count: 3072 * 576)
        var y = [Float](repeating: 0, count: 2048 * 3072)
        let tg = time { x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in y.withUnsafeMutableBufferPointer { yp in
            BLAS.sgemm(transB: true, m: 2048, n: 3072, k: 576, a: xp.baseAddress!, lda: 576, b: wp.baseAddress!, ldb: 576,
                       c: yp.baseAddress!, ldc: 3072) } } } }
        print("[stats-bench] threads \(BLAS.threads); forward 2048 rows upTo 9: \(tf) s (\(2048 / tf) tok/s); "
              + "dsyrk 2048x1536: \(ts) s (\(Double(f * f) * 2048 / ts / 1e9) GFLOP/s); "
              + "sgemm 2048x3072x576: \(tg) s (\(2 * 2048.0 * 3072 * 576 / tg / 1e9) GFLOP/s)")
    }

    func testSamplingThroughput() throws {
        try requireBench()
        let mf = try ModelFile.openGGUF(try EditingPaths.requireModel(), hash: false)
        for b in (ProcessInfo.processInfo.environment["SCALPEL_STATS_SAMPLE_BATCHES"] ?? "32,64,128").split(separator: ",").map({ Int($0)! }) {
            for workers in [1, 2] {
                let t = try time { _ = try CorpusSampler.sample(model: mf.model, tokenizer: mf.tokenizer,
                                                                settings: .init(texts: 2 * b, tokensPerText: 128, batchSize: b,
                                                                                workers: workers)) }
                let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").first ?? "?"
                print("[stats-bench] sampling \(2 * b) texts x 128 tokens, batches of \(b), \(workers) workers: \(t) s, "
                      + "\(Double(2 * b * 128) / t) tokens/s (load average \(load))")
            }
        }
    }

    /// Collection throughput at layer 8 on ~50k WikiText tokens, for a few batch shapes.
    func testCollectionThroughput() throws {
        try requireBench()
        let mf = try ModelFile.openGGUF(try EditingPaths.requireModel())
        guard FileManager.default.fileExists(atPath: EditingPaths.wikitext) else { throw XCTSkip("no WikiText") }
        let shapes = (ProcessInfo.processInfo.environment["SCALPEL_STATS_SHAPES"] ?? "256x2048,512x2048,256x4096,256x1024")
            .split(separator: ",").map { $0.split(separator: "x").map { Int($0)! } }.map { ($0[0], $0[1]) }
        let layers = (ProcessInfo.processInfo.environment["SCALPEL_STATS_LAYERS"] ?? "8").split(separator: ",").map { Int($0)! }
        let workerCounts = (ProcessInfo.processInfo.environment["SCALPEL_STATS_WORKERS"] ?? "1,2").split(separator: ",").map { Int($0)! }
        for (chunk, rows) in shapes { for workers in workerCounts {
            var corpus = try CorpusSampler.fromFiles([EditingPaths.wikitext], tokenizer: mf.tokenizer, chunkTokens: chunk,
                                                     maxTokens: 51_200)
            let t = try time {
                _ = try StatisticsCollector.collect(model: mf.model, modelSHA256: mf.provenance.sourceSHA256, layers: layers,
                                                    corpus: corpus, options: CollectionOptions(rowsPerBatch: rows, workers: workers))
            }
            let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").first ?? "?"
            print("[stats-bench] layers \(layers), \(corpus.tokenCount) WikiText tokens, chunks \(chunk), \(rows) rows/batch, "
                  + "\(workers) workers: \(t) s, \(Double(corpus.tokenCount) / t) tokens/s (load average \(load))")
            corpus.sequences = []
        } }
    }

    /// C from 100k WikiText tokens vs C from 100k model-sampled tokens at layer 8 (docs/rome.md).
    func testWikiTextVersusModelSampled() throws {
        try requireBench()
        let mf = try ModelFile.openGGUF(try EditingPaths.requireModel())
        guard FileManager.default.fileExists(atPath: EditingPaths.wikitext) else { throw XCTSkip("no WikiText") }
        let layer = 8, n = 100_000, hash = mf.provenance.sourceSHA256
        let t0 = Date()
        let wiki = try CorpusSampler.fromFiles([EditingPaths.wikitext], tokenizer: mf.tokenizer, chunkTokens: 256, maxTokens: n)
        print("[stats-bench] tokenized \(wiki.tokenCount) WikiText tokens in \(Date().timeIntervalSince(t0)) s")
        // Model-sampled: 782 texts of 1 seed token + 127 sampled = 100,096 tokens (cached in /tmp between runs).
        let settings = CorpusSampler.SamplingSettings(texts: 782, tokensPerText: 127, seed: 0, batchSize: 128)
        let cachePath = NSTemporaryDirectory() + "scalpel-sampled-782x127-seed0.json"
        let sampled: TokenCorpus
        if let data = FileManager.default.contents(atPath: cachePath),
           let d = try JSONSerialization.jsonObject(with: data) as? [String: Any],
           let seqs = d["sequences"] as? [[Int]], let h = d["sha256"] as? String, let desc = d["description"] as? String {
            var c = TokenCorpus(sequences: seqs, settings: "", description: desc)
            c.sha256 = h
            sampled = c
        } else {
            let t1 = Date()
            sampled = try CorpusSampler.sample(model: mf.model, tokenizer: mf.tokenizer, settings: settings) { done, total in
                if done % 128 == 0 || done == total { print("[stats-bench] sampled \(done)/\(total) texts") }
            }
            let ts = Date().timeIntervalSince(t1)
            print("[stats-bench] sampled \(sampled.tokenCount) tokens in \(ts) s (\(Double(sampled.tokenCount) / ts) tokens/s)")
            let json: [String: Any] = ["sequences": sampled.sequences, "sha256": sampled.sha256, "description": sampled.description]
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: cachePath))
        }
        print("[stats-bench] sample text: \(mf.tokenizer.decode(sampled.sequences[0]).prefix(300))")
        func stats(_ c: TokenCorpus) throws -> (KeyStatistics, Double) {
            let t = Date()
            let s = try StatisticsCollector.collect(model: mf.model, modelSHA256: hash, layer: layer, corpus: c)
            return (s, Date().timeIntervalSince(t))
        }
        func halves(_ c: TokenCorpus) -> (TokenCorpus, TokenCorpus) { let s = c.shards(2); return (s[0], s[1]) }
        let (w1, w2) = halves(wiki), (s1, s2) = halves(sampled)
        let (sw1, tw1) = try stats(w1), (sw2, tw2) = try stats(w2), (ss1, ts1) = try stats(s1), (ss2, ts2) = try stats(s2)
        let w = try sw1.merged(with: sw2), s = try ss1.merged(with: ss2)
        let tw = tw1 + tw2, tsd = ts1 + ts2
        print("[stats-bench] collected WikiText \(w.count) tokens in \(tw) s (\(Double(w.count) / tw) tokens/s); "
              + "sampled \(s.count) tokens in \(tsd) s (\(Double(s.count) / tsd) tokens/s)")
        for centered in [false, true] {
            print("[stats-bench] centered=\(centered): ‖C_sampled − C_wiki‖/‖C_wiki‖ = \(s.relativeFrobeniusDifference(to: w, centered: centered)); "
                  + "WikiText half vs half = \(sw1.relativeFrobeniusDifference(to: sw2, centered: centered)); "
                  + "sampled half vs half = \(ss1.relativeFrobeniusDifference(to: ss2, centered: centered)); "
                  + "WikiText half vs all = \(sw1.relativeFrobeniusDifference(to: w, centered: centered))")
        }
        // What ROME uses: the direction C⁻¹ k for keys k of held-out WikiText tokens.
        let f = w.dimension
        let held = Array(mf.tokenizer.encode(try String(contentsOfFile: EditingPaths.wikitext, encoding: .utf8)).suffix(2048))
        var keys: [[Double]] = []
        var hooks = Hooks()
        hooks.add(HookPoint(layer, .mlpPost)) { a in
            for r in stride(from: 50, to: a.layout.rows, by: 200) { keys.append((0..<f).map { Double(a.data[r * f + $0]) }) }
        }
        _ = try mf.model.forward([Array(held.prefix(1024)), Array(held.suffix(1024))], hooks: hooks, logitRows: .none, upTo: layer + 1)
        func cosines(_ a: KeyStatistics, _ b: KeyStatistics) throws -> [Double] {
            let ca = a.covariance(), cb = b.covariance()
            return try keys.map { k in
                let x = try LAPACK.choleskySolve(ca, k, n: f), y = try LAPACK.choleskySolve(cb, k, n: f)
                var dot = 0.0, nx = 0.0, ny = 0.0
                for i in 0..<f { dot += x[i] * y[i]; nx += x[i] * x[i]; ny += y[i] * y[i] }
                return dot / (nx * ny).squareRoot()
            }
        }
        func summary(_ v: [Double]) -> String {
            let m = v.reduce(0, +) / Double(v.count)
            return String(format: "mean %.4f min %.4f (n=%d)", m, v.min() ?? 0, v.count)
        }
        print("[stats-bench] cos(C_wiki⁻¹k, C_sampled⁻¹k): \(summary(try cosines(w, s))); "
              + "WikiText halves: \(summary(try cosines(sw1, sw2))); sampled halves: \(summary(try cosines(ss1, ss2)))")
        let dir = NSTemporaryDirectory() + "scalpel-stats-bench"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try StatsStore.write([w], to: dir + "/wikitext.stats.h5")
        try StatsStore.write([s], to: dir + "/sampled.stats.h5")
        let size = (try FileManager.default.attributesOfItem(atPath: dir + "/sampled.stats.h5")[.size] as? Int) ?? 0
        print("[stats-bench] stats file for one layer: \(size) bytes")
    }

}
