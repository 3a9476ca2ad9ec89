/// Dequantization of GGML block formats to float32.
public enum Dequantize {
    /// Dequantizes `count` elements of `type` from `src` into `dst`.
    /// - Throws: `GGUFError.unsupportedQuantization` for a type Scalpel cannot read,
    ///   `GGUFError.wrongElementCount` when `src` is too short.
    public static func run(_ type: GGMLType, _ src: UnsafeRawBufferPointer, count: Int,
                           into dst: UnsafeMutablePointer<Float>, tensor: String = "?") throws {
        guard src.count >= type.byteCount(elements: count) else {
            throw GGUFError.wrongElementCount(tensor: tensor, expected: type.byteCount(elements: count), found: src.count)
        }
        switch type {
        case .f32:
            for i in 0..<count { dst[i] = Float(bitPattern: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
        default:
            throw GGUFError.unsupportedQuantization(path: "", type: type.rawValue, tensor: tensor)
        }
    }
}
