import Foundation
import Llama

// Shape key: N rows of a packed batch, S sequences, T positions, D model width, H heads, HD head width,
// L layers, V vocabulary.

/// One intervention of a patched run: replace the activation at `point` for `positions` (and only `heads`,
/// for per-head points) with a value.
public struct Patch: Hashable, Sendable {
    public var point: HookPoint
    /// Absolute positions to patch.
    public var positions: [Int]
    /// Heads to patch, for `attn.hook_q/k/v/z` (nil = the whole row).
    public var heads: [Int]?
    public init(_ point: HookPoint, positions: [Int], heads: [Int]? = nil) {
        self.point = point; self.positions = positions; self.heads = heads
    }
}

/// Where patched values come from.
public enum PatchValue {
    /// The same point and position in the paired run of the source batch (activation patching).
    case source
    /// Zero ablation.
    case zero
    /// Mean ablation: one [width] vector per point.
    case mean([HookPoint: [Float]])
}

/// Reads the final logits of a patched run at its last position: returns a score for pair `pair`.
/// `logits` holds the columns listed by `Metric.columns` (all V when nil), in that order.
public typealias PairScore = (_ pair: Int, _ logits: UnsafeBufferPointer<Float>) -> Double

/// Evaluates many patched runs of a base batch, recomputing only what each patch changes: layers below its first
/// patched layer and positions before its first patched position are taken from the base run (its residual stream
/// and keys/values), and all runs that start at the same layer go through the network together as one packed batch.
public final class PatchingEngine {
    public let model: LlamaModel
    /// The run being patched (e.g. corrupted, for denoising), with every layer's residual and keys/values.
    public let base: RunCache
    /// The run patched values come from (e.g. clean).
    public let source: RunCache?
    /// (base sequence, source sequence) pairs; each patched run is evaluated for every pair and averaged.
    public let pairs: [(base: Int, source: Int)]
    let baseInterventions: Hooks
    /// Upper bound on rows of one packed batch (memory).
    public var maxRows = 4096

    /// - Parameters:
    ///   - baseTokens: sequences of the base batch; `baseInterventions` (e.g. embedding noise) apply to them.
    ///   - sourceTokens: sequences patched values come from; one source pairs with every base sequence and vice
    ///     versa, else they pair one to one.
    ///   - points: every hook point patched values will be read from.
    public init(model: LlamaModel, baseTokens: [[Int]], baseInterventions: Hooks = Hooks(),
                sourceTokens: [[Int]]?, sourceInterventions: Hooks = Hooks(), points: Set<HookPoint>) throws {
        self.model = model
        self.baseInterventions = baseInterventions
        let L = model.config.layers
        let resid = Set((0...L).map { HookPoint($0, .residPre) })
        // The base run also records the patched points, so patches that would write the value already there
        // (e.g. positions before a noised subject) are recognized and skipped.
        base = try RunCache(model: model, tokens: baseTokens, record: resid.union(points), interventions: baseInterventions)
        if let sourceTokens {
            source = try RunCache(model: model, tokens: sourceTokens, record: points, interventions: sourceInterventions)
            let nb = baseTokens.count, ns = sourceTokens.count
            precondition(nb == ns || nb == 1 || ns == 1, "base and source batches must pair 1:1, 1:n or n:1")
            pairs = (0..<max(nb, ns)).map { (nb == 1 ? 0 : $0, ns == 1 ? 0 : $0) }
        } else {
            source = nil
            pairs = (0..<baseTokens.count).map { ($0, 0) }
        }
    }

    /// Scores of the unpatched base run for each pair.
    public func baseScores(columns: [Int]?, score: PairScore) -> [Double] {
        pairs.enumerated().map { i, p in
            let row = base.lastLogits[p.base]
            let picked = columns.map { $0.map { row[$0] } } ?? row
            return picked.withUnsafeBufferPointer { score(i, $0) }
        }
    }

