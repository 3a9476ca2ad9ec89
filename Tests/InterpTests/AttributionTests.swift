import XCTest
@testable import Interp
@testable import Llama

/// Attribution patching on tiny random models. Expected values come from forward passes only (finite differences
/// with hooks, or exact patching), never from the backward code under test.
final class AttributionTests: XCTestCase {
    let model = InterpTiny.make()
    let clean = [1, 5, 9, 2, 7, 3]
    let corrupted = [1, 5, 11, 12, 7, 3]

    struct Setup {
        let name: String
        let base: [[Int]], baseHooks: Hooks, source: [[Int]], sourceHooks: Hooks
    }

    func setups() -> [Setup] {
        let noise = Corruption.noiseHooks(std: 0.5, samples: 3, seed: 9, positions: 2...3, width: model.config.dModel)
        return [Setup(name: "STR denoise", base: [corrupted], baseHooks: Hooks(), source: [clean], sourceHooks: Hooks()),
                Setup(name: "STR noise", base: [clean], baseHooks: Hooks(), source: [corrupted], sourceHooks: Hooks()),
                Setup(name: "GN denoise", base: Array(repeating: clean, count: 3), baseHooks: noise, source: [clean],
                      sourceHooks: Hooks()),
                Setup(name: "GN noise", base: [clean], baseHooks: Hooks(), source: Array(repeating: clean, count: 3),
                      sourceHooks: noise)]
    }

    func metrics(_ m: LlamaModel) throws -> [Metric] {
        let cleanLogits = try m.forward([clean]).row(0)
        return [Metric(kind: .prob, answer: 4), Metric(kind: .logitDiff, answer: 4, foil: 17),
                Metric(kind: .kl, answer: 4, cleanLogits: cleanLogits)]
    }

    /// Records `points` of a forward pass (independently of the attribution code).
    func record(_ m: LlamaModel, _ tokens: [[Int]], _ interventions: Hooks, _ points: [HookPoint]) throws -> [HookPoint: [Float]] {
        var hooks = interventions, store: [HookPoint: [Float]] = [:]
        for p in points { hooks.add(p) { a in store[p] = Array(a.buffer) } }
        _ = try m.forward(tokens, hooks: hooks)
        return store
    }

