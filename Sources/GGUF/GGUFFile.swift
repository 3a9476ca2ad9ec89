import Foundation

/// One tensor's entry in a GGUF file's tensor table.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions in GGUF order: `dims[0]` is the contiguous (innermost) one. A Llama weight [out, in]
    /// row-major appears as `[in, out]`.
    public let dims: [Int]
    public let type: GGMLType
    /// Offset of the data from the start of the data section.
    public let offset: Int
    public var elementCount: Int { dims.reduce(1, *) }
    public var byteCount: Int { type.byteCount(elements: elementCount) }
}

/// A memory-mapped GGUF file: header, metadata, tensor table and data section (versions 2 and 3).
public final class GGUFFile {
    public let path: String
    public let version: UInt32
    /// Metadata in file order.
    public let metadata: [(key: String, value: GGUFValue)]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Byte offset of the data section.
    public let dataOffset: Int
    public let fileSize: Int
    private let data: Data
    private let index: [String: Int]
    private let metaIndex: [String: Int]

    /// Opens and parses `path`; tensor data stays on disk (mapped) until read.
    public init(path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else { throw GGUFError.fileNotFound(path: path) }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw GGUFError.fileNotFound(path: path)
        }
        self.path = path
        self.data = data
        self.fileSize = data.count
        var r = ByteReader(data: data, path: path)
        let magic = try r.u32("magic")
        guard magic == 0x4655_4747 else { throw GGUFError.badMagic(path: path, found: magic) }
        version = try r.u32("version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(path: path, version: version) }
        let tensorCount = try r.count("tensor count")
        let kvCount = try r.count("metadata count")
        var meta: [(String, GGUFValue)] = []
        for i in 0..<kvCount {
            let key = try r.string("metadata key #\(i)")
            let tag = try r.u32("type of \(key)")
            guard let type = GGUFValueType(rawValue: tag) else {
                throw GGUFError.invalidMetadata(path: path, key: key, problem: "unknown value type \(tag)")
            }
            meta.append((key, try r.value(type, key: key)))
        }
        metadata = meta
        metaIndex = Dictionary(meta.enumerated().map { ($1.0, $0) }, uniquingKeysWith: { a, _ in a })
        alignment = meta.first { $0.0 == "general.alignment" }?.1.int ?? 32
        guard alignment > 0 else {
            throw GGUFError.invalidMetadata(path: path, key: "general.alignment", problem: "must be positive")
        }
        var infos: [GGUFTensorInfo] = []
        for i in 0..<tensorCount {
            let name = try r.string("tensor #\(i) name")
            let nd = Int(try r.u32("dimensions of \(name)"))
            guard nd <= 4 else {
                throw GGUFError.invalidMetadata(path: path, key: name, problem: "\(nd) dimensions (at most 4)")
            }
            var dims: [Int] = []
            for _ in 0..<nd { dims.append(try r.count("shape of \(name)")) }
            let tag = try r.u32("type of \(name)")
            guard let type = GGMLType(rawValue: tag), type.isSupported else {
                throw GGUFError.unsupportedQuantization(path: path, type: tag, tensor: name)
            }
            let offset = try r.count("offset of \(name)")
            let info = GGUFTensorInfo(name: name, dims: dims, type: type, offset: offset)
            guard info.elementCount % type.blockSize == 0 else {
                throw GGUFError.invalidMetadata(path: path, key: name,
                                                problem: "\(info.elementCount) elements is not a whole number of \(type.name) blocks")
            }
            infos.append(info)
        }
        tensors = infos
        dataOffset = (r.offset + alignment - 1) / alignment * alignment
        for t in infos where dataOffset + t.offset + t.byteCount > data.count {
            throw GGUFError.tensorOutOfBounds(path: path, tensor: t.name)
        }
        index = Dictionary(infos.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// The metadata value for `key`, if present.
    public subscript(key: String) -> GGUFValue? { metaIndex[key].map { metadata[$0].value } }

    /// The metadata value for `key`, or a `missingKey` error.
    public func require(_ key: String) throws -> GGUFValue {
        guard let v = self[key] else { throw GGUFError.missingKey(path: path, key: key) }
        return v
    }

    /// The table entry of tensor `name`.
    public func tensor(_ name: String) -> GGUFTensorInfo? { index[name].map { tensors[$0] } }

    /// Calls `body` with the raw (still quantized) bytes of tensor `name`.
    public func withRawBytes<R>(of info: GGUFTensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try data.withUnsafeBytes { all in
            let start = dataOffset + info.offset
            return try body(UnsafeRawBufferPointer(rebasing: all[start..<(start + info.byteCount)]))
        }
    }

    /// Dequantizes tensor `name` to float32 (`elementCount` values, GGUF order: dims[0] fastest).
    public func floats(_ name: String) throws -> [Float] {
        guard let info = tensor(name) else { throw GGUFError.missingTensor(path: path, tensor: name) }
        var out = [Float](repeating: 0, count: info.elementCount)
        try out.withUnsafeMutableBufferPointer { try read(info, into: $0) }
        return out
    }

    /// Dequantizes a tensor into caller-owned memory of exactly `elementCount` floats.
    public func read(_ info: GGUFTensorInfo, into out: UnsafeMutableBufferPointer<Float>) throws {
        guard out.count == info.elementCount else {
            throw GGUFError.wrongElementCount(tensor: info.name, expected: info.elementCount, found: out.count)
        }
        try withRawBytes(of: info) { raw in
            try Dequantize.run(info.type, raw, count: info.elementCount, into: out.baseAddress!, tensor: info.name)
        }
    }
}

/// Little-endian cursor over the mapped file, turning short reads into `GGUFError.truncated`.
struct ByteReader {
    let data: Data
    let path: String
    var offset = 0

    mutating func bytes(_ n: Int, _ what: String) throws -> Data {
        guard n >= 0, offset + n <= data.count else { throw GGUFError.truncated(path: path, what: what) }
        defer { offset += n }
        return data[(data.startIndex + offset)..<(data.startIndex + offset + n)]
    }

    mutating func load<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws -> T {
        let size = MemoryLayout<T>.size
        guard offset + size <= data.count else { throw GGUFError.truncated(path: path, what: what) }
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

    mutating func string(_ what: String) throws -> String {
        let n = try count("length of \(what)")
        guard offset + n <= data.count else { throw GGUFError.truncated(path: path, what: what) }
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
        case .array:
            let tag = try u32("element type of \(key)")
            guard let et = GGUFValueType(rawValue: tag) else {
                throw GGUFError.invalidMetadata(path: path, key: key, problem: "unknown array element type \(tag)")
            }
            let n = try count("length of \(key)")
            guard n <= data.count - offset else { throw GGUFError.truncated(path: path, what: key) }
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(et, key: key)) }
            return .array(et, items)
        }
    }
}
