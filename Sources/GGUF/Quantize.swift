/// Encoding of float32 values into GGML types, for writing tensors with `GGUFWriter`.
///
/// F32, F16, BF16 are plain conversions (round to nearest even). Q8_0, Q4_0, Q4_1 follow ggml's
/// reference quantizers (`quantize_row_*_ref`), so re-quantizing gives the blocks llama.cpp would.
/// Block layouts are documented on `Dequantize`.
public enum Quantize {
    /// Types `run` can produce.
    public static let supported: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1]

    /// Encodes `src` as `type`.
    /// - Throws: `GGUFError.unsupportedQuantization` for a type not in `supported`,
    ///   `GGUFError.wrongElementCount` when the count is not a whole number of blocks
    ///   (`expected` is the count rounded up to whole blocks).
    public static func run(_ type: GGMLType, _ src: UnsafeBufferPointer<Float>, tensor: String = "?") throws -> [UInt8] {
        guard supported.contains(type) else {
            throw GGUFError.unsupportedQuantization(path: "", type: type.rawValue, tensor: tensor)
        }
        let n = src.count, bs = type.blockSize
        guard n % bs == 0 else {
            throw GGUFError.wrongElementCount(tensor: tensor, expected: (n + bs - 1) / bs * bs, found: n)
        }
        let size = type.byteCount(elements: n)
        guard n > 0, let x = src.baseAddress else { return [] }
        return [UInt8](unsafeUninitializedCapacity: size) { buf, written in
            let out = UnsafeMutableRawPointer(buf.baseAddress!)
            switch type {
            case .f32:
                for i in 0..<n { out.storeBytes(of: x[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            case .f16:
                for i in 0..<n { out.storeBytes(of: HalfFloat.fromFloat(x[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            case .bf16:
                for i in 0..<n { out.storeBytes(of: BFloat16.fromFloat(x[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            case .q8_0:
                for b in 0..<(n / 32) { q8_0(x + 32 * b, out + 34 * b) }
            case .q4_0:
                for b in 0..<(n / 32) { q4_0(x + 32 * b, out + 18 * b) }
            case .q4_1:
                for b in 0..<(n / 32) { q4_1(x + 32 * b, out + 20 * b) }
            default:
                preconditionFailure("unreachable: \(type.name) checked above")
            }
            written = size
        }
    }

    /// Encodes `values` as `type` (see `run`).
    public static func bytes(_ type: GGMLType, _ values: [Float], tensor: String = "?") throws -> [UInt8] {
        try values.withUnsafeBufferPointer { try run(type, $0, tensor: tensor) }
    }

    @inline(__always)
    static func storeHalf(_ v: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
        p.storeBytes(of: HalfFloat.fromFloat(v).littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// `q` clamped to lo…hi after truncation toward zero (C's `(int)` cast); NaN gives `lo`.
    @inline(__always)
    static func truncClamp(_ v: Float, _ lo: Int, _ hi: Int) -> Int {
        guard v > Float(lo) else { return lo }
        guard v < Float(hi) else { return hi }
        return Int(v)
    }

    /// d = max|x| / 127, q = round(x / d) (half away from zero).
    static func q8_0(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for j in 0..<32 { amax = max(amax, abs(x[j])) }
        let d = amax / 127
        let id: Float = d != 0 ? 1 / d : 0
        storeHalf(d, out, 0)
        let qs = (out + 2).assumingMemoryBound(to: Int8.self)
        for j in 0..<32 {
            let r = (x[j] * id).rounded()
            qs[j] = Int8(truncClamp(r, -128, 127))
        }
    }

    /// d = (value of largest magnitude) / −8, q = min(15, trunc(x / d + 8.5)).
    static func q4_0(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var amax: Float = 0, vmax: Float = 0
        for j in 0..<32 where amax < abs(x[j]) { amax = abs(x[j]); vmax = x[j] }
        let d = vmax / -8
        let id: Float = d != 0 ? 1 / d : 0
        storeHalf(d, out, 0)
        let qs = (out + 2).assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 {
            let lo = truncClamp(x[j] * id + 8.5, 0, 15)
            let hi = truncClamp(x[j + 16] * id + 8.5, 0, 15)
            qs[j] = UInt8(lo | hi << 4)
        }
    }

    /// d = (max − min) / 15, m = min, q = min(15, trunc((x − min) / d + 0.5)).
    static func q4_1(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for j in 0..<32 {
            if x[j] < lo { lo = x[j] }
            if x[j] > hi { hi = x[j] }
        }
        let d = (hi - lo) / 15
        let id: Float = d != 0 ? 1 / d : 0
        storeHalf(d, out, 0)
        storeHalf(lo, out, 2)
        let qs = (out + 4).assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 {
            let a = truncClamp((x[j] - lo) * id + 0.5, 0, 15)
            let b = truncClamp((x[j + 16] - lo) * id + 0.5, 0, 15)
            qs[j] = UInt8(a | b << 4)
        }
    }
}
