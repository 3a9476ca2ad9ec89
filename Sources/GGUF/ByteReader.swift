import Foundation

/// Little-endian cursor over the mapped file, turning short reads into `GGUFError.truncated`.
///
/// Every length read from the file is checked against the bytes that remain before anything is allocated for it,
/// so a corrupt or hostile header costs at most about the file's own size.
struct ByteReader {
    let data: Data
    let path: String
    var offset = 0

    /// Deepest nesting of arrays inside arrays accepted in metadata (llama.cpp writes none).
    static let maxArrayDepth = 3

    /// Bytes left after the cursor.
    var remaining: Int { data.count - offset }

    mutating func load<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw GGUFError.truncated(path: path, what: what) }
        let v = data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += size
        return T(littleEndian: v)
    }

    mutating func u32(_ what: String) throws -> UInt32 { try load(UInt32.self, what) }

    /// A u64 count or size that must fit the file (guards against absurd lengths in corrupt headers).
    mutating func count(_ what: String) throws -> Int {
        let v = try load(UInt64.self, what)
        guard v <= UInt64(Int32.max) * 64 else {
            throw GGUFError.invalidMetadata(path: path, key: what, problem: "implausible value \(v)")
        }
        return Int(v)
    }

    /// Skips `n` bytes that must be present.
    mutating func skip(_ n: Int, _ what: String) throws {
        guard n >= 0, n <= remaining else { throw GGUFError.truncated(path: path, what: what) }
        offset += n
    }

    mutating func string(_ what: String) throws -> String {
        let n = try count("length of \(what)")
        guard n <= remaining else { throw GGUFError.truncated(path: path, what: what) }
        let s = data.withUnsafeBytes { raw in
            String(decoding: UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + n)]), as: UTF8.self)
        }
        offset += n
        return s
    }

    mutating func value(_ type: GGUFValueType, key: String) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, key))
        case .int8: return .int8(try load(Int8.self, key))
        case .uint16: return .uint16(try load(UInt16.self, key))
        case .int16: return .int16(try load(Int16.self, key))
        case .uint32: return .uint32(try load(UInt32.self, key))
        case .int32: return .int32(try load(Int32.self, key))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, key)))
        case .bool: return .bool(try load(UInt8.self, key) != 0)
        case .string: return .string(try string(key))
        case .uint64: return .uint64(try load(UInt64.self, key))
        case .int64: return .int64(try load(Int64.self, key))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, key)))
        case .array: return .array(try array(key: key, depth: 1))
        }
    }

    /// Reads an array header and validates its elements, keeping them encoded (a slice of the mapped file).
    mutating func array(key: String, depth: Int) throws -> GGUFArray {
        guard depth <= ByteReader.maxArrayDepth else {
            throw GGUFError.invalidMetadata(path: path, key: key, problem: "arrays nested deeper than \(ByteReader.maxArrayDepth)")
        }
        let et = try elementType(key)
        let n = try count("length of \(key)")
        let start = offset
        let offsets = try skipElements(et, count: n, depth: depth, key: key)
        let bytes = data[(data.startIndex + start)..<(data.startIndex + offset)]  // shares the mapping
        return GGUFArray(encoded: bytes, elementType: et, count: n, offsets: offsets.map { $0.map { $0 - start } })
    }

    mutating func elementType(_ key: String) throws -> GGUFValueType {
        let tag = try u32("element type of \(key)")
        guard let et = GGUFValueType(rawValue: tag) else {
            throw GGUFError.invalidMetadata(path: path, key: key, problem: "unknown array element type \(tag)")
        }
        return et
    }

    /// Validates `n` encoded elements of type `et` at the cursor and moves past them. Returns each element's offset
    /// for variable-size types (strings, arrays), nil for fixed-size ones.
    mutating func skipElements(_ et: GGUFValueType, count n: Int, depth: Int, key: String = "array") throws -> [Int]? {
        if let size = et.fixedSize {
            guard n <= remaining / size else { throw GGUFError.truncated(path: path, what: key) }
            offset += n * size
            return nil
        }
        var offsets: [Int] = []
        for _ in 0..<n {
            // Each element needs at least its 8-byte length (12 bytes for an array): the loop ends with the file.
            guard remaining >= 8 else { throw GGUFError.truncated(path: path, what: key) }
            offsets.append(offset)
            if et == .string {
                let len = try count("length of an element of \(key)")
                try skip(len, key)
            } else {
                guard depth < ByteReader.maxArrayDepth else {
                    throw GGUFError.invalidMetadata(path: path, key: key,
                                                    problem: "arrays nested deeper than \(ByteReader.maxArrayDepth)")
                }
                let inner = try elementType(key)
                let m = try count("length of an element of \(key)")
                _ = try skipElements(inner, count: m, depth: depth + 1, key: key)
            }
        }
        return offsets
    }
}
