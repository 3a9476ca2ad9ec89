import Foundation
import GGUF
import Llama
import XCTest

/// Package root (…/Tests/LlamaTests/TokenizerTests.swift → three levels up).
private let packageRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
private let sharedDir = TestPaths.shared  // beside the package, or above a worktree
private let modelPath = packageRoot.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path

/// Loaded once for the whole test class (loading parses a 98 MB GGUF header).
private let smolTokenizer: Result<Tokenizer, Error>? = {
    guard FileManager.default.fileExists(atPath: modelPath) else { return nil }
    return Result { try Tokenizer(gguf: GGUFFile(path: modelPath)) }
}()

final class TokenizerTests: XCTestCase {
    // MARK: - Helpers

    private func smol() throws -> Tokenizer {
        guard let r = smolTokenizer else { throw XCTSkip("model file absent: \(modelPath)") }
        return try r.get()
    }

    private func sharedJSON(_ name: String) throws -> [String: Any] {
        let url = sharedDir.appendingPathComponent("reference/\(name)")
        guard FileManager.default.fileExists(atPath: url.path) else { throw XCTSkip("shared reference absent: \(url.path)") }
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        return try XCTUnwrap(obj as? [String: Any])
    }

    private func referenceCases() throws -> [(text: String, ids: [Int])] {
        let cases = try XCTUnwrap(try sharedJSON("smollm2_tokenizer.json")["cases"] as? [[String: Any]])
        return try cases.map { (try XCTUnwrap($0["text"] as? String), try XCTUnwrap($0["ids"] as? [Int])) }
    }

    /// A tiny vocabulary: the given strings as normal tokens (byte-level form).
    private func synthetic(_ vocab: [String], merges: [String], pre: String = "gpt2") throws -> Tokenizer {
        try Tokenizer(tokens: ["<unk>"] + vocab, tokenTypes: [3] + vocab.map { _ in 1 }, merges: merges,
                      pre: pre, bosID: nil, eosID: nil, unknownID: 0, addBOS: false)
    }

    private func pieces(_ t: Tokenizer, _ text: String) -> [String] {
        t.encode(text).map { t.token($0) }
    }

    // MARK: - Reference (SmolLM2-135M-Instruct)

    func testReferenceCases() throws {
        let t = try smol()
        let cases = try referenceCases()
        XCTAssertEqual(cases.count, 10)
        for c in cases {
            XCTAssertEqual(t.encode(c.text), c.ids, "text: \(c.text.debugDescription)")
        }
    }

