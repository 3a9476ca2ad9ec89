import Foundation
import XCTest
import HDF5Store
import Hashing
import Llama
@testable import Editing

/// What an attacker with write access to a store does, one helper per attack. The edit log is reached only here
/// (and in `EditLogFixtures`), so a change of where the log lives is adapted in one place.
enum AuditTamper {
    /// Rewrites one tokenizer token ("b" → "B": one flipped bit, 0x62 → 0x42). Tokenization changes; nothing in the
    /// store records a hash of the tokenizer.
    static func flipTokenizerBit(store: String) throws {
        try HDF5File.updateAtomically(at: store) { h5 in
            let tg = try h5.root.group("tokenizer")
            var tokens = try tg.readStrings("tokens")
            let i = tokens.firstIndex(of: "b")!
            tokens[i] = String(decoding: Array(tokens[i].utf8).map { $0 ^ 0x20 }, as: UTF8.self)
            try tg.writeStrings(tokens, to: "tokens", overwrite: true)
        }
    }

    /// Hides a rank-one edit in base matrix `name` and rewrites its `sha256` attribute to match, as someone who knows
    /// the format would. Returns the new values.
    @discardableResult
    static func rehashedBaseEdit(store: String, name: String) throws -> [Float] {
        var w: [Float] = []
        try HDF5File.updateAtomically(at: store) { h5 in
            let g = try h5.root.group("weights")
            let d = try g.dataset(name)
            w = try d.read(as: Float.self)
            let rows = d.shape[0], cols = d.shape[1]
            for i in 0..<rows { for j in 0..<cols { w[i * cols + j] += 0.02 * Float(i % 3) * Float(j % 4 == 0 ? 1 : 0) } }
            try g.write(w, shape: d.shape, to: name, options: HDF5WriteOptions(overwrite: true))
            try g.dataset(name).setAttribute(ModelStore.weightHashAttribute, SHA256.hex(floats: w))
        }
        return w
    }

    /// Rewrites entry `id`'s subject and new target (a false record of what was edited), then recomputes its
    /// `entry_sha256` and the log's `log_sha256` so that every hash inside the store verifies.
    static func forgeEntry(store: String, id: String) throws {
        try HDF5File.updateAtomically(at: EditLogFixtures.logFile(store)) { h5 in
            var log = try EditLogReader.read(h5)
            let k = log.records.firstIndex { $0.groupName == id }!
            log.records[k].attributes["subject"] = .string("somebody else")
            log.records[k].attributes["target_new"] = .string("berlin")
            log.records[k].storedSHA256 = try log.records[k].write(to: h5)
            _ = try EditLog.writeLogHeader(h5, entries: log.records.map { ($0.groupName, $0.storedSHA256!) })
        }
    }

    /// Deletes the whole edit log: the sidecar file `NAME.edits.h5` when the store has one, else its `/edits` group.
    static func deleteLog(store: String) throws {
        let log = EditLogFixtures.logFile(store)
        if log != store { try FileManager.default.removeItem(atPath: log); return }
        try HDF5File.updateAtomically(at: store) { try $0.root.delete(EditLogSchema.groupName) }
    }

    /// Changes one attribute of a group (`/config`, `/provenance`, root).
    static func setAttribute(store: String, group: String, name: String, _ value: Double) throws {
        try HDF5File.updateAtomically(at: store) { try (group == "/" ? $0.root : $0.root.group(group)).setAttribute(name, value) }
    }
    static func setAttribute(store: String, group: String, name: String, _ value: String) throws {
        try HDF5File.updateAtomically(at: store) { try (group == "/" ? $0.root : $0.root.group(group)).setAttribute(name, value) }
    }
}

final class AuditAnchorTests: XCTestCase {
    typealias F = EditLogFixtures
    typealias T = AuditTamper

    /// A store with two synthetic edits on layer 1.
    func editedStore(_ dir: String, name: String = "clean.h5") throws -> String {
        let store = dir + "/" + name
        try F.makeStore(store)
        try F.appendSynthetic(store, layer: 1, seed: 1)
        try F.appendSynthetic(store, layer: 1, seed: 2)
        return store
    }

    func copy(_ store: String, _ name: String) throws -> String {
        let p = (store as NSString).deletingLastPathComponent + "/" + name
        try EditLogFixtures.copyStore(store, to: p)
        return p
    }

