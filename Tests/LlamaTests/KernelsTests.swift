import CKernels
import XCTest
@testable import Llama

/// The element-wise kernels, both versions (AVX2/FMA in CKernels when the CPU has it, portable Swift always), against
/// references computed in Double from the definitions; odd sizes exercise the scalar tails.
final class KernelsTests: XCTestCase {
    var rng = SeededRandom(seed: 21)

    func randoms(_ n: Int, scale: Double = 3) -> [Float] { (0..<n).map { _ in Float(rng.normal() * scale) } }

    /// Which versions to test: the portable one, and the AVX2 one when this CPU can run it.
    var versions: [(name: String, avx2: Bool)] {
        [("portable", false)] + (ck_has_avx2_fma() != 0 ? [("avx2", true)] : [])
    }

    func testDispatchFollowsTheCPUFlags() throws {
        // /proc/cpuinfo is an independent account of the CPU's features.
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let line = info.split(separator: "\n").first { $0.hasPrefix("flags") }
        try XCTSkipIf(line == nil, "no x86 flags in /proc/cpuinfo")
        let flags = Set(line!.split(separator: " ").map(String.init))
        XCTAssertEqual(ck_has_avx2_fma() != 0, flags.contains("avx2") && flags.contains("fma"))
        if ProcessInfo.processInfo.environment["SCALPEL_PORTABLE_KERNELS"] == nil {
            XCTAssertEqual(Kernels.usesAVX2, ck_has_avx2_fma() != 0)
        }
    }

    /// The AVX2 eˣ against libm's expf over the whole clamped range (the portable one has the same test in
    /// ForwardInvariantTests).
    func testAVX2ExpMatchesLibm() throws {
        try XCTSkipUnless(ck_has_avx2_fma() != 0, "no AVX2/FMA on this CPU")
        var x = Array(stride(from: Float(-87), to: 88, by: 0.0013)) + [-200, 100, .nan]
        let input = x
        x.withUnsafeMutableBufferPointer { ck_exp($0.baseAddress!, $0.count) }
        var worst: Float = 0
        for (v, e) in zip(input, x) where v >= -87 && v < 88 { let r = expf(v); worst = max(worst, abs(e - r) / r) }
        XCTAssertLessThan(worst, 3e-7)
        XCTAssertEqual(x[x.count - 3], expf(-87), accuracy: expf(-87) * 1e-6, "clamped below")
        XCTAssertEqual(x[x.count - 2], expf(88), accuracy: expf(88) * 1e-6, "clamped above")
        XCTAssertTrue(x[x.count - 1].isNaN, "NaN stays NaN")
    }

    func testSwiGLU() {
        for f in [1, 7, 8, 23, 64] {
            let rows = 3, gu = randoms(rows * 2 * f, scale: 4)
            for version in versions {
                var out = [Float](repeating: .nan, count: rows * f)
                gu.withUnsafeBufferPointer { g in out.withUnsafeMutableBufferPointer { o in
                    if version.avx2 { ck_swiglu_forward(o.baseAddress!, g.baseAddress!, rows, f) }
                    else { Kernels.swigluPortable(out: o.baseAddress!, gateUp: g.baseAddress!, rows: 0..<rows, width: f) }
                } }
                for r in 0..<rows { for i in 0..<f {
                    let x = Double(gu[r * 2 * f + i]), u = Double(gu[r * 2 * f + f + i])
                    let ref = x / (1 + exp(-x)) * u
                    XCTAssertEqual(Double(out[r * f + i]), ref, accuracy: 1e-6 * max(1, abs(ref)), "\(version.name) f \(f)")
                } }
            }
        }
    }

