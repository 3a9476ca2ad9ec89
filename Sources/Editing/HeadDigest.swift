import Foundation
import HDF5Store
import Hashing
import Llama

/// The head digest of a model store: one SHA-256 over everything the effective model depends on — the base
/// weights' recorded hashes, the tokenizer, the configuration, the provenance, the root attributes and the whole
/// edit log — like a git commit id. Written down outside the store (printed by `scalpel edit` and `scalpel log`),
/// it anchors `scalpel audit --expect DIGEST`: an attacker who rewrites anything in the store, and recomputes every
/// hash stored inside it, still changes the digest.
///
/// Canonical serialization (hashed as one stream; `docs/formats.md`). Every name and string is written as
/// `byteCount:bytes` (UTF-8), so no separator inside a value is ambiguous; every item ends in `\n`:
/// ```
/// scalpel-head-digest 1
/// G <path>                      each group, from "/" down, members in byte order of their names
///   A <name> s <string>         each attribute, in byte order of name: string,
///   A <name> i <n> <v1> …       integers (n values, decimal),
///   A <name> f <n> <hex64> …    floats (n values, IEEE-754 binary64 bit patterns, 16 hex digits),
///   A <name> ? <type>           or another type (named only)
/// D <path> <shape> f32|f64|i32|i64|u8  then the little-endian element bytes, then \n (then its attributes)
/// D <path> <shape> str <n>      then n strings, each <string>\n (then its attributes)
/// D <path> <shape> ? <type>     a dataset of another type (then its attributes)
/// W <path> <shape>              a dataset under /weights: values NOT hashed, only its attributes, which hold
///                               `sha256` (the audit checks the values against it)
/// O <path>                      a link that is neither a group nor a dataset
/// L none                        the store has no edit log (a deleted log is this, not an empty list)
/// L <format> <version> <log_sha256> <n>  the log as stored (`-` for a missing value), then per entry in id order:
/// E <group> <computed entry_sha256> <stored entry_sha256> <k> <unreadable member>…
/// X <name>                      each member of the log that is not an entry
/// ```
/// `<shape>` is `[d0,d1,…]`. The store's `/edits` group is not walked as a group: the log enters through
/// `EditLog.read(path:)` only (wherever the log lives).
public struct HeadDigest: Equatable, Sendable, CustomStringConvertible {
    /// 64 lowercase hex digits.
    public let hex: String

    public init(hex: String) { self.hex = hex }
    public var description: String { hex }

    /// Serialization format version (the first line of the stream).
    public static let version = 1

    /// The head digest of the store at `path`.
    public static func compute(path: String) throws -> HeadDigest {
        let h5 = try EditLog.openStore(path)
        defer { try? h5.close() }
        var s = CanonicalStream()
        s.line("scalpel-head-digest \(version)")
        do {
            try walk(h5.root, into: &s)
        } catch let e as HDF5Error {
            throw LlamaError.storeCorrupt(path: path, problem: "cannot read it for the head digest: \(e)")
        }
        put(try EditLog.read(path: path), into: &s)
        return HeadDigest(hex: SHA256.hexString(s.hash.finalize()))
    }

    /// HMAC-SHA256 of the digest's 32 raw bytes under `key` (64 hex digits): a signature only the key's holder can
    /// make. The key lives outside the store (`--key-file`).
    public func signature(key: [UInt8]) -> String {
        HMACSHA256.hex(HeadDigest.bytes(hex: hex) ?? [], key: key)
    }

    /// True when `signature` (hex, any case) is this digest's signature under `key` (compared in constant time).
    public func verify(signature: String, key: [UInt8]) -> Bool {
        guard let given = HeadDigest.bytes(hex: signature.lowercased()) else { return false }
        return HMACSHA256.constantTimeEqual(given, HMACSHA256.authenticate(HeadDigest.bytes(hex: hex) ?? [], key: key))
    }

    /// Parses a digest given by the user: exactly 64 hex digits (any case, surrounding blanks ignored).
    public static func parse(_ text: String) -> HeadDigest? {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        guard t.count == 64, bytes(hex: t) != nil else { return nil }
        return HeadDigest(hex: t)
    }

