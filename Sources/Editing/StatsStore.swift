import Foundation
import HDF5Store
import Llama

/// Key statistics on disk, in HDF5 (readable with h5py / h5dump):
///
/// - `/` attributes `format = "scalpel-key-statistics"`, `format_version`.
/// - `/stats/layer_{l}` one group per layer, attributes `count`, `layer`, `dimension`, `hook_name`, `model_sha256`,
///   `corpus_sha256`, `corpus_description`, `corpus_parts` (shard corpus hashes, comma-separated), `dtype`
///   ("float64"), `created`, `tool_version`, `stats_sha256` (`KeyStatistics.hash`, checked on every read);
///   datasets `second_moment` [F, F] float64 (Σ k kᵀ, full symmetric, chunked, shuffle + deflate) and `sum` [F]
///   float64 (Σ k). Divide by `count` for E[k kᵀ] and E[k].
///
/// Files are always written atomically (temporary file, fsync, rename). By default they live beside the model:
/// `weights/NAME.stats.h5` for `weights/NAME.gguf` or `weights/NAME.h5`.
public enum StatsStore {
    public static let format = "scalpel-key-statistics"
    public static let formatVersion = 1

    /// `DIR/NAME.stats.h5` for the model `DIR/NAME.EXT` (so `weights/M.Q4_1.gguf` → `weights/M.Q4_1.stats.h5`, and
    /// its imported store `weights/M.h5` → `weights/M.stats.h5`; both hold statistics for the same source hash).
    public static func defaultPath(forModel modelPath: String) -> String {
        ((modelPath as NSString).deletingPathExtension as String) + ".stats.h5"
    }

    /// HDF5 group of `layer`'s statistics.
    public static func groupName(layer: Int) -> String { "stats/layer_\(layer)" }

    // MARK: Writing

    /// Writes a new file at `path` (replacing any) holding `stats` (at most one per layer).
    public static func write(_ stats: [KeyStatistics], to path: String) throws {
        try requireDistinctLayers(stats)
        try HDF5File.createAtomically(at: path) { file in
            try file.root.setAttribute("format", format)
            try file.root.setAttribute("format_version", formatVersion)
            for s in stats { try writeGroup(s, in: file) }
        }
    }

    /// Adds `stats` to the file at `path` (created when missing), replacing statistics of the same layers; the file
    /// is rewritten atomically (HDF5 files do not shrink when a group is deleted). Throws `statisticsMismatch` when
    /// the file holds statistics of another model (one file serves one model).
    /// The file's lock (`EditLog.lock`) is held from reading it to the rename, waiting up to `wait` seconds.
    public static func save(_ stats: [KeyStatistics], to path: String, wait: Double = EditLog.defaultLockWait,
                            waiting: (String) -> Void = { _ in }) throws {
        try requireDistinctLayers(stats)
        let lock = try EditLog.lock(path, wait: wait, waiting: waiting)
        defer { lock.release() }
        guard FileManager.default.fileExists(atPath: path) else { return try write(stats, to: path) }
        let existing = try readAll(path: path)
        for s in stats {
            if let other = existing.first(where: { $0.modelSHA256 != s.modelSHA256 }) {
                throw EditingError.statisticsMismatch(field: "model_sha256", expected: s.modelSHA256,
                                                      found: other.modelSHA256, source: "\(path) layer \(other.layer)")
            }
        }
        let replaced = Set(stats.map(\.layer))
        try write((existing.filter { !replaced.contains($0.layer) } + stats).sorted { $0.layer < $1.layer }, to: path)
    }

    private static func requireDistinctLayers(_ stats: [KeyStatistics]) throws {
        let layers = stats.map(\.layer)
        guard Set(layers).count == layers.count else {
            throw EditingError.invalidArgument(name: "statistics", reason: "more than one entry for a layer: \(layers)")
        }
    }

