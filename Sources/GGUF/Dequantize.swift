import Dispatch
import Foundation

/// Dequantization of GGML block formats to float32.
///
/// Layouts follow ggml (`ggml-common.h` / `ggml-quants.c`), all little-endian; `d`, `m` and `dmin`
/// are IEEE half floats:
///
/// | type | block | bytes | layout | element value |
/// |------|------:|------:|--------|---------------|
/// | Q4_0 | 32  | 18  | d, qs[16] | `d·(q−8)` |
/// | Q4_1 | 32  | 20  | d, m, qs[16] | `d·q + m` |
/// | Q5_0 | 32  | 22  | d, qh[4], qs[16] | `d·(q−16)` |
/// | Q5_1 | 32  | 24  | d, m, qh[4], qs[16] | `d·q + m` |
/// | Q8_0 | 32  | 34  | d, qs[32] (int8) | `d·q` |
/// | Q4_K | 256 | 144 | d, dmin, scales[12], qs[128] | `d·sc·q − dmin·mn` |
/// | Q5_K | 256 | 176 | d, dmin, scales[12], qh[32], qs[128] | `d·sc·q − dmin·mn` |
/// | Q6_K | 256 | 210 | ql[128], qh[64], scales[16] (int8), d | `d·sc·(q−32)` |
///
/// In the 32-element formats byte `qs[j]` holds element `j` in its low nibble and element `j+16`
/// in its high nibble; for Q5 bit `j` of the little-endian u32 `qh` is bit 4 of element `j`.
/// The K formats are described at their kernels below.
public enum Dequantize {
    /// Tensors with at least this many elements are split across cores.
    static let parallelThreshold = 1 << 17

    /// Dequantizes `count` elements of `type` from `src` into `dst`.
    /// - Throws: `GGUFError.unsupportedQuantization` for a type Scalpel cannot read,
    ///   `GGUFError.wrongElementCount` when `src` is too short (or `count` is not a whole number of
    ///   blocks; then `expected` is the element count rounded up to whole blocks).
    public static func run(_ type: GGMLType, _ src: UnsafeRawBufferPointer, count: Int,
                           into dst: UnsafeMutablePointer<Float>, tensor: String = "?") throws {
        guard let kernel = kernel(for: type) else {
            throw GGUFError.unsupportedQuantization(path: "", type: type.rawValue, tensor: tensor)
        }
        let bs = type.blockSize
        guard count >= 0, count % bs == 0 else {
            throw GGUFError.wrongElementCount(tensor: tensor, expected: max(0, (count + bs - 1) / bs * bs), found: count)
        }
        guard src.count >= type.byteCount(elements: count) else {
            throw GGUFError.wrongElementCount(tensor: tensor, expected: type.byteCount(elements: count), found: src.count)
        }
        guard count > 0, let base = src.baseAddress else { return }
        let blocks = count / bs
        HalfFloat.table.withUnsafeBufferPointer { table in
            let job = Job(src: base, dst: dst, h: table.baseAddress!, typeSize: type.typeSize,
                          blockSize: bs, kernel: kernel)
            let cores = ProcessInfo.processInfo.activeProcessorCount
            if count < parallelThreshold || cores < 2 {
                job.run(0..<blocks)
                return
            }
            // A few chunks per core balances load when another thread is busy; chunks never split a block.
            let parts = min(blocks, cores * 4)
            DispatchQueue.concurrentPerform(iterations: parts) { p in
                job.run((blocks * p / parts)..<(blocks * (p + 1) / parts))
            }
        }
    }

    /// Dequantizes `count` elements of `type` from `bytes` into a new array.
    public static func floats(_ type: GGMLType, _ bytes: [UInt8], count: Int, tensor: String = "?") throws -> [Float] {
        try bytes.withUnsafeBytes { raw in
            try [Float](unsafeUninitializedCapacity: count) { buf, n in
                // On a throw the array is discarded with n == 0, so no uninitialized Float escapes.
                try run(type, raw, count: count, into: buf.baseAddress!, tensor: tensor)
                n = count
            }
        }
    }

    // MARK: - Kernels

    /// Dequantizes `blocks` whole blocks starting at `src` into `dst`. `h` is the 65536-entry
    /// half → float table.
    typealias Kernel = (_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ blocks: Int,
                        _ h: UnsafePointer<Float>) -> Void

    /// A tensor's worth of work, shared read-only by the worker threads (each writes its own range).
    struct Job: @unchecked Sendable {
        let src: UnsafeRawPointer
        let dst: UnsafeMutablePointer<Float>
        let h: UnsafePointer<Float>
        let typeSize: Int
        let blockSize: Int
        let kernel: Kernel

