import Foundation
import Llama

// Attribution patching (Nanda 2023; Kramár et al. 2024, "AtP*"): the effect of patching an activation a from its
// base value to a source value is estimated to first order as (a_source − a_base) · ∂metric/∂a, the gradient taken
// at the base run. One base forward (with a tape), one source forward and one backward give every cell.
//
// Shape key: S sequences, P pairs, T positions, N = S·T rows, W width of a hook point, H heads, KVH key/value heads,
// HD head width, L layers, V vocabulary.

/// How a trace's cells are computed.
public enum TraceMethod: String, CaseIterable, Sendable, Codable {
    /// Exact activation patching: one (partial) patched forward per cell.
    case exact
    /// Attribution patching: first-order estimates from one backward pass (AtP; AtP* with the QK fix).
    case attribution
}

extension Metric {
    /// ∂metric/∂logits of one full logit row [V], as defined by `score` (prob: p_a(1[j = a] − p_j);
    /// logit-diff: +1 at the answer, −1 at the foil; KL(clean ‖ q): q_j · Σp − p_j).
    public func gradient(fullLogits row: UnsafeBufferPointer<Float>) -> [Float] {
        var g = [Float](repeating: 0, count: row.count)
        switch kind {
        case .logitDiff:
            g[answer] += 1; g[foil!] -= 1
        case .prob:
            let lse = Kernels.logSumExp(row.baseAddress!, count: row.count)
            let pa = exp(Double(row[answer] - lse))
            for j in 0..<row.count { g[j] = Float(-pa * exp(Double(row[j] - lse))) }
            g[answer] += Float(pa)
        case .kl:
            let lse = Kernels.logSumExp(row.baseAddress!, count: row.count)
            for j in 0..<row.count { g[j] = Float(exp(Double(row[j] - lse)) * cleanMass - cleanProbs![j]) }
        }
        return g
    }
}

/// One attribution pass over a base batch (the run being patched) and a source batch (where patched values come
/// from), paired as in `PatchingEngine`: one source with every base sequence, one base with every source, or 1:1.
/// The gradients are taken at each base sequence; a cell's estimate is the mean over pairs.
public final class AttributionPass {
    public let model: LlamaModel
    public let metric: Metric
    public let pairs: [(base: Int, source: Int)]
    /// Positions of every sequence (all sequences of both batches have this length).
    public let positions: Int
    /// The metric of the unpatched base run, averaged over pairs.
    public let baseScore: Double
    /// Activations of the base and source runs [S·T, W], and ∂metric_b/∂a of each base sequence b [S·T, W].
    let baseActs: [HookPoint: [Float]], sourceActs: [HookPoint: [Float]], grads: [HookPoint: [Float]]
    /// Tapes of both runs (attention probabilities, queries and keys after RoPE, values) for the QK fix.
    let baseTape: ForwardTape, sourceTape: ForwardTape
    let baseLayout: BatchLayout, sourceLayout: BatchLayout
    let baseTokens: [[Int]], baseInterventions: Hooks
    let baseLogits: [[Float]]
    /// ∂metric/∂(final residual) [S·T, D] (the backward's starting point, kept for GradDrop) and every point.
    let dFinal: [Float], allPoints: Set<HookPoint>

