import Foundation
import Llama

/// Errors of attribution tracing.
public enum AttributionError: Error, CustomStringConvertible, Equatable {
    /// Exact patching of every MLP neuron is not offered (one forward per neuron × position).
    case exactNeurons
    /// GradDrop is offered for cells of resid, mlp, attn and heads.
    case gradDropNeurons
    public var description: String {
        switch self {
        case .gradDropNeurons: return "--graddrop is not available for kind neurons (use resid, mlp, attn or heads)"
        case .exactNeurons: return "kind neurons is only available with --method attribution (exact patching would need one run per neuron and position)"
        }
    }
}

/// One component's estimated effect: a head (`index` = head) or a neuron (`index` = neuron) at a layer and position.
public struct ComponentEstimate: Sendable, Equatable {
    public var layer: Int
    public var position: Int
    public var index: Int
    /// Estimated change of the metric when this component alone is patched.
    public var effect: Double
    public init(layer: Int, position: Int, index: Int, effect: Double) {
        self.layer = layer; self.position = position; self.index = index; self.effect = effect
    }
}

extension Tracer {
    /// The attribution pass of a direction: denoise = gradients at the corrupted runs, clean values patched in;
    /// noise = gradients at the clean run, corrupted values patched in.
    public func attributionPass(_ direction: PatchDirection, metric: Metric, points: Set<HookPoint>) throws -> AttributionPass {
        let denoise = direction == .denoise
        return try AttributionPass(model: model, baseTokens: denoise ? corruptedIDs : [cleanIDs],
                                   baseInterventions: denoise ? corruptionHooks : Hooks(),
                                   sourceTokens: denoise ? [cleanIDs] : corruptedIDs,
                                   sourceInterventions: denoise ? Hooks() : corruptionHooks, metric: metric, points: points)
    }

    /// The cells of a sweep as patch lists, [(row, layer, patches)], as `trace` evaluates them (not for neurons).
    func sweepCells(_ s: TraceSettings) -> [(row: Int, layer: Int, patches: [Patch])] {
        let c = model.config, T = cleanIDs.count
        var cells: [(row: Int, layer: Int, patches: [Patch])] = []
        for l in 0..<c.layers {
            let layers = s.kind == .resid || s.kind == .heads ? l..<(l + 1) : windowLayers(l, window: s.window)
            if s.kind == .heads {
                for h in 0..<c.heads {
                    cells.append((h, l, layers.map { Patch(HookPoint($0, .attnZ), positions: Array(0..<T), heads: [h]) }))
                }
            } else {
                for t in 0..<T { cells.append((t, l, layers.map { Patch(HookPoint($0, s.kind.hook), positions: [t]) })) }
            }
        }
        return cells
    }

    /// A sweep estimated by attribution patching: every cell is the base run's metric plus the first-order effect of
    /// its patches (windows: the sum of the window's single-layer estimates). Same grid as `trace`; for `heads` the
    /// head × position estimates and for `neurons` the neuron × position estimates also fill `components` (top
    /// `s.topK` by |effect|). For `neurons` the grid holds, per position and layer, the base score plus the sum over
    /// that layer's neurons (which equals the single-layer `hook_mlp_out` estimate, W_down being linear). With
    /// `s.gradDrop` each cell is the base score ± its GradDrop magnitude (the sign of its plain estimate).
    public func attribute(_ s: TraceSettings, foil: Int? = nil) throws -> TraceResult {
        guard s.window >= 1 else { throw InterpError.badWindow(s.window) }
        let t0 = Date()
        let c = model.config, L = c.layers, T = cleanIDs.count
        let metric = metric(s.metric, foil: foil)
        let points = Set((0..<L).map { HookPoint($0, s.kind.hook) })
        let pass = try attributionPass(s.direction, metric: metric, points: points)
        let elements = Dictionary(uniqueKeysWithValues: points.map { ($0, pass.elementwise($0)) })
        let rows = s.kind == .heads ? c.heads : T
        var grid = [[Double]](repeating: [Double](repeating: .nan, count: L), count: rows)
        var components: [ComponentEstimate] = []
        switch s.kind {
        case .neurons:
            let f = c.ffnDim
            for l in 0..<L {
                let e = elements[HookPoint(l, .mlpPost)]!
                for t in 0..<T {
                    var sum = 0.0
                    for j in 0..<f { sum += e[t * f + j] }
                    grid[t][l] = pass.baseScore + sum
                }
                components += Self.top(e, layer: l, positions: T, width: f, groups: f, groupWidth: 1, k: s.topK)
            }
        case .heads:
            let qw = c.heads * c.headDim
            for l in 0..<L {
                let e = elements[HookPoint(l, .attnZ)]!
                for h in 0..<c.heads {
                    var sum = 0.0
                    for t in 0..<T { for j in (h * c.headDim)..<((h + 1) * c.headDim) { sum += e[t * qw + j] } }
                    grid[h][l] = pass.baseScore + sum
                }
                components += Self.top(e, layer: l, positions: T, width: qw, groups: c.heads, groupWidth: c.headDim, k: s.topK)
            }
        case .resid, .mlp, .attn:
            for cell in sweepCells(s) {
                grid[cell.row][cell.layer] = pass.baseScore
                    + cell.patches.reduce(0) { $0 + pass.linearEffect($1, elements: elements[$1.point]) }
            }
        }
        if s.gradDrop {
            guard s.kind != .neurons else { throw AttributionError.gradDropNeurons }
            let cells = sweepCells(s)
            for (cell, gd) in zip(cells, pass.gradDrop(cells.map(\.patches))) {
                let linear = grid[cell.row][cell.layer] - pass.baseScore
                grid[cell.row][cell.layer] = pass.baseScore + (linear < 0 ? -gd : gd)
            }
        }
        components.sort { abs($0.effect) != abs($1.effect) ? abs($0.effect) > abs($1.effect)
            : ($0.layer, $0.position, $0.index) < ($1.layer, $1.position, $1.index) }
        let clean = metric.score(fullLogits: cleanLogits)
        let corrupted = corruptedLogits.map { metric.score(fullLogits: $0) }.reduce(0, +) / Double(corruptedLogits.count)
        let hookName = "blocks.{l}.\(s.kind.hook.rawValue)"
        var r = TraceResult(settings: s, hookName: hookName, tokens: cleanIDs.map { tokenizer.tokenText($0) },
                            subject: subject, answer: answer, answerText: tokenizer.tokenText(answer), foil: metric.foil,
                            scores: grid, clean: clean, corrupted: corrupted, seconds: 0)
        r.components = Array(components.prefix(s.topK))
        r.seconds = Date().timeIntervalSince(t0)
        return r
    }