    func audit(_ store: String, _ options: AuditOptions) throws -> AuditReport {
        var o = options
        o.checkBehaviour = false
        return try EditAuditor.audit(path: store, options: o)
    }

    func digestProblems(_ r: AuditReport) -> [AuditFinding] { r.problems.filter { $0.check == .digest } }

    func testExpectPassesOnAnUntouchedStoreAndTheDigestIsStable() throws {
        let dir = try F.tempDir(self), store = try editedStore(dir)
        let d = try HeadDigest.compute(path: store)
        XCTAssertEqual(d.hex.count, 64)
        XCTAssertEqual(try HeadDigest.compute(path: store), d)
        // The digest covers contents, not the file's name or place.
        XCTAssertEqual(try HeadDigest.compute(path: try copy(store, "moved.h5")), d)
        let report = try EditAuditor.audit(path: store, options: AuditOptions(expectedDigest: d))
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.headDigest, d.hex)
        XCTAssertTrue(report.findings.contains { $0.check == .digest && $0.severity == .info })
        // A legitimate change (a revert) gives a new digest; the old one no longer matches.
        try EditLog.revert("e0002", path: store, toolVersion: "test")
        let after = try HeadDigest.compute(path: store)
        XCTAssertNotEqual(after, d)
        XCTAssertEqual(digestProblems(try audit(store, AuditOptions(expectedDigest: d))).count, 1)
        XCTAssertTrue(try audit(store, AuditOptions(expectedDigest: after)).passed)
        // Parsing what the user types.
        XCTAssertEqual(HeadDigest.parse("  " + d.hex.uppercased() + "\n"), d)
        XCTAssertNil(HeadDigest.parse(String(d.hex.dropLast())))
        XCTAssertNil(HeadDigest.parse(String(d.hex.dropLast()) + "g"))
    }

    /// The documented serialization, written out by hand for a minimal store and hashed with SHA-256 (tested on
    /// the NIST vectors): the digest must be exactly that.
    func testDigestIsTheDocumentedSerialization() throws {
        let dir = try F.tempDir(self), path = dir + "/minimal.h5"
        try HDF5File.createAtomically(at: path) { h5 in
            try h5.root.setAttribute("format", "scalpel-model")
            let tg = try h5.root.createGroup("tokenizer")
            try tg.writeStrings(["a", "bc"], to: "tokens")
            try tg.write([Int32(3)], shape: [1], to: "t")
            try tg.setAttribute("add_bos", true)
            try tg.setAttribute("rope", 0.5)
            let wg = try h5.root.createGroup("weights")
            try wg.write([Float(1), 2], shape: [2], to: "w")
            try wg.dataset("w").setAttribute("sha256", "x")
        }
        var bytes = Array("scalpel-head-digest 1\nG 1:/\nA 6:format s 13:scalpel-model\n".utf8)
        bytes += Array("G 10:/tokenizer\nA 7:add_bos i 1 1\nA 4:rope f 1 3fe0000000000000\n".utf8)
        bytes += Array("D 12:/tokenizer/t [1] i32\n".utf8) + [3, 0, 0, 0] + Array("\n".utf8)
        bytes += Array("D 17:/tokenizer/tokens [2] str 2\n1:a\n2:bc\n".utf8)
        bytes += Array("G 8:/weights\nW 10:/weights/w [2]\nA 6:sha256 s 1:x\nL none\n".utf8)
        XCTAssertEqual(try HeadDigest.compute(path: path).hex, bytes.withUnsafeBytes { SHA256.hex($0) })
    }

    func testExpectCatchesATokenizerBitFlip() throws {
        let dir = try F.tempDir(self), clean = try editedStore(dir)
        let d = try HeadDigest.compute(path: clean)
        let store = try copy(clean, "tok.h5")
        try T.flipTokenizerBit(store: store)
        XCTAssertNotEqual(try ModelFile.open(store).tokenizer.vocabulary, try ModelFile.open(clean).tokenizer.vocabulary)
        // Nothing inside the store covers the tokenizer: the plain audit passes ...
        XCTAssertTrue(try audit(store, AuditOptions()).passed)
        // ... the anchored one does not, with exactly one problem line.
        let report = try audit(store, AuditOptions(expectedDigest: d))
        XCTAssertEqual(report.problems.count, 1, F.problems(report))
        XCTAssertEqual(digestProblems(report).count, 1)
        let line = report.problems.first?.line ?? ""
        XCTAssertTrue(line.hasPrefix("PROBLEM [digest] head digest is"), line)
    }

    func testExpectCatchesConfigProvenanceAndRootChanges() throws {
        let dir = try F.tempDir(self), clean = try editedStore(dir)
        let d = try HeadDigest.compute(path: clean)
        let cases: [(String, (String) throws -> Void)] = [
            ("rope", { try T.setAttribute(store: $0, group: "config", name: "rope_base", 10000.000001) }),
            ("eps", { try T.setAttribute(store: $0, group: "config", name: "rms_eps", 2e-5) }),
            ("prov", { try T.setAttribute(store: $0, group: "provenance", name: "source_sha256", String(repeating: "00", count: 32)) }),
            ("root", { try T.setAttribute(store: $0, group: "/", name: "architecture", "llama ") }),
            ("pre", { try T.setAttribute(store: $0, group: "tokenizer", name: "pre", "default") }),
        ]
        for (name, tamper) in cases {
            let store = try copy(clean, name + ".h5")
            try tamper(store)
            XCTAssertNotEqual(try HeadDigest.compute(path: store), d, name)
        }
    }

    func testExpectAndSourceCatchARehashedBaseEdit() throws {
        let dir = try F.tempDir(self)
        // A store imported from a GGUF, as users make them, then edited.
        let base = dir + "/synthetic.h5", gguf = dir + "/synthetic.gguf", clean = dir + "/clean.h5"
        try F.makeStore(base)
        try ModelExport.gguf(try ModelFile.open(base), to: gguf, dtype: .f32, toolVersion: "test")
        try ModelStore.importGGUF(gguf, to: clean, toolVersion: "test")
        try F.appendSynthetic(clean, layer: 1, seed: 1)
        let d = try HeadDigest.compute(path: clean)
        let untouched = try audit(clean, AuditOptions(expectedDigest: d, sourcePath: gguf))
        XCTAssertTrue(untouched.passed, F.problems(untouched))
        XCTAssertEqual(untouched.sourceCompared, LlamaParameter.all(F.tiny).count)

        // A rank-one change hidden in a matrix no entry touches, with its recorded hash rewritten.
        let store = try copy(clean, "rehashed.h5")
        let w = try T.rehashedBaseEdit(store: store, name: "blk.0.ffn_down.weight")
        XCTAssertEqual(try F.dataset(store, "weights/blk.0.ffn_down.weight"), w)
        XCTAssertTrue(try audit(store, AuditOptions()).passed, "the hashes inside the store all agree")
        let anchored = try audit(store, AuditOptions(expectedDigest: d))
        XCTAssertEqual(anchored.problems.map(\.check), [.digest], F.problems(anchored))
        // Without the digest, the source checkpoint catches it and names the matrix.
        let sourced = try audit(store, AuditOptions(sourcePath: gguf))
        XCTAssertEqual(sourced.problems.count, 1, F.problems(sourced))
        XCTAssertEqual(sourced.problems.first?.check, .source)
        XCTAssertTrue(sourced.problems.first?.message.contains("blk.0.ffn_down.weight") == true, F.problems(sourced))
        // --source also catches a tokenizer changed behind its back, and a different checkpoint.
        let tok = try copy(clean, "tok.h5")
        try T.flipTokenizerBit(store: tok)
        XCTAssertTrue(try audit(tok, AuditOptions(sourcePath: gguf)).problems.contains { $0.message.contains("tokenizer differs") })
        let other = dir + "/other.gguf"
        try F.makeStore(dir + "/other.h5", seed: 99)
        try ModelExport.gguf(try ModelFile.open(dir + "/other.h5"), to: other, dtype: .f32, toolVersion: "test")
        let wrong = try audit(clean, AuditOptions(sourcePath: other))
        XCTAssertTrue(wrong.problems.contains { $0.message.contains("sha256") && $0.message.contains("provenance") }, F.problems(wrong))
        XCTAssertGreaterThan(wrong.problems.filter { $0.message.contains("base values differ") }.count, 10)
    }

    func testExpectCatchesAForgedEntryWithRecomputedHashes() throws {
        let dir = try F.tempDir(self), clean = try editedStore(dir)
        let d = try HeadDigest.compute(path: clean)
        let store = try copy(clean, "forged.h5")
        try T.forgeEntry(store: store, id: "e0001")
        XCTAssertEqual(try EditLog.entries(path: store).first?.subject, "somebody else")
        XCTAssertTrue(try audit(store, AuditOptions()).passed, "every hash inside the store was recomputed")
        XCTAssertNoThrow(try ModelFile.open(store))
        let report = try audit(store, AuditOptions(expectedDigest: d))
        XCTAssertEqual(report.problems.map(\.check), [.digest], F.problems(report))
    }

    func testExpectCatchesADeletedLog() throws {
        let dir = try F.tempDir(self), clean = try editedStore(dir)
        let d = try HeadDigest.compute(path: clean)
        let store = try copy(clean, "nolog.h5")
        try T.deleteLog(store: store)
        XCTAssertTrue(try EditLog.read(path: store).isEmpty)
        XCTAssertTrue(try audit(store, AuditOptions()).passed, "a store without a log is a valid base store")
        let report = try audit(store, AuditOptions(expectedDigest: d))
        XCTAssertEqual(report.problems.map(\.check), [.digest], F.problems(report))
        // A never-edited store's digest (no log) differs from both.
        let fresh = dir + "/fresh.h5"
        try F.makeStore(fresh)
        XCTAssertNotEqual(try HeadDigest.compute(path: fresh), d)
    }

    func testSignatureVerifiesOnlyWithTheKeyAndTheUntouchedStore() throws {
        let dir = try F.tempDir(self), clean = try editedStore(dir)
        let key = Array("a secret kept outside the store".utf8)
        let d = try HeadDigest.compute(path: clean)
        let sig = d.signature(key: key)
        // Independent statement: HMAC-SHA256 (tested on RFC 4231) of the digest's 32 raw bytes.
        XCTAssertEqual(sig, HMACSHA256.hex(HMACTestBytes.fromHex(d.hex), key: key))
        XCTAssertTrue(try audit(clean, AuditOptions(signature: sig, key: key)).passed)
        XCTAssertTrue(try audit(clean, AuditOptions(signature: sig.uppercased(), key: key)).passed)
        let wrongKey = try audit(clean, AuditOptions(signature: sig, key: key + [1]))
        XCTAssertEqual(wrongKey.problems.map(\.check), [.signature])
        let store = try copy(clean, "forged.h5")
        try T.forgeEntry(store: store, id: "e0002")
        XCTAssertEqual(try audit(store, AuditOptions(signature: sig, key: key)).problems.map(\.check), [.signature])
        XCTAssertEqual(try audit(clean, AuditOptions(signature: "zz", key: key)).problems.map(\.check), [.signature])
        // Key files: too short is refused with one line.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/short.key"))
        XCTAssertThrowsError(try HeadDigest.readKey(path: dir + "/short.key")) { e in
            XCTAssertTrue("\(e)".contains("at least 16"), "\(e)")
        }
    }

    /// An entry naming a file (`stats_path`) never makes the audit open it: without `--stats` the check is skipped.
    func testAuditNeverOpensAPathNamedInAnEntry() throws {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5"
        try F.makeStore(store)
        // A FIFO: opening it for reading would block the audit forever.
        let fifo = dir + "/trap.stats.h5"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        try F.appendSynthetic(store, layer: 1, seed: 1, stats: (String(repeating: "ab", count: 32), fifo))
        try F.appendSynthetic(store, layer: 1, seed: 2, stats: (String(repeating: "ab", count: 32), "/etc/shadow"))
        let report = try audit(store, AuditOptions())
        XCTAssertTrue(report.passed, F.problems(report))
        XCTAssertEqual(report.edits.map(\.stats), ["skipped", "skipped"])
        XCTAssertTrue(report.findings.contains { $0.check == .stats && $0.message.hasPrefix("skipped") })
    }
}

