import Foundation

/// An exclusive advisory lock (`flock(2)`) on `TARGET.lock`, beside the file it protects, held while this object is
/// alive (the descriptor is closed in `deinit`, and the kernel drops the lock when the process dies, so a killed
/// holder never leaves a lock behind).
///
/// The protected path is resolved first (`realpath`), so a store reached through a symlink is locked beside its
/// target and every writer of the same file uses the same lock. The lock file exists only while the lock is held:
/// the holder unlinks it before releasing, and a waiter that wins a lock on an unlinked file (its inode no longer
/// the one at the path) retries on the new one, so there is never a moment when two processes hold "the" lock.
public final class FileLock: @unchecked Sendable {   // release() from one thread at a time
    /// The lock file (`REALPATH.lock`).
    public let lockPath: String
    /// The file the lock protects (symlinks resolved).
    public let protectedPath: String
    private var fd: Int32

    /// Takes the lock for `path`. When another process holds it: with `wait > 0`, calls `waiting` once (with the lock
    /// file's path) and retries until `wait` seconds have passed; then (or at once with `wait == 0`) throws
    /// `HDF5Error.locked`.
    public init(protecting path: String, wait: Double, waiting: (String) -> Void = { _ in }) throws {
        protectedPath = FileLock.resolve(path)
        lockPath = protectedPath + ".lock"
        let deadline = Date().addingTimeInterval(max(0, wait))
        var announced = false
        while true {
            let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            if fd < 0 { throw HDF5Error.ioFailed(path: lockPath, operation: "open lock file", code: errno) }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                // Still the file at the path (not one a previous holder unlinked while we waited)?
                var held = stat(), current = stat()
                if fstat(fd, &held) == 0, stat(lockPath, &current) == 0, held.st_ino == current.st_ino,
                   held.st_dev == current.st_dev {
                    self.fd = fd
                    let pid = "\(getpid())\n"
                    _ = ftruncate(fd, 0)
                    _ = pid.withCString { Foundation.write(fd, $0, strlen($0)) }
                    return
                }
                close(fd)
                continue
            }
            let code = errno
            close(fd)
            guard code == EWOULDBLOCK || code == EINTR else {
                throw HDF5Error.ioFailed(path: lockPath, operation: "flock", code: code)
            }
            if Date() >= deadline { throw HDF5Error.locked(path: protectedPath, lockFile: lockPath, waited: max(0, wait)) }
            if !announced { waiting(lockPath); announced = true }
            usleep(50_000)
        }
    }

    /// Releases the lock now (also done by `deinit`). Harmless when already released.
    public func release() {
        guard fd >= 0 else { return }
        unlink(lockPath)   // while still holding it: a waiter then sees a different (or no) inode and retries
        close(fd)
        fd = -1
    }

    deinit { release() }

    /// `realpath(path)`; for a file that does not exist yet, its directory's realpath plus its name.
    public static func resolve(_ path: String) -> String {
        if let r = realpath(path, nil) {
            defer { free(r) }
            return String(cString: r)
        }
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        guard let r = realpath(dir, nil) else { return url.standardizedFileURL.path }
        defer { free(r) }
        return String(cString: r) + "/" + url.lastPathComponent
    }
}
