import Foundation
import XCTest

/// Every numeric option and every request file is checked before anything is loaded: the model named here does not
/// exist, so a check that ran after loading would report "not found" instead of the option. One line, exit 1.
extension CLITests {
    var missingModel: String { dir.appendingPathComponent("absent.gguf").path }

    func testNumericOptionsAreCheckedBeforeTheModelLoads() throws {
        let m = ["--model", missingModel]
        let request = dir.appendingPathComponent("r.json").path
        try #"{"subject": "abc", "prompt": "{} is in", "target_new": "rome"}"#.write(toFile: request, atomically: true, encoding: .utf8)
        let cases: [([String], [String])] = [
            (["generate"] + m + ["--temperature", "inf", "x"], ["--temperature", "finite", "inf"]),
            (["generate"] + m + ["--temperature", "nan", "x"], ["--temperature", "finite", "nan"]),
            (["generate"] + m + ["--temperature", "-1", "x"], ["--temperature", "≥ 0"]),
            (["generate"] + m + ["--top-k", "-5", "x"], ["--top-k", "-5"]),
            (["generate"] + m + ["--max-tokens", "0", "x"], ["--max-tokens", "got 0"]),
            (["predict"] + m + ["--top", "0", "x"], ["--top", "got 0"]),
            (["trace"] + m + ["--prompt", "a b", "--subject", "a", "--noise-std", "nan"], ["--noise-std", "finite", "nan"]),
            (["trace"] + m + ["--prompt", "a b", "--subject", "a", "--noise-std", "-1"], ["--noise-std", "> 0"]),
            (["trace"] + m + ["--prompt", "a b", "--subject", "a", "--noise-std", "0"], ["--noise-std", "> 0"]),
            (["trace"] + m + ["--prompt", "a b", "--subject", "a", "--samples", "0"], ["--samples", "got 0"]),
            (["trace"] + m + ["--prompt", "a b", "--subject", "a", "--window", "-2"], ["--window", "got -2"]),
            (["trace"] + m + ["--prompt", "a b", "--corruption", "blur"], ["--corruption", "blur"]),
            (["trace"] + m + ["--prompt", "a b"], ["--corruption noise needs --subject"]),
            (["trace"] + m + ["--prompt", "a b", "--subject", "a", "--kind", "mlpx"], ["--kind", "mlpx"]),
            (["edit"] + m + ["--steps", "0", request], ["--steps", "got 0"]),
            (["edit"] + m + ["--steps", "-3", request], ["--steps", "got -3"]),
            (["edit"] + m + ["--layer", "3.5", request], ["--layer", "3.5"]),
            (["edit"] + m + ["--layer", "-1", request], ["--layer", "got -1"]),
            (["edit"] + m + ["--corpus-texts", "0", request], ["--corpus-texts", "got 0"]),
            (["edit"] + m + ["--bare-prompt-share", "2", request], ["--bare-prompt-share", "\"2\""]),
            (["edit"] + m + ["--out", dir.appendingPathComponent("x.gguf").path, request], ["--out", ".h5 store"]),
            (["eval"] + m + ["--dataset", request, "--layer", "-1"], ["--layer", "got -1"]),
            (["eval"] + m + ["--dataset", request, "--layer", "0", "--limit", "0"], ["--limit", "got 0"]),
            (["eval"] + m + ["--dataset", request, "--layer", "0", "--steps", "0"], ["--steps", "got 0"]),
            (["locate"] + m + ["--samples", "0"], ["--samples", "got 0"]),
            (["locate"] + m + ["--window", "0"], ["--window", "got 0"]),
            (["stats"] + m + ["--layer", "-1"], ["--layer", "got -1"]),
            (["stats"] + m + ["--layer", "0", "--texts", "0"], ["--texts", "got 0"]),
            (["stats"] + m + ["--layer", "0", "--shard", "3/2"], ["--shard", "3/2"]),
            (["diff", missingModel, missingModel, "--rtol", "nan"], ["--rtol", "finite"]),
            (["diff", missingModel, missingModel, "--top", "0"], ["--top", "got 0"]),
        ]
        for (args, fragments) in cases { try expectError(args, fragments) }
    }

    func testRequestFilesAreCheckedBeforeTheModelLoads() throws {
        func file(_ name: String, _ bytes: [UInt8]) throws -> String {
            let p = dir.appendingPathComponent(name).path
            try Data(bytes).write(to: URL(fileURLWithPath: p))
            return p
        }
        func text(_ name: String, _ s: String) throws -> String { try file(name, Array(s.utf8)) }
        let m = ["edit", "--model", missingModel, "--dry-run"]
        try expectError(m + [try text("empty.json", "[]")], ["empty.json", "empty array", "no edit requests"])
        try expectError(m + [try text("blank.json", "\n  \n")], ["blank.json", "is empty"])
        try expectError(m + [try text("numbers.json", "[1, 2]")], ["numbers.json", "element 1", "not a JSON object"])
        // "R\xE9ome": Latin-1, not UTF-8 (was accepted as "R\u{FFFD}ome").
        let latin1 = Array(#"{"subject": "x", "prompt": "{} is", "target_new": "R"#.utf8) + [0xE9] + Array(#"ome"}"#.utf8) + [0x0A]
        try expectError(m + [try file("latin1.jsonl", latin1)], ["latin1.jsonl", "invalid UTF-8", "line 1, column 53"])
        try expectError(m + [try text("doc.json", "{\"subject\": \"x\",\n \"prompt\": \"{} is\", target_new: \"y\"}")],
                        ["doc.json", "invalid JSON", "line 2, column 21"])
        let lines = #"{"subject": "x", "prompt": "{} is", "target_new": "Rome"}"# + "\n\n"
            + #"{"subject": "y", "prompt": "{} is" "target_new": "Rome"}"# + "\n"
        try expectError(m + [try text("lines.jsonl", lines)], ["lines.jsonl", "invalid JSON", "line 3, column"])
        // A 10,000-character target is refused at once (it ran over 300 s and 4.3 GB).
        let long = #"{"subject": "x", "prompt": "{} is", "target_new": ""# + String(repeating: "a", count: 10_000) + #""}"#
        let t0 = Date()
        try expectError(m + [try text("long.json", long)], ["target_new is 10000 bytes long", "at most 1024"])
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
        try expectError(["edit", "--model", missingModel], ["give at least one edit request file"])
    }

    /// The token cap needs the tokenizer: checked right after the model loads, before statistics or locate.
    func testLongTargetIsRefusedInTokensAfterLoading() throws {
        let s = try tinyStore()
        let p = dir.appendingPathComponent("long.json").path
        try (#"{"subject": "abc", "prompt": "{} is in", "target_new": ""# + String(repeating: "ab", count: 100) + #""}"#)
            .write(toFile: p, atomically: true, encoding: .utf8)
        let before = snapshot()
        try expectError(["edit", "--model", s, p], ["target_new is 201 tokens long", "at most 64"])
        XCTAssertEqual(snapshot(), before)
    }
}