        func run(_ range: Range<Int>) {
            guard !range.isEmpty else { return }
            kernel(src + range.lowerBound * typeSize, dst + range.lowerBound * blockSize, range.count, h)
        }
    }

    static func kernel(for type: GGMLType) -> Kernel? {
        switch type {
        case .f32: return f32
        case .f16: return f16
        case .bf16: return bf16
        case .q4_0: return q4_0
        case .q4_1: return q4_1
        case .q5_0: return q5_0
        case .q5_1: return q5_1
        case .q8_0: return q8_0
        case .q4_K: return q4_K
        case .q5_K: return q5_K
        case .q6_K: return q6_K
        default: return nil
        }
    }

    /// Little-endian u16 at byte offset `o`.
    @inline(__always)
    static func u16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 {
        UInt16(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self))
    }

    @inline(__always)
    static func u32(_ p: UnsafeRawPointer, _ o: Int) -> UInt32 {
        UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self))
    }

    static func f32(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        #if _endian(little)
        UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: 4 * n)
        #else
        for i in 0..<n { dst[i] = Float(bitPattern: u32(src, 4 * i)) }
        #endif
    }

    static func f16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for i in 0..<n { dst[i] = h[Int(u16(src, 2 * i))] }
    }

    static func bf16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for i in 0..<n { dst[i] = Float(bitPattern: UInt32(u16(src, 2 * i)) << 16) }
    }

    static func q4_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for b in 0..<n {
            let blk = src + 18 * b
            let y = dst + 32 * b
            let d = h[Int(u16(blk, 0))]
            let qs = (blk + 2).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let q = qs[j]
                y[j] = Float(Int32(q & 0x0F) - 8) * d
                y[j + 16] = Float(Int32(q >> 4) - 8) * d
            }
        }
    }

    static func q4_1(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for b in 0..<n {
            let blk = src + 20 * b
            let y = dst + 32 * b
            let d = h[Int(u16(blk, 0))]
            let m = h[Int(u16(blk, 2))]
            let qs = (blk + 4).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let q = qs[j]
                y[j] = Float(q & 0x0F) * d + m
                y[j + 16] = Float(q >> 4) * d + m
            }
        }
    }

    static func q5_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for b in 0..<n {
            let blk = src + 22 * b
            let y = dst + 32 * b
            let d = h[Int(u16(blk, 0))]
            let qh = u32(blk, 2)
            let qs = (blk + 6).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let q = UInt32(qs[j])
                let lo = (q & 0x0F) | ((qh >> UInt32(j)) << 4 & 0x10)
                let hi = (q >> 4) | ((qh >> UInt32(j + 12)) & 0x10)
                y[j] = Float(Int32(bitPattern: lo) - 16) * d
                y[j + 16] = Float(Int32(bitPattern: hi) - 16) * d
            }
        }
    }

    static func q5_1(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for b in 0..<n {
            let blk = src + 24 * b
            let y = dst + 32 * b
            let d = h[Int(u16(blk, 0))]
            let m = h[Int(u16(blk, 2))]
            let qh = u32(blk, 4)
            let qs = (blk + 8).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let q = UInt32(qs[j])
                let lo = (q & 0x0F) | ((qh >> UInt32(j)) << 4 & 0x10)
                let hi = (q >> 4) | ((qh >> UInt32(j + 12)) & 0x10)
                y[j] = Float(lo) * d + m
                y[j + 16] = Float(hi) * d + m
            }
        }
    }

    static func q8_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for b in 0..<n {
            let blk = src + 34 * b
            let y = dst + 32 * b
            let d = h[Int(u16(blk, 0))]
            let qs = (blk + 2).assumingMemoryBound(to: Int8.self)
            for j in 0..<32 { y[j] = Float(qs[j]) * d }
        }
    }

    /// The 6-bit scale and min of sub-block `j` (0…7) from the 12 packed bytes of a Q4_K/Q5_K block
    /// (ggml's `get_scale_min_k4`). Bytes 0–3 hold scales 0–3 in their low 6 bits, bytes 4–7 mins 0–3;
    /// for sub-blocks 4–7 the low 4 bits come from the nibbles of bytes 8–11 and the top 2 bits from
    /// the spare top bits of bytes 0–3 (scale) and 4–7 (min).
    @inline(__always)
    static func scaleMinK4(_ j: Int, _ q: UnsafePointer<UInt8>) -> (scale: UInt8, min: UInt8) {
        if j < 4 { return (q[j] & 63, q[j + 4] & 63) }
        return ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }

    /// Q4_K: 256 elements as 8 sub-blocks of 32, each with its own 6-bit scale and min. The 128 `qs`
    /// bytes go in 4 groups of 32: group g's low nibbles are sub-block 2g, its high nibbles 2g+1.
    static func q4_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for b in 0..<n {
            let blk = src + 144 * b
            var y = dst + 256 * b
            let d = h[Int(u16(blk, 0))]
            let dmin = h[Int(u16(blk, 2))]
            let sc = (blk + 4).assumingMemoryBound(to: UInt8.self)
            var qs = (blk + 16).assumingMemoryBound(to: UInt8.self)
            for g in 0..<4 {
                let (s1, m1) = scaleMinK4(2 * g, sc)
                let (s2, m2) = scaleMinK4(2 * g + 1, sc)
                let d1 = d * Float(s1), dm1 = dmin * Float(m1)
                let d2 = d * Float(s2), dm2 = dmin * Float(m2)
                for l in 0..<32 { y[l] = d1 * Float(qs[l] & 0x0F) - dm1 }
                for l in 0..<32 { y[l + 32] = d2 * Float(qs[l] >> 4) - dm2 }
                y += 64
                qs += 32
            }
        }
    }

    /// Q5_K: as Q4_K plus a fifth bit per element: bit `k` of `qh[l]` is bit 4 of element `l` of
    /// sub-block `k` (so group g uses bits 2g and 2g+1).
    static func q5_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for b in 0..<n {
            let blk = src + 176 * b
            var y = dst + 256 * b
            let d = h[Int(u16(blk, 0))]
            let dmin = h[Int(u16(blk, 2))]
            let sc = (blk + 4).assumingMemoryBound(to: UInt8.self)
            let qh = (blk + 16).assumingMemoryBound(to: UInt8.self)
            var ql = (blk + 48).assumingMemoryBound(to: UInt8.self)
            for g in 0..<4 {
                let (s1, m1) = scaleMinK4(2 * g, sc)
                let (s2, m2) = scaleMinK4(2 * g + 1, sc)
                let d1 = d * Float(s1), dm1 = dmin * Float(m1)
                let d2 = d * Float(s2), dm2 = dmin * Float(m2)
                let sh1 = UInt8(2 * g), sh2 = UInt8(2 * g + 1)
                for l in 0..<32 {
                    let q = (ql[l] & 0x0F) | (((qh[l] >> sh1) & 1) << 4)
                    y[l] = d1 * Float(q) - dm1
                }
                for l in 0..<32 {
                    let q = (ql[l] >> 4) | (((qh[l] >> sh2) & 1) << 4)
                    y[l + 32] = d2 * Float(q) - dm2
                }
                y += 64
                ql += 32
            }
        }
    }

    /// Q6_K: 256 elements in two halves of 128. In a half, for l in 0..<32 the element l+32k
    /// (k = 0…3) takes its low 4 bits from `ql[l]` (k=0), `ql[l+32]` (k=1) low nibbles, then
    /// `ql[l]`, `ql[l+32]` high nibbles (k=2,3), and its top 2 bits from bits 2k…2k+1 of `qh[l]`.
    /// Each 16 elements share one int8 scale: element i of the half uses `scales[i/16]`.
    static func q6_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ h: UnsafePointer<Float>) {
        for b in 0..<n {
            let blk = src + 210 * b
            var y = dst + 256 * b
            var ql = blk.assumingMemoryBound(to: UInt8.self)
            var qh = (blk + 128).assumingMemoryBound(to: UInt8.self)
            var sc = (blk + 192).assumingMemoryBound(to: Int8.self)
            let d = h[Int(u16(blk, 208))]
            for _ in 0..<2 {
                for half in 0..<2 {          // l in 0..<16 uses scales[0,2,4,6], l in 16..<32 scales[1,3,5,7]
                    let s0 = d * Float(sc[half]), s1 = d * Float(sc[half + 2])
                    let s2 = d * Float(sc[half + 4]), s3 = d * Float(sc[half + 6])
                    for l in (16 * half)..<(16 * half + 16) {
                        let a = ql[l], c = ql[l + 32], hb = qh[l]
                        y[l] = s0 * Float(Int8(bitPattern: (a & 0x0F) | ((hb & 0x03) << 4)) - 32)
                        y[l + 32] = s1 * Float(Int8(bitPattern: (c & 0x0F) | ((hb & 0x0C) << 2)) - 32)
                        y[l + 64] = s2 * Float(Int8(bitPattern: (a >> 4) | (hb & 0x30)) - 32)
                        y[l + 96] = s3 * Float(Int8(bitPattern: (c >> 4) | ((hb & 0xC0) >> 2)) - 32)
                    }
                }
                y += 128
                ql += 64
                qh += 32
                sc += 8
            }
        }
    }
}
