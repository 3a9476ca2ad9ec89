import Foundation
import XCTest
import HDF5Store

final class HDF5RoundTripTests: HDF5TestCase {

    func testEveryElementTypeRoundTrips() throws {
        let path = tempPath("types.h5")
        do {
            let file = try HDF5File(creating: path)
            let root = file.root
            try root.write([Float(1.5), -2.25, 3.0e-8, .greatestFiniteMagnitude, -0.0, 7],
                           shape: [2, 3], to: "f32")
            try root.write([Double(1) / 3, -1e300, 2.5], shape: [3], to: "f64")
            try root.write([Int32.min, -1, 0, Int32.max], shape: [2, 2], to: "i32")
            try root.write([Int64.min, 42, Int64.max], shape: [3], to: "i64")
            try root.write([UInt8(0), 127, 128, 255], shape: [1, 4], to: "u8")
        }
        let file = try HDF5File(openingForReading: path)
        let root = file.root

        let f32 = try root.read("f32", as: Float.self)
        XCTAssertEqual(f32.shape, [2, 3])
        XCTAssertEqual(f32.values, [1.5, -2.25, 3.0e-8, .greatestFiniteMagnitude, -0.0, 7])
        XCTAssertEqual(f32.values[4].sign, .minus, "negative zero keeps its sign")

        let f64 = try root.read("f64", as: Double.self)
        XCTAssertEqual(f64.shape, [3])
        XCTAssertEqual(f64.values, [1.0 / 3.0, -1e300, 2.5])

        XCTAssertEqual(try root.read("i32", as: Int32.self).values, [Int32.min, -1, 0, Int32.max])
        XCTAssertEqual(try root.read("i64", as: Int64.self).values, [Int64.min, 42, Int64.max])
        let u8 = try root.read("u8", as: UInt8.self)
        XCTAssertEqual(u8.values, [0, 127, 128, 255])
        XCTAssertEqual(u8.shape, [1, 4])

        XCTAssertEqual(try root.datasetShape("i32"), [2, 2])
        XCTAssertEqual(try root.dataset("f64").elementType, .float64)
        XCTAssertEqual(try root.dataset("u8").storedTypeDescription, "uint8")
    }

    func testScalarAndEmptyShapes() throws {
        let path = tempPath("edge.h5")
        do {
            let file = try HDF5File(creating: path)
            try file.root.write([Float(6.5)], shape: [], to: "scalar")
            try file.root.write([Float](), shape: [0], to: "empty1d")
            try file.root.write([Int64](), shape: [0, 576], to: "empty2d")
            try file.root.write([Double](), shape: [3, 0, 2], to: "empty3d")
        }
        let root = try HDF5File(openingForReading: path).root
        let scalar = try root.read("scalar", as: Float.self)
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(scalar.values, [6.5])
        XCTAssertEqual(try root.dataset("scalar").elementCount, 1)

        let e1 = try root.read("empty1d", as: Float.self)
        XCTAssertEqual(e1.shape, [0])
        XCTAssertEqual(e1.values, [])
        let e2 = try root.read("empty2d", as: Int64.self)
        XCTAssertEqual(e2.shape, [0, 576])
        XCTAssertEqual(e2.values.count, 0)
        XCTAssertEqual(try root.datasetShape("empty3d"), [3, 0, 2])

        // Reading an empty dataset into an empty buffer is fine.
        var none: [Float] = []
        try none.withUnsafeMutableBufferPointer { buf in
            XCTAssertEqual(try root.read("empty1d", into: buf), [0])
        }
    }

    func testScalarShapeRequiresExactlyOneValue() throws {
        let file = try HDF5File(creating: tempPath("scalar-bad.h5"))
        assertThrows(.shapeMismatch(object: "/s", expected: [], found: [2])) {
            try file.root.write([Float(1), 2], shape: [], to: "s")
        }
        assertThrows(.invalidArgument(object: "/neg", reason: "shape [-1, 2] has a negative dimension or overflows")) {
            try file.root.write([Float](), shape: [-1, 2], to: "neg")
        }
    }

