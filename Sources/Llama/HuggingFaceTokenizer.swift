import Foundation
import GGUF
import Hashing

// Hugging Face tokenizer.json ⇄ Tokenizer (safetensors import and export).

// MARK: - tokenizer.json

/// Hugging Face `tokenizers` files ⇄ Scalpel's byte-level BPE `Tokenizer`.
///
/// tokenizer.json: a `BPE` model (vocab, merges; no unk_token, no byte fallback), `added_tokens` for control
/// (special) and user-defined (non-special) tokens, a ByteLevel decoder, and a pre-tokenizer per scanner:
/// - gpt2:   `ByteLevel` (add_prefix_space false, use_regex true — the GPT-2 split regex)
/// - smollm: `Sequence[Digits(individual_digits: true), ByteLevel]`
/// - llama3 / qwen2: `Sequence[Split(Regex …, Isolated), ByteLevel(use_regex: false)]` with the exact regex
/// Special token ids, BOS insertion and the chat template live in tokenizer_config.json (and config.json).
public enum HuggingFaceTokenizer {
    /// The GGUF `tokenizer.ggml.pre` name Scalpel records for each scanner.
    public static func ggufPreName(_ p: PreTokenizer) -> String {
        switch p {
        case .gpt2: return "gpt2"
        case .smollm: return "smollm"
        case .llama3: return "llama-bpe"
        case .qwen2: return "qwen2"
        }
    }

    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    static func byteLevel(useRegex: Bool) -> [String: Any] {
        ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": useRegex]
    }

    /// The `pre_tokenizer` object of tokenizer.json for a scanner.
    public static func preTokenizerJSON(_ p: PreTokenizer) -> [String: Any] {
        switch p {
        case .gpt2: return byteLevel(useRegex: true)
        case .smollm:
            return ["type": "Sequence",
                    "pretokenizers": [["type": "Digits", "individual_digits": true] as [String: Any], byteLevel(useRegex: true)]]
        case .llama3, .qwen2:
            let split: [String: Any] = ["type": "Split", "pattern": ["Regex": p == .llama3 ? llama3Regex : qwen2Regex],
                                        "behavior": "Isolated", "invert": false]
            return ["type": "Sequence", "pretokenizers": [split, byteLevel(useRegex: false)]]
        }
    }

    /// The scanner a tokenizer.json `pre_tokenizer` object describes.
    /// - Throws: `SafetensorsError.badTokenizer` naming the construct when it is not one of the supported forms.
    public static func preTokenizer(fromJSON json: Any?, path: String = "tokenizer.json") throws -> PreTokenizer {
        func fail(_ why: String) -> SafetensorsError {
            .badTokenizer(path: path, problem: "unsupported pre_tokenizer: \(why) (supported: ByteLevel → gpt2, "
                          + "Digits(individual_digits) + ByteLevel → smollm, Split(Llama 3 / Qwen2 regex) + ByteLevel → llama3 / qwen2)")
        }
        func isByteLevel(_ o: Any?, regex: Bool) throws -> Bool {
            guard let o = o as? [String: Any], o["type"] as? String == "ByteLevel" else { return false }
            if (o["add_prefix_space"] as? Bool) == true { throw fail("ByteLevel with add_prefix_space") }
            return ((o["use_regex"] as? Bool) ?? true) == regex
        }
        guard let obj = json as? [String: Any], let type = obj["type"] as? String else {
            throw fail(json == nil || json is NSNull ? "none (whitespace splitting is required)" : "not an object")
        }
        if type == "ByteLevel" {
            if try isByteLevel(obj, regex: true) { return .gpt2 }
            throw fail("ByteLevel without its split regex")
        }
        guard type == "Sequence", let parts = obj["pretokenizers"] as? [Any] else { throw fail(type) }
        let kinds = parts.map { (($0 as? [String: Any])?["type"] as? String) ?? "?" }
        if parts.count == 2, let digits = parts[0] as? [String: Any], kinds[0] == "Digits" {
            guard (digits["individual_digits"] as? Bool) == true else { throw fail("Digits without individual_digits") }
            if try isByteLevel(parts[1], regex: true) { return .smollm }
        }
        if parts.count == 2, let split = parts[0] as? [String: Any], kinds[0] == "Split", try isByteLevel(parts[1], regex: false) {
            let pattern = (split["pattern"] as? [String: Any])?["Regex"] as? String
            guard (split["behavior"] as? String) == "Isolated", (split["invert"] as? Bool) != true else {
                throw fail("Split with behavior \(split["behavior"] ?? "?")")
            }
            if pattern == llama3Regex { return .llama3 }
            if pattern == qwen2Regex { return .qwen2 }
            throw fail("Split regex \(pattern ?? "(none)")")
        }
        throw fail("Sequence[\(kinds.joined(separator: ", "))]")
    }

