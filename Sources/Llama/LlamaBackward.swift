import Foundation
import Linalg

// Hand-written backward pass (vector–Jacobian products) of the Llama blocks and output head, for input
// gradients only: every weight is frozen. ROME uses it to optimize a vector added to the residual stream.
//
// Shape key: N rows (packed positions of all sequences), T new positions of one sequence, Tall = prefix + T
// positions it attends to, R logit rows, D model width, H query heads, KVH key/value heads, HD head width,
// F MLP width, V vocabulary.
//
// Argument order follows llm.c: the gradient being produced (dinp) first, then the incoming gradient (dout),
// then the values saved by the forward pass (the `ForwardTape`).
//
// The backward is exact only for a forward without hooks, or with hooks that add constants (e.g. a fixed
// vector added at `hook_mlp_out`): hooks that read or overwrite activations are not differentiated.

/// Receives ∂L/∂(activation at `point`) as the backward pass goes by it: `gradient` is [N, width of the point's
/// kind], valid only during the call (copy what you keep). Reported points per layer l, in this order:
/// `hook_resid_post` and `hook_mlp_out` (the same buffer), `mlp.hook_post`, `hook_resid_mid` and `hook_attn_out`
/// (the same buffer), `attn.hook_z`, `attn.hook_v`, `attn.hook_q` and `attn.hook_k` (before RoPE, like the hooks),
/// `hook_resid_pre`. Gradients of keys/values of prefix positions (read from a cache) are not reported.
public typealias GradientObserver = (_ point: HookPoint, _ gradient: UnsafePointer<Float>) -> Void

extension LlamaModel {
    /// Backward of the final RMSNorm and output head at `rows`.
    ///
    /// dResidual[rows[i]] += ∂L/∂x(rows[i]) for each logit row i (repeated rows accumulate).
    /// - Parameters:
    ///   - dResidual: [N, D] gradient wrt the residual stream after the last block, accumulated into.
    ///   - dLogits: [R, V] ∂L/∂logits.
    ///   - rows: the R rows of the residual stream the logits were computed at (as passed to `logits`).
    ///   - tape: filled by `logits(_:rows:tape:)` with the same rows (finalInput, finalRstd).
    public func backwardLogits(dResidual: FloatBuffer, dLogits: FloatBuffer, rows: [Int], tape: ForwardTape) {
        let c = config, d = c.dModel, r = rows.count, vocab = c.vocabSize
        guard r > 0 else { return }
        precondition(dLogits.count == r * vocab, "dLogits has \(dLogits.count) values for \(r) rows × \(vocab)")
        precondition(tape.finalInput.count == r * d, "the tape's logit rows do not match `rows`")
        // logits = xn · Eᵀ  ⇒  dxn[R,D] = dLogits[R,V] · E[V,D]
        let dxn = FloatBuffer(r * d), dsel = FloatBuffer(r * d)
        (weights.output ?? weights.tokenEmbedding).withUnsafeBufferPointer {
            BLAS.sgemm(m: r, n: d, k: vocab, a: dLogits.pointer, lda: vocab, b: $0.baseAddress!, ldb: d,
                       c: dxn.pointer, ldc: d)
        }
        weights.outputNorm.withUnsafeBufferPointer {
            Kernels.rmsnormBackward(dinp: dsel.pointer, dw: nil, dout: dxn.pointer, x: tape.finalInput.pointer,
                                    w: $0.baseAddress!, rstd: tape.finalRstd.pointer, rows: r, width: d,
                                    accumulate: false)
        }
        for (i, row) in rows.enumerated() {
            let dst = dResidual.pointer + row * d, src = dsel.pointer + i * d
            for j in 0..<d { dst[j] += src[j] }
        }
    }

