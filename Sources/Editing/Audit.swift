import Foundation
import HDF5Store
import Hashing
import Llama

/// What `EditAuditor.audit` checks.
///
/// The audit reads only the store and the files given here: never a path named inside the store (an entry's
/// `stats_path` is information, not something to open).
public struct AuditOptions: Sendable {
    /// Statistics file to check `stats_sha256` against; nil skips the check (reported, not passed).
    public var statsPath: String?
    /// Re-run each active edit's prompts on the effective model (efficacy, neighbourhood, interference).
    public var checkBehaviour: Bool
    /// The head digest recorded outside the store (`scalpel edit` / `scalpel log` print it); a mismatch fails.
    public var expectedDigest: HeadDigest?
    /// The checkpoint the store was imported from: its hash, config, tokenizer and every base weight are compared.
    public var sourcePath: String?
    /// A signature of the expected head digest (`HeadDigest.signature`) and the key it was made with.
    public var signature: String?
    public var key: [UInt8]?
    public init(statsPath: String? = nil, checkBehaviour: Bool = true, expectedDigest: HeadDigest? = nil,
                sourcePath: String? = nil, signature: String? = nil, key: [UInt8]? = nil) {
        self.statsPath = statsPath; self.checkBehaviour = checkBehaviour; self.expectedDigest = expectedDigest
        self.sourcePath = sourcePath; self.signature = signature; self.key = key
    }
}

/// One line of an audit: a problem (the audit fails) or information.
public struct AuditFinding: Equatable, Sendable {
    public enum Severity: String, Sendable { case problem, info }
    /// (a) base weights, the log as a whole, (b) one entry, (c) the replayed chain, (d) statistics, (e) behaviour,
    /// (f) the head digest, (g) its signature, (h) the source checkpoint.
    public enum Check: String, Sendable { case weights, log, entry, chain, stats, behaviour, digest, signature, source }
    public var severity: Severity
    public var check: Check
    /// The entry concerned, if any.
    public var id: String?
    public var message: String

    public init(_ severity: Severity, _ check: Check, id: String? = nil, _ message: String) {
        self.severity = severity; self.check = check; self.id = id; self.message = message
    }

    /// `PROBLEM [chain] e0002: …` / `info [stats] …`.
    public var line: String {
        (severity == .problem ? "PROBLEM" : "info") + " [\(check.rawValue)] " + (id.map { "\($0): " } ?? "") + message
    }

    public var json: [String: Any] {
        var d: [String: Any] = ["severity": severity.rawValue, "check": check.rawValue, "message": message]
        if let id { d["id"] = id }
        return d
    }
}

/// Per-entry results of an audit.
public struct EditAudit: Sendable {
    public var id: String
    public var status: String
    /// "The Eiffel Tower: Paris → Rome".
    public var summary: String
    public var layer: Int?
    /// "verified" or "does not verify".
    public var entry = "verified"
    /// "verified", "context changed", "mismatch" or "not checked".
    public var chain = "not checked"
    /// "verified", "mismatch", "damaged", "unavailable", "skipped" (no `--stats` file) or "not checked".
    public var stats = "not checked"
    /// "holds", "broken", "never held", "not checked" or "reverted".
    public var behaviour = "not checked"
    /// Later active edits after which this one stopped holding.
    public var brokenBy: [String] = []
    /// Current P(target_new) and P(target_true) on the request's prompt (when behaviour was checked).
    public var pNew: Double?
    public var pTrue: Double?

    public var json: [String: Any] {
        var d: [String: Any] = ["id": id, "status": status, "summary": summary, "entry": entry, "chain": chain,
                                "stats": stats, "behaviour": behaviour, "broken_by": brokenBy]
        if let layer { d["layer"] = layer }
        if let pNew { d["p_new"] = pNew }
        if let pTrue { d["p_true"] = pTrue }
        return d
    }
}

/// The result of `scalpel audit`.
public struct AuditReport: Sendable {
    public var path: String
    /// Base weights whose `sha256` was compared, those among them that did not match, and those without one.
    public var weightsChecked = 0
    public var weightsModified: [String] = []
    public var weightsUnrecorded = 0
    /// The store's head digest (`HeadDigest`), computed before anything else is read.
    public var headDigest = ""
    /// Base weights compared with the source checkpoint (0 without `--source`).
    public var sourceCompared = 0
    public var edits: [EditAudit] = []
    public var findings: [AuditFinding] = []

