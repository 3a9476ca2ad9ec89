import Foundation
import GGUF
import Hashing

// Hugging Face checkpoints as a model source: safetensors weights, config.json, tokenizer.json.
//
// - `SafetensorsFile`: one memory-mapped .safetensors file (header validated: contiguous data, sizes match dtypes).
// - `SafetensorsCheckpoint`: a `WeightSource` over one file or the shards of a folder, in Hugging Face names,
//   permuting the query/key rows into GGUF order as they are read (see `RotaryLayout`).
// - `LlamaConfig(huggingFace:)` / `huggingFaceConfig`: config.json ⇄ `LlamaConfig`.
// - `HuggingFaceTokenizer`: tokenizer.json (+ tokenizer_config.json) ⇄ `Tokenizer`.
// - `ModelFile.openSafetensors`: all of the above as a `ModelFile` (`ModelFile.open` dispatches here for a
//   .safetensors file or a folder holding model.safetensors and config.json).

// MARK: - Errors

/// Problems with a Hugging Face checkpoint: its safetensors files, config.json or tokenizer files.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    /// A file the checkpoint needs is absent (`what`: which one and why it is needed).
    case missingFile(path: String, what: String)
    /// The safetensors header or data layout is invalid.
    case badHeader(path: String, problem: String)
    /// A tensor is stored in a dtype Scalpel does not convert to float32.
    case unsupportedDType(path: String, tensor: String, dtype: String)
    /// config.json lacks a setting or has one Scalpel cannot honour.
    case badConfig(path: String, key: String, problem: String)
    /// tokenizer.json / tokenizer_config.json describe a tokenizer Scalpel does not implement, or are malformed.
    case badTokenizer(path: String, problem: String)

    public var description: String {
        switch self {
        case let .missingFile(path, what): return "\(path): not found (\(what))"
        case let .badHeader(path, problem): return "\(path): not a valid safetensors file: \(problem)"
        case let .unsupportedDType(path, tensor, dtype):
            return "\(path): tensor \(tensor) is stored as \(dtype); Scalpel reads F32, F16, BF16 and F64 weights"
        case let .badConfig(path, key, problem): return "\(path): \(key): \(problem)"
        case let .badTokenizer(path, problem): return "\(path): \(problem)"
        }
    }

    /// What the user can do about it.
    public var hint: String {
        switch self {
        case .missingFile:
            return "a Hugging Face model folder needs model.safetensors (or model.safetensors.index.json and its shards), "
                + "config.json and tokenizer.json"
        case .badHeader: return "the file is truncated or was not written by a safetensors writer; download or export it again"
        case .unsupportedDType: return "convert the checkpoint to float32, float16 or bfloat16 first"
        case .badConfig: return "only Llama-architecture checkpoints (model_type \"llama\", SiLU MLP, no biases, plain RoPE) load"
        case .badTokenizer:
            return "Scalpel runs byte-level BPE tokenizers (GPT-2 / SmolLM / Llama 3 / Qwen2 pre-tokenizers), not SentencePiece"
        }
    }
}

// MARK: - Safetensors files

/// Element types of the safetensors format.
public enum SafetensorsDType: String, CaseIterable, Sendable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", u64 = "U64", i32 = "I32", u32 = "U32", i16 = "I16", u16 = "U16", i8 = "I8", u8 = "U8"
    case bool = "BOOL", f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }

    /// Whether `SafetensorsFile.read` converts this type to float32.
    public var isFloatReadable: Bool { [.f64, .f32, .f16, .bf16].contains(self) }
}

/// One tensor's entry in a safetensors header.
public struct SafetensorsTensor: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    /// Row-major shape (`[]` for a scalar).
    public let shape: [Int]
    /// Byte range [begin, end) within the data section (which starts after the header).
    public let begin: Int
    public let end: Int
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped .safetensors file.
///
/// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON (`{name: {dtype, shape, data_offsets}}` plus an
/// optional `"__metadata__"` string map, possibly padded with spaces), then the data section. Opening validates that
/// every tensor's byte count matches its dtype and shape and that the tensors tile the data section exactly
/// (contiguous, no overlap, no trailing bytes), as the reference implementation requires.
public final class SafetensorsFile {
    public let path: String
    /// Tensors in data order.
    public let tensors: [SafetensorsTensor]
    /// The header's `__metadata__` (string → string).
    public let metadata: [String: String]
    /// Bytes of the JSON header (excluding the 8-byte length).
    public let headerLength: Int
    /// Offset of the data section in the file.
    public var dataOffset: Int { 8 + headerLength }
    public let fileSize: Int
    private let data: Data
    private let index: [String: Int]

