import Foundation
import HDF5Store

/// Problems with the paths a command reads from and writes to (validated once, at the command-line boundary).
public enum PathError: Error, CustomStringConvertible, Equatable {
    /// `path` exists and the command was not given `--force`.
    case outputExists(path: String)
    /// The output `path` is the same file as the input `input` (same device and inode: the same name, another
    /// spelling, a symbolic or a hard link). Never written, even with `--force`.
    case outputIsInput(path: String, input: String)
    /// Two outputs of one command name the same file.
    case outputsCollide(path: String, other: String)
    /// `path` is a symbolic link whose target does not exist (writing would replace the link).
    case danglingSymlink(path: String)
    /// `path` exists and is not a key statistics file (`found`: its format), so statistics are not added to it.
    case notStatisticsFile(path: String, found: String)

    public var description: String {
        switch self {
        case let .outputExists(path): return "\(path) already exists; pass --force to replace it, or choose another output path"
        case let .outputIsInput(path, input):
            return path == input ? "\(path) is the input of this command and is never overwritten; write to another path"
                : "\(path) is the same file as the input \(input) and is never overwritten; write to another path"
        case let .outputsCollide(path, other): return "\(path) and \(other) are the same file; give each output its own path"
        case let .danglingSymlink(path): return "\(path) is a symbolic link to a file that does not exist; remove it or write elsewhere"
        case let .notStatisticsFile(path, found):
            return "\(path) exists and is not a key statistics file (format \(found)); choose another --out, or pass --force to replace it"
        }
    }
}

/// A file identity: device and inode (`stat(2)`, following symbolic links).
struct FileIdentity: Equatable, Sendable {
    let device: UInt64, inode: UInt64

    init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev); inode = UInt64(st.st_ino)
    }
}

/// A path a command reads (a model, a store it changes in place, a request file), with symbolic links resolved.
///
/// Commands that change a store in place (edit, revert, reapply) use `path`, so they write through a symbolic link to
/// its target instead of replacing the link with a regular file. A path that does not exist is kept as given (the
/// command that opens it reports that).
public struct InputPath: Equatable, Sendable {
    /// The path as the user gave it.
    public let given: String
    /// The file it names: absolute, every symbolic link resolved (`realpath(3)`); `given` when it does not exist.
    public let path: String
    let identity: FileIdentity?

    public init(_ given: String) {
        self.given = given
        identity = FileIdentity(path: given)
        path = identity == nil ? given : (InputPath.realPath(given) ?? given)
    }

    /// `realpath(3)`, nil when it fails.
    static func realPath(_ p: String) -> String? {
        guard let r = realpath(p, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }
}

/// A path a command writes a new file (or folder) to, validated against the command's inputs.
///
/// - An existing path is refused unless `force` (`PathError.outputExists`), or `mayExist` (outputs that are updated
///   by design, such as a statistics file that gains a layer).
/// - The input itself is refused even with `force` (`PathError.outputIsInput`), compared by device and inode, so
///   `./a/../S.h5`, a symbolic link to it and a hard link to it are all the same file.
/// - A symbolic link is resolved: `path` is its target, so the write replaces the target and the link stays a link.
///   A dangling link is refused.
public struct OutputPath: Equatable, Sendable {
    /// The path as the user gave it.
    public let given: String
    /// Where to write: symbolic links resolved (the parent folder's too, when it exists).
    public let path: String
    /// True when something already exists at `path`.
    public let exists: Bool
    let identity: FileIdentity?

    public init(_ given: String, force: Bool, inputs: [InputPath], mayExist: Bool = false) throws {
        self.given = given
        // `a/../F` with a missing `a` names nothing for the kernel, but the writers create missing folders and then
        // write `F`: such a path is taken lexically (`..` removed), as it will be written.
        var name = given
        var lst = stat()
        var present = lstat(name, &lst) == 0
        if !present {
            name = OutputPath.lexicallyNormalized(given)
            present = lstat(name, &lst) == 0
        }
        identity = FileIdentity(path: name)
        if present && identity == nil { throw PathError.danglingSymlink(path: given) }
        exists = present
        if present {
            path = InputPath.realPath(name) ?? name
        } else {
            let url = URL(fileURLWithPath: name)
            let parent = url.deletingLastPathComponent().path
            path = InputPath.realPath(parent).map { ($0 as NSString).appendingPathComponent(url.lastPathComponent) } ?? name
        }
        if let id = identity, let input = inputs.first(where: { $0.identity == id }) {
            throw PathError.outputIsInput(path: given, input: input.given)
        }
        if present && !force && !mayExist { throw PathError.outputExists(path: given) }
    }

    /// `p` made absolute (against the current folder) with `.` and `..` components removed lexically.
    static func lexicallyNormalized(_ p: String) -> String {
        let absolute = p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
        var parts: [Substring] = []
        for c in absolute.split(separator: "/") where c != "." {
            if c == ".." { _ = parts.popLast() } else { parts.append(c) }
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Throws `outputsCollide` when two of `outputs` name the same file.
    public static func requireDistinct(_ outputs: [OutputPath]) throws {
        for (i, a) in outputs.enumerated() {
            for b in outputs[(i + 1)...] where a.path == b.path || (a.identity != nil && a.identity == b.identity) {
                throw PathError.outputsCollide(path: a.given, other: b.given)
            }
        }
    }
}

extension StatsStore {
    /// The `format` attribute of the HDF5 file at `path` ("not HDF5" when it is not one, "none" without it).
    public static func fileFormat(path: String) -> String {
        guard let h5 = try? HDF5File(openingForReading: path) else { return "not HDF5" }
        defer { try? h5.close() }
        return (try? h5.root.stringAttribute("format")) ?? "none"
    }

    /// Validates the output of a statistics collection: a new file, an existing statistics file (layers are added
    /// to it), or — with `force` — another existing file, which is replaced. Never one of `inputs`.
    /// Returns the output and whether it must be replaced rather than added to.
    public static func output(_ given: String, force: Bool, inputs: [InputPath]) throws -> (out: OutputPath, replace: Bool) {
        let out = try OutputPath(given, force: force, inputs: inputs, mayExist: true)
        guard out.exists else { return (out, false) }
        let found = fileFormat(path: out.path)
        if found == format { return (out, false) }
        guard force else { throw PathError.notStatisticsFile(path: given, found: found) }
        return (out, true)
    }
}
