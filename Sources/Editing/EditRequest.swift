import Foundation

/// One fact to rewrite: "{subject} … {prompt}" → target_new (was target_true).
///
/// Accepted JSON layouts (`from(json:)`, which reads the subject without surrounding whitespace): Scalpel's
/// (`subject`, `prompt` with `{}` for the subject, `target_new`, optional `target_true`, `paraphrases`,
/// `neighborhood`), CounterFact as distributed with EasyEdit (`prompt` containing the subject, in any case,
/// `ground_truth`, `rephrase_prompt`, `locality_prompt`, `locality_ground_truth`), and ROME's own CounterFact records
/// (`requested_rewrite` with `target_new.str`).
public struct EditRequest: Codable, Equatable, Sendable {
    public var subject: String
    /// The prompt with `{}` where the subject goes.
    public var prompt: String
    public var targetNew: String
    public var targetTrue: String?
    /// Other phrasings of the same fact (should move with the edit).
    public var paraphrases: [String]
    /// Prompts about other subjects (should keep their answers), each with its expected answer when known.
    public var neighborhood: [NeighborPrompt]
    /// An identifier carried from the dataset (e.g. CounterFact's case_id).
    public var caseID: Int?

    public struct NeighborPrompt: Codable, Equatable, Sendable {
        public var prompt: String
        public var answer: String?
        public init(prompt: String, answer: String? = nil) { self.prompt = prompt; self.answer = answer }
    }

    public init(subject: String, prompt: String, targetNew: String, targetTrue: String? = nil,
                paraphrases: [String] = [], neighborhood: [NeighborPrompt] = [], caseID: Int? = nil) {
        self.subject = subject; self.prompt = prompt; self.targetNew = targetNew; self.targetTrue = targetTrue
        self.paraphrases = paraphrases; self.neighborhood = neighborhood; self.caseID = caseID
    }

    /// The prompt with the subject filled in.
    public var filledPrompt: String { prompt.replacingOccurrences(of: "{}", with: subject) }

    /// Checks the request can be executed; throws `EditingError.badRequest` naming the problem.
    public func validate() throws {
        func bad(_ why: String) -> EditingError { .badRequest(subject: subject, reason: why) }
        guard !subject.trimmingCharacters(in: .whitespaces).isEmpty else { throw bad("the subject is empty") }
        guard !targetNew.trimmingCharacters(in: .whitespaces).isEmpty else { throw bad("target_new is empty") }
        guard prompt.contains("{}") else { throw bad("the prompt \"\(prompt)\" does not contain the subject") }
        guard prompt.components(separatedBy: "{}").count == 2 else { throw bad("the prompt must contain the subject once") }
        if let t = targetTrue, t == targetNew { throw bad("target_new equals target_true") }
    }

    /// Parses one request from a JSON object in any accepted layout.
    public static func from(json d: [String: Any]) throws -> EditRequest {
        var d = d
        if let rr = d["requested_rewrite"] as? [String: Any] {  // ROME's CounterFact
            var flat: [String: Any] = ["subject": rr["subject"] as Any, "prompt": rr["prompt"] as Any]
            flat["target_new"] = (rr["target_new"] as? [String: Any])?["str"]
            flat["target_true"] = (rr["target_true"] as? [String: Any])?["str"]
            flat["paraphrases"] = d["paraphrase_prompts"]
            flat["neighborhood"] = (d["neighborhood_prompts"] as? [String])?.map { ["prompt": $0, "answer": flat["target_true"] as Any] }
            flat["case_id"] = d["case_id"]
            d = flat
        }
        guard var subject = (d["subject"] as? String)?.trimmingCharacters(in: .whitespacesAndNewlines) else {
            throw EditingError.badRequest(subject: "?", reason: "missing \"subject\"")
        }
        guard var prompt = d["prompt"] as? String else { throw EditingError.badRequest(subject: subject, reason: "missing \"prompt\"") }
        guard let targetNew = (d["target_new"] as? String) ?? ((d["target_new"] as? [String: Any])?["str"] as? String) else {
            throw EditingError.badRequest(subject: subject, reason: "missing \"target_new\"")
        }
        if !prompt.contains("{}") {
            // CounterFact (EasyEdit layout) spells the subject out in the prompt, possibly in another case ("the
            // Eiffel Tower" in "The Eiffel Tower is …"): the prompt's spelling becomes the subject.
            guard !subject.isEmpty, let r = prompt.range(of: subject) ?? prompt.range(of: subject, options: .caseInsensitive) else {
                throw EditingError.badRequest(subject: subject, reason: "the prompt \"\(prompt)\" does not contain the subject")
            }
            subject = String(prompt[r])
            prompt.replaceSubrange(r, with: "{}")
        }
        var paraphrases = (d["paraphrases"] as? [String]) ?? []
        if let rp = d["rephrase_prompt"] as? String { paraphrases.append(rp) }
        var neighbors: [NeighborPrompt] = []
        if let list = d["neighborhood"] as? [Any] {
            for item in list {
                if let s = item as? String { neighbors.append(NeighborPrompt(prompt: s, answer: nil)) }
                if let o = item as? [String: Any], let p = o["prompt"] as? String {
                    neighbors.append(NeighborPrompt(prompt: p, answer: o["answer"] as? String))
                }
            }
        }
        if let lp = d["locality_prompt"] as? String {
            neighbors.append(NeighborPrompt(prompt: lp, answer: d["locality_ground_truth"] as? String))
        }
        let truth = (d["target_true"] as? String) ?? (d["ground_truth"] as? String)
        let r = EditRequest(subject: subject, prompt: prompt, targetNew: targetNew, targetTrue: truth,
                            paraphrases: paraphrases, neighborhood: neighbors, caseID: d["case_id"] as? Int)
        try r.validate()
        return r
    }

    /// Reads requests from a file: one JSON object, a JSON array, or JSON Lines.
    public static func load(path: String) throws -> [EditRequest] {
        guard let data = FileManager.default.contents(atPath: path) else { throw EditingError.fileNotFound(path: path) }
        let text = String(decoding: data, as: UTF8.self)
        do {
            let obj = try JSONSerialization.jsonObject(with: data)
            if let list = obj as? [[String: Any]] { return try list.map { try from(json: $0) } }
            if let one = obj as? [String: Any] { return [try from(json: one)] }
        } catch let e as EditingError { throw e } catch {
            // Not a single JSON document: try JSON Lines.
            var out: [EditRequest] = []
            for (i, line) in text.split(separator: "\n").enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                    throw EditingError.badRequestFile(path: path, reason: "line \(i + 1) is not a JSON object")
                }
                out.append(try from(json: o))
            }
            if !out.isEmpty { return out }
        }
        throw EditingError.badRequestFile(path: path, reason: "expected a JSON object, an array of objects, or JSON Lines")
    }

    /// JSON object in Scalpel's layout.
    public var json: [String: Any] {
        var d: [String: Any] = ["subject": subject, "prompt": prompt, "target_new": targetNew, "paraphrases": paraphrases,
                                "neighborhood": neighborhood.map { ["prompt": $0.prompt, "answer": $0.answer as Any] }]
        if let targetTrue { d["target_true"] = targetTrue }
        if let caseID { d["case_id"] = caseID }
        return d
    }
}
