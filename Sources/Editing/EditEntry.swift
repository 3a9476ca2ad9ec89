import Foundation
import Llama

/// A status change of an edit-log entry (`status_history`).
public struct EditStatusChange: Codable, Equatable, Sendable {
    /// "active" or "reverted".
    public var status: String
    /// ISO 8601 UTC time.
    public var at: String
    public var toolVersion: String
    enum CodingKeys: String, CodingKey { case status, at, toolVersion = "tool_version" }
    public init(status: String, at: String, toolVersion: String) {
        self.status = status; self.at = at; self.toolVersion = toolVersion
    }
}

/// The CounterFact measures of an edit at one moment (`metrics_before` / `metrics_after`), as stored: the summary
/// scores and, per prompt, P(new), P(true) and (neighbourhood) the model's top answer. Scores without prompts and
/// probabilities of absent targets are nil (JSON null).
public struct EditMetrics: Codable, Equatable, Sendable {
    public struct Prompt: Codable, Equatable, Sendable {
        public var prompt: String
        public var pNew: Double?
        public var pTrue: Double?
        /// The greedy next token after the prompt (neighbourhood prompts).
        public var topAnswer: String?
        enum CodingKeys: String, CodingKey { case prompt, pNew = "p_new", pTrue = "p_true", topAnswer = "top_answer" }
    }
    public var efficacy: Double?
    public var efficacyMagnitude: Double?
    public var paraphrase: Double?
    public var paraphraseMagnitude: Double?
    public var neighborhood: Double?
    public var neighborhoodMagnitude: Double?
    public var rewrite: [Prompt]
    public var paraphrases: [Prompt]
    public var neighborhoodPrompts: [Prompt]

    enum CodingKeys: String, CodingKey {
        case efficacy, efficacyMagnitude = "efficacy_magnitude", paraphrase, paraphraseMagnitude = "paraphrase_magnitude"
        case neighborhood, neighborhoodMagnitude = "neighborhood_magnitude", rewrite, paraphrases
        case neighborhoodPrompts = "neighborhood_prompts"
    }

    public init(scores s: EditScores, neighborAnswers: [String]) {
        func finite(_ x: Double) -> Double? { x.isFinite ? x : nil }
        func prompts(_ xs: [EditScores.Pair], answers: [String]? = nil) -> [Prompt] {
            xs.enumerated().map { i, p in
                Prompt(prompt: p.prompt, pNew: finite(p.probNew), pTrue: p.nllTrue.isFinite ? p.probTrue : nil,
                       topAnswer: answers.flatMap { i < $0.count ? $0[i] : nil })
            }
        }
        efficacy = finite(s.efficacy); efficacyMagnitude = finite(s.efficacyMagnitude)
        paraphrase = finite(s.paraphrase); paraphraseMagnitude = finite(s.paraphraseMagnitude)
        neighborhood = finite(s.neighborhoodScore); neighborhoodMagnitude = finite(s.neighborhoodMagnitude)
        rewrite = prompts(s.rewrite); paraphrases = prompts(s.paraphrases)
        neighborhoodPrompts = prompts(s.neighborhood, answers: neighborAnswers)
    }

    public init(efficacy: Double? = nil, rewrite: [Prompt] = [], paraphrases: [Prompt] = [], neighborhoodPrompts: [Prompt] = []) {
        self.efficacy = efficacy; self.rewrite = rewrite; self.paraphrases = paraphrases
        self.neighborhoodPrompts = neighborhoodPrompts
    }

    /// Canonical JSON (sorted keys).
    public var json: String { EditEntry.jsonString(self) }
}

