import Foundation
import Linalg

// Backward of causal grouped-query attention (shape key in LlamaBackward.swift).

extension LlamaModel {
    /// Backward of z = softmax(q kᵀ/√HD + causal mask) v for every sequence and head of the batch.
    ///
    /// Per sequence and query head h (kv head g = h / groupSize), with P [T, Tall] the saved probabilities:
    /// dP = dz vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)) / √HD, dq = dS k, dk = dSᵀ q, dv = Pᵀ dz; dk and dv sum
    /// over the heads of a group. Keys and values of prefix positions (before a sequence's start, read from a
    /// cache) are constants: their gradients are dropped.
    /// - Parameters:
    ///   - dq: [N, H·HD] out: ∂L/∂q (q after RoPE), overwritten.
    ///   - dk: [N, KVH·HD] out: ∂L/∂k of the batch's own rows (after RoPE), overwritten.
    ///   - dv: [N, KVH·HD] out: ∂L/∂v of the batch's own rows, overwritten.
    ///   - dz: [N, H·HD] ∂L/∂z.
    ///   - tape: q, keys, values, probs of this layer.
    ///   - scratch: provides `dp`, at least max over sequences of T·Tall floats.
    func attentionBackward(dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer, dz: FloatBuffer, layout: BatchLayout,
                           tape: LayerTape, scratch: BackwardScratch) {
        let c = config, hd = c.headDim, qw = c.heads * hd, kvw = c.kvHeads * hd
        let scale = 1 / Float(hd).squareRoot()
        precondition(tape.probs.count == layout.sequences && tape.keys.count == layout.sequences,
                     "the tape's attention values do not match the layout")
        dk.buffer.update(repeating: 0)
        dv.buffer.update(repeating: 0)
        let dP = scratch.dp.pointer
        for b in 0..<layout.sequences {
            let t = layout.lengths[b], p0 = layout.startPositions[b], off = layout.offsets[b], tAll = p0 + t
            guard t > 0 else { continue }
            precondition(tape.probs[b].count == c.heads * t * tAll && tape.keys[b].count == tAll * kvw,
                         "the tape's attention values of sequence \(b) do not match the layout")
            tape.keys[b].withUnsafeBufferPointer { kb in tape.values[b].withUnsafeBufferPointer { vb in
                tape.probs[b].withUnsafeBufferPointer { pb in
                    let kAll = kb.baseAddress!, vAll = vb.baseAddress!
                    for h in 0..<c.heads {
                        let g = h / c.groupSize
                        let p = pb.baseAddress! + h * t * tAll
                        let dzh = dz.pointer + off * qw + h * hd, qh = tape.q.pointer + off * qw + h * hd
                        // dP[T,Tall] = dz[T,HD] · v[Tall,HD]ᵀ
                        BLAS.sgemm(transB: true, m: t, n: tAll, k: hd, a: dzh, lda: qw, b: vAll + g * hd, ldb: kvw,
                                   c: dP, ldc: tAll)
                        // Softmax backward (masked entries have P = 0, so their dS is 0), times the score scale.
                        for i in 0..<t {
                            let pr = p + i * tAll, dr = dP + i * tAll, valid = p0 + i + 1
                            var dot: Float = 0
                            for j in 0..<valid { dot += pr[j] * dr[j] }
                            for j in 0..<valid { dr[j] = scale * pr[j] * (dr[j] - dot) }
                            for j in valid..<tAll { dr[j] = 0 }
                        }
                        // dq[T,HD] = dS[T,Tall] · k[Tall,HD]
                        BLAS.sgemm(m: t, n: hd, k: tAll, a: dP, lda: tAll, b: kAll + g * hd, ldb: kvw,
                                   c: dq.pointer + off * qw + h * hd, ldc: qw)
                        // Own rows only (columns p0..<Tall): dk[T,HD] += dS[:, p0...]ᵀ · q, dv[T,HD] += P[:, p0...]ᵀ · dz
                        BLAS.sgemm(transA: true, m: t, n: hd, k: t, a: dP + p0, lda: tAll, b: qh, ldb: qw,
                                   beta: 1, c: dk.pointer + off * kvw + g * hd, ldc: kvw)
                        BLAS.sgemm(transA: true, m: t, n: hd, k: t, a: p + p0, lda: tAll, b: dzh, ldb: qw,
                                   beta: 1, c: dv.pointer + off * kvw + g * hd, ldc: kvw)
                    }
                }
            } }
        }
    }
}
