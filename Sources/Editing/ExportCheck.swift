import Foundation
import Llama

/// Whether one edit still holds in an exported file: the store's recorded behaviour checks (what `scalpel audit`
/// checks, part (e)) run on the model before export and on the exported file loaded back through the normal loader.
public struct EditSurvival: Sendable, Equatable {
    public var id: String
    public var subject: String
    /// "target_true → target_new".
    public var change: String
    /// The request's prompt with the subject filled in.
    public var prompt: String
    /// P(target_new), P(target_true) on `prompt` (mean per-token probability as the audit computes it; nil without a
    /// true target) before and after the export.
    public var pNewBefore: Double
    public var pTrueBefore: Double?
    public var pNewAfter: Double
    public var pTrueAfter: Double?
    /// Checks that fail before / after export (efficacy when it held right after the edit; neighbour prompts' top
    /// answers as recorded right after the edit).
    public var failuresBefore: [String]
    public var failuresAfter: [String]

    /// "survived" (every check passes on the exported file), "lost" (passed before export, fails after) or
    /// "broken before export" (already failing on the model that was exported).
    public var verdict: String {
        if failuresAfter.isEmpty { return "survived" }
        return failuresBefore.isEmpty ? "lost" : "broken before export"
    }

    public var survived: Bool { failuresAfter.isEmpty }

    public var summary: [String: Any] {
        var s: [String: Any] = ["id": id, "subject": subject, "change": change, "prompt": prompt, "verdict": verdict,
                                "survived": survived, "p_new_before": pNewBefore, "p_new_after": pNewAfter,
                                "failures_before": failuresBefore, "failures_after": failuresAfter]
        s["p_true_before"] = pTrueBefore.map { $0 as Any } ?? NSNull()
        s["p_true_after"] = pTrueAfter.map { $0 as Any } ?? NSNull()
        return s
    }
}

/// The behaviour checks an export re-runs on the file it wrote.
public enum ExportCheck {
    /// The active edits applied to `m` (from its store's log, read through `EditLog.entries`), in application order;
    /// empty for a model with no edits (a GGUF, a base-only store).
    public static func appliedEntries(of m: ModelFile) throws -> [EditEntry] {
        guard !m.appliedEdits.isEmpty else { return [] }
        let byID = Dictionary(try EditLog.entries(path: m.path).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        return m.appliedEdits.compactMap { byID[$0] }
    }

    /// Runs each entry's checks on `before` (the exported model) and `after` (the exported file, loaded back).
    public static func survival(of entries: [EditEntry], before: ModelFile, after: ModelFile) throws -> [EditSurvival] {
        try entries.compactMap { (e: EditEntry) -> EditSurvival? in
            guard let r = e.request else { return nil }
            let b = try check(e, r, on: before), a = try check(e, r, on: after)
            return EditSurvival(id: e.id, subject: e.subject, change: e.change, prompt: r.filledPrompt,
                                pNewBefore: b.pNew, pTrueBefore: b.pTrue, pNewAfter: a.pNew, pTrueAfter: a.pTrue,
                                failuresBefore: b.failures, failuresAfter: a.failures)
        }
    }

    /// The audit's behaviour checks of `e` on `model` (`EditAuditor.check`, one owner of the rule): efficacy (P(new) >
    /// P(true) on the prompt, when it held right after the edit) and the neighbour prompts' greedy answers (as recorded
    /// right after the edit). P(new) is measured here too for requests without a true target.
    static func check(_ e: EditEntry, _ r: EditRequest, on model: ModelFile) throws -> (failures: [String], pNew: Double, pTrue: Double?) {
        let c = try EditAuditor.check(e, r, model: model)
        let pNew = try c.pNew ?? exp(-EditEvaluator.meanNLL(model: model.model, tokenizer: model.tokenizer,
                                                             pairs: [(r.filledPrompt, r.targetNew)])[0])
        return (c.failures, pNew, c.pTrue)
    }
}
