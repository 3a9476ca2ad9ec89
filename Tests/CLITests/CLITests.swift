import Foundation
import XCTest
import GGUF

/// The `scalpel` executable end to end: malformed inputs give one-line errors and a non-zero exit; the default
/// model answers from both its GGUF and its HDF5 store.
final class CLITests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("scalpel-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// The built `scalpel` binary, next to the test bundle.
    func binary() throws -> URL {
        let candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
                          Bundle.main.bundleURL.deletingLastPathComponent(), Bundle.main.bundleURL]
        for c in candidates {
            let b = c.appendingPathComponent("scalpel")
            if FileManager.default.isExecutableFile(atPath: b.path) { return b }
        }
        throw XCTSkip("scalpel binary not found beside the tests")
    }

    struct Run { let status: Int32; let stdout: String; let stderr: String; var signaled = false }

    func scalpel(_ args: [String], env: [String: String] = [:]) throws -> Run {
        let p = Process()
        p.executableURL = try binary()
        p.arguments = args
        var e = ProcessInfo.processInfo.environment
        e["SCALPEL_WEIGHTS"] = e["SCALPEL_WEIGHTS"] ?? CLITests.root.appendingPathComponent("weights").path
        for (k, v) in env { e[k] = v }
        p.environment = e
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), r = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: r, as: UTF8.self),
                   signaled: p.terminationReason == .uncaughtSignal)
    }

    /// Expects a non-zero exit (not a signal) and exactly one line on stderr containing every fragment.
    @discardableResult
    func expectError(_ args: [String], _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> Run {
        let r = try scalpel(args)
        XCTAssertFalse(r.signaled, "killed by a signal: \(r.stderr)", file: file, line: line)
        XCTAssertNotEqual(r.status, 0, "exit status", file: file, line: line)
        let lines = r.stderr.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        XCTAssertEqual(lines.count, 1, "stderr: \(r.stderr)", file: file, line: line)
        for f in fragments { XCTAssertTrue(r.stderr.contains(f), "\"\(f)\" not in: \(r.stderr)", file: file, line: line) }
        return r
    }

    func tinyGGUF(architecture: String = "llama", extra: (inout GGUFWriter) -> Void = { _ in }) -> GGUFWriter {
        var w = GGUFWriter()
        w.metadata = [("general.architecture", .string(architecture)), ("\(architecture).block_count", .uint32(1)),
                      ("\(architecture).embedding_length", .uint32(8)), ("\(architecture).attention.head_count", .uint32(2)),
                      ("\(architecture).feed_forward_length", .uint32(16))]
        w.addF32("token_embd.weight", dims: [8, 4], values: [Float](repeating: 0.1, count: 32))
        extra(&w)
        return w
    }

    func testMissingModelFile() throws {
        try expectError(["predict", "--model", dir.appendingPathComponent("nope.gguf").path, "hello"], ["nope.gguf", "not found"])
    }

    func testWrongMagic() throws {
        let p = dir.appendingPathComponent("bad.gguf")
        try Data("NOTAGGUFFILE, just text".utf8).write(to: p)
        try expectError(["predict", "--model", p.path, "hello"], ["bad.gguf", "not a GGUF file"])
    }

    func testTruncatedGGUF() throws {
        let p = dir.appendingPathComponent("cut.gguf")
        let bytes = tinyGGUF().serialize()
        try Data(bytes[0..<(bytes.count / 2)]).write(to: p)
        try expectError(["inspect", "--model", p.path], ["cut.gguf", "truncated"])
    }

    func testUnknownQuantization() throws {
        let p = dir.appendingPathComponent("q2k.gguf")
        var w = tinyGGUF()
        w.tensors.append(("blk.0.ffn_down.weight", [256], .q2_K, [UInt8](repeating: 0, count: 84)))
        try w.write(to: p.path)
        try expectError(["inspect", "--model", p.path], ["blk.0.ffn_down.weight", "Q2_K"])
    }

    func testNotLlamaFamily() throws {
        let p = dir.appendingPathComponent("gpt2.gguf")
        try tinyGGUF(architecture: "gpt2").write(to: p.path)
        try expectError(["inspect", "--model", p.path], ["gpt2", "not Llama-family"])
    }

    func testUnsupportedExtension() throws {
        let p = dir.appendingPathComponent("model.bin")
        try Data([1, 2, 3]).write(to: p)
        try expectError(["predict", "--model", p.path, "x"], ["model.bin", "not a model file"])
    }

    func testEmptyPrompt() throws {
        _ = try RealModelPaths.gguf()
        try expectError(["predict", ""], ["prompt is empty"])
        try expectError(["generate", ""], ["prompt is empty"])
    }

    func testPredictJSONFromGGUFAndStoreAgree() throws {
        let gguf = try RealModelPaths.gguf()
        let prompt = "The Eiffel Tower is located in the city of"
        let a = try scalpel(["predict", "--model", gguf, "--json", "--top", "5", prompt])
        XCTAssertEqual(a.status, 0, a.stderr)
        let ja = try JSONSerialization.jsonObject(with: Data(a.stdout.utf8)) as! [String: Any]
        let top = ja["top"] as! [[String: Any]]
        XCTAssertEqual(top[0]["token"] as? String, " Paris")
        XCTAssertEqual(top[0]["prob"] as! Double, 0.70, accuracy: 0.02)
        XCTAssertEqual(ja["ids"] as? [Int], [504, 414, 46682, 18669, 314, 3807, 281, 260, 2240, 282])
        // Import into a temporary store and compare: identical logits from the .h5.
        let store = dir.appendingPathComponent("m.h5").path
        let imp = try scalpel(["import", gguf, "--out", store, "--json"])
        XCTAssertEqual(imp.status, 0, imp.stderr)
        let b = try scalpel(["predict", "--model", store, "--json", "--top", "5", prompt])
        let jb = try JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(ja["ids"] as? [Int], jb["ids"] as? [Int])
        XCTAssertEqual((ja["top"] as! [[String: Any]]).map { $0["id"] as! Int }, (jb["top"] as! [[String: Any]]).map { $0["id"] as! Int })
        XCTAssertEqual(ja["logsumexp"] as! Double, jb["logsumexp"] as! Double)
        // h5dump reads the store.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/h5dump") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/h5dump")
            p.arguments = ["-H", store]
            let out = Pipe(); p.standardOutput = out
            try p.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0)
            XCTAssertTrue(text.contains("blk.29.ffn_down.weight"))
        }
    }

    func testTokenizeAndGenerate() throws {
        _ = try RealModelPaths.gguf()
        let t = try scalpel(["tokenize", "--json", "Hello world!"])
        XCTAssertEqual(t.status, 0, t.stderr)
        let j = try JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(j["ids"] as? [Int], [19556, 905, 17])
        XCTAssertEqual(j["tokens"] as? [String], ["Hello", " world", "!"])
        let g = try scalpel(["generate", "--json", "--max-tokens", "5", "The capital of France is"])
        XCTAssertEqual(g.status, 0, g.stderr)
        let gj = try JSONSerialization.jsonObject(with: Data(g.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((gj["ids"] as! [Int]).count, 5)
    }
}

enum RealModelPaths {
    static func gguf() throws -> String {
        let p = CLITests.root.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("default model not fetched") }
        return p
    }
}
