import CHDF5

/// The numeric element types `HDF5Store` reads and writes.
public enum HDF5ElementType: String, CaseIterable, Sendable {
    case float32, float64, int32, int64, uint8

    /// Size of one element in bytes.
    public var byteSize: Int {
        switch self {
        case .float32, .int32: return 4
        case .float64, .int64: return 8
        case .uint8: return 1
        }
    }

    /// The native in-memory HDF5 type (owned by the library; never closed).
    var nativeType: hid_t {
        switch self {
        case .float32: return scalpel_h5t_native_float()
        case .float64: return scalpel_h5t_native_double()
        case .int32: return scalpel_h5t_native_int32()
        case .int64: return scalpel_h5t_native_int64()
        case .uint8: return scalpel_h5t_native_uint8()
        }
    }

    var typeClass: H5T_class_t {
        switch self {
        case .float32, .float64: return H5T_FLOAT
        case .int32, .int64, .uint8: return H5T_INTEGER
        }
    }

    var isSigned: Bool { self != .uint8 }

    /// The element type stored under `type`, or nil when it is none of the supported ones.
    /// Byte order is ignored: HDF5 converts between little- and big-endian on read.
    static func matching(_ type: hid_t) -> HDF5ElementType? {
        let cls = H5Tget_class(type)
        let size = H5Tget_size(type)
        switch cls {
        case H5T_FLOAT:
            if size == 4 { return .float32 }
            if size == 8 { return .float64 }
            return nil
        case H5T_INTEGER:
            let signed = H5Tget_sign(type) == H5T_SGN_2
            switch (size, signed) {
            case (4, true): return .int32
            case (8, true): return .int64
            case (1, false): return .uint8
            default: return nil
            }
        default:
            return nil
        }
    }
}

/// A Swift type that maps one-to-one onto an HDF5 numeric element type.
///
/// `Float`, `Double`, `Int32`, `Int64` and `UInt8` conform. Reads are strict: a dataset is only
/// read as `T` when its stored type has the same class, size and signedness (no silent
/// float-to-int or narrowing conversions); otherwise `.typeMismatch` is thrown.
public protocol HDF5Scalar {
    /// The HDF5 element type this Swift type is stored as.
    static var hdf5ElementType: HDF5ElementType { get }
}

extension Float: HDF5Scalar { public static var hdf5ElementType: HDF5ElementType { .float32 } }
extension Double: HDF5Scalar { public static var hdf5ElementType: HDF5ElementType { .float64 } }
extension Int32: HDF5Scalar { public static var hdf5ElementType: HDF5ElementType { .int32 } }
extension Int64: HDF5Scalar { public static var hdf5ElementType: HDF5ElementType { .int64 } }
extension UInt8: HDF5Scalar { public static var hdf5ElementType: HDF5ElementType { .uint8 } }

/// Validates that `T`'s memory layout agrees with the element type it claims.
func checkLayout<T: HDF5Scalar>(_: T.Type, object: String) throws -> HDF5ElementType {
    let et = T.hdf5ElementType
    guard MemoryLayout<T>.stride == et.byteSize else {
        throw HDF5Error.invalidArgument(
            object: object,
            reason: "\(T.self) has stride \(MemoryLayout<T>.stride) but claims \(et.rawValue)")
    }
    return et
}

/// A short human-readable description of any HDF5 datatype ("float32", "uint16", "string", ...).
func describeType(_ type: hid_t) -> String {
    let size = H5Tget_size(type)
    switch H5Tget_class(type) {
    case H5T_FLOAT: return "float\(size * 8)"
    case H5T_INTEGER:
        return (H5Tget_sign(type) == H5T_SGN_2 ? "int" : "uint") + "\(size * 8)"
    case H5T_STRING:
        return H5Tis_variable_str(type) > 0 ? "variable-length string" : "fixed-length string[\(size)]"
    case H5T_COMPOUND: return "compound"
    case H5T_ENUM: return "enum"
    case H5T_ARRAY: return "array"
    case H5T_VLEN: return "variable-length sequence"
    case H5T_OPAQUE: return "opaque"
    case H5T_REFERENCE: return "reference"
    case H5T_BITFIELD: return "bitfield"
    case H5T_TIME: return "time"
    default: return "unknown type"
    }
}
