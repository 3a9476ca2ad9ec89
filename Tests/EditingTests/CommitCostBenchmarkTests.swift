import Foundation
import XCTest
import HDF5Store
import Hashing
import Llama
@testable import Editing

/// The cost of one commit on the real 271 MB SmolLM2 store, the old way (copy the store, append, rename) against the
/// sidecar (rewrite the log file only). Opt-in: `SCALPEL_COMMIT_BENCH=1` (copies the store to the temp folder).
final class CommitCostBenchmarkTests: XCTestCase {
    /// Bytes this process has written so far (`/proc/self/io` wchar).
    func bytesWritten() -> Int {
        let text = (try? String(contentsOfFile: "/proc/self/io", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").first { $0.hasPrefix("wchar:") }.flatMap { Int($0.split(separator: " ")[1]) } ?? -1
    }

    func testOneCommitOnTheRealStore() throws {
        guard ProcessInfo.processInfo.environment["SCALPEL_COMMIT_BENCH"] == "1" else {
            throw XCTSkip("set SCALPEL_COMMIT_BENCH=1 to time one commit on the real store")
        }
        let source = EditLogFixtures.root.appendingPathComponent("weights/\(ModelFile.defaultStoreName)").path
        guard FileManager.default.fileExists(atPath: source) else { throw XCTSkip("\(source) missing") }
        let dir = try EditLogFixtures.tempDir(self), store = dir + "/s.h5"
        try AtomicFile.copy(from: source, to: store)
        let h5 = try HDF5File(openingForReading: store)
        let config = try ModelStore.configuration(h5)
        try h5.close()
        // One entry of the real size: u, key [F = 1536], lambda, value [D = 576], the usual attributes.
        var rng = SeededRandom(seed: 1)
        let f = config.ffnDim, d = config.dModel
        var attributes: [String: EditLogRecord.Value] = [:]
        for name in EditLogSchema.stringAttributes { attributes[name] = .string(String(repeating: "x", count: 200)) }
        attributes["id"] = .string("e0001"); attributes["status"] = .string("active")
        attributes["parameter"] = .string(LlamaParameter.wDown(3).ggufName); attributes["layer"] = .int(3)
        let record = EditLogRecord(groupName: "e0001", attributes: attributes, datasets: [
            "u": (0..<f).map { _ in Float(rng.normal()) }, "key": (0..<f).map { _ in Float(rng.normal()) },
            "lambda": (0..<d).map { _ in Float(rng.normal()) }, "value": (0..<d).map { _ in Float(rng.normal()) }])

        var w0 = bytesWritten(), t0 = Date()
        try HDF5File.updateAtomically(at: store) { h5 in
            let hash = try record.write(to: h5)
            _ = try EditLog.writeLogHeader(h5, entries: [(record.groupName, hash)])
        }
        let old = (seconds: Date().timeIntervalSince(t0), bytes: bytesWritten() - w0)
        w0 = bytesWritten(); t0 = Date()
        _ = try EditLog.writeSidecar(forStore: store, records: [record], carriedOver: nil)
        let new = (seconds: Date().timeIntervalSince(t0), bytes: bytesWritten() - w0)
        let sidecar = try FileManager.default.attributesOfItem(atPath: EditLogSchema.sidecarPath(forStore: store))[.size] as? Int ?? 0
        print(String(format: "commit cost on the %.0f MB store: copy+append %.2f s, %d bytes written; sidecar %.3f s, %d bytes written (file %d bytes)",
                     Double(try FileManager.default.attributesOfItem(atPath: source)[.size] as? Int ?? 0) / 1e6,
                     old.seconds, old.bytes, new.seconds, new.bytes, sidecar))
        XCTAssertLessThan(new.bytes, 1_000_000)
        XCTAssertGreaterThan(old.bytes, 200_000_000)
    }
}
