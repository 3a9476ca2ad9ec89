import Foundation
import XCTest
import GGUF
@testable import Llama
@testable import Editing

// Shared fixtures of the export tests (ExportTests, ExportRealModelTests, ExportSource*Tests).

enum ExportFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let defaultGGUF = root.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path
    static let referenceTokenizer = shared("reference/smollm2_tokenizer.json")

    /// `shared/REL` in the first folder above the package that has it (a worktree sits one level deeper than the
    /// main checkout), or the path beside the package when none has it.
    static func shared(_ rel: String) -> String {
        var dir = root.deletingLastPathComponent()
        for _ in 0..<3 {
            let p = dir.appendingPathComponent("shared/" + rel).path
            if FileManager.default.fileExists(atPath: p) { return p }
            dir = dir.deletingLastPathComponent()
        }
        return root.deletingLastPathComponent().appendingPathComponent("shared/" + rel).path
    }
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

    /// Last-position logits of `m` for each of `prompts` (one batch).
    static func lastLogits(_ m: ModelFile, _ prompts: [[Int]]) throws -> [[Float]] {
        let out = try m.model.forward(prompts)
        return prompts.indices.map { out.row($0) }
    }

    /// The real model's logits for the reference prompts (computed once per process).
    private static var cachedReference: [[Float]]?
    static func realReference() throws -> (prompts: [[Int]], logits: [[Float]]) {
        let m = try real().model
        let prompts = referencePrompts(m.tokenizer)
        if let cachedReference { return (prompts, cachedReference) }
        let logits = try lastLogits(m, prompts)
        cachedReference = logits
        return (prompts, logits)
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

    /// Token ids of the reference prompts (`../shared/reference/smollm2_logits.json`, 8 prompts from 6 to 23 tokens;
    /// the first is `prompt`), or `prompt` alone when that file is absent.
    static func referencePrompts(_ t: Tokenizer) -> [[Int]] {
        let path = shared("reference/smollm2_logits.json")
        guard let data = FileManager.default.contents(atPath: path),
              let cases = ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])?["cases"] as? [[String: Any]] else {
            return [t.encode(prompt)]
        }
        let ids = cases.compactMap { $0["ids"] as? [Int] }
        return ids.first == t.encode(prompt) ? ids : [t.encode(prompt)] + ids
    }

    /// Largest |Δlogit| an f16 export may cause on the default model over the reference prompts (every vocabulary
    /// entry at the last position), relative to the largest |logit|: max |Δ| ≤ 1e-3 × max |logit|. f16 rounds each
    /// weight to 11 significant bits (relative error ≤ 2⁻¹¹), and the default model's Q4_1-derived weights are not f16
    /// values, so every matrix entry is re-rounded; measured on SmolLM2-135M-Instruct (see docs/formats.md): 2.72e-2
    /// with logits up to |30.8|, 8.8e-4 relative. An absolute 1e-2 is not reachable with F16 matrices; f32 is exact.
    static let halfPrecisionRelativeBound: Float = 1e-3

    /// Checks f16-export logits (`rows[i]` for prompt i) against the source's: max |Δ| over all prompts within
    /// `halfPrecisionRelativeBound` × the largest |logit| of `reference`, and the same top 5 tokens, in order, for
    /// every prompt. Returns the max |Δ| and that largest |logit|.
    @discardableResult
    static func assertHalfPrecisionClose(_ rows: [[Float]], _ reference: [[Float]], file: StaticString = #filePath,
                                         line: UInt = #line) -> (maxDelta: Float, maxLogit: Float) {
        assertLogitsClose(rows, reference, relative: halfPrecisionRelativeBound, file: file, line: line)
    }

    /// `assertHalfPrecisionClose` with another relative bound.
    @discardableResult
    static func assertLogitsClose(_ rows: [[Float]], _ reference: [[Float]], relative: Float, file: StaticString = #filePath,
                                  line: UInt = #line) -> (maxDelta: Float, maxLogit: Float) {
        XCTAssertEqual(rows.count, reference.count, file: file, line: line)
        var worst: Float = 0, scale: Float = 0
        for (i, (a, r)) in zip(rows, reference).enumerated() {
            worst = max(worst, maxAbsDiff(a, r))
            scale = max(scale, r.map(abs).max() ?? 0)
            XCTAssertEqual(top(a, 5), top(r, 5), "prompt \(i): the top 5 changed", file: file, line: line)
        }
        XCTAssertGreaterThan(scale, 0, file: file, line: line)
        XCTAssertLessThanOrEqual(worst, relative * scale,
                                 "logits moved by \(worst), max |logit| \(scale)", file: file, line: line)
        return (worst, scale)
    }
}