/// One ROME edit as recorded in a model store's edit log (`/edits/{id}`); see `EditLogSchema` for the layout.
///
/// The factors are what `ModelFile.open` applies: W(parameter) += lambda ⊗ u. Everything else documents the edit:
/// the request, hyper-parameters, statistics used, the affected matrix's hashes just before and after, and the
/// measured behaviour. `entry_sha256` covers all of it (`EditLogRecord.computedSHA256`).
public struct EditEntry: Equatable, Sendable {
    public var id: String
    /// ISO 8601 UTC.
    public var created: String
    /// "ROME" (original update) or "r-ROME" (consistent k*).
    public var method: String
    /// `ROMEHyperParameters` as JSON.
    public var hparamsJSON: String
    public var layer: Int
    /// GGUF name of the edited matrix, e.g. `blk.4.ffn_down.weight`.
    public var parameter: String
    /// The request as JSON (Scalpel's layout, `EditRequest.from(json:)` reads it).
    public var requestJSON: String
    public var subject: String
    public var targetNew: String
    public var targetTrue: String?
    public var toolVersion: String
    /// "active" or "reverted".
    public var status: String
    public var statusHistory: [EditStatusChange]
    /// `KeyStatistics.hash` of the statistics used, and the file they were read from (absolute path).
    public var statsSHA256: String
    public var statsPath: String
    /// SHA-256 of the affected matrix's float32 bytes in the effective model just before and after the edit.
    public var weightSHA256Before: String
    public var weightSHA256After: String
    public var metricsBefore: EditMetrics
    public var metricsAfter: EditMetrics
    /// Ids of the entries that were active when this one was made (the context of the weight hashes).
    public var activeBefore: [String]
    /// Rank-one factors (u [cols], lambda [rows]) and ROME's k* [F] and v* [D].
    public var u: [Float]
    public var lambda: [Float]
    public var key: [Float]
    public var value: [Float]
    /// `entry_sha256` as stored (nil for an entry not yet written).
    public var entrySHA256: String?

    public var isActive: Bool { status == EditLogSchema.active }

    /// The request, parsed from `requestJSON`.
    public var request: EditRequest? {
        guard let o = try? JSONSerialization.jsonObject(with: Data(requestJSON.utf8)) as? [String: Any] else { return nil }
        return try? EditRequest.from(json: o)
    }

    /// The hyper-parameters, decoded from `hparamsJSON`.
    public var hyperParameters: ROMEHyperParameters? {
        try? JSONDecoder().decode(ROMEHyperParameters.self, from: Data(hparamsJSON.utf8))
    }

    /// "Paris → Rome" style summary.
    public var change: String { "\(targetTrue ?? "?") → \(targetNew)" }

    public init(id: String, created: String, method: String, hparamsJSON: String, layer: Int, parameter: String,
                requestJSON: String, subject: String, targetNew: String, targetTrue: String?, toolVersion: String,
                status: String, statusHistory: [EditStatusChange], statsSHA256: String, statsPath: String,
                weightSHA256Before: String, weightSHA256After: String, metricsBefore: EditMetrics, metricsAfter: EditMetrics,
                activeBefore: [String], u: [Float], lambda: [Float], key: [Float], value: [Float], entrySHA256: String? = nil) {
        self.id = id; self.created = created; self.method = method; self.hparamsJSON = hparamsJSON; self.layer = layer
        self.parameter = parameter; self.requestJSON = requestJSON; self.subject = subject; self.targetNew = targetNew
        self.targetTrue = targetTrue; self.toolVersion = toolVersion; self.status = status; self.statusHistory = statusHistory
        self.statsSHA256 = statsSHA256; self.statsPath = statsPath; self.weightSHA256Before = weightSHA256Before
        self.weightSHA256After = weightSHA256After; self.metricsBefore = metricsBefore; self.metricsAfter = metricsAfter
        self.activeBefore = activeBefore; self.u = u; self.lambda = lambda; self.key = key; self.value = value
        self.entrySHA256 = entrySHA256
    }

