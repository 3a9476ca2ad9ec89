import Foundation
import XCTest
import HDF5Store

/// Files written here must be ordinary HDF5 that the reference tools read.
final class HDF5InteropTests: HDF5TestCase {

    /// Writes a small store: compressed weights (direct-chunk path), a vocabulary, attributes.
    private func writeFixture(_ path: String) throws {
        try HDF5File.createAtomically(at: path) { file in
            let root = file.root
            // 100 000 floats: compressed by default; value i is (i % 1000) * 0.5 - 7.
            let weights = (0..<100_000).map { Float($0 % 1000) * 0.5 - 7 }
            try root.write(weights, shape: [250, 400], to: "layers/0/ffn_up")
            try root.write(dequantizedLikeWeights(count: 65_536, seed: 2), shape: [256, 256], to: "layers/0/attn_q")
            try root.write([Int64(7), -8], shape: [2], to: "ids")
            try root.setAttribute("model", "SmolLM-135M — tiny ✓")
            try root.setAttribute("layers", 30)
            try root.setAttribute("eps", [1e-5])
            try root.writeStrings(["<|endoftext|>", "Ġthe", "日本", ""], to: "tokenizer/tokens")
            try root.group("layers/0").setAttribute("kind", "decoder")
        }
    }

    func testH5DumpReadsHeader() throws {
        let path = tempPath("dump.h5")
        try writeFixture(path)
        guard let result = try runTool("h5dump", ["-H", "-p", path]) else {
            throw XCTSkip("h5dump is not on PATH")
        }
        XCTAssertEqual(result.status, 0, result.stderr)
        let out = result.stdout
        XCTAssertTrue(out.contains("DATASET \"ffn_up\""), out)
        XCTAssertTrue(out.contains("DATASPACE  SIMPLE { ( 250, 400 ) / ( 250, 400 ) }"), out)
        XCTAssertTrue(out.contains("H5T_IEEE_F32LE"), out)
        XCTAssertTrue(out.contains("DEFLATE { LEVEL 1 }"), out)
        XCTAssertTrue(out.contains("ATTRIBUTE \"model\""), out)
        XCTAssertTrue(out.contains("CSET H5T_CSET_UTF8"), out)
        XCTAssertTrue(out.contains("DATASET \"tokens\""), out)

        // h5dump decodes the data through HDF5's own filter pipeline.
        guard let data = try runTool("h5dump", ["-d", "/layers/0/ffn_up", "-s", "1,0", "-c", "1,3", path]) else { return }
        XCTAssertEqual(data.status, 0, data.stderr)
        // Row 1 starts at element 400: (400 % 1000) * 0.5 - 7 = 193, then 193.5, 194.
        XCTAssertTrue(data.stdout.contains("193, 193.5, 194"), data.stdout)
    }

