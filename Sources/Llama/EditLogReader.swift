import Foundation
import HDF5Store
import Hashing

// The edit log of a Scalpel model store, as far as the model layer needs it: reading entries, checking their
// integrity hashes and applying the active rank-one updates to the base weights. Writing entries, revert/reapply and
// the audit live in the Editing module (`EditLog`, `EditEntry`, `EditAuditor`); the canonical serialization that
// `entry_sha256` covers is defined here, once, so both modules agree on it.
//
// Layout (see docs/formats.md): the log is the `/edits` group of the sidecar file `NAME.edits.h5` beside the store
// `NAME.h5` (symlinks resolved) when that file exists, else the `/edits` group inside the store (stores written before
// the sidecar, and new stores made by `edit --out`). Base weights, config and tokenizer in the store are immutable
// after import; a commit only replaces the sidecar (temp file + fsync + rename), so it costs O(log) bytes.
// A sidecar that carries over a store's internal log records that log's `log_sha256` as
// `/edits@carried_over_log_sha256`; a store with an internal log whose sidecar does not carry it over (or a sidecar
// that claims to carry over a log the store does not have) is refused (`LlamaError.storeCorrupt`), never guessed.
// - `/edits` attributes `format = "scalpel-edit-log"`, `format_version`, `log_sha256` (see `StoredEditLog.computedLogSHA256`).
// - `/edits/{id}` (ids `e0001`, `e0002`, … in order) attributes as listed in `EditLogSchema`, `entry_sha256`; float32
//   1-D datasets `u` [cols], `lambda` [rows], `key`, `value`.
//
// Base weights (`/weights`) are never modified by edits. `ModelFile.open` reads them and applies the active entries in
// id order, W += lambda ⊗ u, with the fixed loop of `EditLogReader.applyRankOne` (the same arithmetic as
// `ROME.apply`), so an effective model is bitwise reproducible from the store.
//
// Caching: the effective weights are materialized once per `ModelFile.open` and held by the `ModelFile` for the life
// of the process. A disk cache is not worth it: one rank-one update of a 576 × 1536 matrix takes about a millisecond,
// while reading the base weights takes seconds, and a cache would be as large as the matrices it caches.

/// Names and storage types of an edit-log entry's members.
public enum EditLogSchema {
    /// The log's group below the root.
    public static let groupName = "edits"
    public static let format = "scalpel-edit-log"
    public static let formatVersion = 1
    /// Status values.
    public static let active = "active", reverted = "reverted"
    /// String attributes of an entry (JSON values are stored as strings). `target_true` may be absent.
    public static let stringAttributes = [
        "id", "created", "method", "hparams", "parameter", "request", "subject", "target_new", "target_true",
        "tool_version", "status", "status_history", "stats_sha256", "stats_path", "weight_sha256_before",
        "weight_sha256_after", "metrics_before", "metrics_after", "active_before",
    ]
    /// Integer attributes of an entry.
    public static let intAttributes = ["layer"]
    /// Attributes an entry may lack.
    public static let optionalAttributes: Set<String> = ["target_true"]
    /// The integrity hash attribute (not part of what it covers).
    public static let hashAttribute = "entry_sha256"
    /// Float32 1-D datasets of an entry.
    public static let datasets = ["u", "lambda", "key", "value"]
    /// Root attribute `format` of a sidecar log file.
    public static let sidecarFormat = "scalpel-edit-log-file"
    /// `/edits` attribute of a sidecar: `log_sha256` of the store's internal log it carried over.
    public static let carriedOverAttribute = "carried_over_log_sha256"

    /// The sidecar log of the store at `storePath`: `DIR/NAME.edits.h5` beside the store's real path (`NAME.h5`).
    public static func sidecarPath(forStore storePath: String) -> String {
        let real = FileLock.resolve(storePath)
        return (real as NSString).deletingPathExtension + ".edits.h5"
    }

