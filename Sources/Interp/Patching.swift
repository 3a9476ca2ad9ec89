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
    /// Rows of one wave of patched runs at its widest layer (bounds memory; about 1,000 rows keep the activations
    /// in cache while still sharing each pass over the weights among many runs).
    public var maxRows = 1024
    /// Final rows the output head reads at once (one pass over the head's weights serves them all).
    public var headRows = 256

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
        // Runs that begin alike (same first position, same patches at their first layer) are dealt together, so
        // a wave can carry them as one sequence until their patches differ (e.g. nested windows at the bottom).
        let order = groups.keys.sorted().flatMap { groups[$0]! }
        guard !order.isEmpty else { return results }
        var bundleOf: [BeginningKey: Int] = [:], bundles: [[Int]] = []
        for i in order {
            let key = BeginningKey(runs[i])
            if let b = bundleOf[key] { bundles[b].append(i) } else { bundleOf[key] = bundles.count; bundles.append([i]) }
        }
        let waves = planWaves(bundles, runs: runs)
        let lock = NSLock()
        var partial = [Int](repeating: 0, count: waves.count)
        let doneBefore = done
        var finals = [WaveOutput](repeating: WaveOutput(rows: [], sequences: []), count: waves.count)
        Kernels.takeInTurn(waves.count) { w in
            let indices = Array(waves[w].joined())
            var out = evaluateWave(waves[w].map { $0.map { runs[$0] } }, value: value) { finished in
                lock.withLock {
                    partial[w] = finished
                    progress?(doneBefore + partial.reduce(0, +))
                }
            }
            // Run indices of the wave → indices into `runs`.
            for k in out.sequences.indices { out.sequences[k].runs = out.sequences[k].runs.map { indices[$0] } }
            lock.withLock { finals[w] = out }
        }
        let sums = scoreFinalRows(finals, runCount: runs.count, columns: columns, score: score)
        for i in order { results[i] = sums[i] / Double(pairs.count) }
        return results
    }

    /// Deals bundles of runs (in order of start layer) to waves, returned costliest first. A wave sweeps the layers
    /// once from its lowest start layer; each run joins at its own start layer, so every matrix product covers all
    /// runs active at that layer (one pass over the weights for all of them). Bundles are taken in order up to
    /// `maxRows` rows at a wave's widest, so a wave's runs start at nearby layers and it is about as wide at its
    /// bottom as at its top (narrow products cost most per FLOP: the weights are packed for each call whatever its
    /// row count). The cores take waves in turn, each single-threaded; a cost cap (row-layers) keeps at least two
    /// waves per core, for balance.
    func planWaves(_ bundles: [[Int]], runs: [[Patch]]) -> [[[Int]]] {
        let L = model.config.layers
        let rows = bundles.map { rowCount(runs[$0[0]]) * $0.count }  // at the widest, after the bundle forks
        let costs = bundles.enumerated().map { k, b in rows[k] * (L - BeginningKey(runs[b[0]]).layer) }
        let cores = max(1, min(Kernels.cores, bundles.count))
        let costCap = max(1, (costs.reduce(0, +) + 2 * cores - 1) / (2 * cores))
        var waves: [[[Int]]] = [[]], waveCosts = [0], rowsInWave = 0
        for (k, bundle) in bundles.enumerated() {
            if !waves[waves.count - 1].isEmpty && (rowsInWave + rows[k] > maxRows || waveCosts[waves.count - 1] + costs[k] > costCap) {
                waves.append([]); waveCosts.append(0); rowsInWave = 0
            }
            waves[waves.count - 1].append(bundle); rowsInWave += rows[k]; waveCosts[waves.count - 1] += costs[k]
        }
        return waves.indices.sorted { waveCosts[$0] > waveCosts[$1] }.map { waves[$0] }
    }

    /// The output head and the score at the final rows of every wave, in blocks of `headRows` rows spread over the
    /// cores; returns, per run, the sum of its scores over pairs (summed in a fixed order, so results do not depend
    /// on which core finished first).
    func scoreFinalRows(_ finals: [WaveOutput], runCount: Int, columns: [Int]?, score: PairScore) -> [Double] {
        let d = model.config.dModel, width = columns?.count ?? model.config.vocabSize
        let rows = finals.flatMap(\.rows), owners = finals.flatMap(\.sequences)
        let blocks = stride(from: 0, to: owners.count, by: headRows).map { $0..<min($0 + headRows, owners.count) }
        var values = [Double](repeating: 0, count: owners.count)
        let lock = NSLock()
        Kernels.takeInTurn(blocks.count) { k in
            let b = blocks[k]
            let x = FloatBuffer(b.count * d)
            rows.withUnsafeBufferPointer { x.pointer.update(from: $0.baseAddress! + b.lowerBound * d, count: b.count * d) }
            let logits = model.logits(x, rows: Array(0..<b.count), columns: columns)
            let v = b.map { i in
                score(owners[i].pair, UnsafeBufferPointer(start: logits.pointer + (i - b.lowerBound) * width, count: width))
            }
            lock.withLock { for (i, value) in zip(b, v) { values[i] = value } }
        }
        var sums = [Double](repeating: 0, count: runCount)
        for (owner, v) in zip(owners, values) { for r in owner.runs { sums[r] += v } }
        return sums
    }

    /// Rows a run needs: for each pair, the positions from its first patched one.
    func rowCount(_ run: [Patch]) -> Int {
        let start = run.flatMap(\.positions).min()!
        return pairs.reduce(0) { $0 + base.layout.lengths[$1.base] - min(start, base.layout.lengths[$1.base] - 1) }
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
