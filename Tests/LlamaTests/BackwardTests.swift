import Foundation
import XCTest
@testable import Llama

/// The hand-written backward pass against central finite differences of the forward pass.
///
/// Every expected value is a finite difference of a forward computation (kernels, `runLayers`, `logits`,
/// hooks) with the loss evaluated here in Double; nothing is derived from the backward code. The forward is
/// float32, so steps are ~1e-2 and the tolerances allow for float32 rounding (measured errors are printed).
final class BackwardTests: XCTestCase {
    let model = TinyModel.make(seed: 11)

    // MARK: - Kernels

    func testRMSNormBackwardMatchesFiniteDifferences() {
        var rng = SeededRandom(seed: 1)
        let rows = 3, d = 16
        let x = randn(rows * d, &rng), w = randn(d, &rng, mean: 1, std: 0.2), g = randn(rows * d, &rng)
        let f = { (x: [Float], w: [Float]) -> Double in
            var out = [Float](repeating: 0, count: rows * d)
            Kernels.rmsnormForward(out: &out, x: x, w: w, rows: rows, width: d, eps: 1e-5)
            return dot(g, out)
        }
        var dx = [Float](repeating: 0.5, count: rows * d), dw = [Float](repeating: 0.25, count: d)
        var rstd = [Float](repeating: 0, count: rows), scratch = [Float](repeating: 0, count: rows * d)
        Kernels.rmsnormForward(out: &scratch, x: x, w: w, rows: rows, width: d, eps: 1e-5, rstd: &rstd)
        Kernels.rmsnormBackward(dinp: &dx, dw: &dw, dout: g, x: x, w: w, rstd: rstd, rows: rows, width: d,
                                accumulate: true)
        // accumulate: the prior contents (0.5 and 0.25) are kept.
        let ex = fdGradient({ f($0, w) }, at: x, eps: 1e-2), ew = fdGradient({ f(x, $0) }, at: w, eps: 1e-2)
        let errX = relativeError(dx.map { $0 - 0.5 }, ex), errW = relativeError(dw.map { $0 - 0.25 }, ew)
        report("rmsnorm dx", errX); report("rmsnorm dw", errW)
        XCTAssertLessThan(errX, 1e-3); XCTAssertLessThan(errW, 1e-3)
    }

    func testSwiGLUBackwardMatchesFiniteDifferences() {
        var rng = SeededRandom(seed: 2)
        let rows = 3, f = 11  // one 8-lane block and a scalar tail per row
        let gu = randn(rows * 2 * f, &rng, std: 2), g = randn(rows * f, &rng)
        let fn = { (gu: [Float]) -> Double in
            var out = [Float](repeating: 0, count: rows * f)
            Kernels.swigluForward(out: &out, gateUp: gu, rows: rows, width: f)
            return dot(g, out)
        }
        var dgu = [Float](repeating: 0, count: rows * 2 * f)
        Kernels.swigluBackward(dGateUp: &dgu, dout: g, gateUp: gu, rows: rows, width: f)
        let err = relativeError(dgu, fdGradient(fn, at: gu, eps: 1e-2))
        report("swiglu", err)
        XCTAssertLessThan(err, 1e-3)
    }

    func testRopeInverseIsTranspose() {
        var rng = SeededRandom(seed: 3)
        let rows = 4, heads = 3, hd = 8
        let table = RopeTable(headDim: hd, base: 10000)
        let positions: [Int32] = [0, 7, 123, 4000]
        let x = randn(rows * heads * hd, &rng), y = randn(rows * heads * hd, &rng)
        var rx = x, ry = y
        Kernels.rope(&rx, rows: rows, heads: heads, headDim: hd, positions: positions, table: table)
        Kernels.rope(&ry, rows: rows, heads: heads, headDim: hd, positions: positions, table: table, inverse: true)
        // ⟨R x, y⟩ = ⟨x, Rᵀ y⟩, and a non-trivial rotation (position 0 is the identity).
        let lhs = dot(rx, y), rhs = dot(x, ry)
        report("rope ⟨Rx,y⟩−⟨x,Rᵀy⟩", abs(lhs - rhs) / abs(lhs))
        XCTAssertEqual(lhs, rhs, accuracy: 1e-5 * max(1, abs(lhs)))
        XCTAssertGreaterThan(zip(rx, x).map { abs($0 - $1) }.max()!, 0.1)
        // Rᵀ R = I.
        Kernels.rope(&rx, rows: rows, heads: heads, headDim: hd, positions: positions, table: table, inverse: true)
        for (a, b) in zip(rx, x) { XCTAssertEqual(a, b, accuracy: 1e-5) }
    }

