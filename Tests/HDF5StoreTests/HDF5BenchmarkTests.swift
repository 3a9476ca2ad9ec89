import Foundation
import XCTest
import HDF5Store

/// Store-sized benchmark: ~135M float32 values in 272 datasets laid out like a 135M-parameter
/// Llama (30 layers × 9 tensors + embedding + final norm). Opt-in because it writes ~0.5 GB:
///
///     SCALPEL_HDF5_BENCH=1 swift test -c release --scratch-path .build-hdf5 --filter HDF5BenchmarkTests
///
/// Set SCALPEL_HDF5_BENCH_DIR to keep the store somewhere other than the temp directory.
final class HDF5BenchmarkTests: HDF5TestCase {
    struct Tensor { var name: String; var shape: [Int] }

    static func modelLayout() -> [Tensor] {
        let hidden = 576, kv = 192, ffn = 1536, vocab = 49152
        var tensors = [Tensor(name: "token_embd", shape: [vocab, hidden])]
        for l in 0..<30 {
            let p = "layers/\(l)/"
            tensors += [
                Tensor(name: p + "attn_norm", shape: [hidden]),
                Tensor(name: p + "attn_q", shape: [hidden, hidden]),
                Tensor(name: p + "attn_k", shape: [kv, hidden]),
                Tensor(name: p + "attn_v", shape: [kv, hidden]),
                Tensor(name: p + "attn_output", shape: [hidden, hidden]),
                Tensor(name: p + "ffn_norm", shape: [hidden]),
                Tensor(name: p + "ffn_gate", shape: [ffn, hidden]),
                Tensor(name: p + "ffn_up", shape: [ffn, hidden]),
                Tensor(name: p + "ffn_down", shape: [hidden, ffn]),
            ]
        }
        tensors.append(Tensor(name: "output_norm", shape: [hidden]))
        return tensors
    }

    func testStoreSizedWriteAndRead() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["SCALPEL_HDF5_BENCH"] == "1" else {
            throw XCTSkip("set SCALPEL_HDF5_BENCH=1 to run the 135M-float store benchmark")
        }
        let dir = env["SCALPEL_HDF5_BENCH_DIR"] ?? tempDir
        let levels = (env["SCALPEL_HDF5_BENCH_LEVELS"] ?? "1").split(separator: ",").compactMap { Int($0) }
        let chunkKiB = Int(env["SCALPEL_HDF5_BENCH_CHUNK_KIB"] ?? "1024") ?? 1024
        let tensors = Self.modelLayout()
        let total = tensors.reduce(0) { $0 + $1.shape.reduce(1, *) }
        print("benchmark: \(tensors.count) datasets, \(total) floats (\(total * 4 / 1_000_000) MB raw)")

        // Data: dequantized-4-bit-like everywhere except norms and a few random-normal matrices.
        var data: [[Float]] = []
        for (i, t) in tensors.enumerated() {
            let n = t.shape.reduce(1, *)
            if t.shape.count == 1 {
                data.append([Float](repeating: 1, count: n).enumerated().map { 1 + Float($0.offset % 7) * 0.01 })
            } else if t.name.hasSuffix("attn_v") && i % 4 == 0 {
                data.append(randomNormal(count: n, seed: UInt64(i)))
            } else {
                data.append(dequantizedLikeWeights(count: n, seed: UInt64(i)))
            }
        }

        let codecs = (env["SCALPEL_HDF5_BENCH_CODECS"] ?? "libdeflate,zlib").split(separator: ",").map(String.init)
        for level in levels {
            for codec in codecs {
                HDF5Tuning.useLibdeflate = codec == "libdeflate"
                defer { HDF5Tuning.useLibdeflate = true }
                let path = dir + "/bench-level\(level)-\(codec).h5"
                let options = HDF5WriteOptions(compression: level == 0 ? .none : .deflate(level: level),
                                               chunked: true, targetChunkBytes: chunkKiB << 10)
                var start = Date()
                try HDF5File.createAtomically(at: path) { file in
                    for (t, values) in zip(tensors, data) {
                        try file.root.write(values, shape: t.shape, to: t.name, options: options)
                    }
                }
                let writeTime = Date().timeIntervalSince(start)
                let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
                print(String(format: "[%@] level %d, %d KiB chunks: %.1f MB on disk (%.1f%% of raw), write %.2f s (incl. fsync)",
                             HDF5Tuning.deflateBackend, level, chunkKiB, Double(size) / 1e6,
                             100 * Double(size) / Double(total * 4), writeTime))

                // Batched read into freshly allocated memory, as a model loader does.
                for direct in codec == codecs[0] ? [true, false] : [true] {
                    HDF5Tuning.directChunkIO = direct
                    defer { HDF5Tuning.directChunkIO = true }
                    var times: [Double] = []
                    for _ in 0..<(direct ? 3 : 1) {
                        start = Date()
                        let file = try HDF5File(openingForReading: path)
                        var requests: [HDF5ReadRequest<Float>] = []
                        for t in tensors {
                            let p = UnsafeMutableBufferPointer<Float>.allocate(capacity: t.shape.reduce(1, *))
                            requests.append(HDF5ReadRequest(name: t.name, buffer: p, expectedShape: t.shape))
                        }
                        try file.root.read(batch: requests)
                        try file.close()
                        times.append(Date().timeIntervalSince(start))
                        for (i, r) in requests.enumerated() {
                            if i % 37 == 0 { XCTAssertTrue(r.buffer.elementsEqual(data[i]), "mismatch in \(r.name)") }
                            r.buffer.deallocate()
                        }
                    }
                    print("[\(HDF5Tuning.deflateBackend)] read(batch:) \(direct ? "direct chunks, parallel" : "H5Dread, HDF5 filters"): "
                          + times.map { String(format: "%.2f s", $0) }.joined(separator: ", "))
                }

                // Per-dataset reads into preallocated (already touched) memory.
                var storage = tensors.map { [Float](repeating: 0, count: $0.shape.reduce(1, *)) }
                start = Date()
                let file = try HDF5File(openingForReading: path)
                for i in tensors.indices {
                    _ = try storage[i].withUnsafeMutableBufferPointer { try file.root.read(tensors[i].name, into: $0) }
                }
                try file.close()
                print(String(format: "[%@] per-dataset read(_:into:) into preallocated memory: %.2f s",
                             HDF5Tuning.deflateBackend, Date().timeIntervalSince(start)))
                XCTAssertEqual(storage[0], data[0])
                XCTAssertEqual(storage.last, data.last)
                if env["SCALPEL_HDF5_BENCH_DIR"] == nil { try? FileManager.default.removeItem(atPath: path) }
            }
        }
    }
}
