import Foundation
import Linalg

// Llama-family decoder, float32 on the CPU with BLAS: RMSNorm, RoPE (GGUF "normal" pairs), grouped-query
// attention, SwiGLU MLP, tied or separate output head.
// Shape key: N rows (packed positions of all sequences), T positions of one sequence, D model width,
// H query heads, KVH key/value heads, HD head width, F MLP width, L layers, V vocabulary.

/// Which rows get logits (the output head is the most expensive single matmul: compute it only where read).
public enum LogitRows: Equatable, Sendable {
    case none
    /// The last row of each sequence.
    case last
    case all
    case rows([Int])

    /// The rows of `layout` this selects; none when the pass stopped before the last layer (no logits then).
    func indices(_ layout: BatchLayout, ranAllLayers: Bool) -> [Int] {
        guard ranAllLayers else { return [] }
        switch self {
        case .none: return []
        case .last: return layout.lastRows
        case .all: return Array(0..<layout.rows)
        case let .rows(r): return r
        }
    }
}

/// Values of one layer saved by a forward pass for the backward pass.
public final class LayerTape {
    public var input = FloatBuffer(0)        // [N, D] resid_pre
    public var rstd1 = FloatBuffer(0)        // [N]
    public var xn1 = FloatBuffer(0)          // [N, D]
    public var q = FloatBuffer(0)            // [N, H·HD] after RoPE
    public var keys: [[Float]] = []          // per sequence [Tall, KVH·HD] after RoPE (prefix + new)
    public var values: [[Float]] = []        // per sequence [Tall, KVH·HD]
    public var probs: [[Float]] = []         // per sequence [H, T, Tall]
    public var z = FloatBuffer(0)            // [N, H·HD]
    public var mid = FloatBuffer(0)          // [N, D] resid_mid
    public var rstd2 = FloatBuffer(0)        // [N]
    public var xn2 = FloatBuffer(0)          // [N, D]
    public var gateUp = FloatBuffer(0)       // [N, 2F]
    public var post = FloatBuffer(0)         // [N, F]
    init() {}
}

/// Saved values of a forward pass over a range of layers (filled when passed to `runLayers`).
public final class ForwardTape {
    public var layers: [Int: LayerTape] = [:]
    public var finalInput = FloatBuffer(0)   // [R, D] residual at logit rows
    public var finalRstd = FloatBuffer(0)    // [R]
    public var finalNormed = FloatBuffer(0)  // [R, D]
    public init() {}
}

/// A Llama model ready to run.
public final class LlamaModel {
    /// Sequences with (new rows × keys) up to this use direct attention loops instead of BLAS.
    static let directAttentionLimit = 1024
    public let config: LlamaConfig
    public let weights: LlamaWeights
    let rope: RopeTable

    public init(weights: LlamaWeights) {
        self.config = weights.config
        self.weights = weights
        rope = RopeTable(headDim: config.headDim, base: config.ropeBase)
    }

    /// Checks ids are in the vocabulary and the batch is not empty.
    public func validate(_ batch: [[Int]]) throws {
        guard !batch.isEmpty, batch.allSatisfy({ !$0.isEmpty }) else { throw LlamaError.emptyPrompt }
        for seq in batch {
            guard seq.count <= config.contextLength else {
                throw LlamaError.contextTooLong(tokens: seq.count, limit: config.contextLength)
            }
            for id in seq where id < 0 || id >= config.vocabSize {
                throw LlamaError.tokenOutOfRange(id: id, vocab: config.vocabSize)
            }
        }
    }

    /// Token embeddings of the packed rows: [N, D].
    public func embed(_ batch: [[Int]]) -> FloatBuffer {
        let d = config.dModel
        let ids = batch.flatMap { $0 }
        let out = FloatBuffer(ids.count * d)
        weights.tokenEmbedding.withUnsafeBufferPointer { e in
            for (r, id) in ids.enumerated() { (out.pointer + r * d).update(from: e.baseAddress! + id * d, count: d) }
        }
        return out
    }

