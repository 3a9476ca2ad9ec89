import Foundation

/// Crash-safe file replacement: write to a temporary file in the destination directory, fsync it,
/// then `rename(2)` it over the destination (atomic on POSIX file systems), and fsync the
/// directory. Readers see either the old file or the complete new one, never a partial file.
///
/// Temporary files are named `.NAME.tmp-PID-RANDOM` next to the destination, so the rename never
/// crosses file systems. On any error the temporary file is removed and the original is untouched. A process killed
/// mid-write cannot remove its temporary file; every later `write`/`update` of the same destination removes those
/// whose process no longer exists (`removeStaleTemporaries`), so no command leaves them behind for good.
///
/// A full disk surfaces as `HDF5Error.diskFull` naming the destination.
public enum AtomicFile {

    /// Creates (or replaces) `finalPath` atomically. `body` receives the temporary path, must
    /// create and fully write the file there, and must have closed it when it returns.
    public static func write(to finalPath: String, _ body: (_ tempPath: String) throws -> Void) throws {
        removeStaleTemporaries(besides: finalPath)
        HDF5Library.sync { HDF5Library.lastFailureWasNoSpace = false }
        let temp = temporaryPath(for: finalPath)
        do {
            try body(temp)
            guard FileManager.default.fileExists(atPath: temp) else {
                throw HDF5Error.ioFailed(path: temp, operation: "write (body created no file)", code: ENOENT)
            }
            try commit(temp: temp, to: finalPath, mode: existingMode(finalPath))
        } catch {
            throw cleanUp(temp: temp, after: error, writing: finalPath)
        }
    }

    /// Removes `temp` (a file, or a folder and the import staging files beside it) and returns the error to throw:
    /// `error`, or `.diskFull(finalPath)` when it was caused by a full disk.
    public static func cleanUp(temp: String, after error: Error, writing finalPath: String) -> Error {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: temp, isDirectory: &isDir), isDir.boolValue {
            try? FileManager.default.removeItem(atPath: temp)
        } else {
            unlink(temp)
        }
        for leftover in temporaries(besides: finalPath, staleOnly: false) where leftover.hasPrefix(temp) {
            try? FileManager.default.removeItem(atPath: leftover)
        }
        return isDiskFull(error) ? HDF5Error.diskFull(path: finalPath) : error
    }

    /// True when `error` says the disk or quota is full (`ENOSPC`/`EDQUOT` from a system call or in HDF5's error
    /// stack, or Foundation's "out of space" errors).
    public static func isDiskFull(_ error: Error) -> Bool {
        switch error {
        case HDF5Error.diskFull: return true
        case HDF5Error.ioFailed(_, _, let code): return code == ENOSPC || code == EDQUOT
        case HDF5Error.callFailed: return HDF5Library.lastFailureWasNoSpace
        default: break
        }
        let ns = error as NSError
        if ns.domain == NSCocoaErrorDomain && ns.code == NSFileWriteOutOfSpaceError { return true }
        if ns.domain == NSPOSIXErrorDomain && (ns.code == Int(ENOSPC) || ns.code == Int(EDQUOT)) { return true }
        if let under = ns.userInfo[NSUnderlyingErrorKey] as? Error { return isDiskFull(under) }
        return false
    }

    /// Modifies an existing file atomically: copies `path` to a temporary file in the same
    /// directory, lets `body` modify the copy, then renames the copy over `path`.
    /// Throws `.ioFailed` (ENOENT) when `path` does not exist.
    public static func update(path: String, _ body: (_ tempPath: String) throws -> Void) throws {
        removeStaleTemporaries(besides: path)
        HDF5Library.sync { HDF5Library.lastFailureWasNoSpace = false }
        let temp = temporaryPath(for: path)
        do {
            try copyFile(from: path, to: temp)
            try body(temp)
            try commit(temp: temp, to: path, mode: existingMode(path))
        } catch {
            throw cleanUp(temp: temp, after: error, writing: path)
        }
    }

    /// Copies `source` to a new file `destination` (which must not exist) byte for byte, mode 0600; `ioFailed`
    /// (or `diskFull`) on failure. For a copy that is then committed with `write(to:)`.
    public static func copy(from source: String, to destination: String) throws {
        try copyFile(from: source, to: destination)
    }

    // MARK: Temporaries left by killed processes

    /// Temporary files next to `path` (`.NAME.tmp-PID-RANDOM`, and staging files `.NAME.tmp-PID-RANDOM.SUFFIX`;
    /// also hidden second-level ones `..NAME.tmp-…` made by writers nested in a temporary path). `staleOnly`: only
    /// those whose process no longer exists (never this process's). They are never mistaken for the destination,
    /// which is only ever replaced by a complete file, by rename.
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

    /// Removes the stale temporaries next to `path` (files or folders, see `temporaries`); returns their paths.
    @discardableResult
    public static func removeStaleTemporaries(besides path: String) -> [String] {
        temporaries(besides: path).filter { (try? FileManager.default.removeItem(atPath: $0)) != nil }
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
                    let code = errno
                    throw code == ENOSPC || code == EDQUOT ? HDF5Error.diskFull(path: destination)
                        : HDF5Error.ioFailed(path: destination, operation: "write", code: code)
                }
                written += w
            }
        }
    }
}