    /// Backward through blocks `layers` in reverse order, in place.
    ///
    /// On entry `dx` [N, D] holds ∂L/∂(resid_post of layers.last); on return ∂L/∂(resid_pre of layers.first).
    /// Because every block adds its MLP output to the residual, the gradient entering block l+1 is also
    /// ∂L/∂(hook_mlp_out of block l) and ∂L/∂(hook_resid_post of block l).
    /// - Parameters:
    ///   - layout: the batch layout of the forward pass.
    ///   - tape: filled by `runLayers(..., tape:)` for (at least) `layers`.
    ///   - observe: when given, receives the gradient at every hook point of `layers` (see `GradientObserver`).
    public func backwardLayers(_ dx: FloatBuffer, layout: BatchLayout, layers: Range<Int>, tape: ForwardTape,
                               observe: GradientObserver? = nil) {
        let n = layout.rows
        precondition(dx.count == n * config.dModel, "dx has \(dx.count) values for \(n) rows × \(config.dModel)")
        guard n > 0, !layers.isEmpty else { return }
        let scratch = BackwardScratch(config: config, layout: layout)
        rope.reserve(Int(scratch.positions.max() ?? 0) + 1)
        for l in layers.reversed() {
            guard let lt = tape.layers[l] else { preconditionFailure("the tape holds no values for layer \(l)") }
            if let observe {
                observe(HookPoint(l, .residPost), dx.pointer); observe(HookPoint(l, .mlpOut), dx.pointer)
            }
            mlpBackward(l, dx: dx, tape: lt, scratch: scratch, observe: observe)
            if let observe {
                observe(HookPoint(l, .residMid), dx.pointer); observe(HookPoint(l, .attnOut), dx.pointer)
            }
            attentionBlockBackward(l, dx: dx, dAttnOut: dx, layout: layout, tape: lt, scratch: scratch, observe: observe)
            observe?(HookPoint(l, .residPre), dx.pointer)
        }
    }

    /// Backward of one MLP sub-block with its residual connection, in place: `dx` goes from
    /// ∂L/∂(resid_post) to ∂L/∂(resid_mid) = dx + ∂(mlp_out)/∂(resid_mid)ᵀ dx.
    func mlpBackward(_ l: Int, dx: FloatBuffer, tape t: LayerTape, scratch s: BackwardScratch,
                     observe: GradientObserver? = nil) {
        let c = config, n = s.rows, d = c.dModel, f = c.ffnDim
        let w = weights.layers[l]
        // mlp_out = post · Wdownᵀ  ⇒  dpost[N,F] = dout[N,D] · Wdown[D,F]
        w.wDown.withUnsafeBufferPointer {
            BLAS.sgemm(m: n, n: f, k: d, a: dx.pointer, lda: d, b: $0.baseAddress!, ldb: f, c: s.dpost.pointer, ldc: f)
        }
        observe?(HookPoint(l, .mlpPost), s.dpost.pointer)
        Kernels.swigluBackward(dGateUp: s.dgu.pointer, dout: s.dpost.pointer, gateUp: t.gateUp.pointer, rows: n, width: f)
        // gu = xn2 · Wgateupᵀ  ⇒  dxn2[N,D] = dgu[N,2F] · Wgateup[2F,D]
        w.wGateUp.withUnsafeBufferPointer {
            BLAS.sgemm(m: n, n: d, k: 2 * f, a: s.dgu.pointer, lda: 2 * f, b: $0.baseAddress!, ldb: d,
                       c: s.dxn.pointer, ldc: d)
        }
        // Residual path: dx already holds the identity term; the norm adds its part.
        w.ffnNorm.withUnsafeBufferPointer {
            Kernels.rmsnormBackward(dinp: dx.pointer, dw: nil, dout: s.dxn.pointer, x: t.mid.pointer, w: $0.baseAddress!,
                                    rstd: t.rstd2.pointer, rows: n, width: d, accumulate: true)
        }
    }