    private static func writeGroup(_ s: KeyStatistics, in file: HDF5File) throws {
        let g = try file.root.createGroup(groupName(layer: s.layer))
        let f = s.dimension
        let big = HDF5WriteOptions(compression: .deflate(level: HDF5WriteOptions.defaultDeflateLevel), chunked: true)
        try g.write(s.secondMoment, shape: [f, f], to: "second_moment", options: big)
        try g.write(s.sum, shape: [f], to: "sum")
        try g.setAttribute("count", s.count)
        try g.setAttribute("layer", s.layer)
        try g.setAttribute("dimension", f)
        try g.setAttribute("hook_name", s.hookName)
        try g.setAttribute("model_sha256", s.modelSHA256)
        try g.setAttribute("corpus_sha256", s.corpusSHA256)
        try g.setAttribute("corpus_description", s.corpusDescription)
        try g.setAttribute("corpus_parts", s.corpusParts.joined(separator: ","))
        try g.setAttribute("dtype", s.dtype)
        try g.setAttribute("created", s.created)
        try g.setAttribute("tool_version", s.toolVersion)
        try g.setAttribute("stats_sha256", s.hash)
    }

    // MARK: Reading

    /// Provenance of one stored layer (attributes only; the matrices are not read).
    public struct Summary: Sendable, Equatable {
        public var layer: Int
        public var hookName: String
        public var dimension: Int
        public var count: Int
        public var modelSHA256: String
        public var corpusSHA256: String
        public var corpusDescription: String
        public var created: String
        public var statsSHA256: String
    }

    /// Opens a statistics file, checking it is one.
    private static func open(_ path: String) throws -> HDF5File {
        guard FileManager.default.fileExists(atPath: path) else { throw EditingError.fileNotFound(path: path) }
        let file: HDF5File
        do { file = try HDF5File(openingForReading: path) } catch {
            throw EditingError.statisticsCorrupt(path: path, problem: "not an HDF5 file (\(error))")
        }
        let found = (try? file.root.stringAttribute("format")) ?? "none"
        guard found == format else {
            throw EditingError.statisticsCorrupt(path: path, problem: "format is '\(found)', expected '\(format)'")
        }
        return file
    }

    private static func storedLayers(_ file: HDF5File) throws -> [Int] {
        guard file.root.exists("stats") else { return [] }
        return try file.root.group("stats").memberNames().compactMap { name in
            name.hasPrefix("layer_") ? Int(name.dropFirst("layer_".count)) : nil
        }.sorted()
    }

    /// Layers stored in the file.
    public static func layers(path: String) throws -> [Int] {
        let file = try open(path)
        defer { try? file.close() }
        return try storedLayers(file)
    }

    /// Provenance of every stored layer.
    public static func summaries(path: String) throws -> [Summary] {
        let file = try open(path)
        defer { try? file.close() }
        return try storedLayers(file).map { try summary(file, layer: $0, path: path) }
    }

    private static func summary(_ file: HDF5File, layer: Int, path: String) throws -> Summary {
        do {
            let g = try file.root.group(groupName(layer: layer))
            return Summary(layer: try g.intAttribute("layer"), hookName: try g.stringAttribute("hook_name"),
                           dimension: try g.intAttribute("dimension"), count: try g.intAttribute("count"),
                           modelSHA256: try g.stringAttribute("model_sha256"),
                           corpusSHA256: try g.stringAttribute("corpus_sha256"),
                           corpusDescription: try g.stringAttribute("corpus_description"),
                           created: try g.stringAttribute("created"), statsSHA256: try g.stringAttribute("stats_sha256"))
        } catch let e as HDF5Error {
            throw EditingError.statisticsCorrupt(path: path, problem: "layer \(layer): \(e)")
        }
    }

    /// Reads the statistics of `layer`, verifying their hash. Prefer `load(path:layer:modelSHA256:)`, which also
    /// checks they belong to the model.
    public static func read(path: String, layer: Int) throws -> KeyStatistics {
        let file = try open(path)
        defer { try? file.close() }
        return try readLayer(file, layer: layer, path: path)
    }

    /// Reads every stored layer (ascending), verifying hashes.
    public static func readAll(path: String) throws -> [KeyStatistics] {
        let file = try open(path)
        defer { try? file.close() }
        return try storedLayers(file).map { try readLayer(file, layer: $0, path: path) }
    }

