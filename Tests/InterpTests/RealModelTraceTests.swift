import Foundation
import XCTest
@testable import Interp
import Llama

/// Tracing on the default model (skipped when it has not been fetched).
final class RealModelTraceTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func model() throws -> ModelFile {
        let p = Self.root.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("default model not fetched") }
        return try ModelFile.openGGUF(p, hash: false)
    }

    /// A symmetric token replacement (swap which name repeats): the corrupted run prefers the other name, so its
    /// logit difference has the opposite sign and a comparable size; restoring the final residual gives clean.
    func testSymmetricSTRPairFlipsTheLogitDifference() throws {
        let m = try model()
        let tracer = try Tracer(model: m.model, tokenizer: m.tokenizer,
                                prompt: "When John and Mary went to the store, John gave a drink to", subject: nil,
                                corruption: .prompt("When John and Mary went to the store, Mary gave a drink to"),
                                target: " Mary")
        let john = m.tokenizer.encode(" John")[0]
        let metric = tracer.metric(.logitDiff, foil: john)
        let clean = metric.score(fullLogits: tracer.cleanLogits)
        let corrupted = metric.score(fullLogits: tracer.corruptedLogits[0])
        XCTAssertGreaterThan(clean, 0.5, "the model does IOI: Mary over John")
        XCTAssertLessThan(corrupted, -0.5, "the swapped prompt prefers John")
        XCTAssertEqual(abs(corrupted) / clean, 1, accuracy: 0.5, "clean \(clean), corrupted \(corrupted)")
    }

    /// The Eiffel Tower trace: clean p(Paris) ≈ 0.70; restoring the subject's embeddings everywhere gives clean.
    func testEiffelTowerNoiseTrace() throws {
        let m = try model()
        let tracer = try Tracer(model: m.model, tokenizer: m.tokenizer, prompt: "The Eiffel Tower is located in the city of",
                                subject: "Eiffel Tower",
                                corruption: .noise(std: 3 * Corruption.embeddingStd(model: m.model, tokenizer: m.tokenizer,
                                                                                     subjects: ["Eiffel Tower"]),
                                                   samples: 3, seed: 1))
        XCTAssertEqual(tracer.subject, 1...3)
        XCTAssertEqual(m.tokenizer.tokenText(tracer.answer), " Paris")
        let r = try tracer.trace(TraceSettings(kind: .resid, window: 1, metric: .prob))
        XCTAssertEqual(r.clean, 0.70, accuracy: 0.01)
        XCTAssertLessThan(r.corrupted, 0.2)
        // Position 0 precedes the subject: restoring it changes nothing. The last position late in the network carries
        // the answer (ROME's late site).
        XCTAssertEqual(r.scores[0][0], r.corrupted, accuracy: 1e-9)
        XCTAssertGreaterThan(r.scores[9][27], r.corrupted + 0.5 * (r.clean - r.corrupted))
    }
}
