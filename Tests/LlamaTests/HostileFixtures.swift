import Foundation
import XCTest
import GGUF
import HDF5Store
@testable import Llama

/// Generated model files for the hardening tests: a tiny valid Llama GGUF (and its store), and the small
/// malicious files of issue 11 part 3, each built from it by changing one thing.
enum HostileFixtures {
    /// Where the tests write their many files: a RAM file system when there is one (writes to a disk-backed /tmp
    /// take ~10 ms each), else the temporary directory.
    static let scratchBase: URL = FileManager.default.isWritableFile(atPath: "/dev/shm")
        ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory

    /// Shape of the tiny model: 2 layers, D 8, 2 heads over 1 KV head of width 4, F 16, vocabulary 262 (tied).
    struct Shape {
        var layers = 2, d = 8, heads = 2, kvHeads = 1, headDim = 4, ffn = 16
    }

    /// 256 byte tokens, two merges and their results, an end-of-text token.
    static let tokens: [String] = ["<|endoftext|>"] + (0..<256).map { ByteLevel.string(forByte: UInt8($0)) }
        + ["he", "ll", "hell", "hello", "Ġt"]
    static let merges = ["h e", "l l", "he ll", "hell o", "Ġ t"]

    /// Metadata of the tiny model (config + tokenizer), in file order.
    static func metadata(_ s: Shape = Shape()) -> [(key: String, value: GGUFValue)] {
        [("general.architecture", .string("llama")), ("general.name", .string("hostile-tiny")),
         ("llama.block_count", .uint32(UInt32(s.layers))), ("llama.embedding_length", .uint32(UInt32(s.d))),
         ("llama.attention.head_count", .uint32(UInt32(s.heads))),
         ("llama.attention.head_count_kv", .uint32(UInt32(s.kvHeads))),
         ("llama.rope.dimension_count", .uint32(UInt32(s.headDim))),
         ("llama.feed_forward_length", .uint32(UInt32(s.ffn))), ("llama.context_length", .uint32(64)),
         ("llama.rope.freq_base", .float32(10000)), ("llama.attention.layer_norm_rms_epsilon", .float32(1e-5)),
         ("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("smollm")),
         ("tokenizer.ggml.tokens", .array(.string, tokens.map { .string($0) })),
         ("tokenizer.ggml.token_type", .array(.int32, tokens.indices.map { .int32($0 == 0 ? 3 : 1) })),
         ("tokenizer.ggml.merges", .array(.string, merges.map { .string($0) })),
         ("tokenizer.ggml.bos_token_id", .uint32(0)), ("tokenizer.ggml.eos_token_id", .uint32(0))]
    }

    /// A valid tiny model as a writer (float32 tensors with small deterministic values).
    static func writer(_ s: Shape = Shape(), layers tensorLayers: Int? = nil) -> GGUFWriter {
        var w = GGUFWriter()
        w.metadata = metadata(s)
        let c = LlamaConfig(layers: tensorLayers ?? s.layers, dModel: s.d, heads: s.heads, kvHeads: s.kvHeads,
                            headDim: s.headDim, ffnDim: s.ffn, vocabSize: tokens.count, contextLength: 64,
                            ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: true)
        var rng = SeededRandom(seed: 3)
        for p in LlamaParameter.all(c) {
            let shape = p.shape(c), n = shape.reduce(1, *)
            w.addF32(p.ggufName, dims: shape.reversed(), values: (0..<n).map { _ in Float(0.2 * rng.normal()) })
        }
        return w
    }

    /// The tiny model with metadata `key` set to `value` (replaced in place, or appended).
    static func with(_ key: String, _ value: GGUFValue, _ base: GGUFWriter = writer()) -> GGUFWriter {
        var w = base
        if let i = w.metadata.firstIndex(where: { $0.key == key }) { w.metadata[i].value = value } else {
            w.metadata.append((key, value))
        }
        return w
    }

    /// A malicious GGUF: metadata of a SmolLM2-sized model (D 576, 9 heads over 3, F 1536) claiming `layers`
    /// blocks, holding only the token embedding and `padding` bytes of extra metadata. Before validation, loading it
    /// allocated every block's zero-filled weights before noticing the first missing tensor.
    static func manyBlocks(_ layers: Int, padding: Int = 1_100_000) -> GGUFWriter {
        var w = GGUFWriter()
        w.metadata = metadata(Shape(layers: layers, d: 576, heads: 9, kvHeads: 3, headDim: 64, ffn: 1536))
        w.metadata.append(("general.description", .string(String(repeating: "x", count: padding))))
        w.addF32("token_embd.weight", dims: [576, tokens.count], values: [Float](repeating: 0.01, count: 576 * tokens.count))
        return w
    }

    /// The reproductions of issue 11 part 3 as GGUF files (name, writer or raw bytes).
    static func ggufReproductions() -> [(name: String, bytes: [UInt8])] {
        var out: [(String, [UInt8])] = [
            ("head_count_kv-0", with("llama.attention.head_count_kv", .uint32(0)).serialize()),
            ("head_count-0", with("llama.attention.head_count", .uint32(0)).serialize()),
            ("head_count-0-no-rope-dim", { var w = with("llama.attention.head_count", .uint32(0))
                w.metadata.removeAll { $0.key == "llama.rope.dimension_count" }; return w.serialize() }()),
            ("block_count-minus-1", with("llama.block_count", .int32(-1)).serialize()),
            ("embedding_length-minus-576", with("llama.embedding_length", .int32(-576)).serialize()),
            ("vocab_size-2^40", with("llama.vocab_size", .uint64(1 << 40)).serialize()),
            ("vocab_size-2^62", with("llama.vocab_size", .uint64(1 << 62)).serialize()),
            ("block_count-300", manyBlocks(300).serialize()),
            ("block_count-1e6", manyBlocks(1_000_000).serialize()),
        ]
        // A tensor claiming dims [2^36, 2^36] (2^72 elements).
        var w = writer()
        w.tensors[0].dims = [1 << 36, 1 << 36]
        out.append(("dims-2^36x2^36", w.serialize()))
        // A 41.7 MB metadata array (of bytes, and of one-character strings) in a file whose tensors are truncated.
        for (name, strings) in [("array-41.7MB-uint8", false), ("array-41.7MB-strings", true)] {
            var big = writer()
            big.metadata.append(("x.big", .uint8(0)))
            var bytes = big.serialize()
            bytes = Array(bytes[0..<(bytes.count - 256)])  // the last tensors now end past the file
            out.append((name, insertBigArray(bytes, strings: strings)))
        }
        return out
    }

    /// Replaces the last metadata entry (`x.big`, a uint8 0, the 1 byte at the end of the metadata) by a 41.7 MB
    /// array, shifting the tensor table: element type uint8 (41.7 M elements) or string (4.6 M one-byte strings).
    static func insertBigArray(_ bytes: [UInt8], strings: Bool) -> [UInt8] {
        // Locate `x.big`'s value: key bytes, then the u32 type tag 0 (uint8), then the 1-byte value.
        let key = Array("x.big".utf8)
        guard let at = (0...(bytes.count - key.count)).first(where: { Array(bytes[$0..<($0 + key.count)]) == key }) else {
            fatalError("x.big not found")
        }
        let tagAt = at + key.count
        var out = Array(bytes[0..<tagAt])
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        u32(GGUFValueType.array.rawValue)
        let total = 41_700_000
        if strings {
            let n = total / 9
            u32(GGUFValueType.string.rawValue); u64(UInt64(n))
            out.reserveCapacity(out.count + total + bytes.count)
            // 26 one-letter strings (length u64 1, then the letter), repeated: few appends even unoptimized.
            var chunk: [UInt8] = []
            for i in 0..<26 { chunk += [1, 0, 0, 0, 0, 0, 0, 0, UInt8(97 + i)] }
            for _ in 0..<(n / 26) { out.append(contentsOf: chunk) }
            out.append(contentsOf: chunk[0..<(9 * (n % 26))])
        } else {
            u32(GGUFValueType.uint8.rawValue); u64(UInt64(total))
            out.append(contentsOf: [UInt8](repeating: 7, count: total))
        }
        out.append(contentsOf: bytes[(tagAt + 5)...])
        // The data section moves with the table (re-aligned by the reader); the cut keeps the last tensors past the end.
        return out
    }

    /// A store of the tiny model at `path` (imported from its GGUF).
    static func store(at path: String, scratch: String) throws {
        let g = scratch + "/tiny-for-store.gguf"
        try writer().write(to: g)
        try ModelStore.importGGUF(g, to: path, toolVersion: "test")
    }

    /// Store reproductions: `/config` attribute overrides of issue 11 part 3.
    static let storeReproductions: [(name: String, attribute: String, value: Int)] = [
        ("store-layers-minus-1", "layers", -1), ("store-d_model-minus-5", "d_model", -5),
        ("store-vocab-2^40", "vocab_size", 1 << 40), ("store-layers-1e6", "layers", 1_000_000),
        ("store-kv_heads-0", "kv_heads", 0),
    ]

    /// Copies the store at `base` to `path` and sets `/config@attribute = value`.
    static func mutatedStore(base: String, to path: String, attribute: String, value: Int) throws {
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: base, toPath: path)
        let h5 = try HDF5File(openingForWriting: path)
        try h5.root.group("config").setAttribute(attribute, value)
        try h5.close()
    }

    /// The tiny model's GGUF bytes.
    static let validBytes: [UInt8] = writer().serialize()
}