    /// Every cell's estimate equals the central finite difference of the metric (forward passes in float32, metric
    /// in Double) along ε·(a_source − a_base) on the cell's elements: central differences at ε = 1e-2 and 2ε,
    /// Richardson-extrapolated, so the truncation error is O(ε⁴) (the plain central difference was measured up to
    /// 0.6% off: the directions a_source − a_base are O(1)–O(5) long, so the third derivative is large). float32
    /// rounding of O(1) metrics divided by 2ε is ≈ 1e-5, so a tolerance of 1e-3 · (1 + |fd|) still catches any wrong
    /// gradient term (a missing residual path or a wrong head slice is off by far more; worst errors are printed).
    func testEveryCellMatchesFiniteDifferenceDirectionalDerivative() throws {
        let c = model.config, T = clean.count, L = c.layers
        let kinds: [HookKind] = [.residPre, .attnOut, .mlpOut, .attnZ, .mlpPost, .attnQ, .attnK, .attnV]
        let points = (0..<L).flatMap { l in kinds.map { HookPoint(l, $0) } }
        var worst = 0.0, largest = 0.0, cellsChecked = 0
        for s in setups() {
            let nb = s.base.count, ns = s.source.count
            let pairs = (0..<max(nb, ns)).map { (nb == 1 ? 0 : $0, ns == 1 ? 0 : $0) }
            let baseActs = try record(model, s.base, s.baseHooks, points)
            let srcActs = try record(model, s.source, s.sourceHooks, points)
            let fdTokens = pairs.map { s.base[$0.0] }
            for m in try metrics(model) {
                let pass = try AttributionPass(model: model, baseTokens: s.base, baseInterventions: s.baseHooks,
                                               sourceTokens: s.source, sourceInterventions: s.sourceHooks, metric: m,
                                               points: Set(points))
                for p in points {
                    let w = p.kind.width(c)
                    // Cells: whole rows, heads × positions, and every third neuron × position.
                    var cells: [(positions: [Int], elements: Range<Int>, patch: Patch)] = []
                    for t in 0..<T {
                        if let h = p.kind.heads(c) {
                            for k in 0..<h {
                                cells.append(([t], (k * c.headDim)..<((k + 1) * c.headDim), Patch(p, positions: [t], heads: [k])))
                            }
                        } else if p.kind == .mlpPost {
                            for j in stride(from: t % 3, to: w, by: 3) {
                                cells.append(([t], j..<(j + 1), Patch(p, positions: [t])))
                            }
                        } else {
                            cells.append(([t], 0..<w, Patch(p, positions: [t])))
                        }
                    }
                    let e = pass.elementwise(p)
                    for cell in cells {
                        let atp = cell.elements.reduce(0.0) { sum, j in sum + e[cell.positions[0] * w + j] }
                        func f(_ eps: Float) throws -> Double {
                            var hooks = s.baseHooks
                            hooks.add(p) { a in
                                for (i, pair) in pairs.enumerated() {
                                    for t in cell.positions {
                                        let r = a.layout.row(seq: i, pos: t) * w
                                        let rb = pair.0 * T * w + t * w, rs = pair.1 * T * w + t * w
                                        for j in cell.elements {
                                            a.data[r + j] += eps * (srcActs[p]![rs + j] - baseActs[p]![rb + j])
                                        }
                                    }
                                }
                            }
                            let out = try model.forward(fdTokens, hooks: hooks)
                            return (0..<pairs.count).map { m.score(fullLogits: out.row($0)) }.reduce(0, +) / Double(pairs.count)
                        }
                        // Central differences at ε and 2ε, Richardson-extrapolated: D(ε) = f' + a·ε² + O(ε⁴).
                        let eps: Float = 1e-2
                        let d1 = (try f(eps) - f(-eps)) / (2 * Double(eps))
                        let d2 = (try f(2 * eps) - f(-2 * eps)) / (4 * Double(eps))
                        let fd = (4 * d1 - d2) / 3
                        let err = abs(atp - fd)
                        worst = max(worst, err / (1 + abs(fd))); largest = max(largest, abs(fd))
                        cellsChecked += 1
                        XCTAssertEqual(atp, fd, accuracy: 1e-3 * (1 + abs(fd)), "\(s.name) \(m.kind) \(p) cell \(cell.positions) \(cell.elements)")
                    }
                }
            }
        }
        print("attribution vs finite differences: \(cellsChecked) cells, worst relative error \(worst), largest |fd| \(largest)")
        XCTAssertGreaterThan(largest, 0.05, "the directional derivatives are all ~0: the check would be vacuous")
    }

    /// A model whose norms are linear: with rmsEps = 1e12 every RMSNorm divides by exactly √1e12 in float32
    /// (mean(x²) ≪ the ulp of 1e12 = 131072 is rounded away), and norm weights × 1e6 undo the scale. Then the
    /// logits are linear in the last block's `hook_mlp_out` and `mlp.hook_post`, and logit-diff is linear in them.
    /// With `zeroLastMLP`, the last block's W_down is zero, so logit-diff is linear in that block's attention
    /// probabilities too (z = A·v → W_O → residual → linear head).
    static func linearHeadModel(zeroLastMLP: Bool) -> LlamaModel {
        var c = InterpTiny.config
        c = LlamaConfig(layers: c.layers, dModel: c.dModel, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
                        ffnDim: c.ffnDim, vocabSize: c.vocabSize, contextLength: c.contextLength, ropeBase: c.ropeBase,
                        rmsEps: 1e12, tiedEmbeddings: true)
        var rng = SeededRandom(seed: 21)
        let w = LlamaWeights(zeros: c)
        for p in LlamaParameter.all(c) {
            let n = p.shape(c).reduce(1, *)
            let isNorm: Bool = { switch p { case .attnNorm, .ffnNorm, .outputNorm: return true; default: return false } }()
            // Sharper attention in the last block (saturated softmax), so linear AtP of q/k is visibly off.
            let sharp: Bool = { switch p { case .wq(c.layers - 1), .wk(c.layers - 1): return true; default: return false } }()
            // Block norms × 0.5 keep the residual O(1) (SwiGLU is quadratic; unscaled, the residual grows until
            // mean(x²) registers against 1e12 and the norms are no longer linear).
            var gain = 0.5e6
            if case .outputNorm = p { gain = 1e6 }
            var values = (0..<n).map { _ in isNorm ? Float(gain * (1 + 0.1 * rng.normal())) : Float((sharp ? 1.5 : 0.4) * rng.normal()) }
            if zeroLastMLP, case .wDown(c.layers - 1) = p { values = [Float](repeating: 0, count: n) }
            w.setValues(p, values)
        }
        return LlamaModel(weights: w)
    }

