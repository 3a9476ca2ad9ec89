import Foundation
import XCTest
import HDF5Store
import Hashing
import Llama
@testable import Editing

/// Synthetic stores and edits for the edit-log tests.
enum EditLogFixtures {
    /// The package root (two levels above this file's folder).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The `scalpel` binary built beside the tests (skips the test when it is not there).
    static func scalpelBinary() throws -> String {
        let candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
                          Bundle.main.bundleURL.deletingLastPathComponent(), Bundle.main.bundleURL,
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().deletingLastPathComponent()]
        for c in candidates {
            let b = c.appendingPathComponent("scalpel").path
            if FileManager.default.isExecutableFile(atPath: b) { return b }
        }
        throw XCTSkip("scalpel binary not found beside the tests (build it: swift build --product scalpel)")
    }

    /// Runs `binary args`; sends SIGKILL after `killAfter` seconds when given. Returns the wall time, whether the kill
    /// hit the running process, its exit status and (uninterrupted runs) the end of its standard error.
    static func runScalpel(_ binary: String, _ args: [String], killAfter: Double? = nil) throws
        -> (seconds: Double, killed: Bool, status: Int32, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        // A file, not a pipe: a chatty child never blocks on a full pipe, and a killed one leaves nothing to drain.
        let errPath = NSTemporaryDirectory() + "scalpel-run-\(UUID().uuidString).stderr"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        p.standardError = killAfter == nil ? try FileHandle(forWritingTo: URL(fileURLWithPath: errPath)) : FileHandle.nullDevice
        let t0 = Date()
        try p.run()
        var killed = false
        if let killAfter {
            Thread.sleep(forTimeInterval: killAfter)
            if p.isRunning { kill(p.processIdentifier, SIGKILL); killed = true }
        }
        p.waitUntilExit()
        let err = String(decoding: FileManager.default.contents(atPath: errPath) ?? Data(), as: UTF8.self)
        return (Date().timeIntervalSince(t0), killed && p.terminationReason == .uncaughtSignal, p.terminationStatus,
                String(err.suffix(2000)))
    }

    /// 2 layers, D 16, F 24, V 40: fast.
    static let tiny = LlamaConfig(layers: 2, dModel: 16, heads: 4, kvHeads: 2, headDim: 4, ffnDim: 24, vocabSize: 40,
                                  contextLength: 64, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: true)
    /// 2 layers, D 256, F 2048 (a 14 MB store): big enough that a transaction takes a while to write.
    static let medium = LlamaConfig(layers: 2, dModel: 256, heads: 4, kvHeads: 2, headDim: 64, ffnDim: 2048, vocabSize: 40,
                                    contextLength: 64, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: true)

    static func tempDir(_ test: XCTestCase) throws -> String {
        let dir = NSTemporaryDirectory() + "scalpel-editlog-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    static func randomWeights(_ c: LlamaConfig, seed: UInt64) -> LlamaWeights {
        var rng = SeededRandom(seed: seed)
        let w = LlamaWeights(zeros: c)
        for p in LlamaParameter.all(c) {
            let count = p.shape(c).reduce(1, *)
            let isNorm: Bool = { switch p { case .attnNorm, .ffnNorm, .outputNorm: return true; default: return false } }()
            w.setValues(p, (0..<count).map { _ in isNorm ? Float(1 + 0.1 * rng.normal()) : Float(0.3 * rng.normal()) })
        }
        return w
    }

    /// A 40-token character vocabulary (an end-of-text control token and single characters).
    static func tokenizer() throws -> Tokenizer {
        let chars = Array("abcdefghijklmnopqrstuvwxyzTIAHSWO") + ["Ġ", ".", ",", "Ċ", "'", "-"]
        let tokens = ["<|endoftext|>"] + chars.map { String($0) }
        return try Tokenizer(tokens: tokens, tokenTypes: [3] + chars.map { _ in 1 }, merges: [], pre: "gpt2",
                             bosID: 0, eosID: 0, unknownID: nil, addBOS: false)
    }

    /// Writes a synthetic model store at `path`.
    static func makeStore(_ path: String, config c: LlamaConfig = tiny, seed: UInt64 = 7) throws {
        let prov = ModelProvenance(sourceFile: "synthetic", sourceSize: 0, sourceSHA256: String(repeating: "5e", count: 32),
                                   quantization: ["F32": LlamaParameter.all(c).count])
        try ModelStore.create(at: path, weights: randomWeights(c, seed: seed), tokenizer: try tokenizer(), provenance: prov,
                              toolVersion: "test")
    }

    static func request(_ i: Int) -> EditRequest {
        EditRequest(subject: "subject \(i)", prompt: "{} is in", targetNew: "rome", targetTrue: "paris")
    }

    /// Random rank-one factors for layer `layer` (lambda [D], u [F]).
    static func factors(_ c: LlamaConfig, seed: UInt64, scale: Double = 0.05) -> (lambda: [Float], u: [Float]) {
        var rng = SeededRandom(seed: seed)
        let lambda = (0..<c.dModel).map { _ in Float(scale * rng.normal()) }
        let u = (0..<c.ffnDim).map { _ in Float(rng.normal()) }
        return (lambda, u)
    }

    /// Makes one synthetic edit the way `scalpel edit` does — open the effective model, hash the matrix, apply the
    /// factors with `ROME.apply`, hash again — and appends it to the store's log with `EditLogWriter`.
    @discardableResult
    static func appendSynthetic(_ store: String, layer: Int, seed: UInt64, scale: Double = 0.05,
                                request r: EditRequest? = nil, metricsAfter: EditMetrics = EditMetrics(),
                                stats: (hash: String, path: String) = ("", "")) throws -> EditEntry {
        let m = try ModelFile.open(store)
        let writer = try EditLogWriter(model: m, out: nil, toolVersion: "test")
        let c = m.config, p = LlamaParameter.wDown(layer)
        let (lambda, u) = factors(c, seed: seed, scale: scale)
        let before = ModelStore.weightSHA256(m.model.weights, p)
        let result = ROMEResult(layer: layer, key: [Float](repeating: 0.5, count: c.ffnDim), value: [Float](repeating: 0.25, count: c.dModel),
                                lambda: lambda, u: u, losses: [], seconds: 0, deltaNorm: 0, initialNorm: 0)
        ROME.apply(result, to: m.model)
        let after = ModelStore.weightSHA256(m.model.weights, p)
        let req = r ?? request(Int(seed))
        let now = KeyStatistics.now()
        let entry = EditEntry(id: writer.nextID, created: now, method: "r-ROME", hparamsJSON: EditEntry.jsonString(ROMEHyperParameters(layer: layer)),
                              layer: layer, parameter: p.ggufName, requestJSON: EditEntry.requestJSON(req), subject: req.subject,
                              targetNew: req.targetNew, targetTrue: req.targetTrue, toolVersion: "test", status: "active",
                              statusHistory: [EditStatusChange(status: "active", at: now, toolVersion: "test")],
                              statsSHA256: stats.hash, statsPath: stats.path, weightSHA256Before: before, weightSHA256After: after,
                              metricsBefore: EditMetrics(), metricsAfter: metricsAfter, activeBefore: writer.activeIDs,
                              u: u, lambda: lambda, key: result.key, value: result.value)
        try writer.commit(entry)
        return try EditLog.entries(path: store).last!
    }

    /// The file holding the store's log: its sidecar `NAME.edits.h5` when present, else the store itself.
    static func logFile(_ store: String) -> String {
        let side = (store as NSString).deletingPathExtension + ".edits.h5"
        return FileManager.default.fileExists(atPath: side) ? side : store
    }

    /// Copies a store and its sidecar log (when it has one) to `destination`.
    static func copyStore(_ source: String, to destination: String) throws {
        try FileManager.default.copyItem(atPath: source, toPath: destination)
        let side = (source as NSString).deletingPathExtension + ".edits.h5"
        if FileManager.default.fileExists(atPath: side) {
            try FileManager.default.copyItem(atPath: side, toPath: (destination as NSString).deletingPathExtension + ".edits.h5")
        }
    }

    /// The file holding `name`: the log file for `edits/…`, else the store.
    static func file(_ store: String, holding name: String) -> String {
        name.hasPrefix("edits") || name.hasPrefix("/edits") ? logFile(store) : store
    }

    /// Float32 values of a dataset, read with HDF5Store directly (`edits/…` from the log file).
    static func dataset(_ store: String, _ name: String) throws -> [Float] {
        let h5 = try HDF5File(openingForReading: file(store, holding: name))
        defer { try? h5.close() }
        return try h5.root.dataset(name).read(as: Float.self)
    }

    /// Overwrites a dataset's values in place (simulating a change behind Scalpel's back).
    static func overwrite(_ store: String, _ name: String, _ values: [Float]) throws {
        let h5 = try HDF5File(openingForWriting: file(store, holding: name))
        try h5.root.write(values, shape: try h5.root.datasetShape(name), to: name, options: HDF5WriteOptions(overwrite: true))
        try h5.close()
    }

    /// Base + the given entries' factors, with plain loops (an independent statement of the expected matrix).
    static func expectedMatrix(_ store: String, layer: Int, ids: [String]) throws -> [Float] {
        var w = try dataset(store, "weights/blk.\(layer).ffn_down.weight")
        for id in ids {
            let lambda = try dataset(store, "edits/\(id)/lambda"), u = try dataset(store, "edits/\(id)/u")
            XCTAssertEqual(lambda.count * u.count, w.count)
            for i in 0..<lambda.count {
                for j in 0..<u.count { w[i * u.count + j] = w[i * u.count + j] + lambda[i] * u[j] }
            }
        }
        return w
    }

    static func bits(_ x: [Float]) -> [UInt32] { x.map(\.bitPattern) }

    static func problems(_ r: AuditReport) -> String { r.problems.map(\.line).joined(separator: "\n") }
}

