import Foundation

/// The two tokenizer algorithms Scalpel runs, named as GGUF `tokenizer.ggml.model` names them.
public enum TokenizerModel: String, Sendable, CaseIterable {
    /// Byte-level BPE with merge ranks and a pre-tokenizer (GPT-2 family: SmolLM2, Llama 3, Qwen 2).
    case bpe = "gpt2"
    /// SentencePiece BPE with scores and byte fallback (Llama 1/2, Gemma): no merges, no pre-tokenizer.
    case sentencePiece = "llama"
}

/// SentencePiece-style BPE encoder (GGUF `tokenizer.ggml.model = llama`), as SentencePiece's `bpe_model.cc` and
/// llama.cpp's `llm_tokenizer_spm` run it:
/// 1. spaces become `▁` (U+2581); no dummy prefix is added (Gemma's `add_space_prefix = false`);
/// 2. the text is split into UTF-8 characters, one symbol each;
/// 3. repeatedly, of all adjacent symbol pairs whose concatenation is a vocabulary piece, the pair whose piece has the
///    highest score is merged (ties: the leftmost pair);
/// 4. a final symbol that is not a piece becomes its bytes' `<0xXX>` byte tokens (or the unknown token when the
///    vocabulary lacks a byte token).
///
/// Pieces are normal and user-defined tokens; control, unknown, unused and byte tokens never result from a merge
/// (SentencePiece keeps them out of its piece table). User-defined tokens are matched whole in the raw text
/// before this runs (`Tokenizer.encode`).
struct SentencePieceEncoder: Sendable {
    /// Score of every token, in id order.
    let scores: [Float]
    /// Id of every piece a merge may produce, by its (`▁`-escaped) UTF-8 bytes.
    private let pieceID: PieceTable
    /// Longest piece in UTF-8 bytes: longer concatenations are not looked up.
    private let maxPieceBytes: Int
    /// The `<0xXX>` token of every byte, or -1.
    private let byteToken: [Int32]
    private let unknownID: Int?

    /// `▁` (U+2581) in UTF-8.
    static let spaceMark: [UInt8] = [0xE2, 0x96, 0x81]

    init(tokens: [String], types: [Int], scores: [Float], unknownID: Int?) throws {
        guard scores.count == tokens.count else {
            throw TokenizerError.invalidVocabulary("\(tokens.count) tokens but \(scores.count) scores")
        }
        var pieces: [(String, Int32)] = []
        pieces.reserveCapacity(tokens.count)
        var maxBytes = 1
        var byteToken = [Int32](repeating: -1, count: 256)
        for (i, t) in tokens.enumerated() {
            switch TokenType(rawValue: types[i]) {
            case .normal?, .userDefined?, .undefined?:
                if !t.isEmpty { pieces.append((t, Int32(i))); maxBytes = max(maxBytes, t.utf8.count) }
            case .byte?:
                if let b = Tokenizer.parseByteToken(t), byteToken[Int(b)] < 0 { byteToken[Int(b)] = Int32(i) }
            default: break
            }
        }
        self.scores = scores
        self.pieceID = PieceTable(pieces)
        self.maxPieceBytes = maxBytes
        self.byteToken = byteToken
        self.unknownID = unknownID
    }

    /// A candidate merge of the symbols starting at `left` and `right` (byte offsets), `size` bytes together.
    private struct Bigram {
        let score: Float
        let left: Int32
        let right: Int32
        let size: Int32
        let id: Int32
        /// Heap order: higher score first, then the leftmost.
        @inline(__always) func before(_ o: Bigram) -> Bool { score > o.score || (score == o.score && left < o.left) }
    }

    /// Appends the ids of `bytes[range]` (UTF-8 text free of user-defined tokens) to `out`.
    func encode(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into out: inout [Int]) {
        guard !range.isEmpty else { return }
        // Escaped text: every space replaced by ▁.
        var text: [UInt8] = []
        text.reserveCapacity(range.count + range.count / 2)
        for i in range {
            if bytes[i] == 0x20 { text.append(contentsOf: SentencePieceEncoder.spaceMark) } else { text.append(bytes[i]) }
        }
        // Symbols: one per UTF-8 character, indexed by their first byte; len 0 = merged away.
        let n = text.count
        var len = [Int32](repeating: 0, count: n)
        var prev = [Int32](repeating: -1, count: n)
        var next = [Int32](repeating: -1, count: n)
        var starts: [Int32] = []
        var i = 0
        while i < n {
            let c = min(SentencePieceEncoder.utf8Length(text[i]), n - i)
            len[i] = Int32(c)
            if let last = starts.last { prev[i] = last; next[Int(last)] = Int32(i) }
            starts.append(Int32(i))
            i += c
        }
        var heap: [Bigram] = []
        text.withUnsafeBufferPointer { t in
            func tryAdd(_ l: Int32, _ r: Int32) {
                guard l >= 0, r >= 0 else { return }
                let size = Int(len[Int(l)] + len[Int(r)])
                guard size <= maxPieceBytes else { return }
                let id = pieceID.lookup(UnsafeBufferPointer(rebasing: t[Int(l)..<(Int(l) + size)]))
                guard id >= 0 else { return }
                Heap.push(&heap, Bigram(score: scores[Int(id)], left: l, right: r, size: Int32(size), id: id)) { $0.before($1) }
            }
            for k in 0..<max(0, starts.count - 1) { tryAdd(starts[k], starts[k + 1]) }
            while let b = Heap.pop(&heap, by: { $0.before($1) }) {
                let l = Int(b.left), r = Int(b.right)
                // Stale: one side was merged into something else since this pair was queued.
                guard len[l] > 0, len[r] > 0, len[l] + len[r] == b.size else { continue }
                len[l] += len[r]
                len[r] = 0
                next[l] = next[r]
                if next[r] >= 0 { prev[Int(next[r])] = Int32(l) }
                tryAdd(prev[l], Int32(l))
                tryAdd(Int32(l), next[l])
            }
            var s: Int32 = n > 0 ? 0 : -1
            while s >= 0 {
                let lo = Int(s), hi = lo + Int(len[lo])
                let id = pieceID.lookup(UnsafeBufferPointer(rebasing: t[lo..<hi]))
                if id >= 0 {
                    out.append(Int(id))
                } else {
                    for k in lo..<hi {
                        let bt = byteToken[Int(t[k])]
                        if bt >= 0 { out.append(Int(bt)) } else if let u = unknownID { out.append(u) }
                    }
                }
                s = next[lo]
            }
        }
    }

