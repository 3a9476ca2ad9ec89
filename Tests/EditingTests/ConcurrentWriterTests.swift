import Foundation
import XCTest
import HDF5Store
import Llama
@testable import Editing

/// Several `scalpel` processes writing one store at once: every command that reports success is in the log, nothing
/// is lost, and a writer that cannot get the lock fails with one line (issue 11, part 1).
final class ConcurrentWriterTests: XCTestCase {
    typealias F = EditLogFixtures

    /// Starts `binary args` with stdout and stderr captured to files.
    final class Run {
        let process = Process()
        let out = NSTemporaryDirectory() + "scalpel-conc-\(UUID().uuidString).out"
        let err = NSTemporaryDirectory() + "scalpel-conc-\(UUID().uuidString).err"
        let args: [String]
        init(_ binary: String, _ args: [String]) throws {
            self.args = args
            for f in [out, err] { _ = FileManager.default.createFile(atPath: f, contents: nil) }
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = args
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
            try process.run()
        }
        func wait() -> (status: Int32, stdout: String, stderr: String) {
            process.waitUntilExit()
            defer { try? FileManager.default.removeItem(atPath: out); try? FileManager.default.removeItem(atPath: err) }
            let read = { (p: String) in String(decoding: FileManager.default.contents(atPath: p) ?? Data(), as: UTF8.self) }
            return (process.terminationStatus, read(out), read(err))
        }
    }

    /// A tiny store with statistics for layer 1 and one edit (e0001), plus request files r1…rN.
    func prepare(requests n: Int) throws -> (dir: String, store: String, stats: String, requests: [String]) {
        let dir = try F.tempDir(self), store = dir + "/m.h5", stats = dir + "/m.stats.h5", corpus = dir + "/c.txt"
        try F.makeStore(store)
        var rng = SeededRandom(seed: 3)
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        let words = (0..<300).map { _ in String((0..<(2 + Int(rng.uniform() * 5))).map { _ in letters[Int(rng.uniform() * 26) % 26] }) }
        try words.joined(separator: " ").write(toFile: corpus, atomically: true, encoding: .utf8)
        let s = try F.runScalpel(try F.scalpelBinary(), ["stats", "--model", store, "--layer", "1", "--corpus", corpus, "--out", stats])
        XCTAssertEqual(s.status, 0, s.stderr)
        let requests = try (0...n).map { i -> String in
            let path = dir + "/r\(i).json"
            try #"{"subject": "the cat \#(i)", "prompt": "{} sat on the", "target_new": "rug", "target_true": "mat"}"#
                .write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let first = try F.runScalpel(try F.scalpelBinary(), edit(store, stats, requests[0]))
        XCTAssertEqual(first.status, 0, first.stderr)
        return (dir, store, stats, Array(requests.dropFirst()))
    }

    func edit(_ store: String, _ stats: String, _ request: String, extra: [String] = []) -> [String] {
        ["edit", "--model", store, "--layer", "1", "--stats", stats, "--steps", "3", request] + extra
    }

    /// 6 edits and 2 reverts of e0001 started together: the log ends with e0001 plus one entry per edit that exited 0
    /// (each with its own subject and id), e0001 is reverted when a revert exited 0, and the audit passes.
    func testConcurrentEditsAndRevertsLoseNothing() throws {
        let binary = try F.scalpelBinary()
        let (_, store, stats, requests) = try prepare(requests: 6)
        var runs: [Run] = []
        for (i, r) in requests.enumerated() {
            runs.append(try Run(binary, edit(store, stats, r)))
            if i == 1 || i == 4 { runs.append(try Run(binary, ["revert", "e0001", "--model", store])) }
        }
        let results = runs.map { ($0.args, $0.wait()) }
        var editedSubjects: [String] = [], loggedIDs: [String] = [], revertSucceeded = false
        for (args, r) in results {
            XCTAssertTrue(r.status == 0 || r.status == 1, "\(args): status \(r.status)\n\(r.stderr)")
            if r.status == 1 {
                // A refusal is one clean line (no waiting here: every writer gets the lock within --wait-lock).
                XCTFail("\(args) failed: \(r.stderr)")
                continue
            }
            if args[0] == "edit" {
                let subject = try String(contentsOfFile: args[9], encoding: .utf8).components(separatedBy: "\"")[3]
                editedSubjects.append(subject)
                let line = try XCTUnwrap(r.stdout.components(separatedBy: "\n").first { $0.contains("logged as") }, r.stdout)
                loggedIDs.append(String(line.split(separator: " ")[2]))
            } else {
                revertSucceeded = true
            }
        }
        let log = try EditLog.read(path: store)
        let entries = try EditLog.entries(path: store)
        XCTAssertEqual(log.records.count, 1 + editedSubjects.count, "entries: \(log.records.map(\.groupName))")
        XCTAssertEqual(Set(entries.dropFirst().map(\.subject)), Set(editedSubjects))
        XCTAssertEqual(Set(loggedIDs), Set(entries.dropFirst().map(\.id)), "every reported id is in the log, once")
        XCTAssertEqual(loggedIDs.count, Set(loggedIDs).count, "two commands reported the same id")
        if revertSucceeded { XCTAssertEqual(log.record("e0001")?.status, "reverted") }
        let report = try EditAuditor.audit(path: store, options: AuditOptions(checkBehaviour: false))
        XCTAssertTrue(report.passed, F.problems(report))
        // Each edit was computed on the model the log described when it committed.
        for e in entries.dropFirst() {
            let earlier = entries.prefix { $0.id != e.id }
            XCTAssertTrue(Set(e.activeBefore).isSubset(of: Set(earlier.map(\.id))), "\(e.id) activeBefore \(e.activeBefore)")
        }
        XCTAssertEqual(EditLog.temporaries(besides: store, staleOnly: false), [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: FileLock.resolve(store) + ".lock"), "lock file left")
    }

    /// A writer that cannot get the lock: `--wait-lock 0` fails at once, `--wait-lock 1` says it waits and then
    /// fails; both with one line, exit 1, and the log unchanged.
    func testAWriterThatCannotGetTheLockFailsWithOneLine() throws {
        let binary = try F.scalpelBinary()
        let (_, store, stats, requests) = try prepare(requests: 1)
        let before = try EditLog.read(path: store)
        let held = try EditLog.lock(store, wait: 0)   // "another scalpel process"
        for (args, waits) in [(["revert", "e0001", "--model", store, "--wait-lock", "0"], false),
                              (edit(store, stats, requests[0], extra: ["--wait-lock", "1"]), true)] {
            let t0 = Date()
            let r = try Run(binary, args).wait()
            XCTAssertEqual(r.status, 1, "\(args)")
            let lines = r.stderr.split(separator: "\n").filter { !$0.contains("waiting for the lock") }
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("is being written by another scalpel process"), r.stderr)
            XCTAssertEqual(r.stderr.contains("waiting for the lock on"), waits, r.stderr)
            if waits { XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(t0), 1) }
        }
        XCTAssertEqual(try EditLog.read(path: store), before)
        held.release()
        XCTAssertEqual(try Run(binary, ["revert", "e0001", "--model", store, "--wait-lock", "0"]).wait().status, 0)
    }
}