final class EditLogTests: XCTestCase {
    typealias F = EditLogFixtures

    // MARK: Effective model, revert, reapply

    func testRevertSecondOfThreeGivesBasePlusFirstAndThirdBitwise() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5"
        try F.makeStore(store)
        let baseBefore = try F.dataset(store, "weights/blk.1.ffn_down.weight")
        let e1 = try F.appendSynthetic(store, layer: 1, seed: 11)
        let e2 = try F.appendSynthetic(store, layer: 1, seed: 12)
        let e3 = try F.appendSynthetic(store, layer: 1, seed: 13)
        XCTAssertEqual([e1.id, e2.id, e3.id], ["e0001", "e0002", "e0003"])
        XCTAssertEqual(e2.activeBefore, ["e0001"])
        XCTAssertEqual(e3.activeBefore, ["e0001", "e0002"])
        XCTAssertEqual(e2.weightSHA256Before, e1.weightSHA256After)

        let r = try EditLog.revert("e0002", path: store, toolVersion: "test")
        XCTAssertTrue(r.changed)
        XCTAssertEqual(r.activeOnParameter, ["e0001", "e0003"])

        // The base is untouched (values and recorded hash).
        let baseAfter = try F.dataset(store, "weights/blk.1.ffn_down.weight")
        XCTAssertEqual(F.bits(baseAfter), F.bits(baseBefore))
        let h5 = try HDF5File(openingForReading: store)
        XCTAssertEqual(try h5.root.dataset("weights/blk.1.ffn_down.weight").stringAttribute("sha256"), SHA256.hex(floats: baseBefore))
        try h5.close()

