import Foundation

/// Crash-safe file replacement: write to a temporary file in the destination directory, fsync it,
/// then `rename(2)` it over the destination (atomic on POSIX file systems), and fsync the
/// directory. Readers see either the old file or the complete new one, never a partial file.
///
/// Temporary files are named `.NAME.tmp-PID-RANDOM` next to the destination, so the rename never
/// crosses file systems. On any error the temporary file is removed and the original is untouched.
public enum AtomicFile {

    /// Creates (or replaces) `finalPath` atomically. `body` receives the temporary path, must
    /// create and fully write the file there, and must have closed it when it returns.
    public static func write(to finalPath: String, _ body: (_ tempPath: String) throws -> Void) throws {
        let temp = temporaryPath(for: finalPath)
        do {
            try body(temp)
            guard FileManager.default.fileExists(atPath: temp) else {
                throw HDF5Error.ioFailed(path: temp, operation: "write (body created no file)", code: ENOENT)
            }
            try commit(temp: temp, to: finalPath, mode: existingMode(finalPath))
        } catch {
            unlink(temp)
            throw error
        }
    }

    /// Modifies an existing file atomically: copies `path` to a temporary file in the same
    /// directory, lets `body` modify the copy, then renames the copy over `path`.
    /// Throws `.ioFailed` (ENOENT) when `path` does not exist.
    public static func update(path: String, _ body: (_ tempPath: String) throws -> Void) throws {
        let temp = temporaryPath(for: path)
        do {
            try copyFile(from: path, to: temp)
            try body(temp)
            try commit(temp: temp, to: path, mode: existingMode(path))
        } catch {
            unlink(temp)
            throw error
        }
    }

    /// The temporary path used for `finalPath`: `DIR/.NAME.tmp-PID-RANDOM`.
    public static func temporaryPath(for finalPath: String) -> String {
        let url = URL(fileURLWithPath: finalPath)
        let directory = url.deletingLastPathComponent().path
        let random = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        return directory + "/." + url.lastPathComponent + ".tmp-\(getpid())-" + random
    }

    // MARK: Internals

    private static func existingMode(_ path: String) -> mode_t? {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o7777 : nil
    }

    /// fsync(temp), chmod to the original's mode, rename over the destination, fsync the directory.
    private static func commit(temp: String, to finalPath: String, mode: mode_t?) throws {
        try fsyncPath(temp, directory: false)
        if let mode, chmod(temp, mode) != 0 {
            throw HDF5Error.ioFailed(path: temp, operation: "chmod", code: errno)
        }
        if rename(temp, finalPath) != 0 {
            throw HDF5Error.ioFailed(path: finalPath, operation: "rename", code: errno)
        }
        let directory = URL(fileURLWithPath: finalPath).deletingLastPathComponent().path
        try? fsyncPath(directory, directory: true)   // best effort: some file systems refuse it
    }

    private static func fsyncPath(_ path: String, directory: Bool) throws {
        let fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY)
        if fd < 0 { throw HDF5Error.ioFailed(path: path, operation: "open for fsync", code: errno) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw HDF5Error.ioFailed(path: path, operation: "fsync", code: errno) }
    }

    /// Byte copy with a large buffer; the copy gets mode 0600 until `commit` restores the original's.
    private static func copyFile(from source: String, to destination: String) throws {
        let input = open(source, O_RDONLY)
        if input < 0 { throw HDF5Error.ioFailed(path: source, operation: "open", code: errno) }
        defer { close(input) }
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        if output < 0 { throw HDF5Error.ioFailed(path: destination, operation: "create", code: errno) }
        defer { close(output) }
        let size = 8 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            let n = read(input, buffer, size)
            if n < 0 {
                if errno == EINTR { continue }
                throw HDF5Error.ioFailed(path: source, operation: "read", code: errno)
            }
            if n == 0 { break }
            var written = 0
            while written < n {
                let w = Foundation.write(output, buffer + written, n - written)
                if w < 0 {
                    if errno == EINTR { continue }
                    throw HDF5Error.ioFailed(path: destination, operation: "write", code: errno)
                }
                written += w
            }
        }
    }
}
