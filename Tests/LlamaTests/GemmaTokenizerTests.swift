import Foundation
import GGUF
import HDF5Store
@testable import Llama
import XCTest

/// Package root (…/Tests/LlamaTests/GemmaTokenizerTests.swift → three levels up).
private let packageRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
/// `../shared` beside the project (or `$SCALPEL_SHARED` when the checkout lives elsewhere).
private let sharedDir = ProcessInfo.processInfo.environment["SCALPEL_SHARED"].map { URL(fileURLWithPath: $0) }
    ?? packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
private let gemmaPath = packageRoot.appendingPathComponent("weights/gemma-3-270m-q4_k_m.gguf").path

/// The Gemma 3 tokenizer, built once from the real GGUF's metadata (262,144 tokens).
private let gemmaTokenizer: Result<Tokenizer, Error>? = {
    guard FileManager.default.fileExists(atPath: gemmaPath) else { return nil }
    return Result { try Tokenizer(gguf: GGUFFile(path: gemmaPath)) }
}()

/// The SentencePiece tokenizer against Gemma 3 270M's vocabulary and a tiny synthetic one.
final class GemmaTokenizerTests: XCTestCase {
    // MARK: - Helpers

    private func gemma() throws -> Tokenizer {
        guard let r = gemmaTokenizer else { throw XCTSkip("Gemma GGUF absent: \(gemmaPath) (scripts/fetch-model.sh)") }
        return try r.get()
    }

    private func referenceCases() throws -> [(text: String, ids: [Int])] {
        let url = sharedDir.appendingPathComponent("reference/gemma3_tokenizer.json")
        guard FileManager.default.fileExists(atPath: url.path) else { throw XCTSkip("shared reference absent: \(url.path)") }
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let cases = try XCTUnwrap(obj["cases"] as? [[String: Any]])
        return try cases.map { (try XCTUnwrap($0["text"] as? String), try XCTUnwrap($0["ids"] as? [Int])) }
    }

    /// The 256 byte tokens `<0x00>`…`<0xFF>`.
    private static let byteTokens = (0..<256).map { String(format: "<0x%02X>", $0) }

    /// A synthetic SentencePiece vocabulary: `<unk>` `<s>` (control), the user-defined tokens, the normal
    /// `(piece, score)` pairs and, if `bytes`, the byte tokens. BOS is `<s>` (id 1), prepended when `addBOS`.
    private func synthetic(_ pieces: [(String, Float)], userDefined: [String] = [], bytes: Bool = true,
                           addBOS: Bool = false) throws -> Tokenizer {
        var tokens = ["<unk>", "<s>"], types = [2, 3], scores: [Float] = [0, 0]
        for u in userDefined { tokens.append(u); types.append(4); scores.append(0) }
        for (p, s) in pieces { tokens.append(p); types.append(1); scores.append(s) }
        if bytes { for b in Self.byteTokens { tokens.append(b); types.append(6); scores.append(0) } }
        return try Tokenizer(tokens: tokens, tokenTypes: types, merges: [], pre: "default", bosID: 1, eosID: nil,
                             unknownID: 0, addBOS: addBOS, model: .sentencePiece, scores: scores)
    }

    private func pieces(_ t: Tokenizer, _ text: String, parseSpecial: Bool = false) -> [String] {
        t.encode(text, parseSpecial: parseSpecial).map { t.token($0) }
    }

    // MARK: - Reference (Gemma 3 270M)

    func testReferenceCases() throws {
        let t = try gemma()
        let cases = try referenceCases()
        XCTAssertEqual(cases.count, 40)
        for c in cases {
            XCTAssertEqual(t.encode(c.text), c.ids, "text: \(c.text.debugDescription)")
        }
    }

    func testRoundTrip() throws {
        let t = try gemma()
        let extra = ["", " ", "   ", "a\u{0}b", "\u{10FFFF}\u{E000}", "x\r\n\ty", "<bos> is a control token"]
        for text in try referenceCases().map(\.text) + extra {
            let ids = t.encode(text)
            XCTAssertEqual(ids.first, 2, "BOS first: \(text.debugDescription)")
            XCTAssertEqual(t.decode(ids, skipSpecial: true), text, "round trip: \(text.debugDescription)")
        }
    }

