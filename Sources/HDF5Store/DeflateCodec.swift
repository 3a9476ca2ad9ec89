import CHDF5
import Foundation

/// zlib-format deflate used for HDF5's deflate filter (filter id 1) in direct chunk I/O.
///
/// When the libdeflate shared library (`libdeflate.so.0`, Debian package libdeflate0) can be
/// loaded at run time it is used — it inflates about 1.8× and deflates about 2.4× faster than
/// zlib on model weights. Otherwise zlib is used. Both produce standard zlib streams that HDF5,
/// h5py and h5dump decode; no build-time dependency on libdeflate exists.
///
/// All functions are pure computation and safe to call from several threads at once.
enum DeflateCodec {
    private typealias AllocDecompressor = @convention(c) () -> OpaquePointer?
    private typealias FreeHandle = @convention(c) (OpaquePointer?) -> Void
    private typealias ZlibDecompress = @convention(c) (
        OpaquePointer?, UnsafeRawPointer?, Int, UnsafeMutableRawPointer?, Int, UnsafeMutablePointer<Int>?) -> Int32
    private typealias AllocCompressor = @convention(c) (Int32) -> OpaquePointer?
    private typealias ZlibCompress = @convention(c) (
        OpaquePointer?, UnsafeRawPointer?, Int, UnsafeMutableRawPointer?, Int) -> Int
    private typealias ZlibCompressBound = @convention(c) (OpaquePointer?, Int) -> Int

    /// The libdeflate entry points (signatures of libdeflate's stable 1.x C API).
    private struct Libdeflate {
        let allocDecompressor: AllocDecompressor
        let freeDecompressor: FreeHandle
        let zlibDecompress: ZlibDecompress
        let allocCompressor: AllocCompressor
        let freeCompressor: FreeHandle
        let zlibCompress: ZlibCompress
        let zlibCompressBound: ZlibCompressBound
    }

    private static let libdeflate: Libdeflate? = {
        guard let handle = dlopen("libdeflate.so.0", RTLD_NOW | RTLD_LOCAL) else { return nil }
        func symbol<F>(_ name: String, _: F.Type) -> F? {
            dlsym(handle, name).map { unsafeBitCast($0, to: F.self) }
        }
        guard let a = symbol("libdeflate_alloc_decompressor", AllocDecompressor.self),
              let b = symbol("libdeflate_free_decompressor", FreeHandle.self),
              let c = symbol("libdeflate_zlib_decompress", ZlibDecompress.self),
              let d = symbol("libdeflate_alloc_compressor", AllocCompressor.self),
              let e = symbol("libdeflate_free_compressor", FreeHandle.self),
              let f = symbol("libdeflate_zlib_compress", ZlibCompress.self),
              let g = symbol("libdeflate_zlib_compress_bound", ZlibCompressBound.self)
        else { return nil }
        return Libdeflate(allocDecompressor: a, freeDecompressor: b, zlibDecompress: c,
                          allocCompressor: d, freeCompressor: e, zlibCompress: f, zlibCompressBound: g)
    }()

    /// True when libdeflate will be used (it is loaded and `HDF5Tuning.useLibdeflate` is on).
    static var usesLibdeflate: Bool { HDF5Tuning.useLibdeflate && libdeflate != nil }

    /// Inflates `sourceBytes` of zlib stream into exactly `destBytes` bytes.
    /// Returns 0 on success, otherwise a nonzero codec status (-100: wrong decompressed size).
    static func decompress(_ source: UnsafeRawPointer, sourceBytes: Int,
                           into dest: UnsafeMutableRawPointer, destBytes: Int) -> Int32 {
        if usesLibdeflate, let lib = libdeflate, let d = lib.allocDecompressor() {
            defer { lib.freeDecompressor(d) }
            var actual = 0
            let rc = lib.zlibDecompress(d, source, sourceBytes, dest, destBytes, &actual)
            if rc != 0 { return 1000 + rc }
            return actual == destBytes ? 0 : -100
        }
        var length = uLong(destBytes)
        let rc = uncompress(dest.assumingMemoryBound(to: Bytef.self), &length,
                            source.assumingMemoryBound(to: Bytef.self), uLong(sourceBytes))
        if rc != Z_OK { return rc }
        return length == uLong(destBytes) ? 0 : -100
    }

    /// Deflates `sourceBytes` at `level` (1...9) into a newly allocated buffer that the caller
    /// deallocates. Returns nil and a status on failure.
    static func compress(_ source: UnsafeRawPointer, sourceBytes: Int, level: Int)
        -> (data: UnsafeMutableRawPointer?, bytes: Int, status: Int32)
    {
        if usesLibdeflate, let lib = libdeflate, let c = lib.allocCompressor(Int32(level)) {
            defer { lib.freeCompressor(c) }
            let bound = lib.zlibCompressBound(c, sourceBytes)
            let out = UnsafeMutableRawPointer.allocate(byteCount: max(bound, 1), alignment: 64)
            let n = lib.zlibCompress(c, source, sourceBytes, out, bound)
            if n == 0 {
                out.deallocate()
                return (nil, 0, 2000)
            }
            return (out, n, 0)
        }
        var bound = compressBound(uLong(sourceBytes))
        let out = UnsafeMutableRawPointer.allocate(byteCount: Int(bound), alignment: 64)
        let rc = compress2(out.assumingMemoryBound(to: Bytef.self), &bound,
                           source.assumingMemoryBound(to: Bytef.self), uLong(sourceBytes), Int32(level))
        if rc != Z_OK {
            out.deallocate()
            return (nil, 0, rc)
        }
        return (out, Int(bound), 0)
    }
}