        // Effective matrix = base + e1 + e3, bitwise, computed independently.
        let expected = try F.expectedMatrix(store, layer: 1, ids: ["e0001", "e0003"])
        let m = try ModelFile.open(store)
        XCTAssertEqual(m.appliedEdits, ["e0001", "e0003"])
        XCTAssertEqual(F.bits(m.model.weights.values(.wDown(1))), F.bits(expected))
        XCTAssertEqual(r.effectiveSHA256, SHA256.hex(floats: expected))
        XCTAssertEqual(try EditLog.effectiveMatrix(path: store, parameter: "blk.1.ffn_down.weight").sha256, SHA256.hex(floats: expected))
        // Every other parameter is the base.
        let base = try ModelFile.openStore(store, applyEdits: false)
        XCTAssertTrue(base.appliedEdits.isEmpty)
        for p in LlamaParameter.all(m.config) where p != .wDown(1) {
            XCTAssertEqual(F.bits(m.model.weights.values(p)), F.bits(base.model.weights.values(p)), "\(p)")
        }

        // Reverting again changes nothing; reapplying restores base + e1 + e2 + e3 (the state e3 recorded).
        XCTAssertFalse(try EditLog.revert("e0002", path: store, toolVersion: "test").changed)
        let back = try EditLog.reapply("e0002", path: store, toolVersion: "test")
        XCTAssertEqual(back.effectiveSHA256, e3.weightSHA256After)
        let all = try F.expectedMatrix(store, layer: 1, ids: ["e0001", "e0002", "e0003"])
        XCTAssertEqual(F.bits(try ModelFile.open(store).model.weights.values(.wDown(1))), F.bits(all))
        // Revert everything: exactly the base again (recomputed, not subtracted).
        for id in ["e0001", "e0002", "e0003"] { try EditLog.revert(id, path: store, toolVersion: "test") }
        XCTAssertEqual(F.bits(try ModelFile.open(store).model.weights.values(.wDown(1))), F.bits(baseBefore))