/// The commands on a generated store: `log` prints the digest (and signature), `audit --expect` exits non-zero with
/// one PROBLEM line when the store changed.
final class AuditAnchorCLITests: XCTestCase {
    typealias F = EditLogFixtures

    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try F.scalpelBinary())
        p.arguments = args
        let dir = NSTemporaryDirectory() + "scalpel-cli-\(UUID().uuidString)"
        FileManager.default.createFile(atPath: dir + ".out", contents: nil)
        FileManager.default.createFile(atPath: dir + ".err", contents: nil)
        defer { try? FileManager.default.removeItem(atPath: dir + ".out"); try? FileManager.default.removeItem(atPath: dir + ".err") }
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + ".out"))
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + ".err"))
        try p.run()
        p.waitUntilExit()
        let read = { String(decoding: FileManager.default.contents(atPath: $0) ?? Data(), as: UTF8.self) }
        XCTAssertEqual(p.terminationReason, .exit, "no signal")
        return (p.terminationStatus, read(dir + ".out"), read(dir + ".err"))
    }

    /// The audit reads one consistent state: while a writer holds the store's lock it waits, and with
    /// `--wait-lock 0` it refuses in one line instead of reading a store that is being replaced.
    func testAuditHoldsTheStoreLock() throws {
        let dir = try F.tempDir(self), store = dir + "/s.h5"
        try F.makeStore(store)
        try F.appendSynthetic(store, layer: 1, seed: 1)
        let lock = try EditLog.lock(store, wait: 0)
        let busy = try run(["audit", "--model", store, "--no-behaviour", "--wait-lock", "0"])
        XCTAssertEqual(busy.status, 1, busy.out + busy.err)
        XCTAssertTrue(busy.err.contains("another scalpel process"), busy.err)
        XCTAssertEqual(busy.err.split(separator: "\n").count, 1, busy.err)
        lock.release()
        let free = try run(["audit", "--model", store, "--no-behaviour", "--wait-lock", "0"])
        XCTAssertEqual(free.status, 0, free.out + free.err)
    }

    func testLogPrintsTheDigestAndAuditExpectFailsWithOneProblemLine() throws {
        let dir = try F.tempDir(self), store = dir + "/s.h5"
        try F.makeStore(store)
        try F.appendSynthetic(store, layer: 1, seed: 1)
        let key = dir + "/k.key"
        try Data((0..<32).map { UInt8($0 * 7 & 0xff) }).write(to: URL(fileURLWithPath: key))
        let log = try run(["log", "--model", store, "--key-file", key])
        XCTAssertEqual(log.status, 0, log.err)
        let digest = try HeadDigest.compute(path: store).hex
        XCTAssertTrue(log.out.contains("head digest \(digest)"), log.out)
        let sigLine = log.out.split(separator: "\n").first { $0.hasPrefix("signature") }.map(String.init) ?? ""
        let sig = String(sigLine.split(separator: " ").last ?? "")
        XCTAssertEqual(sig.count, 64, log.out)
        let json = try run(["log", "--model", store, "--json"])
        let obj = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any]
        XCTAssertEqual(obj?["head_digest"] as? String, digest)

        let ok = try run(["audit", "--model", store, "--expect", digest, "--key-file", key, "--signature", sig, "--no-behaviour"])
        XCTAssertEqual(ok.status, 0, ok.out + ok.err)
        XCTAssertTrue(ok.out.contains("audit passed"), ok.out)

        try AuditTamper.forgeEntry(store: store, id: "e0001")
        let bad = try run(["audit", "--model", store, "--expect", digest, "--no-behaviour"])
        XCTAssertEqual(bad.status, 1, bad.out + bad.err)
        XCTAssertEqual(bad.out.split(separator: "\n").filter { $0.hasPrefix("PROBLEM") }.count, 1, bad.out)
        XCTAssertTrue(bad.out.contains("PROBLEM [digest]"), bad.out)
        let badSig = try run(["audit", "--model", store, "--key-file", key, "--signature", sig, "--no-behaviour"])
        XCTAssertEqual(badSig.status, 1)
        XCTAssertTrue(badSig.out.contains("PROBLEM [signature]"), badSig.out)
        // Bad input: one line, exit 1, before anything is read.
        let typo = try run(["audit", "--model", store, "--expect", "abc"])
        XCTAssertNotEqual(typo.status, 0)
        XCTAssertTrue(typo.err.contains("64 hex digits"), typo.err)
        let half = try run(["audit", "--model", store, "--signature", sig])
        XCTAssertNotEqual(half.status, 0)
        XCTAssertTrue(half.err.contains("go together"), half.err)
    }
}

/// Hex decoding for the tests (independent of `HeadDigest`).
enum HMACTestBytes {
    static func fromHex(_ hex: String) -> [UInt8] {
        var out: [UInt8] = [], i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }
}
