import Foundation
import XCTest
import HDF5Store

/// `FileLock`: exclusive across holders, resolved through symlinks, waiting bounded, no lock file left behind.
final class FileLockTests: HDF5TestCase {
    func testSecondHolderIsRefusedAtOnceOrAfterWaiting() throws {
        let path = tempPath("store.h5")
        FileManager.default.createFile(atPath: path, contents: Data("x".utf8))
        let first = try FileLock(protecting: path, wait: 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: first.lockPath))
        XCTAssertEqual(first.lockPath, FileLock.resolve(path) + ".lock")
        // A second open file description conflicts even in the same process (flock semantics).
        XCTAssertThrowsError(try FileLock(protecting: path, wait: 0)) { e in
            guard case let .locked(p, lockFile, waited)? = e as? HDF5Error else { return XCTFail("\(e)") }
            XCTAssertEqual(p, FileLock.resolve(path)); XCTAssertEqual(lockFile, first.lockPath); XCTAssertEqual(waited, 0)
            XCTAssertFalse("\(e)".contains("\n"))
        }
        var notices: [String] = []
        let t0 = Date()
        XCTAssertThrowsError(try FileLock(protecting: path, wait: 0.3) { notices.append($0) })
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(t0), 0.3)
        XCTAssertEqual(notices, [first.lockPath])
        first.release()
        XCTAssertFalse(FileManager.default.fileExists(atPath: first.lockPath), "the lock file outlived the lock")
        let again = try FileLock(protecting: path, wait: 0)
        again.release()
    }

    func testAWaiterGetsTheLockWhenTheHolderReleasesIt() throws {
        let path = tempPath("store.h5")
        let holder = try FileLock(protecting: path, wait: 0)
        let released = expectation(description: "released")
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) { holder.release(); released.fulfill() }
        let t0 = Date()
        let second = try FileLock(protecting: path, wait: 5)
        XCTAssertGreaterThan(Date().timeIntervalSince(t0), 0.2)
        wait(for: [released], timeout: 5)
        XCTAssertNotEqual(second.lockPath, "")
        XCTAssertTrue(FileManager.default.fileExists(atPath: second.lockPath))
    }

    func testASymlinkIsLockedBesideItsTarget() throws {
        let real = tempPath("real.h5"), link = tempPath("link.h5")
        FileManager.default.createFile(atPath: real, contents: Data("x".utf8))
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: real)
        let viaLink = try FileLock(protecting: link, wait: 0)
        XCTAssertEqual(viaLink.protectedPath, FileLock.resolve(real))
        XCTAssertThrowsError(try FileLock(protecting: real, wait: 0))
    }

    func testAKilledHolderLeavesNoLock() throws {
        let path = tempPath("store.h5")
        let lockPath = FileLock.resolve(path) + ".lock"
        // A child process takes the lock (flock on the same file) and is killed while holding it.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
        p.arguments = ["-e", "use Fcntl qw(:flock); open(my $f, '>>', $ARGV[0]) or die; flock($f, LOCK_EX) or die; sleep 30",
                       lockPath]
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/perl") else { throw XCTSkip("no perl to hold a lock") }
        try p.run()
        let deadline = Date().addingTimeInterval(5)
        while (try? FileLock(protecting: path, wait: 0)) != nil, Date() < deadline { usleep(20_000) }
        XCTAssertThrowsError(try FileLock(protecting: path, wait: 0), "the child never took the lock")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let t0 = Date()
        let lock = try FileLock(protecting: path, wait: 5)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2, "the kernel should drop a dead holder's lock at once")
        lock.release()
    }

    func testStaleTemporariesOfDeadProcessesAreRemovedByTheNextWrite() throws {
        let path = tempPath("out.bin")
        // A dead process: a child that has exited (its pid is free, ESRCH).
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run(); p.waitUntilExit()
        let dead = "\(tempDir)/.out.bin.tmp-\(p.processIdentifier)-abc"
        let deadStaging = dead + ".import"
        let deadFolder = "\(tempDir)/.out.bin.tmp-\(p.processIdentifier)-folder"
        let live = "\(tempDir)/.out.bin.tmp-\(getpid())-mine"
        for f in [dead, deadStaging, live] { FileManager.default.createFile(atPath: f, contents: Data("x".utf8)) }
        try FileManager.default.createDirectory(atPath: deadFolder, withIntermediateDirectories: false)
        XCTAssertEqual(Set(AtomicFile.temporaries(besides: path)), [dead, deadStaging, deadFolder])
        XCTAssertEqual(Set(AtomicFile.temporaries(besides: path, staleOnly: false)), [dead, deadStaging, deadFolder, live])
        try AtomicFile.write(to: path) { try "new".write(toFile: $0, atomically: false, encoding: .utf8) }
        XCTAssertEqual(AtomicFile.temporaries(besides: path, staleOnly: false), [live])
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "new")
    }
}
