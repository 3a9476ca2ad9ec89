import Foundation
import XCTest
import Llama
@testable import Editing

/// The one owner of request validation: `EditRequest.parse` (files), `validate()` (sizes, fields) and
/// `validate(tokenizer:)` (token caps).
final class EditRequestTests: XCTestCase {
    typealias F = EditLogFixtures

    func reason(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "no error" } catch { return "\(error)" }
    }

    func parse(_ s: String) -> String { reason { try EditRequest.parse(Data(s.utf8), source: "r.json") } }

    func testFilesWithoutRequestsOrWithBadBytesAreRefusedNamingWhere() throws {
        XCTAssertEqual(parse("[]"), "r.json: holds an empty array: no edit requests")
        XCTAssertEqual(parse(" \n\t\n"), "r.json: is empty; expected a JSON object, an array of objects, or JSON Lines")
        XCTAssertEqual(parse("[{\"subject\": \"a\", \"prompt\": \"{} b\", \"target_new\": \"c\"}, 3]"),
                       "r.json: element 2 of the array is not a JSON object")
        XCTAssertEqual(parse("\"just a string\""), "r.json: expected a JSON object, an array of objects, or JSON Lines")
        // Invalid UTF-8: the byte 0xE9 (Latin-1 é) at line 2, column 4.
        var bytes = Array("{}\nab\"".utf8)
        bytes.append(0xE9)
        let bad = reason { try EditRequest.parse(Data(bytes), source: "r.json") }
        XCTAssertEqual(bad, "r.json: invalid UTF-8 at line 2, column 4 (byte 6); request files must be UTF-8 text")
        XCTAssertEqual(EditRequest.invalidUTF8Offset(Data("héllo ✓ 😀".utf8)), nil)
        XCTAssertEqual(EditRequest.invalidUTF8Offset(Data([0x61, 0xF0, 0x9F, 0x98])), 1)  // a truncated 4-byte sequence
        XCTAssertEqual(EditRequest.invalidUTF8Offset(Data([0xC0, 0xAF])), 0)  // an overlong '/'
    }

    func testInvalidJSONSaysLineAndColumn() throws {
        // A document over several lines: the document's error, where it is.
        XCTAssertEqual(parse("{\n  \"subject\": \"a\",\n  \"prompt\": oops\n}"), "r.json: invalid JSON at line 3, column 13: invalid value")
        XCTAssertTrue(parse("{\"subject\": \"a\"").contains("end of the file"), parse("{\"subject\": \"a\""))
        // JSON Lines: the failing line, after good ones.
        let good = #"{"subject": "a", "prompt": "{} b", "target_new": "c"}"#
        XCTAssertEqual(parse(good + "\n" + good + "\n\n" + #"{"subject" "a"}"#), "r.json: invalid JSON at line 4, column 12: invalid value")
        XCTAssertEqual(parse(good + "\n[1]\n"), "r.json: line 2 is not a JSON object")
        XCTAssertEqual(try EditRequest.parse(Data((good + "\n" + good + "\n").utf8), source: "r.json").count, 2)
    }

    func testSizesAreCappedBeforeAnyModel() throws {
        let base = EditRequest(subject: "the tower", prompt: "{} is in", targetNew: "rome", targetTrue: "paris")
        XCTAssertNoThrow(try base.validate())
        var long = base
        long.targetNew = String(repeating: "a", count: 10_000)
        XCTAssertEqual(reason { try long.validate() }, "edit request for \"the tower\": target_new is 10000 bytes long; at most 1024 are allowed")
        var longPrompt = base
        longPrompt.prompt = "{} " + String(repeating: "é", count: 3000)
        XCTAssertTrue(reason { try longPrompt.validate() }.contains("the prompt is 6003 bytes long; at most 4096"))
        var many = base
        many.paraphrases = Array(repeating: "{} again", count: 101)
        XCTAssertTrue(reason { try many.validate() }.contains("101 paraphrases; at most 100"))
        var emptyNeighbour = base
        emptyNeighbour.neighborhood = [.init(prompt: "ok"), .init(prompt: " ")]
        XCTAssertTrue(reason { try emptyNeighbour.validate() }.contains("neighbourhood prompt 2 is empty"))
        // A long subject is shortened in the message.
        var longSubject = base
        longSubject.subject = String(repeating: "s", count: 2000)
        let m = reason { try longSubject.validate() }
        XCTAssertTrue(m.contains("the subject is 2000 bytes long") && m.count < 200, m)
    }

    func testTokenCapsNeedTheTokenizer() throws {
        let tok = try F.tokenizer()  // one token per character; " x" is Ġ + x
        var r = EditRequest(subject: "the tower", prompt: "{} is in", targetNew: String(repeating: "a", count: 63))
        XCTAssertNoThrow(try r.validate(tokenizer: tok))  // Ġ + 63 = 64 tokens: the cap
        r.targetNew = String(repeating: "a", count: 64)
        XCTAssertEqual(reason { try r.validate(tokenizer: tok) }, "edit request for \"the tower\": target_new is 65 tokens long; at most 64 are allowed")
        XCTAssertEqual(EditRequest.targetTokens("ab", tokenizer: tok).count, 3)
        var p = EditRequest(subject: "the tower", prompt: "{} " + String(repeating: "b", count: 300), targetNew: "x")
        XCTAssertTrue(reason { try p.validate(tokenizer: tok) }.contains("the prompt is 310 tokens long; at most 256"))
        p.prompt = "{} is"
        p.paraphrases = [String(repeating: "c", count: 257)]
        XCTAssertTrue(reason { try p.validate(tokenizer: tok) }.contains("paraphrase 1 is 257 tokens long"))
    }

    func testLayerRange() throws {
        XCTAssertNoThrow(try EditRequest.requireLayer(0, layers: 2))
        XCTAssertNoThrow(try EditRequest.requireLayer(1, layers: 2))
        for l in [-1, 2, 99] {
            XCTAssertThrowsError(try EditRequest.requireLayer(l, layers: 2)) {
                XCTAssertEqual($0 as? EditingError, .layerOutOfRange(layer: l, layers: 2))
            }
        }
    }
}