    /// Runs blocks `layers` on the residual stream `x` [N, D] in place (x becomes the last block's resid_post).
    /// - Parameters:
    ///   - cache: keys/values of earlier positions (read for sequences whose start position is > 0) and
    ///     appended with the new ones.
    ///   - prefix: keys/values for positions before each sequence's start, read only (not appended); used
    ///     to recompute a suffix of a cached run.
    ///   - tape: when given, saves what the backward pass needs.
    ///   - outputRows: when given, only these rows of the result are read afterwards: the last block computes its
    ///     attention output and MLP at these rows only (its keys/values still cover every row), and the other rows
    ///     of `x` are left as that block's resid_pre. Ignored when hooks read or write that block after
    ///     `attn.hook_z`, or with a tape.
    public func runLayers(_ x: FloatBuffer, layout: BatchLayout, layers: Range<Int>, hooks: Hooks? = nil,
                          cache: KVCache? = nil, prefix: KVCache? = nil, tape: ForwardTape? = nil,
                          outputRows: [Int]? = nil) {
        let positions = layout.positions
        rope.reserve(Int(positions.max() ?? 0) + 1)
        for l in layers {
            positions.withUnsafeBufferPointer { pos in
                block(l, x: x, layout: layout, positions: pos.baseAddress!, hooks: hooks, cache: cache,
                      prefix: prefix, tape: tape.map { t in let lt = LayerTape(); t.layers[l] = lt; return lt },
                      outputRows: l == layers.upperBound - 1 ? outputRows : nil)
            }
        }
    }

    private func block(_ l: Int, x: FloatBuffer, layout: BatchLayout, positions: UnsafePointer<Int32>, hooks: Hooks?,
                       cache: KVCache?, prefix: KVCache?, tape: LayerTape?, outputRows: [Int]?) {
        let c = config, n = layout.rows, d = c.dModel
        let qw = c.heads * c.headDim, kvw = c.kvHeads * c.headDim
        let w = weights.layers[l]
        func fire(_ k: HookKind, _ p: UnsafeMutablePointer<Float>) {
            hooks?.fire(HookPoint(l, k), p, width: k.width(c), layout: layout)
        }
        fire(.residPre, x.pointer)
        if let tape { tape.input = FloatBuffer(x.array) }

        // Attention: xn1 = rmsnorm(x); [q|k|v] = xn1 · Wqkvᵀ
        let xn = FloatBuffer(n * d), rstd = FloatBuffer(n)
        w.attnNorm.withUnsafeBufferPointer {
            Kernels.rmsnormForward(out: xn.pointer, x: x.pointer, w: $0.baseAddress!, rows: n, width: d, eps: c.rmsEps,
                                   rstd: rstd.pointer)
        }
        let qkv = FloatBuffer(n * c.qkvDim)
        w.wqkv.withUnsafeBufferPointer {
            BLAS.sgemm(transB: true, m: n, n: c.qkvDim, k: d, a: xn.pointer, lda: d, b: $0.baseAddress!, ldb: d,
                       c: qkv.pointer, ldc: c.qkvDim)
        }
        let q = FloatBuffer(n * qw), k = FloatBuffer(n * kvw), v = FloatBuffer(n * kvw)
        for r in 0..<n {
            let src = qkv.pointer + r * c.qkvDim
            (q.pointer + r * qw).update(from: src, count: qw)
            (k.pointer + r * kvw).update(from: src + qw, count: kvw)
            (v.pointer + r * kvw).update(from: src + qw + kvw, count: kvw)
        }
        fire(.attnQ, q.pointer); fire(.attnK, k.pointer); fire(.attnV, v.pointer)
        Kernels.rope(q.pointer, rows: n, heads: c.heads, headDim: c.headDim, positions: positions, table: rope)
        Kernels.rope(k.pointer, rows: n, heads: c.kvHeads, headDim: c.headDim, positions: positions, table: rope)
        if let tape { tape.rstd1 = rstd; tape.xn1 = xn; tape.q = q }

        let z = FloatBuffer(n * qw)
        attention(l, q: q, k: k, v: v, z: z, layout: layout, cache: cache, prefix: prefix, tape: tape)
        fire(.attnZ, z.pointer)
        let later: [HookKind] = [.attnOut, .residMid, .mlpPre, .mlpPreLinear, .mlpPost, .mlpOut, .residPost]
        if let keep = outputRows, keep.count < n, tape == nil, !later.contains(where: { hooks?.has(HookPoint(l, $0)) ?? false }) {
            // Only `keep` rows are read after this block: finish it on those rows alone.
            let m = keep.count
            let zk = FloatBuffer(m * qw), xk = FloatBuffer(m * d)
            for (i, r) in keep.enumerated() {
                (zk.pointer + i * qw).update(from: z.pointer + r * qw, count: qw)
                (xk.pointer + i * d).update(from: x.pointer + r * d, count: d)
            }
            finishBlock(l, z: zk, x: xk, layout: BatchLayout(lengths: [Int](repeating: 1, count: m)), hooks: nil, tape: nil)
            for (i, r) in keep.enumerated() { (x.pointer + r * d).update(from: xk.pointer + i * d, count: d) }
            return
        }
        finishBlock(l, z: z, x: x, layout: layout, hooks: hooks, tape: tape)
    }

