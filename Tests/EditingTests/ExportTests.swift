import Foundation
import XCTest
import GGUF
@testable import Llama
@testable import Editing

// Export (GGUF, safetensors folder) and safetensors import: round trips on a tiny synthetic model (no model file
// needed) and on the real SmolLM2-135M-Instruct, checked by Scalpel's own readers and by independent Python readers
// (the `gguf` package, a plain-Python safetensors header check, `safetensors` + numpy, HF `tokenizers`, and a numpy
// reimplementation of Hugging Face's Llama forward that uses rotate-halves RoPE). Python checks skip when the
// packages are absent.

// MARK: - Layout and format units (no model needed)

final class ExportFormatTests: XCTestCase {
    /// The permutation matches llama.cpp's `reshape(n_head, 2, HD/2, in).swapaxes(1, 2)` and inverts exactly.
    func testRotaryLayoutIsLlamaCppPermute() {
        let heads = 3, hd = 8, cols = 2
        let halves = (0..<(heads * hd * cols)).map(Float.init)
        let pairs = RotaryLayout.halvesToPairs(halves, heads: heads, columns: cols)
        // numpy: out[h, i, s, :] = in[h, s, i, :]
        for h in 0..<heads { for i in 0..<(hd / 2) { for s in 0..<2 { for c in 0..<cols {
            XCTAssertEqual(pairs[((h * (hd / 2) + i) * 2 + s) * cols + c], halves[((h * 2 + s) * (hd / 2) + i) * cols + c])
        } } } }
        XCTAssertEqual(Array(pairs[0..<8]), [0, 1, 8, 9, 2, 3, 10, 11])  // rows 0, 4, 1, 5 of head 0
        XCTAssertEqual(RotaryLayout.pairsToHalves(pairs, heads: heads, columns: cols), halves)
    }

    func testConfigJSONRoundTrip() throws {
        for c in [LlamaConfig(layers: 30, dModel: 576, heads: 9, kvHeads: 3, headDim: 64, ffnDim: 1536, vocabSize: 49152,
                              contextLength: 8192, ropeBase: 100000, rmsEps: 1e-5, tiedEmbeddings: true),
                  LlamaConfig(layers: 2, dModel: 16, heads: 4, kvHeads: 2, headDim: 6, ffnDim: 24, vocabSize: 300,
                              contextLength: 64, ropeBase: 500000, rmsEps: 1e-6, tiedEmbeddings: false)] {
            let obj = c.huggingFaceConfig(torchDType: "float16", bosID: 1, eosID: 2, padID: nil)
            let data = try JSONSerialization.data(withJSONObject: obj)
            let text = String(decoding: data, as: UTF8.self)
            XCTAssertTrue(text.contains("\"rms_norm_eps\":1e-0"), text)  // shortest decimal, not 9.99999974737875e-06
            let back = try LlamaConfig(huggingFace: try JSONSerialization.jsonObject(with: data) as! [String: Any])
            XCTAssertEqual(back, c)
        }
        // Defaults of transformers' LlamaConfig.
        let minimal: [String: Any] = ["model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                      "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100]
        let m = try LlamaConfig(huggingFace: minimal)
        XCTAssertEqual([m.kvHeads, m.headDim, m.contextLength], [4, 16, 2048])
        XCTAssertEqual(m.rmsEps, 1e-6); XCTAssertEqual(m.ropeBase, 10000); XCTAssertFalse(m.tiedEmbeddings)
    }

