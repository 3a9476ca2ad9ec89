import Foundation
import XCTest

/// Independent Python readers for the export tests (the `gguf` package, a plain-Python safetensors header check,
/// `safetensors` + numpy, HF `tokenizers`, a numpy Hugging Face Llama forward); each check skips without its packages.
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
