import Foundation
import GGUF
import HDF5Store
import Hashing
import Llama

/// Storage type of exported weights.
public enum ExportDType: String, CaseIterable, Sendable, Codable {
    case f32, f16, bf16

    /// The GGML type of exported matrices (vectors stay F32 in GGUF, as llama.cpp writes them).
    public var ggmlType: GGMLType {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        }
    }

    /// GGUF `general.file_type` (llama.cpp's `llama_ftype`): ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_BF16 = 32.
    public var ggufFileType: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .bf16: return 32
        }
    }

    /// The safetensors dtype name.
    public var safetensorsName: String { ggmlType.name }

    /// The `torch_dtype` of config.json.
    public var torchName: String {
        switch self {
        case .f32: return "float32"
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        }
    }
}

/// Failures of `ModelExport`.
public enum ExportError: Error, CustomStringConvertible, Equatable {
    /// Writing `path` failed.
    case writeFailed(path: String, reason: String)
    /// The output location exists and is not something an export may replace.
    case outputInUse(path: String, reason: String)
    /// `--dtype source` for a model that was not imported from a GGUF (`sourceFile`: what its provenance names).
    case sourceNotGGUF(model: String, sourceFile: String)
    /// The source GGUF named by the store's provenance is in none of the `searched` places.
    case sourceNotFound(sourceFile: String, searched: [String])
    /// `path` is not the checkpoint the model was imported from (SHA-256 `found`, the provenance records `expected`).
    case sourceMismatch(path: String, expected: String, found: String)
    /// The source GGUF does not hold the model's tensors (`reason`: which one and how).
    case sourceIncompatible(path: String, reason: String)
    /// An edited tensor cannot be written in the requested type (e.g. Q8_0 needs rows of a multiple of 32).
    case editedTypeUnfit(tensor: String, type: String, reason: String)
    /// The export at `path` was written, but the edits `ids` no longer pass their behaviour checks on it.
    case editsLost(path: String, ids: [String], detail: String)

    public var description: String {
        switch self {
        case let .writeFailed(path, reason): return "\(path): cannot write export: \(reason)"
        case let .outputInUse(path, reason): return "\(path): \(reason)"
        case let .sourceNotGGUF(model, sourceFile):
            return "\(model): --dtype source needs a model imported from a GGUF, and this one came from \(sourceFile); "
                + "export with --dtype f32, f16 or bf16"
        case let .sourceNotFound(sourceFile, searched):
            return "source checkpoint \(sourceFile) not found (looked for \(searched.joined(separator: ", "))); "
                + "pass it with --source FILE, or export with --dtype f32, f16 or bf16"
        case let .sourceMismatch(path, expected, found):
            return "\(path) is not this model's source checkpoint (SHA-256 \(found.prefix(16))…, the store records "
                + "\(expected.prefix(16))…); pass the original file with --source, or export with --dtype f32, f16 or bf16"
        case let .sourceIncompatible(path, reason):
            return "\(path) does not match the model: \(reason); pass the original checkpoint with --source"
        case let .editedTypeUnfit(tensor, type, reason):
            return "\(tensor): cannot write the edited tensor as \(type): \(reason); use --edited-dtype f16 or f32"
        case let .editsLost(path, ids, detail):
            return "\(path) was written, but \(ids.joined(separator: ", ")) did not survive the export (\(detail)); "
                + "export with --edited-dtype f32 or --dtype f32"
        }
    }

    public var hint: String {
        switch self {
        case .writeFailed: return "check that the folder is writable and the disk has room"
        case .outputInUse: return "choose a new path, or remove it first"
        case .sourceNotGGUF, .sourceNotFound, .sourceMismatch, .sourceIncompatible, .editedTypeUnfit, .editsLost:
            return "see `scalpel export --help` for --dtype source"
        }
    }
}

/// One file an export wrote.
public struct ExportedFile: Sendable, Equatable {
    public var path: String
    public var bytes: Int
}

/// What an export wrote.
public struct ExportResult: Sendable {
    /// "gguf" or "safetensors".
    public var format: String
    /// "f32", "f16", "bf16" (`ExportDType.rawValue`) or "source" (`ModelExport.ggufKeepingSource`).
    public var dtype: String
    /// The GGUF file or the safetensors folder.
    public var path: String
    public var files: [ExportedFile]
    /// Tensors written.
    public var tensors: Int
    /// Wall time of the export.
    public var seconds: Double
    /// For `--dtype source`: what was copied from the source checkpoint and what was re-encoded.
    public var source: SourceExportDetails?
    public var bytes: Int { files.reduce(0) { $0 + $1.bytes } }

    public init(format: String, dtype: String, path: String, files: [ExportedFile], tensors: Int, seconds: Double,
                source: SourceExportDetails? = nil) {
        self.format = format; self.dtype = dtype; self.path = path; self.files = files; self.tensors = tensors
        self.seconds = seconds; self.source = source
    }

