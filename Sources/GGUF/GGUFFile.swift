import Foundation
import Hashing

/// One tensor's entry in a GGUF file's tensor table.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions in GGUF order: `dims[0]` is the contiguous (innermost) one. A Llama weight [out, in]
    /// row-major appears as `[in, out]`.
    public let dims: [Int]
    public let type: GGMLType
    /// Offset of the data from the start of the data section.
    public let offset: Int
    /// Product of `dims` (checked when the table is parsed: it cannot overflow).
    public let elementCount: Int
    /// Bytes of the (quantized) data.
    public let byteCount: Int

    /// A table entry; nil when the element or byte count overflows `Int` or is not a whole number of blocks.
    public init?(name: String, dims: [Int], type: GGMLType, offset: Int) {
        var n = 1
        for d in dims {
            guard d >= 0 else { return nil }
            let (p, o) = n.multipliedReportingOverflow(by: d)
            guard !o else { return nil }
            n = p
        }
        guard n % type.blockSize == 0 else { return nil }
        let (b, o) = (n / type.blockSize).multipliedReportingOverflow(by: type.typeSize)
        guard !o else { return nil }
        self.name = name; self.dims = dims; self.type = type; self.offset = offset
        elementCount = n; byteCount = b
    }
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
    ///
    /// Everything a later reader relies on is checked here: counts and lengths fit the file, element and byte
    /// counts do not overflow, every tensor lies inside the data section at an aligned offset, and no metadata key
    /// or tensor name appears twice.
    public init(path: String) throws {
        if let problem = FileAccess.problem(path) { throw GGUFError.fileUnreadable(path: path, problem: problem) }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            if let problem = FileAccess.problem(path) { throw GGUFError.fileUnreadable(path: path, problem: problem) }
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
            if size == 0 { throw GGUFError.truncated(path: path, what: "magic (the file is empty)") }
            throw GGUFError.unreadable(path: path, problem: .other("\(error.localizedDescription)"))
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
        var meta: [(key: String, value: GGUFValue)] = []
        var metaIndex: [String: Int] = [:]
        for i in 0..<kvCount {
            let key = try r.string("metadata key #\(i)")
            let tag = try r.u32("type of \(key)")
            guard let type = GGUFValueType(rawValue: tag) else {
                throw GGUFError.invalidMetadata(path: path, key: key, problem: "unknown value type \(tag)")
            }
            let value = try r.value(type, key: key)
            guard metaIndex[key] == nil else { throw GGUFError.duplicateKey(path: path, key: key) }
            metaIndex[key] = meta.count
            meta.append((key, value))
        }
        metadata = meta
        self.metaIndex = metaIndex
        alignment = try GGUFFile.alignment(meta.first { $0.key == "general.alignment" }?.value, path: path)
        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
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
            guard let info = GGUFTensorInfo(name: name, dims: dims, type: type, offset: offset) else {
                throw GGUFError.invalidMetadata(path: path, key: name,
                                                problem: "shape \(dims) is not a whole number of \(type.name) blocks or overflows")
            }
            guard offset % alignment == 0 else {
                throw GGUFError.invalidMetadata(path: path, key: name,
                                                problem: "data offset \(offset) is not a multiple of the alignment \(alignment)")
            }
            guard index[name] == nil else { throw GGUFError.duplicateTensor(path: path, tensor: name) }
            index[name] = infos.count
            infos.append(info)
        }
        tensors = infos
        self.index = index
        let (padded, o) = r.offset.addingReportingOverflow(alignment - 1)
        guard !o else { throw GGUFError.truncated(path: path, what: "data section") }
        dataOffset = padded / alignment * alignment
        // Every tensor must fit: dataOffset + offset + byteCount ≤ file size (both terms checked, no overflow).
        for t in infos where dataOffset > data.count || t.offset > data.count - dataOffset
            || t.byteCount > data.count - dataOffset - t.offset {
            throw GGUFError.tensorOutOfBounds(path: path, tensor: t.name)
        }
    }

    /// `general.alignment`: absent means 32; else a power of two from 1 to 1 MiB.
    static func alignment(_ v: GGUFValue?, path: String) throws -> Int {
        guard let v else { return 32 }
        guard let a = v.int, a > 0, a <= 1 << 20, a & (a - 1) == 0 else {
            throw GGUFError.invalidMetadata(path: path, key: "general.alignment",
                                            problem: "\(v.int.map(String.init) ?? "a non-integer value") is not a power of two from 1 to 1048576")
        }
        return a
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
        guard info.elementCount > 0 else { return }
        try withRawBytes(of: info) { raw in
            try Dequantize.run(info.type, raw, count: info.elementCount, into: out.baseAddress!, tensor: info.name)
        }
    }
}
