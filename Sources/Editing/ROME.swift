import Foundation
import Interp
import Linalg
import Llama

// ROME (Meng et al. 2022): rewrite one fact by a rank-one update of an MLP's output matrix W = W_down of layer l.
// Shape key: D model width, F MLP width (keys k ∈ R^F, values v ∈ R^D), N packed rows, V vocabulary.

/// ROME's hyper-parameters (defaults as in the original code for GPT-J-sized models).
public struct ROMEHyperParameters: Codable, Equatable, Sendable {
    public var layer: Int
    /// Adam steps and learning rate for δ.
    public var steps = 20
    public var learningRate: Float = 0.5
    /// Weight of KL(original ‖ edited) on "{subject} is a" at the subject's last token.
    public var klFactor: Float = 0.0625
    /// Weight of ‖δ‖ / ‖m₀‖² in the loss.
    public var weightDecay: Float = 0.5
    /// δ is clamped to ‖δ‖ ≤ factor · ‖m₀‖ (m₀: the MLP output at the subject in the bare prompt).
    public var clampNormFactor: Float = 4
    /// Stop early once the loss is below this.
    public var earlyStopLoss: Float = 0.05
    /// Use the same averaged k* in the residual and the denominator (r-ROME); false reproduces the original
    /// ROME, which puts the bare prompt's key in the denominator and W·k(bare) in the residual.
    public var consistentKey = true
    public var klPrompt = "{} is a"
    /// Share of the v* loss given to the bare prompt (the request's own prompt); the prompts with sampled contexts
    /// share the rest equally. nil weights every prompt equally, as the original ROME does (1/21 each with 20
    /// contexts). Scalpel's default, 0.5, keeps the request itself from being outvoted by the contexts (see
    /// docs/rome.md: on CounterFact it is what lifts PS from 94 to 98).
    public var barePromptShare: Float? = 0.5

    public init(layer: Int) { self.layer = layer }

    enum CodingKeys: String, CodingKey {
        case layer, steps, learningRate, klFactor, weightDecay, clampNormFactor, earlyStopLoss, consistentKey, klPrompt,
             barePromptShare
    }

    public init(from decoder: Decoder) throws {
        let k = try decoder.container(keyedBy: CodingKeys.self)
        layer = try k.decode(Int.self, forKey: .layer)
        steps = try k.decode(Int.self, forKey: .steps)
        learningRate = try k.decode(Float.self, forKey: .learningRate)
        klFactor = try k.decode(Float.self, forKey: .klFactor)
        weightDecay = try k.decode(Float.self, forKey: .weightDecay)
        clampNormFactor = try k.decode(Float.self, forKey: .clampNormFactor)
        earlyStopLoss = try k.decode(Float.self, forKey: .earlyStopLoss)
        consistentKey = try k.decode(Bool.self, forKey: .consistentKey)
        klPrompt = try k.decode(String.self, forKey: .klPrompt)
        // Absent in logs written before the field existed, whose edits weighted every prompt equally.
        barePromptShare = try k.decodeIfPresent(Float.self, forKey: .barePromptShare)
    }

    /// Whether `share` is a usable `barePromptShare`: in (0, 1].
    public static func isValidBarePromptShare(_ share: Float) -> Bool { share > 0 && share <= 1 }

    /// Weight of each rewriting prompt's mean target NLL in the v* loss (prompt 0 is the bare one); they sum to 1.
    public func promptWeights(count n: Int) -> [Float] {
        guard let share = barePromptShare, n > 1 else { return [Float](repeating: 1 / Float(n), count: n) }
        return [share] + [Float](repeating: (1 - share) / Float(n - 1), count: n - 1)
    }
}

/// What one ROME edit computed.
public struct ROMEResult: Sendable {
    public var layer: Int
    /// k*: the averaged MLP key at the subject's last token [F].
    public var key: [Float]
    /// v*: the MLP output that makes the model say the new target [D].
    public var value: [Float]
    /// Rank-one factors: ΔW = lambda ⊗ u, u = C⁻¹k* [F], lambda = (v* − W k*) / (uᵀk*) [D], so ΔW k* = v* − W k*
    /// (with the original ROME's mismatch, k(bare prompt) replaces k* in lambda; see `ROME.rankOneFactors`).
    public var lambda: [Float]
    public var u: [Float]
    /// Loss after each Adam step.
    public var losses: [Float]
    public var seconds: Double
    /// Norm of δ = v* − m₀, and of m₀.
    public var deltaNorm: Float
    public var initialNorm: Float
}

