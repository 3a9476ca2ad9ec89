import Foundation
import Llama

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

    /// Size limits of a request, checked before any model is loaded (bytes) and after tokenizing (tokens). A target
    /// is a short answer: ROME optimizes v* for every target token in every context prompt, so a long target costs
    /// time and memory in proportion (10,000 characters took over 300 s and 4.3 GB).
    public enum Limits {
        /// Tokens of `target_new` (and `target_true`) at most.
        public static let targetTokens = 64
        /// Tokens of the subject at most.
        public static let subjectTokens = 64
        /// Tokens of the filled prompt, and of each paraphrase and neighbourhood prompt, at most.
        public static let promptTokens = 256
        /// Bytes (UTF-8) of the subject and of the targets at most (a loose bound on `targetTokens`).
        public static let targetBytes = 1024
        /// Bytes of a prompt, paraphrase or neighbourhood prompt at most.
        public static let promptBytes = 4096
        /// Paraphrases, and neighbourhood prompts, per request at most.
        public static let prompts = 100
        /// Bytes of a request file at most.
        public static let fileBytes = 512 << 20
    }

    /// Checks the request can be executed, without a tokenizer: non-empty subject and target, a prompt with `{}`
    /// once, distinct targets, the byte and count `Limits`. Throws `EditingError.badRequest` naming the problem.
    /// This is the one owner of request validation (`from(json:)`, `load`, `EditSession`, `ROME` call it).
    public func validate() throws {
        func bad(_ why: String) -> EditingError { .badRequest(subject: EditRequest.shortened(subject), reason: why) }
        guard !subject.trimmingCharacters(in: .whitespaces).isEmpty else { throw bad("the subject is empty") }
        guard !targetNew.trimmingCharacters(in: .whitespaces).isEmpty else { throw bad("target_new is empty") }
        guard prompt.contains("{}") else { throw bad("the prompt \"\(EditRequest.shortened(prompt))\" does not contain the subject") }
        guard prompt.components(separatedBy: "{}").count == 2 else { throw bad("the prompt must contain the subject once") }
        if let t = targetTrue, t == targetNew { throw bad("target_new equals target_true") }
        let sized: [(String, String, Int)] = [("the subject", subject, Limits.targetBytes), ("target_new", targetNew, Limits.targetBytes),
                                              ("target_true", targetTrue ?? "", Limits.targetBytes), ("the prompt", prompt, Limits.promptBytes)]
            + paraphrases.enumerated().map { ("paraphrase \($0.offset + 1)", $0.element, Limits.promptBytes) }
            + neighborhood.enumerated().map { ("neighbourhood prompt \($0.offset + 1)", $0.element.prompt, Limits.promptBytes) }
        for (name, text, limit) in sized where text.utf8.count > limit {
            throw bad("\(name) is \(text.utf8.count) bytes long; at most \(limit) are allowed")
        }
        for (name, list) in [("paraphrases", paraphrases.count), ("neighbourhood prompts", neighborhood.count)] where list > Limits.prompts {
            throw bad("\(list) \(name); at most \(Limits.prompts) are allowed")
        }
        if let i = paraphrases.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces).isEmpty }) { throw bad("paraphrase \(i + 1) is empty") }
        if let i = neighborhood.firstIndex(where: { $0.prompt.trimmingCharacters(in: .whitespaces).isEmpty }) {
            throw bad("neighbourhood prompt \(i + 1) is empty")
        }
    }

    /// `validate()`, then the token `Limits` with the model's tokenizer: the target is 1…64 tokens (as it follows a
    /// prompt, `targetTokens`), the subject at most 64, the prompts at most 256 each.
    public func validate(tokenizer: Tokenizer) throws {
        try validate()
        func bad(_ why: String) -> EditingError { .badRequest(subject: EditRequest.shortened(subject), reason: why) }
        let target = EditRequest.targetTokens(targetNew, tokenizer: tokenizer).count
        guard target > 0 else { throw bad("target_new is empty") }
        let counted: [(String, Int, Int)] = [
            ("target_new", target, Limits.targetTokens),
            ("target_true", targetTrue.map { EditRequest.targetTokens($0, tokenizer: tokenizer).count } ?? 0, Limits.targetTokens),
            ("the subject", tokenizer.encode(subject).count, Limits.subjectTokens),
            ("the prompt", tokenizer.encode(filledPrompt).count, Limits.promptTokens),
        ] + paraphrases.enumerated().map { ("paraphrase \($0.offset + 1)", tokenizer.encode($0.element).count, Limits.promptTokens) }
          + neighborhood.enumerated().map { ("neighbourhood prompt \($0.offset + 1)", tokenizer.encode($0.element.prompt).count, Limits.promptTokens) }
        for (name, n, limit) in counted where n > limit {
            throw bad("\(name) is \(n) tokens long; at most \(limit) are allowed")
        }
    }

    /// Token ids of a target as it follows a prompt (with a leading space, as in ROME).
    public static func targetTokens(_ target: String, tokenizer: Tokenizer) -> [Int] {
        tokenizer.encode(target.hasPrefix(" ") ? target : " " + target)
    }

    /// `s`, cut to 60 characters for messages.
    static func shortened(_ s: String) -> String { s.count <= 60 ? s : String(s.prefix(57)) + "…" }

    /// Throws `EditingError.layerOutOfRange` unless `layer` is a layer of a model with `layers` layers. The one
    /// layer-range check of edits and statistics.
    public static func requireLayer(_ layer: Int, layers: Int) throws {
        guard (0..<layers).contains(layer) else { throw EditingError.layerOutOfRange(layer: layer, layers: layers) }
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

    /// Reads requests from a file: one JSON object, a JSON array of objects, or JSON Lines (`parse`).
    public static func load(path: String) throws -> [EditRequest] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw EditingError.fileNotFound(path: path) }
        guard !isDir.boolValue else { throw EditingError.badRequestFile(path: path, reason: "is a folder, not a file of edit requests") }
        let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
        guard size <= Limits.fileBytes else {
            throw EditingError.badRequestFile(path: path, reason: "is \(size) bytes; request files are at most \(Limits.fileBytes) bytes")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EditingError.badRequestFile(path: path, reason: "cannot be read (check its permissions)")
        }
        return try parse(data, source: path)
    }

    /// Parses requests from the bytes of a request file (`source` names it in errors): UTF-8 text holding one JSON
    /// object, a JSON array of objects, or JSON Lines. Refuses invalid UTF-8 (naming where), invalid JSON (naming the
    /// line and column), elements that are not objects, and a file without any request.
    public static func parse(_ data: Data, source: String) throws -> [EditRequest] {
        func bad(_ why: String) -> EditingError { .badRequestFile(path: source, reason: why) }
        if let offset = invalidUTF8Offset(data) {
            let (line, column) = position(of: offset, in: data)
            throw bad("invalid UTF-8 at line \(line), column \(column) (byte \(offset)); request files must be UTF-8 text")
        }
        let text = String(decoding: data, as: UTF8.self)
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw bad("is empty; expected a JSON object, an array of objects, or JSON Lines")
        }
        var objects: [[String: Any]] = []
        do {
            let obj = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
            if let one = obj as? [String: Any] {
                objects = [one]
            } else if let list = obj as? [Any] {
                for (i, item) in list.enumerated() {
                    guard let o = item as? [String: Any] else { throw bad("element \(i + 1) of the array is not a JSON object") }
                    objects.append(o)
                }
                guard !objects.isEmpty else { throw bad("holds an empty array: no edit requests") }
            } else {
                throw bad("expected a JSON object, an array of objects, or JSON Lines")
            }
        } catch let e as EditingError { throw e } catch {
            // Not a single JSON document: JSON Lines, or a document with an error, reported where it is.
            let documentError = error
            var lineStart = 0
            for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                defer { lineStart += line.utf8.count + 1 }
                guard !line.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { continue }
                do {
                    guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8), options: [.fragmentsAllowed]) as? [String: Any] else {
                        throw bad("line \(i + 1) is not a JSON object")
                    }
                    objects.append(o)
                } catch let e as EditingError { throw e } catch {
                    // The first record failing means the file is not JSON Lines: report the document's error.
                    if objects.isEmpty { throw bad("invalid JSON " + describe(documentError, in: data, from: 0)) }
                    throw bad("invalid JSON " + describe(error, in: data, from: lineStart))
                }
            }
            guard !objects.isEmpty else { throw bad("invalid JSON " + describe(documentError, in: data, from: 0)) }
        }
        return try objects.map { try from(json: $0) }
    }

    /// Byte offset of the first invalid UTF-8 sequence in `data`, nil when it is valid UTF-8.
    static func invalidUTF8Offset(_ data: Data) -> Int? {
        var decoder = UTF8()
        var iterator = data.makeIterator()
        var offset = 0
        while true {
            switch decoder.decode(&iterator) {
            case let .scalarValue(s): offset += UTF8.width(s)
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    /// 1-based line and column (in bytes) of byte `offset` of `data`.
    static func position(of offset: Int, in data: Data) -> (line: Int, column: Int) {
        var line = 1, column = 1
        for b in data.prefix(offset) {
            if b == UInt8(ascii: "\n") { line += 1; column = 1 } else { column += 1 }
        }
        return (line, column)
    }

    /// A JSONSerialization error as "at line L, column C: reason" (its "around character N" is a byte offset from
    /// `base` in `data`), or its text when it names no position.
    static func describe(_ error: Error, in data: Data, from base: Int) -> String {
        let ns = error as NSError
        var reason = (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? ns.localizedDescription
        if reason.hasSuffix(".") { reason.removeLast() }
        if let r = reason.range(of: #" around character (\d+)"#, options: .regularExpression),
           let n = Int(reason[r].filter(\.isNumber)) {
            let (line, column) = position(of: min(base + n, data.count), in: data)
            reason.removeSubrange(r)
            return "at line \(line), column \(column): \(reason.lowercased())"
        }
        if reason.contains("end of file") {
            let (line, column) = position(of: data.count, in: data)
            return "at line \(line), column \(column) (end of the file): \(reason.lowercased())"
        }
        return "(\(reason))"
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
