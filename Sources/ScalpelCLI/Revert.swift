import ArgumentParser
import Foundation
import Editing
import Llama

/// `scalpel revert ID` / `scalpel reapply ID`: flip an edit's status in the log (one atomic transaction).
struct RevertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revert",
        abstract: "Revert an edit: the effective model becomes the base plus the remaining active edits, exactly.",
        discussion: "The entry stays in the log (status reverted) and can be reapplied with `scalpel reapply`. "
            + "Nothing is subtracted: the effective model is recomputed from the base weights.")
    @Argument(help: "The edit's id (see `scalpel log`), e.g. e0002.") var id: String
    @OptionGroup var model: ModelOptions
    @OptionGroup var lockOptions: LockOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws { try changeStatus(id: id, to: "reverted", model: model, lock: lockOptions, json: json) }
}

struct ReapplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reapply",
        abstract: "Reapply a reverted edit (its recorded factors, in its place in the log's order).")
    @Argument(help: "The edit's id (see `scalpel log`), e.g. e0002.") var id: String
    @OptionGroup var model: ModelOptions
    @OptionGroup var lockOptions: LockOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws { try changeStatus(id: id, to: "active", model: model, lock: lockOptions, json: json) }
}

func changeStatus(id: String, to status: String, model: ModelOptions, lock: LockOptions, json: Bool) throws {
    // A symbolic link is resolved: the status changes in its target, and the link stays a link.
    let path = try model.input().path
    let r = try EditLog.setStatus(id, to: status, path: path, toolVersion: ScalpelVersion.string, wait: lock.waitLock,
                                  waiting: note)
    let e = r.entry
    if json {
        return try printJSON(["store": path, "id": e.id, "status": e.status, "changed": r.changed, "parameter": e.parameter,
                              "active_on_parameter": r.activeOnParameter, "effective_sha256": r.effectiveSHA256])
    }
    let verb = status == "reverted" ? "reverted" : "reapplied"
    print(r.changed ? "\(e.id) \(verb): \(e.subject): \(e.change) (layer \(e.layer))"
          : "\(e.id) is already \(e.status); nothing changed")
    let chain = (["base"] + r.activeOnParameter).joined(separator: " + ")
    print("  \(e.parameter) = \(chain)  (sha256 \(r.effectiveSHA256.prefix(16))…)")
}
