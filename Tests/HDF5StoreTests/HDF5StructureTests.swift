import Foundation
import XCTest
import HDF5Store

final class HDF5StructureTests: HDF5TestCase {

    func testGroupsNestingListingAndDelete() throws {
        let path = tempPath("groups.h5")
        let file = try HDF5File(creating: path)
        let root = file.root
        let layers = try root.createGroup("layers")
        try layers.createGroup("1")
        let zero = try root.createGroup("layers/0/attn")       // intermediate "layers/0" created
        XCTAssertEqual(zero.path, "/layers/0/attn")
        try zero.write([Float(1)], shape: [1], to: "q")
        try root.write([Int32(3)], shape: [1], to: "meta/version")

        XCTAssertTrue(root.exists("layers"))
        XCTAssertTrue(root.exists("layers/0/attn/q"))
        XCTAssertTrue(root.exists("/layers/0"))
        XCTAssertTrue(layers.exists("0/attn"))
        XCTAssertFalse(root.exists("layers/7/attn"))            // missing intermediate: false, not an error
        XCTAssertFalse(root.exists("layers/0/attn/q/deeper"))   // through a dataset
        XCTAssertFalse(root.exists(""))
        XCTAssertEqual(try root.kind(of: "layers/0/attn/q"), .dataset)
        XCTAssertEqual(try root.kind(of: "layers/0"), .group)
        XCTAssertNil(try root.kind(of: "nope"))

        XCTAssertEqual(try root.memberNames(), ["layers", "meta"])
        XCTAssertEqual(try layers.memberNames(), ["0", "1"])
        XCTAssertEqual(try root.datasetPaths(), ["layers/0/attn/q", "meta/version"])
        XCTAssertEqual(try layers.datasetPaths(), ["0/attn/q"])

        assertThrows(.alreadyExists(path: path, object: "/layers")) { try root.createGroup("layers") }
        let again = try root.openOrCreateGroup("layers/0")
        XCTAssertEqual(again.path, "/layers/0")
        XCTAssertEqual(try root.openOrCreateGroup("fresh/sub").path, "/fresh/sub")
        XCTAssertTrue(root.exists("fresh/sub"))
        assertThrows(.typeMismatch(object: "/layers/0/attn/q", expected: "group", found: "dataset")) {
            try root.group("layers/0/attn/q")
        }
        assertThrows(.typeMismatch(object: "/layers/0/attn/q", expected: "group", found: "dataset")) {
            try root.openOrCreateGroup("layers/0/attn/q")
        }
        assertThrows(.typeMismatch(object: "/layers", expected: "dataset", found: "group")) {
            try root.dataset("layers")
        }

        try root.delete("layers/0")
        XCTAssertFalse(root.exists("layers/0"))
        XCTAssertFalse(root.exists("layers/0/attn/q"))
        XCTAssertEqual(try layers.memberNames(), ["1"])
        assertThrows(.notFound(path: path, object: "/layers/0")) { try root.delete("layers/0") }
        try file.close()

        let reopened = try HDF5File(openingForReading: path)
        XCTAssertEqual(try reopened.root.datasetPaths(), ["meta/version"])
        XCTAssertEqual(try reopened.root.memberNames(), ["fresh", "layers", "meta"])
    }

    func testNonASCIIMemberNames() throws {
        let file = try HDF5File(creating: tempPath("names.h5"))
        try file.root.write([UInt8(1)], shape: [1], to: "größe/Ω")
        XCTAssertEqual(try file.root.memberNames(), ["größe"])
        XCTAssertEqual(try file.root.datasetPaths(), ["größe/Ω"])
        XCTAssertEqual(try file.root.read("größe/Ω", as: UInt8.self).values, [1])
    }

