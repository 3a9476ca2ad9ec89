import Foundation
import XCTest
import HDF5Store

/// A fresh temporary directory per test case, removed in tearDown.
class HDF5TestCase: XCTestCase {
    var tempDir: String = ""

    override func setUpWithError() throws {
        tempDir = NSTemporaryDirectory() + "hdf5store-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: tempDir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        HDF5Tuning.directChunkIO = true
        try? FileManager.default.removeItem(atPath: tempDir)
    }

    func tempPath(_ name: String) -> String { tempDir + "/" + name }

    /// Asserts that `body` throws exactly `expected`.
    func assertThrows<T>(_ expected: HDF5Error, file: StaticString = #filePath, line: UInt = #line,
                         _ body: () throws -> T) {
        do {
            _ = try body()
            XCTFail("expected \(expected), nothing thrown", file: file, line: line)
        } catch let error as HDF5Error {
            XCTAssertEqual(error, expected, file: file, line: line)
        } catch {
            XCTFail("expected \(expected), got \(error)", file: file, line: line)
        }
    }
}

/// Result of running an external program.
struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `executable` (looked up on PATH) with `arguments`; nil when it is not on PATH.
func runTool(_ executable: String, _ arguments: [String]) throws -> ProcessResult? {
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        .split(separator: ":").map { "\($0)/\(executable)" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }
    guard let path else { return nil }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read before waiting so a large output cannot fill the pipe and block the child.
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus,
                         stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData, as: UTF8.self))
}

/// Deterministic pseudo-random generator (SplitMix64) so fixtures are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Values shaped like dequantized 4-bit weights: each block of 32 takes one of 16 levels
/// v = d * q + m (q in 0...15) with per-block random scale d and offset m.
func dequantizedLikeWeights(count: Int, seed: UInt64) -> [Float] {
    var rng = SplitMix64(seed: seed)
    var out = [Float](repeating: 0, count: count)
    var i = 0
    while i < count {
        let d = Float.random(in: 0.001...0.02, using: &rng)
        let m = Float.random(in: -0.15 ... -0.01, using: &rng)
        let end = min(count, i + 32)
        while i < end {
            out[i] = d * Float(rng.next() & 15) + m
            i += 1
        }
    }
    return out
}

/// Standard-normal values (Box–Muller) scaled by `scale`.
func randomNormal(count: Int, seed: UInt64, scale: Float = 0.02) -> [Float] {
    var rng = SplitMix64(seed: seed)
    var out = [Float](repeating: 0, count: count)
    var i = 0
    while i < count {
        let u1 = max(Double.random(in: 0..<1, using: &rng), 1e-12)
        let u2 = Double.random(in: 0..<1, using: &rng)
        let r = (-2 * log(u1)).squareRoot()
        out[i] = Float(r * cos(2 * .pi * u2)) * scale
        if i + 1 < count { out[i + 1] = Float(r * sin(2 * .pi * u2)) * scale }
        i += 2
    }
    return out
}