    func testGemmaMetadata() throws {
        let t = try gemma()
        XCTAssertEqual(t.model, .sentencePiece)
        XCTAssertEqual(t.vocabularySize, 262_144)
        XCTAssertEqual(t.scores.count, 262_144)
        XCTAssertEqual(t.bosID, 2)
        XCTAssertEqual(t.eosID, 1)
        XCTAssertTrue(t.addBOS)
        XCTAssertEqual(t.token(2), "<bos>")
        XCTAssertEqual(t.tokenType(138), TokenType.userDefined.rawValue)  // "  "
        XCTAssertEqual(t.token(138), "  ")
        XCTAssertEqual(t.tokenText(236743), " ")  // "▁" decodes to a space
        XCTAssertEqual(t.encode("Paris", addBOS: false).map { t.tokenText($0) }.joined(), "Paris")
        XCTAssertEqual(t.encode(" Paris", addBOS: false).count, 1, "' Paris' is one piece")
        XCTAssertTrue(t.encode("<bos>", parseSpecial: true, addBOS: false) == [2])
        XCTAssertNotEqual(t.encode("<bos>", addBOS: false), [2])
    }

    /// WikiText-2 validation (1.1 MB) round-trips; prints load and encode times.
    func testWikiTextRoundTripAndSpeed() throws {
        _ = try gemma()
        let url = sharedDir.appendingPathComponent("data/text/wikitext2_raw_valid.txt")
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { throw XCTSkip("absent: \(url.path)") }
        var start = Date()
        let t = try Tokenizer(gguf: GGUFFile(path: gemmaPath))
        let load = Date().timeIntervalSince(start)
        start = Date()
        let ids = t.encode(text, addBOS: false)
        let enc = Date().timeIntervalSince(start)
        start = Date()
        let back = t.decode(ids)
        let dec = Date().timeIntervalSince(start)
        XCTAssertEqual(back, text)
        XCTAssertFalse(ids.contains(t.unknownID ?? -1))
        print(String(format: "gemma tokenizer: load %.3f s; encode %d bytes → %d tokens %.3f s; decode %.3f s",
                     load, text.utf8.count, ids.count, enc, dec))
    }

    // MARK: - Synthetic vocabularies

    func testUserDefinedTokensLongestFirstBeforeMerging() throws {
        let t = try synthetic([("a", -1), ("\n", -1), ("a\n", 5)], userDefined: ["\n", "\n\n", "\n\n\n"])
        // Five newlines: the longest user-defined run first, then the rest; never merged with the letters around.
        XCTAssertEqual(pieces(t, "a\n\n\n\n\na"), ["a", "\n\n\n", "\n\n", "a"])
        XCTAssertEqual(pieces(t, "a\na"), ["a", "\n", "a"])
        // A user-defined run of spaces is matched in the raw text, before spaces become ▁.
        let s = try synthetic([("▁", -1), ("b", -1), ("▁b", -0.5)], userDefined: ["  "])
        XCTAssertEqual(pieces(s, "   b"), ["  ", "▁b"])
    }

    func testSpacesBecomeSpaceMarkWithoutDummyPrefix() throws {
        let t = try synthetic([("a", -1), ("b", -1), ("▁", -3), ("▁b", -2)])
        XCTAssertEqual(pieces(t, "a b"), ["a", "▁b"])
        XCTAssertEqual(pieces(t, "b"), ["b"], "no ▁ is prefixed")
        XCTAssertEqual(pieces(t, " b "), ["▁b", "▁"])
        XCTAssertEqual(t.decode(t.encode("a b ")), "a b ")
    }