    /// A JSON-ready summary.
    public var summary: [String: Any] {
        var s: [String: Any] = ["format": format, "dtype": dtype, "path": path, "tensors": tensors, "seconds": seconds,
                                "bytes": bytes, "files": files.map { ["path": $0.path, "bytes": $0.bytes] as [String: Any] }]
        if let source { s["source"] = source.summary }
        return s
    }
}

/// Writes a loaded (typically edited) model as a GGUF file or a Hugging Face safetensors folder.
///
/// Both writers stream tensor by tensor (no second copy of the model in memory) to a temporary path next to the
/// destination and rename it into place, so the destination is either the old one or the complete new one.
public enum ModelExport {
    /// Alignment of the GGUF data section and of every tensor in it.
    public static let ggufAlignment = 32

    // MARK: GGUF

    /// Writes `m` as a GGUF v3 file at `path`.
    ///
    /// Tensors: every parameter under its GGUF name, dimensions in GGUF order (row-major shape reversed), in the
    /// query/key row order GGUF uses; matrices as `dtype`, vectors (norm weights) as F32. No `output.weight` for a
    /// tied model. Metadata: see `ggufMetadata`.
    @discardableResult
    public static func gguf(_ m: ModelFile, to path: String, dtype: ExportDType = .f32,
                            toolVersion: String = "scalpel") throws -> ExportResult {
        let t0 = Date()
        let c = m.config
        let params = LlamaParameter.all(c)
        let meta = ggufMetadata(m, fileType: dtype.ggufFileType, toolVersion: toolVersion)
        let entries = params.map { p -> (name: String, dims: [Int], type: GGMLType) in
            let shape = p.shape(c)
            return (p.ggufName, Array(shape.reversed()), shape.count == 1 ? .f32 : dtype.ggmlType)
        }
        let header = GGUFWriter.header(metadata: meta, tensors: entries.map {
            ($0.name, $0.dims, $0.type, $0.type.byteCount(elements: $0.dims.reduce(1, *)))
        }, alignment: ggufAlignment)
        try prepareParent(of: path)
        try atomically(path) { temp in
            let out = try BinaryFileWriter(path: temp)
            defer { out.closeQuietly() }
            try header.withUnsafeBytes { try out.write($0) }
            try out.pad(to: ggufAlignment)
            for (p, e) in zip(params, entries) {
                try m.model.weights.withParameter(p) { try writeTensor(UnsafeBufferPointer($0), as: e.type, to: out, name: e.name) }
                try out.pad(to: ggufAlignment)
            }
            try out.close()
        }
        return ExportResult(format: "gguf", dtype: dtype.rawValue, path: path, files: [ExportedFile(path: path, bytes: fileSize(path))],
                            tensors: params.count, seconds: Date().timeIntervalSince(t0))
    }

    /// The metadata of an exported GGUF: the source's keys in their order (general.*, llama.*, tokenizer.*), with
    /// - `llama.*` rewritten from the model's configuration, `general.file_type` from `dtype`;
    /// - the tokenizer (`tokenizer.ggml.model`/`pre`/`tokens`/`token_type`/`merges`, special ids, `add_bos_token`)
    ///   rebuilt from `m.tokenizer` — a Scalpel .h5 store keeps the arrays outside its GGUF metadata;
    /// - earlier `scalpel.*` keys and `general.alignment` dropped, then this export's `provenance` appended.
    public static func ggufMetadata(_ m: ModelFile, dtype: ExportDType, toolVersion: String) -> [(key: String, value: GGUFValue)] {
        ggufMetadata(m, fileType: dtype.ggufFileType, toolVersion: toolVersion)
    }

    /// `ggufMetadata(_:dtype:toolVersion:)` with `general.file_type` = `fileType` (nil: keep the model's own).
    static func ggufMetadata(_ m: ModelFile, fileType: UInt32?, toolVersion: String) -> [(key: String, value: GGUFValue)] {
        var meta = m.metadata.filter { !$0.key.hasPrefix("scalpel.") && $0.key != "general.alignment" }
        /// Replaces `k` in place, appends it (after `after` when that key exists), or removes it (nil).
        func set(_ k: String, _ v: GGUFValue?, after: String? = nil) {
            if let i = meta.firstIndex(where: { $0.key == k }) {
                if let v { meta[i].value = v } else { meta.remove(at: i) }
            } else if let v {
                if let after, let j = meta.lastIndex(where: { $0.key == after }) { meta.insert((k, v), at: j + 1) } else { meta.append((k, v)) }
            }
        }
        if let i = meta.firstIndex(where: { $0.key == "general.architecture" }) { meta.remove(at: i) }
        meta.insert(("general.architecture", .string("llama")), at: 0)
        if let fileType { set("general.file_type", .uint32(fileType)) }
        for (k, v) in m.config.ggufMetadata() { set(k, v) }
        let t = m.tokenizer
        set("tokenizer.ggml.model", .string("gpt2"))
        set("tokenizer.ggml.pre", .string(t.preName), after: "tokenizer.ggml.model")
        set("tokenizer.ggml.tokens", .array(.string, t.vocabulary.map { .string($0) }), after: "tokenizer.ggml.pre")
        set("tokenizer.ggml.token_type", .array(.int32, t.tokenTypes.map { .int32(Int32($0)) }), after: "tokenizer.ggml.tokens")
        set("tokenizer.ggml.merges", .array(.string, t.mergeList.map { .string($0) }), after: "tokenizer.ggml.token_type")
        set("tokenizer.ggml.bos_token_id", t.bosID.map { .uint32(UInt32($0)) })
        set("tokenizer.ggml.eos_token_id", t.eosID.map { .uint32(UInt32($0)) })
        set("tokenizer.ggml.unknown_token_id", t.unknownID.map { .uint32(UInt32($0)) })
        set("tokenizer.ggml.add_bos_token", .bool(t.addBOS))
        for (k, v) in provenance(m, toolVersion: toolVersion) { meta.append((k, .string(v))) }
        return meta
    }

