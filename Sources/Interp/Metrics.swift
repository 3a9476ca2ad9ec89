import Foundation
import Llama

/// What a patching experiment measures at the final position.
public enum MetricKind: String, CaseIterable, Sendable, Codable {
    /// Probability of the answer token.
    case prob
    /// Logit of the answer minus logit of the foil (the corrupted run's answer, or a given token).
    case logitDiff = "logit-diff"
    /// KL divergence KL(clean ‖ patched) of the next-token distributions (lower = closer to clean).
    case kl
}

/// A metric bound to a prompt's answer (and foil, or clean distribution).
public struct Metric {
    public let kind: MetricKind
    public let answer: Int
    public let foil: Int?
    /// Clean log-probabilities (for KL), [V].
    let cleanLogProbs: [Float]?

    public init(kind: MetricKind, answer: Int, foil: Int? = nil, cleanLogits: [Float]? = nil) {
        self.kind = kind; self.answer = answer; self.foil = foil
        if kind == .kl, let cleanLogits {
            let lse = LogitMath.logSumExp(cleanLogits)
            cleanLogProbs = cleanLogits.map { $0 - lse }
        } else { cleanLogProbs = nil }
        precondition(kind != .logitDiff || foil != nil, "logit difference needs a foil token")
        precondition(kind != .kl || cleanLogProbs != nil, "KL needs the clean logits")
    }

    /// Vocabulary columns the metric reads (nil = all).
    public var columns: [Int]? { kind == .logitDiff ? [answer, foil!] : nil }

    /// The metric on logits restricted to `columns`.
    public func score(_ logits: UnsafeBufferPointer<Float>) -> Double {
        switch kind {
        case .logitDiff:
            return Double(logits[0]) - Double(logits[1])
        case .prob:
            let lse = Kernels.logSumExp(logits.baseAddress!, count: logits.count)
            return Double(exp(logits[answer] - lse))
        case .kl:
            let lse = Double(Kernels.logSumExp(logits.baseAddress!, count: logits.count))
            var kl = 0.0
            for (i, lp) in cleanLogProbs!.enumerated() {
                let p = exp(Double(lp))
                kl += p * (Double(lp) - (Double(logits[i]) - lse))
            }
            return kl
        }
    }

    /// The metric on a full logit row.
    public func score(fullLogits row: [Float]) -> Double {
        let picked = columns.map { $0.map { row[$0] } } ?? row
        return picked.withUnsafeBufferPointer { score($0) }
    }

    /// Maps a raw score to the normalized scale where clean = 1 and corrupted = 0.
    public static func normalize(_ s: Double, clean: Double, corrupted: Double) -> Double {
        let span = clean - corrupted
        return abs(span) < 1e-12 ? 0 : (s - corrupted) / span
    }
}