        let entry = try EditLog.entries(path: store)[1]
        XCTAssertEqual(entry.statusHistory.map(\.status), ["active", "reverted", "active", "reverted"])
        XCTAssertThrowsError(try EditLog.revert("e0009", path: store, toolVersion: "test")) {
            XCTAssertEqual($0 as? EditingError, .editNotFound(id: "e0009", path: store, available: ["e0001", "e0002", "e0003"]))
        }
    }

    func testEntryRoundTripsAndHashCoversEveryField() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5"
        try F.makeStore(store)
        let e = try F.appendSynthetic(store, layer: 0, seed: 3)
        let log = try EditLog.read(path: store)
        XCTAssertEqual(log.format, EditLogSchema.format)
        XCTAssertEqual(log.storedLogSHA256, log.computedLogSHA256)
        let r = log.records[0]
        XCTAssertTrue(r.verifies)
        XCTAssertTrue(r.unreadable.isEmpty)
        XCTAssertEqual(Set(r.attributes.keys), Set(EditLogSchema.stringAttributes + EditLogSchema.intAttributes))
        XCTAssertEqual(e.request, F.request(3))
        XCTAssertEqual(e.hyperParameters, ROMEHyperParameters(layer: 0))
        XCTAssertEqual(e.parameter, "blk.0.ffn_down.weight")
        var copy = e
        copy.entrySHA256 = nil
        XCTAssertEqual(copy.record.computedSHA256(), e.entrySHA256)
        // Any change to an attribute or a factor changes the hash.
        for name in r.attributes.keys {
            var t = r
            t.attributes[name] = r.attributes[name] == .int(0) ? .int(1) : .string("x")
            XCTAssertNotEqual(t.computedSHA256(), r.computedSHA256(), name)
        }
        for name in r.datasets.keys {
            var t = r
            t.datasets[name]![0] = t.datasets[name]![0].nextUp
            XCTAssertNotEqual(t.computedSHA256(), r.computedSHA256(), name)
        }
        XCTAssertEqual(EditLogSchema.id(number: 1), "e0001")
        XCTAssertEqual(EditLogSchema.id(number: 12345), "e12345")
        XCTAssertEqual(EditLogSchema.number(of: "e0042"), 42)
        XCTAssertNil(EditLogSchema.number(of: "e42"))
        XCTAssertNil(EditLogSchema.number(of: "x0001"))
    }

    func testStoreWithoutLogOpensAsBaseAndAuditPasses() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5"
        try F.makeStore(store)
        let m = try ModelFile.open(store)
        XCTAssertTrue(m.appliedEdits.isEmpty)
        XCTAssertNil(m.editLogSHA256)
        let report = try EditAuditor.audit(path: store)
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.weightsChecked, LlamaParameter.all(F.tiny).count)
    }

    func testOlderStoreGetsBaseHashesAtItsFirstEdit() throws {
        let dir = try F.tempDir(self), store = dir + "/old.h5"
        try F.makeStore(store)
        // A store from before hashes were recorded.
        try HDF5File.updateAtomically(at: store) { h5 in
            let g = try h5.root.group("weights")
            for name in try g.memberNames() { try g.dataset(name).deleteAttribute("sha256") }
        }
        var report = try EditAuditor.audit(path: store)
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.weightsChecked, 0)
        XCTAssertTrue(report.findings.contains { $0.check == .weights && $0.severity == .info })
        try F.appendSynthetic(store, layer: 0, seed: 1)
        report = try EditAuditor.audit(path: store)
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.weightsChecked, LlamaParameter.all(F.tiny).count)
        XCTAssertEqual(report.weightsUnrecorded, 0)
    }

    // MARK: Audit: clean and failing

    func testAuditPassesOnCleanStoreAndVerifiesTheChain() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5"
        try F.makeStore(store)
        try F.appendSynthetic(store, layer: 1, seed: 1)
        try F.appendSynthetic(store, layer: 0, seed: 2)
        try F.appendSynthetic(store, layer: 1, seed: 3)
        let report = try EditAuditor.audit(path: store)
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertNoThrow(try report.requirePassed())
        XCTAssertEqual(report.edits.map(\.chain), ["verified", "verified", "verified"])
        XCTAssertEqual(report.edits.map(\.entry), ["verified", "verified", "verified"])
        XCTAssertEqual(report.edits.map(\.behaviour), ["holds", "holds", "holds"])
    }

    func testRevertedPredecessorIsContextChangedNotAProblem() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5"
        try F.makeStore(store)
        try F.appendSynthetic(store, layer: 1, seed: 1)
        try F.appendSynthetic(store, layer: 0, seed: 2)
        try F.appendSynthetic(store, layer: 1, seed: 3)
        try EditLog.revert("e0001", path: store, toolVersion: "test")
        var report = try EditAuditor.audit(path: store)
        XCTAssertTrue(report.passed, F.problems(report))
        // e0003 was made on top of e0001 on the same matrix; e0002 is on another matrix and still verifiable.
        XCTAssertEqual(report.edits.map(\.chain), ["verified", "verified", "context changed"])
        XCTAssertTrue(report.findings.contains { $0.id == "e0003" && $0.check == .chain && $0.severity == .info })
        try EditLog.reapply("e0001", path: store, toolVersion: "test")
        report = try EditAuditor.audit(path: store)
        XCTAssertEqual(report.edits.map(\.chain), ["verified", "verified", "verified"])
    }

    func testAuditFailsWhenABaseWeightChangedBehindItsBack() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5"
        try F.makeStore(store)
        try F.appendSynthetic(store, layer: 1, seed: 1)
        var w = try F.dataset(store, "weights/blk.1.ffn_down.weight")
        w[5] += 0.001
        try F.overwrite(store, "weights/blk.1.ffn_down.weight", w)
        let report = try EditAuditor.audit(path: store)
        XCTAssertFalse(report.passed)
        XCTAssertTrue(report.problems.contains { $0.check == .weights && $0.message.contains("blk.1.ffn_down.weight") },
                      F.problems(report))
        // The replayed chain no longer reproduces the recorded hashes either.
        XCTAssertTrue(report.problems.contains { $0.check == .chain && $0.id == "e0001" }, F.problems(report))
        XCTAssertThrowsError(try report.requirePassed()) { e in
            guard case let .auditFailed(_, lines)? = e as? EditingError else { return XCTFail("\(e)") }
            XCTAssertTrue(lines.contains { $0.contains("blk.1.ffn_down.weight") && $0.contains("base weights were modified") })
        }
        // A changed weight that is not edited is caught too.
        var n = try F.dataset(store, "weights/output_norm.weight")
        n[0] = -n[0]
        try F.overwrite(store, "weights/output_norm.weight", n)
        XCTAssertTrue(try EditAuditor.audit(path: store).problems.contains { $0.message.contains("output_norm.weight") })
    }

    func testAuditFailsOnATamperedEntryAndNothingUsesIt() throws {
        let dir = try F.tempDir(self)
        let clean = dir + "/clean.h5"
        try F.makeStore(clean)
        try F.appendSynthetic(clean, layer: 1, seed: 1)
        try F.appendSynthetic(clean, layer: 1, seed: 2)
        XCTAssertTrue(try EditAuditor.audit(path: clean).passed)

        // (1) An attribute.
        let a = dir + "/attr.h5"
        try F.copyStore(clean, to: a)
        try HDF5File.updateAtomically(at: F.logFile(a)) { try $0.root.group("edits/e0001").setAttribute("target_new", "berlin") }
        var report = try EditAuditor.audit(path: a)
        XCTAssertFalse(report.passed)
        XCTAssertTrue(report.problems.contains { $0.check == .entry && $0.id == "e0001" && $0.message.contains("entry_sha256") },
                      F.problems(report))
        XCTAssertEqual(report.edits.map(\.entry), ["does not verify", "verified"])
        // (2) A factor value.
        let b = dir + "/factor.h5"
        try F.copyStore(clean, to: b)
        var u = try F.dataset(b, "edits/e0002/u")
        u[3] *= 1.001
        try F.overwrite(b, "edits/e0002/u", u)
        report = try EditAuditor.audit(path: b)
        XCTAssertTrue(report.problems.contains { $0.check == .entry && $0.id == "e0002" && $0.message.contains("entry_sha256") },
                      F.problems(report))
        // (3) A flipped status.
        let c = dir + "/status.h5"
        try F.copyStore(clean, to: c)
        try HDF5File.updateAtomically(at: F.logFile(c)) { try $0.root.group("edits/e0001").setAttribute("status", "reverted") }
        XCTAssertTrue(try EditAuditor.audit(path: c).problems.contains { $0.id == "e0001" })

        // A tampered log is never applied or modified.
        for path in [a, b, c] {
            XCTAssertThrowsError(try ModelFile.open(path)) { e in
                guard case let .storeCorrupt(_, problem)? = e as? LlamaError else { return XCTFail("\(e)") }
                XCTAssertTrue(problem.contains("entry_sha256"), problem)
            }
            let before = [try SHA256.hex(fileAt: path), try SHA256.hex(fileAt: F.logFile(path))]
            XCTAssertThrowsError(try EditLog.revert("e0002", path: path, toolVersion: "test")) { e in
                guard case .editLogCorrupt? = e as? EditingError else { return XCTFail("\(e)") }
            }
            XCTAssertEqual([try SHA256.hex(fileAt: path), try SHA256.hex(fileAt: F.logFile(path))], before)
        }
    }

    func testAuditFailsWhenAnEntryIsDeleted() throws {
        let dir = try F.tempDir(self)
        let clean = dir + "/clean.h5"
        try F.makeStore(clean)
        for s in 1...3 { try F.appendSynthetic(clean, layer: 0, seed: UInt64(s)) }
        for (victim, expect) in [("e0003", "log_sha256"), ("e0002", "missing from the log")] {
            let p = dir + "/\(victim).h5"
            try F.copyStore(clean, to: p)
            try HDF5File.updateAtomically(at: F.logFile(p)) { try $0.root.group("edits").delete(victim) }
            let report = try EditAuditor.audit(path: p)
            XCTAssertTrue(report.problems.contains { $0.message.contains(expect) }, F.problems(report))
            XCTAssertThrowsError(try ModelFile.open(p))
        }
    }

    func testAuditChecksStatisticsHashes() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5", statsPath = dir + "/tiny.stats.h5"
        try F.makeStore(store)
        let model = try ModelFile.open(store)
        func collect(seed: UInt64) throws -> KeyStatistics {
            var rng = SeededRandom(seed: seed)
            let seqs = (0..<12).map { _ in (0..<20).map { _ in Int(rng.next() % 40) } }
            let corpus = TokenCorpus(sequences: seqs, settings: "seed \(seed)", description: "random tokens \(seed)")
            return try StatisticsCollector.collect(model: model.model, modelSHA256: model.provenance.sourceSHA256, layer: 1,
                                                   corpus: corpus)
        }
        let s = try collect(seed: 1)
        try StatsStore.save([s], to: statsPath)
        try F.appendSynthetic(store, layer: 1, seed: 1, stats: (s.hash, statsPath))
        let given = AuditOptions(statsPath: statsPath)
        var report = try EditAuditor.audit(path: store, options: given)
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.edits[0].stats, "verified")

        // Damaged: a value changed inside the file.
        var m = try HDF5File(openingForReading: statsPath).root.dataset("stats/layer_1/second_moment").read(as: Double.self)
        m[7] += 1
        let h5 = try HDF5File(openingForWriting: statsPath)
        try h5.root.write(m, shape: [24, 24], to: "stats/layer_1/second_moment", options: HDF5WriteOptions(overwrite: true))
        try h5.close()
        report = try EditAuditor.audit(path: store, options: given)
        XCTAssertFalse(report.passed)
        XCTAssertTrue(report.problems.contains { $0.check == .stats && $0.id == "e0001" }, F.problems(report))
        XCTAssertEqual(report.edits[0].stats, "damaged")

        // Replaced by other statistics (intact, but not the ones the edit used).
        try StatsStore.write([try collect(seed: 2)], to: statsPath)
        report = try EditAuditor.audit(path: store, options: given)
        XCTAssertTrue(report.problems.contains { $0.check == .stats && $0.message.contains("the statistics changed") }, F.problems(report))
        XCTAssertEqual(report.edits[0].stats, "mismatch")

        // --stats pointing at the right file passes; at a missing file fails.
        let good = dir + "/good.stats.h5"
        try StatsStore.write([s], to: good)
        XCTAssertTrue(try EditAuditor.audit(path: store, options: AuditOptions(statsPath: good)).passed)
        XCTAssertFalse(try EditAuditor.audit(path: store, options: AuditOptions(statsPath: dir + "/none.h5")).passed)
        // No --stats: skipped (reported, not verified), even though the entry names a file that exists.
        report = try EditAuditor.audit(path: store)
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.edits[0].stats, "skipped")
        XCTAssertTrue(report.findings.contains { $0.check == .stats && $0.severity == .info && $0.message.hasPrefix("skipped") })
    }

    // MARK: Interference

    /// Edit A moves a prompt's preferred answer; edit B (A's factors negated: it writes the fact back) undoes it.
    /// The audit must report A broken by B, and pass again once B is reverted.
    func testInterferenceNamesTheLaterEditThatBrokeAnEdit() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5"
        try F.makeStore(store)
        let tok = try F.tokenizer()
        let prompt = "{} is in", subject = "paris"
        let letters = "abcdefghijklmnopqrstuvwxyz".map(String.init)
        func best(_ m: ModelFile) throws -> String {
            let nll = try EditEvaluator.meanNLL(model: m.model, tokenizer: tok,
                                                pairs: letters.map { ("paris is in", $0) })
            return letters[nll.indices.min { nll[$0] < nll[$1] }!]
        }
        // Find strong factors that change the preferred answer (deterministic search over seeds).
        let base = try ModelFile.open(store)
        let old = try best(base)
        var chosen: (seed: UInt64, new: String)?
        for seed in UInt64(100)..<UInt64(200) {
            let m = try ModelFile.open(store)
            let (lambda, u) = F.factors(m.config, seed: seed, scale: 2)
            m.model.weights.withParameter(.wDown(1)) { EditLogReader.applyRankOne(lambda: lambda, u: u, to: $0) }
            let answer = try best(m)
            if answer != old { chosen = (seed, answer); break }
        }
        guard let chosen else { return XCTFail("no factors changed the answer") }
        let neighbours = ["sea is", "the cat"]
        let reqA = EditRequest(subject: subject, prompt: prompt, targetNew: chosen.new, targetTrue: old,
                               neighborhood: neighbours.map { .init(prompt: $0) })
        // Metrics right after A, as `scalpel edit` records them.
        let after = try ModelFile.open(store)
        let (lambda, u) = F.factors(after.config, seed: chosen.seed, scale: 2)
        after.model.weights.withParameter(.wDown(1)) { EditLogReader.applyRankOne(lambda: lambda, u: u, to: $0) }
        let answers = try EditEvaluator.topAnswers(model: after.model, tokenizer: tok, prompts: neighbours)
        let scores = try EditEvaluator.scores(model: after.model, tokenizer: tok, request: reqA, neighborAnswers: answers)
        XCTAssertEqual(scores.efficacy, 1)
        try F.appendSynthetic(store, layer: 1, seed: chosen.seed, scale: 2, request: reqA,
                              metricsAfter: EditMetrics(scores: scores, neighborAnswers: answers))
        try F.appendSynthetic(store, layer: 0, seed: 5)  // an unrelated, harmless edit
        XCTAssertTrue(try EditAuditor.audit(path: store).passed)

        // B: A's update negated ("rewrite the fact back").
        let m = try ModelFile.open(store)
        let writer = try EditLogWriter(model: m, out: nil, toolVersion: "test")
        let before = ModelStore.weightSHA256(m.model.weights, .wDown(1))
        let negated = lambda.map { -$0 }
        m.model.weights.withParameter(.wDown(1)) { EditLogReader.applyRankOne(lambda: negated, u: u, to: $0) }
        let reqB = EditRequest(subject: subject, prompt: prompt, targetNew: old, targetTrue: chosen.new)
        var b = try EditLog.entries(path: store)[0]
        b.id = writer.nextID; b.requestJSON = EditEntry.requestJSON(reqB); b.targetNew = old; b.targetTrue = chosen.new
        b.lambda = negated; b.activeBefore = writer.activeIDs; b.metricsAfter = EditMetrics(); b.entrySHA256 = nil
        b.weightSHA256Before = before; b.weightSHA256After = ModelStore.weightSHA256(m.model.weights, .wDown(1))
        try writer.commit(b)
        writer.finish()   // as the process that made the edit exits

        var report = try EditAuditor.audit(path: store)
        XCTAssertFalse(report.passed)
        let finding = report.problems.first { $0.check == .behaviour && $0.id == "e0001" }
        XCTAssertNotNil(finding, F.problems(report))
        XCTAssertTrue(finding?.message.contains("INTERFERENCE") == true)
        XCTAssertTrue(finding?.message.contains("broken by e0003") == true, finding?.message ?? "")
        XCTAssertEqual(report.edits[0].behaviour, "broken")
        XCTAssertEqual(report.edits[0].brokenBy, ["e0003"])
        XCTAssertEqual(report.edits[1].behaviour, "holds")
        // Structural checks still pass: the problem is behaviour only.
        XCTAssertTrue(report.problems.allSatisfy { $0.check == .behaviour }, F.problems(report))

        try EditLog.revert("e0003", path: store, toolVersion: "test")
        report = try EditAuditor.audit(path: store)
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.edits[0].behaviour, "holds")
    }

    // MARK: Writers

    func testWriterRefusesALogChangedSinceTheModelWasOpened() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5"
        try F.makeStore(store)
        try F.appendSynthetic(store, layer: 0, seed: 1)
        let m = try ModelFile.open(store)
        // Changed between opening the model and taking the lock: the writer refuses at once.
        try EditLog.revert("e0001", path: store, toolVersion: "test")  // another process
        XCTAssertThrowsError(try EditLogWriter(model: m, out: nil, toolVersion: "test")) {
            XCTAssertEqual($0 as? EditingError, .editLogChanged(path: store))
        }
        try EditLog.reapply("e0001", path: store, toolVersion: "test")
        // Changed while the writer had released its lock: the commit refuses and writes nothing.
        let m1 = try ModelFile.open(store)
        let writer = try EditLogWriter(model: m1, out: nil, toolVersion: "test")
        writer.finish()
        try EditLog.revert("e0001", path: store, toolVersion: "test")  // another process
        var e = try EditLog.entries(path: store)[0]
        e.id = writer.nextID; e.entrySHA256 = nil; e.status = "active"
        let before = [try SHA256.hex(fileAt: store), try SHA256.hex(fileAt: F.logFile(store))]
        XCTAssertThrowsError(try writer.commit(e)) { XCTAssertEqual($0 as? EditingError, .editLogChanged(path: store)) }
        XCTAssertEqual([try SHA256.hex(fileAt: store), try SHA256.hex(fileAt: F.logFile(store))], before)
        // A writer for a new store copies the source store with its log, and leaves the source alone.
        let m2 = try ModelFile.open(store)
        let out = dir + "/copy.h5"
        let w2 = try EditLogWriter(model: m2, out: out, toolVersion: "test")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        e.id = w2.nextID; e.activeBefore = w2.activeIDs
        e.weightSHA256Before = ModelStore.weightSHA256(m2.model.weights, .wDown(0))
        var w = m2.model.weights.values(.wDown(0))
        w.withUnsafeMutableBufferPointer { EditLogReader.applyRankOne(lambda: e.lambda, u: e.u, to: $0) }
        e.weightSHA256After = SHA256.hex(floats: w)
        try w2.commit(e)
        XCTAssertEqual([try SHA256.hex(fileAt: store), try SHA256.hex(fileAt: F.logFile(store))], before)
        XCTAssertEqual(try EditLog.read(path: out).records.map(\.groupName), ["e0001", "e0002"])
        XCTAssertEqual(try EditLog.read(path: out).activeIDs, ["e0002"])
        XCTAssertTrue(try EditAuditor.audit(path: out).passed)
    }

    func testSaveEditedBakesTheLogIntoNewBaseWeights() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5", baked = dir + "/baked.h5"
        try F.makeStore(store)
        try F.appendSynthetic(store, layer: 1, seed: 1)
        let m = try ModelFile.open(store)
        try ModelStore.saveEdited(m, changed: [.wDown(1)], to: baked, toolVersion: "test")
        let b = try ModelFile.open(baked)
        XCTAssertTrue(b.appliedEdits.isEmpty)
        XCTAssertEqual(F.bits(b.model.weights.values(.wDown(1))), F.bits(m.model.weights.values(.wDown(1))))
        XCTAssertTrue(try EditAuditor.audit(path: baked).passed)
    }

    // MARK: Crash safety

    /// The built `scalpel` binary (next to the test bundle), or skip.
    /// Runs `scalpel revert/reapply` on a store and kills it with SIGKILL after a random delay, 20 times: the store
    /// must always open, pass the structural audit, and hold either the previous or the new state.
    func testKilledRevertAndReapplyLeaveThePreviousOrTheNewStore() throws {
        let binary = try F.scalpelBinary()
        let dir = try F.tempDir(self), store = dir + "/medium.h5"
        try F.makeStore(store, config: F.medium)
        try F.appendSynthetic(store, layer: 0, seed: 1)
        try F.appendSynthetic(store, layer: 1, seed: 2)
        try F.appendSynthetic(store, layer: 1, seed: 3)
        let active = try EditLog.effectiveMatrix(path: store, parameter: "blk.1.ffn_down.weight").sha256
        try EditLog.revert("e0002", path: store, toolVersion: "test")
        let reverted = try EditLog.effectiveMatrix(path: store, parameter: "blk.1.ffn_down.weight").sha256
        try EditLog.reapply("e0002", path: store, toolVersion: "test")
        XCTAssertNotEqual(active, reverted)

        func run(_ args: [String], killAfter: Double?) throws -> (seconds: Double, killed: Bool) {
            let r = try F.runScalpel(binary, args, killAfter: killAfter)
            return (r.seconds, r.killed)
        }
        // Calibrate: how long one uninterrupted command takes.
        let full = try run(["revert", "e0002", "--model", store], killAfter: nil).seconds
        XCTAssertEqual(try EditLog.read(path: store).record("e0002")?.status, "reverted")
        var rng = SeededRandom(seed: 42)
        var outcomes: [String: Int] = [:]
        for i in 0..<20 {
            let status = try EditLog.read(path: store).record("e0002")!.status!
            let command = status == "active" ? "revert" : "reapply"
            let delay = rng.uniform() * full * 2
            let r = try run([command, "e0002", "--model", store], killAfter: delay)
            // The store opens, verifies structurally, and is in the old or the new state — never in between.
            let m = try ModelFile.open(store)
            let report = try EditAuditor.audit(path: store, options: AuditOptions(checkBehaviour: false))
            XCTAssertTrue(report.passed, "iteration \(i): " + F.problems(report))
            let now = try EditLog.read(path: store).record("e0002")!.status!
            XCTAssertTrue(now == "active" || now == "reverted")
            let hash = SHA256.hex(floats: m.model.weights.values(.wDown(1)))
            XCTAssertEqual(hash, now == "active" ? active : reverted, "iteration \(i)")
            XCTAssertEqual(m.appliedEdits, now == "active" ? ["e0001", "e0002", "e0003"] : ["e0001", "e0003"])
            let midWrite = r.killed && !EditLog.temporaries(besides: store).isEmpty  // killed after the copy began
            outcomes["\(r.killed ? "killed" : "finished")\(midWrite ? " mid-write" : ""), \(now == status ? "unchanged" : "changed")",
                     default: 0] += 1
        }
        // Temporary files of killed processes are reported by the audit and removed by the next write.
        let leftovers = EditLog.temporaries(besides: store)
        print("crash test: one command takes \(String(format: "%.0f", full * 1000)) ms; outcomes \(outcomes.sorted { $0.key < $1.key }); "
              + "\(leftovers.count) temporary files left by killed processes")
        if !leftovers.isEmpty {
            XCTAssertTrue(try EditAuditor.audit(path: store, options: AuditOptions(checkBehaviour: false)).findings
                .contains { $0.message.contains("temporary file") })
        }
        let status = try EditLog.read(path: store).record("e0002")!.status!
        _ = try run([status == "active" ? "revert" : "reapply", "e0002", "--model", store], killAfter: nil)
        XCTAssertEqual(EditLog.temporaries(besides: store, staleOnly: false), [])
        XCTAssertNotEqual(try EditLog.read(path: store).record("e0002")!.status!, status)
    }
}

