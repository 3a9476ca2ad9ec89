import XCTest
@testable import Interp
@testable import Llama

/// The patching engine on a tiny random model: the fast path against the naive oracle, and invariants.
final class PatchingTests: XCTestCase {
    let model = InterpTiny.make()
    let clean = [1, 5, 9, 2, 7, 3]
    let corrupted = [1, 5, 11, 12, 7, 3]

    func kinds() -> [(HookKind, [Int]?)] {
        [(.residPre, nil), (.attnOut, nil), (.mlpOut, nil), (.residMid, nil), (.residPost, nil), (.mlpPost, nil),
         (.attnZ, [1]), (.attnQ, [0, 3]), (.attnK, [1]), (.attnV, [0])]
    }

    /// Every cell (layer × position) of every kind, denoising and noising, fast vs naive.
    func testFastPathEqualsNaiveEverywhere() throws {
        let noise = Corruption.noiseHooks(std: 0.5, samples: 3, seed: 9, positions: 2...3, width: model.config.dModel)
        let setups: [(String, [[Int]], Hooks, [[Int]], Hooks)] = [
            ("STR denoise", [corrupted], Hooks(), [clean], Hooks()),
            ("STR noise", [clean], Hooks(), [corrupted], Hooks()),
            ("GN denoise", Array(repeating: clean, count: 3), noise, [clean], Hooks()),
            ("GN noise", [clean], Hooks(), Array(repeating: clean, count: 3), noise),
        ]
        let cleanLogits = try model.forward([clean]).row(0)
        let metrics = [Metric(kind: .prob, answer: 4), Metric(kind: .logitDiff, answer: 4, foil: 17),
                       Metric(kind: .kl, answer: 4, cleanLogits: cleanLogits)]
        for (name, baseT, baseH, srcT, srcH) in setups {
            var runs: [[Patch]] = []
            for (k, heads) in kinds() {
                for l in 0..<model.config.layers { for t in 0..<clean.count {
                    runs.append([Patch(HookPoint(l, k), positions: [t], heads: heads)])
                } }
            }
            // Windows and multi-position patches too.
            runs.append([Patch(HookPoint(0, .mlpOut), positions: [2]), Patch(HookPoint(1, .mlpOut), positions: [2])])
            runs.append([Patch(HookPoint(1, .attnOut), positions: [1, 4, 5])])
            // First patched layer computed at its patched rows alone (row-local kinds), including spans with
            // unpatched rows inside, later patches before the span, and a first layer that is not row-local.
            runs.append([Patch(HookPoint(0, .attnQ), positions: [2, 4]), Patch(HookPoint(0, .mlpPost), positions: [3])])
            runs.append([Patch(HookPoint(0, .mlpOut), positions: [4]), Patch(HookPoint(1, .attnZ), positions: [1], heads: [0])])
            runs.append([Patch(HookPoint(0, .residPost), positions: [5]), Patch(HookPoint(1, .residPre), positions: [2])])
            runs.append([Patch(HookPoint(0, .attnOut), positions: [3]), Patch(HookPoint(0, .attnK), positions: [3])])
            runs.append([])
            let points = Set(runs.flatMap { $0.map(\.point) })
            let engine = try PatchingEngine(model: model, baseTokens: baseT, baseInterventions: baseH, sourceTokens: srcT,
                                            sourceInterventions: srcH, points: points)
            for m in metrics {
                let fast = try engine.evaluate(runs, columns: m.columns, score: { m.score($1) })
                let naive = try engine.evaluate(runs, columns: m.columns, naive: true, score: { m.score($1) })
                for (i, (f, n)) in zip(fast, naive).enumerated() {
                    XCTAssertEqual(f, n, accuracy: 1e-5, "\(name) \(m.kind) run \(i): \(runs[i])")
                }
            }
        }
    }

    /// Window runs of one kind alone, as a trace sweeps them: the model skips the MLP at rows whose output a patch
    /// replaces, and the first patched layer runs at the patched row alone.
    func testWindowSweepsEqualNaive() throws {
        let noise = Corruption.noiseHooks(std: 0.5, samples: 3, seed: 4, positions: 1...2, width: model.config.dModel)
        let engine = try PatchingEngine(model: model, baseTokens: Array(repeating: clean, count: 3), baseInterventions: noise,
                                        sourceTokens: [clean], points: Set((0..<3).flatMap { [HookPoint($0, .mlpOut), HookPoint($0, .attnOut)] }))
        let m = Metric(kind: .prob, answer: 4)
        for kind in [HookKind.mlpOut, .attnOut] {
            var runs: [[Patch]] = []
            for l in 0..<3 { for t in 0..<clean.count {
                runs.append((max(0, l - 1)..<min(3, l + 1)).map { Patch(HookPoint($0, kind), positions: [t]) })
            } }
            runs.append([Patch(HookPoint(0, kind), positions: [1, 3]), Patch(HookPoint(1, kind), positions: [2, 5])])
            let naive = try engine.evaluate(runs, columns: m.columns, naive: true, score: { m.score($1) })
            // Default sizes (few waves, one head block), then tiny waves and head blocks (many of each).
            for (rows, head) in [(1024, 256), (4, 5)] {
                engine.maxRows = rows; engine.headRows = head
                let fast = try engine.evaluate(runs, columns: m.columns, score: { m.score($1) })
                for (i, (f, n)) in zip(fast, naive).enumerated() {
                    XCTAssertEqual(f, n, accuracy: 1e-5, "\(kind) waves of \(rows) rows, run \(i): \(runs[i])")
                }
            }
        }
    }

