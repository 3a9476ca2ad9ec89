import Foundation
import Llama

/// Which component a sweep restores.
public enum TraceKind: String, CaseIterable, Sendable, Codable {
    /// The residual stream entering each block (`blocks.{l}.hook_resid_pre`).
    case resid
    /// MLP outputs (`blocks.{l}.hook_mlp_out`), one layer or a window of layers.
    case mlp
    /// Attention outputs (`blocks.{l}.hook_attn_out`), one layer or a window of layers.
    case attn
    /// Single heads' `attn.hook_z` at all positions: a layer × head grid.
    case heads
    /// MLP neurons (`blocks.{l}.mlp.hook_post`), attribution only: a position × layer grid of the sums over each
    /// layer's neurons, plus the top neurons (`TraceResult.components`).
    case neurons

    var hook: HookKind {
        switch self {
        case .resid: return .residPre
        case .mlp: return .mlpOut
        case .attn: return .attnOut
        case .heads: return .attnZ
        case .neurons: return .mlpPost
        }
    }
}

/// Patching direction.
public enum PatchDirection: String, Sendable, Codable {
    /// Run corrupted, restore clean activations (how much does this component recover?).
    case denoise
    /// Run clean, insert corrupted activations (how much does breaking it hurt?).
    case noise
}

/// Everything that defines a trace.
public struct TraceSettings: Sendable {
    public var kind: TraceKind = .mlp
    /// Layers restored together, centred on the cell's layer as in ROME ([l − w/2, l + w − w/2) clipped).
    public var window = 1
    public var metric: MetricKind = .prob
    public var direction: PatchDirection = .denoise
    /// Evaluate every cell with a full forward pass (the oracle for the fast path).
    public var naive = false
    /// Exact patching, or attribution-patching estimates (`Tracer.attribute`).
    public var method: TraceMethod = .exact
    /// Top components (head × position, neuron × position) kept in `TraceResult.components` by attribution.
    public var topK = 20
    /// Attribution: AtP*'s GradDrop magnitudes (`AttributionPass.gradDrop`), signed by the plain estimate.
    public var gradDrop = false
    public init(kind: TraceKind = .mlp, window: Int = 1, metric: MetricKind = .prob, direction: PatchDirection = .denoise,
                naive: Bool = false, method: TraceMethod = .exact, topK: Int = 20, gradDrop: Bool = false) {
        self.kind = kind; self.window = window; self.metric = metric; self.direction = direction; self.naive = naive
        self.method = method; self.topK = topK; self.gradDrop = gradDrop
    }
}

/// The result of one sweep: a grid of scores, rows = positions (or heads), columns = layers.
public struct TraceResult: Sendable {
    public var settings: TraceSettings
    public var hookName: String
    public var tokens: [String]
    public var subject: ClosedRange<Int>?
    public var answer: Int
    public var answerText: String
    public var foil: Int?
    /// Raw metric per [row][layer]; rows are positions, or heads for `.heads`.
    public var scores: [[Double]]
    /// The metric of the clean and of the corrupted run (averaged over noise samples).
    public var clean: Double
    public var corrupted: Double
    public var seconds: Double
    /// Attribution only: the components with the largest estimated effects (by |effect|), best first.
    public var components: [ComponentEstimate] = []
    /// Attribution with verification: cells re-run with exact patching (`Tracer.verify`).
    public var verified: [VerifiedCell] = []
    /// Scores rescaled so clean = 1, corrupted = 0.
    public var normalized: [[Double]] { scores.map { $0.map { Metric.normalize($0, clean: clean, corrupted: corrupted) } } }
}

/// A prepared clean/corrupted pair on which sweeps run (the clean and corrupted runs are computed once).
public final class Tracer {
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    public let cleanIDs: [Int]
    public let corruptedIDs: [[Int]]
    public let subject: ClosedRange<Int>?
    public let answer: Int
    public let cleanLogits: [Float]
    public let corruptedLogits: [[Float]]
    let corruptionHooks: Hooks
    /// The corrupted run's most likely token (the default foil).
    public var corruptedAnswer: Int { LogitMath.topK(corruptedLogits[0], 1)[0] }