    /// Large arrays are chunked and compressed by default; the values survive both the direct
    /// chunk path and HDF5's own filter pipeline, in every combination of writer and reader.
    func testCompressedLargeArraysMatchAcrossCodecPaths() throws {
        let rows = 1000, cols = 300          // 300k floats: several 1 MiB-ish chunks plus an edge chunk
        let quantized = dequantizedLikeWeights(count: rows * cols, seed: 7)
        let normal = randomNormal(count: rows * cols, seed: 8)
        let ramp = (0..<(rows * cols)).map { Float($0 % 1009) * 0.25 - 100 }

        for (writerDirect, readerDirect) in [(true, true), (true, false), (false, true), (false, false)] {
            let path = tempPath("codec-\(writerDirect)-\(readerDirect).h5")
            HDF5Tuning.directChunkIO = writerDirect
            do {
                let file = try HDF5File(creating: path)
                try file.root.write(quantized, shape: [rows, cols], to: "q")
                try file.root.write(normal, shape: [rows, cols], to: "n")
                try file.root.write(ramp, shape: [rows * cols], to: "ramp",
                                    options: HDF5WriteOptions(compression: .deflate(level: 6), shuffle: true,
                                                              targetChunkBytes: 100_000))
            }
            HDF5Tuning.directChunkIO = readerDirect
            let root = try HDF5File(openingForReading: path).root
            XCTAssertEqual(try root.read("q", as: Float.self).values, quantized, "\(writerDirect)/\(readerDirect)")
            XCTAssertEqual(try root.read("n", as: Float.self).values, normal, "\(writerDirect)/\(readerDirect)")
            let r = try root.read("ramp", as: Float.self).values
            XCTAssertEqual(r, ramp)
            XCTAssertEqual(r[1009 + 4], -99.0)          // (1013 % 1009) * 0.25 - 100
            XCTAssertEqual(r[299_999], Float(299_999 % 1009) * 0.25 - 100)
            HDF5Tuning.directChunkIO = true
        }
        // Compression must actually shrink a ramp (values repeat every 1009 elements).
        let size = try FileManager.default.attributesOfItem(atPath: tempPath("codec-true-true.h5"))[.size] as! Int
        XCTAssertLessThan(size, (3 * rows * cols * 4) * 9 / 10)
    }

    func testBothDeflateBackendsAgree() throws {
        let values = randomNormal(count: 200_000, seed: 3)
        for useLibdeflate in [true, false] {
            HDF5Tuning.useLibdeflate = useLibdeflate
            defer { HDF5Tuning.useLibdeflate = true }
            let path = tempPath("backend-\(useLibdeflate).h5")
            try HDF5File(creating: path).root.write(values, shape: [200, 1000], to: "w")
            HDF5Tuning.useLibdeflate = !useLibdeflate     // read with the other backend
            XCTAssertEqual(try HDF5File(openingForReading: path).root.read("w", as: Float.self).values, values)
        }
    }

    func testLayoutOptions() throws {
        let path = tempPath("layout.h5")
        let small = (0..<1000).map { Double($0) }
        let file = try HDF5File(creating: path)
        try file.root.write(small, shape: [10, 100], to: "contiguous")
        try file.root.write(small, shape: [10, 100], to: "chunked-only", options: HDF5WriteOptions(chunked: true))
        try file.root.write(small, shape: [10, 100], to: "forced",
                            options: HDF5WriteOptions(compression: .deflate(level: 9), targetChunkBytes: 1))
        assertThrows(.invalidArgument(object: "/bad", reason: "compression requires a chunked layout")) {
            try file.root.write(small, shape: [1000], to: "bad",
                                options: HDF5WriteOptions(compression: .deflate(level: 1), chunked: false))
        }
        assertThrows(.invalidArgument(object: "/bad", reason: "deflate level 0 is not in 1...9")) {
            try file.root.write(small, shape: [1000], to: "bad", options: HDF5WriteOptions(compression: .deflate(level: 0)))
        }
        for name in ["contiguous", "chunked-only", "forced"] {
            XCTAssertEqual(try file.root.read(name, as: Double.self).values[999], 999.0, name)
        }
        try file.close()
        // h5dump -p shows the storage layout; checked when h5dump exists.
        guard let dump = try runTool("h5dump", ["-p", "-H", path]) else { return }
        XCTAssertTrue(dump.stdout.contains("CONTIGUOUS"), dump.stdout)
        XCTAssertTrue(dump.stdout.contains("CHUNKED ( 1, 100 )"), "one-row chunks for targetChunkBytes: 1")
        XCTAssertTrue(dump.stdout.contains("DEFLATE { LEVEL 9 }"))
    }

