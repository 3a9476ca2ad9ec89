import Foundation

/// Lossless JSON form of GGUF metadata (type-tagged), used to carry a GGUF's metadata through other stores
/// (a Scalpel HDF5 model keeps it so an export can write the same keys back).
public enum GGUFMetadataJSON {
    /// Encodes entries as `[{"key": k, "type": "uint32", "value": …}, …]`; arrays as
    /// `{"type": "array", "element": "string", "value": [...]}`.
    public static func encode(_ entries: [(key: String, value: GGUFValue)]) throws -> String {
        let list = entries.map { e -> [String: Any] in var d = object(e.value); d["key"] = e.key; return d }
        let data = try JSONSerialization.data(withJSONObject: list, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// Decodes what `encode` wrote.
    public static func decode(_ json: String) throws -> [(key: String, value: GGUFValue)] {
        guard let list = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] else {
            throw GGUFError.invalidMetadata(path: "(json)", key: "(root)", problem: "not a list of entries")
        }
        return try list.map { d in
            guard let key = d["key"] as? String else {
                throw GGUFError.invalidMetadata(path: "(json)", key: "?", problem: "entry without key")
            }
            return (key, try value(d, key: key))
        }
    }

    static func object(_ v: GGUFValue) -> [String: Any] {
        func name(_ t: GGUFValueType) -> String { "\(t)" }
        switch v {
        case let .array(a):
            return ["type": "array", "element": name(a.elementType), "value": a.values.map { scalar($0) }]
        default:
            return ["type": name(v.type), "value": scalar(v)]
        }
    }

    static func scalar(_ v: GGUFValue) -> Any {
        switch v {
        case let .string(s): return s
        case let .bool(b): return b
        case let .float32(f): return Double(f)
        case let .float64(f): return f
        case let .uint64(u): return NSNumber(value: u)
        case let .array(a): return ["element": "\(a.elementType)", "value": a.values.map { scalar($0) }]
        default: return v.int ?? 0
        }
    }

    static func value(_ d: [String: Any], key: String) throws -> GGUFValue {
        guard let type = d["type"] as? String else {
            throw GGUFError.invalidMetadata(path: "(json)", key: key, problem: "missing type")
        }
        if type == "array" {
            guard let el = d["element"] as? String, let items = d["value"] as? [Any] else {
                throw GGUFError.invalidMetadata(path: "(json)", key: key, problem: "bad array")
            }
            let et = try valueType(el, key: key)
            return .array(et, try items.map { try make(et, $0, key: key) })
        }
        return try make(try valueType(type, key: key), d["value"] as Any, key: key)
    }

    static func valueType(_ s: String, key: String) throws -> GGUFValueType {
        let all: [GGUFValueType] = [.uint8, .int8, .uint16, .int16, .uint32, .int32, .float32, .bool, .string, .array,
                                    .uint64, .int64, .float64]
        guard let t = all.first(where: { "\($0)" == s }) else {
            throw GGUFError.invalidMetadata(path: "(json)", key: key, problem: "unknown type \(s)")
        }
        return t
    }

    static func make(_ t: GGUFValueType, _ x: Any, key: String) throws -> GGUFValue {
        let n = x as? NSNumber
        switch t {
        case .string:
            guard let s = x as? String else { break }
            return .string(s)
        case .bool: if let n { return .bool(n.boolValue) }
        case .uint8: if let n { return .uint8(n.uint8Value) }
        case .int8: if let n { return .int8(n.int8Value) }
        case .uint16: if let n { return .uint16(n.uint16Value) }
        case .int16: if let n { return .int16(n.int16Value) }
        case .uint32: if let n { return .uint32(n.uint32Value) }
        case .int32: if let n { return .int32(n.int32Value) }
        case .uint64: if let n { return .uint64(n.uint64Value) }
        case .int64: if let n { return .int64(n.int64Value) }
        case .float32: if let n { return .float32(n.floatValue) }
        case .float64: if let n { return .float64(n.doubleValue) }
        case .array:
            if let d = x as? [String: Any] { return try value(d.merging(["type": "array"]) { a, _ in a }, key: key) }
        }
        throw GGUFError.invalidMetadata(path: "(json)", key: key, problem: "value does not fit type \(t)")
    }
}
