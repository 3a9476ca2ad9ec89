import CHDF5
import Foundation

/// Performance switches.
public enum HDF5Tuning {
    /// When true (default), chunked datasets whose filter pipeline is [shuffle,] deflate and whose
    /// chunks span whole rows are read and written chunk by chunk (`H5Dread_chunk` /
    /// `H5Dwrite_chunk`), with zlib and byte (un)shuffling running on all cores while HDF5 itself
    /// is only called from one thread. When false, data goes through `H5Dread` / `H5Dwrite` and
    /// HDF5's single-threaded filter pipeline. Both produce the same values and standard files
    /// that h5py and h5dump read.
    nonisolated(unsafe) public static var directChunkIO = true

    /// When true (default) and `libdeflate.so.0` can be loaded, direct chunk I/O uses libdeflate
    /// instead of zlib (same zlib-format streams, roughly twice as fast). See `deflateBackend`.
    nonisolated(unsafe) public static var useLibdeflate = true

    /// "libdeflate" or "zlib": the codec direct chunk I/O uses with the current settings.
    public static var deflateBackend: String { DeflateCodec.usesLibdeflate ? "libdeflate" : "zlib" }
}

/// Layout of a dataset that qualifies for direct chunk I/O.
struct ChunkLayout {
    let shape: [Int]
    let chunkRows: Int
    let rowElements: Int
    let elementSize: Int
    /// Position of the shuffle filter in the pipeline (bit in the chunk filter mask), if any.
    let shuffleIndex: Int?
    /// Position of the deflate filter in the pipeline.
    let deflateIndex: Int
    let deflateLevel: Int

    var chunkCount: Int { (shape[0] + chunkRows - 1) / chunkRows }
    var chunkElements: Int { chunkRows * rowElements }
    func validElements(ofChunk c: Int) -> Int { min(chunkRows, shape[0] - c * chunkRows) * rowElements }

    /// Returns the layout when `dset` is chunked along the first dimension only (each chunk a
    /// contiguous slab), filtered by exactly [shuffle, deflate] or [deflate], stored in
    /// `elementType`'s native byte order, and non-empty. Otherwise nil.
    static func inspect(_ dset: hid_t, shape: [Int], elementType: HDF5ElementType, object: String) throws -> ChunkLayout? {
        guard !shape.isEmpty, let count = shapeElementCount(shape), count > 0 else { return nil }
        let type = try H5Owned(H5Dget_type(dset), .datatype, function: "H5Dget_type", object: object)
        guard try checkTri(H5Tequal(type.id, elementType.nativeType), "H5Tequal", object) else { return nil }
        let dcpl = try H5Owned(H5Dget_create_plist(dset), .propertyList, function: "H5Dget_create_plist", object: object)
        guard H5Pget_layout(dcpl.id) == H5D_CHUNKED else { return nil }
        var chunk = [hsize_t](repeating: 0, count: shape.count)
        let rank = try checkCount(H5Pget_chunk(dcpl.id, Int32(shape.count), &chunk), "H5Pget_chunk", object)
        guard rank == shape.count, chunk[0] > 0 else { return nil }
        for d in 1..<shape.count where Int(chunk[d]) != shape[d] { return nil }

        let nfilters = try checkCount(H5Pget_nfilters(dcpl.id), "H5Pget_nfilters", object)
        var shuffleIndex: Int?
        var deflateIndex: Int?
        var level = 0
        for i in 0..<nfilters {
            var flags: UInt32 = 0
            var nelmts = 8
            var values = [UInt32](repeating: 0, count: 8)
            var config: UInt32 = 0
            let id = H5Pget_filter2(dcpl.id, UInt32(i), &flags, &nelmts, &values, 0, nil, &config)
            switch id {
            case H5Z_filter_t(H5Z_FILTER_SHUFFLE) where shuffleIndex == nil && deflateIndex == nil:
                shuffleIndex = i
            case H5Z_filter_t(H5Z_FILTER_DEFLATE) where deflateIndex == nil:
                deflateIndex = i
                level = nelmts > 0 ? Int(values[0]) : 6
            default:
                return nil
            }
        }
        guard let deflateIndex else { return nil }
        return ChunkLayout(shape: shape, chunkRows: Int(chunk[0]), rowElements: count / shape[0],
                           elementSize: elementType.byteSize, shuffleIndex: shuffleIndex,
                           deflateIndex: deflateIndex, deflateLevel: level)
    }
}

/// Collects compressed chunks (read serially through HDF5) and decodes them in parallel.
final class ChunkDecoder {
    private struct Job {
        var source: UnsafeRawPointer
        var sourceBytes: Int
        var dest: UnsafeMutableRawPointer
        var validElements: Int
        var chunkElements: Int
        var elementSize: Int
        var inflate: Bool
        var unshuffle: Bool
        var object: Int
    }