    /// Exact patching of every cell of `runs` (fast engine) against the attribution estimate.
    func compare(_ m: LlamaModel, _ s: Setup, _ runs: [[Patch]], qkFix: Bool) throws -> [(estimate: Double, exact: Double)] {
        let metric = Metric(kind: .logitDiff, answer: 4, foil: 17)
        let points = Set(runs.flatMap { $0.map(\.point) })
        let engine = try PatchingEngine(model: m, baseTokens: s.base, baseInterventions: s.baseHooks, sourceTokens: s.source,
                                        sourceInterventions: s.sourceHooks, points: points)
        let exact = try engine.evaluate(runs, columns: metric.columns, score: { metric.score($1) })
        let pass = try AttributionPass(model: m, baseTokens: s.base, baseInterventions: s.baseHooks, sourceTokens: s.source,
                                       sourceInterventions: s.sourceHooks, metric: metric, points: points)
        return zip(runs, exact).map { (pass.estimate($0, qkFix: qkFix), $1) }
    }

    /// On the linear-head model the estimate of patching the last block's MLP output (any position) or neurons,
    /// alone or several at once, equals exact patching; a nonlinear cell (the first block's MLP) does not.
    func testEstimateEqualsExactPatchingWhereThePatchedFunctionIsLinear() throws {
        let m = Self.linearHeadModel(zeroLastMLP: false)
        let last = m.config.layers - 1, T = clean.count
        for s in setups() {
            var runs: [[Patch]] = (0..<T).map { [Patch(HookPoint(last, .mlpOut), positions: [$0])] }
            runs.append([Patch(HookPoint(last, .mlpPost), positions: [T - 1])])
            runs.append([Patch(HookPoint(last, .mlpPost), positions: [T - 1, 2])])
            let pairs = try compare(m, s, runs, qkFix: false)
            for (i, p) in pairs.enumerated() {
                XCTAssertEqual(p.estimate, p.exact, accuracy: 1e-4 * (1 + abs(p.exact)), "\(s.name) run \(i)")
            }
            XCTAssertGreaterThan(abs(pairs[T - 1].exact - pairs[0].exact), 1e-2, "\(s.name): the last position's patch has no effect")
            // Not linear: the estimate is off (so the equality above is not a property of any patch on this model).
            let far = try compare(m, s, [[Patch(HookPoint(0, .mlpOut), positions: [2])]], qkFix: false)[0]
            XCTAssertGreaterThan(abs(far.estimate - far.exact), 1e-3, "\(s.name): layer-0 MLP looked linear")
        }
    }

    /// The QK fix is exact where the metric is linear in the attention probabilities (last block without MLP,
    /// linear head): patched queries or keys of the last block, per head (keys: a KV head, all its query heads),
    /// while the plain linear estimate of the same patches is off (saturated softmax).
    func testQKFixEqualsExactPatchingWhereTheMetricIsLinearInTheAttention() throws {
        let m = Self.linearHeadModel(zeroLastMLP: true)
        let c = m.config, last = c.layers - 1, T = clean.count
        var linearGap = 0.0
        for s in setups() {
            var runs: [[Patch]] = []
            for t in 0..<T {
                for h in 0..<c.heads { runs.append([Patch(HookPoint(last, .attnQ), positions: [t], heads: [h])]) }
                for g in 0..<c.kvHeads { runs.append([Patch(HookPoint(last, .attnK), positions: [t], heads: [g])]) }
            }
            runs.append([Patch(HookPoint(last, .attnK), positions: [1, 2, 3])])
            let fixed = try compare(m, s, runs, qkFix: true), linear = try compare(m, s, runs, qkFix: false)
            for (i, p) in fixed.enumerated() {
                XCTAssertEqual(p.estimate, p.exact, accuracy: 1e-4 * (1 + abs(p.exact)), "\(s.name) run \(i): \(runs[i])")
            }
            linearGap = max(linearGap, linear.map { abs($0.estimate - $0.exact) }.max()!)
        }
        XCTAssertGreaterThan(linearGap, 1e-2, "linear AtP was already exact: the QK-fix check is vacuous")
    }

