import Foundation
import XCTest
import HDF5Store
import Llama
@testable import Editing

/// `scalpel` commands on a full disk (a small tmpfs; skipped where one cannot be mounted): one error line, exit 1, no
/// signal, no temporary left, the previous files intact (issue 11, part 4).
final class FullDiskCLITests: XCTestCase {
    typealias F = EditLogFixtures

    func mountSmallDisk(megabytes: Int) throws -> String {
        let dir = NSTemporaryDirectory() + "scalpel-fulldisk-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/mount")
        p.arguments = ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", dir]
        p.standardError = FileHandle.nullDevice
        try? p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            try? FileManager.default.removeItem(atPath: dir)
            throw XCTSkip("cannot mount a tmpfs here (not root, or no permission): full-disk behaviour untested")
        }
        addTeardownBlock {
            let u = Process()
            u.executableURL = URL(fileURLWithPath: "/bin/umount")
            u.arguments = [dir]
            try? u.run()
            u.waitUntilExit()
            try? FileManager.default.removeItem(atPath: dir)
        }
        return dir
    }

    /// Leaves about `bytes` free on the file system of `dir`.
    func fill(_ dir: String, leaving bytes: Int) {
        var st = statvfs()
        _ = statvfs(dir, &st)
        let free = Int(st.f_bavail) * Int(st.f_frsize)
        FileManager.default.createFile(atPath: dir + "/filler", contents: Data(count: max(0, free - bytes)))
    }

    /// Runs a command expected to hit the full disk: exit 1 with one `Error:` line naming the full disk.
    func expectDiskFull(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try F.runScalpel(try F.scalpelBinary(), args)
        XCTAssertEqual(r.status, 1, "\(args[0]): \(r.stderr)", file: file, line: line)
        let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        XCTAssertEqual(errors.count, 1, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.lowercased().contains("no space left"), r.stderr, file: file, line: line)
        XCTAssertFalse(r.stderr.contains("NSCocoaErrorDomain") || r.stderr.contains("Backtrac"), r.stderr, file: file, line: line)
    }

    func leftovers(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") || $0.hasSuffix(".lock") }
    }

    func testExportImportAndStatsOnAFullDisk() throws {
        let dir = try F.tempDir(self), store = dir + "/m.h5", gguf = dir + "/m.gguf", corpus = dir + "/c.txt"
        try F.makeStore(store, config: F.medium)   // 14 MB
        let e = try F.runScalpel(try F.scalpelBinary(), ["export", "--model", store, "--format", "gguf", "--out", gguf])
        XCTAssertEqual(e.status, 0, e.stderr)
        try String(repeating: "the cat sat on the mat. ", count: 40).write(toFile: corpus, atomically: true, encoding: .utf8)
        let disk = try mountSmallDisk(megabytes: 4)
        try expectDiskFull(["export", "--model", store, "--format", "gguf", "--out", disk + "/m.gguf"])
        try expectDiskFull(["import", gguf, "--out", disk + "/m.h5"])
        try expectDiskFull(["stats", "--model", store, "--layer", "1", "--corpus", corpus, "--out", disk + "/m.stats.h5"])
        XCTAssertEqual(try leftovers(disk), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: disk), [])
    }

    /// `edit --out` (the copy does not fit) and an in-place edit (the store fits, the new log does not).
    func testEditOnAFullDiskKeepsTheStoreAndItsLog() throws {
        let dir = try F.tempDir(self), stats = dir + "/m.stats.h5", corpus = dir + "/c.txt", request = dir + "/r.json"
        let disk = try mountSmallDisk(megabytes: 1)
        let store = disk + "/m.h5"
        try F.makeStore(store)
        try F.appendSynthetic(store, layer: 1, seed: 1)
        var rng = SeededRandom(seed: 3)
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        try (0..<300).map { _ in String((0..<4).map { _ in letters[Int(rng.uniform() * 26) % 26] }) }.joined(separator: " ")
            .write(toFile: corpus, atomically: true, encoding: .utf8)
        try #"{"subject": "the cat", "prompt": "{} sat on the", "target_new": "rug", "target_true": "mat"}"#
            .write(toFile: request, atomically: true, encoding: .utf8)
        let s = try F.runScalpel(try F.scalpelBinary(), ["stats", "--model", store, "--layer", "1", "--corpus", corpus, "--out", stats])
        XCTAssertEqual(s.status, 0, s.stderr)
        let logBefore = try EditLog.read(path: store)
        let storeBefore = try Data(contentsOf: URL(fileURLWithPath: store))
        fill(disk, leaving: 8 * 1024)
        let edit = ["edit", "--model", store, "--layer", "1", "--stats", stats, "--steps", "2", request]
        try expectDiskFull(edit + ["--out", disk + "/copy.h5"])
        try expectDiskFull(edit)
        XCTAssertEqual(try EditLog.read(path: store), logBefore)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: store)), storeBefore)
        XCTAssertEqual(try leftovers(disk), [])
        XCTAssertTrue(try EditAuditor.audit(path: store, options: AuditOptions(checkBehaviour: false)).passed)
        // With room again, the same edit succeeds.
        try FileManager.default.removeItem(atPath: disk + "/filler")
        let ok = try F.runScalpel(try F.scalpelBinary(), edit)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(try EditLog.read(path: store).records.count, logBefore.records.count + 1)
    }
}
