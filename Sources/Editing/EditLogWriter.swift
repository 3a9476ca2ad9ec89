import Foundation
import HDF5Store
import Llama

/// Records edits in a store's log as they are made, one atomic transaction per entry.
///
/// Targets: the store the model was opened from (in place: the sidecar log `NAME.edits.h5` is replaced, O(log)
/// bytes; the store file is not touched), a new store at `out` copied from it, or — for a model opened from a GGUF —
/// a new store at `out` imported from the GGUF. A new store is one self-contained file that appears with its first
/// entry in its own `/edits` (one transaction: copy or import, then append); later in-place commits carry that log
/// over into the sidecar. A failed first edit leaves no file behind.
///
/// Every commit runs under the target store's lock (`EditLog.lock`); `scalpel edit` takes it before opening the model
/// and hands it to the writer, so a second writer waits (or fails with `HDF5Error.locked`) instead of losing an entry. Each commit also
/// checks that the log is still the one the model was opened with (`ModelFile.editLogSHA256`): an entry records the
/// matrix hashes and the active predecessors of the model it was computed on, so appending to a log that changed in
/// between would record a false history (`EditingError.editLogChanged`).
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
    private var lock: FileLock?
    private let lockWait: Double

    /// A writer for edits of `model`. `out`: a new store to write (required when the model is not a store).
    /// `lock`: the target store's lock (`EditLog.lock(out ?? model.path)`), taken before the model was opened and
    /// held by the writer until `finish()` or its end (what `scalpel edit` does); nil: each commit takes the lock for
    /// its own duration, waiting up to `wait` seconds.
    public init(model: ModelFile, out: String?, toolVersion: String, lock: FileLock? = nil,
                wait: Double = EditLog.defaultLockWait) throws {
        let ext = (model.path as NSString).pathExtension.lowercased()
        let isStore = ["h5", "hdf5"].contains(ext)
        self.toolVersion = toolVersion
        config = model.config
        lockWait = wait
        if let out {
            guard ["h5", "hdf5"].contains((out as NSString).pathExtension.lowercased()) else {
                throw EditingError.invalidArgument(name: "--out", reason: "\(out): edits are recorded in a .h5 store")
            }
            let same = isStore && FileLock.resolve(out) == FileLock.resolve(model.path)
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
        if let lock {
            guard lock.protectedPath == FileLock.resolve(path) else {
                throw EditingError.invalidArgument(name: "lock", reason: "held for \(lock.protectedPath), not \(path)")
            }
        }
        self.lock = lock
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

    /// Releases the store's lock given at `init` (also done when the writer is freed). Later commits take the lock
    /// for their own duration (and find the log changed if another writer committed meanwhile).
    public func finish() {
        lock?.release()
        lock = nil
    }

    /// Appends `entry` (whose id must be `nextID`) in one atomic transaction; returns its `entry_sha256`.
    @discardableResult
    public func commit(_ entry: EditEntry) throws -> String {
        guard entry.id == nextID else {
            throw EditingError.invalidArgument(name: "entry id", reason: "\(entry.id), expected \(nextID)")
        }
        // Without a lock held since the model was opened, take one for this commit (released when it returns).
        let held = try lock ?? EditLog.lock(path, wait: lockWait)
        defer { withExtendedLifetime(held) {} }
        let record = entry.record
        let entryHash = record.computedSHA256()
        var logHash = ""
        switch source {
        case .none:
            let log = try currentLog(of: path)
            try EditLog.ensureWeightHashes(path)
            logHash = try EditLog.writeSidecar(forStore: path, records: log.records + [record],
                                               carriedOver: log.carriedOverBySidecar)
        case let .copy(from):
            let log = try currentLog(of: from)
            try AtomicFile.write(to: path) { temp in
                try AtomicFile.copy(from: from, to: temp)
                try EditLogWriter.modify(temp) { h5 in
                    _ = try ModelStore.recordWeightHashes(in: h5)
                    logHash = try EditLog.replaceInternalLog(h5, records: log.records + [record])
                }
                try EditLog.removeSidecar(ofStore: path)   // a store written over keeps no stale sidecar
            }
        case let .importGGUF(gguf):
            try AtomicFile.write(to: path) { temp in
                try ModelStore.importGGUF(gguf, to: temp, toolVersion: toolVersion)
                try EditLogWriter.modify(temp) { h5 in logHash = try EditLog.replaceInternalLog(h5, records: [record]) }
                try EditLog.removeSidecar(ofStore: path)
            }
        }
        source = .none
        expectedLogSHA256 = logHash
        committed.append(entry.id)
        if entry.isActive { activeIDs.append(entry.id) }
        nextNumber += 1
        return entryHash
    }

    /// The log of `store` now, required to be the one this writer expects, intact, and to continue with `nextID`.
    private func currentLog(of store: String) throws -> StoredEditLog {
        let log = try EditLog.read(path: store)
        guard (log.isEmpty ? nil : log.storedLogSHA256) == expectedLogSHA256, log.nextID == nextID else {
            throw EditingError.editLogChanged(path: path)
        }
        try EditLog.requireIntact(log, config: config, path: store)
        return log
    }

    private static func modify(_ path: String, _ body: (HDF5File) throws -> Void) throws {
        let h5 = try HDF5File(openingForWriting: path)
        do { try body(h5) } catch { try? h5.close(); throw error }
        try h5.close()
    }
}
