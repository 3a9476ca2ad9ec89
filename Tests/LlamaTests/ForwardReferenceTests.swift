import XCTest
@testable import Llama

/// The forward pass against logits from an independent implementation (`../shared/reference`).
final class ForwardReferenceTests: XCTestCase {
    func testLogitsMatchReferenceFromGGUF() throws {
        try checkReference(try RealModel.load())
    }

    /// The same figures from the imported HDF5 store (`scalpel import` / `scalpel fetch`).
    func testLogitsMatchReferenceFromHDF5Store() throws {
        let store = TestPaths.root.appendingPathComponent("weights/SmolLM2-135M-Instruct.h5").path
        guard FileManager.default.fileExists(atPath: store) else { throw XCTSkip("default store not imported") }
        let m = try ModelFile.open(store)
        guard m.appliedEdits.isEmpty else { throw XCTSkip("the default store holds active edits") }
        try checkReference(m.model)
    }

    func checkReference(_ model: LlamaModel) throws {
        guard let ref = try TestPaths.sharedJSON("reference/smollm2_logits.json") as? [String: Any],
              let cases = ref["cases"] as? [[String: Any]] else { return XCTFail("reference file layout") }
        XCTAssertGreaterThan(cases.count, 0)
        let batch = cases.map { ($0["ids"] as! [Int]) }
        // All prompts in one packed batch: also checks that sequences do not leak into each other.
        let out = try model.forward(batch)
        for (i, c) in cases.enumerated() {
            let logits = out.row(i)
            let top10 = c["top10"] as! [[Any]]
            let ours = LogitMath.topK(logits, 10)
            XCTAssertEqual(ours, top10.map { $0[0] as! Int }, "top-10 order for \(c["prompt"]!)")
            for t in top10 {
                let id = t[0] as! Int, expected = (t[2] as! NSNumber).floatValue
                XCTAssertEqual(logits[id], expected, accuracy: 2e-3, "logit \(id) of \(c["prompt"]!)")
            }
            let lse = (c["logsumexp"] as! NSNumber).floatValue
            XCTAssertEqual(LogitMath.logSumExp(logits), lse, accuracy: 2e-3)
            for (k, v) in c["probe_logits"] as! [String: NSNumber] {
                XCTAssertEqual(logits[Int(k)!], v.floatValue, accuracy: 2e-3, "probe \(k)")
            }
        }
    }

    func testEiffelTowerPredictsParis() throws {
        let model = try RealModel.load()
        let ids = [504, 414, 46682, 18669, 314, 3807, 281, 260, 2240, 282]
        let logits = try model.forward([ids]).row(0)
        let lse = LogitMath.logSumExp(logits)
        XCTAssertEqual(LogitMath.topK(logits, 1), [7042])  // " Paris"
        XCTAssertEqual(exp(logits[7042] - lse), 0.70, accuracy: 0.03)
    }
}
