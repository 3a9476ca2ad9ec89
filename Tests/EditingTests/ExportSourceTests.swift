import Foundation
import XCTest
import GGUF
import Hashing
@testable import Llama
@testable import Editing

/// `--dtype source` exports on a tiny generated GGUF holding Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K and F32
/// tensors (plus a `rope_freqs.weight` that is no parameter), imported into a store: unedited tensors come out block
/// for block, edited ones as F16 / Q8_0 / F32, and the source is found and verified or refused.
final class ExportSourceTests: XCTestCase {
    /// dModel 64 (a multiple of 32 for the 32-element formats), ffnDim 256 (one K block per row of ffn_down).
    static func config(vocab: Int) -> LlamaConfig {
        LlamaConfig(layers: 2, dModel: 64, heads: 4, kvHeads: 2, headDim: 16, ffnDim: 256, vocabSize: vocab,
                    contextLength: 64, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: false)
    }

    /// The storage type of each parameter in the generated source.
    static func sourceType(_ p: LlamaParameter) -> GGMLType {
        switch p {
        case .tokenEmbedding: return .q8_0
        case .output: return .q4_1
        case .outputNorm, .attnNorm, .ffnNorm: return .f32
        case .wq: return .q4_1
        case .wk: return .q4_0
        case .wv: return .q8_0
        case .wo: return .q5_1
        case .wGate: return .q5_0
        case .wUp: return .q4_1
        case let .wDown(l): return l == 0 ? .q6_K : .q4_K
        }
    }

    /// Random blocks of `type` for `n` elements: quantized normals for the types `Quantize` writes, else random bytes
    /// with every half-float scale set to a small finite value (so that any quantized bits decode to finite weights).
    static func blocks(_ type: GGMLType, _ n: Int, _ rng: inout SeededRandom) throws -> [UInt8] {
        if Quantize.supported.contains(type) {
            return try Quantize.bytes(type, (0..<n).map { _ in Float(0.3 * rng.normal()) })
        }
        var out = (0..<type.byteCount(elements: n)).map { _ in UInt8(truncatingIfNeeded: Int(rng.next() % 256)) }
        let halves: [Int]
        switch type {
        case .q5_0: halves = [0]
        case .q5_1, .q4_K, .q5_K: halves = [0, 2]
        case .q6_K: halves = [208]
        default: preconditionFailure("no generator for \(type.name)")
        }
        let scale: Float = type.blockSize == 256 ? 0.002 : 0.02
        for b in 0..<(n / type.blockSize) {
            for h in halves {
                let bits = HalfFloat.fromFloat(scale * Float(1 + rng.next() % 8) / 8)
                out[b * type.typeSize + h] = UInt8(bits & 0xFF)
                out[b * type.typeSize + h + 1] = UInt8(bits >> 8)
            }
        }
        return out
    }

    /// Writes the quantized source GGUF at `path` (tensors in a non-canonical order, and a rope_freqs tensor).
    static func writeSource(_ path: String, seed: UInt64 = 5) throws {
        let tok = try ExportFixtures.tinyTokenizer(pre: "smollm")
        let c = config(vocab: tok.vocabularySize)
        var rng = SeededRandom(seed: seed)
        let shell = ModelFile(path: path, model: LlamaModel(weights: LlamaWeights(zeros: c)), tokenizer: tok,
                              provenance: ModelProvenance(sourceFile: "x", sourceSize: 0, sourceSHA256: "", quantization: [:]),
                              metadata: [("general.architecture", .string("llama")), ("general.name", .string("tiny-q"))])
        var w = GGUFWriter()
        w.metadata = ModelExport.ggufMetadata(shell, dtype: .f32, toolVersion: "test").filter { !$0.key.hasPrefix("scalpel.") }
            .map { $0.key == "general.file_type" ? ($0.key, GGUFValue.uint32(3)) : $0 }
        for p in LlamaParameter.all(c).reversed() {
            let shape = p.shape(c), n = shape.reduce(1, *), type = sourceType(p)
            let bytes = type == .f32 ? (0..<n).map { _ in Float(1 + 0.1 * rng.normal()) }.withUnsafeBytes { Array($0) }
                                     : try blocks(type, n, &rng)
            w.tensors.append((p.ggufName, Array(shape.reversed()), type, bytes))
        }
        w.tensors.insert(("rope_freqs.weight", [8], .f32, [Float](repeating: 1, count: 8).withUnsafeBytes { Array($0) }), at: 3)
        try w.write(to: path)
    }

    /// A folder with `src.gguf` and its import `model.h5`.
    func fixture() throws -> (dir: String, gguf: String, store: String) {
        let dir = try ExportFixtures.tempDir(self)
        let gguf = dir + "/src.gguf", store = dir + "/model.h5"
        try Self.writeSource(gguf)
        try ModelStore.importGGUF(gguf, to: store, toolVersion: "test")
        return (dir, gguf, store)
    }

    static func rawSHA(_ f: GGUFFile, _ name: String) -> String {
        f.withRawBytes(of: f.tensor(name)!) { SHA256.hex($0) }
    }

