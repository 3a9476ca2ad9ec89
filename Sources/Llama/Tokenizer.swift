import Foundation
import GGUF

/// Errors raised while building a tokenizer.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    /// A required GGUF metadata key is absent (or has the wrong type).
    case missingKey(String)
    /// `tokenizer.ggml.model` is neither byte-level BPE ("gpt2") nor SentencePiece ("llama").
    case unsupportedModel(String)
    /// `tokenizer.ggml.pre` names a pre-tokenizer this implementation does not know.
    case unsupportedPreTokenizer(String)
    /// The vocabulary arrays are inconsistent (lengths, ids out of range…).
    case invalidVocabulary(String)
    /// A merge rule is not of the form "left right".
    case invalidMerge(index: Int, merge: String)
    /// A token string looked up by `requireID(of:)` is not in the vocabulary.
    case unknownToken(String)
    /// A GGUF tokenizer setting this implementation does not support (key, value as found).
    case unsupportedSetting(key: String, value: String)

    public var description: String {
        switch self {
        case let .missingKey(key):
            return "tokenizer: GGUF metadata key '\(key)' is missing or has the wrong type "
                + "(is this a GGUF file converted with a recent llama.cpp convert script?)"
        case let .unsupportedModel(model):
            return "tokenizer: unsupported tokenizer model '\(model)'; byte-level BPE ('gpt2') and SentencePiece ('llama') "
                + "are implemented (WordPiece 'bert', Unigram 't5' etc. are not)"
        case let .unsupportedPreTokenizer(pre):
            let known = PreTokenizer.ggufNames.keys.sorted().joined(separator: ", ")
            return "tokenizer: unsupported pre-tokenizer '\(pre)'; supported tokenizer.ggml.pre values: \(known)"
        case let .invalidVocabulary(why):
            return "tokenizer: invalid vocabulary: \(why)"
        case let .invalidMerge(index, merge):
            return "tokenizer: merge #\(index) '\(merge)' is not of the form 'left right'"
        case let .unknownToken(token):
            return "tokenizer: token '\(token)' is not in the vocabulary"
        case let .unsupportedSetting(key, value):
            return "tokenizer: GGUF '\(key)' = \(value) is not supported (SentencePiece without a dummy space prefix only, as Gemma)"
        }
    }
}

/// GGUF `tokenizer.ggml.token_type` values.
public enum TokenType: Int, Sendable {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// Tokenizer matching llama.cpp / Hugging Face `tokenizers`, of one of two kinds (`model`):
/// - byte-level BPE (GPT-2 family): optional special-token partition → pre-tokenizer split (`PreTokenizer`) →
///   per-piece BPE over the UTF-8 bytes with merge ranks (heap + linked list, cached per piece);
/// - SentencePiece (Gemma): the same special-token partition → score-greedy merging of UTF-8 characters with byte
///   fallback over each stretch between special tokens (`SentencePieceEncoder`).
/// Thread-safe: the only shared mutable state is the piece cache, guarded by a lock.
public final class Tokenizer: @unchecked Sendable {
    /// Which algorithm encodes (`tokenizer.ggml.model`).
    public let model: TokenizerModel
    /// The pre-tokenizer of a BPE tokenizer (unused by SentencePiece, which has none: `.gpt2` there).
    public let preTokenizer: PreTokenizer
    public let bosID: Int?
    public let eosID: Int?
    public let unknownID: Int?
    /// Whether `encode` prepends BOS when its `addBOS` argument is nil.
    public let addBOS: Bool

    private let tokens: [String]
    private let types: [Int]
    private let idByToken: [String: Int]

    /// Decoded bytes of every token (byte-level decoded for normal tokens, raw text for
    /// control / user-defined ones, the byte itself for `<0xNN>` byte tokens).
    private let decodedBytes: [UInt8]
    private let decodedOffsets: [Int32]

