import Foundation
import Hashing
import Linalg
import Llama

// Shape key: F key width (MLP hidden width, the input of the down projection), N rows of a packed batch.

/// Second-moment statistics of the keys k (rows of `blocks.{l}.mlp.hook_post`, the input of layer l's down
/// projection) over a corpus: the count, Σ k and Σ k kᵀ, in float64, with where they came from.
///
/// ROME's rank-one update uses C = E[k kᵀ] (the uncentered second moment, `covariance()`); the sum is kept so the
/// centered covariance and the mean are available too, and so shards can be merged exactly (sums add).
public struct KeyStatistics: Equatable, Sendable {
    /// Version of the hash and file layout.
    public static let formatVersion = 1

    /// Layer whose keys these are.
    public var layer: Int
    /// Hook the keys were read at, e.g. `blocks.8.mlp.hook_post`.
    public var hookName: String
    /// F, the key width.
    public var dimension: Int
    /// Number of key rows (tokens) accumulated.
    public var count: Int
    /// Σ k, [F].
    public var sum: [Double]
    /// Σ k kᵀ, [F, F] row-major, full and symmetric.
    public var secondMoment: [Double]

    // Provenance.
    /// SHA-256 of the model's source checkpoint (`ModelProvenance.sourceSHA256`).
    public var modelSHA256: String
    /// SHA-256 identifying the corpus (see `TokenCorpus.sha256`); for merged shards, the hash of the shards' list.
    public var corpusSHA256: String
    /// Human-readable corpus (file names, or "model-sampled: N texts, seed S, temperature T, …").
    public var corpusDescription: String
    /// Corpus hashes of the shards these statistics sum (one entry when collected in one pass).
    public var corpusParts: [String]
    /// ISO 8601 UTC time the statistics were finished (or merged).
    public var created: String
    /// Version of the tool that collected them.
    public var toolVersion: String

    /// Storage type of the moments (always float64).
    public var dtype: String { "float64" }
    /// Tokens seen (same as `count`).
    public var tokenCount: Int { count }

    public init(layer: Int, hookName: String, dimension: Int, count: Int, sum: [Double], secondMoment: [Double],
                modelSHA256: String, corpusSHA256: String, corpusDescription: String, corpusParts: [String]? = nil,
                created: String = KeyStatistics.now(), toolVersion: String) {
        precondition(sum.count == dimension && secondMoment.count == dimension * dimension, "moment shapes")
        self.layer = layer; self.hookName = hookName; self.dimension = dimension; self.count = count
        self.sum = sum; self.secondMoment = secondMoment
        self.modelSHA256 = modelSHA256; self.corpusSHA256 = corpusSHA256; self.corpusDescription = corpusDescription
        self.corpusParts = corpusParts ?? [corpusSHA256]
        self.created = created; self.toolVersion = toolVersion
    }