    /// Mean score over pairs of each patched run.
    /// - Parameters:
    ///   - runs: each run is a list of patches applied together.
    ///   - columns: vocabulary columns the score reads (nil = all; fewer columns make the output head cheaper).
    ///   - naive: recompute every run from scratch (the correctness oracle for the fast path).
    ///   - progress: called with runs done so far.
    public func evaluate(_ runs: [[Patch]], value: PatchValue = .source, columns: [Int]? = nil, naive: Bool = false,
                         score: PairScore, progress: ((Int) -> Void)? = nil) throws -> [Double] {
        var results = [Double](repeating: .nan, count: runs.count)
        var done = 0
        if naive {
            for (i, run) in runs.enumerated() {
                results[i] = try evaluateNaive(run, value: value, columns: columns, score: score)
                done += 1; progress?(done)
            }
            return results
        }
        // Group by first patched layer; an empty run is the base run itself.
        var groups: [Int: [Int]] = [:]
        for (i, run) in runs.enumerated() {
            if run.isEmpty || isNoOp(run, value: value) {
                results[i] = mean(baseScores(columns: columns, score: score)); done += 1; continue
            }
            groups[run.map(\.point.layer).min()!, default: []].append(i)
        }
        for layer in groups.keys.sorted() {
            var chunk: [Int] = [], rows = 0
            func flush() throws {
                guard !chunk.isEmpty else { return }
                let scores = try evaluateGroup(chunk.map { runs[$0] }, startLayer: layer, value: value, columns: columns,
                                               score: score)
                for (i, s) in zip(chunk, scores) { results[i] = s }
                done += chunk.count; progress?(done)
                chunk = []; rows = 0
            }
            for i in groups[layer]! {
                let start = runs[i].flatMap(\.positions).min()!
                let r = pairs.reduce(0) { $0 + base.layout.lengths[$1.base] - min(start, base.layout.lengths[$1.base] - 1) }
                if rows + r > maxRows { try flush() }
                chunk.append(i); rows += r
            }
            try flush()
        }
        return results
    }

    /// Whether every patch of `run` writes exactly the values the base run already has (for every pair).
    func isNoOp(_ run: [Patch], value: PatchValue) -> Bool {
        guard case .source = value, let source else { return false }
        let c = model.config
        for p in run {
            guard let b = base[p.point], let s = source[p.point] else { return false }
            let width = p.point.kind.width(c)
            let spans: [Range<Int>] = p.heads.map { $0.map { ($0 * c.headDim)..<(($0 + 1) * c.headDim) } } ?? [0..<width]
            for pair in pairs {
                for pos in p.positions {
                    guard pos < base.layout.lengths[pair.base], pos < source.layout.lengths[pair.source] else { return false }
                    let rb = base.layout.row(seq: pair.base, pos: pos) * width
                    let rs = source.layout.row(seq: pair.source, pos: pos) * width
                    for span in spans { for j in span where b[rb + j] != s[rs + j] { return false } }
                }
            }
        }
        return true
    }

    func mean(_ x: [Double]) -> Double { x.reduce(0, +) / Double(max(x.count, 1)) }