/// The acceptance cases on SmolLM2-135M-Instruct with real ROME edits (statistics from a small WikiText sample, so
/// they stay fast; run with `-c release -Xswiftc -enable-testing`). Every store is a copy in a temporary folder:
/// nothing under weights/ is modified.
final class EditLogRealModelTests: XCTestCase {
    typealias F = EditLogFixtures
    static let layer = 4
    static let store = F.root.appendingPathComponent("weights/SmolLM2-135M-Instruct.h5").path
    static let gguf = F.root.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path
    static let wikitext = F.root.deletingLastPathComponent().appendingPathComponent("shared/data/text/wikitext2_raw_valid.txt").path
    /// A folder shared by the class's tests (the statistics are collected once).
    static var shared: String?

    override class func tearDown() {
        if let shared { try? FileManager.default.removeItem(atPath: shared) }
        shared = nil
        super.tearDown()
    }

    static let eiffel = EditRequest(subject: "The Eiffel Tower", prompt: "{} is located in the city of", targetNew: "Rome",
                                    targetTrue: "Paris", paraphrases: ["Where is the Eiffel Tower? It is in the city of"],
                                    neighborhood: [.init(prompt: "The Louvre is located in the city of", answer: "Paris"),
                                                   .init(prompt: "Big Ben is located in the city of", answer: "London")])
    static let darrieux = EditRequest(subject: "Danielle Darrieux", prompt: "The mother tongue of {} is", targetNew: "English",
                                      targetTrue: "French",
                                      neighborhood: [.init(prompt: "The mother tongue of Sophia Loren is", answer: "Italian")])
    static let japan = EditRequest(subject: "Japan", prompt: "The capital city of {} is", targetNew: "Berlin",
                                   targetTrue: "Tokyo",
                                   neighborhood: [.init(prompt: "The capital city of China is", answer: "Beijing")])

