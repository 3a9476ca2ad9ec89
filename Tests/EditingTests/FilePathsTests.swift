import Foundation
import XCTest
@testable import Editing

/// `OutputPath` compares by device and inode and takes `a/../F` with a missing `a` lexically, relative paths included.
final class FilePathsTests: XCTestCase {
    func testRelativeAndDotDotSpellingsOfTheInputAreRefused() throws {
        let dir = NSTemporaryDirectory() + "scalpel-paths-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let old = FileManager.default.currentDirectoryPath
        FileManager.default.changeCurrentDirectoryPath(dir)
        defer { FileManager.default.changeCurrentDirectoryPath(old) }
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/S.h5"))
        let cwd = FileManager.default.currentDirectoryPath
        XCTAssertEqual(OutputPath.lexicallyNormalized("missing/./../S.h5"), cwd + "/S.h5")
        XCTAssertEqual(OutputPath.lexicallyNormalized("/a/b/../../c"), "/c")
        let input = InputPath("S.h5")
        for spelling in ["S.h5", "./S.h5", "missing/../S.h5", "./missing/deeper/../../S.h5", dir + "/S.h5"] {
            for force in [false, true] {
                XCTAssertThrowsError(try OutputPath(spelling, force: force, inputs: [input]), spelling) {
                    XCTAssertEqual($0 as? PathError, .outputIsInput(path: spelling, input: "S.h5"))
                }
            }
        }
        XCTAssertThrowsError(try OutputPath("missing/../S.h5", force: false, inputs: [])) {
            XCTAssertEqual($0 as? PathError, .outputExists(path: "missing/../S.h5"))
        }
        let new = try OutputPath("missing/../new.gguf", force: false, inputs: [input])
        XCTAssertFalse(new.exists)
        XCTAssertEqual(new.path, (InputPath.realPath(cwd) ?? cwd) + "/new.gguf")
    }
}
