import Foundation
import Linalg
import Llama

// Subject forensics for low-rank edits of an MLP down projection W = W_down(l) [D, F]: a ROME edit ΔW = λ uᵀ only
// acts on keys k ∈ R^F with uᵀk ≠ 0, so the subjects it rewrites are those whose key moves the MLP output most,
// relative to what the MLP wrote before: ‖ΔW k‖ / ‖W k‖. Candidates are scored by that ratio on their mean key at the
// last subject token, and the best are probed under A and B.
// Shape key: S subjects, D model width, F MLP width, V vocabulary.

/// One candidate subject's response to an edit.
public struct SubjectScore: Sendable, Equatable {
    public var subject: String
    /// ‖ΔW k‖ / ‖W k‖ (W: A's matrix, k: the subject's mean key at its last token).
    public var relativeChange: Double
    /// ‖ΔW k‖.
    public var changeNorm: Double
    /// ‖W k‖.
    public var outputNorm: Double
    /// ‖Vᵀ k‖ / ‖k‖: cosine between k and the edit's key space (the right singular vectors of ΔW).
    public var alignment: Double
}

/// A token and its probability.
public struct TokenProbability: Sendable, Equatable {
    public var id: Int
    public var text: String
    public var probability: Double
}

/// What A and B say after one prompt about a subject.
public struct BehaviourProbe: Sendable {
    public var subject: String
    public var prompt: String
    /// Most likely next tokens under A and under B.
    public var topA: [TokenProbability]
    public var topB: [TokenProbability]
    /// B's probability of A's top token, and A's probability of B's top token.
    public var probabilityBOfTopA: Double
    public var probabilityAOfTopB: Double
    /// Greedy continuations.
    public var continuationA: String
    public var continuationB: String

    /// Whether the top token or the greedy continuation differs.
    public var changed: Bool { topA.first?.id != topB.first?.id || continuationA != continuationB }
}

/// Forensics of one low-rank edit of a down projection.
public struct EditForensics: Sendable {
    public var parameter: LlamaParameter
    public var layer: Int
    public var rank: Int
    /// Candidates that could be scored (at least one template tokenized).
    public var candidatesScored: Int
    /// The best-scoring candidates, best first.
    public var top: [SubjectScore]
    /// A and B on the leading candidates.
    public var probes: [BehaviourProbe]
}

/// Settings of `SubjectForensics`.
public struct ForensicsOptions: Sendable {
    /// Contexts whose keys are averaged at the subject's last token. Only the text before the subject matters (the
    /// model is causal), so they differ in what precedes it.
    public var keyTemplates = ["{}", "The {}", "I saw {}", "Tell me about {}"]
    /// Candidates reported per edit.
    public var top = 10
    /// Leading candidates probed under A and B, per edit.
    public var probedSubjects = 3
    /// Generic relation prompts for the probes.
    public var probeTemplates = ["{} is located in", "{} is a", "The {} is"]
    /// Next tokens shown per probe.
    public var topTokens = 5
    /// Tokens of greedy continuation per probe (0: none).
    public var continuationTokens = 6
    /// Rows (tokens) per batched forward when computing keys.
    public var rowsPerBatch = 2048

    public init() {}
}

/// Mean keys of many subjects at some layers.
public struct SubjectKeys {
    /// Subjects with at least one usable template, in the order given.
    public var subjects: [String]
    /// Per layer: [S, F] row-major mean keys (`mlp.hook_post` at the subject's last token).
    public var keys: [Int: [Float]]
    public var width: Int
}

