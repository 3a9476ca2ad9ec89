import Foundation
import GGUF

/// One named parameter of a Llama model. The only table of checkpoint tensor names in Scalpel lives here.
public enum LlamaParameter: Hashable, Sendable, CustomStringConvertible {
    case tokenEmbedding, outputNorm, output
    case attnNorm(Int), wq(Int), wk(Int), wv(Int), wo(Int), ffnNorm(Int), wGate(Int), wUp(Int), wDown(Int)

    /// Name in GGUF files (llama.cpp convention).
    public var ggufName: String {
        switch self {
        case .tokenEmbedding: return "token_embd.weight"
        case .outputNorm: return "output_norm.weight"
        case .output: return "output.weight"
        case let .attnNorm(l): return "blk.\(l).attn_norm.weight"
        case let .wq(l): return "blk.\(l).attn_q.weight"
        case let .wk(l): return "blk.\(l).attn_k.weight"
        case let .wv(l): return "blk.\(l).attn_v.weight"
        case let .wo(l): return "blk.\(l).attn_output.weight"
        case let .ffnNorm(l): return "blk.\(l).ffn_norm.weight"
        case let .wGate(l): return "blk.\(l).ffn_gate.weight"
        case let .wUp(l): return "blk.\(l).ffn_up.weight"
        case let .wDown(l): return "blk.\(l).ffn_down.weight"
        }
    }

    /// Name in Hugging Face safetensors checkpoints.
    public var huggingFaceName: String {
        switch self {
        case .tokenEmbedding: return "model.embed_tokens.weight"
        case .outputNorm: return "model.norm.weight"
        case .output: return "lm_head.weight"
        case let .attnNorm(l): return "model.layers.\(l).input_layernorm.weight"
        case let .wq(l): return "model.layers.\(l).self_attn.q_proj.weight"
        case let .wk(l): return "model.layers.\(l).self_attn.k_proj.weight"
        case let .wv(l): return "model.layers.\(l).self_attn.v_proj.weight"
        case let .wo(l): return "model.layers.\(l).self_attn.o_proj.weight"
        case let .ffnNorm(l): return "model.layers.\(l).post_attention_layernorm.weight"
        case let .wGate(l): return "model.layers.\(l).mlp.gate_proj.weight"
        case let .wUp(l): return "model.layers.\(l).mlp.up_proj.weight"
        case let .wDown(l): return "model.layers.\(l).mlp.down_proj.weight"
        }
    }

    public var description: String { ggufName }

    /// Row-major shape [rows, cols] (a vector is [n]). GGUF lists the same dimensions reversed.
    public func shape(_ c: LlamaConfig) -> [Int] {
        switch self {
        case .tokenEmbedding, .output: return [c.vocabSize, c.dModel]
        case .outputNorm, .attnNorm, .ffnNorm: return [c.dModel]
        case .wq: return [c.heads * c.headDim, c.dModel]
        case .wk, .wv: return [c.kvHeads * c.headDim, c.dModel]
        case .wo: return [c.dModel, c.heads * c.headDim]
        case .wGate, .wUp: return [c.ffnDim, c.dModel]
        case .wDown: return [c.dModel, c.ffnDim]
        }
    }

    /// Every parameter of a model with configuration `c`, in checkpoint order.
    public static func all(_ c: LlamaConfig) -> [LlamaParameter] {
        var out: [LlamaParameter] = [.tokenEmbedding]
        for l in 0..<c.layers {
            out += [.attnNorm(l), .wq(l), .wk(l), .wv(l), .wo(l), .ffnNorm(l), .wGate(l), .wUp(l), .wDown(l)]
        }
        out.append(.outputNorm)
        if !c.tiedEmbeddings { out.append(.output) }
        return out
    }
}

/// Weights of one transformer block. q, k, v and gate, up are fused so each is one GEMM.
public struct LlamaLayerWeights {
    public var attnNorm: [Float]   // [D]
    public var wqkv: [Float]       // [(H+2·KVH)·HD, D]: rows of q, then k, then v
    public var wo: [Float]         // [D, H·HD]
    public var ffnNorm: [Float]    // [D]
    public var wGateUp: [Float]    // [2F, D]: rows of gate, then up
    public var wDown: [Float]      // [D, F]
}

/// A source of named float32 tensors (a GGUF file, a Scalpel HDF5 store, a safetensors checkpoint).
public protocol WeightSource {
    /// Where the tensors come from (for error messages).
    var sourcePath: String { get }
    /// Names of every tensor the source holds, in the naming scheme of `naming`.
    var tensorNames: [String] { get }
    /// How this source names parameters.
    func name(of p: LlamaParameter) -> String
    /// Row-major shape of a tensor, or nil when absent.
    func shape(of name: String) -> [Int]?
    /// Reads tensor `name` as float32 into `out` (exactly its element count).
    func read(_ name: String, into out: UnsafeMutableBufferPointer<Float>) throws
}

/// All weights of a Llama model in float32.
public final class LlamaWeights {
    public let config: LlamaConfig
    public var tokenEmbedding: [Float]  // [V, D]
    public var outputNorm: [Float]      // [D]
    public var output: [Float]?         // [V, D]; nil when tied to tokenEmbedding
    public var layers: [LlamaLayerWeights]