    /// - Parameters:
    ///   - target: the answer token's text (default: the clean run's most likely token).
    public init(model: LlamaModel, tokenizer: Tokenizer, prompt: String, subject: String?, corruption: Corruption,
                target: String? = nil) throws {
        self.model = model; self.tokenizer = tokenizer
        guard !prompt.isEmpty else { throw LlamaError.emptyPrompt }
        cleanIDs = tokenizer.encode(prompt)
        let subj = try subject.map { try SubjectLocator.locate(subject: $0, in: prompt, tokenizer: tokenizer) }
        self.subject = subj
        switch corruption {
        case let .noise(std, samples, seed):
            guard let subj else { throw InterpError.subjectNotFound(subject: "", prompt: prompt) }
            corruptedIDs = Array(repeating: cleanIDs, count: max(samples, 1))
            corruptionHooks = Corruption.noiseHooks(std: std, samples: max(samples, 1), seed: seed, positions: subj,
                                                    width: model.config.dModel)
        case let .prompt(p):
            let ids = tokenizer.encode(p)
            guard ids.count == cleanIDs.count else {
                throw InterpError.lengthMismatch(clean: cleanIDs.map { tokenizer.tokenText($0) },
                                                 corrupted: ids.map { tokenizer.tokenText($0) })
            }
            guard ids != cleanIDs else { throw InterpError.identicalPrompts }
            corruptedIDs = [ids]
            corruptionHooks = Hooks()
        }
        cleanLogits = try model.forward([cleanIDs]).row(0)
        let cor = try model.forward(corruptedIDs, hooks: corruptionHooks)
        corruptedLogits = (0..<corruptedIDs.count).map { cor.row($0) }
        if let target {
            guard !target.isEmpty else { throw InterpError.emptyTarget }
            let ids = tokenizer.encode(target)
            guard let first = ids.first else { throw InterpError.emptyTarget }
            answer = first
        } else {
            answer = LogitMath.topK(cleanLogits, 1)[0]
        }
    }

    /// Builds the metric (foil: given, else the corrupted run's answer).
    public func metric(_ kind: MetricKind, foil: Int? = nil) -> Metric {
        Metric(kind: kind, answer: answer, foil: kind == .logitDiff ? (foil ?? corruptedAnswer) : foil, cleanLogits: cleanLogits)
    }

    /// Layers restored together for a cell at layer `l`.
    public func windowLayers(_ l: Int, window w: Int) -> Range<Int> {
        let L = model.config.layers
        return max(0, l - w / 2)..<min(L, l + w - w / 2)
    }

    /// Runs one sweep. `progress` gets (cells done, total).
    public func trace(_ s: TraceSettings, foil: Int? = nil, progress: ((Int, Int) -> Void)? = nil) throws -> TraceResult {
        guard s.window >= 1 else { throw InterpError.badWindow(s.window) }
        if s.method == .attribution { return try attribute(s, foil: foil) }
        guard s.kind != .neurons else { throw AttributionError.exactNeurons }
        let t0 = Date()
        let c = model.config, L = c.layers, T = cleanIDs.count
        let metric = metric(s.metric, foil: foil)
        let cells = sweepCells(s)
        let points = Set(cells.flatMap { $0.patches.map(\.point) })
        let denoise = s.direction == .denoise
        let engine = try PatchingEngine(model: model, baseTokens: denoise ? corruptedIDs : [cleanIDs],
                                        baseInterventions: denoise ? corruptionHooks : Hooks(),
                                        sourceTokens: denoise ? [cleanIDs] : corruptedIDs,
                                        sourceInterventions: denoise ? Hooks() : corruptionHooks, points: points)
        let scores = try engine.evaluate(cells.map(\.patches), columns: metric.columns, naive: s.naive,
                                         score: { _, logits in metric.score(logits) },
                                         progress: { progress?($0, cells.count) })
        let rows = s.kind == .heads ? c.heads : T
        var grid = [[Double]](repeating: [Double](repeating: .nan, count: L), count: rows)
        for (cell, v) in zip(cells, scores) { grid[cell.row][cell.layer] = v }
        let clean = metric.score(fullLogits: cleanLogits)
        let corrupted = corruptedLogits.map { metric.score(fullLogits: $0) }.reduce(0, +) / Double(corruptedLogits.count)
        let hookName = s.kind == .heads ? "blocks.{l}.attn.hook_z" : "blocks.{l}.\(s.kind.hook.rawValue)"
        return TraceResult(settings: s, hookName: hookName, tokens: cleanIDs.map { tokenizer.tokenText($0) },
                           subject: subject, answer: answer, answerText: tokenizer.tokenText(answer), foil: metric.foil,
                           scores: grid, clean: clean, corrupted: corrupted,
                           seconds: Date().timeIntervalSince(t0))
    }
}
