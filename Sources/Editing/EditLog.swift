import Foundation
import HDF5Store
import Hashing
import Llama

/// The edit log of a Scalpel model store: reading entries, changing their status, computing effective matrices.
///
/// The store's base weights, config and tokenizer are immutable after import; the log lives in the sidecar file
/// `NAME.edits.h5` beside the store (see `EditLogReader`). Every write replaces the sidecar in one atomic transaction
/// (temp file, fsync, rename), so a crash at any moment leaves the previous or the new log, never a broken one, and a
/// commit writes O(log) bytes, whatever the model's size. Every write holds the store's lock (`EditLog.lock`) from
/// reading the log to the final rename, so concurrent writers never lose each other's entries. Before writing, the
/// log is verified (entry and log hashes); a log that does not verify is never modified (`EditingError.editLogCorrupt`).
/// Base weights are never modified: revert and reapply only flip an entry's status, and the effective model is always
/// recomputed from the base (`ModelFile.open`), so reverting is exact by construction.
public enum EditLog {
    /// The raw log of the store at `path`.
    public static func read(path: String) throws -> StoredEditLog {
        let h5 = try openStore(path)
        defer { try? h5.close() }
        return try EditLogReader.read(h5)
    }

    /// The entries of the store at `path`, in id order. Throws `editLogCorrupt` when an entry is malformed.
    public static func entries(path: String) throws -> [EditEntry] {
        try read(path: path).records.map { try EditEntry(record: $0, path: path) }
    }

    /// Opens a store read-only, mapping "not a store" to `storeRequired`.
    static func openStore(_ path: String, writable: Bool = false) throws -> HDF5File {
        guard FileManager.default.fileExists(atPath: path) else { throw EditingError.fileNotFound(path: path) }
        guard ["h5", "hdf5"].contains((path as NSString).pathExtension.lowercased()) else {
            throw EditingError.storeRequired(path: path)
        }
        let h5 = writable ? try HDF5File(openingForWriting: path) : try HDF5File(openingForReading: path)
        guard (try? h5.root.stringAttribute("format")) == ModelStore.format else {
            try? h5.close()
            throw EditingError.storeRequired(path: path)
        }
        return h5
    }

    /// Throws `editLogCorrupt` unless `log` verifies for a model of configuration `config`.
    static func requireIntact(_ log: StoredEditLog, config: LlamaConfig, path: String) throws {
        let p = log.integrityProblems(config: config) + log.records.flatMap(EditEntry.schemaProblems)
        guard p.isEmpty else {
            throw EditingError.editLogCorrupt(path: path, problem: p.prefix(3).joined(separator: "; ")
                                              + (p.count > 3 ? "; … (\(p.count) problems)" : ""))
        }
    }

    /// Writes `/edits` header attributes and `log_sha256` for `entries` (id, entry_sha256), in order.
    static func writeLogHeader(_ h5: HDF5File, entries: [(id: String, sha256: String)]) throws -> String {
        let g = try h5.root.openOrCreateGroup(EditLogSchema.groupName)
        try g.setAttribute("format", EditLogSchema.format)
        try g.setAttribute("format_version", EditLogSchema.formatVersion)
        let hash = StoredEditLog.logSHA256(entries)
        try g.setAttribute("log_sha256", hash)
        return hash
    }

    // MARK: Locking

    /// Seconds a writer waits for another scalpel process's lock on the same store (`--wait-lock`).
    public static let defaultLockWait: Double = 60

    /// Takes the write lock of the store at `path` (`FileLock` on `REALPATH.lock`), waiting up to `wait` seconds
    /// (`waiting` is told once, with a one-line notice). Hold the returned lock from reading the log to the last write.
    public static func lock(_ path: String, wait: Double = defaultLockWait,
                            waiting: (String) -> Void = { _ in }) throws -> FileLock {
        guard wait.isFinite, wait >= 0 else {
            throw EditingError.invalidArgument(name: "--wait-lock", reason: "\(wait) (expected seconds ≥ 0)")
        }
        return try FileLock(protecting: path, wait: wait) { lockFile in
            waiting("waiting for the lock on \(path) held by another scalpel process (\(lockFile); up to "
                    + "\(String(format: "%g", wait)) s, see --wait-lock)…")
        }
    }

    // MARK: Crash leftovers

    /// Temporary files of the store at `path` and of its sidecar log left by scalpel processes killed mid-write
    /// (`AtomicFile.temporaries`). `staleOnly` selects those whose process no longer exists.
    public static func temporaries(besides path: String, staleOnly: Bool = true) -> [String] {
        AtomicFile.temporaries(besides: path, staleOnly: staleOnly)
            + AtomicFile.temporaries(besides: EditLogSchema.sidecarPath(forStore: path), staleOnly: staleOnly)
    }

