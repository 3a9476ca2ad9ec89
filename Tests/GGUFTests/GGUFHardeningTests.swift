import XCTest
@testable import GGUF

/// The reader against hostile files (issue 11 parts 3 and 6): overflowing shapes, duplicated names, bad alignment,
/// huge metadata arrays; and the compact array representation's accessors.
final class GGUFHardeningTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws {
        // Thousands of small files: a RAM file system when there is one (writes to a disk-backed /tmp take ~10 ms).
        let fast = FileManager.default.isWritableFile(atPath: "/dev/shm")
        let base = fast ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory
        dir = base.appendingPathComponent("gguf-hard-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func sample() -> GGUFWriter {
        var w = GGUFWriter()
        w.metadata = [("general.architecture", .string("llama")), ("x.n", .uint32(2))]
        w.addF32("t.a", dims: [3, 2], values: [1, 2, 3, 4, 5, 6])
        w.addF32("t.b", dims: [8], values: [Float](repeating: 0.5, count: 8))
        return w
    }

    func open(_ w: GGUFWriter, _ name: String = "f.gguf") throws -> GGUFFile {
        try w.write(to: path(name))
        return try GGUFFile(path: path(name))
    }

    func expect(_ w: GGUFWriter, _ check: (GGUFError) -> Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        try w.write(to: path("bad.gguf"))
        XCTAssertThrowsError(try GGUFFile(path: path("bad.gguf")), file: file, line: line) { e in
            guard let g = e as? GGUFError, check(g) else { return XCTFail("unexpected \(e)", file: file, line: line) }
            XCTAssertFalse("\(e)".contains("\n"), file: file, line: line)
        }
    }

    func testOverflowingShapeIsRefused() throws {
        for dims in [[1 << 36, 1 << 36], [1 << 32, 1 << 32, 1 << 32], [Int(Int32.max) * 64, 1 << 30]] {
            var w = sample()
            w.tensors[0].dims = dims
            try expect(w) { if case let .invalidMetadata(_, key, problem) = $0 { return key == "t.a" && problem.contains("overflows") }; return false }
        }
    }

    func testTensorPastTheEndIsRefusedWithoutOverflow() throws {
        var w = sample()
        w.tensors[1].dims = [1 << 35]  // 128 GiB of f32 in a tiny file
        try expect(w) { $0 == .tensorOutOfBounds(path: self.path("bad.gguf"), tensor: "t.b") }
    }

    func testDuplicatedTensorNameIsRefused() throws {
        var w = sample()
        w.tensors[1].name = "t.a"
        w.tensors[1].dims = [6]
        try expect(w) { $0 == .duplicateTensor(path: self.path("bad.gguf"), tensor: "t.a") }
    }

    func testDuplicatedMetadataKeyIsRefused() throws {
        var w = sample()
        w.metadata.append(("x.n", .uint32(3)))
        try expect(w) { $0 == .duplicateKey(path: self.path("bad.gguf"), key: "x.n") }
    }

    func testBadAlignmentIsRefused() throws {
        for v: GGUFValue in [.uint32(0), .uint32(3), .uint64(1 << 62), .int32(-32), .string("32")] {
            var w = sample()
            w.metadata.append(("general.alignment", v))
            try expect(w) { if case let .invalidMetadata(_, key, _) = $0 { return key == "general.alignment" }; return false }
        }
        var w = sample()
        w.alignment = 64
        XCTAssertEqual(try open(w).alignment, 64)
    }

    func testMisalignedTensorOffsetIsRefused() throws {
        var bytes = sample().serialize()
        // The second tensor's offset (32) is the last u64 of the tensor table, which ends the header; make it 4.
        let tableEnd = GGUFWriter.header(metadata: sample().metadata,
                                         tensors: sample().tensors.map { ($0.name, $0.dims, $0.type, $0.bytes.count) },
                                         alignment: 32).count
        bytes[tableEnd - 8] = 4
        try Data(bytes).write(to: URL(fileURLWithPath: path("bad.gguf")))
        XCTAssertThrowsError(try GGUFFile(path: path("bad.gguf"))) { e in
            XCTAssertTrue("\(e)".contains("not a multiple of the alignment"), "\(e)")
        }
    }

    func testEmptyFileIsTruncated() throws {
        try Data().write(to: URL(fileURLWithPath: path("empty.gguf")))
        XCTAssertThrowsError(try GGUFFile(path: path("empty.gguf"))) { e in
            guard case .truncated? = e as? GGUFError else { return XCTFail("\(e)") }
        }
    }

    func testZeroSizedTensorReadsAsEmpty() throws {
        var w = sample()
        w.tensors.append(("t.empty", [0, 4], .f32, []))
        let f = try open(w)
        XCTAssertEqual(try f.floats("t.empty"), [])
    }

