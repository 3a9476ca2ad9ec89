import Foundation
import GGUF
import HDF5Store
import Llama

extension ModelExport {
    /// Files a safetensors export writes into its folder (an existing folder holding only these may be replaced).
    public static let safetensorsFolderFiles: Set<String> = [
        "model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    ]

    /// Writes `m` as a Hugging Face `LlamaForCausalLM` folder at `dir`:
    /// - `model.safetensors`: every parameter under its Hugging Face name, row-major `[out, in]`, all in `dtype`,
    ///   `q_proj` / `k_proj` rows returned to Hugging Face's rotate-halves order (`RotaryLayout.pairsToHalves`);
    ///   tied models hold only `model.embed_tokens.weight`. `__metadata__`: `format` = "pt", the `provenance` keys, and
    ///   `scalpel.gguf_metadata` (the GGUF keys the other files do not express, e.g. general.*).
    /// - `config.json`, `generation_config.json`; `tokenizer.json`, `tokenizer_config.json` (`HuggingFaceTokenizer`).
    ///
    /// The folder is written under a temporary name beside `dir` and renamed into place. An existing `dir` is
    /// replaced only when it holds nothing but files of a previous export (`safetensorsFolderFiles`).
    @discardableResult
    public static func safetensors(_ m: ModelFile, to dir: String, dtype: ExportDType = .f32,
                                   toolVersion: String = "scalpel") throws -> ExportResult {
        let t0 = Date()
        let fm = FileManager.default
        let c = m.config
        let dest = (dir as NSString).standardizingPath
        var isDir: ObjCBool = false
        let exists = fm.fileExists(atPath: dest, isDirectory: &isDir)
        if exists {
            guard isDir.boolValue else {
                throw ExportError.outputInUse(path: dest, reason: "is a file; a safetensors export writes a folder")
            }
            let foreign = ((try? fm.contentsOfDirectory(atPath: dest)) ?? []).filter { !safetensorsFolderFiles.contains($0) }
            guard foreign.isEmpty else {
                throw ExportError.outputInUse(path: dest, reason: "folder holds files an export did not write (\(foreign.sorted().prefix(3).joined(separator: ", ")))")
            }
        }
        try prepareParent(of: dest)
        AtomicFile.removeStaleTemporaries(besides: dest)   // folders left by a killed export (their process is gone)
        let temp = AtomicFile.temporaryPath(for: dest)
        do { try fm.createDirectory(atPath: temp, withIntermediateDirectories: false) } catch {
            throw ExportError.writeFailed(path: temp, reason: error.localizedDescription)
        }
        var names: [String] = []
        do {
            let params = LlamaParameter.all(c)
            try writeSafetensors(m, params: params, dtype: dtype, toolVersion: toolVersion,
                                 to: (temp as NSString).appendingPathComponent("model.safetensors"))
            let padID = m.metadata.first { $0.key == "tokenizer.ggml.padding_token_id" }?.value.int
                .flatMap { (0..<m.tokenizer.vocabularySize).contains($0) ? $0 : nil }
            let t = m.tokenizer
            let chatTemplate = m.metadata.first { $0.key == "tokenizer.chat_template" }?.value.string
            try writeJSON(c.huggingFaceConfig(torchDType: dtype.torchName, bosID: t.bosID, eosID: t.eosID, padID: padID),
                          to: temp, "config.json")
            var generation: [String: Any] = ["_from_model_config": true]
            if let b = t.bosID { generation["bos_token_id"] = b }
            if let e = t.eosID { generation["eos_token_id"] = e }
            if let padID { generation["pad_token_id"] = padID }
            try writeJSON(generation, to: temp, "generation_config.json")
            try writeFile(try HuggingFaceTokenizer.tokenizerJSON(t), to: temp, "tokenizer.json")
            try writeJSON(HuggingFaceTokenizer.tokenizerConfig(t, padID: padID, chatTemplate: chatTemplate, maxLength: c.contextLength),
                          to: temp, "tokenizer_config.json")
            names = ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
            for n in names { try fsyncFile((temp as NSString).appendingPathComponent(n)) }
            try replaceFolder(dest, with: temp, exists: exists)
        } catch {
            try? fm.removeItem(atPath: temp)
            if let e = error as? ExportError { throw e }
            throw ExportError.writeFailed(path: dest, reason: "\(error)")
        }
        let files = names.map { n -> ExportedFile in
            let p = (dest as NSString).appendingPathComponent(n)
            return ExportedFile(path: p, bytes: fileSize(p))
        }
        return ExportResult(format: "safetensors", dtype: dtype.rawValue, path: dest, files: files,
                            tensors: LlamaParameter.all(c).count, seconds: Date().timeIntervalSince(t0))
    }

    /// The `__metadata__` of an exported model.safetensors.
    public static func safetensorsMetadata(_ m: ModelFile, toolVersion: String) throws -> [(key: String, value: String)] {
        // GGUF keys config.json and the tokenizer files do not carry (general.* and any others), type-tagged.
        let rest = m.metadata.filter { e in
            !e.key.hasPrefix("llama.") && !e.key.hasPrefix("tokenizer.") && !e.key.hasPrefix("scalpel.")
                && !["general.architecture", "general.file_type", "general.alignment"].contains(e.key)
        }
        return [("format", "pt")] + provenance(m, toolVersion: toolVersion)
            + [(ModelFile.safetensorsGGUFMetadataKey, try GGUFMetadataJSON.encode(rest))]
    }

    /// Streams the safetensors file: header length, JSON header (space-padded so the data starts 8-byte aligned),
    /// then the tensors back to back in `params` order.
    static func writeSafetensors(_ m: ModelFile, params: [LlamaParameter], dtype: ExportDType, toolVersion: String,
                                 to path: String) throws {
        let c = m.config
        var header = "{\"__metadata__\":{"
        header += try safetensorsMetadata(m, toolVersion: toolVersion)
            .map { HuggingFaceTokenizer.quote($0.key) + ":" + HuggingFaceTokenizer.quote($0.value) }.joined(separator: ",")
        header += "}"
        var offset = 0
        for p in params {
            let shape = p.shape(c)
            let bytes = dtype.ggmlType.byteCount(elements: shape.reduce(1, *))
            header += "," + HuggingFaceTokenizer.quote(p.huggingFaceName) + ":{\"dtype\":\"\(dtype.safetensorsName)\",\"shape\":["
                + shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        header += "}"
        let headerBytes = header.utf8.count
        let padded = headerBytes + (8 - (8 + headerBytes) % 8) % 8
        let out = try BinaryFileWriter(path: path)
        defer { out.closeQuietly() }
        var n = UInt64(padded).littleEndian
        try withUnsafeBytes(of: &n) { try out.write($0) }
        try out.write(header)
        try out.pad(to: 8, with: 0x20)
        for p in params {
            try m.model.weights.withParameter(p) { values in
                let heads: Int?
                switch p {
                case .wq: heads = c.heads
                case .wk: heads = c.kvHeads
                default: heads = nil
                }
                if let heads {
                    var halves = [Float](repeating: 0, count: values.count)
                    halves.withUnsafeMutableBufferPointer {
                        RotaryLayout.pairsToHalves(UnsafeBufferPointer(values), $0, heads: heads, columns: c.dModel)
                    }
                    try halves.withUnsafeBufferPointer { try writeTensor($0, as: dtype.ggmlType, to: out, name: p.huggingFaceName) }
                } else {
                    try writeTensor(UnsafeBufferPointer(values), as: dtype.ggmlType, to: out, name: p.huggingFaceName)
                }
            }
        }
        try out.close()
    }

    static func writeJSON(_ object: [String: Any], to folder: String, _ name: String) throws {
        var data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        data.append(0x0A)
        try writeFile(data, to: folder, name)
    }

    static func writeFile(_ data: Data, to folder: String, _ name: String) throws {
        let p = (folder as NSString).appendingPathComponent(name)
        do { try data.write(to: URL(fileURLWithPath: p)) } catch {
            throw ExportError.writeFailed(path: p, reason: error.localizedDescription)
        }
    }

    static func fsyncFile(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ExportError.writeFailed(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ExportError.writeFailed(path: path, reason: String(cString: strerror(errno))) }
    }

    /// Renames `temp` to `dest`; an existing `dest` is first moved aside and removed after the swap (a crash in
    /// between leaves the old folder under its hidden `.NAME.old-…` name, never a partial export under `dest`).
    static func replaceFolder(_ dest: String, with temp: String, exists: Bool) throws {
        if !exists {
            guard rename(temp, dest) == 0 else { throw ExportError.writeFailed(path: dest, reason: String(cString: strerror(errno))) }
            return
        }
        let old = AtomicFile.temporaryPath(for: dest).replacingOccurrences(of: ".tmp-", with: ".old-")
        guard rename(dest, old) == 0 else { throw ExportError.writeFailed(path: dest, reason: String(cString: strerror(errno))) }
        guard rename(temp, dest) == 0 else {
            let reason = String(cString: strerror(errno))
            _ = rename(old, dest)
            throw ExportError.writeFailed(path: dest, reason: reason)
        }
        try? FileManager.default.removeItem(atPath: old)
    }
}