    // MARK: - Attention

    /// Batches to test: no prefix; one sequence starting past 0 (KV prefix); both.
    func layouts() throws -> [(name: String, layout: BatchLayout, prefix: KVCache?)] {
        let cache = KVCache(config: model.config, sequences: 2)
        _ = try model.forward([[3, 1, 4], [15, 9, 2, 6, 5, 35]], cache: cache)
        return [("no prefix", BatchLayout(lengths: [5, 3]), nil),
                ("prefix on seq 1", BatchLayout(lengths: [5, 3], startPositions: [0, 6]), cache),
                ("prefixes", BatchLayout(lengths: [2, 4], startPositions: [3, 6]), cache)]
    }

    /// attentionBackward alone: z as a function of q, k, v before RoPE (perturbed through hooks).
    func testAttentionCoreBackwardMatchesFiniteDifferences() throws {
        let c = model.config, l = 1, qw = c.heads * c.headDim, kvw = c.kvHeads * c.headDim
        for (name, layout, prefix) in try layouts() {
            var rng = SeededRandom(seed: 4)
            let n = layout.rows
            let x = randn(n * c.dModel, &rng), g = randn(n * qw, &rng)
            // f(u) = ⟨g, z⟩ with u = [uq | uk | uv] added to hook_q, hook_k, hook_v.
            let f = { (u: [Float]) -> Double in
                var hooks = Hooks(), z: [Float] = []
                for (kind, start, w) in [(HookKind.attnQ, 0, qw), (.attnK, n * qw, kvw), (.attnV, n * (qw + kvw), kvw)] {
                    hooks.add(HookPoint(l, kind)) { a in for i in 0..<(n * w) { a.data[i] += u[start + i] } }
                }
                hooks.add(HookPoint(l, .attnZ)) { a in z = Array(a.buffer) }
                self.model.runLayers(FloatBuffer(x), layout: layout, layers: l..<(l + 1), hooks: hooks, prefix: prefix)
                return dot(g, z)
            }
            let tape = ForwardTape()
            model.runLayers(FloatBuffer(x), layout: layout, layers: l..<(l + 1), prefix: prefix, tape: tape)
            let s = BackwardScratch(config: c, layout: layout)
            let dq = FloatBuffer(n * qw), dk = FloatBuffer(n * kvw), dv = FloatBuffer(n * kvw)
            model.attentionBackward(dq: dq, dk: dk, dv: dv, dz: FloatBuffer(g), layout: layout, tape: tape.layers[l]!,
                                    scratch: s)
            let pos = layout.positions
            Kernels.rope(dq.pointer, rows: n, heads: c.heads, headDim: c.headDim, positions: pos, table: model.rope,
                         inverse: true)
            Kernels.rope(dk.pointer, rows: n, heads: c.kvHeads, headDim: c.headDim, positions: pos, table: model.rope,
                         inverse: true)
            let analytic = dq.array + dk.array + dv.array
            let err = relativeError(analytic, fdGradient(f, at: [Float](repeating: 0, count: analytic.count), eps: 1e-2))
            report("attention core (\(name))", err)
            XCTAssertLessThan(err, 2e-3, name)
        }
    }

