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

// MARK: - Fixtures

enum ExportFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let defaultGGUF = root.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path
    static let referenceTokenizer = root.deletingLastPathComponent().appendingPathComponent("shared/reference/smollm2_tokenizer.json").path
    static let prompt = "The Eiffel Tower is located in the city of"
    static let trickyStrings = [
        "The Eiffel Tower is located in the city of", "In 2023, 4096 tokens weren't enough; we'll need 8192.",
        "Ünïcödé — “quotes” and ‘apostrophes’ … ok", "    indented code\n\tand tabs\n\n", "emoji 🚀🔥 and CJK 中文字符",
        "<|im_start|>user\nHi<|im_end|>", "x=1+2*3; y = f(x)  \r\n  ", "",
    ]

    static func requireModel() throws -> String {
        guard FileManager.default.fileExists(atPath: defaultGGUF) else {
            throw XCTSkip("default model not fetched (scripts/fetch-model.sh)")
        }
        return defaultGGUF
    }

    /// Where tests write exports: `$SCALPEL_TEST_TMP`, else RAM-backed /dev/shm when present (the real-model tests
    /// write ≈1.6 GB and read it back; on a slow disk that dominates their time), else the temporary folder.
    static let scratchRoot: String = {
        if let t = ProcessInfo.processInfo.environment["SCALPEL_TEST_TMP"], !t.isEmpty { return t.hasSuffix("/") ? t : t + "/" }
        if access("/dev/shm", W_OK) == 0 { return "/dev/shm/" }
        return NSTemporaryDirectory()
    }()

    static func tempDir(_ test: XCTestCase) throws -> String {
        let dir = scratchRoot + "scalpel-export-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// The real model (opened once per process) and its logits for `prompt`.
    private static var cached: (ModelFile, [Float])?
    static func real() throws -> (model: ModelFile, logits: [Float]) {
        if let cached { return cached }
        let m = try ModelFile.open(try requireModel())
        let logits = try m.model.forward([m.tokenizer.encode(prompt)]).row(0)
        cached = (m, logits)
        return (m, logits)
    }

    /// A tiny Llama with several query heads over fewer key/value heads and a head width that does not divide the
    /// model width (dModel 16, 4 heads × 6 over 2 KV heads), random weights, and a byte-level BPE tokenizer.
    static func tiny(tied: Bool, pre: String = "smollm", addBOS: Bool = false, seed: UInt64 = 11) throws -> ModelFile {
        let tok = try tinyTokenizer(pre: pre, addBOS: addBOS)
        let c = LlamaConfig(layers: 2, dModel: 16, heads: 4, kvHeads: 2, headDim: 6, ffnDim: 24,
                            vocabSize: tok.vocabularySize, contextLength: 64, ropeBase: 10000, rmsEps: 1e-5,
                            tiedEmbeddings: tied)
        var rng = SeededRandom(seed: seed)
        let w = LlamaWeights(zeros: c)
        for p in LlamaParameter.all(c) {
            let n = p.shape(c).reduce(1, *)
            let isNorm: Bool = { switch p { case .attnNorm, .ffnNorm, .outputNorm: return true; default: return false } }()
            w.setValues(p, (0..<n).map { _ in isNorm ? Float(1 + 0.1 * rng.normal()) : Float(0.5 * rng.normal()) })
        }
        let meta: [(key: String, value: GGUFValue)] = [
            ("general.architecture", .string("llama")), ("general.name", .string("tiny")),
            ("general.license", .string("apache-2.0")), ("tokenizer.ggml.model", .string("gpt2")),
            ("tokenizer.ggml.pre", .string(pre)), ("tokenizer.ggml.padding_token_id", .uint32(0)),
            ("tokenizer.chat_template", .string("{{ messages }}")),
        ]
        let prov = ModelProvenance(sourceFile: "tiny.gguf", sourceSize: 1, sourceSHA256: String(repeating: "ab", count: 32),
                                   quantization: ["F32": 19])
        return ModelFile(path: "/nowhere/tiny.h5", model: LlamaModel(weights: w), tokenizer: tok, provenance: prov, metadata: meta)
    }

    /// 256 byte tokens, merges that separate the pre-tokenizers (digits, spaces, contractions), a control token and
    /// a user-defined token.
    static func tinyTokenizer(pre: String, addBOS: Bool = false) throws -> Tokenizer {
        var tokens = ["<|endoftext|>", "<|im_start|>"] + (0..<256).map { ByteLevel.string(forByte: UInt8($0)) }
        var types = [3, 3] + [Int](repeating: 1, count: 256)
        let merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "1 2", "12 3", "Ġ 1", "' s", "Ċ Ċ", "Ġ Ġ", "ĠĠ Ġ", "e r", "Ġ in"]
        for m in merges { tokens.append(m.replacingOccurrences(of: " ", with: "")); types.append(1) }
        tokens.append("<tool>"); types.append(4)
        return try Tokenizer(tokens: tokens, tokenTypes: types, merges: merges, pre: pre, bosID: 1, eosID: 0,
                             unknownID: nil, addBOS: addBOS)
    }

    /// Every parameter of two models is bitwise equal.
    static func assertSameWeights(_ a: LlamaWeights, _ b: LlamaWeights, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.config, b.config, file: file, line: line)
        for p in LlamaParameter.all(a.config) {
            XCTAssertEqual(a.values(p).map(\.bitPattern), b.values(p).map(\.bitPattern), "\(p)", file: file, line: line)
        }
    }

    static func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    static func argmax(_ a: [Float]) -> Int { a.indices.max { a[$0] < a[$1] }! }

    static func top(_ a: [Float], _ k: Int) -> [Int] { Array(a.indices.sorted { a[$0] > a[$1] }.prefix(k)) }

    /// f16 storage rounds every weight to 11 significant bits (relative 2⁻¹¹ ≈ 4.9e-4); through 30 layers that moves
    /// this model's logits by ≈1.3e-3 of their largest magnitude (1.7e-2 absolute on logits up to ≈13). The bound:
    /// 2e-3 of the largest logit, with the same top 5.
    static func assertHalfPrecisionClose(_ a: [Float], _ reference: [Float], file: StaticString = #filePath, line: UInt = #line) -> Float {
        let d = maxAbsDiff(a, reference), scale = reference.map(abs).max() ?? 1
        XCTAssertLessThan(d, 2e-3 * scale, "f16 logits moved by \(d) (largest logit \(scale))", file: file, line: line)
        XCTAssertEqual(top(a, 5), top(reference, 5), file: file, line: line)
        return d
    }
}