    /// `e0001` for 1. Numbers above 9999 get more digits (`e10000`); ids sort by their number.
    public static func id(number: Int) -> String {
        let digits = String(number)
        return "e" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// The number of an id (`e0012` → 12), nil when it is not one.
    public static func number(of id: String) -> Int? {
        guard id.hasPrefix("e"), id.count >= 5, let n = Int(id.dropFirst()), n > 0, self.id(number: n) == id else {
            return nil
        }
        return n
    }
}

/// One entry of a store's edit log as stored: every readable attribute and float32 dataset.
public struct EditLogRecord: Equatable, Sendable {
    /// An attribute value (entries only hold strings and integers).
    public enum Value: Equatable, Sendable, CustomStringConvertible {
        case string(String)
        case int(Int)
        public var description: String {
            switch self {
            case let .string(s): return s
            case let .int(i): return String(i)
            }
        }
    }

    /// Name of the entry's group below `/edits`.
    public var groupName: String
    /// Every attribute except `entry_sha256`.
    public var attributes: [String: Value]
    /// Every 1-D float32 dataset.
    public var datasets: [String: [Float]]
    /// `entry_sha256` as stored, nil when absent.
    public var storedSHA256: String?
    /// Members that are neither: attributes of other types (`@name`), datasets of other types or shapes, groups.
    public var unreadable: [String]

    public init(groupName: String, attributes: [String: Value], datasets: [String: [Float]], storedSHA256: String? = nil,
                unreadable: [String] = []) {
        self.groupName = groupName; self.attributes = attributes; self.datasets = datasets
        self.storedSHA256 = storedSHA256; self.unreadable = unreadable
    }

    public func string(_ name: String) -> String? {
        if case let .string(s)? = attributes[name] { return s }
        return nil
    }
    public func int(_ name: String) -> Int? {
        if case let .int(i)? = attributes[name] { return i }
        return nil
    }

    public var id: String { string("id") ?? groupName }
    public var status: String? { string("status") }
    public var isActive: Bool { status == EditLogSchema.active }
    public var parameterName: String? { string("parameter") }
    public var lambda: [Float]? { datasets["lambda"] }
    public var u: [Float]? { datasets["u"] }

    /// SHA-256 of the canonical serialization of everything in the entry except `entry_sha256`: a header line, then
    /// each attribute in byte order of its name (`A name`, then `s byteCount` + UTF-8 bytes or `i value`), then each
    /// dataset in name order (`D name f32 count` + the little-endian float32 bytes), every item ending in a newline.
    public func computedSHA256() -> String {
        var h = SHA256()
        func put(_ s: String) { h.update(Array(s.utf8)) }
        put("scalpel-edit-entry \(EditLogSchema.formatVersion)\n")
        for name in attributes.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            put("A \(name)\n")
            switch attributes[name]! {
            case let .string(s): put("s \(s.utf8.count)\n"); put(s); put("\n")
            case let .int(i): put("i \(i)\n")
            }
        }
        for name in datasets.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            let v = datasets[name]!
            put("D \(name) f32 \(v.count)\n")
            v.withUnsafeBytes { raw in
                if Int(littleEndian: 1) == 1 {
                    h.update(raw)
                } else {
                    for x in v { withUnsafeBytes(of: x.bitPattern.littleEndian) { h.update($0) } }
                }
            }
            put("\n")
        }
        return SHA256.hexString(h.finalize())
    }

    /// True when `entry_sha256` is present and matches the contents.
    public var verifies: Bool { storedSHA256 == computedSHA256() }

    /// Writes the entry as group `/edits/{groupName}` of `h5` (replacing attributes and datasets of the same names)
    /// with a freshly computed `entry_sha256`. Returns that hash.
    @discardableResult
    public func write(to h5: HDF5File) throws -> String {
        let log = try h5.root.openOrCreateGroup(EditLogSchema.groupName)
        let g = try log.openOrCreateGroup(groupName)
        for (name, value) in attributes {
            switch value {
            case let .string(s): try g.setAttribute(name, s)
            case let .int(i): try g.setAttribute(name, i)
            }
        }
        for (name, values) in datasets {
            try g.write(values, shape: [values.count], to: name,
                        options: HDF5WriteOptions(compression: .none, overwrite: true))
        }
        let hash = computedSHA256()
        try g.setAttribute(EditLogSchema.hashAttribute, hash)
        return hash
    }
}