    /// A temporary folder and the shared statistics file (collected on first use over ~20 KB of WikiText).
    func prepare() throws -> (dir: String, stats: String) {
        guard FileManager.default.fileExists(atPath: Self.store), FileManager.default.fileExists(atPath: Self.gguf) else {
            throw XCTSkip("default model not fetched and imported (scripts/fetch-model.sh, scalpel import)")
        }
        guard FileManager.default.fileExists(atPath: Self.wikitext) else { throw XCTSkip("no WikiText sample") }
        if Self.shared == nil {
            let dir = NSTemporaryDirectory() + "scalpel-editlog-real-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            Self.shared = dir
        }
        let stats = Self.shared! + "/smollm2.stats.h5"
        if !FileManager.default.fileExists(atPath: stats) {
            let text = try String(contentsOfFile: Self.wikitext, encoding: .utf8)
            let corpus = Self.shared! + "/corpus.txt"
            try String(text.prefix(20_000)).write(toFile: corpus, atomically: true, encoding: .utf8)
            let m = try ModelFile.open(Self.store)
            let session = EditSession(model: m, plan: StatisticsPlan(corpusFiles: [corpus], path: stats))
            _ = try session.statistics(layer: Self.layer)
        }
        return (try F.tempDir(self), stats)
    }

    /// Edits `requests` in `store` the way `scalpel edit` does (out: a new store, e.g. for a GGUF model).
    @discardableResult
    func edit(_ modelPath: String, _ requests: [EditRequest], stats: String, out: String? = nil) throws -> [EditEntry] {
        let m = try ModelFile.open(modelPath)
        let session = EditSession(model: m, plan: StatisticsPlan(path: stats))
        let writer = try EditLogWriter(model: m, out: out, toolVersion: "test")
        return try requests.map { try session.editAndRecord($0, hparams: ROMEHyperParameters(layer: Self.layer), writer: writer).entry! }
    }

