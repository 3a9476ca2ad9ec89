import Foundation
import XCTest
import GGUF
@testable import Llama
@testable import Editing

/// Exports of the real SmolLM2-135M-Instruct (skipped when it is not fetched): f32 round trips are bitwise exact on
/// the reference prompts, f16 ones within `ExportFixtures.halfPrecisionRelativeBound` × max |logit|; independent readers agree.
final class ExportRealModelTests: XCTestCase {
    private func assertTokenizersAgree(_ a: Tokenizer, _ b: Tokenizer, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.vocabulary, b.vocabulary, file: file, line: line)
        XCTAssertEqual(a.tokenTypes, b.tokenTypes, file: file, line: line)
        XCTAssertEqual(a.mergeList, b.mergeList, file: file, line: line)
        XCTAssertEqual([a.bosID, a.eosID, a.unknownID], [b.bosID, b.eosID, b.unknownID], file: file, line: line)
        XCTAssertEqual(a.addBOS, b.addBOS, file: file, line: line)
        XCTAssertEqual(a.preTokenizer, b.preTokenizer, file: file, line: line)
        for s in ExportFixtures.trickyStrings {
            XCTAssertEqual(a.encode(s), b.encode(s), s, file: file, line: line)
            XCTAssertEqual(a.encode(s, parseSpecial: true), b.encode(s, parseSpecial: true), s, file: file, line: line)
        }
    }

    func testGGUFExport() throws {
        let (src, srcLogits) = try ExportFixtures.real()
        let dir = try ExportFixtures.tempDir(self)
        let ids = src.tokenizer.encode(ExportFixtures.prompt)

        // f32: bitwise identical logits after reload.
        let p32 = dir + "/smol-f32.gguf"
        let r32 = try ModelExport.gguf(src, to: p32, dtype: .f32, toolVersion: "test")
        let t0 = Date()
        let back = try ModelFile.openGGUF(p32, hash: false)
        let reload = Date().timeIntervalSince(t0)
        let logits = try back.model.forward([ids]).row(0)
        XCTAssertEqual(logits.map(\.bitPattern), srcLogits.map(\.bitPattern))
        let (prompts, reference) = try ExportFixtures.realReference()
        XCTAssertEqual(try ExportFixtures.lastLogits(back, prompts).map { $0.map(\.bitPattern) }, reference.map { $0.map(\.bitPattern) })
        assertTokenizersAgree(src.tokenizer, back.tokenizer)
        let meta = Dictionary(back.metadata.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(meta["general.file_type"]?.int, 0)
        XCTAssertEqual(meta["scalpel.source_sha256"]?.string, src.provenance.sourceSHA256)
        XCTAssertEqual(meta["tokenizer.chat_template"], src.metadata.first { $0.key == "tokenizer.chat_template" }?.value)
        XCTAssertEqual(meta["general.name"], src.metadata.first { $0.key == "general.name" }?.value)

        // f16.
        let p16 = dir + "/smol-f16.gguf"
        let r16 = try ModelExport.gguf(src, to: p16, dtype: .f16, toolVersion: "test")
        let back16 = try ModelFile.openGGUF(p16, hash: false)
        let d16 = ExportFixtures.assertHalfPrecisionClose(try ExportFixtures.lastLogits(back16, prompts), reference)
        print(String(format: "export gguf f32: %.1f MB in %.2f s (reload %.2f s); f16: %.1f MB in %.2f s, max |Δlogit| %.2e "
                     + "(max |logit| %.1f, relative %.2e) over %d prompts", Double(r32.bytes) / 1e6, r32.seconds, reload,
                     Double(r16.bytes) / 1e6, r16.seconds, d16.maxDelta, d16.maxLogit, d16.maxDelta / d16.maxLogit, prompts.count))

        // The `gguf` Python package reads the f16 file (the f32 one shares every line of the writer but the tensor
        // encoding, checked bitwise above; GGUFReader takes ≈6 s per file to parse the tokenizer arrays):
        // names, types, dims, values, tokenizer arrays, provenance.
        let sample = "token_embd.weight,blk.0.attn_q.weight,blk.29.ffn_down.weight,output_norm.weight"
        for (path, dtype) in [(p16, ExportDType.f16)] {
            guard let r = try Python.json(Python.ggufCheck, [path, sample], modules: ["gguf", "numpy"]) else {
                throw XCTSkip("python gguf package not available")
            }
            let c = src.config
            XCTAssertEqual(r["tensor_count"] as? Int, LlamaParameter.all(c).count)
            XCTAssertEqual(r["names"] as? [String], LlamaParameter.all(c).map(\.ggufName))
            let types = r["types"] as! [String: String], shapes = r["shapes"] as! [String: [Int]]
            for p in LlamaParameter.all(c) {
                XCTAssertEqual(types[p.ggufName], p.shape(c).count == 1 ? "F32" : dtype.safetensorsName, p.ggufName)
                XCTAssertEqual(shapes[p.ggufName], Array(p.shape(c).reversed()), p.ggufName)
            }
            let values = r["values"] as! [String: [Double]]
            for (name, p) in [("token_embd.weight", LlamaParameter.tokenEmbedding), ("blk.0.attn_q.weight", .wq(0)),
                              ("blk.29.ffn_down.weight", .wDown(29)), ("output_norm.weight", .outputNorm)] {
                let expect = src.model.weights.values(p).prefix(16).map {
                    dtype == .f16 && p != .outputNorm ? HalfFloat.toFloat(HalfFloat.fromFloat($0)) : $0
                }
                XCTAssertEqual(values[name]!.map(Float.init), expect, name)
            }
            let m = r["meta"] as! [String: Any]
            XCTAssertEqual(m["tokenizer.ggml.tokens"] as? [String], src.tokenizer.vocabulary)
            XCTAssertEqual(m["tokenizer.ggml.merges"] as? [String], src.tokenizer.mergeList)
            XCTAssertEqual(m["tokenizer.ggml.token_type"] as? [Int], src.tokenizer.tokenTypes)
            XCTAssertEqual(m["general.file_type"] as? Int, Int(dtype.ggufFileType))
            XCTAssertEqual(m["general.architecture"] as? String, "llama")
            XCTAssertEqual(m["llama.block_count"] as? Int, 30)
            XCTAssertEqual(m["scalpel.source_sha256"] as? String, src.provenance.sourceSHA256)
            XCTAssertEqual(m["scalpel.tool_version"] as? String, "test")
        }
    }

    /// A model whose metadata lacks the tokenizer arrays (what a Scalpel .h5 store gives) exports the same tokenizer,
    /// and an edited model exports its edited weights.
    func testGGUFExportOfEditedStoreLikeModel() throws {
        let (src, srcLogits) = try ExportFixtures.real()
        let dir = try ExportFixtures.tempDir(self)
        let c = src.config
        let w = LlamaWeights(zeros: c)
        for p in LlamaParameter.all(c) { w.setValues(p, src.model.weights.values(p)) }
        var down = w.values(.wDown(5))
        for j in 0..<c.ffnDim { down[17 * c.ffnDim + j] += 0.05 * Float(j % 7 - 3) }  // one output row changed
        w.setValues(.wDown(5), down)
        let storeMeta = src.metadata.filter { !["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"].contains($0.key) }
        let edited = ModelFile(path: "/nowhere/edited.h5", model: LlamaModel(weights: w), tokenizer: src.tokenizer,
                               provenance: src.provenance, metadata: storeMeta)
        let ids = src.tokenizer.encode(ExportFixtures.prompt)
        let editedLogits = try edited.model.forward([ids]).row(0)
        XCTAssertNotEqual(editedLogits, srcLogits)
        try ModelExport.gguf(edited, to: dir + "/edited.gguf")
        let back = try ModelFile.openGGUF(dir + "/edited.gguf", hash: false)
        XCTAssertEqual(try back.model.forward([ids]).row(0).map(\.bitPattern), editedLogits.map(\.bitPattern))
        assertTokenizersAgree(src.tokenizer, back.tokenizer)
        XCTAssertEqual(back.metadata.first { $0.key == "scalpel.exported_from" }?.value.string, "edited.h5")
    }

    func testSafetensorsExport() throws {
        let (src, srcLogits) = try ExportFixtures.real()
        let dir = try ExportFixtures.tempDir(self)
        let ids = src.tokenizer.encode(ExportFixtures.prompt)
        let c = src.config

        let f32 = dir + "/smol-f32"
        let r32 = try ModelExport.safetensors(src, to: f32, dtype: .f32, toolVersion: "test")
        let t0 = Date()
        let back = try ModelFile.openSafetensors(f32, hash: false)
        let reload = Date().timeIntervalSince(t0)
        XCTAssertEqual(back.config, c)
        XCTAssertEqual(try back.model.forward([ids]).row(0).map(\.bitPattern), srcLogits.map(\.bitPattern))
        let (prompts, reference) = try ExportFixtures.realReference()
        XCTAssertEqual(try ExportFixtures.lastLogits(back, prompts).map { $0.map(\.bitPattern) }, reference.map { $0.map(\.bitPattern) })
        assertTokenizersAgree(src.tokenizer, back.tokenizer)
        let meta = Dictionary(back.metadata.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        for k in ["general.name", "general.license", "tokenizer.chat_template", "tokenizer.ggml.padding_token_id",
                  "tokenizer.ggml.unknown_token_id", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"] {
            XCTAssertEqual(meta[k], src.metadata.first { $0.key == k }?.value, k)
        }

        let f16 = dir + "/smol-f16"
        let r16 = try ModelExport.safetensors(src, to: f16, dtype: .f16, toolVersion: "test")
        let back16 = try ModelFile.openSafetensors(f16, hash: false)
        let logits16 = try back16.model.forward([ids]).row(0)
        let d16 = ExportFixtures.assertHalfPrecisionClose(try ExportFixtures.lastLogits(back16, prompts), reference)
        XCTAssertEqual(back16.provenance.quantization, ["F16": LlamaParameter.all(c).count])
        print(String(format: "export safetensors f32: %.1f MB in %.2f s (reload %.2f s); f16: %.1f MB in %.2f s, max |Δlogit| %.2e "
                     + "(max |logit| %.1f) over %d prompts", Double(r32.bytes) / 1e6, r32.seconds, reload, Double(r16.bytes) / 1e6,
                     r16.seconds, d16.maxDelta, d16.maxLogit, prompts.count))

        // config.json as transformers expects it.
        let cfg = try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: f16 + "/config.json"))) as! [String: Any]
        XCTAssertEqual(cfg["architectures"] as? [String], ["LlamaForCausalLM"])
        XCTAssertEqual(cfg["model_type"] as? String, "llama")
        XCTAssertEqual(cfg["torch_dtype"] as? String, "float16")
        XCTAssertEqual(cfg["tie_word_embeddings"] as? Bool, true)
        XCTAssertEqual([cfg["hidden_size"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["bos_token_id"], cfg["eos_token_id"]]
                        .map { $0 as? Int }, [576, 3, 64, 1, 2])

        // Plain-Python header validation of both files.
        for (folder, dtype) in [(f32, "F32"), (f16, "F16")] {
            guard let h = try Python.json(Python.safetensorsHeaderCheck, [folder + "/model.safetensors"], modules: []) else {
                throw XCTSkip("python3 not available")
            }
            XCTAssertEqual(h["problems"] as? [String], [])
            XCTAssertEqual(h["aligned"] as? Bool, true)
            XCTAssertEqual(h["count"] as? Int, LlamaParameter.all(c).count)
            XCTAssertEqual(h["names"] as? [String], LlamaParameter.all(c).map(\.huggingFaceName).sorted())
            XCTAssertEqual(h["dtypes"] as? [String], [dtype])
            XCTAssertEqual((h["shapes"] as? [String: [Int]])?["model.layers.0.self_attn.k_proj.weight"], [192, 576])
            let md = h["metadata"] as! [String: String]
            XCTAssertEqual(md["format"], "pt")
            XCTAssertEqual(md["scalpel.source_sha256"], src.provenance.sourceSHA256)
        }

        // The safetensors package reads the same numbers (q/k in Hugging Face order).
        let names = ["model.layers.3.self_attn.q_proj.weight", "model.layers.3.self_attn.k_proj.weight",
                     "model.layers.3.mlp.up_proj.weight", "model.norm.weight"]
        if let v = try Python.json(Python.safetensorsValues, [f32 + "/model.safetensors", names.joined(separator: ","), "2304"],
                                   modules: ["safetensors", "numpy"]) {
            let w = src.model.weights
            let expect: [[Float]] = [
                RotaryLayout.pairsToHalves(w.values(.wq(3)), heads: c.heads, columns: c.dModel),
                RotaryLayout.pairsToHalves(w.values(.wk(3)), heads: c.kvHeads, columns: c.dModel),
                w.values(.wUp(3)), w.values(.outputNorm),
            ]
            for (n, e) in zip(names, expect) {
                let got = (v[n] as! [Double]).map(Float.init)
                XCTAssertEqual(got, Array(e.prefix(got.count)), n)
            }
        }

        // Hugging Face `tokenizers` encodes the reference strings to the reference ids with the exported tokenizer.json.
        var texts = ExportFixtures.trickyStrings, expected: [[Int]?] = texts.map { _ in nil }
        if let data = FileManager.default.contents(atPath: ExportFixtures.referenceTokenizer),
           let ref = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], let cases = ref["cases"] as? [[String: Any]] {
            for cse in cases { if let t = cse["text"] as? String, let i = cse["ids"] as? [Int] { texts.append(t); expected.append(i) } }
        }
        let textsPath = dir + "/texts.json"
        try JSONSerialization.data(withJSONObject: texts).write(to: URL(fileURLWithPath: textsPath))
        if let r = try Python.json(Python.tokenizersCheck, [f16 + "/tokenizer.json", textsPath], modules: ["tokenizers"]) {
            let hf = r["ids"] as! [[Int]], decoded = r["decoded"] as! [String], withSpecials = r["with_specials"] as! [[Int]]
            for (i, s) in texts.enumerated() {
                XCTAssertEqual(hf[i], src.tokenizer.encode(s, parseSpecial: true), s)
                XCTAssertEqual(withSpecials[i], hf[i], "no BOS/EOS added: \(s)")
                if let e = expected[i] { XCTAssertEqual(hf[i], e, s) }
                XCTAssertEqual(decoded[i], src.tokenizer.decode(hf[i]), s)
            }
        }

        // An independent numpy implementation of Hugging Face's Llama (rotate-halves RoPE) on the exported folder
        // reproduces Scalpel's logits: the q/k rows are in the order Hugging Face expects.
        // (Run on the f16 folder, half the bytes to read, against Scalpel's logits for the same f16 weights.)
        if let out = try Python.run(Python.hfForward, [f16, "\(ids)"], modules: ["numpy"]) {
            let ref = (try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [Double]).map(Float.init)
            let d = ExportFixtures.maxAbsDiff(ref, logits16)
            XCTAssertLessThan(d, 1e-3)
            XCTAssertEqual(ExportFixtures.top(ref, 5), ExportFixtures.top(logits16, 5))
            print(String(format: "numpy HF forward vs Scalpel: max |Δlogit| %.2e", d))
        }
    }
}