    /// Current time as ISO 8601 UTC (the `created` stamp).
    public static func now() -> String {
        let f = ISO8601DateFormatter()
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: Date())
    }

    /// The hook name for MLP keys of layer `l`.
    public static func hookName(layer l: Int) -> String { HookPoint(l, .mlpPost).name }

    /// E[k], [F].
    public var mean: [Double] {
        let n = Double(max(count, 1))
        return sum.map { $0 / n }
    }

    /// C [F, F] row-major: E[k kᵀ] (uncentered, what ROME uses) or, with `centered`, E[k kᵀ] − E[k] E[k]ᵀ (the
    /// population covariance).
    public func covariance(centered: Bool = false) -> [Double] {
        let f = dimension, n = Double(max(count, 1))
        var c = secondMoment.map { $0 / n }
        if centered {
            let mu = mean
            c.withUnsafeMutableBufferPointer { p in
                for i in 0..<f { for j in 0..<f { p[i * f + j] -= mu[i] * mu[j] } }
            }
        }
        return c
    }

    /// Statistics of both corpora together (sums and counts add). Throws `statisticsMismatch` unless both are of
    /// the same model, layer, hook and width.
    public func merged(with other: KeyStatistics) throws -> KeyStatistics {
        try requireCompatible(other)
        var out = self
        out.count += other.count
        out.sum.withUnsafeMutableBufferPointer { s in for i in 0..<s.count { s[i] += other.sum[i] } }
        other.secondMoment.withUnsafeBufferPointer { o in
            out.secondMoment.withUnsafeMutableBufferPointer { m in for i in 0..<m.count { m[i] += o[i] } }
        }
        out.corpusParts = corpusParts + other.corpusParts
        out.corpusSHA256 = KeyStatistics.mergedCorpusHash(out.corpusParts)
        out.corpusDescription = corpusDescription + " + " + other.corpusDescription
        out.created = KeyStatistics.now()
        return out
    }

    /// Merges several shards in order (see `merged(with:)`).
    public static func merge(_ shards: [KeyStatistics]) throws -> KeyStatistics {
        guard var acc = shards.first else {
            throw EditingError.invalidArgument(name: "shards", reason: "nothing to merge")
        }
        for s in shards.dropFirst() { acc = try acc.merged(with: s) }
        return acc
    }

    /// The corpus hash of merged shards: SHA-256 of "merged" and the shard hashes, one a line.
    public static func mergedCorpusHash(_ parts: [String]) -> String {
        parts.count == 1 ? parts[0] : SHA256.hex(string: (["merged"] + parts).joined(separator: "\n"))
    }

    /// Throws `statisticsMismatch` when `other` is of another model, layer, hook or width.
    public func requireCompatible(_ other: KeyStatistics, source: String = "being merged") throws {
        try require(modelSHA256: other.modelSHA256, layer: other.layer, hookName: other.hookName,
                     dimension: other.dimension, source: source)
    }

    /// Throws `statisticsMismatch` naming the first field that differs.
    func require(modelSHA256 model: String?, layer l: Int?, hookName hook: String?, dimension f: Int?,
                 source: String) throws {
        if let model, model != modelSHA256 {
            throw EditingError.statisticsMismatch(field: "model_sha256", expected: model, found: modelSHA256,
                                                  source: source)
        }
        if let l, l != layer {
            throw EditingError.statisticsMismatch(field: "layer", expected: "\(l)", found: "\(layer)", source: source)
        }
        if let hook, hook != hookName {
            throw EditingError.statisticsMismatch(field: "hook_name", expected: hook, found: hookName, source: source)
        }
        if let f, f != dimension {
            throw EditingError.statisticsMismatch(field: "dimension", expected: "\(f)", found: "\(dimension)",
                                                  source: source)
        }
    }

    /// SHA-256 (hex) identifying these statistics, used by the edit log to reference them. It covers, in order:
    /// the ASCII header `scalpel-key-statistics-v1` and the fields `layer`, `hook`, `model`, `count`, `dimension`
    /// (each `name=value`, NUL-terminated), then Σ k kᵀ (F·F float64, little-endian, row-major) and Σ k (F float64).
    /// Provenance that does not change the numbers (corpus description, time, tool) is not covered.
    public var hash: String {
        var h = SHA256()
        let header = "scalpel-key-statistics-v\(KeyStatistics.formatVersion)\0layer=\(layer)\0hook=\(hookName)\0"
            + "model=\(modelSHA256)\0count=\(count)\0dimension=\(dimension)\0"
        h.update(Array(header.utf8))
        KeyStatistics.hashDoubles(secondMoment, into: &h)
        KeyStatistics.hashDoubles(sum, into: &h)
        return SHA256.hexString(h.finalize())
    }

    private static func hashDoubles(_ values: [Double], into h: inout SHA256) {
        #if _endian(little)
        values.withUnsafeBytes { h.update($0) }
        #else
        let le = values.map { $0.bitPattern.littleEndian }
        le.withUnsafeBytes { h.update($0) }
        #endif
    }

    /// Largest |C[i][j] − C[j][i]| of the second moment (0 for statistics finished by the collector).
    public var asymmetry: Double {
        var worst = 0.0
        for i in 0..<dimension { for j in (i + 1)..<max(dimension, i + 1) {
            worst = max(worst, abs(secondMoment[i * dimension + j] - secondMoment[j * dimension + i]))
        } }
        return worst
    }

    /// ‖A − B‖_F / ‖B‖_F between this statistics' covariance and `reference`'s (same width).
    public func relativeFrobeniusDifference(to reference: KeyStatistics, centered: Bool = false) -> Double {
        precondition(reference.dimension == dimension, "widths differ")
        let a = covariance(centered: centered), b = reference.covariance(centered: centered)
        var num = 0.0, den = 0.0
        for i in 0..<a.count { let d = a[i] - b[i]; num += d * d; den += b[i] * b[i] }
        return (num / max(den, .leastNormalMagnitude)).squareRoot()
    }
}

