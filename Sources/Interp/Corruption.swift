import Foundation
import Llama

/// Errors of the interpretability layer, with hints.
public enum InterpError: Error, CustomStringConvertible, Equatable {
    case subjectNotFound(subject: String, prompt: String)
    case lengthMismatch(clean: [String], corrupted: [String])
    case emptyTarget
    case targetNotSingleToken(String)
    case badLayer(Int, layers: Int)
    case badWindow(Int)
    case identicalPrompts
    case invalidDataset(String)

    public var description: String {
        switch self {
        case let .subjectNotFound(s, p):
            return "subject \"\(s)\" does not occur in the prompt \"\(p)\" (matching ignores case and a leading space)"
        case let .lengthMismatch(a, b):
            let n = max(a.count, b.count)
            let diff = (0..<n).filter { i in i >= a.count || i >= b.count || a[i] != b[i] }
                .map { i in "\(i): \(i < a.count ? "\"\(a[i])\"" : "-") vs \(i < b.count ? "\"\(b[i])\"" : "-")" }
            return "clean and corrupted prompts must have the same number of tokens (\(a.count) vs \(b.count)); "
                + "they differ at " + diff.joined(separator: ", ")
        case .emptyTarget: return "the target is empty"
        case let .targetNotSingleToken(t): return "target \"\(t)\" is not a single token; the first token is used by default"
        case let .badLayer(l, n): return "layer \(l) is out of range (the model has layers 0..<\(n))"
        case let .badWindow(w): return "window \(w) must be at least 1"
        case .identicalPrompts: return "the corrupted prompt equals the clean prompt"
        case let .invalidDataset(s): return "dataset: \(s)"
        }
    }
}

/// Locates a subject's tokens in a tokenized prompt.
public enum SubjectLocator {
    /// Token positions [first, last] covering `subject` inside `prompt`; matching tolerates case and a leading space.
    public static func locate(subject: String, in prompt: String, tokenizer: Tokenizer) throws -> ClosedRange<Int> {
        let ids = tokenizer.encode(prompt)
        let trimmed = subject.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, let range = prompt.range(of: trimmed, options: [.caseInsensitive]) else {
            throw InterpError.subjectNotFound(subject: subject, prompt: prompt)
        }
        let startByte = prompt.utf8.distance(from: prompt.startIndex, to: range.lowerBound)
        let endByte = prompt.utf8.distance(from: prompt.startIndex, to: range.upperBound)
        var offset = 0, first: Int?, last: Int?
        for (i, id) in ids.enumerated() {
            let n = tokenizer.decodeBytes([id]).count
            let tokStart = offset, tokEnd = offset + n
            if tokEnd > startByte && tokStart < endByte {
                if first == nil { first = i }
                last = i
            }
            offset = tokEnd
        }
        guard let first, let last else { throw InterpError.subjectNotFound(subject: subject, prompt: prompt) }
        return first...last
    }
}

/// How the corrupted run is made.
public enum Corruption {
    /// Gaussian noise N(0, std²) added to the subject tokens' embeddings, `samples` runs seeded from `seed`.
    case noise(std: Float, samples: Int, seed: UInt64)
    /// A corrupted prompt of the same token length (symmetric token replacement, or any prompt).
    case prompt(String)

    /// Hooks adding seeded noise to the embeddings at `positions` of each of `samples` sequences.
    public static func noiseHooks(std: Float, samples: Int, seed: UInt64, positions: ClosedRange<Int>, width: Int) -> Hooks {
        var rng = SeededRandom(seed: seed)
        let noise: [[Float]] = (0..<samples).map { _ in (0..<(positions.count * width)).map { _ in Float(rng.normal()) * std } }
        var hooks = Hooks()
        hooks.add(HookPoint(0, .residPre)) { a in
            for s in 0..<a.layout.sequences {
                for (k, pos) in positions.enumerated() where pos < a.layout.lengths[s] {
                    let row = a.row(seq: s, pos: pos)
                    for j in 0..<width { row[j] += noise[s][k * width + j] }
                }
            }
        }
        return hooks
    }

    /// Standard deviation of the embedding values of the tokens of `subjects` (ROME's ν = 3 × this).
    public static func embeddingStd(model: LlamaModel, tokenizer: Tokenizer, subjects: [String]) -> Float {
        let d = model.config.dModel
        var sum = 0.0, sq = 0.0, n = 0.0
        model.weights.tokenEmbedding.withUnsafeBufferPointer { e in
            for s in subjects {
                for id in tokenizer.encode(s) {
                    for j in 0..<d { let v = Double(e[id * d + j]); sum += v; sq += v * v; n += 1 }
                }
            }
        }
        guard n > 1 else { return 0 }
        let mean = sum / n
        return Float(((sq / n - mean * mean) * n / (n - 1)).squareRoot())
    }

    /// Standard deviation over the whole embedding matrix (the default when no subject list is given).
    public static func embeddingStd(model: LlamaModel) -> Float {
        var sum = 0.0, sq = 0.0
        let e = model.weights.tokenEmbedding
        for v in e { sum += Double(v); sq += Double(v) * Double(v) }
        let n = Double(e.count), mean = sum / n
        return Float((sq / n - mean * mean).squareRoot())
    }
}