    /// The attention branch of a block: attn_out as a function of resid_pre.
    func testAttentionBlockBackwardMatchesFiniteDifferences() throws {
        let c = model.config, l = 1
        for (name, layout, prefix) in try layouts() {
            var rng = SeededRandom(seed: 5)
            let n = layout.rows
            let x = randn(n * c.dModel, &rng), g = randn(n * c.dModel, &rng)
            let f = { (x: [Float]) -> Double in
                var hooks = Hooks(), out: [Float] = []
                hooks.add(HookPoint(l, .attnOut)) { a in out = Array(a.buffer) }
                self.model.runLayers(FloatBuffer(x), layout: layout, layers: l..<(l + 1), hooks: hooks, prefix: prefix)
                return dot(g, out)
            }
            let tape = ForwardTape()
            model.runLayers(FloatBuffer(x), layout: layout, layers: l..<(l + 1), prefix: prefix, tape: tape)
            let dx = FloatBuffer(n * c.dModel, zeroed: true)
            model.attentionBlockBackward(l, dx: dx, dAttnOut: FloatBuffer(g), layout: layout, tape: tape.layers[l]!,
                                         scratch: BackwardScratch(config: c, layout: layout))
            let err = relativeError(dx.array, fdGradient(f, at: x, eps: 1e-2))
            report("attention branch (\(name))", err)
            XCTAssertLessThan(err, 2e-3, name)
        }
    }

    // MARK: - Blocks

    func testBlockBackwardMatchesFiniteDifferences() throws {
        let c = model.config
        for (name, layout, prefix) in try layouts() {
            for layers in [0..<1, 1..<2, 0..<2] {
                var rng = SeededRandom(seed: 6)
                let n = layout.rows
                let x = randn(n * c.dModel, &rng), g = randn(n * c.dModel, &rng)
                let f = { (x: [Float]) -> Double in
                    let xb = FloatBuffer(x)
                    self.model.runLayers(xb, layout: layout, layers: layers, prefix: prefix)
                    return dot(g, xb.array)
                }
                let tape = ForwardTape()
                model.runLayers(FloatBuffer(x), layout: layout, layers: layers, prefix: prefix, tape: tape)
                let dx = FloatBuffer(g)
                model.backwardLayers(dx, layout: layout, layers: layers, tape: tape)
                let expected = fdGradient(f, at: x, eps: 1e-2)
                let err = relativeError(dx.array, expected)
                // The identity path dominates a block's Jacobian: check the non-identity part on its own too.
                let errBranch = relativeError(zip(dx.array, g).map { $0 - $1 }, zip(expected, g).map { $0 - Double($1) })
                report("blocks \(layers) (\(name))", err); report("blocks \(layers) minus identity (\(name))", errBranch)
                XCTAssertLessThan(err, 1e-3, "\(layers) \(name)")
                XCTAssertLessThan(errBranch, 5e-3, "\(layers) \(name)")
            }
        }
    }

    // MARK: - Output head and losses

    func testLogitsBackwardMatchesFiniteDifferences() {
        let c = model.config, n = 5, rows = [4, 1, 4]
        var rng = SeededRandom(seed: 7)
        let x = randn(n * c.dModel, &rng, std: 2), g = randn(rows.count * c.vocabSize, &rng)
        let f = { (x: [Float]) -> Double in dot(g, self.model.logits(FloatBuffer(x), rows: rows).array) }
        let tape = ForwardTape()
        _ = model.logits(FloatBuffer(x), rows: rows, tape: tape)
        let dx = FloatBuffer(n * c.dModel, zeroed: true)
        model.backwardLogits(dResidual: dx, dLogits: FloatBuffer(g), rows: rows, tape: tape)
        let expected = fdGradient(f, at: x, eps: 1e-2)
        let err = relativeError(dx.array, expected)
        report("output head", err)
        XCTAssertLessThan(err, 1e-3)
        // Rows without logits get no gradient.
        for r in [0, 2, 3] { for j in 0..<c.dModel { XCTAssertEqual(dx[r * c.dModel + j], 0) } }
    }

