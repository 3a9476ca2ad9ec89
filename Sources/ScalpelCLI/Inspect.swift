import ArgumentParser
import Foundation
import Llama

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Architecture, parameter count, quantization and provenance of a model.")
    @OptionGroup var model: ModelOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let m = try model.open()
        let c = m.config
        let info: [String: Any] = [
            "path": m.path, "architecture": "llama", "layers": c.layers, "d_model": c.dModel, "heads": c.heads,
            "kv_heads": c.kvHeads, "head_dim": c.headDim, "ffn_dim": c.ffnDim, "vocab_size": c.vocabSize,
            "context_length": c.contextLength, "rope_base": Double(c.ropeBase), "rms_eps": Double(c.rmsEps),
            "tied_embeddings": c.tiedEmbeddings, "parameters": c.parameterCount,
            "tokenizer": ["pre": m.tokenizer.preTokenizer.rawValue, "vocab": m.tokenizer.vocabularySize],
            "source": ["file": m.provenance.sourceFile, "size": m.provenance.sourceSize,
                       "sha256": m.provenance.sourceSHA256, "quantization": m.provenance.quantization],
        ]
        if json { return try printJSON(info) }
        print("\(m.path)")
        print("  architecture   llama, \(c.layers) layers, d=\(c.dModel), heads \(c.heads) (kv \(c.kvHeads)) × \(c.headDim), ffn \(c.ffnDim)")
        print("  vocabulary     \(c.vocabSize) (\(m.tokenizer.preTokenizer.rawValue) pre-tokenizer), context \(c.contextLength)")
        print("  parameters     \(c.parameterCount) (\(String(format: "%.1f", Double(c.parameterCount) / 1e6))M)\(c.tiedEmbeddings ? ", tied embeddings" : "")")
        print("  rope base      \(c.ropeBase), rms eps \(c.rmsEps)")
        let q = m.provenance.quantization.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
        print("  source         \(m.provenance.sourceFile) (\(m.provenance.sourceSize) bytes, \(q))")
        print("  sha256         \(m.provenance.sourceSHA256)")
    }
}