    func testReadIntoPreallocatedBufferAndBatch() throws {
        let path = tempPath("into.h5")
        let a = dequantizedLikeWeights(count: 576 * 200, seed: 1)
        let b = (0..<576).map { Float($0) }
        do {
            let file = try HDF5File(creating: path)
            try file.root.write(a, shape: [200, 576], to: "layers/0/w")
            try file.root.write(b, shape: [576], to: "layers/0/norm")
        }
        let root = try HDF5File(openingForReading: path).root
        let bufferA = UnsafeMutableBufferPointer<Float>.allocate(capacity: a.count)
        let bufferB = UnsafeMutableBufferPointer<Float>.allocate(capacity: b.count)
        defer { bufferA.deallocate(); bufferB.deallocate() }

        XCTAssertEqual(try root.read("layers/0/w", into: bufferA, expectedShape: [200, 576]), [200, 576])
        XCTAssertTrue(bufferA.elementsEqual(a))

        bufferA.initialize(repeating: .nan)
        try root.read(batch: [HDF5ReadRequest(name: "layers/0/w", buffer: bufferA),
                              HDF5ReadRequest(name: "layers/0/norm", buffer: bufferB, expectedShape: [576])])
        XCTAssertTrue(bufferA.elementsEqual(a))
        XCTAssertEqual(bufferB[575], 575)

        let wrong = UnsafeMutableBufferPointer<Float>.allocate(capacity: 575)
        defer { wrong.deallocate() }
        assertThrows(.shapeMismatch(object: "/layers/0/norm", expected: [575], found: [576])) {
            try root.read("layers/0/norm", into: wrong)
        }
    }

    func testRowRangeReads() throws {
        let path = tempPath("rows.h5")
        let values = (0..<(1000 * 70)).map { Int32($0) }      // row r holds 70r ..< 70r+70
        do {
            let file = try HDF5File(creating: path)
            try file.root.write(values, shape: [1000, 70], to: "m", options: HDF5WriteOptions(targetChunkBytes: 4096))
        }
        let root = try HDF5File(openingForReading: path).root
        let slice = try root.read("m", rows: 998..<1000, as: Int32.self)
        XCTAssertEqual(slice.shape, [2, 70])
        XCTAssertEqual(slice.values.first, 69_860)
        XCTAssertEqual(slice.values.last, 69_999)
        let middle = try root.read("m", rows: 13..<15, as: Int32.self)
        XCTAssertEqual(Array(middle.values[0..<3]), [910, 911, 912])
        XCTAssertEqual(try root.read("m", rows: 5..<5, as: Int32.self).values, [])
        assertThrows(.invalidArgument(object: "/m", reason: "rows 999..<1001 outside 0..<1000")) {
            try root.read("m", rows: 999..<1001, as: Int32.self)
        }
    }

    func testOverwriteInPlaceAndReplace() throws {
        let path = tempPath("overwrite.h5")
        let file = try HDF5File(creating: path)
        let big = [Float](repeating: 1, count: 100_000)
        try file.root.write(big, shape: [100, 1000], to: "w")
        try file.root.dataset("w").setAttribute("note", "kept")
        assertThrows(.alreadyExists(path: path, object: "/w")) {
            try file.root.write(big, shape: [100, 1000], to: "w")
        }
        // Same type and shape: values replaced in place, attribute kept.
        var edited = big
        edited[12_345] = -3
        try file.root.write(edited, shape: [100, 1000], to: "w", options: HDF5WriteOptions(overwrite: true))
        XCTAssertEqual(try file.root.read("w", as: Float.self).values[12_345], -3)
        XCTAssertEqual(try file.root.dataset("w").stringAttribute("note"), "kept")
        // Different shape: recreated.
        try file.root.write([Float(9), 8], shape: [2], to: "w", options: HDF5WriteOptions(overwrite: true))
        XCTAssertEqual(try file.root.read("w", as: Float.self).values, [9, 8])
        XCTAssertFalse(try file.root.dataset("w").hasAttribute("note"))
        // A group is never replaced by a dataset write.
        try file.root.createGroup("grp/sub")
        assertThrows(.typeMismatch(object: "/grp", expected: "dataset", found: "group")) {
            try file.root.write([Float(1)], shape: [1], to: "grp", options: HDF5WriteOptions(overwrite: true))
        }
        assertThrows(.typeMismatch(object: "/grp", expected: "dataset", found: "group")) {
            try file.root.writeStrings(["a"], to: "grp", overwrite: true)
        }
        XCTAssertTrue(file.root.exists("grp/sub"))
        // HDF5Dataset.write overwrites in place.
        try file.root.dataset("w").write([Float(1), 2])
        XCTAssertEqual(try file.root.read("w", as: Float.self).values, [1, 2])
    }

