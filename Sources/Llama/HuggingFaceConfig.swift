import Foundation
import GGUF
import Hashing

// Hugging Face config.json ⇄ LlamaConfig (safetensors import and export).

// MARK: - config.json

extension LlamaConfig {
    /// Reads a Hugging Face `LlamaConfig` (config.json). Defaults follow transformers' `LlamaConfig`
    /// (num_key_value_heads = num_attention_heads, head_dim = hidden_size / heads, rope_theta 10000,
    /// rms_norm_eps 1e-6, max_position_embeddings 2048, tie_word_embeddings false).
    /// - Throws: `LlamaError.notLlama` for another model type; `SafetensorsError.badConfig` for a missing size or a
    ///   feature Scalpel's forward does not implement (biases, non-SiLU MLP, RoPE scaling).
    public init(huggingFace json: [String: Any], path: String = "config.json") throws {
        func present(_ k: String) -> Any? { json[k].flatMap { $0 is NSNull ? nil : $0 } }
        func number(_ k: String) throws -> Double? {
            guard let v = present(k) else { return nil }
            guard let n = v as? NSNumber else { throw SafetensorsError.badConfig(path: path, key: k, problem: "not a number") }
            return n.doubleValue
        }
        func int(_ k: String) throws -> Int? {
            guard let d = try number(k) else { return nil }
            guard d == d.rounded(), d >= 0, d < 1e12 else { throw SafetensorsError.badConfig(path: path, key: k, problem: "not a count") }
            return Int(d)
        }
        func required(_ k: String) throws -> Int {
            guard let v = try int(k) else { throw SafetensorsError.badConfig(path: path, key: k, problem: "missing") }
            guard v > 0 else { throw SafetensorsError.badConfig(path: path, key: k, problem: "must be positive") }
            return v
        }
        let modelType = present("model_type") as? String
        let architectures = present("architectures") as? [String] ?? []
        if let mt = modelType {
            guard mt == "llama" else { throw LlamaError.notLlama(path: path, architecture: mt) }
        } else if !architectures.contains("LlamaForCausalLM") {
            throw LlamaError.notLlama(path: path, architecture: architectures.first ?? "(none)")
        }
        if let act = present("hidden_act") as? String, act != "silu" {
            throw SafetensorsError.badConfig(path: path, key: "hidden_act", problem: "\(act) (Scalpel's MLP is SiLU-gated)")
        }
        for k in ["attention_bias", "mlp_bias"] where (present(k) as? Bool) == true {
            throw SafetensorsError.badConfig(path: path, key: k, problem: "biases are not supported")
        }
        if let rs = present("rope_scaling") {
            let type = (rs as? [String: Any]).flatMap { ($0["rope_type"] ?? $0["type"]) as? String } ?? "?"
            if type != "default" {
                throw SafetensorsError.badConfig(path: path, key: "rope_scaling", problem: "RoPE scaling (\(type)) is not supported")
            }
        }
        let d = try required("hidden_size"), h = try required("num_attention_heads")
        let kvh = try int("num_key_value_heads") ?? h
        guard kvh > 0, h % kvh == 0 else {
            throw SafetensorsError.badConfig(path: path, key: "num_key_value_heads", problem: "\(kvh) does not divide \(h) heads")
        }
        let hd = try int("head_dim") ?? d / h
        guard hd > 0, hd % 2 == 0 else { throw SafetensorsError.badConfig(path: path, key: "head_dim", problem: "\(hd) is not a positive even width") }
        self.init(layers: try required("num_hidden_layers"), dModel: d, heads: h, kvHeads: kvh, headDim: hd,
                  ffnDim: try required("intermediate_size"), vocabSize: try required("vocab_size"),
                  contextLength: try int("max_position_embeddings") ?? 2048,
                  ropeBase: Float(try number("rope_theta") ?? 10000),
                  rmsEps: Float(try number("rms_norm_eps") ?? 1e-6),
                  tiedEmbeddings: (present("tie_word_embeddings") as? Bool) ?? false)
    }

    /// A Hugging Face config.json object for `LlamaForCausalLM` with this configuration.
    /// - Parameter torchDType: "float32", "float16" or "bfloat16".
    public func huggingFaceConfig(torchDType: String, bosID: Int?, eosID: Int?, padID: Int?) -> [String: Any] {
        var out: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": dModel, "intermediate_size": ffnDim, "num_attention_heads": heads,
            "num_key_value_heads": kvHeads, "num_hidden_layers": layers, "head_dim": headDim,
            "vocab_size": vocabSize, "max_position_embeddings": contextLength,
            "rms_norm_eps": LlamaConfig.shortest(rmsEps), "rope_theta": LlamaConfig.shortest(ropeBase),
            "rope_scaling": NSNull(), "tie_word_embeddings": tiedEmbeddings,
            "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "attention_dropout": 0.0,
            "pretraining_tp": 1, "use_cache": true, "torch_dtype": torchDType,
        ]
        out["bos_token_id"] = bosID.map { $0 as Any } ?? NSNull()
        out["eos_token_id"] = eosID.map { $0 as Any } ?? NSNull()
        if let padID { out["pad_token_id"] = padID }
        return out
    }

    /// The float's shortest decimal form as a Double (1e-05, not 9.99999974737875e-06), so JSON round-trips it.
    static func shortest(_ x: Float) -> Double { Double(x.description) ?? Double(x) }

    /// The `ARCH.*` GGUF keys llama.cpp writes for this configuration (counts as uint32, reals as float32).
    public func ggufMetadata(architecture a: String = "llama") -> [(key: String, value: GGUFValue)] {
        var out: [(key: String, value: GGUFValue)] = [
            ("\(a).context_length", .uint32(UInt32(contextLength))),
            ("\(a).embedding_length", .uint32(UInt32(dModel))),
            ("\(a).block_count", .uint32(UInt32(layers))),
            ("\(a).feed_forward_length", .uint32(UInt32(ffnDim))),
            ("\(a).rope.dimension_count", .uint32(UInt32(headDim))),
            ("\(a).attention.head_count", .uint32(UInt32(heads))),
            ("\(a).attention.head_count_kv", .uint32(UInt32(kvHeads))),
            ("\(a).attention.layer_norm_rms_epsilon", .float32(rmsEps)),
            ("\(a).rope.freq_base", .float32(ropeBase)),
            ("\(a).vocab_size", .uint32(UInt32(vocabSize))),
        ]
        if headDim * heads != dModel {
            out.append(("\(a).attention.key_length", .uint32(UInt32(headDim))))
            out.append(("\(a).attention.value_length", .uint32(UInt32(headDim))))
        }
        return out
    }
}