    func testScoreGreedyMergeOrder() throws {
        // "bc" has the best score: merged first, after which neither "abc" nor "bcd" exists, although
        // left-to-right pairing (ab, cd) would reach "abcd" and a longest match would take it whole.
        let vocab: [(String, Float)] = [("a", -10), ("b", -10), ("c", -10), ("d", -10),
                                        ("ab", -2), ("bc", -1), ("cd", -3), ("abcd", -4)]
        XCTAssertEqual(pieces(try synthetic(vocab), "abcd"), ["a", "bc", "d"])
        // With "ab" best instead, ab and then cd merge, then ab+cd.
        let vocab2: [(String, Float)] = [("a", -10), ("b", -10), ("c", -10), ("d", -10),
                                         ("ab", -1), ("bc", -2), ("cd", -3), ("abcd", -4)]
        XCTAssertEqual(pieces(try synthetic(vocab2), "abcd"), ["abcd"])
        // A higher score wins over position: "bc" (−1) beats the leftmost "ab" (−2) in "abc".
        XCTAssertEqual(pieces(try synthetic(vocab), "abc"), ["a", "bc"])
        XCTAssertEqual(pieces(try synthetic(vocab2), "abc"), ["ab", "c"])
    }

    func testEqualScoresMergeLeftmost() throws {
        let t = try synthetic([("a", -5), ("aa", -1)])
        XCTAssertEqual(pieces(t, "aaa"), ["aa", "a"])
        XCTAssertEqual(pieces(t, "aaaaa"), ["aa", "aa", "a"])
    }

    func testMergesRunOverMultibyteCharacters() throws {
        let t = try synthetic([("é", -1), ("t", -1), ("té", -0.5)])
        XCTAssertEqual(pieces(t, "té"), ["té"])
    }

    func testCanonicallyEquivalentPiecesStayDistinct() throws {
        // "é" (U+00E9) and "e\u{301}" are equal as Swift Strings but distinct pieces with distinct ids.
        let t = try synthetic([("e", -5), ("\u{301}", -5), ("\u{E9}", -1), ("e\u{301}", -2)])
        let pre = try XCTUnwrap(t.encode("\u{E9}").first), dec = try XCTUnwrap(t.encode("e\u{301}").first)
        XCTAssertEqual(t.encode("\u{E9}"), [pre])
        XCTAssertEqual(t.encode("e\u{301}"), [dec])
        XCTAssertNotEqual(pre, dec)
        XCTAssertEqual(Array(t.token(dec).unicodeScalars), ["e", "\u{301}"])
    }

