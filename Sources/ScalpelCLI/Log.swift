import ArgumentParser
import Foundation
import Editing
import Llama

struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "List the edits recorded in a model store: id, time, subject, old → new, layer, status.")
    @OptionGroup var model: ModelOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let path = try model.model ?? ModelFile.defaultPath()
        let log = try EditLog.read(path: path)
        // A log that does not verify (e.g. an entry group deleted behind scalpel's back) is listed as far as it can be
        // read, then reported: exit 1, never "no edits".
        var broken: Error? = nil
        do { try EditLog.requireIntact(path: path) } catch { broken = error }
        var rows: [[String: Any]] = []
        var lines: [String] = []
        for r in log.records {
            let entry = try? EditEntry(record: r, path: path)
            let verifies = r.verifies
            var row: [String: Any] = ["id": r.groupName, "status": r.status ?? NSNull(), "verifies": verifies]
            if let e = entry {
                row["created"] = e.created; row["subject"] = e.subject; row["target_new"] = e.targetNew
                row["target_true"] = e.targetTrue ?? NSNull(); row["layer"] = e.layer; row["parameter"] = e.parameter
                row["method"] = e.method; row["entry_sha256"] = e.entrySHA256 ?? NSNull()
                row["efficacy_after"] = e.metricsAfter.efficacy ?? NSNull()
                lines.append(String(format: "%@  %@  %-8@  layer %-3d %@: %@", e.id, e.created, e.status, e.layer, e.subject, e.change)
                             + (verifies ? "" : "   [does not verify: run scalpel audit]"))
            } else {
                lines.append("\(r.groupName)  (malformed entry: run scalpel audit)")
            }
            rows.append(row)
        }
        if json {
            try printJSON(["store": path, "edits": rows, "active": log.activeIDs,
                           "log_sha256": log.storedLogSHA256 ?? NSNull(), "verifies": broken == nil])
            if let broken { throw broken }
            return
        }
        if let broken {
            for l in lines { print(l) }
            throw broken
        }
        if log.records.isEmpty { print("\(path): no edits (the store holds the base model)"); return }
        print("\(path): \(log.records.count) edit\(log.records.count == 1 ? "" : "s"), \(log.activeIDs.count) active")
        for l in lines { print(l) }
    }
}
