import Foundation

/// Writes a GGUF (version 3) file: metadata, tensor table, aligned data section.
///
/// Tensors are given as raw bytes already in their GGML type (use `Dequantize`/`Quantize` to convert).
public struct GGUFWriter {
    public var metadata: [(key: String, value: GGUFValue)] = []
    public var tensors: [(name: String, dims: [Int], type: GGMLType, bytes: [UInt8])] = []
    public var alignment = 32

    public init() {}

    /// Adds a float32 tensor. `dims` in GGUF order (dims[0] contiguous).
    public mutating func addF32(_ name: String, dims: [Int], values: [Float]) {
        precondition(dims.reduce(1, *) == values.count, "\(name): dims do not match value count")
        tensors.append((name, dims, .f32, values.withUnsafeBytes { Array($0) }))
    }

    /// Serializes the whole file to bytes.
    public func serialize() -> [UInt8] {
        var out = GGUFWriter.header(metadata: metadata, tensors: tensors.map { ($0.name, $0.dims, $0.type, $0.bytes.count) },
                                    alignment: alignment)
        while out.count % alignment != 0 { out.append(0) }
        for t in tensors {
            out.append(contentsOf: t.bytes)
            while out.count % alignment != 0 { out.append(0) }
        }
        return out
    }

    /// GGUF v3 header bytes (magic, counts, metadata, tensor table) for tensors of `bytes` bytes each; the data section
    /// follows at the next multiple of `alignment`, each tensor aligned. Adds `general.alignment` when it is not 32.
    public static func header(metadata: [(key: String, value: GGUFValue)],
                              tensors: [(name: String, dims: [Int], type: GGMLType, bytes: Int)], alignment: Int) -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) { let b = Array(s.utf8); u64(UInt64(b.count)); out.append(contentsOf: b) }
        func value(_ v: GGUFValue) {
            switch v {
            case let .uint8(x): out.append(x)
            case let .int8(x): out.append(UInt8(bitPattern: x))
            case let .uint16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .int16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .uint32(x): u32(x)
            case let .int32(x): u32(UInt32(bitPattern: x))
            case let .float32(x): u32(x.bitPattern)
            case let .bool(x): out.append(x ? 1 : 0)
            case let .string(s): str(s)
            case let .uint64(x): u64(x)
            case let .int64(x): u64(UInt64(bitPattern: x))
            case let .float64(x): u64(x.bitPattern)
            case let .array(a):
                u32(a.elementType.rawValue); u64(UInt64(a.count))
                for i in 0..<a.count { value(a[i]) }
            }
        }
        var meta = metadata
        if alignment != 32 && !meta.contains(where: { $0.key == "general.alignment" }) {
            meta.append(("general.alignment", .uint32(UInt32(alignment))))
        }
        out.append(contentsOf: Array("GGUF".utf8))
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(meta.count))
        for (k, v) in meta { str(k); u32(v.type.rawValue); value(v) }
        var offset = 0
        for t in tensors {
            str(t.name); u32(UInt32(t.dims.count))
            for d in t.dims { u64(UInt64(d)) }
            u32(t.type.rawValue); u64(UInt64(offset))
            offset += (t.bytes + alignment - 1) / alignment * alignment
        }
        return out
    }

    /// Writes the file atomically (temporary file in the same directory, then rename).
    public func write(to path: String) throws {
        let bytes = serialize()
        let url = URL(fileURLWithPath: path)
        do { try Data(bytes).write(to: url, options: .atomic) } catch {
            throw GGUFError.writeFailed(path: path, reason: "\(error.localizedDescription)")
        }
    }
}
