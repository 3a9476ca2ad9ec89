import XCTest
@testable import Llama

/// Properties of the forward pass on a tiny random model: each compares two different computations.
final class ForwardInvariantTests: XCTestCase {
    let model = TinyModel.make()

    func testBatchedEqualsSeparate() throws {
        let a = [1, 5, 9, 2], b = [3, 3, 7, 11, 13, 0, 39]
        let both = try model.forward([a, b], logitRows: .all)
        let sa = try model.forward([a], logitRows: .all), sb = try model.forward([b], logitRows: .all)
        for r in 0..<a.count { XCTAssertEqual(both.row(r), sa.row(r)) }
        for r in 0..<b.count {
            let x = both.row(a.count + r), y = sb.row(r)
            for (u, v) in zip(x, y) { XCTAssertEqual(u, v, accuracy: 1e-5) }
        }
    }

    /// Three computations of the same logits: the batch split over the cores with the last block run at the last
    /// rows only (no hooks), one packed batch with attention over sequences in parallel (an empty `Hooks` turns the
    /// split and the trimming off), and each sequence alone with logits at every row.
    func testSplitBatchTrimmedLastBlockAndParallelAttentionAgree() throws {
        var rng = SeededRandom(seed: 3)
        let batch = (0..<16).map { i in (0..<(30 + i % 7)).map { _ in Int(rng.next() % 40) } }
        XCTAssertTrue(model.canSplit(batch, hooks: nil, logitRows: .last, cache: nil, tape: nil) || Kernels.cores == 1)
        let split = try model.forward(batch)
        let packed = try model.forward(batch, hooks: Hooks())
        XCTAssertEqual(split.rows, packed.rows)
        XCTAssertEqual(split.rows, packed.layout.lastRows)
        for (i, seq) in batch.enumerated() {
            let alone = try model.forward([seq], logitRows: .all).row(seq.count - 1)
            for (u, v) in zip(split.row(i), alone) { XCTAssertEqual(u, v, accuracy: 1e-5) }
            for (u, v) in zip(packed.row(i), alone) { XCTAssertEqual(u, v, accuracy: 1e-5) }
        }
        // .all and upTo through the split path: every row, and the residual of a partial run.
        let all = try model.forward(batch, logitRows: .all), allPacked = try model.forward(batch, hooks: Hooks(), logitRows: .all)
        XCTAssertEqual(all.logits.count, allPacked.logits.count)
        for i in 0..<all.logits.count { XCTAssertEqual(all.logits[i], allPacked.logits[i], accuracy: 1e-5) }
        let part = try model.forward(batch, logitRows: .none, upTo: 1), partPacked = try model.forward(batch, hooks: Hooks(), logitRows: .none, upTo: 1)
        XCTAssertEqual(part.residual.count, partPacked.residual.count)
        // Relative: the split and packed GEMMs block rows differently (a few float32 ulps of values up to ~6; seen
        // 1.6e-6 absolute on an AVX-512 OpenBLAS kernel).
        for i in 0..<part.residual.count {
            XCTAssertEqual(part.residual[i], partPacked.residual[i], accuracy: 4e-6 * max(1, abs(partPacked.residual[i])))
        }
    }

    /// The vectorized eˣ against libm's expf over its whole clamped range, and log-sum-exp against a Double sum.
    func testFastExpAndLogSumExpMatchLibm() {
        var worst: Float = 0
        var x: Float = -87
        while x < 88 {
            let lanes = SIMD8<Float>((0..<8).map { x + Float($0) * 0.0013 })
            let e = Kernels.exp8(lanes)
            for i in 0..<8 where lanes[i] <= 88 { let r = expf(lanes[i]); worst = max(worst, abs(e[i] - r) / r) }
            x += 0.0107
        }
        XCTAssertLessThan(worst, 3e-7)
        XCTAssertEqual(Kernels.exp8(SIMD8(repeating: -200))[0], expf(-87), accuracy: 1e-40)
        var rng = SeededRandom(seed: 5)
        for n in [1, 7, 8, 9, 513, 49152] {
            let v = (0..<n).map { _ in Float(rng.normal() * 6) }
            let m = v.max()!
            let ref = Double(m) + log(v.reduce(0.0) { $0 + exp(Double($1 - m)) })
            let got = v.withUnsafeBufferPointer { Kernels.logSumExp($0.baseAddress!, count: n) }
            XCTAssertEqual(Double(got), ref, accuracy: 2e-6 * max(1, abs(ref)), "n = \(n)")
        }
    }

    /// Top-k sampling (selection of the k-th largest) against the definition: sort all V stably, keep k, then the same
    /// inverse-CDF draw; logits with many ties at the boundary included.
    func testTopKSamplerMatchesFullSortWithTies() {
        var rng = SeededRandom(seed: 21)
        for trial in 0..<40 {
            let logits = (0..<300).map { _ in trial % 2 == 0 ? Float(Int(rng.next() % 7)) : Float(rng.normal() * 2) }
            let k = 1 + Int(rng.next() % 60)
            var r1 = SeededRandom(seed: UInt64(trial)), r2 = SeededRandom(seed: UInt64(trial))
            let got = logits.withUnsafeBufferPointer { Sampler(temperature: 0.7, topK: k).sample($0, rng: &r1) }
            let order = Array(logits.indices.sorted { logits[$0] > logits[$1] }.prefix(k))  // stable: ties by index
            let m = order.map { logits[$0] }.max()!
            let w = order.map { Double(expf((logits[$0] - m) / 0.7)) }
            var u = r2.uniform() * w.reduce(0, +), expected = order.last!
            for (i, wi) in zip(order, w) { u -= wi; if u <= 0 { expected = i; break } }
            XCTAssertEqual(got, expected, "trial \(trial), k \(k)")
        }
    }

