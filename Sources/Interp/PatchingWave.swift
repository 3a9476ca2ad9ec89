import Foundation
import Llama

// Shape key: N rows of a packed batch, D model width, L layers.

/// What makes two runs start alike: their first patched position and layer, and their patches at that layer.
struct BeginningKey: Hashable {
    let start: Int, layer: Int
    let firstLayer: Set<Patch>
    init(_ run: [Patch]) {
        let l = run.map(\.point.layer).min()!
        layer = l
        start = run.flatMap(\.positions).min()!
        firstLayer = Set(run.filter { $0.point.layer == l })
    }
}

extension PatchingEngine {
    /// Kinds whose patch at position p changes nothing at other positions of the same layer (everything after the
    /// keys/values): a run whose first patched layer has only these needs that layer at its patched rows alone.
    static let rowLocalKinds: Set<HookKind> = [.attnQ, .attnZ, .attnOut, .residMid, .mlpPre, .mlpPreLinear, .mlpPost,
                                                .mlpOut, .residPost]

    /// What a wave hands to the output head: the final residual at each packed sequence's last row, [S, D], and the
    /// runs and pair each sequence carries.
    struct WaveOutput {
        var rows: [Float]
        var sequences: [(runs: [Int], pair: Int)]
    }

    /// One packed sequence of a wave: runs `runs` (identical so far) for pair `pair`, positions start..<start+length,
    /// entering the batch at layer `layer` from the base run's residual there. When `local` is set, the runs' first
    /// patched layer is `layer - 1` and changed only positions `local`, whose new residual is computed apart.
    struct WaveSequence {
        var runs: [Int]
        let pair: Int, start: Int, length: Int, layer: Int
        let local: ClosedRange<Int>?
    }