/// Progress of a collection, reported after each batch.
public struct CollectionProgress: Sendable {
    public var tokensDone: Int
    public var tokensTotal: Int
    public var seconds: Double
    public var tokensPerSecond: Double { seconds > 0 ? Double(tokensDone) / seconds : 0 }
}

/// How a collection batches and spreads its work.
public struct CollectionOptions: Sendable {
    /// Rows (tokens) per forward pass: sequences (or pieces) are packed whole until the next would exceed it (one
    /// longer than this runs alone). Large batches keep the matrix products and the float64 rank-k updates efficient.
    public var rowsPerBatch = 2048
    /// Sequences longer than this are split into consecutive pieces of at most this many tokens (each piece starts
    /// at position 0). Also capped at the model's context length.
    public var maxSequenceLength = 512
    /// Forward passes run at once, each on its own batches with single-threaded BLAS (data parallelism avoids
    /// BLAS's thread hand-offs and overlaps the element-wise work); nil = one per processor, at most 4. With more
    /// than one, OpenBLAS is set to one thread process-wide during `accumulate` and restored after it. Batch i
    /// always goes to worker i mod `workers` and workers' sums are added in order, so results are reproducible for a
    /// given worker count (other counts differ in float64 rounding only).
    public var workers: Int?
    /// Written into the statistics' provenance.
    public var toolVersion = "scalpel"
    public init(rowsPerBatch: Int = 2048, maxSequenceLength: Int = 512, workers: Int? = nil,
                toolVersion: String = "scalpel") {
        self.rowsPerBatch = rowsPerBatch; self.maxSequenceLength = maxSequenceLength; self.workers = workers
        self.toolVersion = toolVersion
    }

    /// Workers used when `workers` is nil.
    public static var automaticWorkers: Int { max(1, min(ProcessInfo.processInfo.activeProcessorCount, 4)) }
}

/// Accumulates key statistics of one or more layers by running the model up to the deepest one (no logits) over
/// token sequences and adding each batch's keys with a float64 rank-k update (`BLAS.dsyrkUpperAtA`).
public final class StatisticsCollector {
    public let model: LlamaModel
    /// Layers collected, ascending.
    public let layers: [Int]
    public let modelSHA256: String
    public let options: CollectionOptions
    /// Tokens accumulated so far.
    public private(set) var tokenCount = 0
    /// One accumulator per layer for each worker (grown on demand).
    private var workerAccumulators: [[Int: Accumulator]] = []
    /// Float64 keys of one batch, one per worker.
    private var scratch: [Scratch] = []

    /// - Parameters:
    ///   - layers: layers whose `mlp.hook_post` keys to collect (one forward pass serves them all).
    ///   - modelSHA256: the model's source hash (`ModelFile.provenance.sourceSHA256`), recorded in the statistics.
    public init(model: LlamaModel, layers: [Int], modelSHA256: String, options: CollectionOptions = CollectionOptions()) throws {
        let c = model.config
        guard !layers.isEmpty else { throw EditingError.invalidArgument(name: "layers", reason: "no layer given") }
        for l in layers { try EditRequest.requireLayer(l, layers: c.layers) }
        guard options.rowsPerBatch > 0, options.maxSequenceLength > 0, (options.workers ?? 1) > 0 else {
            throw EditingError.invalidArgument(name: "options",
                                               reason: "rowsPerBatch, maxSequenceLength and workers must be positive")
        }
        self.model = model
        self.layers = Array(Set(layers)).sorted()
        self.modelSHA256 = modelSHA256
        self.options = options
    }

