import Foundation

// Losses of logit rows with their gradients, and the forward + backward composition used for editing
// (shape key in LlamaBackward.swift).

extension LogitMath {
    /// Weighted negative log-likelihood Σᵢ wᵢ · (−log softmax(logits[i])[targets[i]]) over R rows.
    /// - Parameters:
    ///   - dLogits: [R, V] when given, overwritten with wᵢ · (softmax(logits[i]) − onehot(targets[i])).
    ///   - logits: [R, V].
    ///   - targets: R token ids.
    ///   - weights: R row weights (default 1).
    public static func crossEntropy(dLogits: FloatBuffer?, logits: FloatBuffer, targets: [Int],
                                    weights: [Float]? = nil) -> Float {
        let r = targets.count
        guard r > 0 else { return 0 }
        let vocab = logits.count / r
        checkShapes(logits: logits, rows: r, dLogits: dLogits, weights: weights)
        var total: Double = 0
        for i in 0..<r {
            let x = logits.pointer + i * vocab, w = weights?[i] ?? 1
            precondition(targets[i] >= 0 && targets[i] < vocab, "target \(targets[i]) outside 0..<\(vocab)")
            let lse = Kernels.logSumExp(x, count: vocab)
            total += Double(w) * Double(lse - x[targets[i]])
            if let dLogits {
                let g = dLogits.pointer + i * vocab
                for j in 0..<vocab { g[j] = w * expf(x[j] - lse) }
                g[targets[i]] -= w
            }
        }
        return Float(total)
    }

    /// Log-softmax of each of the R rows of `logits` [R, V]: [R, V].
    public static func logSoftmax(_ logits: FloatBuffer, rows r: Int) -> [Float] {
        guard r > 0 else { return [] }
        let vocab = logits.count / r
        var out = uninitializedFloats(logits.count)
        for i in 0..<r {
            let x = logits.pointer + i * vocab
            let lse = Kernels.logSumExp(x, count: vocab)
            for j in 0..<vocab { out[i * vocab + j] = x[j] - lse }
        }
        return out
    }

    /// Weighted Kullback–Leibler divergence Σᵢ wᵢ · KL(pᵢ ‖ softmax(logits[i])) over R rows, from reference
    /// distributions pᵢ given as log-probabilities (e.g. `logSoftmax` of the unedited model's logits).
    /// - Parameters:
    ///   - dLogits: [R, V] when given, overwritten with wᵢ · (softmax(logits[i]) − pᵢ).
    ///   - logits: [R, V].
    ///   - referenceLogProbs: [R, V] log pᵢ.
    ///   - weights: R row weights (default 1).
    public static func klDivergence(dLogits: FloatBuffer?, logits: FloatBuffer, referenceLogProbs: [Float],
                                    rows r: Int, weights: [Float]? = nil) -> Float {
        guard r > 0 else { return 0 }
        let vocab = logits.count / r
        checkShapes(logits: logits, rows: r, dLogits: dLogits, weights: weights)
        precondition(referenceLogProbs.count == logits.count, "referenceLogProbs must be [R, V] like logits")
        var total: Double = 0
        referenceLogProbs.withUnsafeBufferPointer { refAll in
            for i in 0..<r {
                let x = logits.pointer + i * vocab, ref = refAll.baseAddress! + i * vocab, w = weights?[i] ?? 1
                let lse = Kernels.logSumExp(x, count: vocab)
                var kl: Double = 0
                for j in 0..<vocab {
                    let p = expf(ref[j])
                    if p > 0 { kl += Double(p) * Double(ref[j] - (x[j] - lse)) }
                }
                total += Double(w) * kl
                if let dLogits {
                    let g = dLogits.pointer + i * vocab
                    for j in 0..<vocab { g[j] = w * (expf(x[j] - lse) - expf(ref[j])) }
                }
            }
        }
        return Float(total)
    }

    private static func checkShapes(logits: FloatBuffer, rows r: Int, dLogits: FloatBuffer?, weights: [Float]?) {
        precondition(logits.count % r == 0, "\(logits.count) logits do not split into \(r) rows")
        precondition(dLogits == nil || dLogits!.count == logits.count, "dLogits must be [R, V] like logits")
        precondition(weights == nil || weights!.count == r, "one weight per row")
    }
}

extension LlamaModel {
    /// Value and gradient of a scalar loss of logits, wrt the residual stream entering block `startLayer`.
    ///
    /// Runs blocks startLayer..<L on a copy of `residual` (saving a tape), the output head at `rows`, calls
    /// `loss(dLogits, logits)`, which returns the loss and writes ∂loss/∂logits [R, V] into dLogits (e.g. with
    /// `LogitMath.crossEntropy`), then runs the backward. Since each block adds its MLP output to the residual,
    /// row r of the gradient is also ∂loss/∂(hook_mlp_out of block startLayer − 1) at row r.
    /// - Parameters:
    ///   - residual: [N, D] resid_pre of block `startLayer` (not modified).
    ///   - prefix: keys/values of positions before each sequence's start (constants), as for `runLayers`.
    /// - Returns: the loss and ∂loss/∂residual [N, D].
    public func residualGradient(residual: FloatBuffer, layout: BatchLayout, startLayer: Int, rows: [Int],
                                 prefix: KVCache? = nil,
                                 loss: (_ dLogits: FloatBuffer, _ logits: FloatBuffer) -> Float) -> (loss: Float, gradient: FloatBuffer) {
        let c = config, n = layout.rows
        precondition(residual.count == n * c.dModel && (0...c.layers).contains(startLayer))
        let x = FloatBuffer(residual.count)
        x.pointer.update(from: residual.pointer, count: residual.count)
        let tape = ForwardTape()
        runLayers(x, layout: layout, layers: startLayer..<c.layers, prefix: prefix, tape: tape)
        let logits = logits(x, rows: rows, tape: tape)
        let dLogits = FloatBuffer(logits.count, zeroed: true)
        let value = loss(dLogits, logits)
        let dx = FloatBuffer(n * c.dModel, zeroed: true)
        backwardLogits(dResidual: dx, dLogits: dLogits, rows: rows, tape: tape)
        backwardLayers(dx, layout: layout, layers: startLayer..<c.layers, tape: tape)
        return (value, dx)
    }
}