public enum SubjectForensics {
    /// Scores `candidates` against every low-rank edit of a down projection in `report`, and probes the leading ones
    /// under A and B. Keys are computed in A (the model the edits were made to).
    /// - Parameter progress: (stage, done, total) with stage "keys" or "probe".
    public static func analyze(_ report: DiffReport, a: ModelFile, b: ModelFile, candidates: [String],
                               options: ForensicsOptions = ForensicsOptions(),
                               progress: ((String, Int, Int) -> Void)? = nil) throws -> [EditForensics] {
        let edits = downProjectionEdits(report)
        guard !edits.isEmpty, !candidates.isEmpty else { return [] }
        let layers = Set(edits.compactMap(\.layer))
        let keys = try meanKeys(model: a.model, tokenizer: a.tokenizer, subjects: candidates, layers: layers,
                                templates: options.keyTemplates, rowsPerBatch: options.rowsPerBatch) {
            progress?("keys", $0, $1)
        }
        var out: [EditForensics] = []
        for e in edits {
            let scores = score(keys, edit: e, weights: a.model.weights)
            out.append(EditForensics(parameter: e.parameter, layer: e.layer!, rank: e.spectrum!.rank,
                                     candidatesScored: scores.count, top: Array(scores.prefix(options.top)), probes: []))
        }
        // Probe every leading subject once (several edits may point at the same one).
        var probeSubjects: [String] = []
        for f in out { for s in f.top.prefix(options.probedSubjects) where !probeSubjects.contains(s.subject) {
            probeSubjects.append(s.subject)
        } }
        if !probeSubjects.isEmpty && !options.probeTemplates.isEmpty {
            let probes = try probe(a: a.model, b: b.model, tokenizer: a.tokenizer, subjects: probeSubjects, options: options) {
                progress?("probe", $0, $1)
            }
            for i in out.indices {
                let mine = Set(out[i].top.prefix(options.probedSubjects).map(\.subject))
                out[i].probes = probes.filter { mine.contains($0.subject) }
            }
        }
        return out
    }

    /// The low-rank edits of down projections in `report` (the ones with key-space singular vectors).
    public static func downProjectionEdits(_ report: DiffReport) -> [ParameterDiff] {
        report.lowRank.filter { d in
            if case .wDown = d.parameter { return d.spectrum?.hasVectors == true }
            return false
        }
    }

    /// All candidates scored against one edit (a low-rank `ParameterDiff` of `.wDown(l)`), best first.
    public static func score(_ keys: SubjectKeys, edit: ParameterDiff, weights: LlamaWeights) -> [SubjectScore] {
        guard let l = edit.layer, let spectrum = edit.spectrum, spectrum.hasVectors, let k = keys.keys[l] else { return [] }
        let c = weights.config, d = c.dModel, f = c.ffnDim, s = keys.subjects.count
        precondition(keys.width == f, "keys of width \(keys.width) for F = \(f)")
        guard s > 0 else { return [] }
        // W k for every subject at once: [S, F] · Wᵀ → [S, D].
        var wk = [Float](repeating: 0, count: s * d)
        weights.withParameter(edit.parameter) { w in
            k.withUnsafeBufferPointer { kp in
                wk.withUnsafeMutableBufferPointer { out in
                    BLAS.sgemm(transB: true, m: s, n: d, k: f, a: kp.baseAddress!, lda: f, b: UnsafePointer(w.baseAddress!),
                               ldb: f, c: out.baseAddress!, ldc: d)
                }
            }
        }
        var scores: [SubjectScore] = []
        k.withUnsafeBufferPointer { kp in
            for i in 0..<s {
                let row = kp.baseAddress! + i * f
                let change = spectrum.applyNorm(row)
                var kn = 0.0, on = 0.0
                for j in 0..<f { kn += Double(row[j]) * Double(row[j]) }
                for j in 0..<d { on += Double(wk[i * d + j]) * Double(wk[i * d + j]) }
                kn = kn.squareRoot(); on = on.squareRoot()
                scores.append(SubjectScore(subject: keys.subjects[i], relativeChange: on > 0 ? change / on : .infinity,
                                           changeNorm: change, outputNorm: on,
                                           alignment: kn > 0 ? spectrum.projectionNorm(row) / kn : 0))
            }
        }
        return scores.sorted { $0.relativeChange > $1.relativeChange }
    }

