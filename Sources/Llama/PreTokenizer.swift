/// Regex-free pre-tokenizers: hand-written scanners over Unicode scalars that reproduce the
/// split regexes of the supported GGUF `tokenizer.ggml.pre` types exactly (leftmost-first
/// alternation semantics, greedy runs, `\s+(?!\S)` backtracking).
///
/// - `gpt2`:   `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// - `smollm`: every `\p{N}` isolated first (HF `Digits(individual_digits: true)`, llama.cpp
///             regex `\p{N}`), then `gpt2` on the pieces in between. llama.cpp groups SMOLLM
///             with STARCODER, REFACT, COMMAND_R, CODESHELL, EXAONE, MINERVA.
/// - `llama3`: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|`
///             ` ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`  (GGUF "llama-bpe")
/// - `qwen2`:  as `llama3` but `\p{N}` (one number per piece).
///
/// `\s` is the Unicode White_Space property, `\p{L}` / `\p{N}` the general categories L* / N*.
public enum PreTokenizer: String, CaseIterable, Sendable {
    case gpt2
    case smollm
    case llama3
    case qwen2

    /// GGUF `tokenizer.ggml.pre` names accepted for each scanner (llama.cpp's groupings).
    public static let ggufNames: [String: PreTokenizer] = [
        "gpt2": .gpt2, "mpt": .gpt2, "olmo": .gpt2, "jais": .gpt2,
        "smollm": .smollm, "starcoder": .smollm, "refact": .smollm, "command-r": .smollm,
        "codeshell": .smollm, "exaone": .smollm, "minerva": .smollm,
        "llama-bpe": .llama3, "llama3": .llama3,
        "qwen2": .qwen2, "stablelm2": .qwen2,
    ]

    /// The scanner for a GGUF `tokenizer.ggml.pre` value, or nil if unsupported.
    public init?(ggufName name: String) {
        guard let p = PreTokenizer.ggufNames[name] else { return nil }
        self = p
    }

    /// Splits `text` into pre-tokens (the pieces BPE runs on independently).
    public func split(_ text: String) -> [String] {
        let decoded = DecodedText(text)
        var ranges: [Range<Int>] = []
        split(decoded, 0..<decoded.scalars.count, into: &ranges)
        var s = Array(text.utf8)
        return s.withUnsafeMutableBufferPointer { buf in
            ranges.map { r in
                let lo = Int(decoded.offsets[r.lowerBound]), hi = Int(decoded.offsets[r.upperBound])
                return String(decoding: UnsafeBufferPointer(rebasing: buf[lo..<hi]), as: UTF8.self)
            }
        }
    }

    /// Appends the scalar-index ranges of the pre-tokens of `text.scalars[range]` to `out`.
    /// The range is treated as a whole input: lookaheads stop at its end.
    func split(_ text: DecodedText, _ range: Range<Int>, into out: inout [Range<Int>]) {
        text.scalars.withUnsafeBufferPointer { cp in
            text.classes.withUnsafeBufferPointer { cls in
                let scan = Scanner(cp: cp, cls: cls)
                switch self {
                case .gpt2:
                    scan.gpt2(range.lowerBound, range.upperBound, &out)
                case .smollm:
                    // A Unicode 15 number is classed `.other` by the Unicode 14 regex tables but is
                    // still isolated here (HF `Digits` uses Rust's own tables).
                    @inline(__always) func isDigit(_ i: Int) -> Bool {
                        cls[i] == .number || (cls[i] == .other && cp[i] >= 0x80 && CharClass.isNumericUnicode15(cp[i]))
                    }
                    var i = range.lowerBound
                    let end = range.upperBound
                    while i < end {
                        if isDigit(i) {
                            out.append(i..<(i + 1)); i += 1
                        } else {
                            var j = i + 1
                            while j < end && !isDigit(j) { j += 1 }
                            scan.gpt2(i, j, &out)
                            i = j
                        }
                    }
                case .llama3:
                    scan.llama3(range.lowerBound, range.upperBound, maxDigits: 3, &out)
                case .qwen2:
                    scan.llama3(range.lowerBound, range.upperBound, maxDigits: 1, &out)
                }
            }
        }
    }
}

private let apostrophe: UInt32 = 0x27
private let space: UInt32 = 0x20
private let cr: UInt32 = 0x0D
private let lf: UInt32 = 0x0A