    /// The entry for a ROME edit just made by `EditSession.edit` (status active).
    /// - Parameters:
    ///   - weightSHA256Before/After: the edited matrix's hash in the model just before and after `ROME.apply`.
    ///   - activeBefore: ids of the log's entries active in the model the edit was made on.
    public init(id: String, outcome o: EditOutcome, hparams: ROMEHyperParameters, statistics: KeyStatistics,
                statsPath: String, weightSHA256Before: String, weightSHA256After: String, activeBefore: [String],
                toolVersion: String, created: String = KeyStatistics.now()) {
        let r = o.request
        self.init(id: id, created: created, method: hparams.consistentKey ? "r-ROME" : "ROME",
                  hparamsJSON: EditEntry.jsonString(hparams), layer: o.result.layer,
                  parameter: LlamaParameter.wDown(o.result.layer).ggufName, requestJSON: EditEntry.requestJSON(r),
                  subject: r.subject, targetNew: r.targetNew, targetTrue: r.targetTrue, toolVersion: toolVersion,
                  status: EditLogSchema.active,
                  statusHistory: [EditStatusChange(status: EditLogSchema.active, at: created, toolVersion: toolVersion)],
                  statsSHA256: statistics.hash, statsPath: statsPath, weightSHA256Before: weightSHA256Before,
                  weightSHA256After: weightSHA256After,
                  metricsBefore: EditMetrics(scores: o.before, neighborAnswers: o.neighborAnswersBefore),
                  metricsAfter: EditMetrics(scores: o.after, neighborAnswers: o.neighborAnswersAfter),
                  activeBefore: activeBefore, u: o.result.u, lambda: o.result.lambda, key: o.result.key, value: o.result.value)
    }

    // MARK: Stored form

    /// The entry as stored attributes and datasets.
    public var record: EditLogRecord {
        var a: [String: EditLogRecord.Value] = [
            "id": .string(id), "created": .string(created), "method": .string(method), "hparams": .string(hparamsJSON),
            "layer": .int(layer), "parameter": .string(parameter), "request": .string(requestJSON),
            "subject": .string(subject), "target_new": .string(targetNew), "tool_version": .string(toolVersion),
            "status": .string(status), "status_history": .string(EditEntry.jsonString(statusHistory)),
            "stats_sha256": .string(statsSHA256), "stats_path": .string(statsPath),
            "weight_sha256_before": .string(weightSHA256Before), "weight_sha256_after": .string(weightSHA256After),
            "metrics_before": .string(metricsBefore.json), "metrics_after": .string(metricsAfter.json),
            "active_before": .string(EditEntry.jsonString(activeBefore)),
        ]
        if let targetTrue { a["target_true"] = .string(targetTrue) }
        return EditLogRecord(groupName: id, attributes: a, datasets: ["u": u, "lambda": lambda, "key": key, "value": value],
                             storedSHA256: entrySHA256)
    }