    /// Linear maps between hook points carry the estimates over exactly: a layer's neurons (`mlp.hook_post`) sum
    /// to its `hook_mlp_out` estimate (W_down), its heads' z to its `hook_attn_out` estimate (W_O);
    /// several patches add up; no patch is the base score.
    func testEstimatesAreConsistentAcrossLinearMaps() throws {
        let c = model.config, T = clean.count
        for s in setups() {
            for m in try metrics(model) {
                let points = Set((0..<c.layers).flatMap { l in
                    [HookKind.mlpPost, .mlpOut, .attnZ, .attnOut].map { HookPoint(l, $0) } })
                let pass = try AttributionPass(model: model, baseTokens: s.base, baseInterventions: s.baseHooks,
                                               sourceTokens: s.source, sourceInterventions: s.sourceHooks, metric: m,
                                               points: points)
                XCTAssertEqual(pass.estimate([]), pass.baseScore)
                for l in 0..<c.layers {
                    for t in 0..<T {
                        let neurons = pass.linearEffect(Patch(HookPoint(l, .mlpPost), positions: [t]))
                        let out = pass.linearEffect(Patch(HookPoint(l, .mlpOut), positions: [t]))
                        XCTAssertEqual(neurons, out, accuracy: 1e-5 * (1 + abs(out)), "\(s.name) \(m.kind) L\(l) t\(t) mlp")
                        let heads = (0..<c.heads).reduce(0.0) {
                            $0 + pass.linearEffect(Patch(HookPoint(l, .attnZ), positions: [t], heads: [$1])) }
                        let attn = pass.linearEffect(Patch(HookPoint(l, .attnOut), positions: [t]))
                        XCTAssertEqual(heads, attn, accuracy: 1e-5 * (1 + abs(attn)), "\(s.name) \(m.kind) L\(l) t\(t) attn")
                    }
                    let two = [Patch(HookPoint(l, .mlpOut), positions: [1]), Patch(HookPoint(l, .attnOut), positions: [4])]
                    XCTAssertEqual(pass.estimate(two) - pass.baseScore,
                                   pass.linearEffect(two[0]) + pass.linearEffect(two[1]), accuracy: 1e-12)
                }
            }
        }
    }
}

/// Attribution results on disk: the method, top components and verified cells survive HDF5 and appear in JSON.
final class AttributionStoreTests: XCTestCase {
    func testMethodComponentsAndVerifiedRoundTrip() throws {
        var r = TraceOutputTests.small(kind: .heads, metric: .logitDiff, foil: 3)
        r.settings.method = .attribution
        r.components = [ComponentEstimate(layer: 2, position: 5, index: 1, effect: -0.25),
                        ComponentEstimate(layer: 0, position: 1, index: 3, effect: 0.125)]
        r.verified = [VerifiedCell(row: 1, layer: 2, estimate: 0.5, exact: 0.375, topRanked: true),
                      VerifiedCell(row: 0, layer: 1, estimate: 0.0625, exact: -0.5, topRanked: false)]
        let exact = TraceOutputTests.small(kind: .resid)
        let path = NSTemporaryDirectory() + "atp-\(UUID().uuidString).h5"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try TraceStore.write([r, exact], prompt: "p", provenance: nil, to: path)
        let back = try TraceStore.read(path).results
        XCTAssertEqual(back[0].settings.method, .attribution)
        XCTAssertEqual(back[0].components, r.components)
        XCTAssertEqual(back[0].verified, r.verified)
        XCTAssertEqual(back[1].settings.method, .exact)
        XCTAssertEqual(back[1].components, [])
        let json = TraceStore.json([r, exact], prompt: "p")["results"] as! [[String: Any]]
        XCTAssertEqual(json[0]["method"] as? String, "attribution")
        XCTAssertEqual(json[0]["estimate"] as? Bool, true)
        XCTAssertEqual((json[0]["components"] as? [[String: Any]])?.count, 2)
        XCTAssertEqual(json[1]["method"] as? String, "exact")
        XCTAssertTrue(JSONSerialization.isValidJSONObject(TraceStore.json([r], prompt: "p")))
    }
}

