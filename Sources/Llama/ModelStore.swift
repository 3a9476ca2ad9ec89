import Foundation
import GGUF
import HDF5Store
import Hashing

/// The Scalpel HDF5 model store (`scalpel import model.gguf --out weights/NAME.h5`).
///
/// Layout (see docs/formats.md):
/// - `/` attributes `format = "scalpel-model"`, `format_version`, `architecture`, `tool_version`, `created`
/// - `/config` attributes: layers, d_model, heads, kv_heads, head_dim, ffn_dim, vocab_size, context_length,
///   rope_base, rms_eps, tied_embeddings
/// - `/provenance` attributes: source_file, source_size, source_sha256, quantization (JSON), gguf_metadata (JSON of
///   every GGUF key except the tokenizer arrays)
/// - `/tokenizer`: datasets tokens, merges (strings), token_types (int32), scores (float32, SentencePiece only);
///   attributes model ("gpt2" or "llama"), pre, bos_id, eos_id, unknown_id (−1 = none), add_bos. A store without
///   `scores` is a BPE store (older stores).
/// - `/weights/{gguf tensor name}`: float32, row-major [out, in] (vectors [n]), chunked, shuffle+deflate; attribute
///   `sha256` = SHA-256 of the float32 values (written at import, added at the first edit for older stores)
/// - `/edits`: the edit log of stores written before the sidecar log and of new stores made by `edit --out`; the log
///   of a store edited in place is the sidecar `NAME.edits.h5` (see `EditLogReader.swift`). Edits never modify
///   `/weights`; `ModelFile.open` applies the active entries to the base weights.
public enum ModelStore {
    public static let format = "scalpel-model"
    public static let formatVersion = 1
    static let tokenizerArrays: Set<String> = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                                               "tokenizer.ggml.scores"]

    /// Imports a GGUF file into a new store at `out`, atomically (a temporary file renamed into place).
    /// - Parameter progress: called with (tensors done, total).
    public static func importGGUF(_ ggufPath: String, to out: String, toolVersion: String,
                                  progress: ((Int, Int) -> Void)? = nil) throws {
        let f = try GGUFFile(path: ggufPath)
        let sha = try SHA256.hex(fileAt: ggufPath)
        try ModelFile.verifyDefaultGGUF(path: ggufPath, size: f.fileSize, sha256: sha)
        let config = try LlamaConfig(gguf: f)
        let weights = try LlamaWeights.load(config: config, from: f)
        let tokenizer = try Tokenizer(gguf: f)  // refuse to import a model whose tokenizer Scalpel cannot run
        var quant: [String: Int] = [:]
        for t in f.tensors { quant[t.type.name, default: 0] += 1 }
        let prov = ModelProvenance(sourceFile: (ggufPath as NSString).lastPathComponent, sourceSize: f.fileSize,
                                   sourceSHA256: sha, quantization: quant)
        let meta = f.metadata.filter { !tokenizerArrays.contains($0.key) }
        try HDF5File.createAtomically(at: out) { h5 in
            let root = h5.root
            try root.setAttribute("format", format)
            try root.setAttribute("format_version", formatVersion)
            try root.setAttribute("architecture", "llama")
            try root.setAttribute("tool_version", toolVersion)
            try root.setAttribute("created", ISO8601DateFormatter().string(from: Date()))
            try writeConfig(config, to: try root.createGroup("config"))
            let pg = try root.createGroup("provenance")
            try pg.setAttribute("source_file", prov.sourceFile)
            try pg.setAttribute("source_size", prov.sourceSize)
            try pg.setAttribute("source_sha256", prov.sourceSHA256)
            try pg.setAttribute("quantization", String(decoding: try JSONEncoder().encode(quant), as: UTF8.self))
            try pg.setAttribute("gguf_metadata", try GGUFMetadataJSON.encode(meta))
            let tg = try root.createGroup("tokenizer")
            try tg.writeStrings(try f.require("tokenizer.ggml.tokens").stringArray ?? [], to: "tokens")
            try tg.writeStrings(f["tokenizer.ggml.merges"]?.stringArray ?? [], to: "merges")
            let types = (f["tokenizer.ggml.token_type"]?.intArray ?? []).map { Int32($0) }
            try tg.write(types, shape: [types.count], to: "token_types")
            try tg.setAttribute("model", tokenizer.model.rawValue)
            try writeScores(tokenizer, to: tg)
            try tg.setAttribute("pre", f["tokenizer.ggml.pre"]?.string ?? "default")
            try tg.setAttribute("bos_id", f["tokenizer.ggml.bos_token_id"]?.int ?? -1)
            try tg.setAttribute("eos_id", f["tokenizer.ggml.eos_token_id"]?.int ?? -1)
            try removeSidecarLog(ofStore: out)   // a store imported over an old one must not inherit its edits
            try tg.setAttribute("unknown_id", f["tokenizer.ggml.unknown_token_id"]?.int ?? -1)
            try tg.setAttribute("add_bos", f["tokenizer.ggml.add_bos_token"]?.bool ?? false)
            try writeWeights(weights, to: try root.createGroup("weights"), progress: progress)
        }
    }

    /// Writes every parameter as a float32 dataset named by its GGUF name, with its `sha256` attribute.
    public static func writeWeights(_ w: LlamaWeights, to g: HDF5Group, progress: ((Int, Int) -> Void)? = nil) throws {
        let params = LlamaParameter.all(w.config)
        for (i, p) in params.enumerated() {
            let hash = try w.withParameter(p) { v -> String in
                try g.write(UnsafeBufferPointer(v), shape: p.shape(w.config), to: p.ggufName)
                return SHA256.hex(UnsafeRawBufferPointer(v))
            }
            try g.dataset(p.ggufName).setAttribute(weightHashAttribute, hash)
            progress?(i + 1, params.count)
        }
    }

    /// Attribute of each `/weights/*` dataset holding the SHA-256 of its float32 values.
    public static let weightHashAttribute = "sha256"

    /// SHA-256 of the float32 bytes of parameter `p` of `w` (what `/weights/{name}@sha256` records).
    public static func weightSHA256(_ w: LlamaWeights, _ p: LlamaParameter) -> String {
        w.withParameter(p) { SHA256.hex(UnsafeRawBufferPointer($0)) }
    }

    /// Adds the `sha256` attribute to every `/weights/*` dataset of a store open for writing that lacks one (stores
    /// imported before hashes were recorded), computing it from the stored values. Returns how many were added.
    @discardableResult
    public static func recordWeightHashes(in h5: HDF5File) throws -> Int {
        let g = try h5.root.group("weights")
        var added = 0
        for name in try g.memberNames() where try g.kind(of: name) == .dataset {
            let d = try g.dataset(name)
            if d.hasAttribute(weightHashAttribute) { continue }
            try d.setAttribute(weightHashAttribute, try d.valuesSHA256())
            added += 1
        }
        return added
    }

    /// Writes a new store at `out` (atomically) holding `weights`, `tokenizer` and `provenance` — for models built
    /// in memory (synthetic test models, conversions). `importGGUF` is the usual way to make a store.
    public static func create(at out: String, weights: LlamaWeights, tokenizer: Tokenizer, provenance: ModelProvenance,
                              toolVersion: String) throws {
        try HDF5File.createAtomically(at: out) { h5 in
            let root = h5.root
            try root.setAttribute("format", format)
            try root.setAttribute("format_version", formatVersion)
            try root.setAttribute("architecture", "llama")
            try root.setAttribute("tool_version", toolVersion)
            try root.setAttribute("created", ISO8601DateFormatter().string(from: Date()))
            try writeConfig(weights.config, to: try root.createGroup("config"))
            let pg = try root.createGroup("provenance")
            try pg.setAttribute("source_file", provenance.sourceFile)
            try pg.setAttribute("source_size", provenance.sourceSize)
            try pg.setAttribute("source_sha256", provenance.sourceSHA256)
            try pg.setAttribute("quantization", String(decoding: try JSONEncoder().encode(provenance.quantization), as: UTF8.self))
            let tg = try root.createGroup("tokenizer")
            try tg.writeStrings(tokenizer.vocabulary, to: "tokens")
            try tg.writeStrings(tokenizer.mergeList, to: "merges")
            try tg.write(tokenizer.tokenTypes.map { Int32($0) }, shape: [tokenizer.vocabularySize], to: "token_types")
            try tg.setAttribute("model", tokenizer.model.rawValue)
            try writeScores(tokenizer, to: tg)
            try tg.setAttribute("pre", tokenizer.preName)
            try tg.setAttribute("bos_id", tokenizer.bosID ?? -1)
            try tg.setAttribute("eos_id", tokenizer.eosID ?? -1)
            try removeSidecarLog(ofStore: out)
            try tg.setAttribute("unknown_id", tokenizer.unknownID ?? -1)
            try tg.setAttribute("add_bos", tokenizer.addBOS)
            try writeWeights(weights, to: try root.createGroup("weights"))
        }
    }

    /// Writes the `scores` dataset of a SentencePiece tokenizer (nothing for BPE: its absence marks a BPE store).
    static func writeScores(_ t: Tokenizer, to tg: HDF5Group) throws {
        guard t.model == .sentencePiece else { return }
        try tg.write(t.scores, shape: [t.scores.count], to: "scores")
    }

    static func writeConfig(_ c: LlamaConfig, to g: HDF5Group) throws {
        try g.setAttribute("layers", c.layers); try g.setAttribute("d_model", c.dModel)
        try g.setAttribute("heads", c.heads); try g.setAttribute("kv_heads", c.kvHeads)
        try g.setAttribute("head_dim", c.headDim); try g.setAttribute("ffn_dim", c.ffnDim)
        try g.setAttribute("vocab_size", c.vocabSize); try g.setAttribute("context_length", c.contextLength)
        try g.setAttribute("rope_base", Double(c.ropeBase)); try g.setAttribute("rms_eps", Double(c.rmsEps))
        try g.setAttribute("tied_embeddings", c.tiedEmbeddings)
    }

    /// The model configuration of an open store.
    public static func configuration(_ h5: HDF5File) throws -> LlamaConfig {
        try readConfig(try h5.root.group("config"))
    }

    /// Reads and validates `/config` (`LlamaConfig.validate`, named by its attributes).
    static func readConfig(_ g: HDF5Group) throws -> LlamaConfig {
        let c = LlamaConfig(layers: try g.intAttribute("layers"), dModel: try g.intAttribute("d_model"),
                    heads: try g.intAttribute("heads"), kvHeads: try g.intAttribute("kv_heads"),
                    headDim: try g.intAttribute("head_dim"), ffnDim: try g.intAttribute("ffn_dim"),
                    vocabSize: try g.intAttribute("vocab_size"), contextLength: try g.intAttribute("context_length"),
                    ropeBase: Float(try g.doubleAttribute("rope_base")), rmsEps: Float(try g.doubleAttribute("rms_eps")),
                    tiedEmbeddings: try g.boolAttribute("tied_embeddings"))
        try c.validate(path: g.file.path) { "/config@\($0)" }
        return c
    }

    /// Reads a store's configuration, tokenizer, provenance and GGUF metadata (not the weights).
    static func readHeader(_ h5: HDF5File) throws -> (LlamaConfig, Tokenizer, ModelProvenance, [(key: String, value: GGUFValue)]) {
        let root = h5.root
        guard root.hasAttribute("format"), try root.stringAttribute("format") == format else {
            throw LlamaError.storeCorrupt(path: h5.path, problem: "not a Scalpel model store (no format = \(format))")
        }
        let arch = try root.stringAttribute("architecture")
        guard LlamaConfig.supportedArchitectures.contains(arch) else { throw LlamaError.notLlama(path: h5.path, architecture: arch) }
        let config = try readConfig(try root.group("config"))
        let tg = try root.group("tokenizer")
        func optionalID(_ k: String) throws -> Int? { let v = try tg.intAttribute(k); return v < 0 ? nil : v }
        // Stores without `scores` (all stores before SentencePiece support) are BPE stores.
        let scores = tg.exists("scores") ? try tg.read("scores", as: Float.self).values : []
        let model: TokenizerModel = scores.isEmpty ? .bpe : .sentencePiece
        let tokenizer = try Tokenizer(tokens: try tg.readStrings("tokens"),
                                      tokenTypes: try tg.read("token_types", as: Int32.self).values.map(Int.init),
                                      merges: try tg.readStrings("merges"), pre: try tg.stringAttribute("pre"),
                                      bosID: try optionalID("bos_id"), eosID: try optionalID("eos_id"),
                                      unknownID: try optionalID("unknown_id"), addBOS: try tg.boolAttribute("add_bos"),
                                      model: model, scores: scores)
        let pg = try root.group("provenance")
        let quant = (try? JSONDecoder().decode([String: Int].self, from: Data(try pg.stringAttribute("quantization").utf8))) ?? [:]
        let prov = ModelProvenance(sourceFile: try pg.stringAttribute("source_file"), sourceSize: try pg.intAttribute("source_size"),
                                   sourceSHA256: try pg.stringAttribute("source_sha256"), quantization: quant)
        let meta = pg.hasAttribute("gguf_metadata") ? try GGUFMetadataJSON.decode(try pg.stringAttribute("gguf_metadata")) : []
        return (config, tokenizer, prov, meta)
    }

    /// Reads all weights of a store in one batched pass (compressed chunks decompressed on all cores).
    /// Every dataset's presence and shape is checked, and the size against memory, before anything is allocated.
    static func readWeights(_ h5: HDF5File, config c: LlamaConfig) throws -> LlamaWeights {
        try c.validate(path: h5.path) { "/config@\($0)" }
        let g = try h5.root.group("weights")
        let params = LlamaParameter.all(c)
        let expected = Set(params.map(\.ggufName))
        for name in try g.memberNames() where !expected.contains(name) {
            throw LlamaError.unusedWeight(path: h5.path, tensor: "weights/\(name)")
        }
        for p in params {
            guard g.exists(p.ggufName), try g.kind(of: p.ggufName) == .dataset else {
                throw LlamaError.missingWeight(path: h5.path, tensor: "weights/\(p.ggufName)")
            }
            let shape = try g.datasetShape(p.ggufName)
            guard shape == p.shape(c) else {
                throw LlamaError.weightShape(tensor: "weights/\(p.ggufName)", expected: p.shape(c), found: shape)
            }
        }
        try LlamaWeights.checkMemory(c, path: h5.path)
        let w = LlamaWeights(zeros: c)
        // Collect stable pointers into the weight arrays, then read everything in one batch.
        var requests: [HDF5ReadRequest<Float>] = []
        for p in params {
            let buffer = w.withParameter(p) { $0 }  // storage outlives the request (owned by `w`, not resized)
            requests.append(HDF5ReadRequest(name: p.ggufName, buffer: buffer, expectedShape: p.shape(c)))
        }
        try g.read(batch: requests)
        return w
    }
}