    public init(path: String) { self.path = path }

    public var problems: [AuditFinding] { findings.filter { $0.severity == .problem } }
    public var passed: Bool { problems.isEmpty }

    /// Throws `EditingError.auditFailed` listing the problems, unless the audit passed.
    public func requirePassed() throws {
        if !passed { throw EditingError.auditFailed(path: path, problems: problems.map(\.line)) }
    }

    public var json: [String: Any] {
        ["path": path, "passed": passed, "head_digest": headDigest, "source_compared": sourceCompared,
         "weights": ["checked": weightsChecked, "modified": weightsModified, "unrecorded": weightsUnrecorded],
         "edits": edits.map(\.json), "findings": findings.map(\.json),
         "problems": problems.map(\.line), "info": findings.filter { $0.severity == .info }.map(\.line)]
    }
}

/// Verifies a model store and its edit log: (a) base weight hashes, (b) every entry's `entry_sha256` and the log's
/// `log_sha256`, (c) the chain (replaying the active edits from the base reproduces each entry's recorded matrix
/// hashes, where its context is unchanged), (d) statistics hashes, (e) behaviour and interference.
public enum EditAuditor {
    public static func audit(path: String, options: AuditOptions = AuditOptions(),
                             progress: (String) -> Void = { _ in }) throws -> AuditReport {
        var report = AuditReport(path: path)
        func add(_ s: AuditFinding.Severity, _ c: AuditFinding.Check, _ id: String? = nil, _ m: String) {
            report.findings.append(AuditFinding(s, c, id: id, m))
        }
        guard ["h5", "hdf5"].contains((path as NSString).pathExtension.lowercased()) else {
            throw EditingError.storeRequired(path: path)
        }
        // (f, g) The head digest first: what the rest of the audit reads is what it covers.
        progress("computing the head digest")
        let digest = try HeadDigest.compute(path: path)
        report.headDigest = digest.hex
        report.findings += AuditAnchors.digestFindings(actual: digest, expected: options.expectedDigest)
        report.findings += AuditAnchors.signatureFindings(actual: digest, signature: options.signature, key: options.key)

        progress("reading base weights")
        let base = try ModelFile.openStore(path, applyEdits: false)
        let config = base.config, weights = base.model.weights
        let h5 = try EditLog.openStore(path)
        defer { try? h5.close() }
        let log = try EditLog.read(path: path)

        // (a) Base weights.
        progress("hashing base weights")
        let params = LlamaParameter.all(config)
        let wg = try h5.root.group("weights")
        let recorded: [String?] = params.map { p in
            guard let d = try? wg.dataset(p.ggufName), d.hasAttribute(ModelStore.weightHashAttribute) else { return nil }
            return try? d.stringAttribute(ModelStore.weightHashAttribute)
        }
        let computed = parallelHashes(weights, params)
        var tampered: [String] = []
        for (i, p) in params.enumerated() {
            guard let r = recorded[i] else { report.weightsUnrecorded += 1; continue }
            report.weightsChecked += 1
            if r != computed[i] { tampered.append(p.ggufName) }
        }
        report.weightsModified = tampered
        // (h) The source checkpoint: the base values recomputed from it (catches a base edit whose hash was rewritten).
        if let source = options.sourcePath {
            let (found, compared) = try AuditAnchors.sourceFindings(sourcePath: source, store: base, hashes: computed,
                                                                    progress: progress)
            report.findings += found
            report.sourceCompared = compared
        }
        for name in tampered {
            add(.problem, .weights, nil, "\(name): values do not match the sha256 recorded at import (the base weights were modified)")
        }
        if report.weightsUnrecorded > 0 {
            let what = "\(report.weightsUnrecorded) base weight\(report.weightsUnrecorded == 1 ? " has" : "s have") no recorded sha256"
            if log.isEmpty {
                add(.info, .weights, nil, what + " (imported before hashes were recorded; the first edit records them)")
            } else {
                add(.problem, .weights, nil, what + " although the store has an edit log (hashes were removed)")
            }
        }

        let leftovers = EditLog.temporaries(besides: path)
        if !leftovers.isEmpty {
            add(.info, .log, nil, "\(leftovers.count) temporary file\(leftovers.count == 1 ? "" : "s") left by interrupted writes "
                + "(the store itself is complete; the next scalpel edit/revert/reapply removes them): "
                + leftovers.map { ($0 as NSString).lastPathComponent }.joined(separator: ", "))
        }

        // (b) The log and its entries.
        if log.isEmpty { add(.info, .log, nil, "no edit log: the store holds the base model only") }
        var structural = false
        if !log.isEmpty {
            if log.format != EditLogSchema.format {
                add(.problem, .log, nil, "/edits: format is \(log.format ?? "missing"), expected \(EditLogSchema.format)"); structural = true
            }
            for name in log.strayMembers { add(.problem, .log, nil, "/edits/\(name): not an edit entry"); structural = true }
            if log.storedLogSHA256 != log.computedLogSHA256 {
                add(.problem, .log, nil, "log_sha256 does not match the list of entries (an entry was added, removed or altered outside scalpel)")
                structural = true
            }
            let numbers = log.records.compactMap { EditLogSchema.number(of: $0.groupName) }
            if let last = numbers.last {
                for n in 1...last where !numbers.contains(n) {
                    add(.problem, .log, EditLogSchema.id(number: n), "missing from the log (ids are consecutive: the entry was deleted)")
                    structural = true
                }
            }
        }
        var entries: [String: EditEntry] = [:]
        var applicable: Set<String> = []
        for r in log.records {
            var audit = EditAudit(id: r.groupName, status: r.status ?? "?", summary: r.string("subject") ?? "?", layer: r.int("layer"))
            let problems = EditLogReader.applicationProblems(r, config: config) + EditEntry.schemaProblems(r)
            if problems.isEmpty { applicable.insert(r.groupName) }
            for p in problems { add(.problem, .entry, r.groupName, p.replacingOccurrences(of: "/edits/\(r.groupName): ", with: "")) }
            if !problems.isEmpty { audit.entry = "does not verify"; structural = true }
            if let e = try? EditEntry(record: r, path: path) {
                entries[r.groupName] = e
                audit.summary = "\(e.subject): \(e.change)"
            }
            report.edits.append(audit)
        }
        func index(_ id: String) -> Int { report.edits.firstIndex { $0.id == id }! }

        // (c) The chain: replay from the base, matrix by matrix.
        progress("replaying the chain")
        let parameterOf = Dictionary(log.records.map { ($0.groupName, $0.parameterName ?? "") }, uniquingKeysWith: { a, _ in a })
        var current: [String: [Float]] = [:]
        var activeOn: [String: [String]] = [:]
        var brokenChain: Set<String> = []  // matrices with an active entry that cannot be replayed
        for r in log.records {
            let id = r.groupName
            guard applicable.contains(id), let e = entries[id], let name = r.parameterName,
                  let p = EditLogReader.parameter(named: name, config: config) else {
                if r.isActive, let name = r.parameterName { brokenChain.insert(name) }
                continue
            }
            if brokenChain.contains(name) {
                add(.info, .chain, id, "not replayed: an earlier active entry on \(name) does not verify")
                continue
            }
            let before = current[name] ?? weights.values(p)
            var after = before
            after.withUnsafeMutableBufferPointer { EditLogReader.applyRankOne(lambda: e.lambda, u: e.u, to: $0) }
            let now = activeOn[name] ?? []
            let then = e.activeBefore.filter { parameterOf[$0] == name || parameterOf[$0] == nil }
            if then == now {
                let hb = SHA256.hex(floats: before), ha = SHA256.hex(floats: after)
                var ok = true
                if hb != e.weightSHA256Before {
                    ok = false
                    add(.problem, .chain, id, "replaying base\(now.isEmpty ? "" : " + " + now.joined(separator: ", ")) gives \(name) "
                        + "sha256 \(hb.prefix(12))…, the entry recorded \(e.weightSHA256Before.prefix(12))… before it")
                }
                if ha != e.weightSHA256After {
                    ok = false
                    add(.problem, .chain, id, "applying its factors gives \(name) sha256 \(ha.prefix(12))…, "
                        + "the entry recorded \(e.weightSHA256After.prefix(12))… after it")
                }
                report.edits[index(id)].chain = ok ? "verified" : "mismatch"
            } else {
                report.edits[index(id)].chain = "context changed"
                add(.info, .chain, id, "context changed: made on top of [\(then.joined(separator: ", "))] on \(name), now "
                    + "[\(now.joined(separator: ", "))] precede it; its recorded hashes are not comparable")
            }
            if r.isActive {
                current[name] = after
                activeOn[name, default: []].append(id)
            }
        }

        // (d) Statistics.
        progress("checking statistics")
        var statsCache: [String: Result<KeyStatistics, Error>] = [:]
        if options.statsPath == nil && !entries.isEmpty {
            add(.info, .stats, nil, "skipped: stats_sha256 not checked (pass --stats FILE; the audit never opens a path named in the store)")
        }
        for r in log.records {
            guard let e = entries[r.groupName] else { continue }
            guard let file = options.statsPath else { report.edits[index(e.id)].stats = "skipped"; continue }
            guard FileManager.default.fileExists(atPath: file) else {
                report.edits[index(e.id)].stats = "unavailable"
                add(.problem, .stats, e.id, "\(file): file not found")
                continue
            }
            let key = "\(file)#\(e.layer)"
            if statsCache[key] == nil { statsCache[key] = Result { try StatsStore.read(path: file, layer: e.layer) } }
            switch statsCache[key]! {
            case let .success(s):
                if s.hash == e.statsSHA256 {
                    report.edits[index(e.id)].stats = "verified"
                } else {
                    report.edits[index(e.id)].stats = "mismatch"
                    add(.problem, .stats, e.id, "\(file) layer \(e.layer) has stats_sha256 \(s.hash.prefix(12))…, the edit used "
                        + "\(e.statsSHA256.prefix(12))… (the statistics changed since the edit)")
                }
            case let .failure(err):
                report.edits[index(e.id)].stats = "damaged"
                add(.problem, .stats, e.id, "\(err)")
            }
        }

        // (e) Behaviour and interference.
        for i in report.edits.indices where report.edits[i].status == EditLogSchema.reverted { report.edits[i].behaviour = "reverted" }
        if options.checkBehaviour && !log.activeIDs.isEmpty {
            if structural {
                add(.info, .behaviour, nil, "not checked: the log does not verify")
            } else {
                progress("checking behaviour")
                try checkBehaviour(log: log, entries: entries, model: base, report: &report)
            }
        }
        return report
    }

