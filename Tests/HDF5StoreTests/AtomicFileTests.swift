import Foundation
import XCTest
import HDF5Store

final class AtomicFileTests: HDF5TestCase {
    struct Boom: Error {}

    private func contents(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }
    private func leftovers() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: tempDir).filter { $0.contains(".tmp-") }
    }

    func testWriteCreatesAndReplaces() throws {
        let path = tempPath("plain.txt")
        try AtomicFile.write(to: path) { temp in
            XCTAssertTrue(temp.hasPrefix(self.tempDir + "/.plain.txt.tmp-\(getpid())-"), temp)
            try "first".write(toFile: temp, atomically: false, encoding: .utf8)
        }
        XCTAssertEqual(try contents(path), "first")
        try AtomicFile.write(to: path) { try "second".write(toFile: $0, atomically: false, encoding: .utf8) }
        XCTAssertEqual(try contents(path), "second")
        XCTAssertEqual(try leftovers(), [])
    }

    func testThrowingBodyLeavesOriginalUntouched() throws {
        let path = tempPath("keep.txt")
        try "original".write(toFile: path, atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try AtomicFile.write(to: path) { temp in
            try "half-writ".write(toFile: temp, atomically: false, encoding: .utf8)
            throw Boom()
        }) { XCTAssertTrue($0 is Boom) }
        XCTAssertEqual(try contents(path), "original")
        XCTAssertEqual(try leftovers(), [], "temporary file removed")

        XCTAssertThrowsError(try AtomicFile.update(path: path) { temp in
            try "changed".write(toFile: temp, atomically: false, encoding: .utf8)
            throw Boom()
        })
        XCTAssertEqual(try contents(path), "original")
        XCTAssertEqual(try leftovers(), [])
    }

    func testBodyThatCreatesNothingFails() throws {
        let path = tempPath("nothing.txt")
        XCTAssertThrowsError(try AtomicFile.write(to: path) { _ in })
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    func testUpdateMissingFileFails() {
        let path = tempPath("absent.h5")
        assertThrows(.ioFailed(path: path, operation: "open", code: ENOENT)) {
            try AtomicFile.update(path: path) { _ in }
        }
    }

    func testUpdateKeepsPermissions() throws {
        let path = tempPath("mode.txt")
        try "x".write(toFile: path, atomically: false, encoding: .utf8)
        XCTAssertEqual(chmod(path, 0o640), 0)
        try AtomicFile.update(path: path) { temp in
            XCTAssertEqual(try self.contents(temp), "x", "the copy starts with the original bytes")
            try "y".write(toFile: temp, atomically: false, encoding: .utf8)
        }
        XCTAssertEqual(try contents(path), "y")
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o640)
    }

    func testHDF5AtomicCreateAndUpdate() throws {
        let path = tempPath("store.h5")
        try HDF5File.createAtomically(at: path) { file in
            try file.root.write([Float(1), 2, 3], shape: [3], to: "w")
            try file.root.setAttribute("version", 1)
        }
        // A failed update leaves the store exactly as it was.
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try HDF5File.updateAtomically(at: path) { file in
            try file.root.write([Float(9), 9, 9], shape: [3], to: "w", options: HDF5WriteOptions(overwrite: true))
            try file.root.setAttribute("version", 2)
            throw Boom()
        })
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
        XCTAssertEqual(try leftovers(), [])

        // A successful update is visible after the rename; handles leaked by the body are closed.
        var leaked: HDF5Group?
        try HDF5File.updateAtomically(at: path) { file in
            try file.root.write([Float(4), 5, 6], shape: [3], to: "w", options: HDF5WriteOptions(overwrite: true))
            try file.root.setAttribute("version", 2)
            leaked = try file.root.createGroup("extra")
        }
        assertThrows(.fileClosed(path: leaked!.file.path)) { try leaked!.memberNames() }
        let file = try HDF5File(openingForReading: path)
        XCTAssertEqual(try file.root.read("w", as: Float.self).values, [4, 5, 6])
        XCTAssertEqual(try file.root.intAttribute("version"), 2)
        XCTAssertEqual(try file.root.memberNames(), ["extra", "w"])

        // A failed create leaves no file behind.
        let fresh = tempPath("fresh.h5")
        XCTAssertThrowsError(try HDF5File.createAtomically(at: fresh) { _ in throw Boom() })
        XCTAssertFalse(FileManager.default.fileExists(atPath: fresh))
        XCTAssertEqual(try leftovers(), [])
    }
}