    func testLossGradientsMatchFiniteDifferences() {
        var rng = SeededRandom(seed: 8)
        let r = 3, v = 11
        let logits = randn(r * v, &rng, std: 3), targets = [2, 10, 0], weights: [Float] = [1, 0.5, 2]
        let ref = randn(r * v, &rng, std: 2)
        let refLogProbs = (0..<r).flatMap { i -> [Float] in
            let row = ref[(i * v)..<((i + 1) * v)].map(Double.init), m = row.max()!
            let lse = m + log(row.map { exp($0 - m) }.reduce(0, +))
            return row.map { Float($0 - lse) }
        }
        // Losses written out independently in Double.
        func logSoftmax(_ x: [Float], _ i: Int) -> [Double] {
            let row = x[(i * v)..<((i + 1) * v)].map(Double.init), m = row.max()!
            let lse = m + log(row.map { exp($0 - m) }.reduce(0, +))
            return row.map { $0 - lse }
        }
        let ce = { (x: [Float]) -> Double in (0..<r).reduce(0) { $0 - Double(weights[$1]) * logSoftmax(x, $1)[targets[$1]] } }
        let kl = { (x: [Float]) -> Double in
            (0..<r).reduce(0) { acc, i in
                let lp = logSoftmax(x, i)
                return acc + Double(weights[i]) * (0..<v).reduce(0) { s, j in
                    let lq = Double(refLogProbs[i * v + j])
                    return s + exp(lq) * (lq - lp[j])
                }
            }
        }
        let d1 = FloatBuffer(r * v), d2 = FloatBuffer(r * v)
        let l1 = LogitMath.crossEntropy(dLogits: d1, logits: FloatBuffer(logits), targets: targets, weights: weights)
        let l2 = LogitMath.klDivergence(dLogits: d2, logits: FloatBuffer(logits), referenceLogProbs: refLogProbs, rows: r,
                                        weights: weights)
        XCTAssertEqual(Double(l1), ce(logits), accuracy: 1e-5 * ce(logits))
        XCTAssertEqual(Double(l2), kl(logits), accuracy: 1e-4 * kl(logits))
        let e1 = relativeError(d1.array, fdGradient(ce, at: logits, eps: 1e-2))
        let e2 = relativeError(d2.array, fdGradient(kl, at: logits, eps: 1e-2))
        report("cross-entropy", e1); report("KL", e2)
        XCTAssertLessThan(e1, 1e-3); XCTAssertLessThan(e2, 1e-3)
        XCTAssertEqual(LogitMath.klDivergence(dLogits: nil, logits: FloatBuffer(ref), referenceLogProbs: refLogProbs, rows: r),
                       0, accuracy: 1e-5)
    }

    // MARK: - Whole chain

    /// loss = Σ −log softmax(logits[row])[target] over rows of a packed batch of three sequences; gradient wrt
    /// a vector δ added (through a hook) to `blocks.0.hook_mlp_out` at one row.
    func testMLPOutDeltaGradientTinyModel() throws {
        let c = model.config
        var rng = SeededRandom(seed: 9)
        let batch = [[1, 2, 3, 4], [5, 6, 7, 8, 9, 10], [11, 12, 13]]
        let layout = BatchLayout(lengths: batch.map(\.count))
        let deltaRow = layout.row(seq: 1, pos: 2)
        let rows = [3, layout.row(seq: 1, pos: 2), layout.row(seq: 1, pos: 4), 9, 12]
        let targets = [7, 21, 30, 2, 39]
        let delta0 = randn(c.dModel, &rng, std: 0.3)
        let loss = { (delta: [Float]) -> Double in
            let out = try! self.model.forward(batch, hooks: self.addAt(0, row: deltaRow, delta), logitRows: .rows(rows))
            return nll(out.logits.array, targets: targets, vocab: c.vocabSize)
        }
        let (value, grad) = try analyticDeltaGradient(batch: batch, layer: 0, row: deltaRow, delta: delta0, rows: rows,
                                                      targets: targets)
        XCTAssertEqual(Double(value), loss(delta0), accuracy: 1e-5 * loss(delta0))
        let err = relativeError(grad, fdGradient(loss, at: delta0, eps: 1e-2))
        report("tiny chain δ at blocks.0.hook_mlp_out", err)
        XCTAssertLessThan(err, 2e-3)
        var worst = 0.0
        for _ in 0..<4 {
            let u = randn(c.dModel, &rng)
            worst = max(worst, directionalError(grad, loss, at: delta0, along: u, eps: 1e-2))
        }
        report("tiny chain, random directions (max)", worst)
        XCTAssertLessThan(worst, 1e-2)
    }