    /// Backward of one attention sub-block: dx[N,D] += ∂(attn_out)/∂(resid_pre)ᵀ · dAttnOut.
    ///
    /// With `dAttnOut` the same buffer as `dx` this is the block's residual connection (dx goes from
    /// ∂L/∂(resid_mid) to ∂L/∂(resid_pre)); with a separate zeroed `dx` it isolates the attention branch.
    func attentionBlockBackward(_ l: Int, dx: FloatBuffer, dAttnOut: FloatBuffer, layout: BatchLayout, tape t: LayerTape,
                                scratch s: BackwardScratch, observe: GradientObserver? = nil) {
        let c = config, n = s.rows, d = c.dModel, qw = c.heads * c.headDim, kvw = c.kvHeads * c.headDim
        let w = weights.layers[l]
        // attn_out = z · Woᵀ  ⇒  dz[N,H·HD] = dAttnOut[N,D] · Wo[D,H·HD]
        w.wo.withUnsafeBufferPointer {
            BLAS.sgemm(m: n, n: qw, k: d, a: dAttnOut.pointer, lda: d, b: $0.baseAddress!, ldb: qw, c: s.dz.pointer, ldc: qw)
        }
        observe?(HookPoint(l, .attnZ), s.dz.pointer)
        attentionBackward(dq: s.dq, dk: s.dk, dv: s.dv, dz: s.dz, layout: layout, tape: t, scratch: s)
        observe?(HookPoint(l, .attnV), s.dv.pointer)
        // q, k were rotated after the projection: the transpose of a rotation is the inverse rotation.
        s.positions.withUnsafeBufferPointer { pos in
            Kernels.rope(s.dq.pointer, rows: n, heads: c.heads, headDim: c.headDim, positions: pos.baseAddress!,
                         table: rope, inverse: true)
            Kernels.rope(s.dk.pointer, rows: n, heads: c.kvHeads, headDim: c.headDim, positions: pos.baseAddress!,
                         table: rope, inverse: true)
        }
        if let observe { observe(HookPoint(l, .attnQ), s.dq.pointer); observe(HookPoint(l, .attnK), s.dk.pointer) }
        // [q|k|v] = xn1 · Wqkvᵀ  ⇒  dxn1[N,D] = dq · Wq + dk · Wk + dv · Wv (row blocks of Wqkv)
        w.wqkv.withUnsafeBufferPointer {
            let wq = $0.baseAddress!, wk = wq + qw * d, wv = wk + kvw * d
            BLAS.sgemm(m: n, n: d, k: qw, a: s.dq.pointer, lda: qw, b: wq, ldb: d, c: s.dxn.pointer, ldc: d)
            BLAS.sgemm(m: n, n: d, k: kvw, a: s.dk.pointer, lda: kvw, b: wk, ldb: d, beta: 1, c: s.dxn.pointer, ldc: d)
            BLAS.sgemm(m: n, n: d, k: kvw, a: s.dv.pointer, lda: kvw, b: wv, ldb: d, beta: 1, c: s.dxn.pointer, ldc: d)
        }
        w.attnNorm.withUnsafeBufferPointer {
            Kernels.rmsnormBackward(dinp: dx.pointer, dw: nil, dout: s.dxn.pointer, x: t.input.pointer, w: $0.baseAddress!,
                                    rstd: t.rstd1.pointer, rows: n, width: d, accumulate: true)
        }
    }
}

/// Scratch buffers of the backward pass, sized for one batch layout and reused by every layer.
final class BackwardScratch {
    let rows: Int
    let positions: [Int32]
    let dxn: FloatBuffer    // [N, D]
    let dpost: FloatBuffer  // [N, F]
    let dgu: FloatBuffer    // [N, 2F]
    let dz: FloatBuffer     // [N, H·HD]
    let dq: FloatBuffer     // [N, H·HD]
    let dk: FloatBuffer     // [N, KVH·HD]
    let dv: FloatBuffer     // [N, KVH·HD]
    let dp: FloatBuffer     // [max T · Tall] scores gradient of one head of one sequence

    init(config c: LlamaConfig, layout: BatchLayout) {
        let n = layout.rows, qw = c.heads * c.headDim, kvw = c.kvHeads * c.headDim
        rows = n
        positions = layout.positions
        dxn = FloatBuffer(n * c.dModel)
        dpost = FloatBuffer(n * c.ffnDim)
        dgu = FloatBuffer(n * 2 * c.ffnDim)
        dz = FloatBuffer(n * qw)
        dq = FloatBuffer(n * qw)
        dk = FloatBuffer(n * kvw)
        dv = FloatBuffer(n * kvw)
        var most = 0
        for (t, p0) in zip(layout.lengths, layout.startPositions) { most = max(most, t * (p0 + t)) }
        dp = FloatBuffer(most)
    }
}