private struct Scanner {
    let cp: UnsafeBufferPointer<UInt32>
    let cls: UnsafeBufferPointer<CharClass>

    /// Length (2 or 3) of a contraction `'s|'t|'re|'ve|'m|'ll|'d` starting at `i` (which holds `'`), else 0.
    @inline(__always)
    func contraction(_ i: Int, _ end: Int, caseInsensitive: Bool) -> Int {
        guard i + 1 < end else { return 0 }
        var a = cp[i + 1]
        if caseInsensitive {
            if a >= 0x41 && a <= 0x5A { a += 0x20 }
            if a == 0x17F { a = 0x73 }   // ſ case-folds to s (Oniguruma / HF `(?i:…)` semantics)
        }
        switch a {
        case 0x73, 0x74, 0x6D, 0x64: return 2            // s t m d
        case 0x72, 0x76, 0x6C:                           // r v l
            guard i + 2 < end else { return 0 }
            var b = cp[i + 2]
            if caseInsensitive, b >= 0x41, b <= 0x5A { b += 0x20 }
            if (a == 0x72 || a == 0x76) && b == 0x65 { return 3 }   // re ve
            if a == 0x6C && b == 0x6C { return 3 }                  // ll
            return 0
        default: return 0
        }
    }

    /// End of the run of class `c` starting at `i`.
    @inline(__always)
    func run(_ c: CharClass, from i: Int, _ end: Int) -> Int {
        var j = i
        while j < end && cls[j] == c { j += 1 }
        return j
    }

    /// `\s+(?!\S)|\s+` at `i` (a white-space scalar): the whole run at the end of input,
    /// all but the last scalar of a longer run, or a lone scalar.
    @inline(__always)
    func whitespace(_ i: Int, _ end: Int) -> Int {
        let r = run(.space, from: i, end)
        if r == end { return end }
        return r - i > 1 ? r - 1 : i + 1
    }

    func gpt2(_ start: Int, _ end: Int, _ out: inout [Range<Int>]) {
        var i = start
        while i < end {
            let c = cp[i]
            if c == apostrophe {
                let n = contraction(i, end, caseInsensitive: false)
                if n > 0 { out.append(i..<(i + n)); i += n; continue }
            }
            // ` ?X+` for X in L, N, other: an ASCII space joins a following non-space run.
            var j = i
            if c == space && i + 1 < end && cls[i + 1] != .space { j = i + 1 }
            let k = cls[j]
            let e: Int
            if k == .space {
                e = whitespace(i, end)
            } else {
                e = run(k, from: j, end)
            }
            out.append(i..<e)
            i = e
        }
    }

    func llama3(_ start: Int, _ end: Int, maxDigits: Int, _ out: inout [Range<Int>]) {
        var i = start
        while i < end {
            let c = cp[i]
            let k = cls[i]
            var e = -1
            if c == apostrophe {
                let n = contraction(i, end, caseInsensitive: true)
                if n > 0 { e = i + n }
            }
            if e < 0 {
                switch k {
                case .letter:
                    // [^\r\n\p{L}\p{N}]?\p{L}+ with an empty prefix
                    e = run(.letter, from: i, end)
                case .number:
                    // \p{N}{1,maxDigits}
                    e = i + 1
                    while e < end && e - i < maxDigits && cls[e] == .number { e += 1 }
                case .other, .space:
                    if c != cr && c != lf && i + 1 < end && cls[i + 1] == .letter {
                        // one non-letter/number/newline prefix + letters
                        e = run(.letter, from: i + 1, end)
                    } else if k == .other || (c == space && i + 1 < end && cls[i + 1] == .other) {
                        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
                        e = run(.other, from: k == .other ? i : i + 1, end)
                        while e < end && (cp[e] == cr || cp[e] == lf) { e += 1 }
                    } else {
                        // `\s*[\r\n]+`, else `\s+(?!\S)|\s+`
                        let r = run(.space, from: i, end)
                        var p = r - 1
                        while p >= i && cp[p] != cr && cp[p] != lf { p -= 1 }
                        e = p >= i ? p + 1 : whitespace(i, end)
                    }
                }
            }
            out.append(i..<e)
            i = e
        }
    }
}
