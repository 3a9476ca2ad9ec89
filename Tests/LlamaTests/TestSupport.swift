import Foundation
import XCTest
import GGUF
@testable import Llama

/// Paths and shared fixtures for the model tests.
enum TestPaths {
    /// The package root (two levels above this file's folder).
    static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// `shared/` beside the package (`/work/main` → `/work/shared`), or one level up for a worktree (`/work/wt/NAME`).
    static let shared: URL = {
        let beside = root.deletingLastPathComponent().appendingPathComponent("shared")
        let above = root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared")
        return FileManager.default.fileExists(atPath: beside.path) ? beside : above
    }()
    static let defaultGGUF = root.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path

    static func requireModel() throws -> String {
        guard FileManager.default.fileExists(atPath: defaultGGUF) else {
            throw XCTSkip("default model not fetched (scripts/fetch-model.sh)")
        }
        return defaultGGUF
    }

    static func sharedJSON(_ rel: String) throws -> Any {
        let url = shared.appendingPathComponent(rel)
        guard let data = try? Data(contentsOf: url) else { throw XCTSkip("\(url.path) not available") }
        return try JSONSerialization.jsonObject(with: data)
    }
}

/// The real default model, loaded once per test process.
enum RealModel {
    private static var cached: LlamaModel?
    static func load() throws -> LlamaModel {
        if let cached { return cached }
        let f = try GGUFFile(path: try TestPaths.requireModel())
        let c = try LlamaConfig(gguf: f)
        let m = LlamaModel(weights: try LlamaWeights.load(config: c, from: f))
        cached = m
        return m
    }
}

/// A tiny random Llama (for unit tests): 2 layers, D 16, 4 heads over 2 KV heads, F 24, V 40.
enum TinyModel {
    static let config = LlamaConfig(layers: 2, dModel: 16, heads: 4, kvHeads: 2, headDim: 4, ffnDim: 24, vocabSize: 40,
                                    contextLength: 64, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: true)

    static func make(seed: UInt64 = 7, config c: LlamaConfig = config) -> LlamaModel {
        var rng = SeededRandom(seed: seed)
        let w = LlamaWeights(zeros: c)
        for p in LlamaParameter.all(c) {
            let count = p.shape(c).reduce(1, *)
            let isNorm: Bool = { switch p { case .attnNorm, .ffnNorm, .outputNorm: return true; default: return false } }()
            let values = (0..<count).map { _ in isNorm ? Float(1 + 0.1 * rng.normal()) : Float(0.3 * rng.normal()) }
            w.setValues(p, values)
        }
        return LlamaModel(weights: w)
    }
}