    /// Reads a signing key: the file's bytes, at least 16 of them (a key file is a secret kept outside the store).
    public static func readKey(path: String) throws -> [UInt8] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else {
            throw EditingError.fileNotFound(path: path)
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EditingError.invalidArgument(name: "--key-file", reason: "\(path): cannot be read (check its permissions)")
        }
        guard data.count >= 16 else {
            throw EditingError.invalidArgument(name: "--key-file", reason: "\(path) holds \(data.count) bytes; a key needs at least 16 (e.g. head -c 32 /dev/urandom > \(path))")
        }
        return [UInt8](data)
    }

    static func bytes(hex: String) -> [UInt8]? {
        let u = Array(hex.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(u.count / 2)
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            default: return nil
            }
        }
        var i = 0
        while i < u.count {
            guard let a = nibble(u[i]), let b = nibble(u[i + 1]) else { return nil }
            out.append(a << 4 | b)
            i += 2
        }
        return out
    }

    // MARK: Serialization

    static func byteOrder(_ a: String, _ b: String) -> Bool { Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8)) }

    static func shapeText(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ",") + "]" }

    /// Group `g`, its attributes, then its members (recursively).
    static func walk(_ g: HDF5Group, into s: inout CanonicalStream) throws {
        s.raw("G "); s.string(g.path); s.line("")
        try attributes(of: g, into: &s)
        let isRoot = g.path == "/"
        for name in try g.memberNames().sorted(by: byteOrder) {
            if isRoot && name == EditLogSchema.groupName { continue }  // the log enters through EditLog.read
            let path = (isRoot ? "/" : g.path + "/") + name
            switch try g.kind(of: name) {
            case .group?: try walk(try g.group(name), into: &s)
            case .dataset?: try dataset(try g.dataset(name), path: path, weights: g.path == "/weights", into: &s)
            default: s.raw("O "); s.string(path); s.line("")
            }
        }
    }

    static func attributes(of o: HDF5Object, into s: inout CanonicalStream) throws {
        for name in try o.attributeNames().sorted(by: byteOrder) {
            s.raw("A "); s.string(name)
            if let v = try? o.stringAttribute(name) {
                s.raw(" s "); s.string(v)
            } else if let v = try? o.intArrayAttribute(name) {
                s.raw(" i \(v.count)" + v.map { " \($0)" }.joined())
            } else if let v = try? o.doubleArrayAttribute(name) {
                s.raw(" f \(v.count)" + v.map { " " + hex16($0.bitPattern) }.joined())
            } else {
                s.raw(" ? unreadable")
            }
            s.line("")
        }
    }

    /// 16 lowercase hex digits.
    static func hex16(_ x: UInt64) -> String {
        let h = String(x, radix: 16)
        return String(repeating: "0", count: 16 - h.count) + h
    }

    static func dataset(_ d: HDF5Dataset, path: String, weights: Bool, into s: inout CanonicalStream) throws {
        if weights {
            s.raw("W "); s.string(path); s.line(" " + shapeText(d.shape))
        } else {
            s.raw("D "); s.string(path); s.raw(" " + shapeText(d.shape))
            switch d.elementType {
            case .float32?: s.line(" f32"); s.values(try d.read(as: Float.self).map { $0.bitPattern })
            case .float64?: s.line(" f64"); s.values(try d.read(as: Double.self).map { $0.bitPattern })
            case .int32?: s.line(" i32"); s.values(try d.read(as: Int32.self))
            case .int64?: s.line(" i64"); s.values(try d.read(as: Int64.self))
            case .uint8?: s.line(" u8"); s.values(try d.read(as: UInt8.self))
            case nil:
                if let strings = try? d.readStrings() {
                    s.line(" str \(strings.count)")
                    for x in strings { s.string(x); s.line("") }
                } else {
                    s.raw(" ? "); s.string(d.storedTypeDescription); s.line("")
                }
            }
            if d.elementType != nil { s.line("") }
        }
        try attributes(of: d, into: &s)
    }

    static func put(_ log: StoredEditLog, into s: inout CanonicalStream) {
        if log.isEmpty { s.line("L none"); return }
        s.raw("L "); s.string(log.format ?? "-"); s.raw(" \(log.formatVersion.map(String.init) ?? "-") ")
        s.string(log.storedLogSHA256 ?? "-"); s.line(" \(log.records.count)")
        for r in log.records {
            s.raw("E "); s.string(r.groupName); s.raw(" " + r.computedSHA256() + " "); s.string(r.storedSHA256 ?? "-")
            s.raw(" \(r.unreadable.count)")
            for u in r.unreadable.sorted(by: byteOrder) { s.raw(" "); s.string(u) }
            s.line("")
        }
        for x in log.strayMembers.sorted(by: byteOrder) { s.raw("X "); s.string(x); s.line("") }
    }
}

/// The byte stream `HeadDigest` hashes.
struct CanonicalStream {
    var hash = SHA256()

    mutating func raw(_ text: String) { hash.update(Array(text.utf8)) }
    mutating func line(_ text: String) { raw(text + "\n") }
    /// `byteCount:bytes`.
    mutating func string(_ text: String) {
        let u = Array(text.utf8)
        raw("\(u.count):")
        hash.update(u)
    }
    /// Little-endian bytes of fixed-width integers.
    mutating func values<T: FixedWidthInteger>(_ xs: [T]) {
        let le = xs.map(\.littleEndian)
        le.withUnsafeBytes { hash.update($0) }
    }
}