    func testRestoringLayer0ResidualEverywhereGivesClean() throws {
        let engine = try PatchingEngine(model: model, baseTokens: [corrupted], sourceTokens: [clean],
                                        points: [HookPoint(0, .residPre)])
        let m = Metric(kind: .logitDiff, answer: 4, foil: 17)
        let cleanScore = m.score(fullLogits: try model.forward([clean]).row(0))
        let all = [Patch(HookPoint(0, .residPre), positions: Array(0..<clean.count))]
        let s = try engine.evaluate([all], columns: m.columns, score: { m.score($1) })[0]
        XCTAssertEqual(s, cleanScore, accuracy: 1e-5)
        // The last layer's residual at the last position alone also restores the clean output.
        let L = model.config.layers
        let engine2 = try PatchingEngine(model: model, baseTokens: [corrupted], sourceTokens: [clean],
                                         points: [HookPoint(L - 1, .residPost)])
        let s2 = try engine2.evaluate([[Patch(HookPoint(L - 1, .residPost), positions: [clean.count - 1])]],
                                      columns: m.columns, score: { m.score($1) })[0]
        XCTAssertEqual(s2, cleanScore, accuracy: 1e-5)
    }

    func testIdenticalRunsGiveZeroEffect() throws {
        let engine = try PatchingEngine(model: model, baseTokens: [clean], sourceTokens: [clean],
                                        points: Set((0..<2).map { HookPoint($0, .mlpOut) }))
        let m = Metric(kind: .prob, answer: 4)
        let base = engine.baseScores(columns: nil, score: { m.score($1) })[0]
        let runs = (0..<2).flatMap { l in (0..<clean.count).map { [Patch(HookPoint(l, .mlpOut), positions: [$0])] } }
        for s in try engine.evaluate(runs, score: { m.score($1) }) { XCTAssertEqual(s, base, accuracy: 1e-6) }
    }

    func testAllHeadsZEqualsAttnOut() throws {
        let c = model.config
        for l in 0..<c.layers {
            let engine = try PatchingEngine(model: model, baseTokens: [corrupted], sourceTokens: [clean],
                                            points: [HookPoint(l, .attnZ), HookPoint(l, .attnOut)])
            let m = Metric(kind: .logitDiff, answer: 4, foil: 17)
            let runs = [[Patch(HookPoint(l, .attnZ), positions: [3, 5], heads: Array(0..<c.heads))],
                        [Patch(HookPoint(l, .attnOut), positions: [3, 5])]]
            let s = try engine.evaluate(runs, columns: m.columns, score: { m.score($1) })
            XCTAssertEqual(s[0], s[1], accuracy: 1e-5)
            XCTAssertNotEqual(s[0], engine.baseScores(columns: m.columns, score: { m.score($1) })[0], accuracy: 1e-6)
        }
    }

    func testZeroAndMeanAblation() throws {
        // Zero-ablating attn_out of layer 1 everywhere equals a forward with that output zeroed by a hook.
        let engine = try PatchingEngine(model: model, baseTokens: [clean], sourceTokens: nil, points: [])
        let m = Metric(kind: .prob, answer: 4)
        let s = try engine.evaluate([[Patch(HookPoint(1, .attnOut), positions: Array(0..<clean.count))]], value: .zero,
                                    score: { m.score($1) })[0]
        var hooks = Hooks()
        hooks.add(HookPoint(1, .attnOut)) { $0.buffer.update(repeating: 0) }
        XCTAssertEqual(s, m.score(fullLogits: try model.forward([clean], hooks: hooks).row(0)), accuracy: 1e-6)
        let meanVec = [Float](repeating: 0.25, count: model.config.dModel)
        let s2 = try engine.evaluate([[Patch(HookPoint(1, .mlpOut), positions: [5])]],
                                     value: .mean([HookPoint(1, .mlpOut): meanVec]), score: { m.score($1) })[0]
        var h2 = Hooks()
        h2.add(HookPoint(1, .mlpOut)) { a in for j in 0..<a.width { a.row(seq: 0, pos: 5)[j] = 0.25 } }
        XCTAssertEqual(s2, m.score(fullLogits: try model.forward([clean], hooks: h2).row(0)), accuracy: 1e-6)
    }
}

/// A tiny random Llama for the interpretability tests (3 layers so windows and mid-network starts are exercised).
enum InterpTiny {
    static let config = LlamaConfig(layers: 3, dModel: 16, heads: 4, kvHeads: 2, headDim: 4, ffnDim: 24, vocabSize: 40,
                                    contextLength: 64, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: true)
    static func make(seed: UInt64 = 3) -> LlamaModel {
        var rng = SeededRandom(seed: seed)
        let w = LlamaWeights(zeros: config)
        for p in LlamaParameter.all(config) {
            let n = p.shape(config).reduce(1, *)
            let isNorm: Bool = { switch p { case .attnNorm, .ffnNorm, .outputNorm: return true; default: return false } }()
            w.setValues(p, (0..<n).map { _ in isNorm ? Float(1 + 0.1 * rng.normal()) : Float(0.4 * rng.normal()) })
        }
        return LlamaModel(weights: w)
    }
}