    func testRMSNorm() {
        for d in [5, 8, 37] {
            let rows = 4, x = randoms(rows * d), w = randoms(d, scale: 1)
            for version in versions {
                var out = [Float](repeating: .nan, count: rows * d), rstd = [Float](repeating: .nan, count: rows)
                x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in
                out.withUnsafeMutableBufferPointer { o in rstd.withUnsafeMutableBufferPointer { rs in
                    if version.avx2 { ck_rmsnorm_forward(o.baseAddress!, xp.baseAddress!, wp.baseAddress!, rows, d, 1e-5, rs.baseAddress!) }
                    else { Kernels.rmsnormPortable(out: o.baseAddress!, x: xp.baseAddress!, w: wp.baseAddress!, rows: 0..<rows,
                                                   width: d, eps: 1e-5, rstd: rs.baseAddress!) }
                } } } }
                for r in 0..<rows {
                    let row = x[(r * d)..<((r + 1) * d)].map(Double.init)
                    let s = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(d) + 1e-5).squareRoot()
                    XCTAssertEqual(Double(rstd[r]), s, accuracy: 1e-6 * s, version.name)
                    for i in 0..<d {
                        XCTAssertEqual(Double(out[r * d + i]), row[i] * s * Double(w[i]), accuracy: 1e-5, "\(version.name) d \(d)")
                    }
                }
            }
        }
    }

    func testSoftmaxRowAndLogSumExp() {
        for (count, valid) in [(1, 1), (9, 9), (20, 13), (100, 100)] {
            // A wide range of exponents, down to the clamp.
            let row = randoms(count, scale: 30)
            let m = row[..<valid].map(Double.init).max()!
            let total = row[..<valid].reduce(0.0) { $0 + exp(Double($1) - m) }
            for version in versions {
                var out = row
                out.withUnsafeMutableBufferPointer { o in
                    if version.avx2 { ck_softmax_row(o.baseAddress!, count, valid) }
                    else { Kernels.softmaxRowPortable(o.baseAddress!, count: count, valid: valid) }
                }
                for j in 0..<count {
                    // Relative 1e-5: the float difference x − max alone is off by up to an ulp of |x| (≤ 1e-5 here);
                    // absolute 2e-38: exponents below −87 are clamped there (e⁻⁸⁷ ≈ 1.6e-38).
                    let ref = j < valid ? exp(Double(row[j]) - m) / total : 0
                    XCTAssertEqual(Double(out[j]), ref, accuracy: 1e-5 * ref + 2e-38, "\(version.name) \(count)/\(valid)")
                }
                let lse = row.withUnsafeBufferPointer { p in
                    version.avx2 ? ck_log_sum_exp(p.baseAddress!, valid) : Kernels.logSumExpPortable(p.baseAddress!, count: valid)
                }
                XCTAssertEqual(Double(lse), m + log(total), accuracy: 2e-6 * max(1, abs(m)), version.name)
            }
        }
    }

    func testAttentionSmall() {
        // 2 query rows at positions 3, 4 (keys 0...4); head width 20 (a tail after 16); q/z and k/v rows strided.
        let t = 2, p0 = 3, keys = p0 + t, hd = 20, qStride = 27, kvStride = 25, scale: Float = 0.3
        let q = randoms(t * qStride), k = randoms(keys * kvStride), v = randoms(keys * kvStride)
        for version in versions {
            var z = [Float](repeating: .nan, count: t * qStride), scores = [Float](repeating: .nan, count: t * keys)
            q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
            z.withUnsafeMutableBufferPointer { zp in scores.withUnsafeMutableBufferPointer { sp in
                if version.avx2 {
                    ck_attention_small(sp.baseAddress!, zp.baseAddress!, qp.baseAddress!, qStride, kp.baseAddress!,
                                       vp.baseAddress!, kvStride, t, keys, p0, hd, scale)
                } else {
                    Kernels.attentionSmallPortable(scores: sp.baseAddress!, z: zp.baseAddress!, q: qp.baseAddress!,
                                                   qStride: qStride, k: kp.baseAddress!, v: vp.baseAddress!, kvStride: kvStride,
                                                   rows: t, keys: keys, firstPosition: p0, headDim: hd, scale: scale)
                }
            } } } } }
            for i in 0..<t {
                let visible = p0 + i + 1
                let logits = (0..<visible).map { j in
                    (0..<hd).reduce(0.0) { $0 + Double(q[i * qStride + $1]) * Double(k[j * kvStride + $1]) } * Double(scale)
                }
                let m = logits.max()!, total = logits.reduce(0.0) { $0 + exp($1 - m) }
                let p = logits.map { exp($0 - m) / total }
                for j in 0..<keys {
                    XCTAssertEqual(Double(scores[i * keys + j]), j < visible ? p[j] : 0, accuracy: 1e-6, version.name)
                }
                for e in 0..<hd {
                    let ref = (0..<visible).reduce(0.0) { $0 + p[$1] * Double(v[$1 * kvStride + e]) }
                    XCTAssertEqual(Double(z[i * qStride + e]), ref, accuracy: 1e-5, "\(version.name) row \(i) e \(e)")
                }
            }
        }
    }
}
