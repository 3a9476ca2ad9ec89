import Foundation
import XCTest
import GGUF
import Llama
@testable import Editing

/// A `scalpel` process killed (SIGKILL) at random moments during `export`, `stats` or `edit` leaves the previous
/// state readable and correct, or the new one — never a partial file. (Revert/reapply: `EditLogTests`.)
final class CrashSafetyTests: XCTestCase {
    typealias F = EditLogFixtures

    func binary() throws -> String { try F.scalpelBinary() }

    /// Runs the binary; kills it after `killAfter` seconds when given (`EditLogFixtures.runScalpel`).
    func run(_ args: [String], killAfter: Double? = nil) throws -> (seconds: Double, killed: Bool, status: Int32, stderr: String) {
        try F.runScalpel(try binary(), args, killAfter: killAfter)
    }

    /// The last round of `killLoop`: when the kill was sent (fraction of the uninterrupted run's time), and whether
    /// it hit the running process.
    var lastRound: (at: Double, killed: Bool)?

    /// Kills `args` at random points `rounds` times (uniformly over 1.2 times the uninterrupted run's time); after
    /// each round `check` must accept the files.
    func killLoop(_ args: [String], rounds: Int, check: () throws -> Void) throws -> Int {
        let full = try run(args)
        XCTAssertEqual(full.status, 0, "uninterrupted run of \(args) failed:\n\(full.stderr)")
        lastRound = nil
        try check()
        var rng = SeededRandom(seed: 11)
        var killed = 0
        for _ in 0..<rounds {
            let at = rng.uniform() * 1.2
            let r = try run(args, killAfter: at * full.seconds)
            if r.killed { killed += 1 }
            lastRound = (at, r.killed)
            try check()
        }
        return killed
    }

    func testKilledExportLeavesNoPartialGGUF() throws {
        let dir = try F.tempDir(self), store = dir + "/m.h5", out = dir + "/m.gguf"
        try F.makeStore(store, config: F.medium)
        let expected = try ModelFile.open(store).config.layers
        let killed = try killLoop(["export", "--model", store, "--format", "gguf", "--out", out, "--force"], rounds: 10) {
            // The output is the complete previous export (never a truncated one).
            let f = try GGUFFile(path: out)
            XCTAssertEqual(f["llama.block_count"]?.int, expected)
            XCTAssertEqual(f.tensors.count, LlamaParameter.all(F.medium).count)
        }
        XCTAssertGreaterThan(killed, 0, "no run was interrupted; the test proved nothing")
    }

    func testKilledStatsLeavesPreviousOrNewStatistics() throws {
        let dir = try F.tempDir(self), store = dir + "/m.h5", stats = dir + "/m.stats.h5", corpus = dir + "/c.txt"
        try F.makeStore(store, config: F.medium)
        let text = (0..<150).map { i in ["the cat sat", "a dog ran", "it is what it is", "one two three"][i % 4] }
            .joined(separator: ". ")
        try text.write(toFile: corpus, atomically: true, encoding: .utf8)
        let killed = try killLoop(["stats", "--model", store, "--layer", "1", "--corpus", corpus, "--out", stats], rounds: 6) {
            let s = try StatsStore.load(path: stats, layer: 1, modelSHA256: String(repeating: "5e", count: 32))
            XCTAssertGreaterThan(s.count, 0)
        }
        XCTAssertGreaterThan(killed, 0, "no run was interrupted; the test proved nothing")
    }

