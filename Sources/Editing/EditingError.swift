import Foundation

/// Errors of the `Editing` module (statistics, corpora, edit requests, ROME). Every case carries what is needed to
/// say what went wrong; `hint` says what to do about it.
public enum EditingError: Error, CustomStringConvertible, Equatable {
    // MARK: Files and requests

    /// A file the operation needs does not exist.
    case fileNotFound(path: String)
    /// An edit request is malformed.
    case badRequest(subject: String, reason: String)
    /// A file of edit requests cannot be parsed.
    case badRequestFile(path: String, reason: String)

    // MARK: Corpora

    /// A corpus file has an extension Scalpel does not read.
    case unsupportedCorpusFile(path: String)
    /// A corpus file cannot be read or parsed (bad UTF-8, bad JSON, …).
    case corpusUnreadable(path: String, reason: String)
    /// A JSON/JSONL corpus record (1-based `record`: line of a .jsonl, element of a .json array) has no string
    /// field `field`.
    case corpusMissingTextField(path: String, record: Int, field: String)
    /// The corpus has no tokens.
    case emptyCorpus(source: String)

    // MARK: Statistics

    /// A layer index outside the model.
    case layerOutOfRange(layer: Int, layers: Int)
    /// A collection finished without seeing any token.
    case noTokensCollected(layer: Int)
    /// Two statistics (or stored statistics and a request) disagree on `field` (model hash, layer, hook, dimension).
    case statisticsMismatch(field: String, expected: String, found: String, source: String)
    /// A statistics file has no statistics for `layer` (`available`: layers it does hold).
    case statisticsNotFound(path: String, layer: Int, available: [Int])
    /// A statistics file is damaged or not one Scalpel wrote (`problem` says what is wrong).
    case statisticsCorrupt(path: String, problem: String)
    /// Statistics over fewer tokens than the key dimension: C = E[kkᵀ] has rank ≤ tokens, so it is singular and ROME's
    /// solve C u = k* cannot be done.
    case statisticsTooFewTokens(path: String, layer: Int, tokens: Int, dimension: Int)
    /// An argument outside its domain (`name` = value; `reason`).
    case invalidArgument(name: String, reason: String)

    // MARK: Checkpoint diffs

    /// Two checkpoints do not share an architecture (each entry: "field: x in A, y in B").
    case architectureMismatch(differences: [String])
    /// A file of candidate subjects cannot be read.
    case badCandidateFile(path: String, reason: String)

    // MARK: Edit log

    /// No entry `id` in the edit log of the store at `path` (`available`: the ids it has).
    case editNotFound(id: String, path: String, available: [String])
    /// The operation records edits in a Scalpel .h5 store, and `path` is not one (e.g. a .gguf without `--out`).
    case storeRequired(path: String)
    /// The edit log of the store at `path` does not verify (`problem`), so it is not modified.
    case editLogCorrupt(path: String, problem: String)
    /// The edit log of the store at `path` changed since the model was opened (another scalpel process wrote it).
    case editLogChanged(path: String)
    /// `scalpel audit` found problems (one line each).
    case auditFailed(path: String, problems: [String])

