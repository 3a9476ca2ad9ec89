import Foundation
import GGUF
import Hashing
import Llama

/// Storage type of the tensors a `--dtype source` export re-encodes (those whose values differ from the source's).
public enum EditedTensorDType: String, CaseIterable, Sendable {
    case f16, q8_0, f32

    public var ggmlType: GGMLType {
        switch self {
        case .f16: return .f16
        case .q8_0: return .q8_0
        case .f32: return .f32
        }
    }
}

/// The original GGUF checkpoint of a model, verified against the model's provenance hash.
public struct SourceCheckpoint {
    public let path: String
    public let file: GGUFFile
    /// SHA-256 of the file, equal to the model's `provenance.sourceSHA256` (when that is recorded).
    public let sha256: String

    /// Where `locate` looks for the source named by a store's provenance, in order: beside the store (and beside the
    /// file a symbolic link to the store points to), then in the weights folder (`ModelFile.weightsDirectory`).
    public static func candidates(for m: ModelFile) -> [String] {
        let name = m.provenance.sourceFile
        func beside(_ path: String) -> String {
            let dir = (path as NSString).deletingLastPathComponent
            return ((dir.isEmpty ? "." : dir) as NSString).appendingPathComponent(name)
        }
        func absolute(_ p: String) -> String { URL(fileURLWithPath: p).standardizedFileURL.path }
        let target = URL(fileURLWithPath: m.path).resolvingSymlinksInPath().path
        let inWeights = (ModelFile.weightsDirectory as NSString).appendingPathComponent(name)
        var out: [String] = []
        for p in [beside(m.path), beside(target), inWeights] where !out.contains(where: { absolute($0) == absolute(p) }) {
            out.append(p)
        }
        return out
    }

    /// Whether the model came from a GGUF file (opened from one, or a store imported from one).
    public static func isGGUFSourced(_ m: ModelFile) -> Bool {
        (m.path as NSString).pathExtension.lowercased() == "gguf"
            || (m.provenance.sourceFile as NSString).pathExtension.lowercased() == "gguf"
    }

    /// Finds and verifies the source checkpoint of `m`:
    /// - `explicit` (`--source FILE`) when given;
    /// - else the model's own file when it was opened from a .gguf;
    /// - else the file named by `/provenance@source_file`, beside the store or in the weights folder (`candidates`).
    ///
    /// The file must hash to `/provenance@source_sha256` (a store without a recorded hash cannot be verified and is
    /// refused; a .gguf opened directly is its own source). Returns nil only when `required` is false and no file of
    /// the recorded name exists (or the model is not GGUF-sourced); a file that exists but does not match always throws.
    public static func locate(for m: ModelFile, explicit: String? = nil, required: Bool = true) throws -> SourceCheckpoint? {
        let expected = m.provenance.sourceSHA256
        let own = (m.path as NSString).pathExtension.lowercased() == "gguf"
        if let explicit {
            guard FileManager.default.fileExists(atPath: explicit) else {
                throw ExportError.sourceNotFound(sourceFile: explicit, searched: [explicit])
            }
            return try verified(explicit, expected: expected, isModelFile: own && samePath(explicit, m.path))
        }
        if own { return try verified(m.path, expected: expected, isModelFile: true) }
        guard isGGUFSourced(m) else {
            if required { throw ExportError.sourceNotGGUF(model: m.path, sourceFile: m.provenance.sourceFile) }
            return nil
        }
        let places = candidates(for: m)
        var firstMismatch: ExportError?
        for p in places where FileManager.default.fileExists(atPath: p) {
            do { return try verified(p, expected: expected, isModelFile: false) } catch let e as ExportError {
                guard case .sourceMismatch = e else { throw e }
                if firstMismatch == nil { firstMismatch = e }
            }
        }
        if let firstMismatch { throw firstMismatch }
        if required { throw ExportError.sourceNotFound(sourceFile: m.provenance.sourceFile, searched: places) }
        return nil
    }

    static func samePath(_ a: String, _ b: String) -> Bool {
        URL(fileURLWithPath: a).resolvingSymlinksInPath().path == URL(fileURLWithPath: b).resolvingSymlinksInPath().path
    }

    /// Opens `path` and checks its SHA-256 against `expected` (an empty `expected` is accepted only for the model's own
    /// file, opened without hashing).
    static func verified(_ path: String, expected: String, isModelFile: Bool) throws -> SourceCheckpoint {
        guard !expected.isEmpty || isModelFile else {
            throw ExportError.sourceIncompatible(path: path, reason: "the store records no source SHA-256 to verify it against")
        }
        let found: String
        do { found = try SHA256.hex(fileAt: path) } catch {
            throw ExportError.sourceIncompatible(path: path, reason: "cannot read it (\(error))")
        }
        guard expected.isEmpty || found == expected else {
            throw ExportError.sourceMismatch(path: path, expected: expected, found: found)
        }
        return SourceCheckpoint(path: path, file: try GGUFFile(path: path), sha256: found)
    }
}

/// What a `--dtype source` export copied and re-encoded.
public struct SourceExportDetails: Sendable {
    /// The source checkpoint and its SHA-256.
    public var sourcePath: String
    public var sourceSHA256: String
    /// Tensors copied bit for bit, by GGML type name (e.g. "Q4_1": 209).
    public var copied: [String: Int]
    /// Tensors whose values differ from the source's, re-encoded as `editedDType` (vectors as F32).
    public var edited: [String]
    public var editedDType: EditedTensorDType