    /// The rest of block `l` from z [N, H·HD]: x += z·W_Oᵀ, then x += MLP(rmsnorm(x)), with hooks and tape.
    private func finishBlock(_ l: Int, z: FloatBuffer, x: FloatBuffer, layout: BatchLayout, hooks: Hooks?, tape: LayerTape?) {
        let c = config, n = layout.rows, d = c.dModel, f = c.ffnDim, qw = c.heads * c.headDim
        let w = weights.layers[l]
        func fire(_ k: HookKind, _ p: UnsafeMutablePointer<Float>) {
            hooks?.fire(HookPoint(l, k), p, width: k.width(c), layout: layout)
        }
        addProjection(l, .attnOut, input: z.pointer, width: qw, weight: w.wo, x: x, layout: layout, hooks: hooks)
        fire(.residMid, x.pointer)
        if let tape { tape.z = z; tape.mid = FloatBuffer(x.array) }

        // MLP: gate|up = rmsnorm(x) · Wgateupᵀ; post = silu(gate) ⊙ up; out = post · Wdownᵀ
        let replaced = hooks?.overwrittenRows(HookPoint(l, .mlpOut)) ?? []
        if !replaced.isEmpty, tape == nil,
           ![HookKind.mlpPre, .mlpPreLinear, .mlpPost].contains(where: { hooks?.has(HookPoint(l, $0)) ?? false }) {
            mlpSkippingReplacedRows(l, x: x, layout: layout, replaced: replaced, hooks: hooks!)
            return
        }
        let (xn2, rstd2, gu) = mlpGateUp(l, x: x.pointer, rows: n)
        if let hooks, hooks.has(HookPoint(l, .mlpPre)) || hooks.has(HookPoint(l, .mlpPreLinear)) {
            // Gate and up share rows of `gu`; hooks see each as its own [N, F] array.
            for (kind, col) in [(HookKind.mlpPre, 0), (.mlpPreLinear, f)] where hooks.has(HookPoint(l, kind)) {
                let tmp = FloatBuffer(n * f)
                for r in 0..<n { (tmp.pointer + r * f).update(from: gu.pointer + r * 2 * f + col, count: f) }
                fire(kind, tmp.pointer)
                for r in 0..<n { (gu.pointer + r * 2 * f + col).update(from: tmp.pointer + r * f, count: f) }
            }
        }
        let post = FloatBuffer(n * f)
        Kernels.swigluForward(out: post.pointer, gateUp: gu.pointer, rows: n, width: f)
        fire(.mlpPost, post.pointer)
        addProjection(l, .mlpOut, input: post.pointer, width: f, weight: w.wDown, x: x, layout: layout, hooks: hooks)
        fire(.residPost, x.pointer)
        if let tape { tape.rstd2 = rstd2; tape.xn2 = xn2; tape.gateUp = gu; tape.post = post }
    }