    /// Mean key (`mlp.hook_post`) at each subject's last token over `templates`, at every layer in `layers`, from
    /// batched forward passes that stop after the deepest layer and end each sequence at the subject.
    public static func meanKeys(model: LlamaModel, tokenizer: Tokenizer, subjects: [String], layers: Set<Int>,
                                templates: [String] = ForensicsOptions().keyTemplates, rowsPerBatch: Int = 2048,
                                progress: ((Int, Int) -> Void)? = nil) throws -> SubjectKeys {
        let c = model.config, f = c.ffnDim
        for l in layers { try EditRequest.requireLayer(l, layers: c.layers) }
        guard !templates.isEmpty, templates.allSatisfy({ $0.contains("{}") }) else {
            throw EditingError.invalidArgument(name: "key templates", reason: "each needs {} where the subject goes")
        }
        let rome = ROME(model: model, tokenizer: tokenizer, contexts: .bare)
        // Sequences cut after the subject's last token (later tokens cannot change its key).
        var seqs: [[Int]] = [], owner: [Int] = []
        for (i, s) in subjects.enumerated() {
            for t in templates {
                let (template, subject) = place(s, in: t)
                guard let (ids, last) = try? rome.tokensWithSubject(template, subject: subject) else { continue }
                let cut = Array(ids.prefix(last + 1))
                guard !cut.isEmpty, cut.count <= c.contextLength else { continue }
                seqs.append(cut); owner.append(i)
            }
        }
        let sortedLayers = layers.sorted()
        var sums = [Int: [Double]]()
        for l in sortedLayers { sums[l] = [Double](repeating: 0, count: subjects.count * f) }
        var counts = [Int](repeating: 0, count: subjects.count)
        for i in owner { counts[i] += 1 }
        if let deepest = sortedLayers.last, !seqs.isEmpty {
            let accumulator = KeyAccumulator(sums: sums, width: f)
            var start = 0
            while start < seqs.count {
                var end = start, rows = 0
                while end < seqs.count && (end == start || rows + seqs[end].count <= rowsPerBatch) {
                    rows += seqs[end].count; end += 1
                }
                let batchOwners = Array(owner[start..<end])
                var hooks = Hooks()
                for l in sortedLayers {
                    hooks.add(HookPoint(l, .mlpPost)) { act in accumulator.add(layer: l, act, owners: batchOwners) }
                }
                _ = try model.forward(Array(seqs[start..<end]), hooks: hooks, logitRows: .none, upTo: deepest + 1)
                start = end
                progress?(start, seqs.count)
            }
            sums = accumulator.sums
        }
        let kept = subjects.indices.filter { counts[$0] > 0 }
        var keys = [Int: [Float]]()
        for l in sortedLayers {
            let sum = sums[l]!
            var k = [Float](repeating: 0, count: kept.count * f)
            for (r, i) in kept.enumerated() {
                let inv = 1 / Double(counts[i])
                for j in 0..<f { k[r * f + j] = Float(sum[i * f + j] * inv) }
            }
            keys[l] = k
        }
        return SubjectKeys(subjects: kept.map { subjects[$0] }, keys: keys, width: f)
    }