    func testH5pyReadsDatasetsAttributesAndStrings() throws {
        guard let probe = try runTool("python3", ["-c", "import h5py, numpy"]), probe.status == 0 else {
            throw XCTSkip("python3 with h5py is not available")
        }
        let path = tempPath("h5py.h5")
        try writeFixture(path)
        let script = """
        import h5py, sys
        f = h5py.File(sys.argv[1], "r")
        w = f["layers/0/ffn_up"][()]
        print("shape", w.shape, w.dtype)
        print("w", repr(float(w[0, 0])), repr(float(w[1, 0])), repr(float(w[249, 399])))
        print("sum", repr(float(w.astype("float64").sum())))
        m = f.attrs["model"]
        print("model", type(m).__name__, m)
        print("layers", int(f.attrs["layers"]))
        print("kind", f["layers/0"].attrs["kind"])
        toks = f["tokenizer/tokens"].asstr()[()]
        print("tokens", "|".join(toks), len(toks))
        print("ids", [int(x) for x in f["ids"][()]])
        print("q", f["layers/0/attn_q"].compression, f["layers/0/attn_q"].shape)
        """
        guard let result = try runTool("python3", ["-c", script, path]) else { return }
        XCTAssertEqual(result.status, 0, result.stderr)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines, [
            "shape (250, 400) float32",
            "w -7.0 193.0 492.5",                    // 99999 % 1000 = 999 → 999 * 0.5 - 7
            // 100 repetitions of sum_{k<1000} (k*0.5 - 7) = 100 * (249750 - 7000)
            "sum 24275000.0",
            "model str SmolLM-135M — tiny ✓",
            "layers 30",
            "kind decoder",
            "tokens <|endoftext|>|Ġthe|日本| 4",
            "ids [7, -8]",
            "q gzip (256, 256)",
        ])
    }

    /// Files written by h5py (gzip+shuffle chunks of h5py's choosing, fixed-length strings)
    /// read back correctly through both the direct-chunk path and the fallback.
    func testReadsFilesWrittenByH5py() throws {
        guard let probe = try runTool("python3", ["-c", "import h5py, numpy"]), probe.status == 0 else {
            throw XCTSkip("python3 with h5py is not available")
        }
        let path = tempPath("from-h5py.h5")
        let script = """
        import h5py, numpy as np, sys
        with h5py.File(sys.argv[1], "w") as f:
            a = (np.arange(300 * 500, dtype=np.float32) % 1000) * 0.25
            f.create_dataset("rowchunks", data=a.reshape(300, 500), chunks=(7, 500), compression="gzip",
                             compression_opts=4, shuffle=True)
            f.create_dataset("blockchunks", data=a.reshape(300, 500), chunks=(64, 64), compression="gzip")
            f.create_dataset("big_endian", data=np.arange(10, dtype=">i4"))
            f.create_dataset("fixed", data=np.array([b"ab", b"cde", b""], dtype="S3"))
            sparse = f.create_dataset("sparse", shape=(100, 50), dtype="f4", chunks=(10, 50),
                                      compression="gzip", fillvalue=2.5)
            sparse[20:30] = 1.0          # only the third chunk is ever written
            f.attrs["fixed_attr"] = np.bytes_(b"xyz")
            f.attrs["str_attr"] = "héllo"
            f.attrs["i16"] = np.int16(-5)
            f.attrs["f32s"] = np.array([0.5, 1.5], dtype=np.float32)
        """
        guard let result = try runTool("python3", ["-c", script, path]) else { return }
        XCTAssertEqual(result.status, 0, result.stderr)
        for direct in [true, false] {
            HDF5Tuning.directChunkIO = direct
            let root = try HDF5File(openingForReading: path).root
            for name in ["rowchunks", "blockchunks"] {
                let r = try root.read(name, as: Float.self)
                XCTAssertEqual(r.shape, [300, 500])
                XCTAssertEqual(r.values[0], 0)
                XCTAssertEqual(r.values[1001], 0.25)               // 1001 % 1000 = 1
                XCTAssertEqual(r.values[149_999], 249.75)          // 149999 % 1000 = 999
            }
            XCTAssertEqual(try root.read("big_endian", as: Int32.self).values, Array(0..<10))
            // Unwritten chunks hold the fill value: the direct path must fall back to HDF5 here.
            let sparse = try root.read("sparse", as: Float.self).values
            XCTAssertEqual(sparse[0], 2.5)
            XCTAssertEqual(sparse[20 * 50], 1.0)
            XCTAssertEqual(sparse[30 * 50 - 1], 1.0)
            XCTAssertEqual(sparse[30 * 50], 2.5)
            XCTAssertEqual(sparse.filter { $0 == 1.0 }.count, 500)
            XCTAssertEqual(try root.readStrings("fixed"), ["ab", "cde", ""])
            XCTAssertEqual(try root.stringAttribute("fixed_attr"), "xyz")
            XCTAssertEqual(try root.stringAttribute("str_attr"), "héllo")
            XCTAssertEqual(try root.intAttribute("i16"), -5)
            XCTAssertEqual(try root.doubleArrayAttribute("f32s"), [0.5, 1.5])
        }
    }
}
