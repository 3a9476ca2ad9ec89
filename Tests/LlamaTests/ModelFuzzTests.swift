import Foundation
import XCTest
import GGUF
import HDF5Store
@testable import Llama

/// Fuzzing the model-loading path (issue 11 part 3): thousands of mutated headers, metadata and tensor tables of the
/// tiny generated GGUF, and mutated `/config` attributes of its store, each opened in process with
/// `ModelFile.open`. A trap would kill the test runner (a visible failure); every refusal must be one line; the
/// resident size must stay bounded; a model that does load must run a forward pass.
final class ModelFuzzTests: XCTestCase {
    var dir: String!
    override func setUpWithError() throws {
        dir = HostileFixtures.scratchBase.appendingPathComponent("fuzz-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// Integers that break naive size arithmetic.
    static let nastyInts: [Int64] = [0, 1, 2, 3, 4, 7, 8, 9, 16, 64, 255, 256, 1023, 1024, 1025, 65536, 1 << 20,
                                     Int64(Int32.max), Int64(Int32.min), 1 << 31, 1 << 32, 1 << 36, 1 << 40, 1 << 62,
                                     Int64.max, Int64.min, -1, -5, -576]

    static func nastyValue(_ rng: inout SeededRandom) -> GGUFValue {
        let i = nastyInts[Int(rng.next() % UInt64(nastyInts.count))]
        switch rng.next() % 12 {
        case 0: return .uint8(UInt8(truncatingIfNeeded: i))
        case 1: return .int8(Int8(truncatingIfNeeded: i))
        case 2: return .uint16(UInt16(truncatingIfNeeded: i))
        case 3: return .int32(Int32(truncatingIfNeeded: i))
        case 4: return .uint64(UInt64(bitPattern: i))
        case 5: return .int64(i)
        case 6: return .float32([Float.nan, .infinity, -1, 0, 1e30, 0.5][Int(rng.next() % 6)])
        case 7: return .float64(Double(i))
        case 8: return .string("\(i)")
        case 9: return .bool(i != 0)
        case 10: return .array(.uint32, [.uint32(UInt32(truncatingIfNeeded: i))])
        default: return .uint32(UInt32(truncatingIfNeeded: i))
        }
    }

    static let base = HostileFixtures.writer()
    static let baseHeaderLength = GGUFWriter.header(metadata: base.metadata,
                                                    tensors: base.tensors.map { ($0.name, $0.dims, $0.type, $0.bytes.count) },
                                                    alignment: base.alignment).count

    /// One mutation of the tiny model's writer, or of its serialized bytes.
    static func mutate(_ rng: inout SeededRandom) -> [UInt8] {
        var w = base
        let headerLength = baseHeaderLength
        let rounds = 1 + Int(rng.next() % 3)
        for _ in 0..<rounds {
            switch rng.next() % 9 {
            case 0, 1:  // a metadata value (config or tokenizer) replaced by a nasty one
                let i = Int(rng.next() % UInt64(w.metadata.count))
                w.metadata[i].value = nastyValue(&rng)
            case 2:  // a metadata entry dropped, or duplicated
                let i = Int(rng.next() % UInt64(w.metadata.count))
                if rng.next() % 2 == 0 { w.metadata.remove(at: i) } else { w.metadata.append(w.metadata[i]) }
            case 3:  // a tensor's dimension set to a nasty value, or a dimension added/removed
                let t = Int(rng.next() % UInt64(w.tensors.count))
                let v = Int(truncatingIfNeeded: nastyInts[Int(rng.next() % UInt64(nastyInts.count))])
                switch rng.next() % 3 {
                case 0: w.tensors[t].dims[Int(rng.next() % UInt64(w.tensors[t].dims.count))] = max(0, v)
                case 1: w.tensors[t].dims.append(max(0, v))
                default: if w.tensors[t].dims.count > 1 { w.tensors[t].dims.removeLast() }
                }
            case 4:  // a tensor's type changed
                let t = Int(rng.next() % UInt64(w.tensors.count))
                if let type = GGMLType(rawValue: UInt32(rng.next() % 32)) { w.tensors[t].type = type }
            case 5:  // a tensor dropped, duplicated or renamed to another's name
                let t = Int(rng.next() % UInt64(w.tensors.count))
                switch rng.next() % 3 {
                case 0: w.tensors.remove(at: t)
                case 1: w.tensors.append(w.tensors[t])
                default: w.tensors[t].name = w.tensors[Int(rng.next() % UInt64(w.tensors.count))].name
                }
            case 6:  // tokenizer arrays of the wrong length or type
                let key = ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"][Int(rng.next() % 3)]
                let n = Int(rng.next() % 300)
                let value: GGUFValue = rng.next() % 2 == 0 ? .array(.string, (0..<n).map { .string("t\($0) x") })
                    : .array(.int32, (0..<n).map { .int32(Int32($0)) })
                w = HostileFixtures.with(key, value, w)
            default:
                break  // raw byte mutations below
            }
        }
        var bytes = w.serialize()
        switch rng.next() % 4 {
        case 0:  // flip bytes inside the header (metadata and tensor table)
            for _ in 0..<(1 + Int(rng.next() % 6)) {
                bytes[Int(rng.next() % UInt64(min(headerLength, bytes.count)))] = UInt8(truncatingIfNeeded: rng.next())
            }
        case 1:  // overwrite an 8-byte field of the header with a nasty value
            let at = Int(rng.next() % UInt64(max(1, min(headerLength, bytes.count) - 8)))
            let v = UInt64(bitPattern: nastyInts[Int(rng.next() % UInt64(nastyInts.count))])
            withUnsafeBytes(of: v.littleEndian) { for (k, b) in $0.enumerated() { bytes[at + k] = b } }
        case 2:  // truncate
            if rng.next() % 3 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count)))) }
        default: break
        }
        return bytes
    }

    /// Opens `path` in process: a refusal must be one line naming the file; a model that loads must run.
    func openAndRun(_ path: String, _ label: String) -> Bool {
        do {
            let m = try ModelFile.open(path)
            let ids = m.tokenizer.encode("hello t")
            if !ids.isEmpty { _ = try m.model.forward([Array(ids.prefix(4))]) }
            return true
        } catch {
            let msg = "\(error)"
            XCTAssertFalse(msg.contains("\n"), "\(label): multi-line error: \(msg)")
            XCTAssertFalse(msg.isEmpty, label)
            return false
        }
    }

    func testFuzzGGUF() throws {
        var rng = SeededRandom(seed: 20261204)
        ResidentMemory.resetPeak()
        let start = Date(), before = ResidentMemory.currentBytes()
        var loaded = 0, refused = 0, worstGrowth = 0
        let cases = 2000
        for k in 0..<cases {
            let bytes = ModelFuzzTests.mutate(&rng)
            let p = "\(dir!)/case.gguf"
            try Data(bytes).write(to: URL(fileURLWithPath: p), options: .atomic)
            if openAndRun(p, "case \(k)") { loaded += 1 } else { refused += 1 }
            if k % 100 == 0 { worstGrowth = max(worstGrowth, ResidentMemory.currentBytes() - before) }
        }
        let elapsed = Date().timeIntervalSince(start), growth = ResidentMemory.peakBytes() - before
        print("GGUF fuzz: \(cases) cases in \(String(format: "%.1f", elapsed)) s, \(loaded) loaded, \(refused) refused, "
              + "peak resident growth \(growth / 1_000_000) MB")
        XCTAssertGreaterThan(refused, cases / 2, "most mutations must be refused")
        XCTAssertGreaterThan(loaded, 0, "some mutations are harmless (the test exercises the success path too)")
        XCTAssertLessThan(growth, 512 << 20, "peak resident growth")
        XCTAssertLessThan(worstGrowth, 512 << 20, "resident growth")
    }

    func testFuzzStoreConfig() throws {
        let base = "\(dir!)/base.h5"
        try HostileFixtures.store(at: base, scratch: dir)
        var rng = SeededRandom(seed: 7)
        ResidentMemory.resetPeak()
        let start = Date(), before = ResidentMemory.currentBytes()
        let attributes = ["layers", "d_model", "heads", "kv_heads", "head_dim", "ffn_dim", "vocab_size", "context_length",
                          "rope_base", "rms_eps", "tied_embeddings"]
        var loaded = 0, refused = 0
        let cases = 600
        for k in 0..<cases {
            let p = "\(dir!)/case.h5"
            try? FileManager.default.removeItem(atPath: p)
            try FileManager.default.copyItem(atPath: base, toPath: p)
            let h5 = try HDF5File(openingForWriting: p)
            let g = try h5.root.group("config")
            for _ in 0..<(1 + Int(rng.next() % 2)) {
                let a = attributes[Int(rng.next() % UInt64(attributes.count))]
                let v = ModelFuzzTests.nastyInts[Int(rng.next() % UInt64(ModelFuzzTests.nastyInts.count))]
                switch rng.next() % 5 {
                case 0: try g.setAttribute(a, Double([Double.nan, .infinity, -1, 1e300, 0.5][Int(rng.next() % 5)]))
                case 1: try g.setAttribute(a, "\(v)")
                case 2: if g.hasAttribute(a) { try g.deleteAttribute(a) }
                default: try g.setAttribute(a, Int(v))
                }
            }
            try h5.close()
            if openAndRun(p, "store case \(k)") { loaded += 1 } else { refused += 1 }
        }
        let elapsed = Date().timeIntervalSince(start), growth = ResidentMemory.peakBytes() - before
        print("store fuzz: \(cases) cases in \(String(format: "%.1f", elapsed)) s, \(loaded) loaded, \(refused) refused, "
              + "peak resident growth \(growth / 1_000_000) MB")
        XCTAssertGreaterThan(refused, cases / 2)
        XCTAssertLessThan(growth, 512 << 20, "peak resident growth")
    }
}

/// This process's resident memory (Linux).
enum ResidentMemory {
    /// Resets the peak resident size to the current one (`5` into /proc/self/clear_refs, Linux ≥ 4.0), so a test can
    /// measure its own peak even after earlier tests in the process used more. Returns false where unsupported.
    @discardableResult
    static func resetPeak() -> Bool {
        guard let h = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? h.close() }
        return (try? h.write(contentsOf: Data("5".utf8))) != nil
    }

    /// Peak resident set size (VmHWM of /proc/self/status; getrusage's ru_maxrss if unavailable), bytes.
    static func peakBytes() -> Int {
        if let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kb = Int(line.split(separator: " ").dropFirst().first ?? "") {
            return kb * 1024
        }
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Int(u.ru_maxrss) * 1024
    }

    /// Current resident set size (/proc/self/statm), bytes.
    static func currentBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = s.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
