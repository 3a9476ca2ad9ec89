import CHDF5
import Foundation

/// Every failure surfaced by `HDF5Store`.
///
/// HDF5's own automatic error-stack printing is switched off when the library is first
/// touched, so failures reach callers only as these values. Each case renders as a single
/// line that names the file or object involved and, where useful, a hint about the cause.
public enum HDF5Error: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened (missing, unreadable, not HDF5, or locked by another process).
    case cannotOpen(path: String)
    /// The file could not be created (directory missing, no permission, or it exists and
    /// truncation was not requested).
    case cannotCreate(path: String)
    /// `object` does not exist inside the file at `path`.
    case notFound(path: String, object: String)
    /// `object` already exists where something new was to be created.
    case alreadyExists(path: String, object: String)
    /// The stored element or object type differs from the one asked for.
    case typeMismatch(object: String, expected: String, found: String)
    /// The stored shape (or a buffer's element count) differs from the one asked for.
    case shapeMismatch(object: String, expected: [Int], found: [Int])
    /// An argument was rejected before any HDF5 call was made.
    case invalidArgument(object: String, reason: String)
    /// The object belongs to an `HDF5File` on which `close()` has already been called.
    case fileClosed(path: String)
    /// An HDF5 (or zlib) call returned a failure status.
    case callFailed(function: String, object: String)
    /// A file-system operation (outside HDF5) failed; `code` is the `errno` value.
    case ioFailed(path: String, operation: String, code: Int32)
    /// Another process holds the write lock of `path` (`FileLock`); `waited` seconds were spent waiting.
    case locked(path: String, lockFile: String, waited: Double)
    /// The disk (or quota) filled while writing `path`; the original file is untouched and the partial file removed.
    case diskFull(path: String)
    /// The path exists but cannot be opened (a directory, permission denied, ...).
    case unreadable(path: String, problem: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let problem):
            return "\(path): cannot open: \(problem)"
        case .cannotOpen(let path):
            return "HDF5: cannot open '\(path)' (hint: check it exists, is readable, is an HDF5 file, "
                + "and is not held open for writing by another process)"
        case .cannotCreate(let path):
            return "HDF5: cannot create '\(path)' (hint: check the directory exists and is writable, "
                + "or pass truncate: true to replace an existing file)"
        case .notFound(let path, let object):
            return "HDF5: '\(object)' not found in '\(path)' (hint: list members with memberNames() "
                + "or datasetPaths())"
        case .alreadyExists(let path, let object):
            return "HDF5: '\(object)' already exists in '\(path)' (hint: pass overwrite: true "
                + "or delete it first)"
        case .typeMismatch(let object, let expected, let found):
            return "HDF5: '\(object)' holds \(found), expected \(expected)"
        case .shapeMismatch(let object, let expected, let found):
            return "HDF5: '\(object)' has shape \(found), expected \(expected)"
        case .invalidArgument(let object, let reason):
            return "HDF5: invalid argument for '\(object)': \(reason)"
        case .fileClosed(let path):
            return "HDF5: '\(path)' was already closed (hint: keep the HDF5File open while using "
                + "its groups and datasets)"
        case .callFailed(let function, let object):
            return "HDF5: \(function) failed on '\(object)'"
        case .ioFailed(let path, let operation, let code):
            return "I/O: \(operation) failed on '\(path)': \(String(cString: strerror(code))) (errno \(code))"
        case .locked(let path, let lockFile, let waited):
            let how = waited > 0 ? "after waiting \(String(format: "%g", waited)) s" : "(--wait-lock 0)"
            return "\(path) is being written by another scalpel process (lock \(lockFile) held) \(how); "
                + "try again when it has finished, or wait longer with --wait-lock SECONDS"
        case .diskFull(let path):
            return "no space left on the device while writing \(path); nothing was changed (the partial file was "
                + "removed): free some space and run the command again"
        }
    }
}

// MARK: - Status checking

extension HDF5Library {
    /// True when the last failed HDF5 call checked by this module had `ENOSPC`/`EDQUOT` on HDF5's error stack
    /// (the disk filled). Read with the library lock held or right after the failure on the same thread.
    nonisolated(unsafe) static var lastFailureWasNoSpace = false

    /// Records whether HDF5's current error stack reports a full disk (call right after a failed HDF5 call).
    static func noteFailure() {
        var full = false
        let needles = [String(cString: strerror(ENOSPC)), String(cString: strerror(EDQUOT))]
        withUnsafeMutablePointer(to: &full) { flag in
            var context = (flag, needles)
            withUnsafeMutablePointer(to: &context) { ctx in
                _ = H5Ewalk2(h5Default, H5E_WALK_DOWNWARD, { _, err, data in
                    guard let err, let data, let desc = err.pointee.desc else { return 0 }
                    let c = data.assumingMemoryBound(to: (UnsafeMutablePointer<Bool>, [String]).self)
                    let text = String(cString: desc)
                    if c.pointee.1.contains(where: { text.contains($0) }) { c.pointee.0.pointee = true }
                    return 0
                }, ctx)
            }
        }
        if full { lastFailureWasNoSpace = true }   // sticky: reset by AtomicFile before each write
    }
}

/// Throws `.callFailed` when an `herr_t` status is negative.
@inline(__always)
func check(_ status: herr_t, _ function: String, _ object: @autoclosure () -> String) throws {
    if status < 0 { HDF5Library.noteFailure(); throw HDF5Error.callFailed(function: function, object: object()) }
}

/// Throws `.callFailed` when an `htri_t` result is negative; returns it as a `Bool` otherwise.
@inline(__always)
func checkTri(_ value: htri_t, _ function: String, _ object: @autoclosure () -> String) throws -> Bool {
    if value < 0 { HDF5Library.noteFailure(); throw HDF5Error.callFailed(function: function, object: object()) }
    return value > 0
}

/// Throws `.callFailed` when an identifier-returning call yields a negative id.
@inline(__always)
func checkID(_ id: hid_t, _ function: String, _ object: @autoclosure () -> String) throws -> hid_t {
    if id < 0 { HDF5Library.noteFailure(); throw HDF5Error.callFailed(function: function, object: object()) }
    return id
}

/// Throws `.callFailed` when a size-returning call (`ssize_t`, `int`) yields a negative value.
@inline(__always)
func checkCount<I: BinaryInteger>(_ value: I, _ function: String, _ object: @autoclosure () -> String) throws -> Int {
    if value < 0 { HDF5Library.noteFailure(); throw HDF5Error.callFailed(function: function, object: object()) }
    return Int(value)
}