    func testLogitsPromptIDs() throws {
        let t = try smol()
        let cases = try XCTUnwrap(try sharedJSON("smollm2_logits.json")["cases"] as? [[String: Any]])
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let prompt = try XCTUnwrap(c["prompt"] as? String)
            let ids = try XCTUnwrap(c["ids"] as? [Int])
            XCTAssertEqual(t.encode(prompt), ids, prompt)
            // top10 entries are [id, text, logit]: the display form must agree.
            for entry in (c["top10"] as? [[Any]]) ?? [] {
                guard let id = entry.first as? Int, let text = entry.dropFirst().first as? String else { continue }
                XCTAssertEqual(t.tokenText(id), text)
            }
        }
    }

    func testRoundTrip() throws {
        let t = try smol()
        var texts = try referenceCases().map(\.text)
        texts += ["", " ", "\n", "  leading and trailing  ", "Å vs Å (angstrom sign)", "e\u{301} vs é",
                  "👩‍👩‍👧 family, 🇫🇷 flag", "x\u{0}y\u{7F}\u{85}\u{A0}\u{AD}z", "<|im_start|>user\nhi<|im_end|>"]
        for text in texts {
            XCTAssertEqual(t.decode(t.encode(text)), text, text.debugDescription)
            XCTAssertEqual(t.decode(t.encode(text, parseSpecial: true)), text, text.debugDescription)
        }
    }

    func testCanonicallyEquivalentPiecesStayDistinct() throws {
        // Swift String equality is canonical equivalence; the piece cache must compare bytes.
        let t = try smol()
        let a = t.encode("\u{C5}"), b = t.encode("\u{212B}")
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(t.decode(a), "\u{C5}")
        XCTAssertEqual(t.decode(b), "\u{212B}")
        XCTAssertEqual(Array(t.decode(b).utf8), [0xE2, 0x84, 0xAB])
    }

    func testMetadataAndLookup() throws {
        let t = try smol()
        XCTAssertEqual(t.vocabularySize, 49152)
        XCTAssertEqual(t.bosID, 1)
        XCTAssertEqual(t.eosID, 2)
        XCTAssertEqual(t.unknownID, 0)
        XCTAssertFalse(t.addBOS)
        XCTAssertEqual(t.preTokenizer, .smollm)
        XCTAssertEqual(t.token(7042), "ĠParis")
        XCTAssertEqual(t.tokenText(7042), " Paris")
        XCTAssertEqual(t.id(of: "ĠParis"), 7042)
        XCTAssertEqual(t.id(of: "<|im_start|>"), 1)
        XCTAssertNil(t.id(of: "definitely not a token"))
        XCTAssertThrowsError(try t.requireID(of: "nope")) { XCTAssertEqual($0 as? TokenizerError, .unknownToken("nope")) }
        XCTAssertTrue(t.isControl(2))
        XCTAssertFalse(t.isControl(7042))
        XCTAssertEqual(t.token(-1), "")
        XCTAssertEqual(t.token(49152), "")
        XCTAssertEqual(t.decode([504, 99_999, -3, 414]), "The E")
    }

    func testSpecialTokensOnlyWithParseSpecial() throws {
        let t = try smol()
        let imStart = try XCTUnwrap(t.id(of: "<|im_start|>"))
        let imEnd = try XCTUnwrap(t.id(of: "<|im_end|>"))
        let special = t.encode("<|im_start|>user", parseSpecial: true)
        XCTAssertEqual(special.first, imStart)
        XCTAssertEqual(Array(special.dropFirst()), t.encode("user"))
        let plain = t.encode("<|im_start|>user")
        XCTAssertFalse(plain.contains(imStart))
        XCTAssertGreaterThan(plain.count, 3)
        XCTAssertEqual(t.decode(plain), "<|im_start|>user")

        let chat = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        let ids = t.encode(chat, parseSpecial: true)
        XCTAssertEqual(ids.filter { $0 == imStart }.count, 2)
        XCTAssertEqual(ids.filter { $0 == imEnd }.count, 2)
        XCTAssertEqual(ids.first, imStart)
        XCTAssertEqual(t.decode(ids), chat)
        XCTAssertEqual(t.decode(ids, skipSpecial: true), "system\nYou are helpful.\nuser\nHi\n")
        // Text between specials is encoded exactly as on its own.
        XCTAssertEqual(t.encode("<|endoftext|>Hello world!", parseSpecial: true), [0, 19556, 905, 17])
    }

    func testAddBOS() throws {
        let t = try smol()
        XCTAssertEqual(t.encode("Hello world!"), [19556, 905, 17])
        XCTAssertEqual(t.encode("Hello world!", addBOS: true), [1, 19556, 905, 17])
        XCTAssertEqual(t.encode("", addBOS: true), [1])
        XCTAssertEqual(t.encode(""), [])
    }

    // MARK: - Synthetic vocabularies: merge order

    func testMergeRankOrder() throws {
        let vocab = ["a", "b", "c", "ab", "bc", "abc"]
        // "b c" outranks "a b": a + bc → abc.
        let t1 = try synthetic(vocab, merges: ["b c", "a b", "a bc"])
        XCTAssertEqual(pieces(t1, "abc"), ["abc"])
        let t1b = try synthetic(vocab, merges: ["b c", "a b"])
        XCTAssertEqual(pieces(t1b, "abc"), ["a", "bc"])
        // "a b" first: ab + c, and no "ab c" rule → stays split even though "abc" is a token.
        let t2 = try synthetic(vocab, merges: ["a b", "b c", "a bc"])
        XCTAssertEqual(pieces(t2, "abc"), ["ab", "c"])
    }

    func testMergeTiesGoLeftmost() throws {
        let t = try synthetic(["a", "aa", "aaaa"], merges: ["a a", "aa aa"])
        XCTAssertEqual(pieces(t, "aaa"), ["aa", "a"])
        XCTAssertEqual(pieces(t, "aaaa"), ["aaaa"])
        XCTAssertEqual(pieces(t, "aaaaa"), ["aaaa", "a"])
        XCTAssertEqual(pieces(t, "aaaaaaa"), ["aaaa", "aa", "a"])
        // Long words exercise the heap.
        XCTAssertEqual(pieces(t, String(repeating: "a", count: 4001)), Array(repeating: "aaaa", count: 1000) + ["a"])
    }

    func testByteLevelMappingAndUnknownBytes() throws {
        // Space is "Ġ", newline "Ċ"; bytes whose stand-in is missing are dropped (HF BPE without unk_token).
        let t = try synthetic(["Ġ", "x", "Ġx", "Ċ"], merges: ["Ġ x"])
        XCTAssertEqual(pieces(t, " x\n"), ["Ġx", "Ċ"])
        XCTAssertEqual(t.encode("y"), [])
        XCTAssertEqual(pieces(t, "xyyx"), ["x", "x"])
        XCTAssertEqual(t.tokenText(3), " x")
        // Merges through strings that are not tokens still work, falling back to bytes at the end.
        let u = try synthetic(["q", "r", "s", "qrs"], merges: ["q r", "qr s"])
        XCTAssertEqual(pieces(u, "qrs"), ["qrs"])
        XCTAssertEqual(pieces(u, "qr"), ["q", "r"])
    }

    func testUserDefinedTokensAlwaysMatched() throws {
        let t = try Tokenizer(tokens: ["<ctl>", "<usr>", "a", "<", ">", "c", "t", "l"], tokenTypes: [3, 4, 1, 1, 1, 1, 1, 1],
                              merges: [], pre: "gpt2", bosID: nil, eosID: nil, unknownID: nil, addBOS: false)
        XCTAssertEqual(t.encode("a<usr>a<ctl>"), [2, 1, 2, 3, 5, 6, 7, 4])
        XCTAssertEqual(t.encode("a<usr>a<ctl>", parseSpecial: true), [2, 1, 2, 0])
    }

    func testInitErrors() {
        XCTAssertThrowsError(try synthetic(["a"], merges: [], pre: "made-up")) { error in
            XCTAssertEqual(error as? TokenizerError, .unsupportedPreTokenizer("made-up"))
            XCTAssertTrue("\(error)".contains("smollm"))
        }
        XCTAssertThrowsError(try synthetic(["a", "b"], merges: ["a b", "ab"])) { error in
            XCTAssertEqual(error as? TokenizerError, .invalidMerge(index: 1, merge: "ab"))
        }
        XCTAssertThrowsError(try Tokenizer(tokens: ["a", "b"], tokenTypes: [1], merges: [], pre: "gpt2",
                                           bosID: nil, eosID: nil, unknownID: nil, addBOS: false))
        XCTAssertThrowsError(try Tokenizer(tokens: ["a"], tokenTypes: [1], merges: [], pre: "gpt2",
                                           bosID: 5, eosID: nil, unknownID: nil, addBOS: false))
        XCTAssertTrue(TokenizerError.missingKey("tokenizer.ggml.merges").description.contains("tokenizer.ggml.merges"))
        XCTAssertTrue(TokenizerError.unsupportedModel("llama").description.contains("llama"))
    }

    // MARK: - Pre-tokenizers (expected splits derived by hand from the regexes)

    func testGPT2Split() {
        let p = PreTokenizer.gpt2
        XCTAssertEqual(p.split("I'm 12345 ok!!"), ["I", "'m", " 12345", " ok", "!!"])
        XCTAssertEqual(p.split("a  b\n\n c "), ["a", " ", " b", "\n\n", " c", " "])
        XCTAssertEqual(p.split("we'll they've I'd you're it's don't"),
                       ["we", "'ll", " they", "'ve", " I", "'d", " you", "'re", " it", "'s", " don", "'t"])
        XCTAssertEqual(p.split("I'M 'steve'"), ["I", "'", "M", " '", "steve", "'"])
        XCTAssertEqual(p.split("\tword  \tx"), ["\t", "word", "  ", "\t", "x"])
        XCTAssertEqual(p.split("$1,234.56 (approx.)"), ["$", "1", ",", "234", ".", "56", " (", "approx", ".)"])
        XCTAssertEqual(p.split("中文字符 🚀🔥 ok"), ["中文字符", " 🚀🔥", " ok"])
        XCTAssertEqual(p.split("Ünïcödé — x"), ["Ünïcödé", " —", " x"])
        XCTAssertEqual(p.split("   "), ["   "])
        XCTAssertEqual(p.split(""), [])
        XCTAssertEqual(p.split("x\u{A0}\u{A0}y"), ["x", "\u{A0}", "\u{A0}", "y"])   // NBSP is \s but not ' '
        XCTAssertEqual(p.split("x²³ ½"), ["x", "²³", " ½"])                         // No is \p{N}
    }

    func testSmolLMSplit() {
        let p = PreTokenizer.smollm
        XCTAssertEqual(p.split("In 2023, 4096 tokens"), ["In", " ", "2", "0", "2", "3", ",", " ", "4", "0", "9", "6", " tokens"])
        XCTAssertEqual(p.split("I'm 12 ok!!"), ["I", "'m", " ", "1", "2", " ok", "!!"])
        XCTAssertEqual(p.split("a  b"), ["a", " ", " b"])
        XCTAssertEqual(p.split("x1y"), ["x", "1", "y"])
        XCTAssertEqual(p.split("  7"), ["  ", "7"])   // whitespace run ends its piece: \s+(?!\S) takes it all
    }

    func testLlama3Split() {
        let p = PreTokenizer(ggufName: "llama-bpe")!
        XCTAssertEqual(p, .llama3)
        XCTAssertEqual(p.split("I'M 12345 ok!!\n\nHello"), ["I", "'M", " ", "123", "45", " ok", "!!\n\n", "Hello"])
        XCTAssertEqual(p.split(" (hello"), [" (", "hello"])
        XCTAssertEqual(p.split("(hello"), ["(hello"])
        XCTAssertEqual(p.split("\tword  \n x"), ["\tword", "  \n", " x"])
        XCTAssertEqual(p.split("a\n\nb"), ["a", "\n\n", "b"])
        XCTAssertEqual(p.split("a \n \n  b"), ["a", " \n \n", " ", " b"])
        XCTAssertEqual(p.split("x   "), ["x", "   "])
        XCTAssertEqual(p.split("We'LL 've"), ["We", "'LL", " '", "ve"])
        XCTAssertEqual(p.split("1234567"), ["123", "456", "7"])
        XCTAssertEqual(p.split("..\r\nA"), ["..\r\n", "A"])
    }

    func testQwen2Split() {
        let p = PreTokenizer(ggufName: "qwen2")!
        XCTAssertEqual(p.split("I'M 12345 ok!!\n\nHello"), ["I", "'M", " ", "1", "2", "3", "4", "5", " ok", "!!\n\n", "Hello"])
        XCTAssertEqual(p.split("(hello world"), ["(hello", " world"])
    }

    func testPreTokenizerNames() {
        XCTAssertEqual(PreTokenizer(ggufName: "smollm"), .smollm)
        XCTAssertEqual(PreTokenizer(ggufName: "gpt2"), .gpt2)
        XCTAssertEqual(PreTokenizer(ggufName: "llama3"), .llama3)
        XCTAssertNil(PreTokenizer(ggufName: "default"))
    }

    // MARK: - Speed

    func testSpeed() throws {
        let t = try smol()
        let gguf = try GGUFFile(path: modelPath)
        let tokens = try XCTUnwrap(gguf["tokenizer.ggml.tokens"]?.stringArray)
        let types = try XCTUnwrap(gguf["tokenizer.ggml.token_type"]?.intArray)
        let merges = try XCTUnwrap(gguf["tokenizer.ggml.merges"]?.stringArray)
        var start = Date()
        _ = try Tokenizer(tokens: tokens, tokenTypes: types, merges: merges, pre: "smollm",
                          bosID: 1, eosID: 2, unknownID: 0, addBOS: false)
        let load = Date().timeIntervalSince(start)

        let url = sharedDir.appendingPathComponent("data/text/wikitext2_raw_valid.txt")
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { throw XCTSkip("absent: \(url.path)") }
        let fresh = try Tokenizer(tokens: tokens, tokenTypes: types, merges: merges, pre: "smollm",
                                  bosID: 1, eosID: 2, unknownID: 0, addBOS: false)
        start = Date()
        let ids = fresh.encode(text)
        let cold = Date().timeIntervalSince(start)
        start = Date()
        let again = fresh.encode(text)
        let warm = Date().timeIntervalSince(start)
        start = Date()
        let back = t.decode(ids)
        let dec = Date().timeIntervalSince(start)
        XCTAssertEqual(ids, again)
        XCTAssertEqual(back, text)
        print(String(format: "tokenizer speed: load %.3f s; encode %d bytes → %d tokens: cold %.3f s, warm %.3f s; decode %.3f s",
                     load, text.utf8.count, ids.count, cold, warm, dec))
    }
}