    /// - Parameters:
    ///   - points: every hook point whose cells will be estimated (any kind; `attn.hook_z` of the same layers is
    ///     added for the QK fix of q/k points).
    public init(model: LlamaModel, baseTokens: [[Int]], baseInterventions: Hooks = Hooks(), sourceTokens: [[Int]],
                sourceInterventions: Hooks = Hooks(), metric: Metric, points: Set<HookPoint>) throws {
        self.model = model; self.metric = metric
        self.baseTokens = baseTokens; self.baseInterventions = baseInterventions
        let c = model.config
        let lengths = Set((baseTokens + sourceTokens).map(\.count))
        precondition(lengths.count == 1, "attribution needs base and source sequences of one length")
        positions = lengths.first!
        let nb = baseTokens.count, ns = sourceTokens.count
        precondition(nb == ns || nb == 1 || ns == 1, "base and source batches must pair 1:1, 1:n or n:1")
        pairs = (0..<max(nb, ns)).map { (nb == 1 ? 0 : $0, ns == 1 ? 0 : $0) }
        var all = points
        for p in points where p.kind == .attnQ || p.kind == .attnK { all.insert(HookPoint(p.layer, .attnZ)) }
        for p in all { precondition((0..<c.layers).contains(p.layer), "no layer \(p.layer) to attribute") }

        func run(_ tokens: [[Int]], _ interventions: Hooks, _ tape: ForwardTape?) throws -> ([HookPoint: [Float]], LlamaModel.Output) {
            var hooks = interventions
            var store: [HookPoint: [Float]] = [:]
            for p in all { hooks.add(p) { a in store[p] = Array(a.buffer) } }
            let out = try model.forward(tokens, hooks: hooks, logitRows: .last, tape: tape)
            return (store, out)
        }
        baseTape = ForwardTape(); sourceTape = ForwardTape()
        let (bActs, bOut) = try run(baseTokens, baseInterventions, baseTape)
        // The source run's tape is read by the QK fix only.
        let qk = all.contains { $0.kind == .attnQ || $0.kind == .attnK }
        let (sActs, sOut) = try run(sourceTokens, sourceInterventions, qk ? sourceTape : nil)
        baseActs = bActs; sourceActs = sActs
        baseLayout = bOut.layout; sourceLayout = sOut.layout
        baseLogits = (0..<nb).map { bOut.row($0) }

        // dLogits row b = ∂metric_b/∂logits_b (each base sequence's own metric, unweighted).
        let vocab = c.vocabSize
        let dLogits = FloatBuffer(nb * vocab, zeroed: true)
        var score = 0.0
        for b in 0..<nb {
            let g = bOut.logits.pointer + b * vocab
            let grad = metric.gradient(fullLogits: UnsafeBufferPointer(start: g, count: vocab))
            (dLogits.pointer + b * vocab).update(from: grad, count: vocab)
        }
        for p in pairs { score += metric.score(fullLogits: baseLogits[p.base]) }
        baseScore = score / Double(pairs.count)
        let n = bOut.layout.rows
        let dx = FloatBuffer(n * c.dModel, zeroed: true)
        model.backwardLogits(dResidual: dx, dLogits: dLogits, rows: bOut.rows, tape: baseTape)
        dFinal = dx.array; allPoints = all
        var g: [HookPoint: [Float]] = [:]
        model.backwardLayers(dx, layout: bOut.layout, layers: 0..<c.layers, tape: baseTape) { p, grad in
            guard all.contains(p) else { return }
            g[p] = Array(UnsafeBufferPointer(start: grad, count: n * p.kind.width(c)))
        }
        grads = g
    }

    /// Per-element first-order contributions at `point`: [T, W], element (t, j) = mean over pairs of
    /// (a_source − a_base)[t, j] · ∂metric/∂a[t, j]. A cell's estimate is the sum of its elements.
    public func elementwise(_ point: HookPoint) -> [Double] { elementwise(point, gradients: grads) }

    func elementwise(_ point: HookPoint, gradients: [HookPoint: [Float]]) -> [Double] {
        let w = point.kind.width(model.config), T = positions
        guard let b = baseActs[point], let s = sourceActs[point], let g = gradients[point] else {
            preconditionFailure("\(point) was not among the attribution's points")
        }
        var out = [Double](repeating: 0, count: T * w)
        for p in pairs {
            let rb = baseLayout.offsets[p.base] * w, rs = sourceLayout.offsets[p.source] * w
            for i in 0..<(T * w) { out[i] += (Double(s[rs + i]) - Double(b[rb + i])) * Double(g[rb + i]) }
        }
        let k = 1 / Double(pairs.count)
        for i in out.indices { out[i] *= k }
        return out
    }

    /// The linear (AtP) estimate of one patch's effect on the metric: the sum of its elements' contributions.
    public func linearEffect(_ patch: Patch, elements: [Double]? = nil) -> Double {
        let c = model.config, w = patch.point.kind.width(c)
        let e = elements ?? elementwise(patch.point)
        let spans: [Range<Int>] = patch.heads.map { $0.map { ($0 * c.headDim)..<(($0 + 1) * c.headDim) } } ?? [0..<w]
        var sum = 0.0
        for t in patch.positions where t < positions { for span in spans { for j in span { sum += e[t * w + j] } } }
        return sum
    }

    /// Estimated metric of a patched run (like `PatchingEngine.evaluate` for one run): the base score plus the sum
    /// of the patches' estimated effects. Several patches (e.g. a window of layers) add their first-order effects
    /// (the sum of the single estimates). With `qkFix`, patches of `attn.hook_q`/`attn.hook_k` use `qkFixedEffect`.
    public func estimate(_ run: [Patch], qkFix: Bool = false) -> Double {
        baseScore + run.reduce(0) { sum, p in
            sum + (qkFix && (p.point.kind == .attnQ || p.point.kind == .attnK) ? qkFixedEffect(p) : linearEffect(p))
        }
    }