// MARK: - Python helpers

enum Python {
    /// Runs `script` with arguments; nil when python3 or one of `modules` is missing.
    static func run(_ script: String, _ args: [String], modules: [String]) throws -> String? {
        guard available(modules) else { return nil }
        let dir = NSTemporaryDirectory() + "scalpel-py-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/check.py"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let (status, out, err) = try exec(["python3", path] + args)
        guard status == 0 else { XCTFail("python failed (\(status)):\n\(err)"); return "" }
        return out
    }

    static func json(_ script: String, _ args: [String], modules: [String]) throws -> [String: Any]? {
        guard let out = try run(script, args, modules: modules) else { return nil }
        return try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
    }

    private static var known: [String: Bool] = [:]
    static func available(_ modules: [String]) -> Bool {
        let key = modules.joined(separator: ",")
        if let k = known[key] { return k }
        let ok = (try? exec(["python3", "-c", "import " + (modules.isEmpty ? "sys" : key)]))?.0 == 0
        known[key] = ok
        return ok
    }

    static func exec(_ argv: [String]) throws -> (Int32, String, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        // stderr goes to a file so that reading stdout to its end cannot deadlock on a full stderr pipe.
        let errPath = NSTemporaryDirectory() + "scalpel-py-\(UUID().uuidString).err"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        let errHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        let out = Pipe()
        p.standardOutput = out
        p.standardError = errHandle
        try p.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        try? errHandle.close()
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return (p.terminationStatus, String(decoding: outData, as: UTF8.self), err)
    }

    /// Reads a GGUF with the `gguf` package: tensor table, the first values of some tensors, and metadata.
    static let ggufCheck = #"""
import json, sys
import numpy as np
import gguf
path, sample = sys.argv[1], sys.argv[2].split(",")
r = gguf.GGUFReader(path)
out = {"tensor_count": len(r.tensors), "names": [t.name for t in r.tensors],
       "types": {t.name: t.tensor_type.name for t in r.tensors},
       "shapes": {t.name: [int(x) for x in t.shape] for t in r.tensors}, "values": {}, "meta": {}}
for t in r.tensors:
    if t.name in sample:
        a = np.asarray(t.data).reshape(-1)
        out["values"][t.name] = [float(x) for x in a[:16].astype(np.float64)]
for k, f in r.fields.items():
    if k.startswith("GGUF."):
        continue
    v = f.contents()
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8", "replace")
    if isinstance(v, list) and len(v) > 8 and k not in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
        v = v[:8]
    out["meta"][k] = v
print(json.dumps(out, ensure_ascii=False))
"""#

    /// Validates a safetensors file with plain Python (no safetensors package): header, dtypes, offsets.
    static let safetensorsHeaderCheck = #"""
import json, os, struct, sys
path = sys.argv[1]
size = os.path.getsize(path)
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = f.read(n)
assert header[:1] == b"{", "header must start with {"
h = json.loads(header.decode("utf-8"))
meta = h.pop("__metadata__", {})
itemsize = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
entries = sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0])
pos, problems = 0, []
for name, e in entries:
    b, en = e["data_offsets"]
    count = 1
    for d in e["shape"]:
        count *= d
    if b != pos: problems.append("gap/overlap at " + name)
    if en - b != count * itemsize[e["dtype"]]: problems.append("size of " + name)
    pos = en
if pos != size - 8 - n: problems.append("data section %d != %d" % (pos, size - 8 - n))
print(json.dumps({"count": len(h), "names": sorted(h), "dtypes": sorted({e["dtype"] for e in h.values()}),
                  "aligned": (8 + n) % 8 == 0, "metadata": meta, "problems": problems,
                  "shapes": {k: e["shape"] for k, e in h.items()}}))