    /// BPE symbol space: ids < vocabularySize are tokens; larger ids are "pseudo" symbols
    /// (merge operands / results that are not themselves tokens), kept as their bytes.
    private let pseudoBytes: [[UInt8]]
    /// Token of every single byte (its stand-in character), or -1 if the vocabulary lacks it.
    /// Such bytes (e.g. 0xF1…0xF4 in SmolLM2) are dropped before BPE, as Hugging Face `tokenizers`
    /// does for a BPE model without `unk_token` (llama.cpp would abort).
    private let byteToken: [Int32]
    /// (left << 32 | right) → (rank << 32 | result).
    private let merges: [UInt64: UInt64]

    /// Special tokens matched in text before pre-tokenization.
    private struct Special { let bytes: [UInt8]; let id: Int; let always: Bool }
    /// Indices into `specials` by first byte, longest first.
    private let specialsByFirstByte: [[Int]]
    private let specials: [Special]

    /// The SentencePiece encoder (`model == .sentencePiece`), nil for BPE.
    private let spm: SentencePieceEncoder?

    private var cache: [[UInt8]: [Int32]] = [:]
    private let cacheLock = NSLock()
    private static let cacheLimit = 1 << 18

    public var vocabularySize: Int { tokens.count }
    /// Every token string in id order (raw byte-level form), as in GGUF `tokenizer.ggml.tokens`.
    public var vocabulary: [String] { tokens }
    /// The `TokenType` raw value of every token in id order (`tokenizer.ggml.token_type`).
    public var tokenTypes: [Int] { types }
    /// The merge rules "left right" in rank order, as given (`tokenizer.ggml.merges`).
    public let mergeList: [String]
    /// The `tokenizer.ggml.pre` name the tokenizer was built with (e.g. "smollm"; `preTokenizer` is its scanner).
    public let preName: String
    /// The score of every token in id order (`tokenizer.ggml.scores`; SentencePiece only, empty for BPE).
    public var scores: [Float] { spm?.scores ?? [] }

