import ArgumentParser
import Foundation
import Editing
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
            """)
    @OptionGroup var model: ModelOptions
    @Option(help: "Statistics file for the stats check (default: each entry's stats_path, else the file beside the store).")
    var stats: String?
    @Flag(help: "Skip the behaviour check (structural checks only; no forward passes).") var noBehaviour = false
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let path = try model.model ?? ModelFile.defaultPath()
        let report = try EditAuditor.audit(path: path, options: AuditOptions(statsPath: stats, checkBehaviour: !noBehaviour),
                                           progress: { if !json { note("audit: \($0)") } })
        if json {
            try printJSON(report.json)
        } else {
            print("\(path)")
            let modified = report.weightsModified.count
            print("  base weights  \(report.weightsChecked - modified) of \(report.weightsChecked) match their recorded sha256"
                  + (modified > 0 ? ", \(modified) MODIFIED" : "")
                  + (report.weightsUnrecorded > 0 ? ", \(report.weightsUnrecorded) unrecorded" : ""))
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
