import ArgumentParser
import Foundation
import Editing
import HDF5Store
import Llama

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Verify a model store and its edit log; exits non-zero naming each problem.",
        discussion: """
            Checks (a) every base weight against the sha256 recorded at import, (b) every log entry against its \\
            entry_sha256 and the log against log_sha256, (c) the chain: replaying the active edits from the base \\
            reproduces each entry's recorded matrix hashes (where the same earlier edits are active as when it was \\
            made), (d) statistics: the layer's KeyStatistics hash equals the entry's stats_sha256, (e) behaviour: \\
            every active edit still beats the old answer on its prompt and leaves its neighbourhood prompts' top \\
            answers as recorded; an edit broken by later edits is reported as INTERFERENCE, naming them.
            Anchored outside the store (an attacker who can write the store can rewrite every hash inside it): \
            --expect DIGEST compares the store's head digest (printed by `scalpel edit` and `scalpel log`; it covers \
            the base weights' hashes, tokenizer, config, provenance and the whole edit log, so a deleted log changes \
            it too), --key-file F --signature SIG verifies its HMAC-SHA256 signature, and --source MODEL.gguf \
            recomputes the base weights, tokenizer and config from the original checkpoint. The audit only opens the \
            store and the files given here, never a path named inside the store. See docs/trust.md.
            """)
    @OptionGroup var model: ModelOptions
    @Option(help: "Statistics file for the stats check (without it the check is skipped; paths recorded in the store are never opened).")
    var stats: String?
    @Option(help: "The head digest recorded when the store was last changed (64 hex digits); any difference fails.")
    var expect: String?
    @Option(help: "The checkpoint (.gguf) the store was imported from: compare its sha256, config, tokenizer and every base weight.")
    var source: String?
    @Option(help: "Key file (kept outside the store) for --signature.") var keyFile: String?
    @Option(help: "HMAC-SHA256 signature of the head digest (printed by `scalpel log --key-file F`); needs --key-file.")
    var signature: String?
    @Flag(help: "Skip the behaviour check (structural checks only; no forward passes).") var noBehaviour = false
    @OptionGroup var lockOptions: LockOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        var options = AuditOptions(statsPath: stats, checkBehaviour: !noBehaviour, sourcePath: source, signature: signature)
        if let expect {
            guard let d = HeadDigest.parse(expect) else {
                throw ValidationError("--expect must be a head digest: 64 hex digits, as printed by `scalpel log` (got \"\(expect)\")")
            }
            options.expectedDigest = d
        }
        if (signature == nil) != (keyFile == nil) { throw ValidationError("--signature and --key-file go together") }
        if let keyFile { options.key = try HeadDigest.readKey(path: keyFile) }
        let path = try model.input().path
        // The store's lock is held for the whole audit, so no writer replaces the store or its log between the audit's
        // passes (one consistent state is reported). A store in a folder without write access is audited without it.
        var lock: FileLock?
        do { lock = try lockOptions.lock(path) } catch let e as HDF5Error {
            if case .locked = e { throw e }
            if !json { note("audit: reading without the store's lock (\(e))") }
        }
        defer { lock?.release() }
        let report = try EditAuditor.audit(path: path, options: options, progress: { if !json { note("audit: \($0)") } })
        if json {
            try printJSON(report.json)
        } else {
            print("\(path)")
            print("  head digest   \(report.headDigest)")
            let modified = report.weightsModified.count
            print("  base weights  \(report.weightsChecked - modified) of \(report.weightsChecked) match their recorded sha256"
                  + (modified > 0 ? ", \(modified) MODIFIED" : "")
                  + (report.weightsUnrecorded > 0 ? ", \(report.weightsUnrecorded) unrecorded" : ""))
            if report.sourceCompared > 0 {
                let differ = report.problems.filter { $0.check == .source }.count
                print("  source        \(report.sourceCompared) base weights compared with \(source ?? "")"
                      + (differ > 0 ? ", \(differ) PROBLEM\(differ == 1 ? "" : "S")" : ", all equal"))
            }
            if !report.edits.isEmpty {
                print("  edits         \(report.edits.count) (\(report.edits.filter { $0.status == "active" }.count) active)")
            }
            for e in report.edits {
                var line = "  \(e.id)  \(e.status.padding(toLength: 8, withPad: " ", startingAt: 0)) \(e.summary)"
                line += "\n         entry \(e.entry), chain \(e.chain), stats \(e.stats), behaviour \(e.behaviour)"
                if !e.brokenBy.isEmpty { line += " by \(e.brokenBy.joined(separator: ", "))" }
                if let pn = e.pNew, let pt = e.pTrue { line += String(format: " (P(new) %.3f, P(true) %.3f)", pn, pt) }
                print(line)
            }
            for f in report.findings { print(f.line) }
            print(report.passed ? "audit passed" : "audit FAILED: \(report.problems.count) problem\(report.problems.count == 1 ? "" : "s")")
        }
        try report.requirePassed()
    }
}