    /// - Parameters:
    ///   - model: `.bpe` uses `merges` and `pre`; `.sentencePiece` uses `scores` (one per token) and ignores both.
    public init(tokens: [String], tokenTypes: [Int], merges mergeStrings: [String], pre: String,
                bosID: Int?, eosID: Int?, unknownID: Int?, addBOS: Bool,
                model: TokenizerModel = .bpe, scores: [Float] = []) throws {
        guard let preTok = PreTokenizer(ggufName: pre) ?? (model == .sentencePiece ? .gpt2 : nil) else {
            throw TokenizerError.unsupportedPreTokenizer(pre)
        }
        guard !tokens.isEmpty else { throw TokenizerError.invalidVocabulary("empty token list") }
        guard tokens.count < Int(Int32.max / 2) else { throw TokenizerError.invalidVocabulary("too many tokens") }
        let types = tokenTypes.isEmpty ? [Int](repeating: TokenType.normal.rawValue, count: tokens.count) : tokenTypes
        guard types.count == tokens.count else {
            throw TokenizerError.invalidVocabulary("\(tokens.count) tokens but \(types.count) token types")
        }
        for (name, id) in [("bos", bosID), ("eos", eosID), ("unknown", unknownID)] {
            if let id = id, !(0..<tokens.count).contains(id) {
                throw TokenizerError.invalidVocabulary("\(name) token id \(id) outside 0..<\(tokens.count)")
            }
        }
        self.model = model
        self.spm = model == .sentencePiece
            ? try SentencePieceEncoder(tokens: tokens, types: types, scores: scores, unknownID: unknownID) : nil
        self.preTokenizer = preTok
        self.preName = pre
        self.mergeList = mergeStrings
        self.bosID = bosID
        self.eosID = eosID
        self.unknownID = unknownID
        self.addBOS = addBOS
        self.tokens = tokens
        self.types = types

        let n = tokens.count
        var idByToken = [String: Int](minimumCapacity: n)
        for (i, t) in tokens.enumerated() where idByToken[t] == nil { idByToken[t] = i }
        self.idByToken = idByToken

        // Decoded bytes per token.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(n * 8)
        var offsets: [Int32] = [0]
        offsets.reserveCapacity(n + 1)
        for i in 0..<n {
            switch TokenType(rawValue: types[i]) {
            case .control?, .userDefined?, .unknown?:
                bytes.append(contentsOf: tokens[i].utf8)
            case .byte?:
                if let b = Tokenizer.parseByteToken(tokens[i]) { bytes.append(b) } else { ByteLevel.decode(tokens[i], into: &bytes) }
            case _ where model == .sentencePiece:
                Tokenizer.unescapeSpaces(tokens[i], into: &bytes)
            default:
                ByteLevel.decode(tokens[i], into: &bytes)
            }
            offsets.append(Int32(bytes.count))
        }
        self.decodedBytes = bytes
        self.decodedOffsets = offsets

        // BPE symbols: merges act on token ids; a merge operand or result that is not itself a token
        // (never the case in a consistent vocabulary) gets a pseudo id and falls back to its bytes.
        var pseudo: [String: Int32] = [:]
        var pseudoBytes: [[UInt8]] = []
        func symbol(_ s: String) -> Int32 {
            if let id = idByToken[s] { return Int32(id) }
            if let p = pseudo[s] { return p }
            let p = Int32(n + pseudoBytes.count)
            var b: [UInt8] = []
            ByteLevel.decode(s, into: &b)
            pseudoBytes.append(b)
            pseudo[s] = p
            return p
        }
        var byteToken = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            if let id = idByToken[ByteLevel.string(forByte: UInt8(b))] { byteToken[b] = Int32(id) }
        }
        var mergeTable = [UInt64: UInt64](minimumCapacity: mergeStrings.count)
        for (rank, m) in mergeStrings.enumerated() {
            let u = m.utf8
            guard let sp = u.firstIndex(of: 0x20), sp != u.startIndex, u.index(after: sp) != u.endIndex else {
                throw TokenizerError.invalidMerge(index: rank, merge: m)
            }
            let left = String(m[..<sp]), right = String(m[m.index(after: sp)...])
            let a = symbol(left), b = symbol(right), r = symbol(left + right)
            let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
            if mergeTable[key] == nil { mergeTable[key] = UInt64(rank) << 32 | UInt64(UInt32(r)) }
        }
        self.pseudoBytes = pseudoBytes
        self.byteToken = byteToken
        self.merges = mergeTable

        // Special tokens: control / unknown only when asked for; user-defined always (llama.cpp, HF).
        var specials: [Special] = []
        for i in 0..<n where !tokens[i].isEmpty {
            switch TokenType(rawValue: types[i]) {
            case .control?, .unknown?: specials.append(Special(bytes: Array(tokens[i].utf8), id: i, always: false))
            case .userDefined?: specials.append(Special(bytes: Array(tokens[i].utf8), id: i, always: true))
            default: break
            }
        }
        var byFirst = [[Int]](repeating: [], count: 256)
        for (k, s) in specials.enumerated() { byFirst[Int(s.bytes[0])].append(k) }
        for b in 0..<256 { byFirst[b].sort { specials[$0].bytes.count > specials[$1].bytes.count } }
        self.specials = specials
        self.specialsByFirstByte = byFirst
    }