/// GradDrop against finite differences: each dropped-block estimate is the directional derivative of the metric
/// in a forward where block ℓ's `hook_attn_out` and `hook_mlp_out` are pinned to their base values (so nothing
/// flows through block ℓ's branches), and GradDrop = Σ_ℓ |that| / (L − 1).
extension AttributionTests {
    func testGradDropMatchesFiniteDifferencesWithPinnedBlocks() throws {
        let t = self
        let model = t.model, c = model.config, L = c.layers, T = t.clean.count
        let kinds: [HookKind] = [.residPre, .attnOut, .mlpOut, .residMid]
        let points = (0..<L).flatMap { l in kinds.map { HookPoint(l, $0) } }
        let pinned = (0..<L).flatMap { [HookPoint($0, .attnOut), HookPoint($0, .mlpOut)] }
        var largest = 0.0
        for s in t.setups() {
            let nb = s.base.count, ns = s.source.count
            let pairs = (0..<max(nb, ns)).map { (nb == 1 ? 0 : $0, ns == 1 ? 0 : $0) }
            let baseActs = try t.record(model, s.base, s.baseHooks, points + pinned)
            let srcActs = try t.record(model, s.source, s.sourceHooks, points)
            for m in try t.metrics(model).prefix(2) {
                let pass = try AttributionPass(model: model, baseTokens: s.base, baseInterventions: s.baseHooks,
                                               sourceTokens: s.source, sourceInterventions: s.sourceHooks, metric: m,
                                               points: Set(points))
                let runs = points.flatMap { p in (0..<T).map { [Patch(p, positions: [$0])] } }
                let gd = pass.gradDrop(runs)
                for (run, got) in zip(runs, gd) {
                    let p = run[0].point, pos = run[0].positions[0], w = p.kind.width(c)
                    var sum = 0.0
                    for dropped in 0..<L {
                        func f(_ eps: Float) throws -> Double {
                            var hooks = s.baseHooks
                            hooks.add(p) { a in
                                for (i, pair) in pairs.enumerated() {
                                    let r = a.layout.row(seq: i, pos: pos) * w
                                    let rb = pair.0 * T * w + pos * w, rs = pair.1 * T * w + pos * w
                                    for j in 0..<w { a.data[r + j] += eps * (srcActs[p]![rs + j] - baseActs[p]![rb + j]) }
                                }
                            }
                            for q in [HookPoint(dropped, .attnOut), HookPoint(dropped, .mlpOut)] {
                                hooks.add(q) { a in
                                    for (i, pair) in pairs.enumerated() {
                                        for j in 0..<(T * w) { a.data[i * T * w + j] = baseActs[q]![pair.0 * T * w + j] }
                                    }
                                }
                            }
                            let out = try model.forward(pairs.map { s.base[$0.0] }, hooks: hooks)
                            return (0..<pairs.count).map { m.score(fullLogits: out.row($0)) }.reduce(0, +) / Double(pairs.count)
                        }
                        let eps: Float = 1e-2
                        let d1 = (try f(eps) - f(-eps)) / (2 * Double(eps)), d2 = (try f(2 * eps) - f(-2 * eps)) / (4 * Double(eps))
                        sum += abs((4 * d1 - d2) / 3)
                    }
                    let expected = sum / Double(L - 1)
                    largest = max(largest, expected)
                    XCTAssertEqual(got, expected, accuracy: 1e-3 * (1 + expected), "\(s.name) \(m.kind) \(p) t\(pos)")
                }
            }
        }
        XCTAssertGreaterThan(largest, 0.05)
    }
}