    /// The fast path for runs whose first patched layer is `startLayer`.
    func evaluateGroup(_ runs: [[Patch]], startLayer ls: Int, value: PatchValue, columns: [Int]?,
                       score: PairScore) throws -> [Double] {
        let c = model.config, d = c.dModel, L = c.layers
        // One packed sequence per (run, pair), starting at the run's first patched position.
        var lengths: [Int] = [], starts: [Int] = [], owner: [(run: Int, pair: Int)] = []
        for (r, run) in runs.enumerated() {
            for (pi, p) in pairs.enumerated() {
                let t = base.layout.lengths[p.base]
                let s = min(run.flatMap(\.positions).min()!, t - 1)
                lengths.append(t - s); starts.append(s); owner.append((r, pi))
            }
        }
        let layout = BatchLayout(lengths: lengths, startPositions: starts)
        let x = FloatBuffer(layout.rows * d)
        let prefix = KVCache(config: c, sequences: 0)
        var keys = [[[Float]]](repeating: [], count: L), vals = keys
        let residBase = base[HookPoint(ls, .residPre)]!
        residBase.withUnsafeBufferPointer { src in
            for (i, o) in owner.enumerated() {
                let b = pairs[o.pair].base
                let from = base.layout.row(seq: b, pos: starts[i])
                (x.pointer + layout.offsets[i] * d).update(from: src.baseAddress! + from * d, count: lengths[i] * d)
            }
        }
        for l in ls..<L {
            keys[l] = owner.map { base.kv.keys[l][pairs[$0.pair].base] }
            vals[l] = owner.map { base.kv.values[l][pairs[$0.pair].base] }
        }
        prefix.setStorage(keys: keys, values: vals)
        var hooks = Hooks()
        var byPoint: [HookPoint: [(run: Int, patch: Patch)]] = [:]
        for (r, run) in runs.enumerated() { for p in run { byPoint[p.point, default: []].append((r, p)) } }
        for (point, items) in byPoint {
            let width = point.kind.width(c)
            let headDim = c.headDim
            hooks.add(point) { [self] a in
                for (i, o) in owner.enumerated() {
                    for item in items where item.run == o.run {
                        for pos in item.patch.positions where pos >= starts[i] && pos < starts[i] + lengths[i] {
                            let dst = a.data + layout.row(seq: i, pos: pos) * width
                            write(dst, point: point, pair: o.pair, pos: pos, width: width, heads: item.patch.heads,
                                  headDim: headDim, value: value)
                        }
                    }
                }
            }
        }
        model.runLayers(x, layout: layout, layers: ls..<L, hooks: hooks, prefix: prefix)
        let logits = model.logits(x, rows: layout.lastRows, columns: columns)
        let width = columns?.count ?? c.vocabSize
        var sums = [Double](repeating: 0, count: runs.count)
        for (i, o) in owner.enumerated() {
            sums[o.run] += score(o.pair, UnsafeBufferPointer(start: logits.pointer + i * width, count: width))
        }
        return sums.map { $0 / Double(pairs.count) }
    }

    /// Writes the patch value for one row (or some heads of it).
    func write(_ dst: UnsafeMutablePointer<Float>, point: HookPoint, pair: Int, pos: Int, width: Int, heads: [Int]?,
               headDim: Int, value: PatchValue) {
        let spans: [Range<Int>] = heads.map { $0.map { ($0 * headDim)..<(($0 + 1) * headDim) } } ?? [0..<width]
        switch value {
        case .zero:
            for s in spans { for j in s { dst[j] = 0 } }
        case let .mean(means):
            guard let m = means[point] else { preconditionFailure("no mean for \(point)") }
            for s in spans { for j in s { dst[j] = m[j] } }
        case .source:
            guard let source, let act = source[point] else { preconditionFailure("source run did not record \(point)") }
            let r = source.layout.row(seq: pairs[pair].source, pos: pos)
            for s in spans { for j in s { dst[j] = act[r * width + j] } }
        }
    }

    /// The oracle: a full forward pass of the base batch with the patches as hooks.
    func evaluateNaive(_ run: [Patch], value: PatchValue, columns: [Int]?, score: PairScore) throws -> Double {
        let c = model.config
        var hooks = baseInterventions
        // Pairs of one run: base sequences repeated so each pair has its own row set.
        let seqs = pairs.map { base.tokens[$0.base] }
        let layout = BatchLayout(lengths: seqs.map(\.count))
        for p in run {
            let width = p.point.kind.width(c)
            hooks.add(p.point) { [self] a in
                for (i, _) in pairs.enumerated() {
                    for pos in p.positions where pos < layout.lengths[i] {
                        write(a.data + layout.row(seq: i, pos: pos) * width, point: p.point, pair: i, pos: pos,
                              width: width, heads: p.heads, headDim: c.headDim, value: value)
                    }
                }
            }
        }
        let out = try model.forward(seqs, hooks: hooks, logitRows: .none)
        let logits = model.logits(out.residual, rows: layout.lastRows, columns: columns)
        let width = columns?.count ?? c.vocabSize
        return mean((0..<pairs.count).map { score($0, UnsafeBufferPointer(start: logits.pointer + $0 * width, count: width)) })
    }
}