    /// The k groups (heads or neurons) × positions of one layer with the largest |Σ elements|.
    static func top(_ e: [Double], layer: Int, positions: Int, width: Int, groups: Int, groupWidth: Int,
                    k: Int) -> [ComponentEstimate] {
        var all: [ComponentEstimate] = []
        all.reserveCapacity(positions * groups)
        for t in 0..<positions {
            for g in 0..<groups {
                var sum = 0.0
                for j in (g * groupWidth)..<((g + 1) * groupWidth) { sum += e[t * width + j] }
                all.append(ComponentEstimate(layer: layer, position: t, index: g, effect: sum))
            }
        }
        all.sort { abs($0.effect) > abs($1.effect) }
        return Array(all.prefix(k))
    }
}

/// A cell of an attribution trace re-run with exact patching.
public struct VerifiedCell: Sendable, Equatable {
    /// Grid coordinates (position or head, layer).
    public var row: Int, layer: Int
    /// The attribution estimate and the exact patched metric (raw scores, like `TraceResult.scores`).
    public var estimate: Double, exact: Double
    /// One of the K cells AtP ranks highest (else a member of the random sample of the rest).
    public var topRanked: Bool
    public init(row: Int, layer: Int, estimate: Double, exact: Double, topRanked: Bool) {
        self.row = row; self.layer = layer; self.estimate = estimate; self.exact = exact; self.topRanked = topRanked
    }
}

extension Tracer {
    /// Verified attribution: exact patching of the `top` cells whose estimated effect |estimate − base score| is
    /// largest, and of `sample` cells drawn (seeded) from the rest (AtP*'s check for false negatives). Returns
    /// `result` with `verified` filled, top cells first in rank order. Not for `neurons` (no exact sweep).
    public func verify(_ result: TraceResult, top: Int, sample: Int, seed: UInt64 = 1, foil: Int? = nil) throws -> TraceResult {
        let s = result.settings
        guard s.kind != .neurons else { throw AttributionError.exactNeurons }
        let cells = sweepCells(s)
        let base = s.direction == .denoise ? result.corrupted : result.clean
        let ranked = cells.indices.sorted {
            let a = abs(result.scores[cells[$0].row][cells[$0].layer] - base)
            let b = abs(result.scores[cells[$1].row][cells[$1].layer] - base)
            return a != b ? a > b : $0 < $1
        }
        let chosenTop = Array(ranked.prefix(max(0, top)))
        var rest = Array(ranked.dropFirst(max(0, top)))
        var rng = SeededRandom(seed: seed)
        var chosenRandom: [Int] = []
        while chosenRandom.count < sample, !rest.isEmpty {
            chosenRandom.append(rest.remove(at: Int(rng.next() % UInt64(rest.count))))
        }
        let picked = chosenTop + chosenRandom
        guard !picked.isEmpty else { return result }
        let metric = metric(s.metric, foil: foil)
        let denoise = s.direction == .denoise
        let runs = picked.map { cells[$0].patches }
        let engine = try PatchingEngine(model: model, baseTokens: denoise ? corruptedIDs : [cleanIDs],
                                        baseInterventions: denoise ? corruptionHooks : Hooks(),
                                        sourceTokens: denoise ? [cleanIDs] : corruptedIDs,
                                        sourceInterventions: denoise ? Hooks() : corruptionHooks,
                                        points: Set(runs.flatMap { $0.map(\.point) }))
        let exact = try engine.evaluate(runs, columns: metric.columns, score: { _, logits in metric.score(logits) })
        var out = result
        out.verified = zip(picked, exact).enumerated().map { k, pe in
            let cell = cells[pe.0]
            return VerifiedCell(row: cell.row, layer: cell.layer, estimate: result.scores[cell.row][cell.layer],
                                exact: pe.1, topRanked: k < chosenTop.count)
        }
        return out
    }
}
