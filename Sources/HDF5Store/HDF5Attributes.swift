import CHDF5

/// Attributes: small named values attached to a group or dataset.
///
/// Storage: `String` → scalar variable-length UTF-8 string (h5py returns `str`); `Int` and `Bool`
/// → scalar int64 (`Bool` as 0/1); `Double` → scalar float64; `[Int]` → 1-D int64;
/// `[Double]` → 1-D float64. Setting an attribute replaces any existing one of that name.
/// Errors name the attribute as "OBJECT@NAME", e.g. "/layers/0@rank".
extension HDF5Object {

    // MARK: Setting

    /// Sets a UTF-8 string attribute (must not contain NUL characters).
    public func setAttribute(_ name: String, _ value: String) throws {
        let object = attributePath(name)
        if value.utf8.contains(0) {
            throw HDF5Error.invalidArgument(object: object, reason: "string contains a NUL character")
        }
        try withOpenFile {
            let type = try makeVariableStringType(object: object)
            let attr = try createAttribute(name, type: type.id, shape: [])
            try value.withCString { cString in
                var pointer: UnsafePointer<CChar>? = cString
                try check(H5Awrite(attr.id, type.id, &pointer), "H5Awrite", object)
            }
        }
    }

    /// Sets an integer attribute (stored as int64).
    public func setAttribute(_ name: String, _ value: Int) throws {
        try setNumeric(name, [Int64(value)], shape: [], type: .int64)
    }

    /// Sets a floating-point attribute (stored as float64).
    public func setAttribute(_ name: String, _ value: Double) throws {
        try setNumeric(name, [value], shape: [], type: .float64)
    }

    /// Sets a Boolean attribute (stored as int64 0 or 1).
    public func setAttribute(_ name: String, _ value: Bool) throws {
        try setNumeric(name, [Int64(value ? 1 : 0)], shape: [], type: .int64)
    }

    /// Sets a 1-D integer array attribute (stored as int64; may be empty).
    public func setAttribute(_ name: String, _ values: [Int]) throws {
        try setNumeric(name, values.map { Int64($0) }, shape: [values.count], type: .int64)
    }

    /// Sets a 1-D floating-point array attribute (stored as float64; may be empty).
    public func setAttribute(_ name: String, _ values: [Double]) throws {
        try setNumeric(name, values, shape: [values.count], type: .float64)
    }

    // MARK: Getting

    /// Reads a string attribute (variable- or fixed-length). `.typeMismatch` if not a string.
    public func stringAttribute(_ name: String) throws -> String {
        try withOpenFile {
            let object = attributePath(name)
            let (attr, type, space, count) = try openAttribute(name)
            guard H5Tget_class(type.id) == H5T_STRING else {
                throw HDF5Error.typeMismatch(object: object, expected: "string", found: describeType(type.id))
            }
            guard count == 1 else {
                throw HDF5Error.shapeMismatch(object: object, expected: [], found: try dataspaceShape(space.id, object: object))
            }
            return try readStringValues(count: 1, fileType: type.id, space: space.id, object: object,
                                        read: { mem, buf in H5Aread(attr.id, mem, buf) })[0]
        }
    }

    /// Reads a scalar integer attribute (any stored integer width).
    public func intAttribute(_ name: String) throws -> Int {
        let values: [Int64] = try readNumeric(name, as: .int64, scalar: true)
        return Int(values[0])
    }

    /// Reads a scalar floating-point attribute (integer attributes are converted).
    public func doubleAttribute(_ name: String) throws -> Double {
        let values: [Double] = try readNumeric(name, as: .float64, scalar: true)
        return values[0]
    }

    /// Reads a Boolean attribute: any nonzero integer is `true`.
    public func boolAttribute(_ name: String) throws -> Bool {
        try intAttribute(name) != 0
    }

    /// Reads an integer array attribute (flattened; a scalar gives one element).
    public func intArrayAttribute(_ name: String) throws -> [Int] {
        let values: [Int64] = try readNumeric(name, as: .int64, scalar: false)
        return values.map { Int($0) }
    }

    /// Reads a floating-point array attribute (flattened; integers are converted).
    public func doubleArrayAttribute(_ name: String) throws -> [Double] {
        try readNumeric(name, as: .float64, scalar: false)
    }

    // MARK: Listing and removing

