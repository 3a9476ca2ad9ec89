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
