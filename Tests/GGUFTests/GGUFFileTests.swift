import XCTest
@testable import GGUF

final class GGUFFileTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func sampleWriter() -> GGUFWriter {
        var w = GGUFWriter()
        w.metadata = [("general.architecture", .string("llama")), ("llama.block_count", .uint32(2)),
                      ("x.list", .array(.string, [.string("a"), .string("β")])), ("x.f", .float32(1.5))]
        w.addF32("t.a", dims: [3, 2], values: [1, 2, 3, 4, 5, 6])
        w.addF32("t.b", dims: [5], values: [-1, -2, -3, -4, -5])
        return w
    }

    func testRoundTripWriterReader() throws {
        try sampleWriter().write(to: path("ok.gguf"))
        let f = try GGUFFile(path: path("ok.gguf"))
        XCTAssertEqual(f.version, 3)
        XCTAssertEqual(f["general.architecture"]?.string, "llama")
        XCTAssertEqual(f["llama.block_count"]?.int, 2)
        XCTAssertEqual(f["x.list"]?.stringArray, ["a", "β"])
        XCTAssertEqual(f["x.f"]?.double, 1.5)
        XCTAssertEqual(f.tensors.map(\.name), ["t.a", "t.b"])
        XCTAssertEqual(f.tensor("t.a")?.dims, [3, 2])
        XCTAssertEqual(try f.floats("t.a"), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try f.floats("t.b"), [-1, -2, -3, -4, -5])
        XCTAssertEqual(f.dataOffset % 32, 0)
    }

    func testMissingFile() {
        XCTAssertThrowsError(try GGUFFile(path: path("nope.gguf"))) { e in
            XCTAssertEqual(e as? GGUFError, .fileNotFound(path: path("nope.gguf")))
        }
    }

    func testBadMagic() throws {
        var bytes = sampleWriter().serialize()
        bytes[0] = UInt8(ascii: "X")
        try Data(bytes).write(to: URL(fileURLWithPath: path("bad.gguf")))
        XCTAssertThrowsError(try GGUFFile(path: path("bad.gguf"))) { e in
            guard case .badMagic = e as? GGUFError else { return XCTFail("\(e)") }
        }
    }

    func testUnsupportedVersion() throws {
        var bytes = sampleWriter().serialize()
        bytes[4] = 7
        try Data(bytes).write(to: URL(fileURLWithPath: path("v7.gguf")))
        XCTAssertThrowsError(try GGUFFile(path: path("v7.gguf"))) { e in
            XCTAssertEqual(e as? GGUFError, .unsupportedVersion(path: path("v7.gguf"), version: 7))
        }
    }

    func testTruncatedAtEveryHeaderLength() throws {
        let bytes = sampleWriter().serialize()
        // Cut inside the header/metadata/tensor table, and inside the data section.
        for cut in [3, 6, 12, 30, 60, 100, bytes.count - 20] {
            try Data(bytes[0..<cut]).write(to: URL(fileURLWithPath: path("cut.gguf")))
            XCTAssertThrowsError(try GGUFFile(path: path("cut.gguf")), "cut at \(cut)") { e in
                switch e as? GGUFError {
                case .truncated?, .tensorOutOfBounds?: break
                default: XCTFail("cut \(cut): \(e)")
                }
            }
        }
    }

    func testUnknownQuantizationNamesTensor() throws {
        var w = sampleWriter()
        w.tensors.append(("t.q", [256], GGMLType.q2_K, [UInt8](repeating: 0, count: 84)))
        try w.write(to: path("q2k.gguf"))
        XCTAssertThrowsError(try GGUFFile(path: path("q2k.gguf"))) { e in
            XCTAssertEqual(e as? GGUFError, .unsupportedQuantization(path: path("q2k.gguf"), type: 10, tensor: "t.q"))
            XCTAssertTrue("\(e)".contains("t.q") && "\(e)".contains("Q2_K"))
        }
    }

    /// The real default model, when it has been fetched (`scripts/fetch-model.sh`).
    func testRealModelTable() throws {
        let p = FileManager.default.currentDirectoryPath + "/weights/SmolLM2-135M-Instruct.Q4_1.gguf"
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("default model not fetched") }
        let f = try GGUFFile(path: p)
        XCTAssertEqual(f.tensors.count, 272)
        XCTAssertEqual(f["llama.block_count"]?.int, 30)
        XCTAssertEqual(f["llama.embedding_length"]?.int, 576)
        XCTAssertEqual(f["tokenizer.ggml.tokens"]?.array?.count, 49152)
        XCTAssertEqual(f["tokenizer.ggml.pre"]?.string, "smollm")
        XCTAssertEqual(f.tensor("token_embd.weight")?.type, .q8_0)
        XCTAssertEqual(f.tensor("blk.0.ffn_down.weight")?.dims, [1536, 576])
        XCTAssertEqual(f.tensor("blk.0.ffn_down.weight")?.type, .q4_1)
    }
}
