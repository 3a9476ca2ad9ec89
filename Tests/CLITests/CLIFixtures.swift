import Foundation
import XCTest
import HDF5Store
import Hashing
import Llama
@testable import Editing

/// Small synthetic model stores for the CLI tests (the same construction as `EditLogFixtures` in EditingTests, which
/// a test target cannot import): random weights, a 40-character vocabulary, and edits appended with `EditLogWriter`.
enum CLIFixtures {
    /// 2 layers, D 16, F 24, V 40: a store of a few tens of kB.
    static let tiny = LlamaConfig(layers: 2, dModel: 16, heads: 4, kvHeads: 2, headDim: 4, ffnDim: 24, vocabSize: 40,
                                  contextLength: 64, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: true)

    static func tokenizer() throws -> Tokenizer {
        let chars = Array("abcdefghijklmnopqrstuvwxyzTIAHSWO") + ["Ġ", ".", ",", "Ċ", "'", "-"]
        let tokens = ["<|endoftext|>"] + chars.map { String($0) }
        return try Tokenizer(tokens: tokens, tokenTypes: [3] + chars.map { _ in 1 }, merges: [], pre: "gpt2",
                             bosID: 0, eosID: 0, unknownID: nil, addBOS: false)
    }

    /// Writes a synthetic model store at `path`.
    static func makeStore(_ path: String, seed: UInt64 = 7) throws {
        let c = tiny
        var rng = SeededRandom(seed: seed)
        let w = LlamaWeights(zeros: c)
        for p in LlamaParameter.all(c) {
            let count = p.shape(c).reduce(1, *)
            let isNorm: Bool = { switch p { case .attnNorm, .ffnNorm, .outputNorm: return true; default: return false } }()
            w.setValues(p, (0..<count).map { _ in isNorm ? Float(1 + 0.1 * rng.normal()) : Float(0.3 * rng.normal()) })
        }
        let prov = ModelProvenance(sourceFile: "synthetic", sourceSize: 0, sourceSHA256: String(repeating: "5e", count: 32),
                                   quantization: ["F32": LlamaParameter.all(c).count])
        try ModelStore.create(at: path, weights: w, tokenizer: try tokenizer(), provenance: prov, toolVersion: "test")
    }

    /// Appends one synthetic rank-one edit of layer `layer` to the store's log, as `scalpel edit` records it.
    @discardableResult
    static func appendEdit(_ store: String, layer: Int = 0, seed: UInt64) throws -> String {
        let m = try ModelFile.open(store)
        let writer = try EditLogWriter(model: m, out: nil, toolVersion: "test")
        let c = m.config, p = LlamaParameter.wDown(layer)
        var rng = SeededRandom(seed: seed)
        let lambda = (0..<c.dModel).map { _ in Float(0.05 * rng.normal()) }
        let u = (0..<c.ffnDim).map { _ in Float(rng.normal()) }
        let before = ModelStore.weightSHA256(m.model.weights, p)
        let result = ROMEResult(layer: layer, key: [Float](repeating: 0.5, count: c.ffnDim), value: [Float](repeating: 0.25, count: c.dModel),
                                lambda: lambda, u: u, losses: [], seconds: 0, deltaNorm: 0, initialNorm: 0)
        ROME.apply(result, to: m.model)
        let after = ModelStore.weightSHA256(m.model.weights, p)
        let req = EditRequest(subject: "subject \(seed)", prompt: "{} is in", targetNew: "rome", targetTrue: "paris")
        let now = KeyStatistics.now()
        let entry = EditEntry(id: writer.nextID, created: now, method: "r-ROME", hparamsJSON: EditEntry.jsonString(ROMEHyperParameters(layer: layer)),
                              layer: layer, parameter: p.ggufName, requestJSON: EditEntry.requestJSON(req), subject: req.subject,
                              targetNew: req.targetNew, targetTrue: req.targetTrue, toolVersion: "test", status: "active",
                              statusHistory: [EditStatusChange(status: "active", at: now, toolVersion: "test")],
                              statsSHA256: "", statsPath: "", weightSHA256Before: before, weightSHA256After: after,
                              metricsBefore: EditMetrics(), metricsAfter: EditMetrics(), activeBefore: writer.activeIDs,
                              u: u, lambda: lambda, key: result.key, value: result.value)
        try writer.commit(entry)
        return entry.id
    }

    /// SHA-256 of a file's bytes (nil when it cannot be read).
    static func hash(_ path: String) -> String? {
        try? SHA256.hex(fileAt: path)
    }

    /// True when `path` is a symbolic link.
    static func isSymlink(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
    }
}