    func testKVCacheIncrementalEqualsFullForward() throws {
        let ids = [4, 8, 15, 16, 23, 42 % 40, 1, 2]
        let full = try model.forward([ids], logitRows: .all)
        let cache = KVCache(config: model.config, sequences: 1)
        _ = try model.forward([Array(ids[0..<3])], cache: cache)
        for t in 3..<ids.count {
            let step = try model.forward([[ids[t]]], cache: cache)
            for (u, v) in zip(step.row(0), full.row(t)) { XCTAssertEqual(u, v, accuracy: 1e-4) }
        }
    }

    func testCausality() throws {
        // Changing a later token must not change earlier positions' logits.
        let x = try model.forward([[1, 2, 3, 4, 5]], logitRows: .all)
        let y = try model.forward([[1, 2, 3, 9, 5]], logitRows: .all)
        for r in 0..<3 { XCTAssertEqual(x.row(r), y.row(r)) }
        XCTAssertNotEqual(x.row(3), y.row(3))
    }

    func testHooksSeeEveryPointWithRightWidth() throws {
        var hooks = Hooks()
        var seen: [String: Int] = [:]
        for l in 0..<model.config.layers { for k in HookKind.allCases {
            hooks.add(HookPoint(l, k)) { a in seen[a.point.name] = a.width * a.layout.rows }
        } }
        _ = try model.forward([[1, 2, 3]], hooks: hooks)
        XCTAssertEqual(seen.count, model.config.layers * HookKind.allCases.count)
        XCTAssertEqual(seen["blocks.1.mlp.hook_post"], 3 * 24)
        XCTAssertEqual(seen["blocks.0.attn.hook_k"], 3 * 2 * 4)
        XCTAssertEqual(seen["blocks.0.attn.hook_z"], 3 * 4 * 4)
    }

    func testResidualDecompositionAndPatchingMLPOut() throws {
        // resid_post = resid_mid + mlp_out and resid_mid = resid_pre + attn_out, read through hooks.
        var hooks = Hooks()
        var store: [String: [Float]] = [:]
        for k in [HookKind.residPre, .attnOut, .residMid, .mlpOut, .residPost] {
            hooks.add(HookPoint(1, k)) { a in store[k.rawValue] = Array(a.buffer) }
        }
        _ = try model.forward([[7, 7, 1]], hooks: hooks)
        for i in 0..<(3 * 16) {
            XCTAssertEqual(store["hook_resid_mid"]![i], store["hook_resid_pre"]![i] + store["hook_attn_out"]![i], accuracy: 1e-5)
            XCTAssertEqual(store["hook_resid_post"]![i], store["hook_resid_mid"]![i] + store["hook_mlp_out"]![i], accuracy: 1e-5)
        }
        // Zeroing the last layer's mlp_out and attn_out makes the output equal the head applied to resid_pre.
        var zero = Hooks()
        for k in [HookKind.attnOut, .mlpOut] { zero.add(HookPoint(1, k)) { a in a.buffer.update(repeating: 0) } }
        let patched = try model.forward([[7, 7, 1]], hooks: zero, logitRows: .all)
        let direct = try model.forward([[7, 7, 1]], logitRows: .none, upTo: 1)
        let head = model.logits(direct.residual, rows: [0, 1, 2])
        for i in 0..<(3 * 40) { XCTAssertEqual(patched.logits[i], head[i], accuracy: 1e-5) }
    }

    func testRejectsBadInput() {
        XCTAssertThrowsError(try model.forward([[]])) { XCTAssertEqual($0 as? LlamaError, .emptyPrompt) }
        XCTAssertThrowsError(try model.forward([[1, 40]])) { XCTAssertEqual($0 as? LlamaError, .tokenOutOfRange(id: 40, vocab: 40)) }
    }

    func testGreedyGenerationIsDeterministicAndSampledIsSeeded() throws {
        let a = try model.generate([1, 2, 3], maxTokens: 6)
        XCTAssertEqual(a.count, 6)
        XCTAssertEqual(a, try model.generate([1, 2, 3], maxTokens: 6))
        let s1 = try model.generate([1, 2, 3], maxTokens: 8, sampler: Sampler(temperature: 1.5, topK: 10), seed: 42)
        let s2 = try model.generate([1, 2, 3], maxTokens: 8, sampler: Sampler(temperature: 1.5, topK: 10), seed: 42)
        XCTAssertEqual(s1, s2)
        // Greedy generation equals argmax of full forwards, step by step.
        var ids = [1, 2, 3]
        for t in a {
            let logits = try model.forward([ids]).row(0)
            XCTAssertEqual(LogitMath.topK(logits, 1)[0], t)
            ids.append(t)
        }
    }
}