"""#

    /// Loads tensors with the `safetensors` package (numpy backend) and prints their first values.
    static let safetensorsValues = #"""
import json, sys
import numpy as np
from safetensors import safe_open
out = {}
with safe_open(sys.argv[1], framework="numpy") as f:
    for k in sys.argv[2].split(","):
        out[k] = [float(x) for x in f.get_tensor(k).reshape(-1)[:int(sys.argv[3])].astype(np.float64)]
print(json.dumps(out))
"""#

    /// Encodes strings with Hugging Face `tokenizers` from an exported tokenizer.json.
    static let tokenizersCheck = #"""
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = json.loads(open(sys.argv[2], encoding="utf-8").read())
print(json.dumps({"ids": [tok.encode(t, add_special_tokens=False).ids for t in texts],
                  "decoded": [tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=False) for t in texts],
                  "with_specials": [tok.encode(t).ids for t in texts]}))
"""#

    /// Hugging Face's Llama forward, reimplemented in numpy (float64) from config.json and model.safetensors alone:
    /// RMSNorm, rotate-halves RoPE on q/k, grouped-query causal attention, SiLU-gated MLP. Prints last-row logits.
    static let hfForward = #"""
import json, struct, sys
import numpy as np
folder, ids = sys.argv[1], json.loads(sys.argv[2])
cfg = json.load(open(folder + "/config.json"))
raw = open(folder + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
header.pop("__metadata__", None)
dt = {"F32": np.float32, "F16": np.float16}
def W(name):
    e = header[name]; b, en = e["data_offsets"]
    return np.frombuffer(raw, dtype=dt[e["dtype"]], count=(en - b) // np.dtype(dt[e["dtype"]]).itemsize,
                         offset=8 + n + b).reshape(e["shape"]).astype(np.float64)
D, H = cfg["hidden_size"], cfg["num_attention_heads"]
KV, HD = cfg.get("num_key_value_heads", H), cfg.get("head_dim") or D // H
eps, theta, L = cfg["rms_norm_eps"], cfg["rope_theta"], cfg["num_hidden_layers"]
T = len(ids)
def rms(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
inv = 1.0 / theta ** (np.arange(0, HD, 2) / HD)
ang = np.outer(np.arange(T), inv)
ang = np.concatenate([ang, ang], -1)
cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
def rot_half(x): return np.concatenate([-x[..., HD // 2:], x[..., :HD // 2]], -1)
mask = np.triu(np.full((T, T), -np.inf), 1)
x = W("model.embed_tokens.weight")[ids]
for l in range(L):
    p = "model.layers.%d." % l
    h = rms(x, W(p + "input_layernorm.weight"))
    q = (h @ W(p + "self_attn.q_proj.weight").T).reshape(T, H, HD)
    k = (h @ W(p + "self_attn.k_proj.weight").T).reshape(T, KV, HD)
    v = (h @ W(p + "self_attn.v_proj.weight").T).reshape(T, KV, HD)
    q, k = q * cos + rot_half(q) * sin, k * cos + rot_half(k) * sin
    k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
    s = np.einsum("thd,shd->hts", q, k) / np.sqrt(HD) + mask
    s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
    x = x + np.einsum("hts,shd->thd", s, v).reshape(T, H * HD) @ W(p + "self_attn.o_proj.weight").T
    h = rms(x, W(p + "post_attention_layernorm.weight"))
    g, u = h @ W(p + "mlp.gate_proj.weight").T, h @ W(p + "mlp.up_proj.weight").T
    x = x + (g / (1 + np.exp(-g)) * u) @ W(p + "mlp.down_proj.weight").T
x = rms(x, W("model.norm.weight"))
head = W("model.embed_tokens.weight") if cfg.get("tie_word_embeddings") else W("lm_head.weight")
print(json.dumps([float(v) for v in x[-1] @ head.T]))
"""#
}

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

// MARK: - Real model

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
        let logits16 = try back16.model.forward([ids]).row(0)
        let d16 = ExportFixtures.assertHalfPrecisionClose(logits16, srcLogits)
        print(String(format: "export gguf f32: %.1f MB in %.2f s (reload %.2f s); f16: %.1f MB in %.2f s, max |Δlogit| %.2e",
                     Double(r32.bytes) / 1e6, r32.seconds, reload, Double(r16.bytes) / 1e6, r16.seconds, d16))

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
        let d16 = ExportFixtures.assertHalfPrecisionClose(logits16, srcLogits)
        XCTAssertEqual(back16.provenance.quantization, ["F16": LlamaParameter.all(c).count])
        print(String(format: "export safetensors f32: %.1f MB in %.2f s (reload %.2f s); f16: %.1f MB in %.2f s, max |Δlogit| %.2e",
                     Double(r32.bytes) / 1e6, r32.seconds, reload, Double(r16.bytes) / 1e6, r16.seconds, d16))

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