    /// The tokenizer.json document for `t` (vocabulary in id order). Gap fillers `[PAD<id>]` of type unused are left
    /// out (`load` recreates them), so a round trip gives the same vocabulary.
    public static func tokenizerJSON(_ t: Tokenizer) throws -> Data {
        let tokens = t.vocabulary, types = t.tokenTypes
        var added: [[String: Any]] = []
        var vocab: [(String, Int)] = []
        var seen = Set<String>()
        for (i, tok) in tokens.enumerated() {
            if types[i] == TokenType.unused.rawValue && tok == "[PAD\(i)]" { continue }
            guard seen.insert(tok).inserted else { continue }  // a duplicate string cannot be a key twice
            vocab.append((tok, i))
            switch TokenType(rawValue: types[i]) {
            case .control?, .unknown?, .userDefined?:
                added.append(["id": i, "content": tok, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": types[i] != TokenType.userDefined.rawValue])
            default: break
            }
        }
        let postProcessor: [String: Any]
        if t.addBOS, let bos = t.bosID {
            let b = tokens[bos]
            postProcessor = [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": b, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [["SpecialToken": ["id": b, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                         ["SpecialToken": ["id": b, "type_id": 1]], ["Sequence": ["id": "B", "type_id": 1]]],
                "special_tokens": [b: ["id": b, "ids": [bos], "tokens": [b]]],
            ]
        } else {
            postProcessor = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true]
        }
        func json(_ o: Any) throws -> String {
            String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes]),
                   as: UTF8.self)
        }
        var s = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [\n"
        s += try added.map { "    " + (try json($0)) }.joined(separator: ",\n")
        s += "\n  ],\n  \"normalizer\": null,\n"
        s += "  \"pre_tokenizer\": " + (try json(preTokenizerJSON(t.preTokenizer))) + ",\n"
        s += "  \"post_processor\": " + (try json(postProcessor)) + ",\n"
        s += "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n"
        s += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
        s += "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
        s += "    \"byte_fallback\": false,\n    \"vocab\": {\n"
        s += vocab.map { "      \(quote($0.0)): \($0.1)" }.joined(separator: ",\n")
        s += "\n    },\n    \"merges\": [\n"
        // "left right" strings (readable by every tokenizers version) unless an operand contains a space.
        let pairForm = t.mergeList.contains { $0.utf8.filter { $0 == 0x20 }.count != 1 }
        s += t.mergeList.map { m -> String in
            guard pairForm, let sp = m.firstIndex(of: " ") else { return "      " + quote(m) }
            return "      [\(quote(String(m[..<sp]))), \(quote(String(m[m.index(after: sp)...])))]"
        }.joined(separator: ",\n")
        s += "\n    ]\n  }\n}\n"
        return Data(s.utf8)
    }

    /// A JSON string literal.
    public static func quote(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F {
                    out += String(format: "\\u%04x", u.value)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    /// A tokenizer_config.json object for `t` (fast tokenizer backed by tokenizer.json).
    public static func tokenizerConfig(_ t: Tokenizer, padID: Int?, chatTemplate: String?, maxLength: Int) -> [String: Any] {
        var out: [String: Any] = [
            "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": t.addBOS, "add_eos_token": false,
            "clean_up_tokenization_spaces": false, "model_max_length": maxLength,
        ]
        func name(_ id: Int?) -> Any { id.map { t.token($0) as Any } ?? NSNull() }
        out["bos_token"] = name(t.bosID)
        out["eos_token"] = name(t.eosID)
        out["unk_token"] = name(t.unknownID)
        if let padID { out["pad_token"] = t.token(padID) }
        if let chatTemplate { out["chat_template"] = chatTemplate }
        return out
    }

    /// Reads `folder`/tokenizer.json (and tokenizer_config.json when present; `modelConfig` is config.json, consulted
    /// for special token ids the tokenizer files do not name). The vocabulary is padded with unused `[PAD<id>]`
    /// tokens up to `vocabSize` (as llama.cpp's converter does).
    /// - Returns: the tokenizer and the GGUF `tokenizer.*` scalar keys it corresponds to (model, pre, special ids,
    ///   add_bos_token, chat_template; not the token arrays).
    public static func load(folder: String, modelConfig: [String: Any]?, vocabSize: Int) throws
        -> (tokenizer: Tokenizer, metadata: [(key: String, value: GGUFValue)]) {
        let path = (folder as NSString).appendingPathComponent("tokenizer.json")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SafetensorsError.missingFile(path: path, what: "the tokenizer; Scalpel reads Hugging Face tokenizer.json")
        }
        func fail(_ why: String) -> SafetensorsError { .badTokenizer(path: path, problem: why) }
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw fail("not a JSON object") }
        guard let model = root["model"] as? [String: Any] else { throw fail("no model") }
        let modelType = model["type"] as? String ?? "BPE"
        guard modelType == "BPE" else { throw fail("tokenizer model \(modelType); only byte-level BPE is supported") }
        if (model["byte_fallback"] as? Bool) == true { throw fail("BPE with byte_fallback (SentencePiece style) is not supported") }
        for k in ["continuing_subword_prefix", "end_of_word_suffix"] where model[k] is String {
            throw fail("BPE with \(k) is not supported")
        }
        if let n = root["normalizer"], !(n is NSNull) {
            // llama.cpp ignores an NFC normalizer (Qwen2); anything else changes the text before BPE.
            guard (n as? [String: Any])?["type"] as? String == "NFC" else {
                throw fail("normalizer \(((n as? [String: Any])?["type"] as? String) ?? "?") is not supported")
            }
        }
        let pre = try preTokenizer(fromJSON: root["pre_tokenizer"], path: path)
        guard let vocab = model["vocab"] as? [String: Any] else { throw fail("model.vocab is not an object") }
        var byID: [Int: String] = [:]
        for (tok, v) in vocab {
            guard let id = (v as? NSNumber)?.intValue, id >= 0, id < 1 << 24 else { throw fail("vocab entry \(tok) has no valid id") }
            if byID[id] != nil { throw fail("id \(id) is assigned twice in model.vocab") }
            byID[id] = tok
        }
        var special: [Int: Bool] = [:]
        for a in root["added_tokens"] as? [[String: Any]] ?? [] {
            guard let id = (a["id"] as? NSNumber)?.intValue, id >= 0, id < 1 << 24, let content = a["content"] as? String else {
                throw fail("added token without id/content")
            }
            if let existing = byID[id], existing != content { throw fail("added token \(id) \(content) differs from vocab \(existing)") }
            byID[id] = content
            special[id] = (a["special"] as? Bool) ?? false
        }
        let count = max((byID.keys.max() ?? -1) + 1, vocabSize)
        guard count <= vocabSize else { throw fail("\(count) tokens but the model's vocabulary is \(vocabSize)") }
        var tokens = [String](repeating: "", count: count), types = [Int](repeating: TokenType.normal.rawValue, count: count)
        for i in 0..<count {
            if let t = byID[i] {
                tokens[i] = t
                if let s = special[i] { types[i] = s ? TokenType.control.rawValue : TokenType.userDefined.rawValue }
            } else {
                tokens[i] = "[PAD\(i)]"; types[i] = TokenType.unused.rawValue
            }
        }
        var merges: [String] = []
        for (i, m) in (model["merges"] as? [Any] ?? []).enumerated() {
            if let s = m as? String { merges.append(s) } else if let p = m as? [String], p.count == 2 {
                merges.append(p[0] + " " + p[1])
            } else { throw fail("merge #\(i) is neither \"a b\" nor [\"a\", \"b\"]") }
        }

        // Special tokens: tokenizer_config.json names them; config.json gives ids.
        let configPath = (folder as NSString).appendingPathComponent("tokenizer_config.json")
        var tc: [String: Any] = [:]
        if let d = FileManager.default.contents(atPath: configPath) {
            guard let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else {
                throw SafetensorsError.badTokenizer(path: configPath, problem: "not a JSON object")
            }
            tc = o
        }
        let index = Dictionary(tokens.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        func specialID(_ kind: String) -> Int? {
            var name = tc["\(kind)_token"] as? String
            if name == nil, let o = tc["\(kind)_token"] as? [String: Any] { name = o["content"] as? String }
            if let name, let id = index[name] { return id }
            if let v = modelConfig?["\(kind)_token_id"] {
                let id = (v as? NSNumber)?.intValue ?? ((v as? [Any])?.first as? NSNumber)?.intValue
                if let id, (0..<count).contains(id) { return id }
            }
            return nil
        }
        let bos = specialID("bos"), eos = specialID("eos"), unk = specialID("unk"), pad = specialID("pad")
        var addBOS = tc["add_bos_token"] as? Bool
        if addBOS == nil, let pp = root["post_processor"] as? [String: Any], pp["type"] as? String == "TemplateProcessing",
           let single = pp["single"] as? [[String: Any]], let first = single.first {
            addBOS = first["SpecialToken"] != nil
        }
        var chatTemplate = tc["chat_template"] as? String
        if chatTemplate == nil, let list = tc["chat_template"] as? [[String: Any]] {
            chatTemplate = (list.first { $0["name"] as? String == "default" } ?? list.first)?["template"] as? String
        }
        let preName = ggufPreName(pre)
        let tokenizer = try Tokenizer(tokens: tokens, tokenTypes: types, merges: merges, pre: preName, bosID: bos, eosID: eos,
                                      unknownID: unk, addBOS: addBOS ?? false)
        var meta: [(key: String, value: GGUFValue)] = [("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string(preName))]
        for (k, id) in [("bos", bos), ("eos", eos), ("unknown", unk), ("padding", pad)] {
            if let id { meta.append(("tokenizer.ggml.\(k)_token_id", .uint32(UInt32(id)))) }
        }
        meta.append(("tokenizer.ggml.add_bos_token", .bool(addBOS ?? false)))
        if let chatTemplate { meta.append(("tokenizer.chat_template", .string(chatTemplate))) }
        return (tokenizer, meta)
    }
}
