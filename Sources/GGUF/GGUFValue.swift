import Foundation

/// A GGUF metadata value.
///
/// Arrays are `GGUFArray`s: a parsed array stays in its encoded form (a slice of the mapped file plus, for strings
/// and nested arrays, one offset per element), so a large array costs about its own size; elements are decoded when
/// read. Build one in memory with `.array(elementType, [values])`.
public enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    case array(GGUFArray)

    /// An in-memory array of `items` (each should have type `elementType`).
    public static func array(_ elementType: GGUFValueType, _ items: [GGUFValue]) -> GGUFValue {
        .array(GGUFArray(elementType, items))
    }

    /// Integer view of any integer-typed value.
    public var int: Int? {
        switch self {
        case let .uint8(v): return Int(v)
        case let .int8(v): return Int(v)
        case let .uint16(v): return Int(v)
        case let .int16(v): return Int(v)
        case let .uint32(v): return Int(v)
        case let .int32(v): return Int(v)
        case let .uint64(v): return Int(exactly: v)
        case let .int64(v): return Int(v)
        case let .bool(v): return v ? 1 : 0
        default: return nil
        }
    }

    /// Floating-point view of any numeric value.
    public var double: Double? {
        switch self {
        case let .float32(v): return Double(v)
        case let .float64(v): return v
        default: return int.map(Double.init)
        }
    }

    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return int.map { $0 != 0 } }
    /// The array's elements, decoded (nil when not an array). Prefer the typed views for large arrays.
    public var array: [GGUFValue]? { if case let .array(a) = self { return a.values }; return nil }
    /// The array itself (nil when not an array).
    public var arrayValue: GGUFArray? { if case let .array(a) = self { return a }; return nil }
    /// Number of elements of an array (nil when not an array); does not decode the elements.
    public var count: Int? { arrayValue?.count }
    /// Element type of an array (nil when not an array).
    public var arrayElementType: GGUFValueType? { arrayValue?.elementType }
    /// The elements as strings; nil when not an array or when some element is not a string.
    public var stringArray: [String]? { arrayValue?.strings }
    /// The elements as integers; nil when not an array or when some element is not an integer (or does not fit Int).
    public var intArray: [Int]? { arrayValue?.ints }
    /// The elements as doubles; nil when not an array or when some element is not numeric.
    public var doubleArray: [Double]? { arrayValue?.doubles }
    /// The elements as floats (float64 and integers rounded to Float); nil when some element is not numeric.
    public var floatArray: [Float]? { arrayValue?.floats }

    /// The on-disk type tag of this value.
    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }
}

/// On-disk type tags of GGUF metadata values.
public enum GGUFValueType: UInt32, Sendable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// Encoded size of one value of a fixed-size type (nil for strings and arrays).
    public var fixedSize: Int? {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string, .array: return nil
        }
    }
}

/// A typed GGUF array. Parsed arrays keep their encoded bytes (a zero-copy slice of the mapped file): fixed-size
/// elements are read at `i × size`, strings and nested arrays through one offset per element. Elements were
/// validated when the file was parsed, so decoding cannot fail.
public struct GGUFArray: Equatable, Sendable {
    public let elementType: GGUFValueType
    public let count: Int
    private let storage: Storage

    private enum Storage: Sendable {
        case values([GGUFValue])
        /// `bytes` holds the encoded elements; `offsets[i]` is element i's start within `bytes` (strings, arrays).
        case encoded(bytes: Data, offsets: [Int]?)
    }

    /// An in-memory array.
    public init(_ elementType: GGUFValueType, _ items: [GGUFValue]) {
        self.elementType = elementType; count = items.count; storage = .values(items)
    }

    /// A parsed array over encoded `bytes` (validated by the parser). `offsets` is required for strings and arrays.
    init(encoded bytes: Data, elementType: GGUFValueType, count: Int, offsets: [Int]?) {
        self.elementType = elementType; self.count = count; storage = .encoded(bytes: bytes, offsets: offsets)
    }