    let batch = [[3, 90, 100, 120, 200, 7, 45, 260], [5, 6, 7]]

    func testUneditedStoreComesOutBlockForBlock() throws {
        let (dir, gguf, store) = try fixture()
        let m = try ModelFile.open(store)
        let source = try XCTUnwrap(SourceCheckpoint.locate(for: m))  // found beside the store by its provenance name
        XCTAssertEqual(source.path, dir + "/src.gguf")
        XCTAssertEqual(source.sha256, try SHA256.hex(fileAt: gguf))
        let r = try ModelExport.ggufKeepingSource(m, source: source, to: dir + "/out.gguf", toolVersion: "test")
        XCTAssertEqual(r.dtype, "source")
        XCTAssertEqual(r.source?.edited, [])
        let src = try GGUFFile(path: gguf), out = try GGUFFile(path: dir + "/out.gguf")
        XCTAssertEqual(out.tensors.map(\.name), src.tensors.map(\.name))
        XCTAssertEqual(out.tensors.map(\.type), src.tensors.map(\.type))
        XCTAssertEqual(out.tensors.map(\.dims), src.tensors.map(\.dims))
        for t in src.tensors { XCTAssertEqual(Self.rawSHA(out, t.name), Self.rawSHA(src, t.name), t.name) }
        XCTAssertEqual(Set(src.tensors.map(\.type.name)), ["Q8_0", "Q4_1", "F32", "Q4_0", "Q5_1", "Q5_0", "Q6_K", "Q4_K"])
        XCTAssertEqual(r.source?.copied.values.reduce(0, +), src.tensors.count)
        XCTAssertEqual(out["general.file_type"]?.int, 3)
        XCTAssertEqual(out["scalpel.export_dtype"]?.string, "source")
        XCTAssertEqual(out["scalpel.edited_tensors"]?.string, "")
        XCTAssertEqual(out["scalpel.source_sha256"]?.string, source.sha256)
        // The same tensor data plus a little more metadata (the provenance keys).
        XCTAssertLessThan(abs(r.bytes - src.fileSize), 4096)
        let back = try ModelFile.open(dir + "/out.gguf")
        XCTAssertEqual(try back.model.forward(batch, logitRows: .all).logits.array.map(\.bitPattern),
                       try m.model.forward(batch, logitRows: .all).logits.array.map(\.bitPattern))
        XCTAssertEqual(back.tokenizer.vocabulary, m.tokenizer.vocabulary)
        XCTAssertEqual(back.tokenizer.mergeList, m.tokenizer.mergeList)

        // A model opened from the .gguf itself is its own source.
        let g = try ModelFile.open(gguf)
        let own = try XCTUnwrap(SourceCheckpoint.locate(for: g))
        XCTAssertEqual(own.path, gguf)
        try ModelExport.ggufKeepingSource(g, source: own, to: dir + "/own.gguf")
        let o = try GGUFFile(path: dir + "/own.gguf")
        for t in src.tensors { XCTAssertEqual(Self.rawSHA(o, t.name), Self.rawSHA(src, t.name), t.name) }
    }