    /// SHA-256 of every parameter, on all cores.
    static func parallelHashes(_ w: LlamaWeights, _ params: [LlamaParameter]) -> [String] {
        // Stable pointers into the weight arrays (owned by `w`, not resized while hashing).
        let buffers = params.map { p in w.withParameter(p) { UnsafeRawBufferPointer($0) } }
        var out = [String](repeating: "", count: params.count)
        out.withUnsafeMutableBufferPointer { o in
            let base = o.baseAddress!
            DispatchQueue.concurrentPerform(iterations: buffers.count) { i in (base + i).pointee = SHA256.hex(buffers[i]) }
        }
        return withExtendedLifetime(w) { out }
    }

    /// Whether edit `e` still holds on `model`: efficacy (when it held right after the edit) and the neighbourhood
    /// prompts' top answers (as recorded right after the edit). Returns the failures, and P(new), P(true).
    static func check(_ e: EditEntry, _ r: EditRequest, model: ModelFile) throws -> (failures: [String], pNew: Double?, pTrue: Double?) {
        var failures: [String] = []
        var pNew: Double?, pTrue: Double?
        let m = model.model, tok = model.tokenizer
        if let truth = r.targetTrue {
            let nll = try EditEvaluator.meanNLL(model: m, tokenizer: tok, pairs: [(r.filledPrompt, r.targetNew), (r.filledPrompt, truth)])
            pNew = exp(-nll[0]); pTrue = exp(-nll[1])
            // Only what held right after the edit is expected to hold now (nothing recorded: nothing to compare).
            let heldAfter = e.metricsAfter.rewrite.first.map { ($0.pNew ?? 0) > ($0.pTrue ?? 0) } ?? false
            if heldAfter && !(nll[0] < nll[1]) {
                failures.append(String(format: "P(%@) %.3f ≤ P(%@) %.3f on \"%@\"", r.targetNew, pNew!, truth, pTrue!, r.filledPrompt))
            }
        }
        let recorded = e.metricsAfter.neighborhoodPrompts
        if !recorded.isEmpty, recorded.allSatisfy({ $0.topAnswer != nil }) {
            let now = try EditEvaluator.topAnswers(model: m, tokenizer: tok, prompts: recorded.map(\.prompt))
            for (p, a) in zip(recorded, now) where a != p.topAnswer! {
                failures.append("neighbour \"\(p.prompt)\" now answers \"\(a)\" (was \"\(p.topAnswer!)\")")
            }
        }
        return (failures, pNew, pTrue)
    }