    func testConfigRejectsWhatTheForwardCannotRun() {
        let base: [String: Any] = ["model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                   "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100]
        func attempt(_ extra: [String: Any]) -> Error? {
            do { _ = try LlamaConfig(huggingFace: base.merging(extra) { $1 }, path: "c.json"); return nil } catch { return error }
        }
        XCTAssertEqual(attempt(["model_type": "mistral"]) as? LlamaError, .notLlama(path: "c.json", architecture: "mistral"))
        for (extra, key) in [(["rope_scaling": ["rope_type": "llama3", "factor": 8.0]], "rope_scaling"),
                             (["attention_bias": true], "attention_bias"), (["hidden_act": "gelu"], "hidden_act"),
                             (["num_key_value_heads": 3], "num_key_value_heads")] as [([String: Any], String)] {
            guard case let .badConfig(_, k, _)? = attempt(extra) as? SafetensorsError else { XCTFail("\(extra) accepted"); continue }
            XCTAssertEqual(k, key)
        }
        guard case .badConfig(_, "hidden_size", _)? = attempt(["hidden_size": NSNull()]) as? SafetensorsError else {
            return XCTFail("missing hidden_size accepted")
        }
    }

    func testPreTokenizerMapping() throws {
        for p in PreTokenizer.allCases {
            XCTAssertEqual(try HuggingFaceTokenizer.preTokenizer(fromJSON: HuggingFaceTokenizer.preTokenizerJSON(p)), p)
        }
        let unsupported: [Any?] = [
            nil, ["type": "Metaspace", "replacement": "▁"], ["type": "Whitespace"],
            ["type": "ByteLevel", "add_prefix_space": true, "use_regex": true],
            ["type": "Sequence", "pretokenizers": [["type": "Split", "pattern": ["Regex": "\\w+"], "behavior": "Isolated"],
                                                   ["type": "ByteLevel", "use_regex": false]]],
        ]
        for u in unsupported {
            XCTAssertThrowsError(try HuggingFaceTokenizer.preTokenizer(fromJSON: u)) { e in
                guard case .badTokenizer? = e as? SafetensorsError else { return XCTFail("\(e)") }
                XCTAssertTrue("\(e)".contains("unsupported pre_tokenizer"))
            }
        }
    }

