import Foundation
import XCTest
import GGUF
import HDF5Store
import Llama
import Editing

/// Outputs never replace what is there without `--force`, never replace the command's own input (any spelling,
/// symbolic or hard link), and in-place commands write through symbolic links. Each refusal: one line on stderr,
/// exit 1, no signal, every file byte-identical and no new file left behind.
extension CLITests {
    typealias X = CLIFixtures

    /// A tiny synthetic store `name` in the test's folder, with `edits` synthetic edits of layer 0.
    func tinyStore(_ name: String = "S.h5", edits: Int = 0) throws -> String {
        let p = dir.appendingPathComponent(name).path
        try X.makeStore(p)
        for i in 0..<edits { try X.appendEdit(p, seed: UInt64(i + 1)) }
        return p
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Every file (recursively) under the test folder with its hash.
    func snapshot() -> [String: String] {
        var out: [String: String] = [:]
        let e = FileManager.default.enumerator(atPath: dir.path)
        while let name = e?.nextObject() as? String {
            let p = path(name)
            out[name] = X.isSymlink(p) ? "link -> " + ((try? FileManager.default.destinationOfSymbolicLink(atPath: p)) ?? "?")
                : (X.hash(p) ?? "folder")
        }
        return out
    }

    /// Runs `args` expecting a one-line refusal containing `fragments`, with the test folder unchanged.
    func expectRefusal(_ args: [String], _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let before = snapshot()
        try expectError(args, fragments, file: file, line: line)
        XCTAssertEqual(snapshot(), before, "files changed by \(args)", file: file, line: line)
    }

    func writeRequest() throws -> String {
        let p = path("request.json")
        try #"{"subject": "abc", "prompt": "{} is in", "target_new": "rome"}"#.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    // MARK: Never over the input

    func testExportNeverOverwritesItsInputInAnySpellingEvenWithForce() throws {
        let s = try tinyStore(edits: 1)
        try FileManager.default.createDirectory(atPath: path("sub"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: path("link.h5"), withDestinationPath: "S.h5")
        try FileManager.default.linkItem(atPath: s, toPath: path("hard.h5"))
        for spelling in [s, path("sub/../S.h5"), path("./S.h5"), path("link.h5"), path("hard.h5"), path("missing/../S.h5"),
                         path("missing/../link.h5")] {
            for force in [[], ["--force"]] {
                try expectRefusal(["export", "--model", s, "--format", "gguf", "--out", spelling] + force, ["never overwritten"])
                try expectRefusal(["export", "--model", path("link.h5"), "--format", "safetensors", "--out", spelling] + force,
                                  ["never overwritten"])
            }
        }
        XCTAssertEqual(try EditLog.entries(path: s).map(\.id), ["e0001"])
        // The other commands that write a new file refuse their input the same way.
        let gguf = path("S.gguf")
        XCTAssertEqual(try scalpel(["export", "--model", s, "--format", "gguf", "--out", gguf]).status, 0)
        try expectRefusal(["import", gguf, "--out", path("sub/../S.gguf"), "--force"], ["never overwritten"])
        try expectRefusal(["edit", "--model", s, "--out", path("hard.h5"), "--force", try writeRequest()], ["never overwritten"])
        try expectRefusal(["edit", "--model", s, "--out", s, try writeRequest()], ["never overwritten"])
        try expectRefusal(["stats", "--model", s, "--layer", "0", "--out", path("link.h5"), "--force"], ["never overwritten"])
        try expectRefusal(["trace", "--model", s, "--prompt", "abc is", "--subject", "abc", "--html", s, "--force"], ["never overwritten"])
    }

    // MARK: Existing outputs need --force

    func testExistingOutputsAreRefusedWithoutForce() throws {
        let s = try tinyStore(), other = try tinyStore("other.h5", edits: 1), notes = path("notes.txt")
        try "my notes\n".write(toFile: notes, atomically: true, encoding: .utf8)
        let gguf = path("S.gguf")
        XCTAssertEqual(try scalpel(["export", "--model", s, "--format", "gguf", "--out", gguf]).status, 0)
        let request = try writeRequest()
        let exists = ["already exists", "--force"]
        try expectRefusal(["export", "--model", s, "--format", "gguf", "--out", notes], ["notes.txt"] + exists)
        try expectRefusal(["export", "--model", s, "--format", "gguf", "--out", gguf], exists)
        try expectRefusal(["export", "--model", s, "--format", "gguf", "--out", path("missing/../notes.txt")], exists)
        try expectRefusal(["import", gguf, "--out", other], ["other.h5"] + exists)
        try expectRefusal(["import", gguf], ["S.h5"] + exists)   // the default output, beside the GGUF
        try expectRefusal(["edit", "--model", s, "--out", other, request], ["other.h5"] + exists)
        for flag in ["--out", "--svg", "--html"] {
            try expectRefusal(["trace", "--model", s, "--prompt", "abc is", "--subject", "abc", flag, notes], exists)
        }
        try expectRefusal(["trace", "--model", s, "--prompt", "abc is", "--subject", "abc", "--svg", path("t.svg"),
                           "--html", path("./t.svg")], ["same file"])
        try expectRefusal(["eval", "--model", s, "--dataset", request, "--layer", "0", "--records", notes], exists)
        try expectRefusal(["stats", "merge", other, "--out", notes], exists)
        // stats --out: an existing file of another kind is refused (a text file, a model store).
        try expectRefusal(["stats", "--model", s, "--layer", "0", "--out", notes], ["not a key statistics file", "not HDF5"])
        try expectRefusal(["stats", "--model", s, "--layer", "0", "--out", other], ["not a key statistics file", "scalpel-model"])
        XCTAssertEqual(try EditLog.entries(path: other).map(\.id), ["e0001"])

        // With --force the existing file is replaced.
        let forced = try scalpel(["export", "--model", s, "--format", "gguf", "--out", notes, "--force"])
        XCTAssertEqual(forced.status, 0, forced.stderr)
        XCTAssertEqual(try GGUFFile(path: notes)["llama.block_count"]?.int, 2)
        let imported = try scalpel(["import", gguf, "--out", other, "--force"])
        XCTAssertEqual(imported.status, 0, imported.stderr)
        XCTAssertEqual(try EditLog.entries(path: other).count, 0)
    }

    /// Adding a layer to an existing statistics file is what `stats` is for: no --force needed.
    func testStatsAddsLayersToAnExistingStatisticsFile() throws {
        let s = try tinyStore(), stats = path("S.stats.h5"), corpus = path("c.txt")
        try String(repeating: "the cat sat on the mat. a dog ran. ", count: 30).write(toFile: corpus, atomically: true, encoding: .utf8)
        for layer in ["0", "1"] {
            let r = try scalpel(["stats", "--model", s, "--layer", layer, "--corpus", corpus, "--out", stats])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        XCTAssertEqual(try StatsStore.layers(path: stats), [0, 1])
    }

    // MARK: Symbolic links: resolved, never split

    func testRevertAndReapplyThroughASymlinkChangeTheTargetAndKeepTheLink() throws {
        let s = try tinyStore(edits: 2)
        try FileManager.default.createDirectory(atPath: path("links"), withIntermediateDirectories: true)
        let link = path("links/link.h5")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "../S.h5")
        let revert = try scalpel(["revert", "e0001", "--model", link])
        XCTAssertEqual(revert.status, 0, revert.stderr)
        XCTAssertTrue(X.isSymlink(link), "the link was replaced by a file")
        XCTAssertEqual(try EditLog.entries(path: s).map(\.status), ["reverted", "active"])
        XCTAssertEqual(try ModelFile.open(link).appliedEdits, ["e0002"])
        let reapply = try scalpel(["reapply", "e0001", "--model", link])
        XCTAssertEqual(reapply.status, 0, reapply.stderr)
        XCTAssertTrue(X.isSymlink(link))
        XCTAssertEqual(try EditLog.entries(path: s).map(\.status), ["active", "active"])
        // Export --force through a link to another file replaces the target, not the link.
        let gguf = path("S.gguf"), ggufLink = path("links/out.gguf")
        try "placeholder".write(toFile: gguf, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: ggufLink, withDestinationPath: "../S.gguf")
        let e = try scalpel(["export", "--model", link, "--format", "gguf", "--out", ggufLink, "--force"])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertTrue(X.isSymlink(ggufLink))
        XCTAssertEqual(try GGUFFile(path: gguf)["llama.block_count"]?.int, 2)
        // A dangling link as an output is refused.
        try FileManager.default.createSymbolicLink(atPath: path("dangling.gguf"), withDestinationPath: "nowhere.gguf")
        try expectRefusal(["export", "--model", s, "--format", "gguf", "--out", path("dangling.gguf"), "--force"],
                          ["symbolic link", "does not exist"])
    }

    /// An in-place edit through a symbolic link appends to the target's log; the link stays a link.
    func testEditThroughASymlinkWritesTheTarget() throws {
        let s = try tinyStore(), link = path("link.h5"), corpus = path("c.txt")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "S.h5")
        try String(repeating: "the cat sat on the mat. a dog ran to the abc. ", count: 40).write(toFile: corpus, atomically: true, encoding: .utf8)
        let r = try scalpel(["edit", "--model", link, "--layer", "0", "--corpus", corpus, "--steps", "2", try writeRequest()])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(X.isSymlink(link), "the link was replaced by a file")
        XCTAssertEqual(try EditLog.entries(path: s).map(\.id), ["e0001"])
    }

    // MARK: A broken log is reported

    func testLogReportsADeletedEntryGroup() throws {
        for (edits, victim) in [(1, "e0001"), (2, "e0002"), (2, "e0001")] {
            let s = try tinyStore("log\(edits)\(victim).h5", edits: edits)
            // The log lives in the sidecar `NAME.edits.h5` when the store has one, else inside the store.
            let side = EditLogSchema.sidecarPath(forStore: s)
            let logFile = FileManager.default.fileExists(atPath: side) ? side : s
            try HDF5File.updateAtomically(at: logFile) { try $0.root.group("edits").delete(victim) }
            try expectRefusal(["log", "--model", s], ["does not verify", "log_sha256"])
            XCTAssertFalse(try scalpel(["log", "--model", s]).stdout.contains("no edits"))
            let j = try scalpel(["log", "--model", s, "--json"])
            XCTAssertNotEqual(j.status, 0)
            let o = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any]
            XCTAssertEqual(o?["verifies"] as? Bool, false)
        }
        let intact = try tinyStore("intact.h5", edits: 1)
        let r = try scalpel(["log", "--model", intact])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("1 edit"), r.stdout)
    }
}