    /// Removes the stale temporary files of the store at `path` and its sidecar; returns their paths.
    @discardableResult
    public static func removeStaleTemporaries(besides path: String) -> [String] {
        AtomicFile.removeStaleTemporaries(besides: path)
            + AtomicFile.removeStaleTemporaries(besides: EditLogSchema.sidecarPath(forStore: path))
    }

    // MARK: Writing the log

    /// Replaces the sidecar log of the store at `store` with `records` (in order, each with a fresh `entry_sha256`),
    /// atomically; returns the new `log_sha256`. `carriedOver`: the internal log's `log_sha256` the sidecar carries.
    static func writeSidecar(forStore store: String, records: [EditLogRecord], carriedOver: String?) throws -> String {
        var hash = ""
        try HDF5File.createAtomically(at: EditLogSchema.sidecarPath(forStore: store)) { h5 in
            try h5.root.setAttribute("format", EditLogSchema.sidecarFormat)
            try h5.root.setAttribute("format_version", EditLogSchema.formatVersion)
            try h5.root.setAttribute("store", (FileLock.resolve(store) as NSString).lastPathComponent)
            hash = try writeRecords(h5, records)
            if let carriedOver {
                try h5.root.group(EditLogSchema.groupName).setAttribute(EditLogSchema.carriedOverAttribute, carriedOver)
            }
        }
        return hash
    }

    /// Replaces `/edits` of an open (temporary) store with `records`; returns the new `log_sha256`.
    static func replaceInternalLog(_ h5: HDF5File, records: [EditLogRecord]) throws -> String {
        if h5.root.exists(EditLogSchema.groupName) { try h5.root.delete(EditLogSchema.groupName) }
        return try writeRecords(h5, records)
    }

    private static func writeRecords(_ h5: HDF5File, _ records: [EditLogRecord]) throws -> String {
        var entries: [(id: String, sha256: String)] = []
        for r in records { entries.append((r.groupName, try r.write(to: h5))) }
        return try writeLogHeader(h5, entries: entries)
    }

    /// Records the base weights' `sha256` attributes in a store imported before they existed: a one-time atomic
    /// rewrite of the store (the only time an edit changes the store file itself). No-op when all are present.
    static func ensureWeightHashes(_ path: String) throws {
        let h5 = try openStore(path)
        let g = try h5.root.group("weights")
        let missing = try g.memberNames().contains { try g.kind(of: $0) == .dataset && !(try g.dataset($0)).hasAttribute(ModelStore.weightHashAttribute) }
        try h5.close()
        if missing { try HDF5File.updateAtomically(at: path) { _ = try ModelStore.recordWeightHashes(in: $0) } }
    }

    /// Removes the sidecar log of a store about to be replaced by a new file (whose own log is complete).
    static func removeSidecar(ofStore path: String) throws { try ModelStore.removeSidecarLog(ofStore: path) }

    // MARK: Status changes

    /// What `revert` / `reapply` did.
    public struct StatusResult: Sendable {
        public var entry: EditEntry
        /// False when the entry already had the requested status (nothing was written).
        public var changed: Bool
        /// Active entries on the entry's matrix after the change, in order.
        public var activeOnParameter: [String]
        /// SHA-256 of the matrix in the effective model after the change (base + `activeOnParameter`).
        public var effectiveSHA256: String
    }

    /// Marks entry `id` reverted: the effective model becomes base + the remaining active edits, exactly.
    @discardableResult
    public static func revert(_ id: String, path: String, toolVersion: String) throws -> StatusResult {
        try setStatus(id, to: EditLogSchema.reverted, path: path, toolVersion: toolVersion)
    }

    /// Marks entry `id` active again.
    @discardableResult
    public static func reapply(_ id: String, path: String, toolVersion: String) throws -> StatusResult {
        try setStatus(id, to: EditLogSchema.active, path: path, toolVersion: toolVersion)
    }