    /// Length of the UTF-8 sequence starting with `lead` (1 for a stray continuation byte).
    @inline(__always) static func utf8Length(_ lead: UInt8) -> Int {
        switch lead {
        case 0xF0...: return 4
        case 0xE0...: return 3
        case 0xC0...: return 2
        default: return 1
        }
    }
}

/// Byte-exact map from piece text to id (open addressing, FNV-1a). Unlike `[String: Int]` it neither allocates per
/// lookup nor treats canonically equivalent strings ("é" and "e\u{301}") as the same key.
struct PieceTable: Sendable {
    private let bytes: [UInt8]
    /// Entry k's bytes are `bytes[offsets[k]..<offsets[k + 1]]`.
    private let offsets: [Int32]
    private let ids: [Int32]
    /// Entry index per slot, -1 = empty; a power of two ≥ 2 × entries long.
    private let slots: [Int32]

    /// The first id of each distinct byte string wins.
    init(_ pieces: [(String, Int32)]) {
        var bytes: [UInt8] = [], offsets: [Int32] = [0], ids: [Int32] = []
        var size = 16
        while size < 2 * pieces.count { size <<= 1 }
        var slots = [Int32](repeating: -1, count: size)
        bytes.reserveCapacity(pieces.count * 6)
        for (text, id) in pieces {
            let start = bytes.count
            bytes.append(contentsOf: text.utf8)
            let found: Bool = bytes.withUnsafeBufferPointer { b in
                let key = UnsafeBufferPointer(rebasing: b[start...])
                var h = PieceTable.hash(key) & (size - 1)
                while slots[h] >= 0 {
                    let k = Int(slots[h]), lo = Int(offsets[k]), n = Int(offsets[k + 1]) - lo
                    if n == key.count && memcmp(b.baseAddress! + lo, key.baseAddress!, n) == 0 { return true }
                    h = (h + 1) & (size - 1)
                }
                slots[h] = Int32(ids.count)
                return false
            }
            if found { bytes.removeSubrange(start...); continue }
            offsets.append(Int32(bytes.count))
            ids.append(id)
        }
        self.bytes = bytes; self.offsets = offsets; self.ids = ids; self.slots = slots
    }

    /// The id of the piece whose UTF-8 is exactly `key`, or -1.
    func lookup(_ key: UnsafeBufferPointer<UInt8>) -> Int32 {
        let mask = slots.count - 1
        var h = PieceTable.hash(key) & mask
        return bytes.withUnsafeBufferPointer { b in
            while true {
                let k = Int(slots[h])
                if k < 0 { return -1 }
                let lo = Int(offsets[k]), n = Int(offsets[k + 1]) - lo
                if n == key.count && memcmp(b.baseAddress! + lo, key.baseAddress!, n) == 0 { return ids[k] }
                h = (h + 1) & mask
            }
        }
    }

    @inline(__always) static func hash(_ key: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for c in key { h = (h ^ UInt64(c)) &* 0x100_0000_01b3 }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }
}

/// A binary heap over an array with a caller-given order (`before(a, b)`: a comes out first).
enum Heap {
    static func push<T>(_ h: inout [T], _ v: T, by before: (T, T) -> Bool) {
        h.append(v)
        var i = h.count - 1
        while i > 0 {
            let p = (i - 1) >> 1
            if !before(v, h[p]) { break }
            h[i] = h[p]
            i = p
        }
        h[i] = v
    }

    static func pop<T>(_ h: inout [T], by before: (T, T) -> Bool) -> T? {
        guard let last = h.popLast() else { return nil }
        guard !h.isEmpty else { return last }
        let top = h[0]
        let n = h.count
        var i = 0
        while true {
            var c = 2 * i + 1
            if c >= n { break }
            if c + 1 < n && before(h[c + 1], h[c]) { c += 1 }
            if !before(h[c], last) { break }
            h[i] = h[c]
            i = c
        }
        h[i] = last
        return top
    }
}
