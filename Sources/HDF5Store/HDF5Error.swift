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
        }
    }
}

// MARK: - Status checking

/// Throws `.callFailed` when an `herr_t` status is negative.
@inline(__always)
func check(_ status: herr_t, _ function: String, _ object: @autoclosure () -> String) throws {
    if status < 0 { throw HDF5Error.callFailed(function: function, object: object()) }
}

/// Throws `.callFailed` when an `htri_t` result is negative; returns it as a `Bool` otherwise.
@inline(__always)
func checkTri(_ value: htri_t, _ function: String, _ object: @autoclosure () -> String) throws -> Bool {
    if value < 0 { throw HDF5Error.callFailed(function: function, object: object()) }
    return value > 0
}

/// Throws `.callFailed` when an identifier-returning call yields a negative id.
@inline(__always)
func checkID(_ id: hid_t, _ function: String, _ object: @autoclosure () -> String) throws -> hid_t {
    if id < 0 { throw HDF5Error.callFailed(function: function, object: object()) }
    return id
}

/// Throws `.callFailed` when a size-returning call (`ssize_t`, `int`) yields a negative value.
@inline(__always)
func checkCount<I: BinaryInteger>(_ value: I, _ function: String, _ object: @autoclosure () -> String) throws -> Int {
    if value < 0 { throw HDF5Error.callFailed(function: function, object: object()) }
    return Int(value)
}
