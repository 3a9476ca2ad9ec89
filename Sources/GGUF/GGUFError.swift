@_exported import enum Hashing.FileProblem
import Hashing

/// Everything that can go wrong reading or writing a GGUF file. Each case names the file and the problem.
public enum GGUFError: Error, CustomStringConvertible, Equatable {
    /// `fileNotFound` when the path does not exist, else `unreadable` with the reason.
    public static func fileUnreadable(path: String, problem: FileProblem) -> GGUFError {
        problem == .notFound ? .fileNotFound(path: path) : .unreadable(path: path, problem: problem)
    }

    case fileNotFound(path: String)
    /// The path exists but cannot be read (a directory, no permission, ...).
    case unreadable(path: String, problem: FileProblem)
    case duplicateKey(path: String, key: String)
    case duplicateTensor(path: String, tensor: String)
    case badMagic(path: String, found: UInt32)
    case unsupportedVersion(path: String, version: UInt32)
    case truncated(path: String, what: String)
    case invalidMetadata(path: String, key: String, problem: String)
    case unsupportedQuantization(path: String, type: UInt32, tensor: String)
    case tensorOutOfBounds(path: String, tensor: String)
    case missingTensor(path: String, tensor: String)
    case missingKey(path: String, key: String)
    case wrongElementCount(tensor: String, expected: Int, found: Int)
    case writeFailed(path: String, reason: String)

    /// `s` made safe for a one-line message: control characters escaped (`\n` → `\u{0A}`), at most 120 characters.
    public static func printable(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            if out.unicodeScalars.count >= 120 { out += "…"; break }
            if u.properties.generalCategory == .control || u == "\u{2028}" || u == "\u{2029}" {
                out += "\\u{" + String(u.value, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    public var description: String {
        let q = GGUFError.printable
        switch self {
        case let .fileNotFound(path):
            return "\(path): no such file (hint: `scalpel fetch` downloads the default model)"
        case let .unreadable(path, problem):
            return "\(path): cannot read: \(problem)"
        case let .duplicateKey(path, key):
            return "\(path): metadata key \(q(key)) appears more than once (corrupt or hand-edited file)"
        case let .duplicateTensor(path, tensor):
            return "\(path): tensor \(q(tensor)) appears more than once in the tensor table (corrupt or hand-edited file)"
        case let .badMagic(path, found):
            return "\(path): not a GGUF file (magic 0x\(String(found, radix: 16)), expected 0x46554747 \"GGUF\")"
        case let .unsupportedVersion(path, version):
            return "\(path): GGUF version \(version) is not supported (supported: 2, 3)"
        case let .truncated(path, what):
            return "\(path): file is truncated (while reading \(q(what)))"
        case let .invalidMetadata(path, key, problem):
            return "\(path): metadata \(q(key)): \(problem)"
        case let .unsupportedQuantization(path, type, tensor):
            let name = GGMLType(rawValue: type)?.name ?? "type \(type)"
            return "\(path): tensor \(q(tensor)) uses \(name), which Scalpel cannot dequantize "
                + "(supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K)"
        case let .tensorOutOfBounds(path, tensor):
            return "\(path): tensor \(q(tensor)) extends past the end of the file (truncated?)"
        case let .missingTensor(path, tensor):
            return "\(path): tensor \(q(tensor)) not found"
        case let .missingKey(path, key):
            return "\(path): metadata key \(q(key)) not found"
        case let .wrongElementCount(tensor, expected, found):
            return "tensor \(q(tensor)): expected \(expected) elements, found \(found)"
        case let .writeFailed(path, reason):
            return "\(path): cannot write GGUF: \(reason)"
        }
    }
}