    /// Reads `tokenizer.ggml.*` metadata from a GGUF file (`model` "gpt2": tokens, merges, pre; "llama": tokens,
    /// scores — merges and pre are not used).
    public convenience init(gguf: GGUFFile) throws {
        func value(_ key: String) throws -> GGUFValue {
            guard let v = gguf[key] else { throw TokenizerError.missingKey(key) }
            return v
        }
        guard let name = try value("tokenizer.ggml.model").string else { throw TokenizerError.missingKey("tokenizer.ggml.model") }
        guard let model = TokenizerModel(rawValue: name) else { throw TokenizerError.unsupportedModel(name) }
        guard let tokens = try value("tokenizer.ggml.tokens").stringArray else { throw TokenizerError.missingKey("tokenizer.ggml.tokens") }
        var merges: [String] = [], scores: [Float] = [], pre = "default"
        switch model {
        case .bpe:
            guard let m = try value("tokenizer.ggml.merges").stringArray else { throw TokenizerError.missingKey("tokenizer.ggml.merges") }
            guard let p = try value("tokenizer.ggml.pre").string else { throw TokenizerError.missingKey("tokenizer.ggml.pre") }
            merges = m
            pre = p
        case .sentencePiece:
            guard let s = try value("tokenizer.ggml.scores").doubleArray else { throw TokenizerError.missingKey("tokenizer.ggml.scores") }
            scores = s.map { Float($0) }
            pre = gguf["tokenizer.ggml.pre"]?.string ?? pre
            // A dummy "▁" prefix (SentencePiece's add_dummy_prefix, llama.cpp's add_space_prefix, which llama.cpp
            // assumes when the key is absent) is not implemented: refuse rather than tokenize differently.
            let key = "tokenizer.ggml.add_space_prefix"
            if gguf[key]?.bool ?? true {
                throw TokenizerError.unsupportedSetting(key: key, value: gguf[key] == nil ? "absent (true)" : "true")
            }
        }
        // token_type is optional in GGUF (llama.cpp treats a missing array as all-normal).
        var types: [Int] = []
        if let t = gguf["tokenizer.ggml.token_type"] {
            guard let a = t.intArray else { throw TokenizerError.missingKey("tokenizer.ggml.token_type") }
            types = a
        }
        try self.init(tokens: tokens, tokenTypes: types, merges: merges, pre: pre,
                      bosID: gguf["tokenizer.ggml.bos_token_id"]?.int,
                      eosID: gguf["tokenizer.ggml.eos_token_id"]?.int,
                      unknownID: gguf["tokenizer.ggml.unknown_token_id"]?.int,
                      addBOS: gguf["tokenizer.ggml.add_bos_token"]?.bool ?? false,
                      model: model, scores: scores)
    }

    /// Appends the UTF-8 of a SentencePiece piece with every `▁` (U+2581) turned back into a space.
    static func unescapeSpaces(_ piece: String, into bytes: inout [UInt8]) {
        let u = Array(piece.utf8)
        var i = 0
        while i < u.count {
            if i + 2 < u.count, u[i] == 0xE2, u[i + 1] == 0x96, u[i + 2] == 0x81 { bytes.append(0x20); i += 3; continue }
            bytes.append(u[i])
            i += 1
        }
    }

