import Foundation
import GGUF
import Hashing

/// Hyper-parameters of a Llama-family decoder.
///
/// Shape key used across the Llama module:
/// N rows (all positions of all sequences, packed), T positions of one sequence, D model width,
/// H query heads, KVH key/value heads, HD head width, F MLP width, L layers, V vocabulary.
public struct LlamaConfig: Equatable, Codable, Sendable {
    public var layers: Int          // L
    public var dModel: Int          // D
    public var heads: Int           // H
    public var kvHeads: Int         // KVH
    public var headDim: Int         // HD
    public var ffnDim: Int          // F
    public var vocabSize: Int       // V
    public var contextLength: Int
    public var ropeBase: Float
    public var rmsEps: Float
    /// Whether the output head reuses the token embedding matrix.
    public var tiedEmbeddings: Bool

    public init(layers: Int, dModel: Int, heads: Int, kvHeads: Int, headDim: Int, ffnDim: Int, vocabSize: Int,
                contextLength: Int, ropeBase: Float, rmsEps: Float, tiedEmbeddings: Bool) {
        self.layers = layers; self.dModel = dModel; self.heads = heads; self.kvHeads = kvHeads
        self.headDim = headDim; self.ffnDim = ffnDim; self.vocabSize = vocabSize
        self.contextLength = contextLength; self.ropeBase = ropeBase; self.rmsEps = rmsEps
        self.tiedEmbeddings = tiedEmbeddings
    }

    /// Width of the fused q|k|v projection output: (H + 2·KVH)·HD.
    public var qkvDim: Int { (heads + 2 * kvHeads) * headDim }
    /// Query heads sharing one key/value head.
    public var groupSize: Int { heads / kvHeads }

    /// Number of parameters (counting a tied embedding once).
    public var parameterCount: Int {
        let perLayer = 2 * dModel + qkvDim * dModel + dModel * heads * headDim + 3 * ffnDim * dModel
        return layers * perLayer + dModel + vocabSize * dModel * (tiedEmbeddings ? 1 : 2)
    }

    /// Architectures whose GGUF layout this file implements.
    public static let supportedArchitectures: Set<String> = ["llama"]