    /// Runs the binary and kills it `delay` seconds after its first temporary file appears beside `store` (i.e.
    /// during its write transaction). Returns whether it was killed while that file existed.
    func runKilledDuringWrite(_ args: [String], store: String, delay: Double) throws -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try binary())
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let pid = String(p.processIdentifier)
        func writing() -> Bool { EditLog.temporaries(besides: store, staleOnly: false).contains { $0.contains(".tmp-\(pid)-") } }
        while p.isRunning && !writing() { usleep(200) }
        var killed = false
        if p.isRunning {
            Thread.sleep(forTimeInterval: delay)
            if writing() { kill(p.processIdentifier, SIGKILL); killed = true }
        }
        p.waitUntilExit()
        return killed && p.terminationReason == .uncaughtSignal
    }

    /// `scalpel edit` killed at random moments (while it loads, computes v*, evaluates, or writes the new log), then
    /// killed inside its write transaction: the store always opens and passes the structural audit, and
    /// its log is the previous one, unchanged, or the previous one plus one complete entry for the request.
    func testKilledEditLeavesThePreviousLogOrOneMoreCompleteEntry() throws {
        let dir = try F.tempDir(self), store = dir + "/m.h5", stats = dir + "/m.stats.h5"
        let corpus = dir + "/c.txt", request = dir + "/request.json"
        try F.makeStore(store, config: F.medium)
        // Random lower-case words (characters of the synthetic vocabulary): ~8700 tokens, well over the key dimension
        // F = 2048; with fewer, C = E[kkᵀ] is singular and the edit stops with statisticsTooFewTokens.
        var rng = SeededRandom(seed: 5)
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        let words = (0..<1600).map { _ in String((0..<(2 + Int(rng.uniform() * 6))).map { _ in letters[Int(rng.uniform() * 26) % 26] }) }
        let json = #"{"subject": "the cat", "prompt": "{} sat on the", "target_new": "rug", "target_true": "mat", "#
            + #""paraphrases": ["where is the cat, it sat on the"], "#
            + #""neighborhood": [{"prompt": "a dog sat on the", "answer": "mat"}]}"#
        try json.write(toFile: request, atomically: true, encoding: .utf8)
        let args = ["edit", "--model", store, "--layer", "1", "--stats", stats, "--steps", "8", request]

        // Statistics over fewer tokens than F (here a few hundred) cannot be inverted: the edit stops before it
        // optimizes, says why, and records nothing.
        try String(words.prefix(60).joined(separator: " ")).write(toFile: corpus, atomically: true, encoding: .utf8)
        XCTAssertEqual(try run(["stats", "--model", store, "--layer", "1", "--corpus", corpus, "--out", stats]).status, 0)
        let few = try run(args)
        XCTAssertEqual(few.status, 1)
        XCTAssertTrue(few.stderr.contains("fewer than the key dimension 2048"), few.stderr)
        XCTAssertTrue(try EditLog.read(path: store).isEmpty)

        try words.joined(separator: " ").write(toFile: corpus, atomically: true, encoding: .utf8)
        let statsRun = try run(["stats", "--model", store, "--layer", "1", "--corpus", corpus, "--out", stats])
        XCTAssertEqual(statsRun.status, 0, statsRun.stderr)

        var previous = try EditLog.read(path: store)
        var outcomes: [String: Int] = [:]
        func check(_ round: String) throws {
            let m = try ModelFile.open(store)
            let report = try EditAuditor.audit(path: store, options: AuditOptions(checkBehaviour: false))
            XCTAssertTrue(report.passed, round + ": " + F.problems(report))
            let now = try EditLog.read(path: store)
            let old = previous.records.map { [$0.groupName, $0.storedSHA256 ?? ""] }
            let new = now.records.map { [$0.groupName, $0.storedSHA256 ?? ""] }
            XCTAssertEqual(Array(new.prefix(old.count)), old, round + ": an existing entry changed")
            XCTAssertTrue(new.count == old.count || new.count == old.count + 1, round + ": \(old.count) → \(new.count) entries")
            if new.count == old.count + 1 {
                let e = try XCTUnwrap(try EditLog.entries(path: store).last)
                XCTAssertEqual(e.subject, "the cat", round)
                XCTAssertEqual(e.activeBefore, previous.activeIDs, round)
                XCTAssertEqual(m.appliedEdits, previous.activeIDs + [e.id], round)
                XCTAssertEqual(ModelStore.weightSHA256(m.model.weights, .wDown(1)), e.weightSHA256After, round)
            } else {
                XCTAssertEqual(m.appliedEdits, previous.activeIDs, round)
            }
            let midWrite = !EditLog.temporaries(besides: store).isEmpty
            outcomes["\(round), \(new.count == old.count ? "unchanged" : "appended")\(midWrite ? ", temporary left" : "")", default: 0] += 1
            previous = now
        }

        // At random moments of the whole run.
        let killed = try killLoop(args, rounds: 8) { try check(lastRound.map { $0.killed ? "killed" : "finished" } ?? "uninterrupted") }
        XCTAssertGreaterThan(killed, 0, "no run was interrupted; the test proved nothing")
        // Inside the write transaction (the new sidecar log written to a temporary file, fsynced, renamed: a few
        // milliseconds, since the store itself is no longer copied).
        var killedWriting = 0
        for _ in 0..<8 {
            let k = try runKilledDuringWrite(args, store: store, delay: rng.uniform() * 0.003)
            if k { killedWriting += 1 }
            try check(k ? "killed writing" : "finished")
        }
        print("edit crash test: \(outcomes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; "))")
        XCTAssertGreaterThan(killedWriting, 0, "no run was killed inside its write transaction")
        XCTAssertGreaterThan(outcomes.filter { $0.key.hasPrefix("killed") && $0.key.contains("unchanged") }.count, 0)
        // The next edit removes the temporaries of killed processes.
        XCTAssertEqual(try run(args).status, 0)
        XCTAssertEqual(EditLog.temporaries(besides: store, staleOnly: false), [])
        try check("uninterrupted")
    }
}