/// The edit log of a store as read from disk.
public struct StoredEditLog: Equatable, Sendable {
    /// Entries in id order.
    public var records: [EditLogRecord]
    /// `/edits` attributes (nil when the store has no log).
    public var format: String?
    public var formatVersion: Int?
    public var storedLogSHA256: String?
    /// Members of `/edits` that are not entry groups.
    public var strayMembers: [String]
    /// The sidecar file holding the log (nil: the log is the store's own `/edits`, or there is none).
    public var sidecarPath: String?
    /// For a sidecar log: the `log_sha256` of the store's internal log it carried over (nil: the store had none).
    public var carriedOverLogSHA256: String?

    public init(records: [EditLogRecord] = [], format: String? = nil, formatVersion: Int? = nil,
                storedLogSHA256: String? = nil, strayMembers: [String] = []) {
        self.records = records; self.format = format; self.formatVersion = formatVersion
        self.storedLogSHA256 = storedLogSHA256; self.strayMembers = strayMembers
    }

    /// True when the store has no `/edits` group.
    public var isEmpty: Bool { records.isEmpty && format == nil }

    /// Ids of active entries, in order.
    public var activeIDs: [String] { records.filter(\.isActive).map(\.id) }

    /// SHA-256 over the list of entries: `scalpel-edit-log 1`, then `id entry_sha256` per entry in order, one a line.
    /// Stored as `/edits@log_sha256`; detects entries removed, added or reordered outside Scalpel.
    public var computedLogSHA256: String { StoredEditLog.logSHA256(records.map { ($0.groupName, $0.storedSHA256 ?? "") }) }

    public static func logSHA256(_ entries: [(id: String, sha256: String)]) -> String {
        var text = "scalpel-edit-log \(EditLogSchema.formatVersion)\n"
        for e in entries { text += "\(e.id) \(e.sha256)\n" }
        return SHA256.hex(string: text)
    }

    /// The record with id `id`.
    public func record(_ id: String) -> EditLogRecord? { records.first { $0.groupName == id } }

    /// The next free id.
    public var nextID: String {
        EditLogSchema.id(number: (records.compactMap { EditLogSchema.number(of: $0.groupName) }.max() ?? 0) + 1)
    }

    /// Problems that make the log unsafe to apply to a model with configuration `config`: unknown or misnamed
    /// entries, bad status, unknown parameter, factor shapes, a failing `entry_sha256`, or a `log_sha256` that does
    /// not match the entries. Empty when the log is intact.
    public func integrityProblems(config: LlamaConfig) -> [String] {
        var out: [String] = []
        if isEmpty { return out }
        if format != EditLogSchema.format { out.append("/edits: format is \(format ?? "missing"), expected \(EditLogSchema.format)") }
        for name in strayMembers { out.append("/edits/\(name): not an edit entry (ids are e0001, e0002, …)") }
        for r in records { out += EditLogReader.applicationProblems(r, config: config) }
        if storedLogSHA256 != computedLogSHA256 {
            out.append("/edits: log_sha256 does not match the entries (an entry was added, removed or altered outside scalpel)")
        }
        return out
    }

    /// Throws `LlamaError.storeCorrupt` naming the first problems when the log is not intact.
    public func requireIntact(config: LlamaConfig, path: String) throws {
        let p = integrityProblems(config: config)
        guard p.isEmpty else {
            throw LlamaError.storeCorrupt(path: path, problem: "the edit log does not verify: " + p.prefix(3).joined(separator: "; ")
                                          + (p.count > 3 ? "; … (\(p.count) problems)" : "") + " — run `scalpel audit`")
        }
    }
}