    /// Largest header the format allows (100 MB, as the reference implementation).
    public static let maxHeaderLength = 100_000_000

    public init(path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw SafetensorsError.missingFile(path: path, what: "safetensors weights")
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw SafetensorsError.missingFile(path: path, what: "cannot read: \(error.localizedDescription)")
        }
        self.path = path
        self.data = data
        self.fileSize = data.count
        func bad(_ problem: String) -> SafetensorsError { .badHeader(path: path, problem: problem) }
        guard data.count >= 8 else { throw bad("\(data.count) bytes, shorter than the 8-byte header length") }
        let n64 = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) }
        guard n64 <= UInt64(SafetensorsFile.maxHeaderLength) else { throw bad("header length \(n64) exceeds 100 MB") }
        let n = Int(n64)
        guard 8 + n <= data.count else { throw bad("header length \(n) runs past the end of the file (\(data.count) bytes)") }
        headerLength = n
        let headerBytes = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + 8 + n))
        guard headerBytes.first == UInt8(ascii: "{") else { throw bad("header does not start with '{'") }
        guard let root = (try? JSONSerialization.jsonObject(with: headerBytes)) as? [String: Any] else {
            throw bad("header is not a JSON object")
        }
        var meta: [String: String] = [:]
        var infos: [SafetensorsTensor] = []
        for (name, entry) in root {
            if name == "__metadata__" {
                guard let m = entry as? [String: Any] else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw bad("__metadata__.\(k) is not a string") }
                    meta[k] = s
                }
                continue
            }
            guard let e = entry as? [String: Any] else { throw bad("entry \(name) is not an object") }
            guard let dt = e["dtype"] as? String else { throw bad("\(name): no dtype") }
            guard let dtype = SafetensorsDType(rawValue: dt) else { throw bad("\(name): unknown dtype \(dt)") }
            guard let shapeAny = e["shape"] as? [Any] else { throw bad("\(name): no shape") }
            let shape = shapeAny.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeAny.count, shape.allSatisfy({ $0 >= 0 }) else { throw bad("\(name): invalid shape") }
            guard let offAny = e["data_offsets"] as? [Any], offAny.count == 2,
                  let b = (offAny[0] as? NSNumber)?.intValue, let en = (offAny[1] as? NSNumber)?.intValue, 0 <= b, b <= en else {
                throw bad("\(name): invalid data_offsets")
            }
            let (count, overflow) = shape.reduce((1, false)) { acc, d in
                let (p, o) = acc.0.multipliedReportingOverflow(by: d); return (p, acc.1 || o)
            }
            guard !overflow, count.multipliedReportingOverflow(by: dtype.byteSize).overflow == false,
                  en - b == count * dtype.byteSize else {
                throw bad("\(name): \(en - b) bytes for shape \(shape) of \(dt)")
            }
            infos.append(SafetensorsTensor(name: name, dtype: dtype, shape: shape, begin: b, end: en))
        }
        infos.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var expected = 0
        for t in infos {
            guard t.begin == expected else {
                throw bad(t.begin < expected ? "tensor \(t.name) overlaps the previous one" : "hole before tensor \(t.name)")
            }
            expected = t.end
        }
        guard expected == data.count - 8 - n else {
            throw bad("tensors cover \(expected) bytes but the data section has \(data.count - 8 - n)")
        }
        tensors = infos
        metadata = meta
        index = Dictionary(infos.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// The header entry of tensor `name`.
    public func tensor(_ name: String) -> SafetensorsTensor? { index[name].map { tensors[$0] } }

    /// Calls `body` with the stored bytes of `t`.
    public func withRawBytes<R>(of t: SafetensorsTensor, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try data.withUnsafeBytes { all in
            try body(UnsafeRawBufferPointer(rebasing: all[(dataOffset + t.begin)..<(dataOffset + t.end)]))
        }
    }

    /// Converts `t` to float32 into `out` (exactly `elementCount` values, row-major).
    public func read(_ t: SafetensorsTensor, into out: UnsafeMutableBufferPointer<Float>) throws {
        guard out.count == t.elementCount else {
            throw SafetensorsError.badHeader(path: path, problem: "\(t.name): \(out.count) values requested, tensor has \(t.elementCount)")
        }
        guard t.elementCount > 0 else { return }
        try withRawBytes(of: t) { raw in
            switch t.dtype {
            case .f32: try Dequantize.run(.f32, raw, count: t.elementCount, into: out.baseAddress!, tensor: t.name)
            case .f16: try Dequantize.run(.f16, raw, count: t.elementCount, into: out.baseAddress!, tensor: t.name)
            case .bf16: try Dequantize.run(.bf16, raw, count: t.elementCount, into: out.baseAddress!, tensor: t.name)
            case .f64:
                for i in 0..<t.elementCount {
                    out[i] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                }
            default:
                throw SafetensorsError.unsupportedDType(path: path, tensor: t.name, dtype: t.dtype.rawValue)
            }
        }
    }

    /// Tensor `name` as float32.
    public func floats(_ name: String) throws -> [Float] {
        guard let t = tensor(name) else { throw LlamaError.missingWeight(path: path, tensor: name) }
        var out = [Float](repeating: 0, count: t.elementCount)
        try out.withUnsafeMutableBufferPointer { try read(t, into: $0) }
        return out
    }
}

