import Foundation
import XCTest
import GGUF
import Llama
@testable import Editing

/// A `scalpel` process killed (SIGKILL) at random moments during `export` or `stats` leaves the previous state
/// readable and correct, or the new one — never a partial file. (Revert/reapply: `EditLogTests`.)
final class CrashSafetyTests: XCTestCase {
    typealias F = EditLogFixtures

    func binary() throws -> String {
        let candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
                          Bundle.main.bundleURL.deletingLastPathComponent(), Bundle.main.bundleURL]
        for c in candidates {
            let b = c.appendingPathComponent("scalpel").path
            if FileManager.default.isExecutableFile(atPath: b) { return b }
        }
        throw XCTSkip("scalpel binary not found beside the tests")
    }

    /// Runs the binary; kills it after `killAfter` seconds when given. Returns the wall time and whether it was killed.
    func run(_ args: [String], killAfter: Double? = nil) throws -> (seconds: Double, killed: Bool, status: Int32) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try binary())
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        let t0 = Date()
        try p.run()
        var killed = false
        if let killAfter {
            Thread.sleep(forTimeInterval: killAfter)
            if p.isRunning { kill(p.processIdentifier, SIGKILL); killed = true }
        }
        p.waitUntilExit()
        return (Date().timeIntervalSince(t0), killed && p.terminationReason == .uncaughtSignal, p.terminationStatus)
    }

    /// Kills `args` at random points `rounds` times; after each round `check` must accept the files.
    func killLoop(_ args: [String], rounds: Int, check: () throws -> Void) throws -> Int {
        let full = try run(args)
        XCTAssertEqual(full.status, 0, "uninterrupted run of \(args) failed")
        try check()
        var rng = SeededRandom(seed: 11)
        var killed = 0
        for _ in 0..<rounds {
            let r = try run(args, killAfter: rng.uniform() * full.seconds * 1.2)
            if r.killed { killed += 1 }
            try check()
        }
        return killed
    }

    func testKilledExportLeavesNoPartialGGUF() throws {
        let dir = try F.tempDir(self), store = dir + "/m.h5", out = dir + "/m.gguf"
        try F.makeStore(store, config: F.medium)
        let expected = try ModelFile.open(store).config.layers
        let killed = try killLoop(["export", "--model", store, "--format", "gguf", "--out", out], rounds: 10) {
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
}