/// Reads the edit log and applies its active entries.
public enum EditLogReader {
    /// Reads the log of an open store: its sidecar (`EditLogSchema.sidecarPath`) when present, else its own `/edits`
    /// (an empty log when there is neither). Throws `storeCorrupt` when a sidecar exists that cannot be read or does
    /// not agree with the store's internal log (see the layout notes above).
    public static func read(_ h5: HDF5File) throws -> StoredEditLog {
        let own = try readGroup(h5)
        let side = EditLogSchema.sidecarPath(forStore: h5.path)
        guard FileManager.default.fileExists(atPath: side) else { return own }
        let f: HDF5File
        do { f = try HDF5File(openingForReading: side) } catch {
            throw LlamaError.storeCorrupt(path: side, problem: "the store's sidecar edit log cannot be opened as HDF5 (\(error))")
        }
        defer { try? f.close() }
        guard (try? f.root.stringAttribute("format")) == EditLogSchema.sidecarFormat, f.root.exists(EditLogSchema.groupName) else {
            throw LlamaError.storeCorrupt(path: side, problem: "not a scalpel edit log (expected root format "
                                          + "\(EditLogSchema.sidecarFormat) and an /edits group)")
        }
        var log = try readGroup(f)
        let carried = try? f.root.group(EditLogSchema.groupName).stringAttribute(EditLogSchema.carriedOverAttribute)
        let ownHash = own.isEmpty ? nil : (own.storedLogSHA256 ?? "missing")
        guard carried == ownHash else {
            let problem = ownHash == nil
                ? "its sidecar log \(side) claims to carry over an internal log (log_sha256 \(carried!.prefix(16))…) the store does not have"
                : "it has its own edit log (/edits, log_sha256 \(ownHash!.prefix(16))…) and a sidecar log \(side) that does not carry it over"
                  + " (\(carried.map { "carried_over_log_sha256 \($0.prefix(16))…" } ?? "no carried_over_log_sha256"))"
            throw LlamaError.storeCorrupt(path: h5.path, problem: problem + "; the store and its log do not belong together "
                                          + "(one was replaced outside scalpel): restore the matching pair, or move the sidecar "
                                          + "aside to use the store's own log")
        }
        log.sidecarPath = side
        log.carriedOverLogSHA256 = carried
        return log
    }

    /// Reads the `/edits` group of `h5` (an empty log when there is none).
    static func readGroup(_ h5: HDF5File) throws -> StoredEditLog {
        let root = h5.root
        guard root.exists(EditLogSchema.groupName) else { return StoredEditLog() }
        do {
            let g = try root.group(EditLogSchema.groupName)
            var log = StoredEditLog()
            log.format = try? g.stringAttribute("format")
            log.formatVersion = try? g.intAttribute("format_version")
            log.storedLogSHA256 = try? g.stringAttribute("log_sha256")
            var numbered: [(Int, String)] = []
            for name in try g.memberNames() {
                if let n = EditLogSchema.number(of: name), try g.kind(of: name) == .group { numbered.append((n, name)) } else {
                    log.strayMembers.append(name)
                }
            }
            for (_, name) in numbered.sorted(by: { $0.0 < $1.0 }) { log.records.append(try readRecord(try g.group(name), name: name)) }
            return log
        } catch let e as HDF5Error {
            throw LlamaError.storeCorrupt(path: h5.path, problem: "cannot read the edit log: \(e)")
        }
    }

    /// Reads one entry group: every string or integer attribute and every 1-D float32 dataset.
    static func readRecord(_ g: HDF5Group, name: String) throws -> EditLogRecord {
        var r = EditLogRecord(groupName: name, attributes: [:], datasets: [:])
        for a in try g.attributeNames() {
            if a == EditLogSchema.hashAttribute {
                r.storedSHA256 = try? g.stringAttribute(a)
                if r.storedSHA256 == nil { r.unreadable.append("@" + a) }
            } else if let s = try? g.stringAttribute(a) {
                r.attributes[a] = .string(s)
            } else if let i = try? g.intAttribute(a) {
                r.attributes[a] = .int(i)
            } else {
                r.unreadable.append("@" + a)
            }
        }
        for m in try g.memberNames() {
            guard try g.kind(of: m) == .dataset, let d = try? g.dataset(m), d.elementType == .float32, d.shape.count == 1,
                  let values = try? d.read(as: Float.self) else {
                r.unreadable.append(m)
                continue
            }
            r.datasets[m] = values
        }
        return r
    }