// MARK: - Query/key row order

/// Row order of the query and key projections within each head.
///
/// Hugging Face Llama checkpoints apply RoPE to the two halves of a head: dimension i rotates with i + HD/2.
/// llama.cpp's converter (and so every GGUF) reorders the rows of `wq` and `wk` so that RoPE rotates adjacent pairs
/// (2i, 2i+1) instead — `reshape(heads, 2, HD/2, in).swapaxes(1, 2)` — and Scalpel's forward uses the GGUF order:
///
///     pairs[h·HD + 2i + s] = halves[h·HD + s·HD/2 + i]      (s ∈ {0, 1}, i < HD/2, whole rows of `columns`)
///
/// `wk` uses the key/value head count. The two orders give identical attention scores; only the storage differs.
public enum RotaryLayout {
    /// Hugging Face (halves) → GGUF (pairs).
    public static func halvesToPairs(_ src: UnsafeBufferPointer<Float>, _ dst: UnsafeMutableBufferPointer<Float>,
                                     heads: Int, columns: Int) {
        permute(src, dst, heads: heads, columns: columns, toPairs: true)
    }

    /// GGUF (pairs) → Hugging Face (halves).
    public static func pairsToHalves(_ src: UnsafeBufferPointer<Float>, _ dst: UnsafeMutableBufferPointer<Float>,
                                     heads: Int, columns: Int) {
        permute(src, dst, heads: heads, columns: columns, toPairs: false)
    }

    public static func halvesToPairs(_ src: [Float], heads: Int, columns: Int) -> [Float] {
        convert(src, heads: heads, columns: columns, toPairs: true)
    }

    public static func pairsToHalves(_ src: [Float], heads: Int, columns: Int) -> [Float] {
        convert(src, heads: heads, columns: columns, toPairs: false)
    }

    private static func convert(_ src: [Float], heads: Int, columns: Int, toPairs: Bool) -> [Float] {
        var out = [Float](repeating: 0, count: src.count)
        src.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { permute(s, $0, heads: heads, columns: columns, toPairs: toPairs) } }
        return out
    }

    private static func permute(_ src: UnsafeBufferPointer<Float>, _ dst: UnsafeMutableBufferPointer<Float>,
                                heads: Int, columns: Int, toPairs: Bool) {
        precondition(src.count == dst.count && heads > 0 && columns > 0 && src.count % (heads * columns) == 0,
                     "RotaryLayout: \(src.count) values do not form \(heads) heads of rows of \(columns)")
        let hd = src.count / columns / heads
        precondition(hd % 2 == 0, "RotaryLayout: head width \(hd) is odd")
        let half = hd / 2
        for h in 0..<heads {
            for i in 0..<half {
                for s in 0..<2 {
                    let pairRow = h * hd + 2 * i + s, halfRow = h * hd + s * half + i
                    let (from, to) = toPairs ? (halfRow, pairRow) : (pairRow, halfRow)
                    memcpy(dst.baseAddress! + to * columns, src.baseAddress! + from * columns, columns * 4)
                }
            }
        }
    }
}

// MARK: - Checkpoint (weight source)

/// The weights of a Hugging Face Llama checkpoint (one safetensors file or several shards) as a `WeightSource`:
/// Hugging Face tensor names, row-major shapes, any float dtype converted to float32, and `q_proj` / `k_proj` rows
/// permuted into GGUF order on read (`RotaryLayout`).
public final class SafetensorsCheckpoint: WeightSource {
    public let sourcePath: String
    public let config: LlamaConfig
    public let files: [SafetensorsFile]
    public let tensorNames: [String]
    /// Tensors present but not weights of the model: rotary caches (`…rotary_emb.inv_freq`) and the `lm_head.weight`
    /// duplicate some tied checkpoints carry.
    public let ignoredTensors: [String]
    private let location: [String: (file: Int, tensor: SafetensorsTensor)]
    /// Rows to permute: tensor name → head count.
    private let rotaryHeads: [String: Int]

