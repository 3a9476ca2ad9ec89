import Foundation
import XCTest
import HDF5Store

final class HDF5ErrorTests: HDF5TestCase {

    func testOpeningMissingOrInvalidFiles() throws {
        let missing = tempPath("missing.h5")
        assertThrows(.cannotOpen(path: missing)) { try HDF5File(openingForReading: missing) }
        assertThrows(.cannotOpen(path: missing)) { try HDF5File(openingForWriting: missing) }

        let text = tempPath("not-hdf5.h5")
        try "just text\n".write(toFile: text, atomically: false, encoding: .utf8)
        assertThrows(.cannotOpen(path: text)) { try HDF5File(openingForReading: text) }

        let noDir = tempPath("no/such/dir/x.h5")
        assertThrows(.cannotCreate(path: noDir)) { try HDF5File(creating: noDir) }

        let existing = tempPath("existing.h5")
        _ = try HDF5File(creating: existing)
        assertThrows(.cannotCreate(path: existing)) { try HDF5File(creating: existing, truncate: false) }
    }

    func testMissingObjects() throws {
        let path = tempPath("missing-objects.h5")
        let file = try HDF5File(creating: path)
        try file.root.write([Float(1), 2, 3, 4, 5, 6], shape: [2, 3], to: "a/w")
        assertThrows(.notFound(path: path, object: "/nope")) { try file.root.read("nope", as: Float.self) }
        assertThrows(.notFound(path: path, object: "/x/y/z")) { try file.root.datasetShape("x/y/z") }
        assertThrows(.notFound(path: path, object: "/a/nope")) { try file.root.group("a").readStrings("nope") }
        assertThrows(.notFound(path: path, object: "/b")) { try file.root.group("b") }
        assertThrows(.notFound(path: path, object: "/a/w/deeper")) { try file.root.read("a/w/deeper", as: Float.self) }
    }

    func testTypeAndShapeMismatches() throws {
        let path = tempPath("mismatch.h5")
        let file = try HDF5File(creating: path)
        try file.root.write([Float(1), 2, 3, 4, 5, 6], shape: [2, 3], to: "w")
        try file.root.write([Double(1)], shape: [1], to: "d")

        assertThrows(.typeMismatch(object: "/w", expected: "int32", found: "float32")) {
            try file.root.read("w", as: Int32.self)
        }
        assertThrows(.typeMismatch(object: "/d", expected: "float32", found: "float64")) {
            try file.root.read("d", as: Float.self)
        }
        assertThrows(.typeMismatch(object: "/w", expected: "string", found: "float32")) {
            try file.root.readStrings("w")
        }
        assertThrows(.shapeMismatch(object: "/w", expected: [3, 2], found: [2, 3])) {
            try file.root.read("w", as: Float.self, expectedShape: [3, 2])
        }
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: 6)
        defer { buffer.deallocate() }
        assertThrows(.shapeMismatch(object: "/w", expected: [6], found: [2, 3])) {
            try file.root.read(batch: [HDF5ReadRequest(name: "w", buffer: buffer, expectedShape: [6])])
        }
        assertThrows(.shapeMismatch(object: "/v", expected: [2, 2], found: [3])) {
            try file.root.write([Float(1), 2, 3], shape: [2, 2], to: "v")
        }
        XCTAssertFalse(file.root.exists("v"), "a rejected write creates nothing")
        assertThrows(.typeMismatch(object: "/w", expected: "float64", found: "float32")) {
            try file.root.dataset("w").write([Double](repeating: 0, count: 6))
        }
    }

    func testReadOnlyFileRejectsWrites() throws {
        let path = tempPath("ro.h5")
        try HDF5File(creating: path).root.write([Int64(1)], shape: [1], to: "x")
        let file = try HDF5File(openingForReading: path)
        XCTAssertFalse(file.isWritable)
        assertThrows(.invalidArgument(object: "/y", reason: "file was opened read-only")) {
            try file.root.write([Int64(1)], shape: [1], to: "y")
        }
        assertThrows(.invalidArgument(object: "/t", reason: "file was opened read-only")) {
            try file.root.writeStrings(["a"], to: "t")
        }
        assertThrows(.callFailed(function: "H5Gcreate2", object: "/g")) { try file.root.createGroup("g") }
        assertThrows(.callFailed(function: "H5Ldelete", object: "/x")) { try file.root.delete("x") }
    }

    func testDescriptionsAreSingleLinesWithContext() {
        let cases: [(HDF5Error, String)] = [
            (.notFound(path: "m.h5", object: "/layers/0/w"),
             "HDF5: '/layers/0/w' not found in 'm.h5' (hint: list members with memberNames() or datasetPaths())"),
            (.typeMismatch(object: "/w", expected: "float32", found: "float64"),
             "HDF5: '/w' holds float64, expected float32"),
            (.shapeMismatch(object: "/w", expected: [576], found: [576, 1]),
             "HDF5: '/w' has shape [576, 1], expected [576]"),
            (.callFailed(function: "H5Dread", object: "/w"), "HDF5: H5Dread failed on '/w'"),
        ]
        for (error, text) in cases { XCTAssertEqual(error.description, text) }
        let all: [HDF5Error] = [
            .cannotOpen(path: "a"), .cannotCreate(path: "a"), .alreadyExists(path: "a", object: "/b"),
            .invalidArgument(object: "/x", reason: "r"), .fileClosed(path: "a"),
            .ioFailed(path: "a", operation: "rename", code: ENOENT),
        ]
        for error in all {
            XCTAssertFalse(error.description.contains("\n"))
            XCTAssertTrue(error.description.contains("'a'") || error.description.contains("'/x'"), error.description)
        }
        XCTAssertTrue(HDF5Error.ioFailed(path: "a", operation: "rename", code: ENOENT).description
            .contains("No such file or directory"))
    }

    /// HDF5 normally prints its error stack to stderr; the wrapper must keep it quiet.
    func testLibraryPrintsNothingOnErrors() throws {
        let path = tempPath("quiet.h5")
        let captured = try captureStandardError {
            _ = try? HDF5File(openingForReading: tempPath("missing.h5"))
            let file = try? HDF5File(creating: path)
            _ = try? file?.root.read("missing", as: Float.self)
            _ = try? file?.root.group("missing/deeper")
            _ = try? file?.root.delete("nothing")
        }
        XCTAssertEqual(captured, "", "HDF5 printed to stderr")
    }

    private func captureStandardError(_ body: () throws -> Void) throws -> String {
        fflush(stderr)
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let saved = dup(STDERR_FILENO)
        dup2(fds[1], STDERR_FILENO)
        close(fds[1])
        defer {
            fflush(stderr)
            dup2(saved, STDERR_FILENO)
            close(saved)
        }
        try body()
        fflush(stderr)
        dup2(saved, STDERR_FILENO)
        _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        close(fds[0])
        return String(decoding: bytes, as: UTF8.self)
    }
}