    /// Parses "<0xAB>".
    static func parseByteToken(_ s: String) -> UInt8? {
        let u = Array(s.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }

    // MARK: - Lookup

    /// The raw vocabulary string of `id` (e.g. "ĠParis"); "" if out of range.
    public func token(_ id: Int) -> String {
        tokens.indices.contains(id) ? tokens[id] : ""
    }

    /// The decoded display form of `id` (e.g. " Paris"); partial UTF-8 shows as U+FFFD.
    public func tokenText(_ id: Int) -> String {
        guard tokens.indices.contains(id) else { return "" }
        return decodedBytes.withUnsafeBufferPointer { buf in
            String(decoding: UnsafeBufferPointer(rebasing: buf[Int(decodedOffsets[id])..<Int(decodedOffsets[id + 1])]), as: UTF8.self)
        }
    }

    /// The GGUF token type of `id` (`TokenType` raw value); nil if out of range.
    public func tokenType(_ id: Int) -> Int? {
        types.indices.contains(id) ? types[id] : nil
    }

    /// True for control tokens such as `<|im_start|>`.
    public func isControl(_ id: Int) -> Bool { tokenType(id) == TokenType.control.rawValue }

    /// The id of an exact vocabulary string (raw byte-level form, e.g. "ĠParis" or "<|im_end|>").
    public func id(of token: String) -> Int? { idByToken[token] }

    /// Like `id(of:)` but throws `TokenizerError.unknownToken`.
    public func requireID(of token: String) throws -> Int {
        guard let id = idByToken[token] else { throw TokenizerError.unknownToken(token) }
        return id
    }

    // MARK: - Decode

    /// Concatenates the bytes of `ids` and decodes them as UTF-8 (invalid sequences → U+FFFD).
    /// Control tokens are rendered as their text unless `skipSpecial`. Out-of-range ids are skipped.
    public func decode(_ ids: [Int], skipSpecial: Bool = false) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(ids.count * 6)
        decodedBytes.withUnsafeBufferPointer { buf in
            for id in ids where tokens.indices.contains(id) {
                if skipSpecial && types[id] == TokenType.control.rawValue { continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: buf[Int(decodedOffsets[id])..<Int(decodedOffsets[id + 1])]))
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The raw bytes of `ids` (no UTF-8 repair), e.g. for streaming output.
    public func decodeBytes(_ ids: [Int], skipSpecial: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        for id in ids where tokens.indices.contains(id) {
            if skipSpecial && types[id] == TokenType.control.rawValue { continue }
            out.append(contentsOf: decodedBytes[Int(decodedOffsets[id])..<Int(decodedOffsets[id + 1])])
        }
        return out
    }

    // MARK: - Encode

    /// Token ids of `text`. Control tokens (`<|im_start|>`, `<|endoftext|>`…) are recognised only
    /// when `parseSpecial`; otherwise they are encoded as plain text. User-defined added tokens
    /// are always recognised. `addBOS` nil uses the model default (`tokenizer.ggml.add_bos_token`).
    public func encode(_ text: String, parseSpecial: Bool = false, addBOS: Bool? = nil) -> [Int] {
        var out: [Int] = []
        if addBOS ?? self.addBOS, let bos = bosID { out.append(bos) }
        var text = text
        text.withUTF8 { bytes in
            out.reserveCapacity(out.count + bytes.count / 3 + 1)
            var work = BPEWork()
            var pieces: [Range<Int>] = []
            var start = 0
            var i = 0
            let n = bytes.count
            while i < n {
                let cands = specialsByFirstByte[Int(bytes[i])]
                var matched: Special? = nil
                for k in cands {
                    let s = specials[k]
                    if !s.always && !parseSpecial { continue }
                    let len = s.bytes.count
                    if i + len <= n && s.bytes.withUnsafeBufferPointer({ memcmp($0.baseAddress!, bytes.baseAddress! + i, len) == 0 }) {
                        matched = s
                        break
                    }
                }
                if let s = matched {
                    encodeText(bytes, start..<i, &work, &pieces, &out)
                    out.append(s.id)
                    i += s.bytes.count
                    start = i
                } else {
                    i += 1
                }
            }
            encodeText(bytes, start..<n, &work, &pieces, &out)
        }
        return out
    }

    /// Pre-tokenizes and BPE-encodes one special-free stretch of text.
    private func encodeText(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ work: inout BPEWork,
                            _ pieces: inout [Range<Int>], _ out: inout [Int]) {
        guard !range.isEmpty else { return }
        if let spm { spm.encode(bytes, range, into: &out); return }
        let decoded = DecodedText(bytes: bytes, range: range)
        pieces.removeAll(keepingCapacity: true)
        preTokenizer.split(decoded, 0..<decoded.scalars.count, into: &pieces)
        for p in pieces {
            let lo = Int(decoded.offsets[p.lowerBound]), hi = Int(decoded.offsets[p.upperBound])
            let piece = UnsafeBufferPointer(rebasing: bytes[lo..<hi])
            if piece.count == 1 {
                let t = byteToken[Int(piece[0])]
                if t >= 0 { out.append(Int(t)) }
                continue
            }
            let key = Array(piece)
            cacheLock.lock()
            let cached = cache[key]
            cacheLock.unlock()
            if let ids = cached {
                for id in ids { out.append(Int(id)) }
                continue
            }
            let ids = bpe(piece, &work)
            cacheLock.lock()
            if cache.count >= Tokenizer.cacheLimit { cache.removeAll(keepingCapacity: true) }
            cache[key] = ids
            cacheLock.unlock()
            for id in ids { out.append(Int(id)) }
        }
    }

    /// Scratch buffers for one BPE run.
    private struct BPEWork {
        var sym: [Int32] = []
        var prev: [Int32] = []
        var next: [Int32] = []
        var heap: [UInt64] = []
    }

    /// BPE over the bytes of one pre-token: repeatedly merge the adjacent pair with the lowest
    /// rank (leftmost on ties), using a min-heap of (rank, position) with lazy invalidation.
    private func bpe(_ piece: UnsafeBufferPointer<UInt8>, _ w: inout BPEWork) -> [Int32] {
        w.sym.removeAll(keepingCapacity: true)
        w.prev.removeAll(keepingCapacity: true)
        w.next.removeAll(keepingCapacity: true)
        w.heap.removeAll(keepingCapacity: true)
        for b in piece {
            let t = byteToken[Int(b)]
            if t >= 0 { w.sym.append(t) }
        }
        let n = w.sym.count
        guard n > 1 else { return w.sym }
        for i in 0..<n {
            w.prev.append(Int32(i - 1))
            w.next.append(i + 1 < n ? Int32(i + 1) : -1)
        }
        @inline(__always) func pairKey(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }
        for i in 0..<(n - 1) {
            if let m = merges[pairKey(w.sym[i], w.sym[i + 1])] {
                MinHeap.push(&w.heap, (m & 0xFFFF_FFFF_0000_0000) | UInt64(i))
            }
        }
        while let top = MinHeap.pop(&w.heap) {
            let pos = Int(top & 0xFFFF_FFFF)
            let rank = top >> 32
            let left = w.sym[pos]
            if left < 0 { continue }
            let nx = Int(w.next[pos])
            if nx < 0 { continue }
            guard let m = merges[pairKey(left, w.sym[nx])], m >> 32 == rank else { continue }
            w.sym[pos] = Int32(truncatingIfNeeded: m & 0xFFFF_FFFF)
            w.sym[nx] = -1
            let nn = w.next[nx]
            w.next[pos] = nn
            if nn >= 0 { w.prev[Int(nn)] = Int32(pos) }
            let pv = Int(w.prev[pos])
            if pv >= 0, let m2 = merges[pairKey(w.sym[pv], w.sym[pos])] {
                MinHeap.push(&w.heap, (m2 & 0xFFFF_FFFF_0000_0000) | UInt64(pv))
            }
            if nn >= 0, let m2 = merges[pairKey(w.sym[pos], w.sym[Int(nn)])] {
                MinHeap.push(&w.heap, (m2 & 0xFFFF_FFFF_0000_0000) | UInt64(pos))
            }
        }
        var result: [Int32] = []
        result.reserveCapacity(n)
        var i = 0
        while i >= 0 {
            let s = w.sym[i]
            if Int(s) < tokens.count {
                result.append(s)
            } else {
                // A merge result that is not a token (only in hand-made vocabularies): its bytes.
                for b in pseudoBytes[Int(s) - tokens.count] {
                    let t = byteToken[Int(b)]
                    if t >= 0 { result.append(t) }
                }
            }
            i = Int(w.next[i])
        }
        return result
    }
}

/// Binary min-heap on packed (rank << 32 | position) keys.
private enum MinHeap {
    static func push(_ h: inout [UInt64], _ v: UInt64) {
        h.append(v)
        var i = h.count - 1
        while i > 0 {
            let p = (i - 1) >> 1
            if h[p] <= v { break }
            h[i] = h[p]
            i = p
        }
        h[i] = v
    }

    static func pop(_ h: inout [UInt64]) -> UInt64? {
        guard let last = h.popLast() else { return nil }
        guard !h.isEmpty else { return last }
        let top = h[0]
        let n = h.count
        var i = 0
        while true {
            var c = 2 * i + 1
            if c >= n { break }
            if c + 1 < n && h[c + 1] < h[c] { c += 1 }
            if h[c] >= last { break }
            h[i] = h[c]
            i = c
        }
        h[i] = last
        return top
    }
}