    /// x [N, D] += input [N, K] · Wᵀ (W [D, K]), the output projection whose result is hook point `kind`. The GEMM
    /// accumulates into x directly unless a hook sees that result on its own (then it goes through a buffer).
    private func addProjection(_ l: Int, _ kind: HookKind, input: UnsafePointer<Float>, width k: Int, weight: [Float],
                               x: FloatBuffer, layout: BatchLayout, hooks: Hooks?) {
        let n = layout.rows, d = config.dModel
        weight.withUnsafeBufferPointer { w in
            if let hooks, hooks.has(HookPoint(l, kind)) {
                let out = FloatBuffer(n * d)
                BLAS.sgemm(transB: true, m: n, n: d, k: k, a: input, lda: k, b: w.baseAddress!, ldb: k, c: out.pointer, ldc: d)
                hooks.fire(HookPoint(l, kind), out.pointer, width: d, layout: layout)
                for i in 0..<(n * d) { x.pointer[i] += out.pointer[i] }
            } else {
                BLAS.sgemm(transB: true, m: n, n: d, k: k, a: input, lda: k, b: w.baseAddress!, ldb: k,
                           beta: 1, c: x.pointer, ldc: d)
            }
        }
    }

    /// The MLP's first half for rows x [M, D] of block `l`: xn = rmsnorm(x) [M, D], its rstd [M], and
    /// gate|up = xn · Wgateupᵀ [M, 2F].
    private func mlpGateUp(_ l: Int, x: UnsafePointer<Float>, rows m: Int) -> (FloatBuffer, FloatBuffer, FloatBuffer) {
        let c = config, d = c.dModel, f = c.ffnDim
        let w = weights.layers[l]
        let xn = FloatBuffer(m * d), rstd = FloatBuffer(m), gu = FloatBuffer(m * 2 * f)
        w.ffnNorm.withUnsafeBufferPointer {
            Kernels.rmsnormForward(out: xn.pointer, x: x, w: $0.baseAddress!, rows: m, width: d, eps: c.rmsEps,
                                   rstd: rstd.pointer)
        }
        w.wGateUp.withUnsafeBufferPointer {
            BLAS.sgemm(transB: true, m: m, n: 2 * f, k: d, a: xn.pointer, lda: d, b: $0.baseAddress!, ldb: d,
                       c: gu.pointer, ldc: 2 * f)
        }
        return (xn, rstd, gu)
    }

    /// The MLP of block `l` when hooks replace `hook_mlp_out` at rows `replaced` and nothing reads the MLP inside:
    /// computed at the other rows only; the replaced rows are handed to the hooks as zeros, for them to overwrite.
    private func mlpSkippingReplacedRows(_ l: Int, x: FloatBuffer, layout: BatchLayout, replaced: Set<Int>, hooks: Hooks) {
        let c = config, n = layout.rows, d = c.dModel, f = c.ffnDim
        let w = weights.layers[l]
        let keep = (0..<n).filter { !replaced.contains($0) }, m = keep.count
        let xk = FloatBuffer(m * d)
        for (i, r) in keep.enumerated() { (xk.pointer + i * d).update(from: x.pointer + r * d, count: d) }
        let (_, _, gu) = mlpGateUp(l, x: xk.pointer, rows: m)
        let post = FloatBuffer(m * f), outK = FloatBuffer(m * d)
        Kernels.swigluForward(out: post.pointer, gateUp: gu.pointer, rows: m, width: f)
        w.wDown.withUnsafeBufferPointer {
            BLAS.sgemm(transB: true, m: m, n: d, k: f, a: post.pointer, lda: f, b: $0.baseAddress!, ldb: f,
                       c: outK.pointer, ldc: d)
        }
        let mlpOut = FloatBuffer(n * d, zeroed: true)
        for (i, r) in keep.enumerated() { (mlpOut.pointer + r * d).update(from: outK.pointer + i * d, count: d) }
        hooks.fire(HookPoint(l, .mlpOut), mlpOut.pointer, width: d, layout: layout)
        for i in 0..<(n * d) { x.pointer[i] += mlpOut.pointer[i] }
        hooks.fire(HookPoint(l, .residPost), x.pointer, width: d, layout: layout)
    }