    /// Names of all attributes of this object, sorted.
    public func attributeNames() throws -> [String] {
        try withOpenFile {
            final class Box { var names: [String] = [] }
            let box = Box()
            var index: hsize_t = 0
            let status = withExtendedLifetime(box) {
                H5Aiterate2(handle.id, H5_INDEX_NAME, H5_ITER_INC, &index, { _, name, _, data in
                    guard let name, let data else { return -1 }
                    Unmanaged<Box>.fromOpaque(data).takeUnretainedValue().names.append(String(cString: name))
                    return 0
                }, Unmanaged.passUnretained(box).toOpaque())
            }
            try check(status, "H5Aiterate2", path)
            return box.names.sorted()
        }
    }

    /// True when the attribute exists.
    public func hasAttribute(_ name: String) -> Bool {
        HDF5Library.sync {
            (try? file.ensureOpen()) != nil && H5Aexists(handle.id, name) > 0
        }
    }

    /// Removes an attribute. Throws `.notFound` when it does not exist.
    public func deleteAttribute(_ name: String) throws {
        try withOpenFile {
            guard H5Aexists(handle.id, name) > 0 else {
                throw HDF5Error.notFound(path: file.path, object: attributePath(name))
            }
            try check(H5Adelete(handle.id, name), "H5Adelete", attributePath(name))
        }
    }

    // MARK: Internals

    func attributePath(_ name: String) -> String { path + "@" + name }

    /// Creates attribute `name` (deleting an existing one). Library lock held.
    private func createAttribute(_ name: String, type: hid_t, shape: [Int]) throws -> H5Owned {
        let object = attributePath(name)
        guard file.isWritable else {
            throw HDF5Error.invalidArgument(object: object, reason: "file was opened read-only")
        }
        if name.isEmpty || name.utf8.contains(0) {
            throw HDF5Error.invalidArgument(object: object, reason: "attribute names must be non-empty and NUL-free")
        }
        if try checkTri(H5Aexists(handle.id, name), "H5Aexists", object) {
            try check(H5Adelete(handle.id, name), "H5Adelete", object)
        }
        let space = try makeDataspace(shape: shape, object: object)
        let acpl = try makePropertyList(scalpel_h5p_attribute_create(), object: object)
        try check(H5Pset_char_encoding(acpl.id, H5T_CSET_UTF8), "H5Pset_char_encoding", object)
        return try H5Owned(H5Acreate2(handle.id, name, type, space.id, acpl.id, h5Default), .attribute,
                           function: "H5Acreate2", object: object)
    }

    private func setNumeric<T>(_ name: String, _ values: [T], shape: [Int], type: HDF5ElementType) throws {
        try withOpenFile {
            let attr = try createAttribute(name, type: type.nativeType, shape: shape)
            if values.isEmpty { return }
            try values.withUnsafeBytes { raw in
                try check(H5Awrite(attr.id, type.nativeType, raw.baseAddress), "H5Awrite", attributePath(name))
            }
        }
    }

    /// Opens an attribute with its type, dataspace and element count. Library lock held.
    private func openAttribute(_ name: String) throws -> (H5Owned, H5Owned, H5Owned, Int) {
        let object = attributePath(name)
        guard !name.isEmpty, H5Aexists(handle.id, name) > 0 else {
            throw HDF5Error.notFound(path: file.path, object: object)
        }
        let attr = try H5Owned(H5Aopen(handle.id, name, h5Default), .attribute, function: "H5Aopen", object: object)
        let type = try H5Owned(H5Aget_type(attr.id), .datatype, function: "H5Aget_type", object: object)
        let space = try H5Owned(H5Aget_space(attr.id), .dataspace, function: "H5Aget_space", object: object)
        let count = try checkCount(H5Sget_simple_extent_npoints(space.id), "H5Sget_simple_extent_npoints", object)
        return (attr, type, space, count)
    }

    /// Reads a numeric attribute as int64 or float64. Integers may be read as float64;
    /// floats are never read as integers (`.typeMismatch`).
    private func readNumeric<T>(_ name: String, as target: HDF5ElementType, scalar: Bool) throws -> [T] {
        try withOpenFile {
            let object = attributePath(name)
            let (attr, type, space, count) = try openAttribute(name)
            let cls = H5Tget_class(type.id)
            let ok = cls == H5T_INTEGER || (cls == H5T_FLOAT && target == .float64)
            guard ok else {
                throw HDF5Error.typeMismatch(object: object, expected: target == .int64 ? "integer" : "number",
                                             found: describeType(type.id))
            }
            if scalar && count != 1 {
                throw HDF5Error.shapeMismatch(object: object, expected: [], found: try dataspaceShape(space.id, object: object))
            }
            if count == 0 { return [] }
            return try [T](unsafeUninitializedCapacity: count) { buf, initialized in
                try check(H5Aread(attr.id, target.nativeType, buf.baseAddress), "H5Aread", object)
                initialized = count
            }
        }
    }
}