    public var description: String {
        switch self {
        case let .fileNotFound(path): return "\(path): file not found"
        case let .badRequest(subject, reason): return "edit request for \"\(subject)\": \(reason)"
        case let .badRequestFile(path, reason): return "\(path): \(reason)"
        case let .unsupportedCorpusFile(path):
            return "\(path): unsupported corpus file (expected .txt, .jsonl or .json)"
        case let .corpusUnreadable(path, reason): return "\(path): cannot read corpus: \(reason)"
        case let .corpusMissingTextField(path, record, field):
            return "\(path): record \(record) has no string field \"\(field)\""
        case let .emptyCorpus(source): return "corpus \(source) contains no tokens"
        case let .layerOutOfRange(layer, layers): return "layer \(layer) is outside the model (0..<\(layers))"
        case let .noTokensCollected(layer): return "no tokens were collected for layer \(layer)"
        case let .statisticsMismatch(field, expected, found, source):
            return "key statistics \(source): \(field) is \(found), expected \(expected)"
        case let .statisticsNotFound(path, layer, available):
            let have = available.isEmpty ? "none" : available.map(String.init).joined(separator: ", ")
            return "\(path): no key statistics for layer \(layer) (layers present: \(have))"
        case let .statisticsCorrupt(path, problem): return "\(path): key statistics are damaged: \(problem)"
        case let .statisticsTooFewTokens(path, layer, tokens, dimension):
            return "\(path): the key statistics of layer \(layer) cover \(tokens) tokens, fewer than the key dimension "
                + "\(dimension), so C = E[kkᵀ] is singular and the edit cannot be solved"
        case let .invalidArgument(name, reason): return "invalid \(name): \(reason)"
        case let .editNotFound(id, path, available):
            let have = available.isEmpty ? "the log is empty" : "entries: " + available.joined(separator: ", ")
            return "\(path): no edit \(id) (\(have))"
        case let .storeRequired(path):
            return "\(path): edits are recorded in a Scalpel .h5 store, and this is not one "
                + "(edit with --out NEW.h5 to import it into a new store, or run `scalpel import` first)"
        case let .editLogCorrupt(path, problem): return "\(path): the edit log does not verify: \(problem)"
        case let .editLogChanged(path): return "\(path): the edit log changed since the model was opened"
        case let .auditFailed(path, problems):
            return "\(path): audit failed (\(problems.count) problem\(problems.count == 1 ? "" : "s")):\n"
                + problems.map { "  " + $0 }.joined(separator: "\n")
        case let .architectureMismatch(differences):
            return "the checkpoints have different architectures (\(differences.joined(separator: "; ")))"
        case let .badCandidateFile(path, reason): return "\(path): \(reason)"
        }
    }

    /// What the user can do about the error, when there is something to say.
    public var hint: String? {
        switch self {
        case .fileNotFound: return "check the path"
        case .badRequest, .badRequestFile:
            return "a request needs \"subject\", \"prompt\" containing {} once, and \"target_new\""
        case .unsupportedCorpusFile:
            return "use plain text (.txt, split into chunks) or JSON Lines / JSON records with a \"text\" field"
        case .corpusUnreadable: return "corpus files must be UTF-8 text, JSON Lines or a JSON array"
        case let .corpusMissingTextField(_, _, field):
            return "every record needs a string \"\(field)\" field, e.g. {\"\(field)\": \"...\"}"
        case .emptyCorpus: return "give a corpus with text in it, or use model-sampled text (the default)"
        case .layerOutOfRange: return "layers are numbered from 0; `scalpel inspect` shows the count"
        case .noTokensCollected: return "the corpus was empty or every sequence was skipped"
        case let .statisticsMismatch(field, _, _, _):
            if field == "model_sha256" {
                return "these statistics were collected on another model; recollect them for this model "
                    + "(statistics never carry over between models, even edited or requantized ones)"
            }
            return "recollect the statistics for this layer and hook, or pass the matching file"
        case let .statisticsNotFound(path, layer, _):
            return "collect statistics for this layer first (`scalpel stats --layer \(layer) --out \(path)` adds them to the file)"
        case .statisticsCorrupt: return "delete the file and collect the statistics again"
        case let .statisticsTooFewTokens(path, layer, _, dimension):
            return "collect them over a larger corpus (well over \(dimension) tokens; ROME used 100,000 texts): "
                + "`scalpel stats --layer \(layer) --corpus FILE --out \(path)` replaces that layer"
        case .invalidArgument: return nil
        case .editNotFound: return "`scalpel log --model STORE` lists the edits"
        case .storeRequired: return "give --out NEW.h5 to import the model into a store that records the edits"
        case .editLogCorrupt: return "`scalpel audit --model STORE` shows what does not verify; the store is left as it is"
        case .editLogChanged: return "run the command again (it reads the current log)"
        case .auditFailed: return "each line names what does not verify; base weights and entries are never repaired automatically"
        case .architectureMismatch: return "diff compares two checkpoints of the same model (e.g. before and after an edit)"
        case .badCandidateFile:
            return "give a JSON array of strings, or of objects with \"subject\" (known_1000, CounterFact), or one subject per line"
        }
    }
}