    /// Reads the configuration from GGUF metadata (`llama.*` keys) and validates it (`validate`).
    public init(gguf f: GGUFFile) throws {
        guard let arch = f["general.architecture"]?.string else {
            throw LlamaError.notLlama(path: f.path, architecture: "(none)")
        }
        guard LlamaConfig.supportedArchitectures.contains(arch) else {
            throw LlamaError.notLlama(path: f.path, architecture: arch)
        }
        /// An integer setting: nil when absent; an error when present but not an integer that fits.
        func optionalInt(_ k: String) throws -> Int? {
            guard let v = f["\(arch).\(k)"] else { return nil }
            guard let i = v.int else {
                throw LlamaError.invalidSetting(path: f.path, key: "\(arch).\(k)", problem: "is not an integer that fits 64 bits")
            }
            return i
        }
        func int(_ k: String) throws -> Int {
            guard let v = try optionalInt(k) else { throw LlamaError.missingConfig(path: f.path, key: "\(arch).\(k)") }
            return v
        }
        let d = try int("embedding_length"), h = try int("attention.head_count")
        let vocab = try optionalInt("vocab_size") ?? f["tokenizer.ggml.tokens"]?.count
        guard let vocab else { throw LlamaError.missingConfig(path: f.path, key: "\(arch).vocab_size") }
        self.init(layers: try int("block_count"), dModel: d, heads: h,
                  kvHeads: try optionalInt("attention.head_count_kv") ?? h,
                  headDim: try optionalInt("rope.dimension_count") ?? (h > 0 ? d / h : 0),
                  ffnDim: try int("feed_forward_length"), vocabSize: vocab,
                  contextLength: try optionalInt("context_length") ?? 2048,
                  ropeBase: Float(f["\(arch).rope.freq_base"]?.double ?? 10000),
                  rmsEps: Float(f["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
                  tiedEmbeddings: f.tensor("output.weight") == nil)
        let keys = ["layers": "block_count", "d_model": "embedding_length", "heads": "attention.head_count",
                    "kv_heads": "attention.head_count_kv", "head_dim": "rope.dimension_count",
                    "ffn_dim": "feed_forward_length", "vocab_size": "vocab_size", "context_length": "context_length",
                    "rope_base": "rope.freq_base", "rms_eps": "attention.layer_norm_rms_epsilon"]
        try validate(path: f.path) { "\(arch).\(keys[$0] ?? $0)" }
    }

    /// Upper bounds on each setting: generous for today's models (Llama 3 405B has 126 layers, d 16384, vocab 128256;
    /// Gemma 3 has vocab 262144), small enough that every size computed from them fits an `Int`.
    public static let limits: [String: ClosedRange<Int>] = [
        "layers": 1...1024, "d_model": 1...65536, "heads": 1...1024, "kv_heads": 1...1024, "head_dim": 2...1024,
        "ffn_dim": 1...1_048_576, "vocab_size": 1...4_194_304, "context_length": 1...16_777_216,
    ]

    /// Checks every setting before anything is sized from it: each within `limits`, `head_dim` even (RoPE rotates
    /// pairs), `heads` a multiple of `kv_heads`, `rope_base` finite and positive, `rms_eps` finite and ≥ 0.
    /// - Parameters:
    ///   - path: the model file, for the message.
    ///   - keyName: how the source names a setting (default: the store's `/config` attribute names).
    public func validate(path: String, keyName: (String) -> String = { $0 }) throws {
        func check(_ name: String, _ v: Int) throws {
            let r = LlamaConfig.limits[name]!
            guard r.contains(v) else {
                throw LlamaError.invalidSetting(path: path, key: keyName(name), problem: "= \(v) is outside \(r.lowerBound)...\(r.upperBound)")
            }
        }
        try check("layers", layers); try check("d_model", dModel); try check("heads", heads)
        try check("kv_heads", kvHeads); try check("head_dim", headDim); try check("ffn_dim", ffnDim)
        try check("vocab_size", vocabSize); try check("context_length", contextLength)
        guard heads % kvHeads == 0 else {
            throw LlamaError.invalidSetting(path: path, key: keyName("kv_heads"),
                                            problem: "= \(kvHeads) does not divide \(keyName("heads")) = \(heads)")
        }
        guard headDim % 2 == 0 else {
            throw LlamaError.invalidSetting(path: path, key: keyName("head_dim"), problem: "= \(headDim) is odd (RoPE needs pairs)")
        }
        guard ropeBase.isFinite, ropeBase > 0 else {
            throw LlamaError.invalidSetting(path: path, key: keyName("rope_base"), problem: "= \(ropeBase) is not a positive number")
        }
        guard rmsEps.isFinite, rmsEps >= 0 else {
            throw LlamaError.invalidSetting(path: path, key: keyName("rms_eps"), problem: "= \(rmsEps) is not a number ≥ 0")
        }
    }
}

/// Errors of the model layer.
public enum LlamaError: Error, CustomStringConvertible, Equatable {
    case notLlama(path: String, architecture: String)
    case missingConfig(path: String, key: String)
    case invalidConfig(String)
    /// A configuration value out of range or inconsistent (`key` as the file names it).
    case invalidSetting(path: String, key: String, problem: String)
    /// The float32 weights would not fit this machine's memory.
    case modelTooLarge(path: String, bytes: Int, available: Int)
    /// The model path exists but cannot be read (a directory, no permission, ...).
    case modelUnreadable(path: String, problem: FileProblem)
    /// The default model's file does not have its published SHA-256.
    case checksumMismatch(path: String, expected: String, found: String)
    case missingWeight(path: String, tensor: String)
    case unusedWeight(path: String, tensor: String)
    case weightShape(tensor: String, expected: [Int], found: [Int])
    case unsupportedModelFile(path: String)
    case modelNotFound(path: String)
    case emptyPrompt
    case tokenOutOfRange(id: Int, vocab: Int)
    case contextTooLong(tokens: Int, limit: Int)
    case storeCorrupt(path: String, problem: String)

    static func gb(_ bytes: Int) -> String { String(format: "%.1f GB", Double(bytes) / 1e9) }

    public var description: String {
        switch self {
        case let .notLlama(path, arch):
            return "\(path): architecture '\(arch)' is not Llama-family (supported: \(LlamaConfig.supportedArchitectures.sorted().joined(separator: ", ")))"
        case let .missingConfig(path, key): return "\(path): missing model setting \(key)"
        case let .invalidConfig(s): return "invalid model configuration: \(s)"
        case let .invalidSetting(path, key, problem): return "\(path): model setting \(GGUFError.printable(key)) \(problem)"
        case let .modelTooLarge(path, bytes, available):
            return "\(path): the model needs \(LlamaError.gb(bytes)) of float32 weights; this machine has \(LlamaError.gb(available)) of memory"
        case let .modelUnreadable(path, problem): return "\(path): cannot read: \(problem)"
        case let .checksumMismatch(path, expected, found):
            return "\(path): SHA-256 \(found) is not the default model's \(expected) (corrupted or modified; delete it and run `scalpel fetch`)"
        case let .missingWeight(path, t): return "\(path): weight \(t) is missing"
        case let .unusedWeight(path, t): return "\(path): tensor \(GGUFError.printable(t)) is not used by the Llama architecture (unknown layout?)"
        case let .weightShape(t, e, f): return "weight \(t): expected shape \(e), found \(f)"
        case let .unsupportedModelFile(path): return "\(path): not a model file Scalpel reads (use .gguf, a Scalpel .h5, or a safetensors folder)"
        case let .modelNotFound(path):
            return "model \(path) not found; run `scalpel fetch` (or scripts/fetch-model.sh) to download the default model, or pass --model"
        case .emptyPrompt: return "the prompt is empty"
        case let .tokenOutOfRange(id, vocab): return "token id \(id) is outside the vocabulary (0..<\(vocab))"
        case let .contextTooLong(n, limit): return "\(n) tokens exceed the model's context length \(limit)"
        case let .storeCorrupt(path, problem): return "\(path): \(problem)"
        }
    }
}