    func testByteFallback() throws {
        let t = try synthetic([("a", -1)])
        // "é" (C3 A9) and "😀" (F0 9F 98 80) are not pieces: their UTF-8 bytes become byte tokens.
        XCTAssertEqual(pieces(t, "aéa"), ["a", "<0xC3>", "<0xA9>", "a"])
        XCTAssertEqual(pieces(t, "😀"), ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"])
        XCTAssertEqual(t.decode(t.encode("aé😀a")), "aé😀a")
        // Without byte tokens an unknown character is the unknown token.
        let u = try synthetic([("a", -1)], bytes: false)
        XCTAssertEqual(pieces(u, "aza"), ["a", "<unk>", "a"])
    }

    func testBOSAndControlTokens() throws {
        let t = try synthetic([("s", -1), ("<", -1), (">", -1)], addBOS: true)
        XCTAssertEqual(pieces(t, "s"), ["<s>", "s"])
        XCTAssertEqual(t.encode("s", addBOS: false).map { t.token($0) }, ["s"])
        XCTAssertEqual(pieces(t, "<s>"), ["<s>", "<", "s", ">"], "control tokens are text unless parseSpecial")
        XCTAssertEqual(pieces(t, "<s>", parseSpecial: true), ["<s>", "<s>"])
        XCTAssertEqual(t.decode(t.encode("s<s>"), skipSpecial: true), "s<s>")
    }

    func testControlAndByteTokensAreNotMergeResults() throws {
        // "<s>" is a control token: "<" + "s" + ">" must not merge into it even with pieces "<s" in between.
        let t = try synthetic([("<", -1), ("s", -1), (">", -1), ("<s", -0.5)])
        XCTAssertEqual(pieces(t, "<s>"), ["<s", ">"])
    }

    func testInvalidScores() {
        XCTAssertThrowsError(try Tokenizer(tokens: ["a", "b"], tokenTypes: [1, 1], merges: [], pre: "default",
                                           bosID: nil, eosID: nil, unknownID: nil, addBOS: false,
                                           model: .sentencePiece, scores: [0])) {
            XCTAssertEqual($0 as? TokenizerError, .invalidVocabulary("2 tokens but 1 scores"))
        }
        // An unknown pre-tokenizer name is still an error for BPE.
        XCTAssertThrowsError(try Tokenizer(tokens: ["a"], tokenTypes: [1], merges: [], pre: "default",
                                           bosID: nil, eosID: nil, unknownID: nil, addBOS: false))
    }

    /// `Tokenizer(gguf:)` on a SentencePiece GGUF written here: scores read, the dummy space prefix refused.
    func testFromGGUFMetadata() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemmatok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func write(_ name: String, spacePrefix: Bool?) throws -> GGUFFile {
            var w = GGUFWriter()
            w.metadata = [("general.architecture", .string("gemma3")), ("tokenizer.ggml.model", .string("llama")),
                          ("tokenizer.ggml.tokens", .array(.string, ["<unk>", "<bos>", "a", "b", "ab", "▁"].map { .string($0) })),
                          ("tokenizer.ggml.scores", .array(.float32, [0, 0, -3, -3, -1, -2].map { .float32($0) })),
                          ("tokenizer.ggml.token_type", .array(.int32, [2, 3, 1, 1, 1, 1].map { .int32($0) })),
                          ("tokenizer.ggml.bos_token_id", .uint32(1)), ("tokenizer.ggml.unknown_token_id", .uint32(0)),
                          ("tokenizer.ggml.add_bos_token", .bool(true))]
            if let spacePrefix { w.metadata.append(("tokenizer.ggml.add_space_prefix", .bool(spacePrefix))) }
            let path = dir.appendingPathComponent(name).path
            try w.write(to: path)
            return try GGUFFile(path: path)
        }
        let t = try Tokenizer(gguf: try write("ok.gguf", spacePrefix: false))
        XCTAssertEqual(t.model, .sentencePiece)
        XCTAssertEqual(t.scores, [0, 0, -3, -3, -1, -2])
        XCTAssertEqual(pieces(t, "ab ab"), ["<bos>", "ab", "▁", "ab"])
        XCTAssertEqual(t.decode(t.encode("ab ab"), skipSpecial: true), "ab ab")
        for (name, flag) in [("prefix.gguf", true as Bool?), ("absent.gguf", nil)] {
            XCTAssertThrowsError(try Tokenizer(gguf: try write(name, spacePrefix: flag))) {
                guard case .unsupportedSetting(key: "tokenizer.ggml.add_space_prefix", _)? = $0 as? TokenizerError else {
                    return XCTFail("\($0)")
                }
            }
        }
    }

    /// A store keeps the tokenizer kind and scores; the tokenizer read back encodes the same.
    func testStoreRoundTrip() throws {
        let t = try synthetic([("a", -1), ("b", -2), ("ab", -0.5), ("▁", -3)], userDefined: ["\n\n"], addBOS: true)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemmatok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("spm.h5").path
        let c = TinyModel.config
        let prov = ModelProvenance(sourceFile: "synthetic", sourceSize: 0, sourceSHA256: String(repeating: "0", count: 64),
                                   quantization: [:])
        try ModelStore.create(at: path, weights: TinyModel.make().weights, tokenizer: t, provenance: prov, toolVersion: "test")
        let h5 = try HDF5File(openingForReading: path)
        defer { try? h5.close() }
        XCTAssertEqual(try h5.root.group("tokenizer").stringAttribute("model"), "llama")
        let (config, back, _, _) = try ModelStore.readHeader(h5)
        XCTAssertEqual(config, c)
        XCTAssertEqual(back.model, .sentencePiece)
        XCTAssertEqual(back.scores, t.scores)
        let text = "ab a\n\nba é"
        XCTAssertEqual(back.encode(text), t.encode(text))
        XCTAssertEqual(back.encode(text).map { back.token($0) }, ["<s>", "ab", "▁", "a", "\n\n", "b", "a", "▁", "<0xC3>", "<0xA9>"])
    }
}
