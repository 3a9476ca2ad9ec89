import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a model file cannot be read.
public enum FileProblem: Equatable, Sendable, CustomStringConvertible {
    case notFound, isDirectory, permissionDenied, notRegularFile
    case other(String)

    public var description: String {
        switch self {
        case .notFound: return "no such file"
        case .isDirectory: return "is a directory, not a file"
        case .permissionDenied: return "permission denied (check the file's mode and owner)"
        case .notRegularFile: return "not a regular file"
        case let .other(s): return s
        }
    }
}

/// Checks that a path names a regular file this process can open for reading, and says what is wrong otherwise.
public enum FileAccess {
    /// nil when `path` can be opened for reading (or, with `writable`, for reading and writing) as a regular file
    /// (symbolic links followed).
    public static func problem(_ path: String, writable: Bool = false) -> FileProblem? {
        var st = stat()
        guard stat(path, &st) == 0 else { return errnoProblem(errno) }
        if (st.st_mode & S_IFMT) == S_IFDIR { return .isDirectory }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return .notRegularFile }
        let fd = open(path, writable ? O_RDWR : O_RDONLY)
        guard fd >= 0 else { return errnoProblem(errno) }
        close(fd)
        return nil
    }

    static func errnoProblem(_ e: Int32) -> FileProblem {
        switch e {
        case ENOENT, ENOTDIR: return .notFound
        case EACCES, EPERM: return .permissionDenied
        case EISDIR: return .isDirectory
        default: return .other(String(cString: strerror(e)))
        }
    }
}