    /// Longest piece a sequence is run as.
    var pieceLength: Int { max(1, min(options.maxSequenceLength, model.config.contextLength)) }

    /// The sequences as they are run: each split into consecutive pieces of at most `pieceLength` tokens, packed in
    /// order into batches of at most `rowsPerBatch` rows (a longer piece alone). Empty sequences are dropped.
    func batches(_ sequences: [[Int]]) -> [[[Int]]] {
        let p = pieceLength
        var out: [[[Int]]] = [], batch: [[Int]] = [], rows = 0
        for s in sequences {
            var i = 0
            while i < s.count {
                let piece = Array(s[i..<min(i + p, s.count)])
                if !batch.isEmpty && rows + piece.count > options.rowsPerBatch { out.append(batch); batch = []; rows = 0 }
                batch.append(piece); rows += piece.count; i += p
            }
        }
        if !batch.isEmpty { out.append(batch) }
        return out
    }

    private func ensureWorkers(_ n: Int) {
        while workerAccumulators.count < n {
            var acc: [Int: Accumulator] = [:]
            for l in layers { acc[l] = Accumulator(width: model.config.ffnDim) }
            workerAccumulators.append(acc)
            scratch.append(Scratch())
        }
    }

    /// Runs the model over `sequences` (packed into batches of about `rowsPerBatch` rows) and adds their keys.
    /// - Parameter progress: called after each batch with tokens done out of these sequences' tokens (from a worker
    ///   thread when there are several workers, one call at a time).
    public func accumulate(_ sequences: [[Int]], progress: ((CollectionProgress) -> Void)? = nil) throws {
        let work = batches(sequences)
        guard !work.isEmpty else { return }
        for b in work { try model.validate(b) }
        let rows = work.map { $0.reduce(0) { $0 + $1.count } }
        let total = rows.reduce(0, +)
        let workers = min(options.workers ?? CollectionOptions.automaticWorkers, work.count)
        ensureWorkers(workers)
        let upTo = layers.last! + 1, start = Date(), lock = NSLock()
        var done = 0, failure: Error?

        func run(_ i: Int, worker w: Int) {
            var hooks = Hooks()
            let scratch = self.scratch[w]
            for (l, acc) in workerAccumulators[w] {
                hooks.add(HookPoint(l, .mlpPost)) { a in acc.add(a.data, rows: a.layout.rows, scratch: scratch) }
            }
            do {
                _ = try model.forward(work[i], hooks: hooks, logitRows: .none, upTo: upTo)
            } catch {
                lock.lock(); failure = failure ?? error; lock.unlock()
                return
            }
            lock.lock(); defer { lock.unlock() }
            done += rows[i]
            progress?(CollectionProgress(tokensDone: done, tokensTotal: total, seconds: Date().timeIntervalSince(start)))
        }

        if workers == 1 {
            for i in work.indices { run(i, worker: 0); if let failure { throw failure } }
        } else {
            // The batch with the longest piece runs first, alone, so the model's position tables are fully grown
            // before forward passes run concurrently.
            let longest = work.indices.max { work[$0].map(\.count).max()! < work[$1].map(\.count).max()! }!
            run(longest, worker: longest % workers)
            // One piece per core at a time, each single-threaded (BLAS and element-wise kernels).
            Kernels.dataParallel(workers) { w in
                for i in stride(from: w, to: work.count, by: workers) where i != longest {
                    if lock.withLock({ failure != nil }) { return }
                    run(i, worker: w)
                }
            }
        }
        if let failure { throw failure }
        tokenCount += total
    }

    /// The statistics accumulated so far, one per layer (ascending). The collector can keep accumulating.
    public func finish(corpusSHA256: String, corpusDescription: String) throws -> [KeyStatistics] {
        let created = KeyStatistics.now()
        let f = model.config.ffnDim
        return try layers.map { l in
            let parts = workerAccumulators.map { $0[l]! }
            let count = parts.reduce(0) { $0 + $1.count }
            guard count > 0 else { throw EditingError.noTokensCollected(layer: l) }
            var sum = [Double](repeating: 0, count: f), moment = [Double](repeating: 0, count: f * f)
            for p in parts { p.addTotals(sum: &sum, symmetricMoment: &moment) }
            return KeyStatistics(layer: l, hookName: KeyStatistics.hookName(layer: l), dimension: f, count: count,
                                 sum: sum, secondMoment: moment, modelSHA256: modelSHA256, corpusSHA256: corpusSHA256,
                                 corpusDescription: corpusDescription, created: created,
                                 toolVersion: options.toolVersion)
        }
    }