    /// A 40 MB array costs about its own size (was ~24 bytes per element plus per-string heap storage).
    func testLargeMetadataArrayIsCompact() throws {
        let n = 40_000_000
        var w = sample()
        w.metadata.append(("x.big", .array(.uint8, [])))
        var bytes = w.serialize()
        // Patch the empty array's count to n and insert n bytes after it.
        let key = Array("x.big".utf8)
        let at = (0...(bytes.count - key.count)).first { Array(bytes[$0..<($0 + key.count)]) == key }! + key.count
        let countAt = at + 4 + 4  // value type (array), element type (uint8), then the u64 count
        withUnsafeBytes(of: UInt64(n).littleEndian) { for (k, b) in $0.enumerated() { bytes[countAt + k] = b } }
        bytes.insert(contentsOf: [UInt8](repeating: 9, count: n), at: countAt + 8)
        // The data section moved by n bytes (n is a multiple of 32, so tensors stay aligned).
        try Data(bytes).write(to: URL(fileURLWithPath: path("big.gguf")))
        bytes = []
        let before = currentResident()
        let f = try GGUFFile(path: path("big.gguf"))
        let grew = currentResident() - before
        XCTAssertEqual(f["x.big"]?.count, n)
        XCTAssertEqual(f["x.big"]?.arrayElementType, .uint8)
        XCTAssertEqual(f["x.big"]?.arrayValue?[n - 1], .uint8(9))
        XCTAssertEqual(try f.floats("t.a"), [1, 2, 3, 4, 5, 6])
        XCTAssertLessThan(grew, 100_000_000, "opening a 40 MB array grew the resident size by \(grew / 1_000_000) MB")
    }

    func testArrayAccessorsOnParsedAndBuiltArrays() throws {
        var w = sample()
        let strings = ["a", "β", "", String(repeating: "long token ", count: 5)]
        w.metadata += [("s", .array(.string, strings.map { .string($0) })),
                       ("i", .array(.int32, [.int32(-1), .int32(7)])), ("u", .array(.uint64, [.uint64(UInt64.max)])),
                       ("f", .array(.float32, [.float32(0.5), .float32(-2)])), ("d", .array(.float64, [.float64(1e-3)])),
                       ("n", .array(.array, [.array(.string, [.string("x")]), .array(.int8, [.int8(-3), .int8(4)])])),
                       ("e", .array(.string, []))]
        let f = try open(w)
        XCTAssertEqual(f["s"]?.stringArray, strings)
        XCTAssertEqual(f["s"]?.count, 4)
        XCTAssertNil(f["s"]?.intArray)
        XCTAssertEqual(f["i"]?.intArray, [-1, 7])
        XCTAssertNil(f["i"]?.stringArray, "a typed array of ints is not a string array")
        XCTAssertNil(f["u"]?.intArray, "UInt64.max does not fit Int")
        XCTAssertEqual(f["f"]?.floatArray, [0.5, -2])
        XCTAssertEqual(f["f"]?.doubleArray, [0.5, -2])
        XCTAssertEqual(f["i"]?.floatArray, [-1, 7])
        XCTAssertEqual(f["d"]?.floatArray, [Float(1e-3)])
        XCTAssertEqual(f["n"]?.array?[1].intArray, [-3, 4])
        XCTAssertEqual(f["n"]?.array?[0].stringArray, ["x"])
        XCTAssertEqual(f["e"]?.stringArray, [])
        XCTAssertNil(f["x.n"]?.count)
        // Parsed (encoded) arrays equal the in-memory ones they were written from, and write back identically.
        for (k, v) in w.metadata { XCTAssertEqual(f[k], v, k) }
        var again = GGUFWriter()
        again.metadata = f.metadata
        again.tensors = w.tensors
        XCTAssertEqual(again.serialize(), w.serialize())
        XCTAssertEqual(try GGUFMetadataJSON.decode(try GGUFMetadataJSON.encode(f.metadata)).map(\.value), w.metadata.map(\.value))
    }

    func testDeeplyNestedArrayIsRefused() throws {
        var v: GGUFValue = .array(.uint8, [.uint8(1)])
        for _ in 0..<5 { v = .array(.array, [v]) }
        var w = sample()
        w.metadata.append(("deep", v))
        try expect(w) { if case let .invalidMetadata(_, key, problem) = $0 { return key == "deep" && problem.contains("nested") }; return false }
    }

    /// Random mutations of a small file's header: the parser throws or succeeds, never traps.
    func testFuzzHeaderBytes() throws {
        var w = sample()
        w.metadata.append(("s", .array(.string, [.string("ab"), .string("c")])))
        w.metadata.append(("n", .array(.array, [.array(.uint16, [.uint16(1)])])))
        let base = w.serialize()
        let header = GGUFWriter.header(metadata: w.metadata, tensors: w.tensors.map { ($0.name, $0.dims, $0.type, $0.bytes.count) },
                                       alignment: 32).count
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state }
        var parsed = 0
        let p = path("fuzz.gguf")
        for _ in 0..<4000 {
            var bytes = base
            for _ in 0..<(1 + Int(next() % 4)) {
                let at = Int(next() % UInt64(header))
                switch next() % 3 {
                case 0: bytes[at] = UInt8(truncatingIfNeeded: next())
                case 1: bytes[at] = 0xFF
                default: bytes[at] ^= UInt8(1 << (next() % 8))
                }
            }
            if next() % 5 == 0 { bytes = Array(bytes.prefix(Int(next() % UInt64(bytes.count)))) }
            try Data(bytes).write(to: URL(fileURLWithPath: p))
            do {
                let f = try GGUFFile(path: p)
                for t in f.tensors { _ = try? f.floats(t.name) }
                for (_, v) in f.metadata { _ = v.stringArray; _ = v.intArray; _ = v.floatArray; _ = v.array }
                parsed += 1
            } catch {
                XCTAssertFalse("\(error)".contains("\n"), "\(error)")
            }
        }
        XCTAssertGreaterThan(parsed, 0)
        XCTAssertLessThan(parsed, 4000)
    }

    func currentResident() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = Int(s.split(separator: " ")[1]) else { return 0 }
        return pages * 4096
    }
}