    private var jobs: [Job] = []
    private var objects: [String] = []
    /// Reusable buffer for compressed chunks, so repeated reads do not fault in fresh pages.
    private var arena: UnsafeMutableRawPointer?
    private var arenaCapacity = 0
    private var arenaUsed = 0
    /// Buffers for single chunks larger than the arena.
    private var oversized: [UnsafeMutableRawPointer] = []
    /// Compressed bytes held before decoding runs; bounds the extra memory of batch reads.
    static let arenaBytes = 64 << 20

    deinit {
        arena?.deallocate()
        oversized.forEach { $0.deallocate() }
    }

    /// Reads every raw chunk of `dset` and queues its decoding into `dest` (decoding runs when the
    /// arena is full and in `flush()`). Returns false, queuing nothing, when some chunk was never
    /// written (HDF5 would supply fill values; the caller then uses `H5Dread`).
    /// Call with the library lock held.
    func enqueue(dataset dset: hid_t, layout: ChunkLayout, dest: UnsafeMutableRawPointer, object: String) throws -> Bool {
        let n = layout.chunkCount
        var offset = [hsize_t](repeating: 0, count: layout.shape.count)
        var sizes = [Int](repeating: 0, count: n)
        for c in 0..<n {
            offset[0] = hsize_t(c * layout.chunkRows)
            var bytes: hsize_t = 0
            if H5Dget_chunk_storage_size(dset, offset, &bytes) < 0 || bytes == 0 { return false }
            sizes[c] = Int(bytes)
        }
        objects.append(object)
        let chunkBytes = layout.chunkElements * layout.elementSize
        for c in 0..<n {
            let target: UnsafeMutableRawPointer
            if sizes[c] > Self.arenaBytes {
                target = UnsafeMutableRawPointer.allocate(byteCount: sizes[c], alignment: 64)
                oversized.append(target)
            } else {
                if arenaUsed + sizes[c] > arenaCapacity {
                    if !jobs.isEmpty { try flush() }
                    if arena == nil {
                        arenaCapacity = Self.arenaBytes
                        arena = UnsafeMutableRawPointer.allocate(byteCount: arenaCapacity, alignment: 64)
                    }
                }
                target = arena! + arenaUsed
                arenaUsed += sizes[c]
            }
            offset[0] = hsize_t(c * layout.chunkRows)
            var mask: UInt32 = 0
            try check(H5Dread_chunk(dset, h5Default, offset, &mask, target), "H5Dread_chunk", object)
            jobs.append(Job(source: UnsafeRawPointer(target), sourceBytes: sizes[c],
                            dest: dest + c * chunkBytes,
                            validElements: layout.validElements(ofChunk: c),
                            chunkElements: layout.chunkElements, elementSize: layout.elementSize,
                            inflate: mask & (1 << UInt32(layout.deflateIndex)) == 0,
                            unshuffle: layout.shuffleIndex.map { mask & (1 << UInt32($0)) == 0 } ?? false,
                            object: objects.count - 1))
        }
        return true
    }

    /// Decodes every queued chunk on all cores (pure computation, no HDF5 calls), then releases
    /// the compressed data.
    func flush() throws {
        defer {
            oversized.forEach { $0.deallocate() }
            oversized.removeAll()
            jobs.removeAll()
            arenaUsed = 0
        }
        guard !jobs.isEmpty else { return }
        var status = [Int32](repeating: 0, count: jobs.count)
        jobs.withUnsafeBufferPointer { jobs in
            status.withUnsafeMutableBufferPointer { status in
                DispatchQueue.concurrentPerform(iterations: jobs.count) { i in
                    status[i] = ChunkDecoder.decode(jobs[i])
                }
            }
        }
        if let bad = status.firstIndex(where: { $0 != 0 }) {
            throw HDF5Error.callFailed(function: "deflate decompression (status \(status[bad]))",
                                       object: objects[jobs[bad].object])
        }
    }

    /// Decodes one chunk. Returns 0, a zlib error code, or -100 for a size mismatch.
    private static func decode(_ job: Job) -> Int32 {
        let fullBytes = job.chunkElements * job.elementSize
        let validBytes = job.validElements * job.elementSize
        var data = job.source
        var scratch: UnsafeMutableRawPointer?
        defer { scratch?.deallocate() }
        if job.inflate {
            let inPlace = !job.unshuffle && validBytes == fullBytes
            let out = inPlace ? job.dest : UnsafeMutableRawPointer.allocate(byteCount: fullBytes, alignment: 64)
            if !inPlace { scratch = out }
            let rc = DeflateCodec.decompress(job.source, sourceBytes: job.sourceBytes, into: out, destBytes: fullBytes)
            if rc != 0 { return rc }
            if inPlace { return 0 }
            data = UnsafeRawPointer(out)
        } else if job.sourceBytes != fullBytes {
            return -100
        }
        if job.unshuffle && job.elementSize > 1 && job.chunkElements > 1 {
            ByteShuffle.unshuffle(data, into: job.dest, count: job.validElements,
                                  stride: job.chunkElements, elementSize: job.elementSize)
        } else {
            job.dest.copyMemory(from: data, byteCount: validBytes)
        }
        return 0
    }
}