    /// `residualGradient` from block 0 with a KV prefix and a loss of cross-entropy plus KL: every coordinate of
    /// the gradient wrt the packed residual stream.
    func testResidualGradientWithPrefixMatchesFiniteDifferences() throws {
        let c = model.config, v = c.vocabSize
        var rng = SeededRandom(seed: 10)
        let cache = KVCache(config: c, sequences: 3)
        _ = try model.forward([[1], [2, 3, 4, 5], [6, 7]], cache: cache)
        let layout = BatchLayout(lengths: [3, 2, 4], startPositions: [0, 4, 2])
        let n = layout.rows, rows = [2, 4, 5, 8], targets = [1, 20, 33, 8]
        let refLogProbs = LogitMath.logSoftmax(FloatBuffer(randn(rows.count * v, &rng, std: 2)), rows: rows.count)
        let x = randn(n * c.dModel, &rng)
        let f = { (x: [Float]) -> Double in
            let xb = FloatBuffer(x)
            self.model.runLayers(xb, layout: layout, layers: 0..<c.layers, prefix: cache)
            let logits = self.model.logits(xb, rows: rows).array
            var klSum = 0.0
            for i in 0..<rows.count {
                let lp = logSoftmaxRow(logits, i, vocab: v)
                for j in 0..<v { let q = Double(refLogProbs[i * v + j]); klSum += 0.5 * exp(q) * (q - lp[j]) }
            }
            return nll(logits, targets: targets, vocab: v) + klSum
        }
        let (value, grad) = model.residualGradient(residual: FloatBuffer(x), layout: layout, startLayer: 0, rows: rows,
                                                   prefix: cache) { dLogits, logits in
            let tmp = FloatBuffer(dLogits.count)
            let a = LogitMath.crossEntropy(dLogits: dLogits, logits: logits, targets: targets)
            let b = LogitMath.klDivergence(dLogits: tmp, logits: logits, referenceLogProbs: refLogProbs, rows: rows.count,
                                           weights: [Float](repeating: 0.5, count: rows.count))
            for i in 0..<dLogits.count { dLogits[i] += tmp[i] }
            return a + b
        }
        XCTAssertEqual(Double(value), f(x), accuracy: 1e-4 * abs(f(x)))
        let err = relativeError(grad.array, fdGradient(f, at: x, eps: 1e-2))
        report("residualGradient with prefix, CE + KL", err)
        XCTAssertLessThan(err, 2e-3)
    }