    func testSafetensorsHeaderValidation() throws {
        let dir = try ExportFixtures.tempDir(self)
        func file(_ header: String, data: Int) throws -> String {
            let p = dir + "/\(UUID().uuidString).safetensors"
            var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
            bytes += Array(header.utf8) + [UInt8](repeating: 0, count: data)
            try Data(bytes).write(to: URL(fileURLWithPath: p))
            return p
        }
        let good = try file(#"{"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},"__metadata__":{"format":"pt"}}"#, data: 16)
        let f = try SafetensorsFile(path: good)
        XCTAssertEqual(f.tensors.map(\.name), ["a", "b"])
        XCTAssertEqual(f.metadata, ["format": "pt"])
        XCTAssertEqual(try f.floats("a"), [0, 0, 0, 0, 0, 0])
        let bad = [
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 12, "data section"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12, "hole"),
            (#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8, "bytes for shape"),
            (#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, 8, "unknown dtype"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "overlaps"),
            ("[1]", 0, "header"),
        ]
        for (h, n, expect) in bad {
            XCTAssertThrowsError(try SafetensorsFile(path: try file(h, data: n))) { e in
                guard case let .badHeader(_, problem)? = e as? SafetensorsError else { return XCTFail("\(e)") }
                XCTAssertTrue(problem.contains(expect), "\(problem) for \(h)")
            }
        }
        let truncated = dir + "/t.safetensors"
        try Data([200, 0, 0, 0, 0, 0, 0, 0, 0x7B]).write(to: URL(fileURLWithPath: truncated))
        XCTAssertThrowsError(try SafetensorsFile(path: truncated))
        let i64 = try file(#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, data: 8)
        XCTAssertThrowsError(try SafetensorsFile(path: i64).floats("a")) { e in
            XCTAssertEqual(e as? SafetensorsError, .unsupportedDType(path: i64, tensor: "a", dtype: "I64"))
        }
    }
}

// MARK: - Tiny synthetic model

final class ExportSyntheticTests: XCTestCase {
    let batch = [[3, 90, 100, 120, 200, 7, 45, 260], [5, 6, 7]]

    func testSafetensorsRoundTripIsExact() throws {
        for tied in [false, true] {
            let dir = try ExportFixtures.tempDir(self)
            let m = try ExportFixtures.tiny(tied: tied)
            let r = try ModelExport.safetensors(m, to: dir + "/hf", dtype: .f32, toolVersion: "test")
            XCTAssertEqual(r.files.map { ($0.path as NSString).lastPathComponent }.sorted(), ModelExport.safetensorsFolderFiles.sorted())
            let back = try ModelFile.open(dir + "/hf")
            ExportFixtures.assertSameWeights(m.model.weights, back.model.weights)
            let a = try m.model.forward(batch, logitRows: .all), b = try back.model.forward(batch, logitRows: .all)
            XCTAssertEqual(a.logits.array.map(\.bitPattern), b.logits.array.map(\.bitPattern))

            // On disk q/k are in Hugging Face order (not GGUF's), v is untouched; a tied model has no lm_head.
            let st = try SafetensorsFile(path: dir + "/hf/model.safetensors")
            let c = m.config
            XCTAssertEqual(try st.floats(LlamaParameter.wq(1).huggingFaceName),
                           RotaryLayout.pairsToHalves(m.model.weights.values(.wq(1)), heads: c.heads, columns: c.dModel))
            XCTAssertEqual(try st.floats(LlamaParameter.wk(0).huggingFaceName),
                           RotaryLayout.pairsToHalves(m.model.weights.values(.wk(0)), heads: c.kvHeads, columns: c.dModel))
            XCTAssertNotEqual(try st.floats(LlamaParameter.wq(1).huggingFaceName), m.model.weights.values(.wq(1)))
            XCTAssertEqual(try st.floats(LlamaParameter.wv(1).huggingFaceName), m.model.weights.values(.wv(1)))
            XCTAssertEqual(st.tensor("lm_head.weight") == nil, tied)
            XCTAssertEqual(st.metadata["format"], "pt")
            XCTAssertEqual(st.metadata["scalpel.source_sha256"], m.provenance.sourceSHA256)
            XCTAssertEqual(st.metadata["scalpel.exported_from"], "tiny.h5")

            // Tokenizer, special ids, general.* metadata and the chat template survive.
            XCTAssertEqual(back.tokenizer.vocabulary, m.tokenizer.vocabulary)
            XCTAssertEqual(back.tokenizer.tokenTypes, m.tokenizer.tokenTypes)
            XCTAssertEqual(back.tokenizer.mergeList, m.tokenizer.mergeList)
            XCTAssertEqual(back.tokenizer.preTokenizer, .smollm)
            XCTAssertEqual([back.tokenizer.bosID, back.tokenizer.eosID], [1, 0])
            let meta = Dictionary(back.metadata.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            XCTAssertEqual(meta["general.name"]?.string, "tiny")
            XCTAssertEqual(meta["general.license"]?.string, "apache-2.0")
            XCTAssertEqual(meta["tokenizer.chat_template"]?.string, "{{ messages }}")
            XCTAssertEqual(meta["tokenizer.ggml.padding_token_id"]?.int, 0)
            XCTAssertEqual(meta["scalpel.origin_sha256"]?.string, m.provenance.sourceSHA256)
            XCTAssertEqual(meta["llama.attention.key_length"]?.int, 6)
            XCTAssertEqual(back.provenance.quantization, ["F32": LlamaParameter.all(c).count])
        }
    }

    func testGGUFRoundTripAndEditedWeights() throws {
        let dir = try ExportFixtures.tempDir(self)
        let m = try ExportFixtures.tiny(tied: false)
        // An "edit": a rank-one change of one MLP output matrix, as ROME makes.
        var down = m.model.weights.values(.wDown(1))
        for i in 0..<16 { for j in 0..<24 { down[i * 24 + j] += 0.01 * Float(i - 8) * Float(j % 5) } }
        m.model.weights.setValues(.wDown(1), down)
        try ModelExport.gguf(m, to: dir + "/tiny.gguf", dtype: .f32, toolVersion: "test")
        let back = try ModelFile.open(dir + "/tiny.gguf")
        ExportFixtures.assertSameWeights(m.model.weights, back.model.weights)
        XCTAssertEqual(try m.model.forward(batch, logitRows: .all).logits.array,
                       try back.model.forward(batch, logitRows: .all).logits.array)
        XCTAssertEqual(back.tokenizer.vocabulary, m.tokenizer.vocabulary)
        XCTAssertEqual(back.tokenizer.tokenTypes, m.tokenizer.tokenTypes)
        XCTAssertEqual(back.tokenizer.mergeList, m.tokenizer.mergeList)
        let f = try GGUFFile(path: dir + "/tiny.gguf")
        XCTAssertEqual(f.tensors.map(\.name), LlamaParameter.all(m.config).map(\.ggufName))
        XCTAssertEqual(f.tensor("blk.0.attn_q.weight")?.dims, [16, 24])
        XCTAssertEqual(f["general.file_type"]?.int, 0)
        XCTAssertEqual(f["general.architecture"]?.string, "llama")
        XCTAssertEqual(f.metadata.first?.key, "general.architecture")
        XCTAssertEqual(f["scalpel.tool_version"]?.string, "test")
        XCTAssertEqual(f.dataOffset % 32, 0)
        for t in f.tensors { XCTAssertEqual(t.offset % 32, 0) }

        // f16: matrices F16, norms F32; values are the f16 roundings.
        try ModelExport.gguf(m, to: dir + "/tiny16.gguf", dtype: .f16)
        let h = try GGUFFile(path: dir + "/tiny16.gguf")
        XCTAssertEqual(h["general.file_type"]?.int, 1)
        XCTAssertEqual(h.tensor("blk.0.ffn_up.weight")?.type, .f16)
        XCTAssertEqual(h.tensor("blk.0.ffn_norm.weight")?.type, .f32)
        XCTAssertEqual(try h.floats("blk.1.ffn_down.weight"), down.map { HalfFloat.toFloat(HalfFloat.fromFloat($0)) })
        // bf16 as well.
        try ModelExport.gguf(m, to: dir + "/tinybf.gguf", dtype: .bf16)
        XCTAssertEqual(try GGUFFile(path: dir + "/tinybf.gguf")["general.file_type"]?.int, 32)
    }

    /// Exporting from a model whose metadata lacks the tokenizer arrays (as a .h5 store's does) rebuilds them.
    func testGGUFRebuildsTokenizerArraysAndChainsProvenance() throws {
        let dir = try ExportFixtures.tempDir(self)
        let m = try ExportFixtures.tiny(tied: true, pre: "llama-bpe", addBOS: true)
        try ModelExport.gguf(m, to: dir + "/a.gguf")
        let a = try ModelFile.open(dir + "/a.gguf")
        XCTAssertEqual(a.tokenizer.encode("Hello 123 the world's"), m.tokenizer.encode("Hello 123 the world's"))
        XCTAssertEqual(a.tokenizer.preName, "llama-bpe")
        XCTAssertTrue(a.tokenizer.addBOS)
        // Export the export: origin stays the first source, source is the intermediate file.
        try ModelExport.safetensors(a, to: dir + "/b")
        let b = try ModelFile.open(dir + "/b/model.safetensors")
        let meta = Dictionary(b.metadata.map { ($0.key, $0.value.string ?? "") }, uniquingKeysWith: { x, _ in x })
        XCTAssertEqual(meta["scalpel.origin_sha256"], m.provenance.sourceSHA256)
        XCTAssertEqual(meta["scalpel.source_sha256"], a.provenance.sourceSHA256)
        XCTAssertEqual(meta["scalpel.exported_from"], "a.gguf")
        XCTAssertTrue(b.tokenizer.addBOS)
        XCTAssertEqual(b.tokenizer.preTokenizer, .llama3)
        XCTAssertEqual(b.tokenizer.encode("Hello 123 the world's"), m.tokenizer.encode("Hello 123 the world's"))
    }

    func testSafetensorsFolderReplacementRules() throws {
        let dir = try ExportFixtures.tempDir(self)
        let m = try ExportFixtures.tiny(tied: true)
        // A previous export is replaced; a folder with other files, or a file, is refused.
        try ModelExport.safetensors(m, to: dir + "/out")
        try ModelExport.safetensors(m, to: dir + "/out", dtype: .f16)
        XCTAssertEqual(try SafetensorsFile(path: dir + "/out/model.safetensors").tensors.first?.dtype, .f16)
        try "mine".write(toFile: dir + "/out/notes.txt", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ModelExport.safetensors(m, to: dir + "/out")) { e in
            guard case .outputInUse? = e as? ExportError else { return XCTFail("\(e)") }
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/out/notes.txt"))
        XCTAssertThrowsError(try ModelExport.safetensors(m, to: dir + "/out/notes.txt"))
        XCTAssertThrowsError(try ModelExport.gguf(m, to: dir + "/out"))
        // Nothing temporary is left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }, [])
    }

    func testImportErrors() throws {
        let dir = try ExportFixtures.tempDir(self)
        let m = try ExportFixtures.tiny(tied: false)
        try ModelExport.safetensors(m, to: dir + "/hf")
        let fm = FileManager.default
        // Missing tokenizer.json.
        try fm.moveItem(atPath: dir + "/hf/tokenizer.json", toPath: dir + "/tok.json")
        XCTAssertThrowsError(try ModelFile.open(dir + "/hf")) { e in
            guard case .missingFile? = e as? SafetensorsError else { return XCTFail("\(e)") }
        }
        // A SentencePiece-style tokenizer.
        var tok = try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: dir + "/tok.json"))) as! [String: Any]
        tok["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"]
        try JSONSerialization.data(withJSONObject: tok).write(to: URL(fileURLWithPath: dir + "/hf/tokenizer.json"))
        XCTAssertThrowsError(try ModelFile.open(dir + "/hf")) { e in
            XCTAssertTrue("\(e)".contains("Metaspace"), "\(e)")
        }
        try fm.removeItem(atPath: dir + "/hf/tokenizer.json")
        try fm.moveItem(atPath: dir + "/tok.json", toPath: dir + "/hf/tokenizer.json")
        // A tied config over a checkpoint that also holds lm_head.weight: the head is ignored (the embedding is used).
        let cfgPath = dir + "/hf/config.json"
        var cfg = try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: cfgPath))) as! [String: Any]
        cfg["tie_word_embeddings"] = true
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: cfgPath))
        let tiedBack = try ModelFile.open(dir + "/hf")
        XCTAssertTrue(tiedBack.config.tiedEmbeddings)
        cfg["model_type"] = "gemma"
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: cfgPath))
        XCTAssertThrowsError(try ModelFile.open(dir + "/hf")) { e in
            guard case .notLlama? = e as? LlamaError else { return XCTFail("\(e)") }
        }
        try fm.removeItem(atPath: cfgPath)
        XCTAssertThrowsError(try ModelFile.open(dir + "/hf")) { e in
            guard case .missingFile? = e as? SafetensorsError else { return XCTFail("\(e)") }
        }
    }

    /// Sharded checkpoints (model.safetensors.index.json) load like a single file.
    func testShardedCheckpoint() throws {
        let dir = try ExportFixtures.tempDir(self)
        let m = try ExportFixtures.tiny(tied: true)
        try ModelExport.safetensors(m, to: dir + "/one")
        // Split the single file into two shards by rewriting headers.
        let st = try SafetensorsFile(path: dir + "/one/model.safetensors")
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/two", withIntermediateDirectories: true)
        for n in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            try fm.copyItem(atPath: dir + "/one/" + n, toPath: dir + "/two/" + n)
        }
        let halves = [Array(st.tensors.prefix(st.tensors.count / 2)), Array(st.tensors.suffix(from: st.tensors.count / 2))]
        var map: [String: String] = [:]
        for (k, part) in halves.enumerated() {
            let name = "model-0000\(k + 1)-of-00002.safetensors"
            var header: [String: Any] = [:], body = Data(), off = 0
            for t in part {
                st.withRawBytes(of: t) { body.append(contentsOf: $0) }
                header[t.name] = ["dtype": t.dtype.rawValue, "shape": t.shape, "data_offsets": [off, off + t.end - t.begin]]
                off += t.end - t.begin
                map[t.name] = name
            }
            let h = try JSONSerialization.data(withJSONObject: header)
            var file = withUnsafeBytes(of: UInt64(h.count).littleEndian) { Data($0) }
            file.append(h); file.append(body)
            try file.write(to: URL(fileURLWithPath: dir + "/two/" + name))
        }
        try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map])
            .write(to: URL(fileURLWithPath: dir + "/two/model.safetensors.index.json"))
        let back = try ModelFile.open(dir + "/two")
        ExportFixtures.assertSameWeights(m.model.weights, back.model.weights)
    }

    /// Independent readers: numpy Hugging Face forward on the exported folder gives Scalpel's logits; HF `tokenizers`
    /// encodes like Scalpel for every pre-tokenizer mapping; the `gguf` package reads the GGUF export.
    func testIndependentReaders() throws {
        let dir = try ExportFixtures.tempDir(self)
        let m = try ExportFixtures.tiny(tied: false)
        try ModelExport.safetensors(m, to: dir + "/hf")
        let ids = batch[0]
        if let out = try Python.run(Python.hfForward, [dir + "/hf", "\(ids)"], modules: ["numpy"]) {
            let ref = (try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [Double]).map(Float.init)
            let ours = try m.model.forward([ids]).row(0)
            XCTAssertLessThan(ExportFixtures.maxAbsDiff(ref, ours), 1e-4, "HF-order export disagrees with the numpy HF forward")
        }
        let texts = ["Hello 123 the world's  in\n\n  12345 x", " the the\tthe 1 12 123 ", "they're IN 99 ér", "<tool> x <|im_start|>"]
        let textsPath = dir + "/texts.json"
        try JSONSerialization.data(withJSONObject: texts).write(to: URL(fileURLWithPath: textsPath))
        for pre in ["gpt2", "smollm", "llama-bpe", "qwen2"] {
            let t = try ExportFixtures.tiny(tied: true, pre: pre)
            let folder = dir + "/tok-\(pre)"
            try ModelExport.safetensors(t, to: folder)
            guard let r = try Python.json(Python.tokenizersCheck, [folder + "/tokenizer.json", textsPath], modules: ["tokenizers"]) else {
                break
            }
            let hf = r["ids"] as! [[Int]]
            for (i, s) in texts.enumerated() {
                XCTAssertEqual(t.tokenizer.encode(s, parseSpecial: true), hf[i], "\(pre): \(s)")
            }
        }
        try ModelExport.gguf(m, to: dir + "/t.gguf", dtype: .f16)
        if let r = try Python.json(Python.ggufCheck, [dir + "/t.gguf", "blk.0.attn_q.weight,output_norm.weight"], modules: ["gguf"]) {
            XCTAssertEqual(r["names"] as? [String], LlamaParameter.all(m.config).map(\.ggufName))
            XCTAssertEqual((r["types"] as? [String: String])?["blk.0.attn_q.weight"], "F16")
            XCTAssertEqual((r["types"] as? [String: String])?["output_norm.weight"], "F32")
            let v = (r["values"] as! [String: [Double]])["blk.0.attn_q.weight"]!.map(Float.init)
            XCTAssertEqual(v, m.model.weights.values(.wq(0)).prefix(16).map { HalfFloat.toFloat(HalfFloat.fromFloat($0)) })
            let meta = r["meta"] as! [String: Any]
            XCTAssertEqual(meta["tokenizer.ggml.tokens"] as? [String], m.tokenizer.vocabulary)
            XCTAssertEqual(meta["tokenizer.ggml.merges"] as? [String], m.tokenizer.mergeList)
            XCTAssertEqual(meta["tokenizer.ggml.token_type"] as? [Int], m.tokenizer.tokenTypes)
            XCTAssertEqual(meta["llama.attention.key_length"] as? Int, 6)
        }
    }
}
