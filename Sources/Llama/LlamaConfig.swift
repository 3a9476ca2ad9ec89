import GGUF

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

    /// Reads the configuration from GGUF metadata (`llama.*` keys).
    public init(gguf f: GGUFFile) throws {
        guard let arch = f["general.architecture"]?.string else {
            throw LlamaError.notLlama(path: f.path, architecture: "(none)")
        }
        guard LlamaConfig.supportedArchitectures.contains(arch) else {
            throw LlamaError.notLlama(path: f.path, architecture: arch)
        }
        func int(_ k: String) throws -> Int {
            guard let v = f["\(arch).\(k)"]?.int else { throw LlamaError.missingConfig(path: f.path, key: "\(arch).\(k)") }
            return v
        }
        let d = try int("embedding_length"), h = try int("attention.head_count")
        let vocab = f["\(arch).vocab_size"]?.int ?? f["tokenizer.ggml.tokens"]?.array?.count
        guard let vocab else { throw LlamaError.missingConfig(path: f.path, key: "\(arch).vocab_size") }
        self.init(layers: try int("block_count"), dModel: d, heads: h,
                  kvHeads: f["\(arch).attention.head_count_kv"]?.int ?? h,
                  headDim: f["\(arch).rope.dimension_count"]?.int ?? d / h,
                  ffnDim: try int("feed_forward_length"), vocabSize: vocab,
                  contextLength: f["\(arch).context_length"]?.int ?? 2048,
                  ropeBase: Float(f["\(arch).rope.freq_base"]?.double ?? 10000),
                  rmsEps: Float(f["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
                  tiedEmbeddings: f.tensor("output.weight") == nil)
        guard heads % kvHeads == 0, headDim * heads == dModel || headDim > 0 else {
            throw LlamaError.invalidConfig("heads \(heads) not a multiple of kv heads \(kvHeads)")
        }
    }
}

/// Errors of the model layer.
public enum LlamaError: Error, CustomStringConvertible, Equatable {
    case notLlama(path: String, architecture: String)
    case missingConfig(path: String, key: String)
    case invalidConfig(String)
    case missingWeight(path: String, tensor: String)
    case unusedWeight(path: String, tensor: String)
    case weightShape(tensor: String, expected: [Int], found: [Int])
    case unsupportedModelFile(path: String)
    case modelNotFound(path: String)
    case emptyPrompt
    case tokenOutOfRange(id: Int, vocab: Int)
    case contextTooLong(tokens: Int, limit: Int)
    case storeCorrupt(path: String, problem: String)

    public var description: String {
        switch self {
        case let .notLlama(path, arch):
            return "\(path): architecture '\(arch)' is not Llama-family (supported: \(LlamaConfig.supportedArchitectures.sorted().joined(separator: ", ")))"
        case let .missingConfig(path, key): return "\(path): missing model setting \(key)"
        case let .invalidConfig(s): return "invalid model configuration: \(s)"
        case let .missingWeight(path, t): return "\(path): weight \(t) is missing"
        case let .unusedWeight(path, t): return "\(path): tensor \(t) is not used by the Llama architecture (unknown layout?)"
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