    public init(files: [SafetensorsFile], config c: LlamaConfig, sourcePath: String) throws {
        self.sourcePath = sourcePath
        self.config = c
        self.files = files
        var loc: [String: (Int, SafetensorsTensor)] = [:]
        var names: [String] = [], ignored: [String] = []
        for (i, f) in files.enumerated() {
            for t in f.tensors {
                if let other = loc[t.name] {
                    throw SafetensorsError.badHeader(path: f.path, problem: "tensor \(t.name) also in \(files[other.0].path)")
                }
                loc[t.name] = (i, t)
                if t.name.hasSuffix("rotary_emb.inv_freq") || (c.tiedEmbeddings && t.name == LlamaParameter.output.huggingFaceName) {
                    ignored.append(t.name)
                } else {
                    names.append(t.name)
                }
            }
        }
        location = loc
        tensorNames = names
        ignoredTensors = ignored
        var rot: [String: Int] = [:]
        for l in 0..<c.layers {
            rot[LlamaParameter.wq(l).huggingFaceName] = c.heads
            rot[LlamaParameter.wk(l).huggingFaceName] = c.kvHeads
        }
        rotaryHeads = rot
    }

    public func name(of p: LlamaParameter) -> String { p.huggingFaceName }

    public func shape(of name: String) -> [Int]? { location[name]?.tensor.shape }

    public func read(_ name: String, into out: UnsafeMutableBufferPointer<Float>) throws {
        guard let (i, t) = location[name] else { throw LlamaError.missingWeight(path: sourcePath, tensor: name) }
        guard let heads = rotaryHeads[name] else { return try files[i].read(t, into: out) }
        var halves = [Float](repeating: 0, count: out.count)
        try halves.withUnsafeMutableBufferPointer { try files[i].read(t, into: $0) }
        halves.withUnsafeBufferPointer { RotaryLayout.halvesToPairs($0, out, heads: heads, columns: config.dModel) }
    }

    /// Storage dtypes of the model's tensors with counts (e.g. ["BF16": 272]).
    public var dtypeCounts: [String: Int] {
        var out: [String: Int] = [:]
        for n in tensorNames { if let t = location[n]?.tensor { out[t.dtype.rawValue, default: 0] += 1 } }
        return out
    }

    /// The safetensors files of a checkpoint at `path` and the folder holding its config.json: a .safetensors file
    /// (alone), or a folder with model.safetensors or model.safetensors.index.json (its shards, in index order).
    public static func locate(_ path: String) throws -> (folder: String, files: [String]) {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { throw LlamaError.modelNotFound(path: path) }
        if !isDir.boolValue { return ((path as NSString).deletingLastPathComponent, [path]) }
        let folder = path
        let single = (folder as NSString).appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: single) { return (folder, [single]) }
        let indexPath = (folder as NSString).appendingPathComponent("model.safetensors.index.json")
        guard fm.fileExists(atPath: indexPath) else {
            throw SafetensorsError.missingFile(path: single, what: "the folder has neither model.safetensors nor model.safetensors.index.json")
        }
        guard let data = fm.contents(atPath: indexPath),
              let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let map = root["weight_map"] as? [String: String] else {
            throw SafetensorsError.badHeader(path: indexPath, problem: "no weight_map object")
        }
        var shards: [String] = []
        for shard in Set(map.values).sorted() {
            guard !shard.contains("/"), !shard.hasPrefix(".") else {
                throw SafetensorsError.badHeader(path: indexPath, problem: "shard name \(shard) is not a file in the folder")
            }
            shards.append((folder as NSString).appendingPathComponent(shard))
        }
        guard !shards.isEmpty else { throw SafetensorsError.badHeader(path: indexPath, problem: "empty weight_map") }
        return (folder, shards)
    }
}

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

// MARK: - tokenizer.json

/// Hugging Face `tokenizers` files ⇄ Scalpel's byte-level BPE `Tokenizer`.
///
/// tokenizer.json: a `BPE` model (vocab, merges; no unk_token, no byte fallback), `added_tokens` for control
/// (special) and user-defined (non-special) tokens, a ByteLevel decoder, and a pre-tokenizer per scanner:
/// - gpt2:   `ByteLevel` (add_prefix_space false, use_regex true — the GPT-2 split regex)
/// - smollm: `Sequence[Digits(individual_digits: true), ByteLevel]`
/// - llama3 / qwen2: `Sequence[Split(Regex …, Isolated), ByteLevel(use_regex: false)]` with the exact regex
/// Special token ids, BOS insertion and the chat template live in tokenizer_config.json (and config.json).
public enum HuggingFaceTokenizer {
    /// The GGUF `tokenizer.ggml.pre` name Scalpel records for each scanner.
    public static func ggufPreName(_ p: PreTokenizer) -> String {
        switch p {
        case .gpt2: return "gpt2"
        case .smollm: return "smollm"
        case .llama3: return "llama-bpe"
        case .qwen2: return "qwen2"
        }
    }

    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    static func byteLevel(useRegex: Bool) -> [String: Any] {
        ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": useRegex]
    }