    /// The fast path for a wave of runs, given as bundles of runs with the same `BeginningKey`: returns the final
    /// rows of its sequences, with run indices in bundle order (the output head is applied later, to the rows of many
    /// waves at once). One packed sequence per
    /// (run, pair), starting at the run's first patched position; sequences join the batch at their run's first
    /// patched layer, from the base run's residual there, with the base run's keys/values for the positions before
    /// their start.
    ///
    /// Two savings on top: a run whose first patched layer l patches only row-local kinds (after the keys/values)
    /// computes layer l at its patched rows alone and joins at l + 1 (every other row of layer l is the base run's);
    /// and runs with the same beginning travel as one sequence until a layer where their patches differ, where the
    /// sequence forks (nested windows share their common bottom layers).
    /// - Parameter layerDone: called after each layer with an estimate of the runs finished.
    func evaluateWave(_ bundles: [[[Patch]]], value: PatchValue,
                      layerDone: (Int) -> Void) -> WaveOutput {
        let c = model.config, d = c.dModel, L = c.layers
        let runs = Array(bundles.joined())
        var pending: [WaveSequence] = []
        var first = 0
        for bundle in bundles {
            let members = Array(first..<(first + bundle.count))
            first += bundle.count
            let key = BeginningKey(bundle[0]), layer = key.layer
            let firstPositions = key.firstLayer.flatMap(\.positions)
            let local = layer < L - 1 && key.firstLayer.allSatisfy { Self.rowLocalKinds.contains($0.point.kind) }
            for (pi, p) in pairs.enumerated() {
                let t = base.layout.lengths[p.base], s = min(key.start, t - 1)
                let lo = firstPositions.min()!, hi = min(firstPositions.max()!, t - 1)
                let span: ClosedRange<Int>? = local && lo <= hi ? lo...hi : nil
                pending.append(WaveSequence(runs: members, pair: pi, start: s, length: t - s,
                                            layer: span == nil ? layer : layer + 1, local: span))
            }
        }
        pending = pending.enumerated().sorted { ($0.element.layer, $0.offset) < ($1.element.layer, $1.offset) }.map(\.element)
        var patchesAt: [HookPoint: [Int: [Patch]]] = [:]
        for (r, run) in runs.enumerated() { for p in run { patchesAt[p.point, default: [:]][r, default: []].append(p) } }
        let localRows = residualsOfLocalLayers(pending, patchesAt: patchesAt, value: value)

        var x = FloatBuffer(0)
        var active: [WaveSequence] = [], joined = 0
        let prefix = KVCache(config: c, sequences: 0)
        let noLayers = [[[Float]]](repeating: [], count: L)
        let firstLayer = pending[0].layer
        for l in firstLayer..<L {
            // Sequences starting at this layer join with the base run's residual (and their locally computed rows).
            var end = joined
            while end < pending.count && pending[end].layer == l { end += 1 }
            if end > joined {
                let rows = active.reduce(0) { $0 + $1.length }
                let newRows = pending[joined..<end].reduce(0) { $0 + $1.length }
                let grown = FloatBuffer((rows + newRows) * d)
                if rows > 0 { grown.pointer.update(from: x.pointer, count: rows * d) }
                var at = rows
                base[HookPoint(l, .residPre)]!.withUnsafeBufferPointer { src in
                    for i in joined..<end {
                        let s = pending[i]
                        let from = base.layout.row(seq: pairs[s.pair].base, pos: s.start)
                        (grown.pointer + at * d).update(from: src.baseAddress! + from * d, count: s.length * d)
                        if let span = s.local, let rows = localRows[i] {
                            (grown.pointer + (at + span.lowerBound - s.start) * d).update(from: rows, count: rows.count)
                        }
                        at += s.length
                    }
                }
                x = grown
                active += pending[joined..<end]
                joined = end
            }
            // Sequences carrying runs that patch this layer differently fork (each part copies the rows so far).
            var forked: [(sequence: WaveSequence, parentRow: Int)] = []
            var parentRow = 0
            for s in active {
                if s.runs.count == 1 {
                    forked.append((s, parentRow))
                } else {
                    var groups: [Set<Patch>: [Int]] = [:], order: [Set<Patch>] = []
                    for r in s.runs {
                        let key = Set(runs[r].filter { $0.point.layer == l })
                        if groups[key] == nil { order.append(key) }
                        groups[key, default: []].append(r)
                    }
                    for key in order { var t = s; t.runs = groups[key]!; forked.append((t, parentRow)) }
                }
                parentRow += s.length
            }
            if forked.count > active.count {
                let grown = FloatBuffer(forked.reduce(0) { $0 + $1.sequence.length } * d)
                var at = 0
                for (s, from) in forked {
                    (grown.pointer + at * d).update(from: x.pointer + from * d, count: s.length * d)
                    at += s.length
                }
                x = grown
                active = forked.map(\.sequence)
            }
            let layout = BatchLayout(lengths: active.map(\.length), startPositions: active.map(\.start))
            var keys = noLayers, vals = noLayers
            keys[l] = active.map { base.kv.keys[l][pairs[$0.pair].base] }
            vals[l] = active.map { base.kv.values[l][pairs[$0.pair].base] }
            prefix.setStorage(keys: keys, values: vals)
            let entries = active.map { ($0.runs[0], $0.pair, $0.start, $0.length) }
            let hooks = patchHooks(layer: l, entries: entries, layout: layout, patchesAt: patchesAt, value: value)
            model.runLayers(x, layout: layout, layers: l..<(l + 1), hooks: hooks, prefix: prefix,
                            outputRows: l == L - 1 ? layout.lastRows : nil)
            layerDone(runs.count * (l - firstLayer + 1) / (L - firstLayer))
        }
        let layout = BatchLayout(lengths: active.map(\.length), startPositions: active.map(\.start))
        var rows = [Float](repeating: 0, count: active.count * d)
        rows.withUnsafeMutableBufferPointer { out in
            for (i, r) in layout.lastRows.enumerated() { (out.baseAddress! + i * d).update(from: x.pointer + r * d, count: d) }
        }
        return WaveOutput(rows: rows, sequences: active.map { ($0.runs, $0.pair) })
    }