    func nll(_ m: ModelFile, _ r: EditRequest) throws -> (new: Double, true: Double) {
        let x = try EditEvaluator.meanNLL(model: m.model, tokenizer: m.tokenizer,
                                          pairs: [(r.filledPrompt, r.targetNew), (r.filledPrompt, r.targetTrue!)])
        return (x[0], x[1])
    }

    /// Edit three facts, revert the second: the model gives the first and third new answers and the second old one,
    /// and the edited matrix is base + edits 1 and 3 bitwise. The audit passes (behaviour and statistics included).
    func testThreeEditsRevertTheSecond() throws {
        let (dir, stats) = try prepare()
        let store = dir + "/model.h5"
        try FileManager.default.copyItem(atPath: Self.store, toPath: store)
        let base = try ModelFile.open(store)
        for r in [Self.eiffel, Self.darrieux, Self.japan] {
            let x = try nll(base, r)
            XCTAssertLessThan(x.true, x.new, "the model should know \(r.subject) → \(r.targetTrue!)")
        }
        let entries = try edit(store, [Self.eiffel, Self.darrieux, Self.japan], stats: stats)
        XCTAssertEqual(entries.map(\.id), ["e0001", "e0002", "e0003"])
        for e in entries { XCTAssertEqual(e.metricsAfter.efficacy, 1, "\(e.subject)") }
        // The statistics are checked only against a file the user names (audit never opens entry-named paths).
        var report = try EditAuditor.audit(path: store, options: AuditOptions(statsPath: stats))
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.edits.map(\.stats), ["verified", "verified", "verified"])