    /// The `pre_tokenizer` object of tokenizer.json for a scanner.
    public static func preTokenizerJSON(_ p: PreTokenizer) -> [String: Any] {
        switch p {
        case .gpt2: return byteLevel(useRegex: true)
        case .smollm:
            return ["type": "Sequence",
                    "pretokenizers": [["type": "Digits", "individual_digits": true] as [String: Any], byteLevel(useRegex: true)]]
        case .llama3, .qwen2:
            let split: [String: Any] = ["type": "Split", "pattern": ["Regex": p == .llama3 ? llama3Regex : qwen2Regex],
                                        "behavior": "Isolated", "invert": false]
            return ["type": "Sequence", "pretokenizers": [split, byteLevel(useRegex: false)]]
        }
    }

    /// The scanner a tokenizer.json `pre_tokenizer` object describes.
    /// - Throws: `SafetensorsError.badTokenizer` naming the construct when it is not one of the supported forms.
    public static func preTokenizer(fromJSON json: Any?, path: String = "tokenizer.json") throws -> PreTokenizer {
        func fail(_ why: String) -> SafetensorsError {
            .badTokenizer(path: path, problem: "unsupported pre_tokenizer: \(why) (supported: ByteLevel → gpt2, "
                          + "Digits(individual_digits) + ByteLevel → smollm, Split(Llama 3 / Qwen2 regex) + ByteLevel → llama3 / qwen2)")
        }
        func isByteLevel(_ o: Any?, regex: Bool) throws -> Bool {
            guard let o = o as? [String: Any], o["type"] as? String == "ByteLevel" else { return false }
            if (o["add_prefix_space"] as? Bool) == true { throw fail("ByteLevel with add_prefix_space") }
            return ((o["use_regex"] as? Bool) ?? true) == regex
        }
        guard let obj = json as? [String: Any], let type = obj["type"] as? String else {
            throw fail(json == nil || json is NSNull ? "none (whitespace splitting is required)" : "not an object")
        }
        if type == "ByteLevel" {
            if try isByteLevel(obj, regex: true) { return .gpt2 }
            throw fail("ByteLevel without its split regex")
        }
        guard type == "Sequence", let parts = obj["pretokenizers"] as? [Any] else { throw fail(type) }
        let kinds = parts.map { (($0 as? [String: Any])?["type"] as? String) ?? "?" }
        if parts.count == 2, let digits = parts[0] as? [String: Any], kinds[0] == "Digits" {
            guard (digits["individual_digits"] as? Bool) == true else { throw fail("Digits without individual_digits") }
            if try isByteLevel(parts[1], regex: true) { return .smollm }
        }
        if parts.count == 2, let split = parts[0] as? [String: Any], kinds[0] == "Split", try isByteLevel(parts[1], regex: false) {
            let pattern = (split["pattern"] as? [String: Any])?["Regex"] as? String
            guard (split["behavior"] as? String) == "Isolated", (split["invert"] as? Bool) != true else {
                throw fail("Split with behavior \(split["behavior"] ?? "?")")
            }
            if pattern == llama3Regex { return .llama3 }
            if pattern == qwen2Regex { return .qwen2 }
            throw fail("Split regex \(pattern ?? "(none)")")
        }
        throw fail("Sequence[\(kinds.joined(separator: ", "))]")
    }