    /// Provenance keys written into every export (GGUF metadata, safetensors `__metadata__`):
    /// `scalpel.tool_version`, `scalpel.exported_at` (ISO 8601), `scalpel.exported_from` (file the model was opened
    /// from, e.g. an edited .h5), `scalpel.source_file` / `scalpel.source_sha256` / `scalpel.source_quantization`
    /// (the checkpoint it was imported from, as `ModelProvenance` records it) and `scalpel.origin_sha256` (the first
    /// checkpoint of a chain of exports: carried over from a source that is itself a Scalpel export).
    public static func provenance(_ m: ModelFile, toolVersion: String) -> [(key: String, value: String)] {
        let p = m.provenance
        let quant = p.quantization.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        let origin = m.metadata.first { $0.key == "scalpel.origin_sha256" }?.value.string ?? p.sourceSHA256
        return [("scalpel.tool_version", toolVersion),
                ("scalpel.exported_at", ISO8601DateFormatter().string(from: Date())),
                ("scalpel.exported_from", (m.path as NSString).lastPathComponent),
                ("scalpel.source_file", p.sourceFile),
                ("scalpel.source_sha256", p.sourceSHA256),
                ("scalpel.source_quantization", quant),
                ("scalpel.origin_sha256", origin)]
    }

    // MARK: Shared plumbing

    /// Encodes `values` as `type` (F32 written as is) and appends them to `out`.
    static func writeTensor(_ values: UnsafeBufferPointer<Float>, as type: GGMLType, to out: BinaryFileWriter, name: String) throws {
        if type == .f32 {
            try out.write(UnsafeRawBufferPointer(values))
        } else {
            let bytes = try Quantize.run(type, values, tensor: name)
            try bytes.withUnsafeBytes { try out.write($0) }
        }
    }

    /// Creates the folder that will hold `path` if needed.
    static func prepareParent(of path: String) throws {
        let parent = ((path as NSString).standardizingPath as NSString).deletingLastPathComponent
        guard !parent.isEmpty else { return }
        do { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
            throw ExportError.writeFailed(path: path, reason: "cannot create folder \(parent): \(error.localizedDescription)")
        }
    }

    /// Writes a single file through a temporary file renamed into place (refusing to replace a folder).
    static func atomically(_ path: String, _ body: (String) throws -> Void) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            throw ExportError.outputInUse(path: path, reason: "is a folder; a GGUF export writes a single file")
        }
        do { try AtomicFile.write(to: path, body) } catch let e as ExportError { throw e } catch {
            throw ExportError.writeFailed(path: path, reason: "\(error)")
        }
    }

    static func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
    }
}

/// Buffered sequential writer over a C stream, counting bytes and turning failures into `ExportError`.
final class BinaryFileWriter {
    let path: String
    private var file: UnsafeMutablePointer<FILE>?
    private(set) var position = 0

    init(path: String) throws {
        guard let f = fopen(path, "wb") else {
            throw ExportError.writeFailed(path: path, reason: String(cString: strerror(errno)))
        }
        file = f
        self.path = path
        setvbuf(f, nil, _IOFBF, 4 << 20)
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let file else { throw ExportError.writeFailed(path: path, reason: "write after close") }
        guard bytes.count > 0 else { return }
        guard fwrite(bytes.baseAddress!, 1, bytes.count, file) == bytes.count else {
            throw ExportError.writeFailed(path: path, reason: String(cString: strerror(errno)))
        }
        position += bytes.count
    }

    func write(_ s: String) throws {
        var s = s
        try s.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }

    /// Zero bytes up to the next multiple of `alignment`.
    func pad(to alignment: Int, with byte: UInt8 = 0) throws {
        let n = (alignment - position % alignment) % alignment
        if n > 0 { try [UInt8](repeating: byte, count: n).withUnsafeBytes { try write($0) } }
    }

    /// Flushes and closes, reporting errors (e.g. a full disk).
    func close() throws {
        guard let f = file else { return }
        file = nil
        let flushed = fflush(f) == 0
        let err = errno
        let closed = fclose(f) == 0
        guard flushed && closed else {
            throw ExportError.writeFailed(path: path, reason: String(cString: strerror(flushed ? errno : err)))
        }
    }

    func closeQuietly() {
        if let f = file { fclose(f); file = nil }
    }
}