    /// The same on the real model (skipped when absent): δ at `blocks.20.hook_mlp_out`, a few random directions.
    func testMLPOutDeltaGradientRealModel() throws {
        let real = try RealModel.load()
        let c = real.config, layer = min(20, c.layers - 2)
        var rng = SeededRandom(seed: 12)
        let batch = [[504, 3458, 282, 4649, 314, 3570, 28], [1206, 2049, 253, 1345, 282, 5590, 30, 378, 41, 5591, 314, 260],
                     [11820, 1341, 314, 253, 1007]]
        let layout = BatchLayout(lengths: batch.map(\.count))
        let deltaRow = layout.row(seq: 1, pos: 5)
        let rows = [layout.row(seq: 0, pos: 6), layout.row(seq: 1, pos: 5), layout.row(seq: 1, pos: 9),
                    layout.row(seq: 1, pos: 11), layout.row(seq: 2, pos: 4)]
        let targets = [1098, 9245, 282, 4649, 30]
        let delta0 = [Float](repeating: 0, count: c.dModel)
        let loss = { (delta: [Float]) -> Double in
            let out = try! real.forward(batch, hooks: self.addAt(layer, row: deltaRow, delta, model: real),
                                        logitRows: .rows(rows))
            return nll(out.logits.array, targets: targets, vocab: c.vocabSize)
        }
        let (_, grad) = try analyticDeltaGradient(batch: batch, layer: layer, row: deltaRow, delta: delta0, rows: rows,
                                                  targets: targets, model: real)
        let gnorm = Float(grad.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot())
        var worst = 0.0
        for k in 0..<4 {
            // Unit directions: two random, two leaning on the gradient (a larger derivative to measure).
            var u = unit(randn(c.dModel, &rng))
            if k % 2 == 1 { u = unit((0..<c.dModel).map { u[$0] + grad[$0] / gnorm }) }
            // The residual row has norm ~250 at layer 20: a step of 1 is still in the linear regime, and large
            // enough that float32 rounding of the loss (~48) stays ~1e-3 of the difference.
            worst = max(worst, directionalError(grad, loss, at: delta0, along: u, eps: 1))
        }
        report("real model δ at blocks.\(layer).hook_mlp_out, random directions (max)", worst)
        XCTAssertLessThan(worst, 2e-2)
    }

    /// Time of one backward (22 sequences × 15 tokens from layer 8) on the real model; runs when
    /// SCALPEL_TIMING is set (use a release build: `swift test -c release`).
    func testRealModelBackwardTiming() throws {
        guard ProcessInfo.processInfo.environment["SCALPEL_TIMING"] != nil else { throw XCTSkip("set SCALPEL_TIMING") }
        let real = try RealModel.load()
        let c = real.config
        var rng = SeededRandom(seed: 13)
        let batch = (0..<22).map { _ in (0..<15).map { _ in Int(rng.next() % UInt64(c.vocabSize)) } }
        let layout = BatchLayout(lengths: batch.map(\.count))
        let start = 8
        let x = try real.forward(batch, logitRows: .none, upTo: start).residual
        let rows = layout.lastRows, targets = rows.map { _ in Int(rng.next() % UInt64(c.vocabSize)) }
        var forwardTimes: [Double] = [], backwardTimes: [Double] = []
        for _ in 0..<3 {
            let t0 = Date()
            let xb = FloatBuffer(x.array), tape = ForwardTape()
            real.runLayers(xb, layout: layout, layers: start..<c.layers, tape: tape)
            let logits = real.logits(xb, rows: rows, tape: tape)
            let dLogits = FloatBuffer(logits.count)
            _ = LogitMath.crossEntropy(dLogits: dLogits, logits: logits, targets: targets)
            let t1 = Date()
            let dx = FloatBuffer(layout.rows * c.dModel, zeroed: true)
            real.backwardLogits(dResidual: dx, dLogits: dLogits, rows: rows, tape: tape)
            real.backwardLayers(dx, layout: layout, layers: start..<c.layers, tape: tape)
            let t2 = Date()
            forwardTimes.append(t1.timeIntervalSince(t0)); backwardTimes.append(t2.timeIntervalSince(t1))
        }
        print(String(format: "[backward timing] 22×15 from layer %d: forward+tape %.1f ms, backward %.1f ms (best of 3)",
                     start, 1000 * forwardTimes.min()!, 1000 * backwardTimes.min()!))
    }

    // MARK: - Helpers

    /// Hooks adding `delta` [D] at `blocks.{layer}.hook_mlp_out`, row `row`.
    func addAt(_ layer: Int, row: Int, _ delta: [Float], model m: LlamaModel? = nil) -> Hooks {
        var hooks = Hooks()
        let d = (m ?? model).config.dModel
        hooks.add(HookPoint(layer, .mlpOut)) { a in for j in 0..<d { a.data[row * d + j] += delta[j] } }
        return hooks
    }

