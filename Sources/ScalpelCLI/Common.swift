import ArgumentParser
import Foundation
import Editing
import HDF5Store
import Llama

/// `--model`, shared by every command that runs a model.
struct ModelOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "A .gguf file or a Scalpel .h5 store (default: the fetched SmolLM2-135M-Instruct).")
    var model: String?

    func open() throws -> ModelFile { try ModelFile.open(model) }
}

/// `--wait-lock`, shared by every command that changes a store's log or writes over a store.
struct LockOptions: ParsableArguments {
    @Option(help: "Seconds to wait while another scalpel process writes the same store (0: fail at once).")
    var waitLock: Double = EditLog.defaultLockWait

    func validate() throws {
        guard waitLock.isFinite, waitLock >= 0 else { throw ValidationError("--wait-lock must be a number of seconds ≥ 0") }
    }

    /// Takes the write lock of `path` (see `EditLog.lock`), printing one line if it has to wait.
    func lock(_ path: String) throws -> FileLock { try EditLog.lock(path, wait: waitLock, waiting: note) }
}

/// Writes a JSON value (dictionaries, arrays, strings, numbers) to standard output.
func printJSON(_ value: Any) throws {
    let data = try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write("\n".data(using: .utf8)!)
}

/// Writes a line to standard error (progress and notices; stdout stays clean for --json).
func note(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }

/// A visible rendering of a token's text (quotes, escapes for whitespace).
func show(_ s: String) -> String {
    var out = ""
    for ch in s {
        switch ch {
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        default: out.append(ch)
        }
    }
    return "\"\(out)\""
}

/// Rejects an empty prompt with the model layer's error.
func requirePrompt(_ p: String) throws {
    if p.isEmpty { throw LlamaError.emptyPrompt }
}

/// ROME options shared by `edit` and `eval`.
struct ROMEOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Adam steps for v*.") var steps: Int = 20
    @Flag(help: "Original ROME update (bare-prompt key in the denominator) instead of r-ROME's consistent k*.")
    var originalRome = false
    @Option(help: "Share of the v* loss given to the bare prompt (the context prompts share the rest), or \"equal\" for the original ROME's equal weights.")
    var barePromptShare: String = "0.5"

    /// Hyper-parameters for `layer` with these options.
    func hyperParameters(layer: Int) throws -> ROMEHyperParameters {
        var h = ROMEHyperParameters(layer: layer)
        h.steps = steps
        h.consistentKey = !originalRome
        if barePromptShare == "equal" {
            h.barePromptShare = nil
        } else if let s = Float(barePromptShare), ROMEHyperParameters.isValidBarePromptShare(s) {
            h.barePromptShare = s
        } else {
            throw OptionError("--bare-prompt-share must be a number in (0, 1] or \"equal\", got \"\(barePromptShare)\"")
        }
        return h
    }
}