    /// What keeps `record` from being a well-formed entry: missing or mistyped attributes, unparsable JSON, unknown
    /// members, missing datasets. (Integrity and applicability: `EditLogReader.applicationProblems`.)
    public static func schemaProblems(_ r: EditLogRecord) -> [String] {
        let at = "/edits/\(r.groupName)"
        var out: [String] = []
        for name in EditLogSchema.stringAttributes where r.attributes[name] == nil || r.string(name) == nil {
            if r.attributes[name] == nil && EditLogSchema.optionalAttributes.contains(name) { continue }
            out.append(r.attributes[name] == nil ? "\(at): attribute \(name) is missing" : "\(at): attribute \(name) is not a string")
        }
        for name in EditLogSchema.intAttributes where r.int(name) == nil {
            out.append(r.attributes[name] == nil ? "\(at): attribute \(name) is missing" : "\(at): attribute \(name) is not an integer")
        }
        let known = Set(EditLogSchema.stringAttributes + EditLogSchema.intAttributes)
        for name in r.attributes.keys.sorted() where !known.contains(name) { out.append("\(at): unexpected attribute \(name)") }
        for name in EditLogSchema.datasets where r.datasets[name] == nil { out.append("\(at): dataset \(name) is missing") }
        for name in r.datasets.keys.sorted() where !EditLogSchema.datasets.contains(name) { out.append("\(at): unexpected dataset \(name)") }
        for name in r.unreadable { out.append("\(at): unexpected member \(name) (not a string/integer attribute or 1-D float32 dataset)") }
        func decodes<T: Decodable>(_ name: String, _ t: T.Type) {
            guard let s = r.string(name) else { return }
            if (try? JSONDecoder().decode(T.self, from: Data(s.utf8))) == nil { out.append("\(at): \(name) is not valid JSON") }
        }
        decodes("hparams", ROMEHyperParameters.self)
        decodes("metrics_before", EditMetrics.self)
        decodes("metrics_after", EditMetrics.self)
        decodes("active_before", [String].self)
        decodes("status_history", [EditStatusChange].self)
        if let s = r.string("request") {
            let o = try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any]
            if o.flatMap({ try? EditRequest.from(json: $0) }) == nil { out.append("\(at): request is not a valid edit request") }
        }
        if let l = r.int("layer"), let p = r.parameterName, p != LlamaParameter.wDown(l).ggufName {
            out.append("\(at): parameter \(p) is not layer \(l)'s MLP output matrix")
        }
        return out
    }

    /// Reads an entry from its stored form. Throws `EditingError.editLogCorrupt` listing what is missing or malformed.
    public init(record r: EditLogRecord, path: String = "") throws {
        let problems = EditEntry.schemaProblems(r)
        guard problems.isEmpty, let layer = r.int("layer") else {
            throw EditingError.editLogCorrupt(path: path, problem: problems.joined(separator: "; "))
        }
        func s(_ k: String) -> String { r.string(k) ?? "" }
        func decode<T: Decodable>(_ k: String, _ t: T.Type) throws -> T { try JSONDecoder().decode(T.self, from: Data(s(k).utf8)) }
        self.init(id: s("id"), created: s("created"), method: s("method"), hparamsJSON: s("hparams"), layer: layer,
                  parameter: s("parameter"), requestJSON: s("request"), subject: s("subject"), targetNew: s("target_new"),
                  targetTrue: r.string("target_true"), toolVersion: s("tool_version"), status: s("status"),
                  statusHistory: try decode("status_history", [EditStatusChange].self), statsSHA256: s("stats_sha256"),
                  statsPath: s("stats_path"), weightSHA256Before: s("weight_sha256_before"),
                  weightSHA256After: s("weight_sha256_after"), metricsBefore: try decode("metrics_before", EditMetrics.self),
                  metricsAfter: try decode("metrics_after", EditMetrics.self),
                  activeBefore: try decode("active_before", [String].self), u: r.datasets["u"] ?? [],
                  lambda: r.datasets["lambda"] ?? [], key: r.datasets["key"] ?? [], value: r.datasets["value"] ?? [],
                  entrySHA256: r.storedSHA256)
    }

    // MARK: JSON helpers

    /// Canonical JSON of an Encodable value (sorted keys, no escaped slashes).
    static func jsonString<T: Encodable>(_ v: T) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? e.encode(v)) ?? Data("null".utf8), as: UTF8.self)
    }

    /// A request in Scalpel's JSON layout (absent optional fields omitted), as a JSON-serializable object.
    public static func requestObject(_ r: EditRequest) -> [String: Any] {
        var d: [String: Any] = ["subject": r.subject, "prompt": r.prompt, "target_new": r.targetNew, "paraphrases": r.paraphrases,
                                "neighborhood": r.neighborhood.map { n -> [String: Any] in
                                    var o: [String: Any] = ["prompt": n.prompt]
                                    if let a = n.answer { o["answer"] = a }
                                    return o
                                }]
        if let t = r.targetTrue { d["target_true"] = t }
        if let c = r.caseID { d["case_id"] = c }
        return d
    }

    /// `requestObject` as canonical JSON text.
    public static func requestJSON(_ r: EditRequest) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: requestObject(r), options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