extension ModelFile {
    /// Opens a Scalpel HDF5 model store: the base weights with the active entries of its edit log applied in id order
    /// (the effective model; `appliedEdits` lists them). Throws `LlamaError.storeCorrupt` when the log does not
    /// verify (an entry altered or removed outside Scalpel): a model is never silently run with tampered edits.
    /// - Parameter applyEdits: false opens the base weights only (for `scalpel audit`, which checks the log itself).
    public static func openStore(_ path: String, applyEdits: Bool = true) throws -> ModelFile {
        let h5 = try HDF5File(openingForReading: path)
        defer { try? h5.close() }
        let (config, tokenizer, prov, meta) = try ModelStore.readHeader(h5)
        let weights = try ModelStore.readWeights(h5, config: config)
        var applied: [String] = [], logHash: String? = nil
        let log = try EditLogReader.read(h5)
        if applyEdits && !log.isEmpty {
            try log.requireIntact(config: config, path: path)
            applied = try EditLogReader.applyActive(log, to: weights)
            logHash = log.storedLogSHA256
        }
        let m = ModelFile(path: path, model: LlamaModel(weights: weights), tokenizer: tokenizer, provenance: prov, metadata: meta)
        m.appliedEdits = applied
        m.editLogSHA256 = applyEdits ? logHash : nil
        m.baseOnly = !applyEdits && !log.isEmpty
        return m
    }
}