    func testIdenticalContentGivesIdenticalBytes() throws {
        func make(_ path: String) throws {
            try HDF5File.createAtomically(at: path) { file in
                try file.root.write(randomNormal(count: 70_000, seed: 5), shape: [70, 1000], to: "a/w")
                try file.root.setAttribute("model", "tiny")
                try file.root.writeStrings(["x", "y"], to: "tokens")
            }
        }
        try make(tempPath("one.h5"))
        try make(tempPath("two.h5"))
        let one = try Data(contentsOf: URL(fileURLWithPath: tempPath("one.h5")))
        let two = try Data(contentsOf: URL(fileURLWithPath: tempPath("two.h5")))
        XCTAssertEqual(one, two, "no timestamps: same content must give the same file")
    }

    func testValuesSHA256IsIndependentOfLayout() throws {
        let file = try HDF5File(creating: tempPath("hash.h5"))
        try file.root.write([Float(1), -2.5, 0.125], shape: [3], to: "f")
        try file.root.write([Float(1), -2.5, 0.125], shape: [3, 1], to: "f-chunked",
                            options: HDF5WriteOptions(compression: .deflate(level: 5), shuffle: true, targetChunkBytes: 4))
        try file.root.write([Int64(7), -8], shape: [2], to: "i")
        try file.root.write([UInt8](), shape: [0], to: "empty")
        let expected = "583beed297c9e134adceff3603439e36234a9621ca16f87716c49483c37cd40a"   // hashlib, '<3f'
        XCTAssertEqual(try file.root.dataset("f").valuesSHA256(), expected)
        XCTAssertEqual(try file.root.dataset("f-chunked").valuesSHA256(), expected)
        XCTAssertEqual(try file.root.dataset("i").valuesSHA256(),
                       "85800be0e799932169a9f0be360b42f28648679844a325fc8125e69466ebfb29")
        XCTAssertEqual(try file.root.dataset("empty").valuesSHA256(),
                       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    /// Smoke test for concurrent use: calls from many threads are serialised on the library lock,
    /// give correct results, and do not deadlock (reads run `concurrentPerform` while holding the
    /// lock, from threads that are themselves `concurrentPerform` workers).
    func testConcurrentUseFromManyThreads() throws {
        let path = tempPath("threads.h5")
        let file = try HDF5File(creating: path)
        let base = dequantizedLikeWeights(count: 128 * 1024, seed: 11)
        for i in 0..<4 { try file.root.write(base, shape: [128, 1024], to: "w\(i)") }
        let n = 400
        let failures = UnsafeMutableBufferPointer<Int>.allocate(capacity: n)
        failures.initialize(repeating: 0)
        defer { failures.deallocate() }
        DispatchQueue.concurrentPerform(iterations: n) { k in
            do {
                switch k % 4 {
                case 3:
                    try file.root.setAttribute("writer\(k)", k)
                    try file.root.write([Int32(k)], shape: [1], to: "scratch/\(k)")
                case 2:
                    if try file.root.read("w\(k % 4)", as: Float.self).values != base { failures[k] = 1 }
                default:
                    let g = try file.root.openOrCreateGroup("g\(k % 8)")
                    _ = try g.memberNames()
                    if try file.root.read("w0", rows: 5..<6, as: Float.self).values != Array(base[5120..<6144]) {
                        failures[k] = 1
                    }
                }
            } catch {
                failures[k] = 2
            }
        }
        XCTAssertEqual(failures.filter { $0 != 0 }.count, 0)
        XCTAssertEqual(try file.root.group("scratch").memberNames().count, n / 4)
        XCTAssertEqual(try file.root.intAttribute("writer399"), 399)
        XCTAssertEqual(try file.root.intAttribute("writer15"), 15)
    }
}
