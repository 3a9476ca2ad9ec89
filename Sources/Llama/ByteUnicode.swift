/// Byte-level plumbing shared by the BPE tokenizer and its pre-tokenizers:
/// the GPT-2 byte ↔ printable-character table, a small UTF-8 decoder, and
/// fast Unicode class lookups (letters `\p{L}`, numbers `\p{N}`, white space `\s`).

/// The GPT-2 `bytes_to_unicode` table: every byte maps to one printable Unicode scalar.
/// Bytes `!`…`~`, `¡`…`¬` and `®`…`ÿ` map to themselves; the remaining 68 bytes
/// (controls, space, DEL, NBSP, soft hyphen…) map, in byte order, to U+0100, U+0101, …
enum ByteLevel {
    /// byte → scalar value of its printable stand-in.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    /// Inverse of `byteToScalar` for scalars below 512 (all stand-ins are < 0x144); -1 if not a stand-in.
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 512)
        for (b, s) in byteToScalar.enumerated() { table[Int(s)] = Int16(b) }
        return table
    }()

    /// The single-character vocabulary string that stands for `byte`.
    static func string(forByte byte: UInt8) -> String {
        String(Character(Unicode.Scalar(byteToScalar[Int(byte)])!))
    }

    /// Byte-level string (e.g. "ĠParis") → raw bytes (" Paris").
    /// Scalars that are not stand-ins (e.g. inside added tokens) pass through as their UTF-8.
    static func decode(_ token: String, into out: inout [UInt8]) {
        for s in token.unicodeScalars {
            let v = Int(s.value)
            if v < 512, scalarToByte[v] >= 0 {
                out.append(UInt8(scalarToByte[v]))
            } else {
                out.append(contentsOf: s.utf8)
            }
        }
    }

    /// Raw bytes → byte-level string.
    static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(byteToScalar[Int(b)])!) }
        return String(s)
    }
}

/// Coarse Unicode classes used by the split regexes.
enum CharClass: UInt8 {
    case other = 0       // [^\s\p{L}\p{N}]
    case letter = 1      // \p{L}
    case number = 2      // \p{N}
    case space = 3       // \s (White_Space)

    /// ASCII fast path.
    static let ascii: [CharClass] = (0..<128).map { v -> CharClass in
        switch UInt8(v) {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"): return .letter
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return .number
        case 0x09...0x0D, 0x20: return .space
        default: return .other
        }
    }

    /// `char::is_numeric` as used by HF's `Digits` pre-tokenizer: general category Nd, Nl or No
    /// per Rust's Unicode 15 tables (newer than the regex engine's 14.0, older than Swift's).
    static func isNumericUnicode15(_ v: UInt32) -> Bool {
        if v < 128 { return ascii[Int(v)] == .number }
        guard let s = Unicode.Scalar(v), let age = s.properties.age, age.major < 16 else { return false }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    @inline(__always)
    static func of(_ v: UInt32) -> CharClass {
        if v < 128 { return ascii[Int(v)] }
        return slow(v)
    }

    static func slow(_ v: UInt32) -> CharClass {
        guard let s = Unicode.Scalar(v) else { return .other }
        let p = s.properties
        // The reference regex engine (Oniguruma in HF `tokenizers`) knows Unicode 14.0; scalars
        // assigned later are unassigned (Cn) there, so they count as "other" here too.
        guard let age = p.age, age.major < 15 else {
            return p.isWhitespace ? .space : .other
        }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return .number
        default:
            return p.isWhitespace ? .space : .other
        }
    }
}

/// UTF-8 text decoded to scalars, with the byte offset of every scalar (plus a final end offset),
/// so that scalar ranges found by the pre-tokenizer map straight back to byte ranges.
struct DecodedText {
    var scalars: [UInt32] = []
    var classes: [CharClass] = []
    /// `offsets[i]` is the byte offset of scalar `i`; `offsets[scalars.count]` is the end.
    var offsets: [Int32] = []

    /// Decodes `bytes[range]`, which must be valid UTF-8 (as from a Swift `String`).
    /// Malformed sequences degrade to one U+FFFD per offending byte.
    init(bytes: UnsafeBufferPointer<UInt8>, range: Range<Int>) {
        scalars.reserveCapacity(range.count)
        classes.reserveCapacity(range.count)
        offsets.reserveCapacity(range.count + 1)
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            let b0 = bytes[i]
            var v: UInt32
            var n: Int
            if b0 < 0x80 {
                v = UInt32(b0); n = 1
            } else if b0 & 0xE0 == 0xC0 {
                v = UInt32(b0 & 0x1F); n = 2
            } else if b0 & 0xF0 == 0xE0 {
                v = UInt32(b0 & 0x0F); n = 3
            } else if b0 & 0xF8 == 0xF0 {
                v = UInt32(b0 & 0x07); n = 4
            } else {
                v = 0xFFFD; n = 1
            }
            if n > 1 {
                if i + n > end {
                    v = 0xFFFD; n = 1
                } else {
                    for k in 1..<n {
                        let c = bytes[i + k]
                        if c & 0xC0 != 0x80 { v = 0xFFFD; n = 1; break }
                        v = (v << 6) | UInt32(c & 0x3F)
                    }
                }
            }
            scalars.append(v)
            classes.append(CharClass.of(v))
            offsets.append(Int32(i))
            i += n
        }
        offsets.append(Int32(end))
    }

    init(_ text: String) {
        var copy = text
        self = copy.withUTF8 { buf in DecodedText(bytes: buf, range: 0..<buf.count) }
    }
}