/// Computes and applies ROME edits on a model.
public final class ROME {
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    public var contexts: ContextTemplates

    public init(model: LlamaModel, tokenizer: Tokenizer, contexts: ContextTemplates) {
        self.model = model; self.tokenizer = tokenizer; self.contexts = contexts
    }

    /// Token ids of a target as it follows a prompt (with a leading space, as in ROME).
    public func targetIDs(_ target: String) -> [Int] {
        EditRequest.targetTokens(target, tokenizer: tokenizer)
    }

    /// Tokens of `template` (containing `{}`) with `subject` in place, and the index of the subject's last token: the
    /// token holding the subject's last non-space byte (a leading-space token such as " Tower" counts; a BOS token the
    /// tokenizer adds holds no text).
    public func tokensWithSubject(_ template: String, subject: String) throws -> (ids: [Int], last: Int) {
        guard let r = template.range(of: "{}") else {
            throw EditingError.badRequest(subject: subject, reason: "template \"\(template)\" has no {}")
        }
        let core = subject.replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        guard !core.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw EditingError.badRequest(subject: subject, reason: "the subject is empty")
        }
        let text = template.replacingCharacters(in: r, with: subject)
        let ids = tokenizer.encode(text)
        let endByte = template[..<r.lowerBound].utf8.count + core.utf8.count
        var offset = 0
        for (i, id) in ids.enumerated() {
            offset += tokenizer.decodeBytes([id], skipSpecial: true).count
            if offset >= endByte { return (ids, i) }
        }
        throw EditingError.badRequest(subject: subject, reason: "subject not found in \"\(text)\"")
    }

    /// Runs the whole edit: k*, v*, the rank-one update. Does not modify the model.
    /// - Parameters:
    ///   - secondMoment: C = E[k kᵀ] at the layer, [F, F] row-major (float64).
    ///   - progress: called after each optimization step with (step, loss).
    public func compute(_ request: EditRequest, hparams h: ROMEHyperParameters, secondMoment: [Double],
                        progress: ((Int, Float) -> Void)? = nil) throws -> ROMEResult {
        try request.validate(tokenizer: tokenizer)
        let c = model.config, l = h.layer, d = c.dModel, f = c.ffnDim
        try EditRequest.requireLayer(l, layers: c.layers)
        guard secondMoment.count == f * f else {
            throw EditingError.statisticsMismatch(field: "dimension", expected: "\(f)×\(f)", found: "\(secondMoment.count) values",
                                                  source: "given to ROME")
        }
        let t0 = Date()
        let target = targetIDs(request.targetNew)  // 1…64 tokens (validate(tokenizer:))
        guard h.steps >= 1 else { throw EditingError.invalidArgument(name: "steps", reason: "must be at least 1, got \(h.steps)") }
        if let share = h.barePromptShare, !ROMEHyperParameters.isValidBarePromptShare(share) {
            throw EditingError.invalidArgument(name: "bare prompt share", reason: "must be in (0, 1], got \(share)")
        }

        // Prompts: each context around the prompt, followed by the target minus its last token; then the KL prompt.
        var seqs: [[Int]] = [], subjectLast: [Int] = [], promptLength: [Int] = []
        for ctx in contexts.templates {
            let template = ctx.replacingOccurrences(of: "{}", with: request.prompt)
            let (ids, last) = try tokensWithSubject(template, subject: request.subject)
            seqs.append(ids + target.dropLast()); subjectLast.append(last); promptLength.append(ids.count)
        }
        let nRewrite = seqs.count
        let (klIDs, klLast) = try tokensWithSubject(h.klPrompt, subject: request.subject)
        seqs.append(klIDs); subjectLast.append(klLast)

        // One full pass: keys and MLP outputs at layer l, the residual entering l+1, and every layer's K/V.
        let cache = KVCache(config: c, sequences: seqs.count)
        var hooks = Hooks()
        var keys: [Float] = [], mlpOut: [Float] = [], residual: [Float] = []
        hooks.add(HookPoint(l, .mlpPost)) { keys = Array($0.buffer) }
        hooks.add(HookPoint(l, .mlpOut)) { mlpOut = Array($0.buffer) }
        hooks.add(HookPoint(l, .residPost)) { residual = Array($0.buffer) }
        let full = try model.forward(seqs, hooks: hooks, logitRows: .none, cache: cache)
        let fullLayout = full.layout

        // k*: mean key at the subject's last token over the rewriting prompts.
        var kStar = [Float](repeating: 0, count: f)
        for i in 0..<nRewrite {
            let r = fullLayout.row(seq: i, pos: subjectLast[i])
            for j in 0..<f { kStar[j] += keys[r * f + j] / Float(nRewrite) }
        }
        let bareRow = fullLayout.row(seq: 0, pos: subjectLast[0])
        let kBare = Array(keys[(bareRow * f)..<((bareRow + 1) * f)])
        let m0 = Array(mlpOut[(bareRow * d)..<((bareRow + 1) * d)])
        let m0Norm = norm(m0)

        // Optimization batch: every sequence from its subject's last token on (earlier positions do not depend on δ).
        let layout = BatchLayout(lengths: seqs.enumerated().map { $1.count - subjectLast[$0] }, startPositions: subjectLast)
        let base = FloatBuffer(layout.rows * d)
        for i in 0..<seqs.count {
            let from = fullLayout.row(seq: i, pos: subjectLast[i])
            residual.withUnsafeBufferPointer {
                (base.pointer + layout.offsets[i] * d).update(from: $0.baseAddress! + from * d, count: layout.lengths[i] * d)
            }
        }
        // Loss rows: predictions of each target token, then the KL prompt's subject row.
        var rows: [Int] = [], targets: [Int] = [], weights: [Float] = []
        let promptWeights = h.promptWeights(count: nRewrite)
        for i in 0..<nRewrite {
            for (j, t) in target.enumerated() {
                rows.append(layout.row(seq: i, pos: promptLength[i] - 1 + j)); targets.append(t)
                weights.append(promptWeights[i] / Float(target.count))
            }
        }
        let klRow = layout.row(seq: nRewrite, pos: klLast)
        rows.append(klRow)
        let nTargetRows = targets.count

        var delta = [Float](repeating: 0, count: d)
        var adam = Adam(count: d, learningRate: h.learningRate)
        var klReference: [Float]? = nil
        var losses: [Float] = []
        let vocab = c.vocabSize
        for step in 0..<max(h.steps, 1) {
            let x = FloatBuffer(base.count)
            x.pointer.update(from: base.pointer, count: base.count)
            for off in layout.offsets { for j in 0..<d { x.pointer[off * d + j] += delta[j] } }
            let (lossValue, grad) = model.residualGradient(residual: x, layout: layout, startLayer: l + 1, rows: rows,
                                                            prefix: cache) { dLogits, logits in
                let tl = FloatBuffer(nTargetRows * vocab), tg = FloatBuffer(nTargetRows * vocab)
                tl.pointer.update(from: logits.pointer, count: nTargetRows * vocab)
                let nll = LogitMath.crossEntropy(dLogits: tg, logits: tl, targets: targets, weights: weights)
                dLogits.pointer.update(from: tg.pointer, count: nTargetRows * vocab)
                let kl = FloatBuffer(vocab), kg = FloatBuffer(vocab)
                kl.pointer.update(from: logits.pointer + nTargetRows * vocab, count: vocab)
                if klReference == nil { klReference = LogitMath.logSoftmax(kl, rows: 1) }
                let klValue = LogitMath.klDivergence(dLogits: kg, logits: kl, referenceLogProbs: klReference!, rows: 1,
                                                     weights: [h.klFactor])
                (dLogits.pointer + nTargetRows * vocab).update(from: kg.pointer, count: vocab)
                return nll + klValue
            }
            let dn = norm(delta)
            let wd = h.weightDecay * dn / (m0Norm * m0Norm)
            let loss = lossValue + wd
            losses.append(loss)
            progress?(step, loss)
            if loss < h.earlyStopLoss { break }
            if step == h.steps - 1 { break }
            var g = [Float](repeating: 0, count: d)
            for off in layout.offsets { for j in 0..<d { g[j] += grad.pointer[off * d + j] } }
            if dn > 0 { for j in 0..<d { g[j] += h.weightDecay * delta[j] / dn / (m0Norm * m0Norm) } }
            adam.step(&delta, gradient: g)
            let maxNorm = h.clampNormFactor * m0Norm
            let nn = norm(delta)
            if nn > maxNorm { for j in 0..<d { delta[j] *= maxNorm / nn } }
        }
        let vStar = zip(m0, delta).map { $0 + $1 }

        let w = model.weights.values(.wDown(l))
        let (lambda, u) = try Self.rankOneFactors(weight: w, secondMoment: secondMoment, key: kStar, value: vStar,
                                                  bareKey: h.consistentKey ? nil : kBare)
        return ROMEResult(layer: l, key: kStar, value: vStar, lambda: lambda, u: u, losses: losses,
                          seconds: Date().timeIntervalSince(t0), deltaNorm: norm(delta), initialNorm: m0Norm)
    }

    /// The closed-form update of W [D, F] (row-major) that makes it return `value` v* [D] for `key` k* [F]:
    /// u = C⁻¹k* by a Cholesky solve (never an explicit inverse), Λ = (v* − W k) / (uᵀ k), ΔW = Λ uᵀ, where k = k*
    /// (r-ROME: then Ŵ k* = v*, and Ŵ is the W' closest to W under C with that constraint), or, with `bareKey`, the
    /// original ROME's mismatch k = k(bare prompt) in both the residual and the denominator (then Ŵ k(bare) = v*).
    /// Sums in float64. Throws when C is not positive definite or uᵀk is zero.
    public static func rankOneFactors(weight w: [Float], secondMoment: [Double], key kStar: [Float], value vStar: [Float],
                                      bareKey: [Float]? = nil) throws -> (lambda: [Float], u: [Float]) {
        let f = kStar.count, d = vStar.count
        guard w.count == d * f, secondMoment.count == f * f, bareKey.map({ $0.count == f }) ?? true else {
            throw EditingError.invalidArgument(name: "rank-one update",
                                               reason: "W has \(w.count) values, C \(secondMoment.count), k* \(f), v* \(d), "
                                                   + "bare key \(bareKey?.count ?? f): expected W [\(d), \(f)], C [\(f), \(f)]")
        }
        let k = bareKey ?? kStar
        let cInvK = try LAPACK.choleskySolve(secondMoment, kStar.map(Double.init), n: f)
        let denom = zip(cInvK, k).reduce(0.0) { $0 + $1.0 * Double($1.1) }
        guard denom.isFinite, denom != 0 else {
            throw EditingError.invalidArgument(name: "key", reason: "(C⁻¹k*)ᵀk = \(denom): the key is zero or not finite")
        }
        let lambda = (0..<d).map { i -> Float in
            let wk = (0..<f).reduce(0.0) { $0 + Double(w[i * f + $1]) * Double(k[$1]) }
            return Float((Double(vStar[i]) - wk) / denom)
        }
        return (lambda, cInvK.map(Float.init))
    }

    /// W_down(l) += lambda ⊗ u, with the same arithmetic the edit log replays (`EditLogReader.applyRankOne`), so an
    /// edit applied here and an edit materialized from a store are bitwise equal.
    public static func apply(_ r: ROMEResult, to model: LlamaModel) {
        model.weights.withParameter(.wDown(r.layer)) { EditLogReader.applyRankOne(lambda: r.lambda, u: r.u, to: $0) }
    }

    func norm(_ x: [Float]) -> Float { x.reduce(0) { $0 + $1 * $1 }.squareRoot() }
}

/// Adam (Kingma & Ba) on a flat parameter vector.
struct Adam {
    var m: [Float], v: [Float], t = 0
    let lr: Float, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8
    init(count: Int, learningRate: Float) { m = .init(repeating: 0, count: count); v = m; lr = learningRate }
    mutating func step(_ x: inout [Float], gradient g: [Float]) {
        t += 1
        let c1 = 1 - pow(beta1, Float(t)), c2 = 1 - pow(beta2, Float(t))
        for i in 0..<x.count {
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
            x[i] -= lr * (m[i] / c1) / ((v[i] / c2).squareRoot() + eps)
        }
    }
}