    /// Loss and ∂loss/∂δ from the backward pass, for δ added at `blocks.{layer}.hook_mlp_out`, row `row`.
    func analyticDeltaGradient(batch: [[Int]], layer: Int, row: Int, delta: [Float], rows: [Int], targets: [Int],
                               model m: LlamaModel? = nil) throws -> (Float, [Float]) {
        let m = m ?? model, c = m.config, d = c.dModel
        let tape = ForwardTape()
        let out = try m.forward(batch, hooks: addAt(layer, row: row, delta, model: m), logitRows: .rows(rows), tape: tape)
        let dLogits = FloatBuffer(out.logits.count)
        let value = LogitMath.crossEntropy(dLogits: dLogits, logits: out.logits, targets: targets)
        let dx = FloatBuffer(out.layout.rows * d, zeroed: true)
        m.backwardLogits(dResidual: dx, dLogits: dLogits, rows: rows, tape: tape)
        m.backwardLayers(dx, layout: out.layout, layers: (layer + 1)..<c.layers, tape: tape)
        return (value, Array(dx.buffer[(row * d)..<((row + 1) * d)]))
    }

    func directionalError(_ grad: [Float], _ f: ([Float]) -> Double, at x: [Float], along u: [Float], eps: Float) -> Double {
        let xp = zip(x, u).map { $0 + eps * $1 }, xm = zip(x, u).map { $0 - eps * $1 }
        let numeric = (f(xp) - f(xm)) / (2 * Double(eps))
        let analytic = dot(grad, u)
        return abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-12)
    }

    func report(_ what: String, _ err: Double) {
        print(String(format: "[backward FD] %@: relative error %.2e", what, err))
    }
}

// MARK: - Numerics

private func randn(_ n: Int, _ rng: inout SeededRandom, mean: Float = 0, std: Float = 1) -> [Float] {
    (0..<n).map { _ in mean + std * Float(rng.normal()) }
}

private func dot(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    var s = 0.0
    for i in 0..<a.count { s += Double(a[i]) * Double(b[i]) }
    return s
}

/// Central differences of f along every coordinate of x.
private func fdGradient(_ f: ([Float]) -> Double, at x: [Float], eps: Float) -> [Double] {
    var g = [Double](repeating: 0, count: x.count), y = x
    for i in 0..<x.count {
        y[i] = x[i] + eps; let fp = f(y)
        y[i] = x[i] - eps; let fm = f(y)
        y[i] = x[i]
        g[i] = (fp - fm) / (2 * Double(eps))
    }
    return g
}

private func unit(_ u: [Float]) -> [Float] {
    let norm = Float(u.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot())
    return u.map { $0 / norm }
}

/// ‖a − e‖ / ‖e‖.
private func relativeError(_ a: [Float], _ e: [Double]) -> Double {
    precondition(a.count == e.count)
    var num = 0.0, den = 0.0
    for i in 0..<a.count { num += (Double(a[i]) - e[i]) * (Double(a[i]) - e[i]); den += e[i] * e[i] }
    return (num / max(den, 1e-300)).squareRoot()
}

private func logSoftmaxRow(_ logits: [Float], _ i: Int, vocab v: Int) -> [Double] {
    let row = logits[(i * v)..<((i + 1) * v)].map(Double.init), m = row.max()!
    let lse = m + log(row.map { exp($0 - m) }.reduce(0, +))
    return row.map { $0 - lse }
}

/// Σᵢ −log softmax(logits[i])[targets[i]] in Double.
private func nll(_ logits: [Float], targets: [Int], vocab v: Int) -> Double {
    targets.enumerated().reduce(0) { $0 - logSoftmaxRow(logits, $1.offset, vocab: v)[$1.element] }
}