    /// Sets entry `id`'s status in one atomic transaction (no write when it already has it). Refuses a log that
    /// does not verify.
    public static func setStatus(_ id: String, to status: String, path: String, toolVersion: String,
                                 wait: Double = defaultLockWait, waiting: (String) -> Void = { _ in }) throws -> StatusResult {
        guard status == EditLogSchema.active || status == EditLogSchema.reverted else {
            throw EditingError.invalidArgument(name: "status", reason: "\(status) (expected active or reverted)")
        }
        _ = try openStore(path).close()   // "not a store" before taking a lock beside it
        let lock = try EditLog.lock(path, wait: wait, waiting: waiting)
        defer { lock.release() }
        let log = try read(path: path)
        guard var record = log.record(id) else {
            throw EditingError.editNotFound(id: id, path: path, available: log.records.map(\.groupName))
        }
        let h5 = try openStore(path)
        defer { try? h5.close() }
        let config = try ModelStore.configuration(h5)
        try requireIntact(log, config: config, path: path)
        if record.status == status {
            let (ids, hash) = try effectiveMatrix(h5, log: log, parameter: record.parameterName ?? "", config: config)
            return StatusResult(entry: try EditEntry(record: record, path: path), changed: false, activeOnParameter: ids,
                                effectiveSHA256: hash)
        }
        var entry = try EditEntry(record: record, path: path)
        entry.status = status
        entry.statusHistory.append(EditStatusChange(status: status, at: KeyStatistics.now(), toolVersion: toolVersion))
        record.attributes["status"] = .string(status)
        record.attributes["status_history"] = .string(EditEntry.jsonString(entry.statusHistory))
        record.storedSHA256 = record.computedSHA256()
        entry.entrySHA256 = record.storedSHA256
        var updated = log
        updated.records = log.records.map { $0.groupName == id ? record : $0 }
        updated.storedLogSHA256 = try writeSidecar(forStore: path, records: updated.records, carriedOver: log.carriedOverBySidecar)
        let (ids, effective) = try effectiveMatrix(h5, log: updated, parameter: entry.parameter, config: config)
        return StatusResult(entry: entry, changed: true, activeOnParameter: ids, effectiveSHA256: effective)
    }

    // MARK: Effective matrices

    /// Base values of `parameter` with the log's active entries on it applied in id order (what `ModelFile.open`
    /// computes for that matrix), the ids applied, and the SHA-256 of the result.
    public static func effectiveMatrix(path: String, parameter: String) throws -> (values: [Float], applied: [String], sha256: String) {
        let h5 = try openStore(path)
        defer { try? h5.close() }
        let log = try EditLogReader.read(h5)
        let config = try ModelStore.configuration(h5)
        try requireIntact(log, config: config, path: path)
        var w = try h5.root.group("weights").read(parameter, as: Float.self).values
        var applied: [String] = []
        for r in log.records where r.isActive && r.parameterName == parameter {
            w.withUnsafeMutableBufferPointer { EditLogReader.applyRankOne(lambda: r.lambda!, u: r.u!, to: $0) }
            applied.append(r.groupName)
        }
        return (w, applied, SHA256.hex(floats: w))
    }

    static func effectiveMatrix(_ h5: HDF5File, log: StoredEditLog, parameter: String, config: LlamaConfig) throws -> ([String], String) {
        guard EditLogReader.parameter(named: parameter, config: config) != nil else { return ([], "") }
        var w = try h5.root.group("weights").read(parameter, as: Float.self).values
        var applied: [String] = []
        for r in log.records where r.isActive && r.parameterName == parameter {
            w.withUnsafeMutableBufferPointer { EditLogReader.applyRankOne(lambda: r.lambda!, u: r.u!, to: $0) }
            applied.append(r.groupName)
        }
        return (applied, SHA256.hex(floats: w))
    }
}

extension EditSession {
    /// Makes one edit (`edit`) and, with a writer, appends it to the store's log: the edited matrix's hashes just
    /// before and after, the statistics used, the measured behaviour, the active predecessors.
    public func editAndRecord(_ request: EditRequest, hparams: ROMEHyperParameters, writer: EditLogWriter?,
                              log: (String) -> Void = { _ in },
                              progress: ((String, Int, Int) -> Void)? = nil) throws -> (outcome: EditOutcome, entry: EditEntry?) {
        let p = LlamaParameter.wDown(hparams.layer)
        guard (0..<model.config.layers).contains(hparams.layer) else {
            throw EditingError.layerOutOfRange(layer: hparams.layer, layers: model.config.layers)
        }
        let before = ModelStore.weightSHA256(model.model.weights, p)
        let o = try edit(request, hparams: hparams, log: log, progress: progress)
        let after = ModelStore.weightSHA256(model.model.weights, p)
        guard let writer else { return (o, nil) }
        let stats = try statistics(layer: hparams.layer)
        var entry = EditEntry(id: writer.nextID, outcome: o, hparams: hparams, statistics: stats,
                              statsPath: URL(fileURLWithPath: statsPath).standardizedFileURL.path,
                              weightSHA256Before: before, weightSHA256After: after, activeBefore: writer.activeIDs,
                              toolVersion: writer.toolVersion)
        entry.entrySHA256 = try writer.commit(entry)
        return (o, entry)
    }
}

extension StoredEditLog {
    /// What a sidecar written from this log must record as `carried_over_log_sha256`: the store's internal log's
    /// `log_sha256` when this log is that internal log, else what this (sidecar) log already carries.
    var carriedOverBySidecar: String? {
        sidecarPath == nil ? (isEmpty ? nil : storedLogSHA256) : carriedOverLogSHA256
    }
}
