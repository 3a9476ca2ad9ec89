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
    /// Clean probabilities (for KL), [V], Σ p log p and Σ p over them.
    let cleanProbs: [Double]?
    let cleanNegEntropy: Double, cleanMass: Double

    public init(kind: MetricKind, answer: Int, foil: Int? = nil, cleanLogits: [Float]? = nil) {
        self.kind = kind; self.answer = answer; self.foil = foil
        if kind == .kl, let cleanLogits {
            let lse = LogitMath.logSumExp(cleanLogits)
            let logProbs = cleanLogits.map { Double($0 - lse) }
            cleanProbs = logProbs.map { exp($0) }
            cleanNegEntropy = zip(cleanProbs!, logProbs).reduce(0) { $0 + $1.0 * $1.1 }
            cleanMass = cleanProbs!.reduce(0, +)
        } else { cleanProbs = nil; cleanNegEntropy = 0; cleanMass = 0 }
        precondition(kind != .logitDiff || foil != nil, "logit difference needs a foil token")
        precondition(kind != .kl || cleanProbs != nil, "KL needs the clean logits")
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
            // KL = Σ p (log p − log q) with log q = logit − lse: Σ p log p (fixed) − Σ p·logit + lse·Σ p.
            let lse = Double(Kernels.logSumExp(logits.baseAddress!, count: logits.count))
            var dot = 0.0
            for (i, p) in cleanProbs!.enumerated() { dot += p * Double(logits[i]) }
            return cleanNegEntropy - dot + lse * cleanMass
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