    /// Runs each probe template on each subject under A and B: top next tokens and greedy continuations.
    public static func probe(a: LlamaModel, b: LlamaModel, tokenizer: Tokenizer, subjects: [String],
                             options: ForensicsOptions = ForensicsOptions(),
                             progress: ((Int, Int) -> Void)? = nil) throws -> [BehaviourProbe] {
        var prompts: [(subject: String, text: String, ids: [Int])] = []
        for s in subjects {
            for t in options.probeTemplates {
                let (template, subject) = place(s, in: t)
                let text = template.replacingOccurrences(of: "{}", with: subject)
                let ids = tokenizer.encode(text)
                if !ids.isEmpty { prompts.append((s, text, ids)) }
            }
        }
        guard !prompts.isEmpty else { return [] }
        let v = a.config.vocabSize, k = max(1, options.topTokens)
        let stop = Set([tokenizer.eosID].compactMap { $0 })
        var logits: [[Float]] = [], continuations: [[String]] = []
        for (i, m) in [a, b].enumerated() {
            let out = try m.forward(prompts.map(\.ids), logitRows: .last)
            logits.append(out.logits.array)
            if options.continuationTokens > 0 {
                let gen = try m.generateBatch(prompts.map(\.ids), maxTokens: options.continuationTokens, stop: stop)
                continuations.append(gen.map { tokenizer.decode($0, skipSpecial: true) })
            } else {
                continuations.append(prompts.map { _ in "" })
            }
            progress?(i + 1, 2)
        }
        func top(_ row: ArraySlice<Float>) -> (list: [TokenProbability], lse: Float) {
            let r = Array(row)
            let lse = LogitMath.logSumExp(r)
            return (LogitMath.topK(r, k).map { TokenProbability(id: $0, text: tokenizer.tokenText($0),
                                                                  probability: Double(exp(r[$0] - lse))) }, lse)
        }
        return prompts.enumerated().map { i, p in
            let ra = logits[0][(i * v)..<((i + 1) * v)], rb = logits[1][(i * v)..<((i + 1) * v)]
            let (ta, lseA) = top(ra), (tb, lseB) = top(rb)
            let ia = ta[0].id, ib = tb[0].id
            return BehaviourProbe(subject: p.subject, prompt: p.text, topA: ta, topB: tb,
                                  probabilityBOfTopA: Double(exp(rb[rb.startIndex + ia] - lseB)),
                                  probabilityAOfTopB: Double(exp(ra[ra.startIndex + ib] - lseA)),
                                  continuationA: continuations[0][i], continuationB: continuations[1][i])
        }
    }

    /// Puts `subject` into `template` with English articles tidied: "The {}" with "The Eiffel Tower" gives
    /// "The Eiffel Tower" (not "The The …"), "I saw {}" gives "I saw the Eiffel Tower", and a bare "{}" capitalizes
    /// "the Netherlands". Returns the template and subject to use (the subject spelled as it appears).
    public static func place(_ subject: String, in template: String) -> (template: String, subject: String) {
        guard let r = template.range(of: "{}") else { return (template, subject) }
        var prefix = String(template[..<r.lowerBound])
        let suffix = String(template[r.upperBound...])
        var s = subject
        let startsWithThe = s.lowercased().hasPrefix("the ")
        if startsWithThe && prefix.lowercased().hasSuffix("the ")
            && (prefix.count == 4 || prefix.dropLast(4).last.map { !$0.isLetter } == true) {
            prefix.removeLast(4)
            if !prefix.isEmpty && !prefix.hasSuffix(" ") { prefix += " " }
        }
        if startsWithThe {
            let trimmed = prefix.trimmingCharacters(in: .whitespaces)
            let sentenceStart = trimmed.isEmpty || [".", "!", "?", ":", "\n"].contains(where: { trimmed.hasSuffix($0) })
            s = (sentenceStart ? "The" : "the") + s.dropFirst(3)
        }
        return (prefix + "{}" + suffix, s)
    }
}

/// Sums keys at the last row of each sequence, per layer (hooks capture it by reference).
private final class KeyAccumulator {
    var sums: [Int: [Double]]
    let width: Int
    init(sums: [Int: [Double]], width: Int) { self.sums = sums; self.width = width }

    func add(layer l: Int, _ act: Activation, owners: [Int]) {
        let f = width
        sums[l]!.withUnsafeMutableBufferPointer { s in
            for (seq, row) in act.layout.lastRows.enumerated() {
                let src = act.data + row * f, dst = s.baseAddress! + owners[seq] * f
                for j in 0..<f { dst[j] += Double(src[j]) }
            }
        }
    }
}