    static func checkBehaviour(log: StoredEditLog, entries: [String: EditEntry], model: ModelFile, report: inout AuditReport) throws {
        let w = model.model.weights, c = model.config
        let active = log.records.filter(\.isActive)
        var baseValues: [String: [Float]] = [:]
        for r in active where baseValues[r.parameterName!] == nil {
            baseValues[r.parameterName!] = w.values(EditLogReader.parameter(named: r.parameterName!, config: c)!)
        }
        func reset() {
            for (name, v) in baseValues { w.setValues(EditLogReader.parameter(named: name, config: c)!, v) }
        }
        func describe(_ id: String) -> String { entries[id].map { "\(id) (\($0.subject): \($0.change))" } ?? id }
        // The effective model: base + every active edit, in order (what ModelFile.open computes).
        for r in active { try EditLogReader.apply(r, to: w) }
        for (k, r) in active.enumerated() {
            let id = r.groupName
            guard let e = entries[id], let req = e.request else { continue }
            let i = report.edits.firstIndex { $0.id == id }!
            let result = try check(e, req, model: model)
            report.edits[i].pNew = result.pNew; report.edits[i].pTrue = result.pTrue
            if let first = e.metricsAfter.rewrite.first, !((first.pNew ?? 0) > (first.pTrue ?? 0)) {
                report.findings.append(AuditFinding(.info, .behaviour, id: id,
                    "did not beat the old answer when it was made (recorded P(new) ≤ P(true)); efficacy not checked"))
            }
            if result.failures.isEmpty { report.edits[i].behaviour = "holds"; continue }
            // Attribution: replay the chain's prefix up to this edit, then add the later edits one at a time.
            reset()
            for a in active[...k] { try EditLogReader.apply(a, to: w) }
            let own = try check(e, req, model: model).failures
            var holding = own.isEmpty, breakers: [String] = []
            for later in active[(k + 1)...] {
                try EditLogReader.apply(later, to: w)
                let holds = try check(e, req, model: model).failures.isEmpty
                if holding && !holds { breakers.append(later.groupName) }
                holding = holds
            }
            report.edits[i].behaviour = "broken"
            report.edits[i].brokenBy = breakers
            let what = "\(e.subject): \(e.change) no longer holds: " + result.failures.joined(separator: "; ")
            if !breakers.isEmpty {
                report.findings.append(AuditFinding(.problem, .behaviour, id: id,
                    "INTERFERENCE: " + what + " — broken by " + breakers.map(describe).joined(separator: ", ")))
            } else {
                let then = e.activeBefore, now = active[..<k].map(\.groupName)
                let context = then == now ? "with the same earlier edits active as when it was made"
                    : "made on top of [\(then.joined(separator: ", "))], now [\(now.joined(separator: ", "))] precede it"
                report.findings.append(AuditFinding(.problem, .behaviour, id: id,
                    what + " — it already fails right after itself in the current chain (" + context + ")"))
            }
        }
        reset()
        for r in active { try EditLogReader.apply(r, to: w) }
    }
}
