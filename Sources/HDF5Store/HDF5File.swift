import CHDF5
import Foundation
import Hashing

/// An open HDF5 file.
///
/// The file stays open while this object or any group/dataset obtained from it is alive;
/// `close()` closes it (and every object opened in it) immediately. Files are written with
/// object timestamps switched off, so writing the same content twice yields identical bytes
/// (useful with `SHA256.hex(fileAt:)`).
///
/// All HDF5 calls made by this module are serialised on one process-wide lock, so objects may be
/// used from several threads, but calls never run in parallel.
public final class HDF5File {
    /// The path the file was opened or created with.
    public let path: String
    /// True when opened with `creating:` or `openingForWriting:`.
    public let isWritable: Bool

    let handle: H5Owned
    private let rootHandle: H5Owned
    private var closed = false

    /// Creates a new HDF5 file.
    /// - Parameters:
    ///   - path: where to create it.
    ///   - truncate: replace an existing file (default). With `false`, an existing file makes
    ///     this throw `.cannotCreate`.
    public init(creating path: String, truncate: Bool = true) throws {
        self.path = path
        self.isWritable = true
        (handle, rootHandle) = try HDF5Library.sync {
            let fcpl = try makePropertyList(scalpel_h5p_file_create(), object: path)
            try check(H5Pset_obj_track_times(fcpl.id, false), "H5Pset_obj_track_times", path)
            let fapl = try HDF5File.makeFileAccessList(path: path)
            let flags = truncate ? scalpel_h5f_acc_trunc() : scalpel_h5f_acc_excl()
            let fid = H5Fcreate(path, flags, fcpl.id, fapl.id)
            if fid < 0 { throw HDF5Error.cannotCreate(path: path) }
            let file = try H5Owned(fid, .file, function: "H5Fcreate", object: path)
            let root = try H5Owned(H5Gopen2(fid, "/", h5Default), .group, function: "H5Gopen2", object: path)
            return (file, root)
        }
    }

    /// Opens an existing file read-only. Throws `.cannotOpen` when it is missing or not HDF5.
    public convenience init(openingForReading path: String) throws {
        try self.init(opening: path, writable: false)
    }

    /// Opens an existing file for reading and writing. Throws `.cannotOpen` when it is missing,
    /// not HDF5, or not writable.
    public convenience init(openingForWriting path: String) throws {
        try self.init(opening: path, writable: true)
    }

    private init(opening path: String, writable: Bool) throws {
        // Say what is wrong with the path (a directory, no permission) rather than HDF5's generic failure.
        if let problem = FileAccess.problem(path, writable: writable), problem != .notFound {
            throw HDF5Error.unreadable(path: path, problem: "\(problem)")
        }
        self.path = path
        self.isWritable = writable
        (handle, rootHandle) = try HDF5Library.sync {
            let fapl = try HDF5File.makeFileAccessList(path: path)
            let flags = writable ? scalpel_h5f_acc_rdwr() : scalpel_h5f_acc_rdonly()
            let fid = H5Fopen(path, flags, fapl.id)
            if fid < 0 { throw HDF5Error.cannotOpen(path: path) }
            let file = try H5Owned(fid, .file, function: "H5Fopen", object: path)
            let root = try H5Owned(H5Gopen2(fid, "/", h5Default), .group, function: "H5Gopen2", object: path)
            return (file, root)
        }
    }

    private static func makeFileAccessList(path: String) throws -> H5Owned {
        let fapl = try makePropertyList(scalpel_h5p_file_access(), object: path)
        // Closing the file closes everything opened in it, so close() is deterministic.
        try check(H5Pset_fclose_degree(fapl.id, H5F_CLOSE_STRONG), "H5Pset_fclose_degree", path)
        // 1.8+ object format: dense attribute storage (no 64 KiB limit), UTF-8 link names.
        try check(H5Pset_libver_bounds(fapl.id, H5F_LIBVER_V18, scalpel_h5f_libver_latest()), "H5Pset_libver_bounds", path)
        return fapl
    }

    /// The root group "/".
    public var root: HDF5Group { HDF5Group(file: self, handle: rootHandle, path: "/") }

    /// True until `close()` is called.
    public var isOpen: Bool { HDF5Library.sync { !closed } }

    /// Writes all buffered data to disk (the file stays open).
    public func flush() throws {
        try HDF5Library.sync {
            try ensureOpen()
            try check(H5Fflush(handle.id, H5F_SCOPE_GLOBAL), "H5Fflush", path)
        }
    }

    /// Closes the file and every group, dataset and attribute opened in it. Later use of those
    /// objects throws `.fileClosed`. Calling `close()` twice is harmless.
    public func close() throws {
        try HDF5Library.sync {
            if closed { return }
            closed = true
            rootHandle.close()
            try check(handle.close(), "H5Fclose", path)
        }
    }

    /// Throws `.fileClosed` after `close()`. Call with the library lock held.
    func ensureOpen() throws {
        if closed { throw HDF5Error.fileClosed(path: path) }
    }
}

/// Common base of `HDF5Group` and `HDF5Dataset`: an object inside a file that can carry
/// attributes (see the attribute methods in `HDF5Attributes.swift`).
public class HDF5Object {
    /// The file this object lives in (kept open while the object is alive).
    public let file: HDF5File
    /// Absolute path of the object inside the file, e.g. "/layers/0/attn_q".
    public let path: String

    let handle: H5Owned

    init(file: HDF5File, handle: H5Owned, path: String) {
        self.file = file
        self.handle = handle
        self.path = path
    }

    /// Runs `body` with the library lock held, after checking the file is still open.
    @inline(__always)
    func withOpenFile<T>(_ body: () throws -> T) throws -> T {
        try HDF5Library.sync {
            try file.ensureOpen()
            return try body()
        }
    }
}

// MARK: - Atomic whole-file helpers

extension HDF5File {
    /// Creates a new HDF5 file at `path` atomically: `body` fills a file created at a temporary
    /// path in the same directory, which is then closed, fsynced and renamed over `path`.
    /// If `body` throws, the temporary file is removed and any existing file at `path` is untouched.
    public static func createAtomically(at path: String, _ body: (HDF5File) throws -> Void) throws {
        try AtomicFile.write(to: path) { temp in
            let file = try HDF5File(creating: temp, truncate: true)
            do {
                try body(file)
            } catch {
                try? file.close()
                throw error
            }
            try file.close()
        }
    }

    /// Modifies an existing HDF5 file atomically: the file is copied to a temporary path in the
    /// same directory, `body` edits the copy, and the copy replaces `path` only if `body`
    /// succeeds. Readers of `path` never see a half-written file.
    public static func updateAtomically(at path: String, _ body: (HDF5File) throws -> Void) throws {
        try AtomicFile.update(path: path) { temp in
            let file = try HDF5File(openingForWriting: temp)
            do {
                try body(file)
            } catch {
                try? file.close()
                throw error
            }
            try file.close()
        }
    }
}
