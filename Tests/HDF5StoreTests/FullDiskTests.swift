import Foundation
import XCTest
import HDF5Store

/// A small tmpfs mounted for one test (skipped where mounting is not possible), unmounted in teardown.
enum SmallDisk {
    static func mount(_ test: XCTestCase, megabytes: Int) throws -> String {
        let dir = NSTemporaryDirectory() + "scalpel-fulldisk-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/mount")
        p.arguments = ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", dir]
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        do { try p.run() } catch {
            try? FileManager.default.removeItem(atPath: dir)
            throw XCTSkip("cannot run mount: \(error)")
        }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            try? FileManager.default.removeItem(atPath: dir)
            throw XCTSkip("cannot mount a tmpfs here (not root, or no permission): full-disk behaviour untested")
        }
        test.addTeardownBlock {
            let u = Process()
            u.executableURL = URL(fileURLWithPath: "/bin/umount")
            u.arguments = [dir]
            try? u.run()
            u.waitUntilExit()
            try? FileManager.default.removeItem(atPath: dir)
        }
        return dir
    }

    /// Fills `dir`'s file system with a filler file until about `leave` bytes are free.
    static func fill(_ dir: String, leaving leave: Int) throws {
        var st = statvfs()
        guard statvfs(dir, &st) == 0 else { throw HDF5Error.ioFailed(path: dir, operation: "statvfs", code: errno) }
        let free = Int(st.f_bavail) * Int(st.f_frsize)
        let size = max(0, free - leave)
        FileManager.default.createFile(atPath: dir + "/filler", contents: Data(count: size))
    }
}

/// Writes that run out of space: one typed error, the temporary removed, the original intact, no crash — and the
/// process can go on using HDF5 afterwards (issue 11, part 4).
final class FullDiskTests: HDF5TestCase {
    private func noise(_ n: Int) -> [Float] {
        var x: UInt32 = 12345
        return (0..<n).map { _ in x = x &* 1664525 &+ 1013904223; return Float(bitPattern: (x >> 9) | 0x3f80_0000) }
    }

    func testHDF5WriteOnAFullDiskFailsCleanlyAndKeepsTheOriginal() throws {
        let disk = try SmallDisk.mount(self, megabytes: 2)
        let path = disk + "/data.h5"
        try HDF5File.createAtomically(at: path) { try $0.root.write([1, 2, 3] as [Float], shape: [3], to: "x") }
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        for chunked in [false, true] {
            XCTAssertThrowsError(try HDF5File.createAtomically(at: path) { f in
                try f.root.write(self.noise(1 << 20), shape: [1 << 20], to: "big",   // 4 MB on a 2 MB disk
                                 options: HDF5WriteOptions(compression: chunked ? .deflate(level: 1) : .none, chunked: chunked))
            }) { e in
                XCTAssertEqual(e as? HDF5Error, .diskFull(path: path), "\(e)")
                XCTAssertFalse("\(e)".contains("\n"))
            }
            XCTAssertEqual(AtomicFile.temporaries(besides: path, staleOnly: false), [], "temporary file left")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        }
        // A copy-then-modify update that does not fit either.
        try HDF5File.createAtomically(at: path) { try $0.root.write(self.noise(300_000), shape: [300_000], to: "x") }
        let big = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try HDF5File.updateAtomically(at: path) { f in
            try f.root.write(self.noise(300_000), shape: [300_000], to: "y")
        }) { e in XCTAssertEqual(e as? HDF5Error, .diskFull(path: path), "\(e)") }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), big)
        XCTAssertEqual(AtomicFile.temporaries(besides: path, staleOnly: false), [])
        // HDF5 still works in this process.
        let other = tempPath("after.h5")
        try HDF5File.createAtomically(at: other) { try $0.root.write([4] as [Float], shape: [1], to: "z") }
        XCTAssertEqual(try HDF5File(openingForReading: other).root.dataset("z").read(as: Float.self), [4])
    }
}