    /// Element `i` (0 ≤ i < count).
    public subscript(i: Int) -> GGUFValue {
        precondition(i >= 0 && i < count, "GGUF array index \(i) out of range 0..<\(count)")
        switch storage {
        case let .values(v): return v[i]
        case let .encoded(bytes, offsets):
            let start = offsets?[i] ?? i * (elementType.fixedSize ?? 0)
            return GGUFArray.decode(elementType, bytes, at: start)
        }
    }

    /// Every element, decoded.
    public var values: [GGUFValue] {
        if case let .values(v) = storage { return v }
        return (0..<count).map { self[$0] }
    }

    /// Elements as strings (nil unless every element is a string).
    public var strings: [String]? {
        if case let .encoded(bytes, offsets?) = storage, elementType == .string {
            return bytes.withUnsafeBytes { raw in
                offsets.map { o -> String in
                    let n = Int(raw.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian)
                    return String(decoding: UnsafeRawBufferPointer(rebasing: raw[(o + 8)..<(o + 8 + n)]), as: UTF8.self)
                }
            }
        }
        return mapAll(\.string)
    }

    public var ints: [Int]? { mapAll(\.int) }
    public var doubles: [Double]? { mapAll(\.double) }
    public var floats: [Float]? {
        if case let .encoded(bytes, nil) = storage, elementType == .float32 {
            return bytes.withUnsafeBytes { raw in
                (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
            }
        }
        return mapAll { $0.double.map(Float.init) }
    }

    private func mapAll<T>(_ f: (GGUFValue) -> T?) -> [T]? {
        var out: [T] = []
        out.reserveCapacity(count)
        for i in 0..<count {
            guard let v = f(self[i]) else { return nil }
            out.append(v)
        }
        return out
    }

    public static func == (a: GGUFArray, b: GGUFArray) -> Bool {
        guard a.elementType == b.elementType, a.count == b.count else { return false }
        if case let .encoded(x, _) = a.storage, case let .encoded(y, _) = b.storage, x.count == y.count, x == y { return true }
        for i in 0..<a.count where a[i] != b[i] { return false }
        return true
    }

    /// Decodes one validated element of type `t` at `offset` of `bytes`.
    static func decode(_ t: GGUFValueType, _ bytes: Data, at offset: Int) -> GGUFValue {
        bytes.withUnsafeBytes { raw -> GGUFValue in
            func load<T: FixedWidthInteger>(_: T.Type, _ o: Int = offset) -> T {
                T(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: T.self))
            }
            switch t {
            case .uint8: return .uint8(load(UInt8.self))
            case .int8: return .int8(load(Int8.self))
            case .uint16: return .uint16(load(UInt16.self))
            case .int16: return .int16(load(Int16.self))
            case .uint32: return .uint32(load(UInt32.self))
            case .int32: return .int32(load(Int32.self))
            case .float32: return .float32(Float(bitPattern: load(UInt32.self)))
            case .bool: return .bool(load(UInt8.self) != 0)
            case .uint64: return .uint64(load(UInt64.self))
            case .int64: return .int64(load(Int64.self))
            case .float64: return .float64(Double(bitPattern: load(UInt64.self)))
            case .string:
                let n = Int(load(UInt64.self))
                return .string(String(decoding: UnsafeRawBufferPointer(rebasing: raw[(offset + 8)..<(offset + 8 + n)]),
                                      as: UTF8.self))
            case .array:
                // Nested array: re-scan (already validated) to rebuild its element offsets.
                let et = GGUFValueType(rawValue: load(UInt32.self))!
                let n = Int(load(UInt64.self, offset + 4))
                let start = offset + 12
                var r = ByteReader(data: bytes, path: "", offset: start)
                let offsets = try! r.skipElements(et, count: n, depth: 1)
                let end = r.offset
                let sub = bytes[(bytes.startIndex + start)..<(bytes.startIndex + end)]  // shares the storage
                return .array(GGUFArray(encoded: sub, elementType: et, count: n, offsets: offsets.map { $0.map { $0 - start } }))
            }
        }
    }
}