    /// Collects statistics of `layers` over `corpus` in one pass.
    public static func collect(model: LlamaModel, modelSHA256: String, layers: [Int], corpus: TokenCorpus,
                               options: CollectionOptions = CollectionOptions(),
                               progress: ((CollectionProgress) -> Void)? = nil) throws -> [KeyStatistics] {
        guard corpus.tokenCount > 0 else { throw EditingError.emptyCorpus(source: corpus.description) }
        let c = try StatisticsCollector(model: model, layers: layers, modelSHA256: modelSHA256, options: options)
        try c.accumulate(corpus.sequences, progress: progress)
        return try c.finish(corpusSHA256: corpus.sha256, corpusDescription: corpus.description)
    }

    /// Collects statistics of one layer over `corpus`.
    public static func collect(model: LlamaModel, modelSHA256: String, layer: Int, corpus: TokenCorpus,
                               options: CollectionOptions = CollectionOptions(),
                               progress: ((CollectionProgress) -> Void)? = nil) throws -> KeyStatistics {
        try collect(model: model, modelSHA256: modelSHA256, layers: [layer], corpus: corpus, options: options,
                    progress: progress)[0]
    }
}

/// Float64 copy of one batch's keys [rows, F] (reused across batches and layers of one worker).
final class Scratch {
    private(set) var pointer = UnsafeMutablePointer<Double>.allocate(capacity: 1)
    private var capacity = 1
    func reserve(_ count: Int) {
        guard count > capacity else { return }
        pointer.deallocate()
        pointer = .allocate(capacity: count)
        capacity = count
    }
    deinit { pointer.deallocate() }
}

/// Running count, Σ k and the upper triangle of Σ k kᵀ of one layer, in float64.
final class Accumulator {
    let width: Int
    private(set) var count = 0
    private var sum: [Double]
    /// Upper triangle (j ≥ i) of Σ k kᵀ, row-major [F, F]; the strict lower triangle stays 0.
    private let upper: UnsafeMutablePointer<Double>

    init(width: Int) {
        self.width = width
        sum = [Double](repeating: 0, count: width)
        upper = .allocate(capacity: width * width)
        upper.initialize(repeating: 0, count: width * width)
    }

    deinit { upper.deallocate() }

    /// Adds keys [rows, F] (float32): converts them to float64 in `scratch`, adds their column sums to Σ k and
    /// Kᵀ K to the upper triangle of Σ k kᵀ.
    func add(_ keys: UnsafePointer<Float>, rows: Int, scratch: Scratch) {
        guard rows > 0 else { return }
        let f = width
        scratch.reserve(rows * f)
        let a = scratch.pointer
        sum.withUnsafeMutableBufferPointer { s in
            for r in 0..<rows {
                let src = keys + r * f, dst = a + r * f
                for j in 0..<f { let v = Double(src[j]); dst[j] = v; s[j] += v }
            }
        }
        BLAS.dsyrkUpperAtA(n: f, k: rows, a: a, lda: f, beta: 1, c: upper, ldc: f)
        count += rows
    }

    /// Adds Σ k to `sum` and Σ k kᵀ (upper triangle mirrored: full and symmetric) to `symmetricMoment` [F, F].
    func addTotals(sum total: inout [Double], symmetricMoment out: inout [Double]) {
        let f = width
        for j in 0..<f { total[j] += sum[j] }
        out.withUnsafeMutableBufferPointer { o in
            for i in 0..<f {
                o[i * f + i] += upper[i * f + i]
                for j in (i + 1)..<max(f, i + 1) { let v = upper[i * f + j]; o[i * f + j] += v; o[j * f + i] += v }
            }
        }
    }
}