    func testEditedTensorsAreReencodedAndTheRestCopied() throws {
        let (dir, gguf, store) = try fixture()
        let m = try ModelFile.open(store)
        let c = m.config
        // Rank-one changes of a Q4_K matrix (ffn_down of block 1) and a Q4_1 one (attn_q of block 0), as ROME makes.
        for p in [LlamaParameter.wDown(1), .wq(0)] {
            var v = m.model.weights.values(p)
            let cols = p.shape(c)[1]
            for i in 0..<p.shape(c)[0] { for j in 0..<cols { v[i * cols + j] += 0.01 * Float(i % 5 - 2) * Float(j % 3) } }
            m.model.weights.setValues(p, v)
        }
        let source = try XCTUnwrap(SourceCheckpoint.locate(for: m, explicit: gguf))
        let src = try GGUFFile(path: gguf)
        let edited = ["blk.1.ffn_down.weight", "blk.0.attn_q.weight"]  // the source's order (parameters reversed)
        for dtype in EditedTensorDType.allCases {
            let path = dir + "/out-\(dtype.rawValue).gguf"
            let r = try ModelExport.ggufKeepingSource(m, source: source, to: path, edited: dtype, toolVersion: "test")
            XCTAssertEqual(r.source?.edited, edited)
            XCTAssertEqual(r.source?.copied.values.reduce(0, +), src.tensors.count - 2)
            let out = try GGUFFile(path: path)
            XCTAssertEqual(out["scalpel.edited_tensors"]?.string, edited.joined(separator: ","))
            XCTAssertEqual(out["scalpel.edited_dtype"]?.string, dtype.rawValue)
            for t in src.tensors where !edited.contains(t.name) {
                XCTAssertEqual(out.tensor(t.name)?.type, t.type, t.name)
                XCTAssertEqual(Self.rawSHA(out, t.name), Self.rawSHA(src, t.name), t.name)
            }
            for (name, p) in zip(edited, [LlamaParameter.wDown(1), .wq(0)]) {
                XCTAssertEqual(out.tensor(name)?.type, dtype.ggmlType, name)
                let want = m.model.weights.values(p), got = try out.floats(name)
                switch dtype {
                case .f32: XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), name)
                case .f16: XCTAssertEqual(got, want.map { HalfFloat.toFloat(HalfFloat.fromFloat($0)) }, name)
                case .q8_0:
                    // Each 32-value block within half a step (max |x| / 127) of the value, plus the f16 scale's rounding.
                    for b in 0..<(want.count / 32) {
                        let block = want[(32 * b)..<(32 * b + 32)], step = block.map(abs).max()! / 127
                        for k in block.indices { XCTAssertLessThanOrEqual(abs(got[k] - want[k]), 0.5 * step + 2e-3 * abs(want[k]) + 1e-7, "\(name)[\(k)]") }
                    }
                }
            }
            let back = try ModelFile.open(path)
            let a = try back.model.forward(batch, logitRows: .all).logits.array, e = try m.model.forward(batch, logitRows: .all).logits.array
            if dtype == .f32 { XCTAssertEqual(a.map(\.bitPattern), e.map(\.bitPattern)) } else { XCTAssertNotEqual(a, e) }
            XCTAssertLessThan(ExportFixtures.maxAbsDiff(a, e), 0.05 * (e.map(abs).max() ?? 1))
        }
    }

    func testTheSourceIsFoundOrRefusedInOneLine() throws {
        let (dir, gguf, store) = try fixture()
        let m = try ModelFile.open(store)
        // Through a link to the store from elsewhere: found beside the link's target.
        let elsewhere = try ExportFixtures.tempDir(self)
        try FileManager.default.createSymbolicLink(atPath: elsewhere + "/link.h5", withDestinationPath: store)
        let viaLink = try ModelFile.open(elsewhere + "/link.h5")
        XCTAssertTrue(SourceCheckpoint.samePath(try XCTUnwrap(SourceCheckpoint.locate(for: viaLink)).path, gguf))
        XCTAssertEqual(SourceCheckpoint.candidates(for: viaLink).count, 3)
        // A different file under the source's name beside the store, and as --source: refused, whatever the caller wants.
        try FileManager.default.moveItem(atPath: gguf, toPath: dir + "/original.gguf")
        try Self.writeSource(gguf, seed: 6)
        let other = try SHA256.hex(fileAt: gguf)
        for explicit in [nil, gguf] {
            for required in [true, false] {
                XCTAssertThrowsError(try SourceCheckpoint.locate(for: m, explicit: explicit, required: required)) {
                    XCTAssertEqual($0 as? ExportError, .sourceMismatch(path: gguf, expected: m.provenance.sourceSHA256, found: other))
                    XCTAssertFalse("\($0)".contains("\n"))
                    XCTAssertTrue("\($0)".contains("--source"), "\($0)")
                }
            }
        }
        XCTAssertEqual(try SourceCheckpoint.locate(for: m, explicit: dir + "/original.gguf")?.path, dir + "/original.gguf")
        // No file of that name anywhere: nil when the caller can fall back, else an error naming where it looked.
        try FileManager.default.removeItem(atPath: gguf)
        XCTAssertNil(try SourceCheckpoint.locate(for: m, required: false))
        XCTAssertThrowsError(try SourceCheckpoint.locate(for: m)) {
            guard case let .sourceNotFound(name, searched)? = $0 as? ExportError else { return XCTFail("\($0)") }
            XCTAssertEqual(name, "src.gguf")
            XCTAssertEqual(searched.first, gguf)
            XCTAssertTrue("\($0)".contains("--dtype f32"), "\($0)")
        }
        XCTAssertThrowsError(try SourceCheckpoint.locate(for: m, explicit: dir + "/missing.gguf")) {
            XCTAssertEqual($0 as? ExportError, .sourceNotFound(sourceFile: dir + "/missing.gguf", searched: [dir + "/missing.gguf"]))
        }
        // A model that did not come from a GGUF (a safetensors folder) has no source to keep.
        try ModelExport.safetensors(m, to: dir + "/hf")
        let hf = try ModelFile.open(dir + "/hf")
        XCTAssertFalse(SourceCheckpoint.isGGUFSourced(hf))
        XCTAssertNil(try SourceCheckpoint.locate(for: hf, required: false))
        XCTAssertThrowsError(try SourceCheckpoint.locate(for: hf)) {
            XCTAssertEqual($0 as? ExportError, .sourceNotGGUF(model: dir + "/hf", sourceFile: hf.provenance.sourceFile))
        }
        // A source whose tensors do not fit the model (another configuration), forced with a matching hash.
        let wrong = dir + "/wrong.gguf"
        try ModelExport.gguf(ExportFixtures.tiny(tied: false), to: wrong)
        let forged = SourceCheckpoint(path: wrong, file: try GGUFFile(path: wrong), sha256: m.provenance.sourceSHA256)
        XCTAssertThrowsError(try ModelExport.ggufKeepingSource(m, source: forged, to: dir + "/x.gguf")) {
            guard case .sourceIncompatible? = $0 as? ExportError else { return XCTFail("\($0)") }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x.gguf"))
    }
}