    private static func readLayer(_ file: HDF5File, layer: Int, path: String) throws -> KeyStatistics {
        guard file.root.exists(groupName(layer: layer)) else {
            throw EditingError.statisticsNotFound(path: path, layer: layer, available: try storedLayers(file))
        }
        let meta = try summary(file, layer: layer, path: path)
        guard meta.layer == layer else {
            throw EditingError.statisticsCorrupt(path: path, problem: "group layer_\(layer) says layer \(meta.layer)")
        }
        do {
            let g = try file.root.group(groupName(layer: layer))
            let f = meta.dimension
            let dtype = try g.stringAttribute("dtype")
            guard dtype == "float64" else {
                throw EditingError.statisticsCorrupt(path: path, problem: "layer \(layer): dtype \(dtype), expected float64")
            }
            let m = try g.read("second_moment", as: Double.self, expectedShape: [f, f]).values
            let s = try g.read("sum", as: Double.self, expectedShape: [f]).values
            let parts = try g.stringAttribute("corpus_parts").split(separator: ",").map(String.init)
            let stats = KeyStatistics(layer: layer, hookName: meta.hookName, dimension: f, count: meta.count, sum: s,
                                      secondMoment: m, modelSHA256: meta.modelSHA256, corpusSHA256: meta.corpusSHA256,
                                      corpusDescription: meta.corpusDescription, corpusParts: parts,
                                      created: meta.created, toolVersion: try g.stringAttribute("tool_version"))
            guard stats.hash == meta.statsSHA256 else {
                throw EditingError.statisticsCorrupt(path: path, problem: "layer \(layer): contents do not match stats_sha256")
            }
            return stats
        } catch let e as HDF5Error {
            throw EditingError.statisticsCorrupt(path: path, problem: "layer \(layer): \(e)")
        }
    }

    /// Loads the statistics of `layer` for the model whose source hash is `modelSHA256`. Throws — never returns
    /// statistics of something else — when the file is missing (`fileNotFound`), has no such layer
    /// (`statisticsNotFound`), belongs to another model or hook (`statisticsMismatch`), has another key width than
    /// `dimension` (when given) or is damaged (`statisticsCorrupt`).
    public static func load(path: String, layer: Int, modelSHA256: String, dimension: Int? = nil) throws -> KeyStatistics {
        let file = try open(path)
        defer { try? file.close() }
        guard file.root.exists(groupName(layer: layer)) else {
            throw EditingError.statisticsNotFound(path: path, layer: layer, available: try storedLayers(file))
        }
        // Check the provenance before reading the matrix.
        let meta = try summary(file, layer: layer, path: path)
        let source = "\(path) layer \(layer)"
        if meta.modelSHA256 != modelSHA256 {
            throw EditingError.statisticsMismatch(field: "model_sha256", expected: modelSHA256,
                                                  found: meta.modelSHA256, source: source)
        }
        let stats = try readLayer(file, layer: layer, path: path)
        try stats.require(modelSHA256: modelSHA256, layer: layer, hookName: KeyStatistics.hookName(layer: layer),
                          dimension: dimension, source: source)
        return stats
    }

    /// Loads `layer`'s statistics for `model` from `path` (default: `defaultPath(forModel: model.path)`), checked
    /// against the model's source hash and key width.
    public static func load(for model: ModelFile, layer: Int, path: String? = nil) throws -> KeyStatistics {
        try load(path: path ?? defaultPath(forModel: model.path), layer: layer,
                 modelSHA256: model.provenance.sourceSHA256, dimension: model.config.ffnDim)
    }

    // MARK: Merging shards

    /// Merges statistics files collected on shards of a corpus into one file at `into` (sums and counts add, shard
    /// corpus hashes are listed in `corpus_parts`). Every shard must hold the same layers, of the same model.
    /// `into` may be one of the inputs. Returns the merged statistics.
    @discardableResult
    public static func merge(paths: [String], into: String) throws -> [KeyStatistics] {
        guard !paths.isEmpty else { throw EditingError.invalidArgument(name: "paths", reason: "no file to merge") }
        let shards = try paths.map { try readAll(path: $0) }
        let layers = shards[0].map(\.layer)
        guard !layers.isEmpty else {
            throw EditingError.invalidArgument(name: "shards", reason: "\(paths[0]) holds no statistics")
        }
        for (p, s) in zip(paths, shards) where s.map(\.layer) != layers {
            throw EditingError.invalidArgument(name: "shards",
                                               reason: "\(p) holds layers \(s.map(\.layer)), \(paths[0]) holds \(layers)")
        }
        let merged = try layers.indices.map { i in
            var acc = shards[0][i]
            for (p, s) in zip(paths, shards).dropFirst() {
                try acc.requireCompatible(s[i], source: "\(p) layer \(s[i].layer)")
                acc = try acc.merged(with: s[i])
            }
            return acc
        }
        try write(merged, to: into)
        return merged
    }
}
