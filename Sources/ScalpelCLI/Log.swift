import ArgumentParser
import Foundation
import Editing
import Llama

struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "List the edits recorded in a model store: id, time, subject, old → new, layer, status.",
        discussion: """
            Also prints the store's head digest: one SHA-256 over its base weights' hashes, tokenizer, config, \
            provenance and the whole edit log. Keep it outside the store; `scalpel audit --expect DIGEST` fails if \
            anything it covers changed. --key-file F also prints its HMAC-SHA256 signature under the key in F \
            (verify with `scalpel audit --key-file F --signature SIG`).
            """)
    @OptionGroup var model: ModelOptions
    @Option(help: "Key file (kept outside the store): also print the head digest's HMAC-SHA256 signature.")
    var keyFile: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let path = try model.model ?? ModelFile.defaultPath()
        let key = try keyFile.map { try HeadDigest.readKey(path: $0) }
        let log = try EditLog.read(path: path)
        // A log that does not verify (e.g. an entry group deleted behind scalpel's back) is listed as far as it can be
        // read, then reported: exit 1, never "no edits".
        var broken: Error? = nil
        do { try EditLog.requireIntact(path: path) } catch { broken = error }
        let digest = try HeadDigest.compute(path: path)
        let signature = key.map { digest.signature(key: $0) }
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
                           "log_sha256": log.storedLogSHA256 ?? NSNull(), "verifies": broken == nil,
                           "head_digest": digest.hex, "signature": signature ?? NSNull()])
            if let broken { throw broken }
            return
        }
        if let broken {
            for l in lines { print(l) }
            print("head digest \(digest.hex)")
            throw broken
        }
        if log.records.isEmpty {
            print("\(path): no edits (the store holds the base model)")
        } else {
            print("\(path): \(log.records.count) edit\(log.records.count == 1 ? "" : "s"), \(log.activeIDs.count) active")
            for l in lines { print(l) }
        }
        print("head digest \(digest.hex)")
        if let signature { print("signature   \(signature)") }
    }
}
