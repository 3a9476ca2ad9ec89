import Foundation
import HDF5Store
import Hashing
import Llama

/// The edit log of a Scalpel model store: reading entries, changing their status, computing effective matrices.
///
/// Every write is one atomic transaction (`HDF5File.updateAtomically`: copy the store, modify the copy, fsync, rename),
/// so a crash at any moment leaves the previous or the new store, never a broken one. Before writing, the log is
/// verified (entry and log hashes); a log that does not verify is never modified (`EditingError.editLogCorrupt`).
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

    // MARK: Crash leftovers

    /// Temporary files next to `path` left by scalpel processes killed mid-write (`.NAME.tmp-PID-RANDOM`, see
    /// `AtomicFile`, and the import staging file inside one). They are never mistaken for the store (the store is
    /// only ever replaced by a complete file, by rename); `stale` selects those whose process no longer exists.
    public static func temporaries(besides path: String, staleOnly: Bool = true) -> [String] {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let prefix = "." + url.lastPathComponent + ".tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        return names.sorted().compactMap { name -> String? in
            guard let p = [prefix, "." + prefix].first(where: { name.hasPrefix($0) }) else { return nil }
            guard let pidText = name.dropFirst(p.count).split(separator: "-").first, let pid = Int32(pidText), pid > 0 else {
                return nil
            }
            if staleOnly && (pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH) { return nil }
            return dir + "/" + name
        }
    }

    /// Removes the stale temporary files next to `path` (see `temporaries`); returns their paths.
    @discardableResult
    public static func removeStaleTemporaries(besides path: String) -> [String] {
        temporaries(besides: path).filter { unlink($0) == 0 }
    }

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
    public static func setStatus(_ id: String, to status: String, path: String, toolVersion: String) throws -> StatusResult {
        guard status == EditLogSchema.active || status == EditLogSchema.reverted else {
            throw EditingError.invalidArgument(name: "status", reason: "\(status) (expected active or reverted)")
        }
        // Look first (read-only): unknown ids and no-ops need no copy of the store.
        let current = try read(path: path)
        guard let existing = current.record(id) else {
            throw EditingError.editNotFound(id: id, path: path, available: current.records.map(\.groupName))
        }
        if existing.status == status {
            let h5 = try openStore(path)
            defer { try? h5.close() }
            let config = try ModelStore.configuration(h5)
            try requireIntact(current, config: config, path: path)
            let (ids, hash) = try effectiveMatrix(h5, log: current, parameter: existing.parameterName ?? "", config: config)
            return StatusResult(entry: try EditEntry(record: existing, path: path), changed: false, activeOnParameter: ids,
                                effectiveSHA256: hash)
        }
        var result: StatusResult?
        removeStaleTemporaries(besides: path)
        try HDF5File.updateAtomically(at: path) { h5 in
            let log = try EditLogReader.read(h5)
            let config = try ModelStore.configuration(h5)
            try requireIntact(log, config: config, path: path)
            guard var record = log.record(id) else {
                throw EditingError.editNotFound(id: id, path: path, available: log.records.map(\.groupName))
            }
            var entry = try EditEntry(record: record, path: path)
            entry.status = status
            entry.statusHistory.append(EditStatusChange(status: status, at: KeyStatistics.now(), toolVersion: toolVersion))
            record.attributes["status"] = .string(status)
            record.attributes["status_history"] = .string(EditEntry.jsonString(entry.statusHistory))
            let g = try h5.root.group(EditLogSchema.groupName).group(id)
            try g.setAttribute("status", status)
            try g.setAttribute("status_history", EditEntry.jsonString(entry.statusHistory))
            let hash = record.computedSHA256()
            try g.setAttribute(EditLogSchema.hashAttribute, hash)
            record.storedSHA256 = hash
            entry.entrySHA256 = hash
            var updated = log
            updated.records = log.records.map { $0.groupName == id ? record : $0 }
            _ = try writeLogHeader(h5, entries: updated.records.map { ($0.groupName, $0.storedSHA256 ?? "") })
            let (ids, effective) = try effectiveMatrix(h5, log: updated, parameter: entry.parameter, config: config)
            result = StatusResult(entry: entry, changed: true, activeOnParameter: ids, effectiveSHA256: effective)
        }
        return result!
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

/// Records edits in a store's log as they are made, one atomic transaction per entry.
///
/// Targets: the store the model was opened from (in place), a new store at `out` copied from it, or — for a model
/// opened from a GGUF — a new store at `out` imported from the GGUF. A new store appears with its first entry (one
/// transaction: copy or import, then append), so a failed first edit leaves no file behind.
///
/// Each commit checks that the log is still the one the model was opened with (`ModelFile.editLogSHA256`): an entry
/// records the matrix hashes and the active predecessors of the model it was computed on, so appending to a log that
/// another process changed in between would record a false history (`EditingError.editLogChanged`).
public final class EditLogWriter {
    enum Source { case none, copy(String), importGGUF(String) }

    /// The store the entries go to.
    public let path: String
    public let toolVersion: String
    /// Ids of the active entries, including those committed by this writer (the next entry's `activeBefore`).
    public private(set) var activeIDs: [String]
    /// Ids committed by this writer.
    public private(set) var committed: [String] = []
    private var nextNumber: Int
    private var expectedLogSHA256: String?
    private var source: Source
    private let config: LlamaConfig

    /// A writer for edits of `model`. `out`: a new store to write (required when the model is not a store).
    public init(model: ModelFile, out: String?, toolVersion: String) throws {
        let ext = (model.path as NSString).pathExtension.lowercased()
        let isStore = ["h5", "hdf5"].contains(ext)
        self.toolVersion = toolVersion
        config = model.config
        if let out {
            guard ["h5", "hdf5"].contains((out as NSString).pathExtension.lowercased()) else {
                throw EditingError.invalidArgument(name: "--out", reason: "\(out): edits are recorded in a .h5 store")
            }
            let same = isStore && URL(fileURLWithPath: out).standardizedFileURL.path == URL(fileURLWithPath: model.path).standardizedFileURL.path
            path = out
            if same { source = .none } else if isStore { source = .copy(model.path) } else if ext == "gguf" {
                source = .importGGUF(model.path)
            } else {
                throw EditingError.storeRequired(path: model.path)
            }
        } else {
            guard isStore else { throw EditingError.storeRequired(path: model.path) }
            path = model.path
            source = .none
        }
        if model.baseOnly {
            throw EditingError.invalidArgument(name: "model", reason: "opened without its edits; edits must be made on the effective model")
        }
        if isStore {
            let log = try EditLog.read(path: model.path)
            guard log.activeIDs == model.appliedEdits, (log.isEmpty ? nil : log.storedLogSHA256) == model.editLogSHA256 else {
                throw EditingError.editLogChanged(path: model.path)
            }
            activeIDs = model.appliedEdits
            nextNumber = EditLogSchema.number(of: log.nextID) ?? 1
            expectedLogSHA256 = model.editLogSHA256
        } else {
            activeIDs = []
            nextNumber = 1
            expectedLogSHA256 = nil
        }
    }

    /// The id the next committed entry must have.
    public var nextID: String { EditLogSchema.id(number: nextNumber) }

    /// Appends `entry` (whose id must be `nextID`) in one atomic transaction; returns its `entry_sha256`.
    @discardableResult
    public func commit(_ entry: EditEntry) throws -> String {
        guard entry.id == nextID else {
            throw EditingError.invalidArgument(name: "entry id", reason: "\(entry.id), expected \(nextID)")
        }
        var entryHash = "", logHash = ""
        let append: (HDF5File) throws -> Void = { [self] h5 in
            let log = try EditLogReader.read(h5)
            guard (log.isEmpty ? nil : log.storedLogSHA256) == expectedLogSHA256, log.nextID == entry.id else {
                throw EditingError.editLogChanged(path: path)
            }
            try EditLog.requireIntact(log, config: config, path: path)
            try ModelStore.recordWeightHashes(in: h5)
            var record = entry.record
            entryHash = try record.write(to: h5)
            record.storedSHA256 = entryHash
            logHash = try EditLog.writeLogHeader(h5, entries: log.records.map { ($0.groupName, $0.storedSHA256 ?? "") }
                                                 + [(entry.id, entryHash)])
        }
        EditLog.removeStaleTemporaries(besides: path)
        switch source {
        case .none:
            try HDF5File.updateAtomically(at: path, append)
        case let .copy(from):
            try AtomicFile.write(to: path) { temp in
                try FileManager.default.copyItem(atPath: from, toPath: temp)
                try EditLogWriter.modify(temp, append)
            }
        case let .importGGUF(gguf):
            try AtomicFile.write(to: path) { temp in
                try ModelStore.importGGUF(gguf, to: temp, toolVersion: toolVersion)
                try EditLogWriter.modify(temp, append)
            }
        }
        source = .none
        expectedLogSHA256 = logHash
        committed.append(entry.id)
        if entry.isActive { activeIDs.append(entry.id) }
        nextNumber += 1
        return entryHash
    }

    private static func modify(_ path: String, _ body: (HDF5File) throws -> Void) throws {
        let h5 = try HDF5File(openingForWriting: path)
        do { try body(h5) } catch { try? h5.close(); throw error }
        try h5.close()
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