        let r = try EditLog.revert("e0002", path: store, toolVersion: "test")
        XCTAssertEqual(r.activeOnParameter, ["e0001", "e0003"])
        let m = try ModelFile.open(store)
        XCTAssertEqual(m.appliedEdits, ["e0001", "e0003"])
        for (req, edited) in [(Self.eiffel, true), (Self.darrieux, false), (Self.japan, true)] {
            let x = try nll(m, req)
            if edited {
                XCTAssertLessThan(x.new, x.true, "\(req.subject) should now be \(req.targetNew)")
            } else {
                XCTAssertLessThan(x.true, x.new, "\(req.subject) should be \(req.targetTrue!) again")
            }
        }
        let expected = try F.expectedMatrix(store, layer: Self.layer, ids: ["e0001", "e0003"])
        XCTAssertEqual(F.bits(m.model.weights.values(.wDown(Self.layer))), F.bits(expected))
        // The base is untouched.
        XCTAssertEqual(try HDF5File(openingForReading: store).root.dataset("weights/blk.\(Self.layer).ffn_down.weight").valuesSHA256(),
                       try HDF5File(openingForReading: Self.store).root.dataset("weights/blk.\(Self.layer).ffn_down.weight").valuesSHA256())
        report = try EditAuditor.audit(path: store)
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.edits.map(\.behaviour), ["holds", "reverted", "holds"])
        XCTAssertEqual(report.edits.map(\.chain), ["verified", "verified", "context changed"])
    }

    /// A then B rewriting the same fact back: the audit reports A broken by B. Also covers recording edits of a GGUF
    /// model into a new store (import, then log) and the refusal to edit a GGUF without --out.
    func testInterferenceOfAnEditThatRewritesTheFactBack() throws {
        let (dir, stats) = try prepare()
        let gguf = try ModelFile.open(Self.gguf)
        XCTAssertThrowsError(try EditLogWriter(model: gguf, out: nil, toolVersion: "test")) {
            XCTAssertEqual($0 as? EditingError, .storeRequired(path: Self.gguf))
        }
        let store = dir + "/from-gguf.h5"
        // Statistics belong to the source checkpoint (same hash for the GGUF and its import).
        try edit(Self.gguf, [Self.eiffel], stats: stats, out: store)
        XCTAssertTrue(try EditAuditor.audit(path: store).passed)
        var back = Self.eiffel
        back.targetNew = "Paris"; back.targetTrue = "Rome"
        try edit(store, [back], stats: stats)
        let report = try EditAuditor.audit(path: store)
        XCTAssertFalse(report.passed)
        let finding = report.problems.first { $0.check == .behaviour && $0.id == "e0001" }
        XCTAssertTrue(finding?.message.contains("INTERFERENCE") == true, F.problems(report))
        XCTAssertEqual(report.edits.map(\.brokenBy), [["e0002"], []])
        XCTAssertTrue(report.problems.allSatisfy { $0.check == .behaviour }, F.problems(report))
        try EditLog.revert("e0002", path: store, toolVersion: "test")
        XCTAssertTrue(try EditAuditor.audit(path: store).passed)
    }
}