    public var summary: [String: Any] {
        ["path": sourcePath, "sha256": sourceSHA256, "copied": copied, "edited": edited, "edited_dtype": editedDType.rawValue]
    }
}

extension ModelExport {
    /// Writes `m` as a GGUF that keeps the source checkpoint's own storage: every tensor whose values equal the
    /// source's dequantized values (compared bit for bit, not taken from the edit log) is copied block for block
    /// (Q4_1, Q4_K, Q6_K, Q8_0, F32, …); the others (the edited matrices) are written as `edited` (vectors as F32).
    /// Tensors are in the source's order, tensors that are no model parameter (e.g. `rope_freqs.weight`) are copied;
    /// metadata as `gguf(_:to:dtype:)` writes it, with the source's `general.file_type` and `scalpel.export_dtype` =
    /// "source", `scalpel.edited_tensors`, `scalpel.edited_dtype` added. Atomic like `gguf`.
    @discardableResult
    public static func ggufKeepingSource(_ m: ModelFile, source: SourceCheckpoint, to path: String,
                                         edited: EditedTensorDType = .f16, toolVersion: String = "scalpel") throws -> ExportResult {
        let t0 = Date()
        let f = source.file, c = m.config
        let fileConfig: LlamaConfig
        do { fileConfig = try LlamaConfig(gguf: f) } catch {
            throw ExportError.sourceIncompatible(path: source.path, reason: "\(error)")
        }
        guard fileConfig == c else {
            throw ExportError.sourceIncompatible(path: source.path, reason: "its configuration differs from the model's")
        }
        let params = Dictionary(LlamaParameter.all(c).map { ($0.ggufName, $0) }, uniquingKeysWith: { a, _ in a })
        for name in params.keys where f.tensor(name) == nil {
            throw ExportError.sourceIncompatible(path: source.path, reason: "no tensor \(name)")
        }
        // Decide per tensor: copy (values equal the source's) or re-encode. One dequantization buffer, reused.
        enum Plan { case copy(GGUFTensorInfo), encode(LlamaParameter, GGMLType) }
        var plans: [(name: String, dims: [Int], type: GGMLType, bytes: Int, plan: Plan)] = []
        var scratch: [Float] = []
        var copied: [String: Int] = [:], editedNames: [String] = []
        for t in f.tensors {
            guard let p = params[t.name] else {
                plans.append((t.name, t.dims, t.type, t.byteCount, .copy(t)))
                copied[t.type.name, default: 0] += 1
                continue
            }
            guard t.dims == Array(p.shape(c).reversed()) else {
                throw ExportError.sourceIncompatible(path: source.path, reason: "\(t.name) has dims \(t.dims), the model \(Array(p.shape(c).reversed()))")
            }
            if scratch.count < t.elementCount { scratch = [Float](repeating: 0, count: t.elementCount) }
            let same = try scratch.withUnsafeMutableBufferPointer { buf -> Bool in
                let b = UnsafeMutableBufferPointer(rebasing: buf[0..<t.elementCount])
                try f.read(t, into: b)
                return m.model.weights.withParameter(p) { memcmp($0.baseAddress!, b.baseAddress!, 4 * t.elementCount) == 0 }
            }
            if same {
                plans.append((t.name, t.dims, t.type, t.byteCount, .copy(t)))
                copied[t.type.name, default: 0] += 1
            } else {
                let type: GGMLType = t.dims.count == 1 ? .f32 : edited.ggmlType
                if t.dims[0] % type.blockSize != 0 {
                    throw ExportError.editedTypeUnfit(tensor: t.name, type: type.name,
                                                      reason: "rows of \(t.dims[0]) are not a whole number of \(type.blockSize)-element blocks")
                }
                plans.append((t.name, t.dims, type, type.byteCount(elements: t.elementCount), .encode(p, type)))
                editedNames.append(t.name)
            }
        }
        scratch = []
        let fileType = f["general.file_type"]?.int.map { UInt32($0) }
        var meta = ggufMetadata(m, fileType: fileType, toolVersion: toolVersion)
        meta.append(("scalpel.export_dtype", .string("source")))
        meta.append(("scalpel.edited_tensors", .string(editedNames.joined(separator: ","))))
        meta.append(("scalpel.edited_dtype", .string(edited.rawValue)))
        let header = GGUFWriter.header(metadata: meta, tensors: plans.map { ($0.name, $0.dims, $0.type, $0.bytes) },
                                       alignment: ggufAlignment)
        try prepareParent(of: path)
        try atomically(path) { temp in
            let out = try BinaryFileWriter(path: temp)
            defer { out.closeQuietly() }
            try header.withUnsafeBytes { try out.write($0) }
            try out.pad(to: ggufAlignment)
            for e in plans {
                switch e.plan {
                case let .copy(t): try f.withRawBytes(of: t) { try out.write($0) }
                case let .encode(p, type):
                    try m.model.weights.withParameter(p) { try writeTensor(UnsafeBufferPointer($0), as: type, to: out, name: e.name) }
                }
                try out.pad(to: ggufAlignment)
            }
            try out.close()
        }
        let details = SourceExportDetails(sourcePath: source.path, sourceSHA256: source.sha256, copied: copied,
                                          edited: editedNames, editedDType: edited)
        return ExportResult(format: "gguf", dtype: "source", path: path, files: [ExportedFile(path: path, bytes: fileSize(path))],
                            tensors: plans.count, seconds: Date().timeIntervalSince(t0), source: details)
    }
}
