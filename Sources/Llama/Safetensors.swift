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