    func testAttributesOnGroupsAndDatasets() throws {
        let path = tempPath("attrs.h5")
        do {
            let file = try HDF5File(creating: path)
            let root = file.root
            try root.setAttribute("model", "SmolLM-135M ✓ «tiny»")
            try root.setAttribute("empty", "")
            try root.setAttribute("layers", 30)
            try root.setAttribute("rope_base", 10000.0)
            try root.setAttribute("tied", true)
            try root.setAttribute("untied", false)
            try root.setAttribute("shape", [49152, 576])
            try root.setAttribute("none", [Int]())
            try root.setAttribute("eps", [1e-5, 0.25])
            try root.setAttribute("layers", 32)                       // overwrite, type kept
            try root.setAttribute("model", "SmolLM-135M ✓ «tiny»")    // overwrite, same value
            try root.write([Float(0)], shape: [1], to: "w")
            let ds = try root.dataset("w")
            try ds.setAttribute("scale", 0.5)
            try ds.setAttribute("role", "weight")
            try ds.setAttribute("role", 7)                            // overwrite with another type
        }
        let file = try HDF5File(openingForReading: path)
        let root = file.root
        XCTAssertEqual(try root.stringAttribute("model"), "SmolLM-135M ✓ «tiny»")
        XCTAssertEqual(try root.stringAttribute("empty"), "")
        XCTAssertEqual(try root.intAttribute("layers"), 32)
        XCTAssertEqual(try root.doubleAttribute("rope_base"), 10000.0)
        XCTAssertEqual(try root.doubleAttribute("layers"), 32.0, "integers read as Double")
        XCTAssertTrue(try root.boolAttribute("tied"))
        XCTAssertFalse(try root.boolAttribute("untied"))
        XCTAssertEqual(try root.intAttribute("tied"), 1)
        XCTAssertEqual(try root.intArrayAttribute("shape"), [49152, 576])
        XCTAssertEqual(try root.intArrayAttribute("none"), [])
        XCTAssertEqual(try root.doubleArrayAttribute("eps"), [1e-5, 0.25])
        XCTAssertEqual(try root.intArrayAttribute("layers"), [32], "a scalar reads as a 1-element array")
        XCTAssertEqual(try root.attributeNames(),
                       ["empty", "eps", "layers", "model", "none", "rope_base", "shape", "tied", "untied"])
        let ds = try root.dataset("w")
        XCTAssertEqual(try ds.attributeNames(), ["role", "scale"])
        XCTAssertEqual(try ds.doubleAttribute("scale"), 0.5)
        XCTAssertEqual(try ds.intAttribute("role"), 7)
        XCTAssertTrue(ds.hasAttribute("scale"))
        XCTAssertFalse(ds.hasAttribute("missing"))

        assertThrows(.notFound(path: path, object: "/@missing")) { try root.stringAttribute("missing") }
        assertThrows(.typeMismatch(object: "/@rope_base", expected: "integer", found: "float64")) {
            try root.intAttribute("rope_base")
        }
        assertThrows(.typeMismatch(object: "/@layers", expected: "string", found: "int64")) {
            try root.stringAttribute("layers")
        }
        assertThrows(.typeMismatch(object: "/w@scale", expected: "integer", found: "float64")) {
            try ds.intArrayAttribute("scale")
        }
        assertThrows(.shapeMismatch(object: "/@shape", expected: [], found: [2])) { try root.intAttribute("shape") }
        assertThrows(.invalidArgument(object: "/@x", reason: "file was opened read-only")) {
            try root.setAttribute("x", 1)
        }
    }

    func testAttributeDeleteAndNulRejection() throws {
        let file = try HDF5File(creating: tempPath("attr-del.h5"))
        try file.root.setAttribute("a", 1)
        try file.root.deleteAttribute("a")
        XCTAssertEqual(try file.root.attributeNames(), [])
        assertThrows(.notFound(path: file.path, object: "/@a")) { try file.root.deleteAttribute("a") }
        assertThrows(.invalidArgument(object: "/@s", reason: "string contains a NUL character")) {
            try file.root.setAttribute("s", "a\u{0}b")
        }
    }