    /// The parameter named `name` (GGUF naming) in a model of configuration `c`.
    public static func parameter(named name: String, config c: LlamaConfig) -> LlamaParameter? {
        LlamaParameter.all(c).first { $0.ggufName == name }
    }

    /// What keeps `r` from being applied to a model of configuration `c` (empty when it can be).
    public static func applicationProblems(_ r: EditLogRecord, config c: LlamaConfig) -> [String] {
        let at = "/edits/\(r.groupName)"
        var out: [String] = []
        if r.storedSHA256 == nil {
            out.append("\(at): entry_sha256 is missing")
        } else if !r.verifies {
            out.append("\(at): contents do not match entry_sha256 (the entry was altered after it was written)")
        }
        if r.string("id") != r.groupName { out.append("\(at): id attribute is \(r.string("id") ?? "missing")") }
        switch r.status {
        case EditLogSchema.active?, EditLogSchema.reverted?: break
        case let s?: out.append("\(at): status \"\(s)\" (expected active or reverted)")
        case nil: out.append("\(at): status is missing")
        }
        guard let name = r.parameterName else { out.append("\(at): parameter is missing"); return out }
        guard let p = parameter(named: name, config: c) else { out.append("\(at): no parameter \(name) in this model"); return out }
        let shape = p.shape(c)
        guard shape.count == 2 else { out.append("\(at): \(name) is not a matrix"); return out }
        if r.lambda?.count != shape[0] { out.append("\(at): lambda has \(r.lambda.map { "\($0.count)" } ?? "no") values, \(name) has \(shape[0]) rows") }
        if r.u?.count != shape[1] { out.append("\(at): u has \(r.u.map { "\($0.count)" } ?? "no") values, \(name) has \(shape[1]) columns") }
        for (k, v) in [("lambda", r.lambda), ("u", r.u)] where v?.allSatisfy({ $0.isFinite }) == false {
            out.append("\(at): \(k) has non-finite values")
        }
        return out
    }

    /// W += lambda ⊗ u on a row-major [lambda.count, u.count] matrix: W[i, j] += lambda[i] · u[j], row by row. This
    /// fixed order and arithmetic (one float32 product, one float32 sum per element, as in `ROME.apply`) make
    /// effective weights bitwise reproducible.
    public static func applyRankOne(lambda: [Float], u: [Float], to w: UnsafeMutableBufferPointer<Float>) {
        let rows = lambda.count, cols = u.count
        precondition(w.count == rows * cols, "rank-one update \(rows)×\(cols) on \(w.count) values")
        lambda.withUnsafeBufferPointer { l in
            u.withUnsafeBufferPointer { u in
                for i in 0..<rows {
                    let li = l[i]
                    let row = w.baseAddress! + i * cols
                    for j in 0..<cols { row[j] += li * u[j] }
                }
            }
        }
    }

    /// Applies entry `r` (whatever its status) to `weights`. The record must be free of `applicationProblems`.
    public static func apply(_ r: EditLogRecord, to weights: LlamaWeights) throws {
        guard let name = r.parameterName, let p = parameter(named: name, config: weights.config), let lambda = r.lambda,
              let u = r.u, p.shape(weights.config) == [lambda.count, u.count] else {
            throw LlamaError.storeCorrupt(path: "/edits/\(r.groupName)", problem: "entry cannot be applied")
        }
        weights.withParameter(p) { applyRankOne(lambda: lambda, u: u, to: $0) }
    }

    /// Applies the active entries of `log` to `weights` in id order; returns their ids.
    @discardableResult
    public static func applyActive(_ log: StoredEditLog, to weights: LlamaWeights) throws -> [String] {
        var applied: [String] = []
        for r in log.records where r.isActive {
            try apply(r, to: weights)
            applied.append(r.groupName)
        }
        return applied
    }
}