    /// Zero-filled weights (for synthetic models and as a loading target).
    public init(zeros c: LlamaConfig) {
        config = c
        tokenEmbedding = [Float](repeating: 0, count: c.vocabSize * c.dModel)
        outputNorm = [Float](repeating: 0, count: c.dModel)
        output = c.tiedEmbeddings ? nil : [Float](repeating: 0, count: c.vocabSize * c.dModel)
        layers = (0..<c.layers).map { _ in
            LlamaLayerWeights(attnNorm: [Float](repeating: 0, count: c.dModel),
                              wqkv: [Float](repeating: 0, count: c.qkvDim * c.dModel),
                              wo: [Float](repeating: 0, count: c.dModel * c.heads * c.headDim),
                              ffnNorm: [Float](repeating: 0, count: c.dModel),
                              wGateUp: [Float](repeating: 0, count: 2 * c.ffnDim * c.dModel),
                              wDown: [Float](repeating: 0, count: c.dModel * c.ffnDim))
        }
    }

    /// Gives mutable access to parameter `p`'s values (a slice of a fused matrix where fused).
    public func withParameter<R>(_ p: LlamaParameter, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        let c = config
        func slice(_ a: inout [Float], _ start: Int, _ count: Int) throws -> R {
            try a.withUnsafeMutableBufferPointer { try body(UnsafeMutableBufferPointer(rebasing: $0[start..<(start + count)])) }
        }
        let qRows = c.heads * c.headDim, kvRows = c.kvHeads * c.headDim, d = c.dModel
        switch p {
        case .tokenEmbedding: return try slice(&tokenEmbedding, 0, tokenEmbedding.count)
        case .outputNorm: return try slice(&outputNorm, 0, outputNorm.count)
        case .output:
            if output == nil { return try slice(&tokenEmbedding, 0, tokenEmbedding.count) }
            return try slice(&output!, 0, output!.count)
        case let .attnNorm(l): return try slice(&layers[l].attnNorm, 0, d)
        case let .wq(l): return try slice(&layers[l].wqkv, 0, qRows * d)
        case let .wk(l): return try slice(&layers[l].wqkv, qRows * d, kvRows * d)
        case let .wv(l): return try slice(&layers[l].wqkv, (qRows + kvRows) * d, kvRows * d)
        case let .wo(l): return try slice(&layers[l].wo, 0, layers[l].wo.count)
        case let .ffnNorm(l): return try slice(&layers[l].ffnNorm, 0, d)
        case let .wGate(l): return try slice(&layers[l].wGateUp, 0, c.ffnDim * d)
        case let .wUp(l): return try slice(&layers[l].wGateUp, c.ffnDim * d, c.ffnDim * d)
        case let .wDown(l): return try slice(&layers[l].wDown, 0, layers[l].wDown.count)
        }
    }

    /// A copy of parameter `p`'s values.
    public func values(_ p: LlamaParameter) -> [Float] { withParameter(p) { Array($0) } }

    /// Overwrites parameter `p`.
    public func setValues(_ p: LlamaParameter, _ v: [Float]) {
        withParameter(p) { dst in
            precondition(dst.count == v.count, "\(p): \(v.count) values for \(dst.count)")
            _ = v.withUnsafeBufferPointer { memcpy(dst.baseAddress!, $0.baseAddress!, v.count * 4) }
        }
    }

    /// Loads every parameter from `source`, verifying that each is present with the right shape and that
    /// the source holds no tensor the architecture does not use.
    ///
    /// Nothing is allocated until the configuration is valid (`LlamaConfig.validate`), the whole tensor table matches
    /// the expected parameter list, and the float32 weights fit this machine's memory (`checkMemory`).
    public static func load(config c: LlamaConfig, from source: WeightSource) throws -> LlamaWeights {
        try c.validate(path: source.sourcePath)
        let params = LlamaParameter.all(c)
        var used = Set<String>()
        for p in params {
            let name = source.name(of: p)
            guard let shape = source.shape(of: name) else {
                throw LlamaError.missingWeight(path: source.sourcePath, tensor: name)
            }
            guard shape == p.shape(c) else { throw LlamaError.weightShape(tensor: name, expected: p.shape(c), found: shape) }
            used.insert(name)
        }
        for name in source.tensorNames where !used.contains(name) {
            // llama.cpp writes precomputed RoPE frequencies for some models; they carry no weights.
            if name.hasSuffix("rope_freqs.weight") { continue }
            throw LlamaError.unusedWeight(path: source.sourcePath, tensor: name)
        }
        try checkMemory(c, path: source.sourcePath)
        let w = LlamaWeights(zeros: c)
        for p in params { try w.withParameter(p) { try source.read(source.name(of: p), into: $0) } }
        return w
    }

    /// Refuses a configuration whose float32 weights exceed the machine's physical memory (call after `validate`,
    /// which bounds every factor so the product cannot overflow).
    public static func checkMemory(_ c: LlamaConfig, path: String,
                                   available: Int = Int(clamping: ProcessInfo.processInfo.physicalMemory)) throws {
        let bytes = c.parameterCount.multipliedReportingOverflow(by: 4)
        guard !bytes.overflow, bytes.partialValue <= available else {
            throw LlamaError.modelTooLarge(path: path, bytes: bytes.overflow ? Int.max : bytes.partialValue, available: available)
        }
    }
}

import Foundation

/// GGUF files as a weight source (dimensions reversed to row-major).
extension GGUFFile: WeightSource {
    public var sourcePath: String { path }
    public var tensorNames: [String] { tensors.map(\.name) }
    public func name(of p: LlamaParameter) -> String { p.ggufName }
    public func shape(of name: String) -> [Int]? { tensor(name).map { Array($0.dims.reversed()) } }
    public func read(_ name: String, into out: UnsafeMutableBufferPointer<Float>) throws {
        guard let info = tensor(name) else { throw GGUFError.missingTensor(path: path, tensor: name) }
        try read(info, into: out)
    }
}
