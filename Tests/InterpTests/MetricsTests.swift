import XCTest
@testable import Interp
@testable import Llama

/// The patching metrics against their definitions, computed here in Double from the logits.
final class MetricsTests: XCTestCase {
    func logits(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed: seed)
        return (0..<n).map { _ in Float(rng.normal() * 4) }
    }

    func logSoftmax(_ x: [Float]) -> [Double] {
        let m = Double(x.max()!), lse = m + log(x.reduce(0.0) { $0 + exp(Double($1) - m) })
        return x.map { Double($0) - lse }
    }

    func testProbabilityLogitDifferenceAndKL() {
        let clean = logits(1000, seed: 1), patched = logits(1000, seed: 2)
        let lpClean = logSoftmax(clean), lpPatched = logSoftmax(patched)

        let prob = Metric(kind: .prob, answer: 17)
        XCTAssertEqual(prob.score(fullLogits: patched), exp(lpPatched[17]), accuracy: 1e-6 * exp(lpPatched[17]))

        let diff = Metric(kind: .logitDiff, answer: 17, foil: 400)
        XCTAssertEqual(diff.columns, [17, 400])
        XCTAssertEqual(diff.score(fullLogits: patched), Double(patched[17]) - Double(patched[400]), accuracy: 1e-6)

        let kl = Metric(kind: .kl, answer: 17, cleanLogits: clean)
        let ref = zip(lpClean, lpPatched).reduce(0.0) { $0 + exp($1.0) * ($1.0 - $1.1) }
        XCTAssertGreaterThan(ref, 1)
        XCTAssertEqual(kl.score(fullLogits: patched), ref, accuracy: 1e-5 * ref)
        // Nearly identical distributions (the top logit moved by 0.05): a small KL must not drown in rounding. The
        // patched log-sum-exp is a Float, good to an ulp of |lse| (≈ 1e-6): that is the absolute allowance.
        var near = clean
        near[clean.indices.max { clean[$0] < clean[$1] }!] += 0.05
        let refNear = zip(lpClean, logSoftmax(near)).reduce(0.0) { $0 + exp($1.0) * ($1.0 - $1.1) }
        XCTAssertGreaterThan(refNear, 1e-5)
        XCTAssertEqual(kl.score(fullLogits: near), refNear, accuracy: 1e-6)
        XCTAssertEqual(kl.score(fullLogits: clean), 0, accuracy: 1e-6)
    }
}