    /// The tokenizer.json document for `t` (vocabulary in id order). Gap fillers `[PAD<id>]` of type unused are left
    /// out (`load` recreates them), so a round trip gives the same vocabulary.
    public static func tokenizerJSON(_ t: Tokenizer) throws -> Data {
        let tokens = t.vocabulary, types = t.tokenTypes
        var added: [[String: Any]] = []
        var vocab: [(String, Int)] = []
        var seen = Set<String>()
        for (i, tok) in tokens.enumerated() {
            if types[i] == TokenType.unused.rawValue && tok == "[PAD\(i)]" { continue }
            guard seen.insert(tok).inserted else { continue }  // a duplicate string cannot be a key twice
            vocab.append((tok, i))
            switch TokenType(rawValue: types[i]) {
            case .control?, .unknown?, .userDefined?:
                added.append(["id": i, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": types[i] != TokenType.userDefined.rawValue])
            default: break
            }
        }
        let postProcessor: [String: Any]
        if t.addBOS, let bos = t.bosID {
            let b = tokens[bos]
            postProcessor = [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": b, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [["SpecialToken": ["id": b, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                         ["SpecialToken": ["id": b, "type_id": 1]], ["Sequence": ["id": "B", "type_id": 1]]],
                "special_tokens": [b: ["id": b, "ids": [bos], "tokens": [b]]],
            ]
        } else {
            postProcessor = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true]
        }
        func json(_ o: Any) throws -> String {
            String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes]),
                   as: UTF8.self)
        }
        var s = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [\n"
        s += try added.map { "    " + (try json($0)) }.joined(separator: ",\n")
        s += "\n  ],\n  \"normalizer\": null,\n"
        s += "  \"pre_tokenizer\": " + (try json(preTokenizerJSON(t.preTokenizer))) + ",\n"
        s += "  \"post_processor\": " + (try json(postProcessor)) + ",\n"
        s += "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n"
        s += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
        s += "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
        s += "    \"byte_fallback\": false,\n    \"vocab\": {\n"
        s += vocab.map { "      \(quote($0.0)): \($0.1)" }.joined(separator: ",\n")
        s += "\n    },\n    \"merges\": [\n"
        // "left right" strings (readable by every tokenizers version) unless an operand contains a space.
        let pairForm = t.mergeList.contains { $0.utf8.filter { $0 == 0x20 }.count != 1 }
        s += t.mergeList.map { m -> String in
            guard pairForm, let sp = m.firstIndex(of: " ") else { return "      " + quote(m) }
            return "      [\(quote(String(m[..<sp]))), \(quote(String(m[m.index(after: sp)...])))]"
        }.joined(separator: ",\n")
        s += "\n    ]\n  }\n}\n"
        return Data(s.utf8)
    }

    /// A JSON string literal.
    public static func quote(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    out += String(format: "\\u%04x", u.value)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    /// A tokenizer_config.json object for `t` (fast tokenizer backed by tokenizer.json).
    public static func tokenizerConfig(_ t: Tokenizer, padID: Int?, chatTemplate: String?, maxLength: Int) -> [String: Any] {
        var out: [String: Any] = [
            "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": t.addBOS, "add_eos_token": false,
            "clean_up_tokenization_spaces": false, "model_max_length": maxLength,
        ]
        func name(_ id: Int?) -> Any { id.map { t.token($0) as Any } ?? NSNull() }
        out["bos_token"] = name(t.bosID)
        out["eos_token"] = name(t.eosID)
        out["unk_token"] = name(t.unknownID)
        if let padID { out["pad_token"] = t.token(padID) }
        if let chatTemplate { out["chat_template"] = chatTemplate }
        return out
    }

    /// Reads `folder`/tokenizer.json (and tokenizer_config.json when present; `modelConfig` is config.json, consulted
    /// for special token ids the tokenizer files do not name). The vocabulary is padded with unused `[PAD<id>]`
    /// tokens up to `vocabSize` (as llama.cpp's converter does).
    /// - Returns: the tokenizer and the GGUF `tokenizer.*` scalar keys it corresponds to (model, pre, special ids,
    ///   add_bos_token, chat_template; not the token arrays).
    public static func load(folder: String, modelConfig: [String: Any]?, vocabSize: Int) throws
        -> (tokenizer: Tokenizer, metadata: [(key: String, value: GGUFValue)]) {
        let path = (folder as NSString).appendingPathComponent("tokenizer.json")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SafetensorsError.missingFile(path: path, what: "the tokenizer; Scalpel reads Hugging Face tokenizer.json")
        }
        func fail(_ why: String) -> SafetensorsError { .badTokenizer(path: path, problem: why) }
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object") }
        guard let model = root["model"] as? [String: Any] else { throw fail("no model") }
        let modelType = model["type"] as? String ?? "BPE"
        guard modelType == "BPE" else { throw fail("tokenizer model \(modelType); only byte-level BPE is supported") }
        if (model["byte_fallback"] as? Bool) == true { throw fail("BPE with byte_fallback (SentencePiece style) is not supported") }
        for k in ["continuing_subword_prefix", "end_of_word_suffix"] where model[k] is String {
            throw fail("BPE with \(k) is not supported")
        }
        if let n = root["normalizer"], !(n is NSNull) {
            // llama.cpp ignores an NFC normalizer (Qwen2); anything else changes the text before BPE.
            guard (n as? [String: Any])?["type"] as? String == "NFC" else {
                throw fail("normalizer \(((n as? [String: Any])?["type"] as? String) ?? "?") is not supported")
            }
        }
        let pre = try preTokenizer(fromJSON: root["pre_tokenizer"], path: path)
        guard let vocab = model["vocab"] as? [String: Any] else { throw fail("model.vocab is not an object") }
        var byID: [Int: String] = [:]
        for (tok, v) in vocab {
            guard let id = (v as? NSNumber)?.intValue, id >= 0, id < 1 << 24 else { throw fail("vocab entry \(tok) has no valid id") }
            if byID[id] != nil { throw fail("id \(id) is assigned twice in model.vocab") }
            byID[id] = tok
        }
        var special: [Int: Bool] = [:]
        for a in root["added_tokens"] as? [[String: Any]] ?? [] {
            guard let id = (a["id"] as? NSNumber)?.intValue, id >= 0, id < 1 << 24, let content = a["content"] as? String else {
                throw fail("added token without id/content")
            }
            if let existing = byID[id], existing != content { throw fail("added token \(id) \(content) differs from vocab \(existing)") }
            byID[id] = content
            special[id] = (a["special"] as? Bool) ?? false
        }
        let count = max((byID.keys.max() ?? -1) + 1, vocabSize)
        guard count <= vocabSize else { throw fail("\(count) tokens but the model's vocabulary is \(vocabSize)") }
        var tokens = [String](repeating: "", count: count), types = [Int](repeating: TokenType.normal.rawValue, count: count)
        for i in 0..<count {
            if let t = byID[i] {
                tokens[i] = t
                if let s = special[i] { types[i] = s ? TokenType.control.rawValue : TokenType.userDefined.rawValue }
            } else {
                tokens[i] = "[PAD\(i)]"; types[i] = TokenType.unused.rawValue
            }
        }
        var merges: [String] = []
        for (i, m) in (model["merges"] as? [Any] ?? []).enumerated() {
            if let s = m as? String { merges.append(s) } else if let p = m as? [String], p.count == 2 {
                merges.append(p[0] + " " + p[1])
            } else { throw fail("merge #\(i) is neither \"a b\" nor [\"a\", \"b\"]") }
        }

        // Special tokens: tokenizer_config.json names them; config.json gives ids.
        let configPath = (folder as NSString).appendingPathComponent("tokenizer_config.json")
        var tc: [String: Any] = [:]
        if let d = FileManager.default.contents(atPath: configPath) {
            guard let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else {
                throw SafetensorsError.badTokenizer(path: configPath, problem: "not a JSON object")
            }
            tc = o
        }
        let index = Dictionary(tokens.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        func specialID(_ kind: String) -> Int? {
            var name = tc["\(kind)_token"] as? String
            if name == nil, let o = tc["\(kind)_token"] as? [String: Any] { name = o["content"] as? String }
            if let name, let id = index[name] { return id }
            if let v = modelConfig?["\(kind)_token_id"] {
                let id = (v as? NSNumber)?.intValue ?? ((v as? [Any])?.first as? NSNumber)?.intValue
                if let id, (0..<count).contains(id) { return id }
            }
            return nil
        }
        let bos = specialID("bos"), eos = specialID("eos"), unk = specialID("unk"), pad = specialID("pad")
        var addBOS = tc["add_bos_token"] as? Bool
        if addBOS == nil, let pp = root["post_processor"] as? [String: Any], pp["type"] as? String == "TemplateProcessing",
           let single = pp["single"] as? [[String: Any]], let first = single.first {
            addBOS = first["SpecialToken"] != nil
        }
        var chatTemplate = tc["chat_template"] as? String
        if chatTemplate == nil, let list = tc["chat_template"] as? [[String: Any]] {
            chatTemplate = (list.first { $0["name"] as? String == "default" } ?? list.first)?["template"] as? String
        }
        let preName = ggufPreName(pre)
        let tokenizer = try Tokenizer(tokens: tokens, tokenTypes: types, merges: merges, pre: preName, bosID: bos, eosID: eos,
                                      unknownID: unk, addBOS: addBOS ?? false)
        var meta: [(key: String, value: GGUFValue)] = [("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string(preName))]
        for (k, id) in [("bos", bos), ("eos", eos), ("unknown", unk), ("padding", pad)] {
            if let id { meta.append(("tokenizer.ggml.\(k)_token_id", .uint32(UInt32(id)))) }
        }
        meta.append(("tokenizer.ggml.add_bos_token", .bool(addBOS ?? false)))
        if let chatTemplate { meta.append(("tokenizer.chat_template", .string(chatTemplate))) }
        return (tokenizer, meta)
    }
}

// MARK: - Opening a checkpoint

extension ModelFile {
    /// `__metadata__` key holding the GGUF metadata that config.json and the tokenizer files do not express
    /// (general.*, …) as `GGUFMetadataJSON`, written by Scalpel's safetensors export so a round trip keeps it.
    public static let safetensorsGGUFMetadataKey = "scalpel.gguf_metadata"

    /// Opens a Hugging Face Llama checkpoint: a .safetensors file (config.json and tokenizer.json beside it) or a
    /// folder with model.safetensors (or a sharded model.safetensors.index.json), config.json and tokenizer.json.
    ///
    /// Provenance: the source hash is the SHA-256 of the safetensors bytes (the shards concatenated in index order);
    /// `quantization` counts the storage dtypes. `metadata` is GGUF-style (general.*, llama.* from config.json,
    /// tokenizer.* scalars; not the token arrays), plus the `scalpel.*` keys of the safetensors `__metadata__`.
    public static func openSafetensors(_ path: String, hash: Bool = true) throws -> ModelFile {
        let (folder, filePaths) = try SafetensorsCheckpoint.locate(path)
        let configPath = (folder as NSString).appendingPathComponent("config.json")
        guard let configData = FileManager.default.contents(atPath: configPath) else {
            throw SafetensorsError.missingFile(path: configPath, what: "the model configuration (Hugging Face config.json)")
        }
        guard let json = (try? JSONSerialization.jsonObject(with: configData)) as? [String: Any] else {
            throw SafetensorsError.badConfig(path: configPath, key: "(file)", problem: "not a JSON object")
        }
        var config = try LlamaConfig(huggingFace: json, path: configPath)
        let files = try filePaths.map { try SafetensorsFile(path: $0) }
        // No tie_word_embeddings and no lm_head: the head is the embedding (rather than randomly initialised).
        if json["tie_word_embeddings"] == nil || json["tie_word_embeddings"] is NSNull, !files.contains(where: { $0.tensor(LlamaParameter.output.huggingFaceName) != nil }) {
            config.tiedEmbeddings = true
        }
        let source = try SafetensorsCheckpoint(files: files, config: config, sourcePath: path)
        let weights = try LlamaWeights.load(config: config, from: source)
        let (tokenizer, tokenizerMeta) = try HuggingFaceTokenizer.load(folder: folder, modelConfig: json, vocabSize: config.vocabSize)

        var sha = ""
        if hash {
            if filePaths.count == 1 { sha = try SHA256.hex(fileAt: filePaths[0]) } else {
                var h = SHA256()
                for p in filePaths {
                    let d = try Data(contentsOf: URL(fileURLWithPath: p), options: .alwaysMapped)
                    d.withUnsafeBytes { h.update($0) }
                }
                sha = SHA256.hexString(h.finalize())
            }
        }
        let dtypes = source.dtypeCounts
        let name = filePaths.count == 1 && !isDirectory(path) ? (path as NSString).lastPathComponent
            : ((path as NSString).standardizingPath as NSString).lastPathComponent
        let prov = ModelProvenance(sourceFile: name, sourceSize: files.reduce(0) { $0 + $1.fileSize },
                                   sourceSHA256: sha, quantization: dtypes)

        // Metadata: stored general.* keys (if Scalpel wrote them), then what config.json and the tokenizer say.
        let stMeta = files[0].metadata
        var meta: [(key: String, value: GGUFValue)] = []
        if let stored = stMeta[safetensorsGGUFMetadataKey], let entries = try? GGUFMetadataJSON.decode(stored) {
            meta = entries.filter { e in
                !e.key.hasPrefix("llama.") && !e.key.hasPrefix("tokenizer.") && !e.key.hasPrefix("scalpel.")
                    && e.key != "general.file_type" && e.key != "general.alignment" && e.key != "general.architecture"
            }
        } else {
            meta = [("general.type", .string("model")),
                    ("general.name", .string(((folder as NSString).standardizingPath as NSString).lastPathComponent))]
        }
        meta.insert(("general.architecture", .string("llama")), at: 0)
        let main = dtypes.max { ($0.value, $0.key) < ($1.value, $1.key) }?.key
        meta.append(("general.file_type", .uint32(main == "F16" ? 1 : main == "BF16" ? 32 : 0)))
        meta += config.ggufMetadata()
        meta += tokenizerMeta
        for k in stMeta.keys.sorted() where k.hasPrefix("scalpel.") && k != safetensorsGGUFMetadataKey {
            meta.append((k, .string(stMeta[k]!)))
        }
        return ModelFile(path: path, model: LlamaModel(weights: weights), tokenizer: tokenizer, provenance: prov, metadata: meta)
    }

    static func isDirectory(_ path: String) -> Bool {
        var d: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &d) && d.boolValue
    }
}