/// Encodes chunks in parallel and writes them serially with `H5Dwrite_chunk`.
enum ChunkEncoder {
    private struct Encoded {
        var data: UnsafeMutableRawPointer?
        var bytes: Int = 0
        var status: Int32 = 0
    }

    /// Writes all of `source` (native layout, `layout.shape` elements) into `dset`.
    /// Call with the library lock held.
    static func write(dataset dset: hid_t, layout: ChunkLayout, source: UnsafeRawPointer, object: String) throws {
        let n = layout.chunkCount
        let batch = max(8, ProcessInfo.processInfo.activeProcessorCount * 8)
        var offset = [hsize_t](repeating: 0, count: layout.shape.count)
        var start = 0
        while start < n {
            let end = min(n, start + batch)
            var encoded = [Encoded](repeating: Encoded(), count: end - start)
            encoded.withUnsafeMutableBufferPointer { out in
                DispatchQueue.concurrentPerform(iterations: end - start) { k in
                    out[k] = encode(chunk: start + k, layout: layout, source: source)
                }
            }
            defer { encoded.forEach { $0.data?.deallocate() } }
            for (k, e) in encoded.enumerated() {
                if e.status != 0 {
                    throw HDF5Error.callFailed(function: "deflate compression (status \(e.status))", object: object)
                }
                offset[0] = hsize_t((start + k) * layout.chunkRows)
                try check(H5Dwrite_chunk(dset, h5Default, 0, offset, e.bytes, e.data), "H5Dwrite_chunk", object)
            }
            start = end
        }
    }

    /// True when deflating a sample of up to 64 KiB from `data` (`bytes` long) after byte-shuffling
    /// gives a smaller result than without. Both trials run in parallel.
    static func shuffleHelps(_ data: UnsafeRawPointer, bytes: Int, elementSize: Int, level: Int) -> Bool {
        let count = min(bytes, 64 << 10) / elementSize
        guard elementSize > 1, count > 1 else { return false }
        let sampleBytes = count * elementSize
        let shuffled = UnsafeMutableRawPointer.allocate(byteCount: sampleBytes, alignment: 64)
        defer { shuffled.deallocate() }
        ByteShuffle.shuffle(data, into: shuffled, count: count, stride: count, elementSize: elementSize)
        var sizes = [Int](repeating: .max, count: 2)
        sizes.withUnsafeMutableBufferPointer { out in
            DispatchQueue.concurrentPerform(iterations: 2) { k in
                let src = k == 0 ? data : UnsafeRawPointer(shuffled)
                let result = DeflateCodec.compress(src, sourceBytes: sampleBytes, level: level)
                if result.status == 0 { out[k] = result.bytes }
                result.data?.deallocate()
            }
        }
        return sizes[1] < sizes[0]
    }

    /// Pads chunk `c` to full size (edge chunks are stored full-size, zero-filled, as HDF5 does),
    /// shuffles it when the pipeline has shuffle, and deflates it.
    private static func encode(chunk c: Int, layout: ChunkLayout, source: UnsafeRawPointer) -> Encoded {
        let size = layout.elementSize
        let fullBytes = layout.chunkElements * size
        let valid = layout.validElements(ofChunk: c)
        let src = source + c * fullBytes
        var input = src
        var scratch: UnsafeMutableRawPointer?
        defer { scratch?.deallocate() }
        if layout.shuffleIndex != nil && size > 1 && layout.chunkElements > 1 {
            let buf = UnsafeMutableRawPointer.allocate(byteCount: fullBytes, alignment: 64)
            scratch = buf
            ByteShuffle.shuffle(src, into: buf, count: valid, stride: layout.chunkElements, elementSize: size)
            input = UnsafeRawPointer(buf)
        } else if valid < layout.chunkElements {
            let buf = UnsafeMutableRawPointer.allocate(byteCount: fullBytes, alignment: 64)
            scratch = buf
            buf.copyMemory(from: src, byteCount: valid * size)
            (buf + valid * size).initializeMemory(as: UInt8.self, repeating: 0, count: fullBytes - valid * size)
            input = UnsafeRawPointer(buf)
        }
        let result = DeflateCodec.compress(input, sourceBytes: fullBytes, level: layout.deflateLevel)
        return Encoded(data: result.data, bytes: result.bytes, status: result.status)
    }
}