    func testStringArrays() throws {
        let path = tempPath("strings.h5")
        let tokens = ["<|endoftext|>", "", "Ġthe", "日本語", "emoji 🦙", "tab\tnew\nline", " ", "Ċ"]
        do {
            let file = try HDF5File(creating: path)
            try file.root.writeStrings(tokens, to: "tokenizer/tokens")
            try file.root.writeStrings([], to: "tokenizer/none")
            assertThrows(.alreadyExists(path: path, object: "/tokenizer/tokens")) {
                try file.root.writeStrings(["x"], to: "tokenizer/tokens")
            }
            try file.root.writeStrings(["a b", "c d"], to: "tokenizer/merges")
            try file.root.writeStrings(["ab", "cd", "ef"], to: "tokenizer/merges", overwrite: true)
            assertThrows(.invalidArgument(object: "/bad", reason: "string 1 contains a NUL character")) {
                try file.root.writeStrings(["ok", "not\u{0}ok"], to: "bad")
            }
            XCTAssertFalse(file.root.exists("bad"))
        }
        let root = try HDF5File(openingForReading: path).root
        XCTAssertEqual(try root.readStrings("tokenizer/tokens"), tokens)
        XCTAssertEqual(try root.readStrings("tokenizer/none"), [])
        XCTAssertEqual(try root.readStrings("tokenizer/merges"), ["ab", "cd", "ef"])
        XCTAssertEqual(try root.datasetShape("tokenizer/tokens"), [8])
        XCTAssertEqual(try root.dataset("tokenizer/tokens").storedTypeDescription, "variable-length string")
        assertThrows(.typeMismatch(object: "/tokenizer/tokens", expected: "float32", found: "variable-length string")) {
            try root.read("tokenizer/tokens", as: Float.self)
        }
    }

    func testTokenizerSizedStringArraysAreFast() throws {
        let path = tempPath("vocab.h5")
        let tokens = (0..<49_152).map { "tok\($0)_ĠÄ" }
        let merges = (0..<48_900).map { "m\($0 % 977) n\($0)" }
        let start = Date()
        do {
            let file = try HDF5File(creating: path)
            try file.root.writeStrings(tokens, to: "tokens")
            try file.root.writeStrings(merges, to: "merges")
        }
        let root = try HDF5File(openingForReading: path).root
        let readTokens = try root.readStrings("tokens")
        let readMerges = try root.readStrings("merges")
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertEqual(readTokens.count, 49_152)
        XCTAssertEqual(readTokens[49_151], "tok49151_ĠÄ")
        XCTAssertEqual(readMerges[48_899], "m49 n48899")       // 48899 = 50 * 977 + 49
        XCTAssertEqual(readTokens, tokens)
        XCTAssertEqual(readMerges, merges)
        XCTAssertLessThan(elapsed, 2.0, "write+read of ~98k strings took \(elapsed) s")   // ≈0.1 s in debug
    }

    func testClosedFileRejectsUse() throws {
        let path = tempPath("closed.h5")
        let file = try HDF5File(creating: path)
        let group = try file.root.createGroup("g")
        try group.write([Float(1)], shape: [1], to: "w")
        let ds = try group.dataset("w")
        try file.close()
        try file.close()                                       // idempotent
        XCTAssertFalse(file.isOpen)
        assertThrows(.fileClosed(path: path)) { try group.memberNames() }
        assertThrows(.fileClosed(path: path)) { try ds.read(as: Float.self) }
        XCTAssertFalse(group.exists("w"))
        // The strong close really released the file: it can be reopened for writing at once.
        let again = try HDF5File(openingForWriting: path)
        XCTAssertEqual(try again.root.read("g/w", as: Float.self).values, [1])
    }

    func testSameFileOpenedTwiceClosesIndependently() throws {
        let path = tempPath("twice.h5")
        try HDF5File(creating: path).root.write([Int32(5), 6], shape: [2], to: "g/x")
        let a = try HDF5File(openingForReading: path)
        let b = try HDF5File(openingForReading: path)
        let groupA = try a.root.group("g")
        let groupB = try b.root.group("g")
        try b.close()
        assertThrows(.fileClosed(path: path)) { try groupB.memberNames() }
        XCTAssertEqual(try groupA.read("x", as: Int32.self).values, [5, 6], "closing b must not close a's objects")
        XCTAssertEqual(try a.root.datasetPaths(), ["g/x"])
    }
}