    /// For the sequences with a `local` span: their first patched layer (`layer - 1`) run on the span's rows alone,
    /// from the base run's residual and with its keys/values before the span. Returns the residual after that layer
    /// at the span's rows, [span, D], by sequence index.
    func residualsOfLocalLayers(_ seqs: [WaveSequence], patchesAt: [HookPoint: [Int: [Patch]]],
                                value: PatchValue) -> [Int: [Float]] {
        let c = model.config, d = c.dModel
        var byLayer: [Int: [Int]] = [:]
        for (i, s) in seqs.enumerated() where s.local != nil { byLayer[s.layer - 1, default: []].append(i) }
        var out: [Int: [Float]] = [:]
        for (l, members) in byLayer.sorted(by: { $0.key < $1.key }) {
            let spans = members.map { seqs[$0].local! }
            let layout = BatchLayout(lengths: spans.map(\.count), startPositions: spans.map(\.lowerBound))
            let x = FloatBuffer(layout.rows * d)
            base[HookPoint(l, .residPre)]!.withUnsafeBufferPointer { src in
                for (j, i) in members.enumerated() {
                    let from = base.layout.row(seq: pairs[seqs[i].pair].base, pos: spans[j].lowerBound)
                    (x.pointer + layout.offsets[j] * d).update(from: src.baseAddress! + from * d, count: spans[j].count * d)
                }
            }
            var keys = [[[Float]]](repeating: [], count: c.layers), vals = keys
            keys[l] = members.map { base.kv.keys[l][pairs[seqs[$0].pair].base] }
            vals[l] = members.map { base.kv.values[l][pairs[seqs[$0].pair].base] }
            let prefix = KVCache(config: c, sequences: 0)
            prefix.setStorage(keys: keys, values: vals)
            let entries = zip(members, spans).map { (seqs[$0].runs[0], seqs[$0].pair, $1.lowerBound, $1.count) }
            let hooks = patchHooks(layer: l, entries: entries, layout: layout, patchesAt: patchesAt, value: value)
            model.runLayers(x, layout: layout, layers: l..<(l + 1), hooks: hooks, prefix: prefix)
            for (j, i) in members.enumerated() {
                out[i] = Array(UnsafeBufferPointer(start: x.pointer + layout.offsets[j] * d, count: spans[j].count * d))
            }
        }
        return out
    }

    /// Hooks writing the patches of layer `l` into a packed batch whose sequence i is `entries[i]` = (run, pair,
    /// first position, length). Whole-row patches declare their rows, so the model may skip computing them.
    func patchHooks(layer l: Int, entries: [(run: Int, pair: Int, start: Int, length: Int)], layout: BatchLayout,
                    patchesAt: [HookPoint: [Int: [Patch]]], value: PatchValue) -> Hooks {
        let c = model.config
        var hooks = Hooks()
        for (point, byRun) in patchesAt where point.layer == l {
            let width = point.kind.width(c)
            var rows: [Int] = []
            for (i, s) in entries.enumerated() {
                for patch in byRun[s.run] ?? [] where patch.heads == nil {
                    for pos in patch.positions where pos >= s.start && pos < s.start + s.length {
                        rows.append(layout.row(seq: i, pos: pos))
                    }
                }
            }
            hooks.add(point, overwritingRows: rows) { [self] a in
                for (i, s) in entries.enumerated() {
                    guard let patches = byRun[s.run] else { continue }
                    for patch in patches {
                        for pos in patch.positions where pos >= s.start && pos < s.start + s.length {
                            write(a.data + layout.row(seq: i, pos: pos) * width, point: point, pair: s.pair, pos: pos,
                                  width: width, heads: patch.heads, headDim: c.headDim, value: value)
                        }
                    }
                }
            }
        }
        return hooks
    }
}