extension ModelStore {
    /// Removes the sidecar edit log of the store at `path` (called just before a new file replaces that store).
    public static func removeSidecarLog(ofStore path: String) throws {
        let side = EditLogSchema.sidecarPath(forStore: path)
        if unlink(side) != 0 && errno != ENOENT {
            throw HDF5Error.ioFailed(path: side, operation: "remove the replaced store's sidecar log", code: errno)
        }
    }

    /// Writes a store at `out` holding `model`'s current values of `changed` parameters and everything else from the
    /// store (or GGUF) it was opened from. Atomic: `out` appears complete or not at all.
    ///
    /// This bakes the model's current weights into new base weights: any edit log of the source store is dropped
    /// from the copy (its edits are part of the new base; keeping the log would apply them twice), and the changed
    /// weights' `sha256` attributes are rewritten. `scalpel edit` records edits in the log instead.
    public static func saveEdited(_ model: ModelFile, changed: [LlamaParameter], to out: String, toolVersion: String,
                                  note: String? = nil) throws {
        let fm = FileManager.default
        let isStore = ["h5", "hdf5"].contains((model.path as NSString).pathExtension.lowercased())
        let outAbs = (out as NSString).standardizingPath, srcAbs = (model.path as NSString).standardizingPath
        try AtomicFile.write(to: out) { temp in
            try? fm.removeItem(atPath: temp)
            if isStore && outAbs != srcAbs {
                try AtomicFile.copy(from: model.path, to: temp)   // typed one-line errors (diskFull), not NSError dumps
            } else if isStore {
                try AtomicFile.copy(from: srcAbs, to: temp)
            } else {
                let staged = temp + ".import"
                defer { try? fm.removeItem(atPath: staged) }
                try importGGUF(model.path, to: staged, toolVersion: toolVersion)
                if rename(staged, temp) != 0 { throw HDF5Error.ioFailed(path: temp, operation: "rename", code: errno) }
            }
            let h5 = try HDF5File(openingForWriting: temp)
            let g = try h5.root.group("weights")
            let internalLog = h5.root.exists(EditLogSchema.groupName)
            if internalLog { try h5.root.delete(EditLogSchema.groupName) }
            let baked = internalLog || !model.appliedEdits.isEmpty   // (the log may be in the source's sidecar)
            // With a log, every applied edit changed some weight: rewrite all of them so the new base is the model.
            let params = baked ? LlamaParameter.all(model.config) : changed
            for p in params {
                try model.model.weights.withParameter(p) {
                    try g.write(UnsafeBufferPointer($0), shape: p.shape(model.config), to: p.ggufName,
                                options: HDF5WriteOptions(overwrite: true))
                    try g.dataset(p.ggufName).setAttribute(weightHashAttribute, SHA256.hex(UnsafeRawBufferPointer($0)))
                }
            }
            if let note { try h5.root.setAttribute("note", note) }
            try h5.close()
            try removeSidecarLog(ofStore: out)   // the new base holds the edits; its log starts empty
        }
    }
}