    /// AtP*'s QK fix for a patch of queries or keys (`attn.hook_q` heads, or `attn.hook_k` key/value heads): the
    /// patched attention probabilities are computed exactly (softmax of the patched scores), and only their effect
    /// on the metric is linearised: Σ (A_patched − A_base) ⊙ ∂metric/∂A, with ∂metric/∂A[t, j] = ∂metric/∂z[t] · v[j]
    /// per query head. Queries and keys act only through A, so this is exact up to the linearisation in A.
    public func qkFixedEffect(_ patch: Patch) -> Double {
        let c = model.config, l = patch.point.layer, hd = c.headDim, qw = c.heads * hd, kvw = c.kvHeads * hd
        let isQuery = patch.point.kind == .attnQ
        precondition(isQuery || patch.point.kind == .attnK, "the QK fix applies to attn.hook_q and attn.hook_k")
        guard let bt = baseTape.layers[l], let st = sourceTape.layers[l], let dz = grads[HookPoint(l, .attnZ)] else {
            preconditionFailure("layer \(l) was not taped")
        }
        let scale = 1 / Double(hd).squareRoot(), T = positions
        let patchedSet = Set(patch.positions.filter { $0 < T })
        let heads = patch.heads ?? Array(0..<(isQuery ? c.heads : c.kvHeads))
        let queryHeads = isQuery ? heads : heads.flatMap { g in (g * c.groupSize)..<((g + 1) * c.groupSize) }
        var total = 0.0
        var scores = [Double](repeating: 0, count: T)
        for p in pairs {
            let ob = baseLayout.offsets[p.base], os = sourceLayout.offsets[p.source]
            let keysB = bt.keys[p.base], keysS = st.keys[p.source], values = bt.values[p.base], probs = bt.probs[p.base]
            for h in queryHeads {
                let g = h / c.groupSize
                for t in 0..<T {
                    // Rows whose scores change: the patched query rows, or every row that sees a patched key.
                    if isQuery ? !patchedSet.contains(t) : !patchedSet.contains(where: { $0 <= t }) { continue }
                    var mx = -Double.infinity
                    for j in 0...t {
                        let q = isQuery ? st.q.pointer + (os + t) * qw + h * hd : bt.q.pointer + (ob + t) * qw + h * hd
                        let useSourceKey = !isQuery && patchedSet.contains(j)
                        var dot = 0.0
                        for e in 0..<hd {
                            let k = useSourceKey ? keysS[j * kvw + g * hd + e] : keysB[j * kvw + g * hd + e]
                            dot += Double(q[e]) * Double(k)
                        }
                        scores[j] = dot * scale; mx = max(mx, scores[j])
                    }
                    var sum = 0.0
                    for j in 0...t { scores[j] = exp(scores[j] - mx); sum += scores[j] }
                    let row = h * T * T + t * T
                    for j in 0...t {
                        var dA = 0.0  // ∂metric/∂A[t, j] = dz[t] · v[j]
                        for e in 0..<hd { dA += Double(dz[(ob + t) * qw + h * hd + e]) * Double(values[j * kvw + g * hd + e]) }
                        total += (scores[j] / sum - Double(probs[row + j])) * dA
                    }
                }
            }
        }
        return total / Double(pairs.count)
    }

    /// AtP*'s GradDrop (Kramár et al. 2024, eq. 11) for each run: (1/(L−1)) Σ_ℓ |estimate_ℓ(run)|, where estimate_ℓ
    /// is the linear estimate with the gradient through block ℓ dropped (block ℓ's attention and MLP outputs treated
    /// as constants: the gradient passes the block by the residual alone; its branch points get zero, its residual
    /// points the gradient passing by). A magnitude for ranking, robust
    /// to cancelling direct and indirect effects; for a run with a direct effect only it equals |linear estimate|.
    /// Costs L backward passes.
    public func gradDrop(_ runs: [[Patch]]) -> [Double] {
        let c = model.config, L = c.layers, n = baseLayout.rows
        var sums = [Double](repeating: 0, count: runs.count)
        for dropped in 0..<L {
            let dx = FloatBuffer(dFinal.count)
            dx.pointer.update(from: dFinal, count: dFinal.count)
            var g: [HookPoint: [Float]] = [:]
            let keep: GradientObserver = { p, grad in
                guard self.allPoints.contains(p) else { return }
                g[p] = Array(UnsafeBufferPointer(start: grad, count: n * p.kind.width(c)))
            }
            model.backwardLayers(dx, layout: baseLayout, layers: (dropped + 1)..<L, tape: baseTape, observe: keep)
            // Block ℓ's residual points see the gradient that passes it by the identity; its branch points see none.
            for p in allPoints where p.layer == dropped {
                let residual = p.kind == .residPre || p.kind == .residMid || p.kind == .residPost
                g[p] = residual ? dx.array : [Float](repeating: 0, count: n * p.kind.width(c))
            }
            model.backwardLayers(dx, layout: baseLayout, layers: 0..<dropped, tape: baseTape, observe: keep)
            var elements: [HookPoint: [Double]] = [:]
            for (i, run) in runs.enumerated() {
                var est = 0.0
                for p in run {
                    if elements[p.point] == nil { elements[p.point] = elementwise(p.point, gradients: g) }
                    est += linearEffect(p, elements: elements[p.point])
                }
                sums[i] += abs(est)
            }
        }
        return sums.map { $0 / Double(max(L - 1, 1)) }
    }
}