    /// Causal grouped-query attention per sequence: z = softmax(q kᵀ/√HD + mask) v.
    /// Several sequences are computed in parallel: the cache bookkeeping runs first (serially), with each
    /// sequence's keys/values copied to scratch when they do not already live in `k`/`v`.
    private func attention(_ l: Int, q: FloatBuffer, k: FloatBuffer, v: FloatBuffer, z: FloatBuffer,
                           layout: BatchLayout, cache: KVCache?, prefix: KVCache?, tape: LayerTape?) {
        let c = config, hd = c.headDim, qw = c.heads * hd, kvw = c.kvHeads * hd
        let scale = 1 / Float(hd).squareRoot()
        let sequences = layout.sequences
        // Scores of every sequence, [H, t, tAll] each, packed.
        var scoreOffsets: [Int] = [], scoreCount = 0
        for b in 0..<sequences {
            let t = layout.lengths[b], tAll = layout.startPositions[b] + t
            scoreOffsets.append(scoreCount); scoreCount += c.heads * t * tAll
        }
        let work = scoreCount * hd * 4
        let scores = FloatBuffer(max(scoreCount, 1))
        // (Not with a KV cache: its keys/values would have to be copied out of the cache arrays for every layer.)
        let parallel = sequences > 1 && cache == nil && work >= 1 << 20 && Kernels.threadsHere > 1
        // Parallel runs need stable pointers: keys/values that are not rows of k/v are copied here.
        // A prefix read without cache or tape is also joined with the new rows here (no arrays to allocate).
        let joinInScratch = cache == nil && tape == nil
        var kvOffsets = [Int](repeating: -1, count: sequences), kvCount = 0
        for b in 0..<sequences {
            let p0 = layout.startPositions[b]
            if (parallel || joinInScratch) && p0 > 0 {
                kvOffsets[b] = kvCount; kvCount += 2 * (p0 + layout.lengths[b]) * kvw
            }
        }
        let kvScratch = FloatBuffer(max(kvCount, 1))

        func compute(_ b: Int, _ kp: UnsafePointer<Float>, _ vp: UnsafePointer<Float>) {
            let t = layout.lengths[b], p0 = layout.startPositions[b], off = layout.offsets[b], tAll = p0 + t
            for h in 0..<c.heads {
                let g = h / c.groupSize
                let s = scores.pointer + scoreOffsets[b] + h * t * tAll
                let qh = q.pointer + off * qw + h * hd, zh = z.pointer + off * qw + h * hd
                if t * tAll <= Self.directAttentionLimit {
                    // Short sequences: direct loops beat the call overhead of two tiny GEMMs per head.
                    Kernels.attentionSmall(scores: s, z: zh, q: qh, qStride: qw, k: kp + g * hd, v: vp + g * hd,
                                           kvStride: kvw, rows: t, keys: tAll, firstPosition: p0, headDim: hd, scale: scale)
                    continue
                }
                BLAS.sgemm(transB: true, m: t, n: tAll, k: hd, alpha: scale, a: qh, lda: qw, b: kp + g * hd,
                           ldb: kvw, c: s, ldc: tAll)
                for i in 0..<t { Kernels.softmaxRow(s + i * tAll, count: tAll, valid: p0 + i + 1) }
                BLAS.sgemm(m: t, n: hd, k: tAll, a: s, lda: tAll, b: vp + g * hd, ldb: kvw, c: zh, ldc: qw)
            }
        }
        // Runs sequence b now, or (parallel) keeps its keys/values for later.
        func run(_ b: Int, _ kp: UnsafePointer<Float>, _ vp: UnsafePointer<Float>) {
            guard parallel else { compute(b, kp, vp); return }
            guard kvOffsets[b] >= 0 else { return }
            let n = (layout.startPositions[b] + layout.lengths[b]) * kvw
            (kvScratch.pointer + kvOffsets[b]).update(from: kp, count: n)
            (kvScratch.pointer + kvOffsets[b] + n).update(from: vp, count: n)
        }

        if let tape {
            tape.keys = []; tape.values = []; tape.probs = []
        }
        for b in 0..<sequences {
            let t = layout.lengths[b], p0 = layout.startPositions[b], off = layout.offsets[b]
            let newK = UnsafeBufferPointer(start: k.pointer + off * kvw, count: t * kvw)
            let newV = UnsafeBufferPointer(start: v.pointer + off * kvw, count: t * kvw)
            // Keys/values of all tAll positions, without copying where possible: the new rows themselves (no
            // earlier positions), the cache after appending the new rows, or prefix + new rows (a copy).
            if let cache, prefix == nil {
                let have = cache.positions(layer: l, seq: b)
                guard have >= p0 else { preconditionFailure("sequence \(b) starts at \(p0) but the cache holds \(have) positions") }
                if have > p0 {
                    cache.keys[l][b].removeLast((have - p0) * kvw); cache.values[l][b].removeLast((have - p0) * kvw)
                }
                cache.keys[l][b].append(contentsOf: newK); cache.values[l][b].append(contentsOf: newV)
                cache.keys[l][b].withUnsafeBufferPointer { kp in cache.values[l][b].withUnsafeBufferPointer { vp in
                    run(b, kp.baseAddress!, vp.baseAddress!)
                } }
                if let tape { tape.keys.append(cache.keys[l][b]); tape.values.append(cache.values[l][b]) }
            } else if p0 > 0 {
                guard let source = prefix ?? cache, source.positions(layer: l, seq: b) >= p0 else {
                    preconditionFailure("sequence \(b) starts at position \(p0) but no cache holds its prefix")
                }
                if joinInScratch {
                    let kp = kvScratch.pointer + kvOffsets[b], vp = kp + (p0 + t) * kvw
                    source.keys[l][b].withUnsafeBufferPointer { kp.update(from: $0.baseAddress!, count: p0 * kvw) }
                    source.values[l][b].withUnsafeBufferPointer { vp.update(from: $0.baseAddress!, count: p0 * kvw) }
                    (kp + p0 * kvw).update(from: newK.baseAddress!, count: t * kvw)
                    (vp + p0 * kvw).update(from: newV.baseAddress!, count: t * kvw)
                    if !parallel { compute(b, kp, vp) }
                    continue
                }
                let kAll = Array(source.keys[l][b][0..<(p0 * kvw)]) + newK
                let vAll = Array(source.values[l][b][0..<(p0 * kvw)]) + newV
                kAll.withUnsafeBufferPointer { kp in vAll.withUnsafeBufferPointer { vp in run(b, kp.baseAddress!, vp.baseAddress!) } }
                if let cache {
                    cache.keys[l][b] = kAll; cache.values[l][b] = vAll
                }
                if let tape { tape.keys.append(kAll); tape.values.append(vAll) }
            } else {
                run(b, newK.baseAddress!, newV.baseAddress!)
                if let cache { cache.keys[l][b] = Array(newK); cache.values[l][b] = Array(newV) }
                if let tape { tape.keys.append(Array(newK)); tape.values.append(Array(newV)) }
            }
        }
        if parallel {
            // Sequences dealt round-robin to the cores (lengths vary, neighbours tend to be alike).
            let parts = min(Kernels.threadsHere, sequences)
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                for b in stride(from: part, to: sequences, by: parts) {
                    if kvOffsets[b] >= 0 {
                        let kp = kvScratch.pointer + kvOffsets[b]
                        compute(b, kp, kp + (layout.startPositions[b] + layout.lengths[b]) * kvw)
                    } else {
                        let off = layout.offsets[b]
                        compute(b, k.pointer + off * kvw, v.pointer + off * kvw)
                    }
                }
            }
        }
        if let tape {
            tape.probs = (0..<sequences).map { b in
                let t = layout.lengths[b], tAll = layout.startPositions[b] + t
                return Array(UnsafeBufferPointer(start: scores.pointer + scoreOffsets[b], count: c.heads * t * tAll))
            }
        }
    }

    /// Final RMSNorm and output head at `rows` of the residual x [N, D]: returns [R, V], or [R, C] for the
    /// vocabulary `columns` only (a metric that reads two logits need not pay for all V).
    public func logits(_ x: FloatBuffer, rows: [Int], columns: [Int]? = nil, tape: ForwardTape? = nil) -> FloatBuffer {
        let c = config, d = c.dModel, r = rows.count
        let sel = FloatBuffer(r * d), xn = FloatBuffer(r * d), rstd = FloatBuffer(r)
        for (i, row) in rows.enumerated() { (sel.pointer + i * d).update(from: x.pointer + row * d, count: d) }
        weights.outputNorm.withUnsafeBufferPointer {
            Kernels.rmsnormForward(out: xn.pointer, x: sel.pointer, w: $0.baseAddress!, rows: r, width: d, eps: c.rmsEps,
                                   rstd: rstd.pointer)
        }
        if let tape { tape.finalInput = sel; tape.finalRstd = rstd; tape.finalNormed = xn }
        let head = weights.output ?? weights.tokenEmbedding
        guard let columns else {
            let out = FloatBuffer(r * c.vocabSize)
            head.withUnsafeBufferPointer {
                BLAS.sgemm(transB: true, m: r, n: c.vocabSize, k: d, a: xn.pointer, lda: d, b: $0.baseAddress!, ldb: d,
                           c: out.pointer, ldc: c.vocabSize)
            }
            return out
        }
        let picked = FloatBuffer(columns.count * d), out = FloatBuffer(r * columns.count)
        head.withUnsafeBufferPointer { e in
            for (j, col) in columns.enumerated() { (picked.pointer + j * d).update(from: e.baseAddress! + col * d, count: d) }
        }
        BLAS.sgemm(transB: true, m: r, n: columns.count, k: d, a: xn.pointer, lda: d, b: picked.pointer, ldb: d,
                   c: out.pointer, ldc: columns.count)
        return out
    }

    /// Output of `forward`.
    public struct Output {
        /// [R, V] logits at `rows`.
        public let logits: FloatBuffer
        /// The rows (of the packed batch) the logits belong to.
        public let rows: [Int]
        public let layout: BatchLayout
        /// Residual stream after the last layer run, [N, D]. When the full model ran with `.last` logits and no hooks,
        /// tape or cache, the last block is computed only at the last rows: only those rows hold the final residual
        /// (the others hold the last block's input).
        public let residual: FloatBuffer
        public var vocabSize: Int { logits.count / max(rows.count, 1) }

        /// Logits of the i-th selected row.
        public func row(_ i: Int) -> [Float] {
            Array(UnsafeBufferPointer(start: logits.pointer + i * vocabSize, count: vocabSize))
        }
    }

    /// Full forward pass of a batch of token sequences.
    /// - Parameters:
    ///   - logitRows: where to compute logits (default: last position of each sequence).
    ///   - cache: KV cache to read (for sequences starting past 0) and extend; `startPositions` come from it.
    ///   - upTo: run blocks 0..<upTo only (no logits); defaults to all layers.
    public func forward(_ batch: [[Int]], hooks: Hooks? = nil, logitRows: LogitRows = .last, cache: KVCache? = nil,
                        upTo: Int? = nil, tape: ForwardTape? = nil) throws -> Output {
        try validate(batch)
        if canSplit(batch, hooks: hooks, logitRows: logitRows, cache: cache, tape: tape) {
            return forwardDataParallel(batch, logitRows: logitRows, upTo: upTo)
        }
        return forwardValidated(batch, hooks: hooks, logitRows: logitRows, cache: cache, upTo: upTo, tape: tape)
    }

    /// `forward` of a validated batch; with `headless`, logits are not computed (their rows are still returned).
    /// With `.last` logits and no hooks, tape or cache, the last block runs at the last rows only, so `residual`
    /// is the final residual at those rows (other rows hold the last block's input).
    func forwardValidated(_ batch: [[Int]], hooks: Hooks?, logitRows: LogitRows, cache: KVCache?, upTo: Int?,
                          tape: ForwardTape?, headless: Bool = false) -> Output {
        let starts = (0..<batch.count).map { cache?.length($0) ?? 0 }
        let layout = BatchLayout(lengths: batch.map(\.count), startPositions: starts)
        let x = embed(batch)
        let stop = min(upTo ?? config.layers, config.layers)
        let trim = logitRows == .last && hooks == nil && tape == nil && cache == nil && stop == config.layers
        runLayers(x, layout: layout, layers: 0..<stop, hooks: hooks, cache: cache, tape: tape,
                  outputRows: trim ? layout.lastRows : nil)
        let rows = logitRows.indices(layout, ranAllLayers: stop == config.layers)
        let logits = rows.isEmpty || headless ? FloatBuffer(0) : logits(x, rows: rows, tape: tape)
        return Output(logits: logits, rows: rows, layout: layout, residual: x)
    }
}
