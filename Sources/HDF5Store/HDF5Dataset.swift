import CHDF5
import Hashing

/// An open dataset: an n-dimensional array of numbers (or strings) with a fixed shape.
///
/// Numeric reads are strict about the element type (see `HDF5Scalar`). Chunked datasets written
/// with shuffle + deflate are decoded chunk-by-chunk with zlib on all cores (see `HDF5Tuning`).
public final class HDF5Dataset: HDF5Object {
    /// Dimensions, row-major. `[]` for a scalar (one element).
    public let shape: [Int]
    /// The numeric element type, or nil when the stored type is not one `HDF5Store` reads
    /// as numbers (strings, compounds, float16, ...).
    public let elementType: HDF5ElementType?
    /// Description of the stored type, e.g. "float32", "variable-length string".
    public let storedTypeDescription: String
    /// Number of elements (product of `shape`; 1 for a scalar).
    public let elementCount: Int

    /// Opens `name` below `group`. Call with the library lock held.
    init(openingIn group: HDF5Group, name: String) throws {
        let full = joinPath(group.path, name)
        try group.requireKind(name, .dataset)
        let owned = try H5Owned(H5Dopen2(group.handle.id, name, h5Default), .dataset,
                                function: "H5Dopen2", object: full)
        let space = try H5Owned(H5Dget_space(owned.id), .dataspace, function: "H5Dget_space", object: full)
        let type = try H5Owned(H5Dget_type(owned.id), .datatype, function: "H5Dget_type", object: full)
        shape = try dataspaceShape(space.id, object: full)
        elementCount = H5Sget_simple_extent_type(space.id) == H5S_NULL ? 0 : (shapeElementCount(shape) ?? 0)
        elementType = HDF5ElementType.matching(type.id)
        storedTypeDescription = describeType(type.id)
        super.init(file: group.file, handle: owned, path: full)
    }

    // MARK: Reading numbers

    /// Reads the whole dataset as `T`.
    public func read<T: HDF5Scalar>(as type: T.Type = T.self) throws -> [T] {
        try withOpenFile {
            try requireElementType(T.self)
            return try [T](unsafeUninitializedCapacity: elementCount) { buf, initialized in
                try readLocked(into: UnsafeMutableRawPointer(buf.baseAddress), elementType: T.hdf5ElementType)
                initialized = elementCount
            }
        }
    }

    /// Reads the whole dataset into caller-owned memory (no intermediate copy).
    /// `buffer.count` must equal `elementCount`, otherwise `.shapeMismatch` is thrown.
    public func read<T: HDF5Scalar>(into buffer: UnsafeMutableBufferPointer<T>) throws {
        try withOpenFile {
            try requireElementType(T.self)
            try requireCount(buffer.count)
            try readLocked(into: UnsafeMutableRawPointer(buffer.baseAddress), elementType: T.hdf5ElementType)
        }
    }

    /// Reads rows `rows` of the first dimension (a hyperslab), returning `rows.count × shape[1...]`
    /// values. Throws `.invalidArgument` for scalars or ranges outside `0...shape[0]`.
    public func read<T: HDF5Scalar>(rows: Range<Int>, as type: T.Type = T.self) throws -> [T] {
        try withOpenFile {
            try requireElementType(T.self)
            guard let first = shape.first else {
                throw HDF5Error.invalidArgument(object: path, reason: "a scalar dataset has no rows")
            }
            guard rows.lowerBound >= 0, rows.upperBound <= first else {
                throw HDF5Error.invalidArgument(object: path, reason: "rows \(rows) outside 0..<\(first)")
            }
            let rowElements = first == 0 ? 0 : elementCount / first
            let count = rows.count * rowElements
            return try [T](unsafeUninitializedCapacity: count) { buf, initialized in
                if count > 0 {
                    let fspace = try H5Owned(H5Dget_space(handle.id), .dataspace, function: "H5Dget_space", object: path)
                    var start = [hsize_t](repeating: 0, count: shape.count)
                    var extent = shape.map { hsize_t($0) }
                    start[0] = hsize_t(rows.lowerBound)
                    extent[0] = hsize_t(rows.count)
                    try check(H5Sselect_hyperslab(fspace.id, H5S_SELECT_SET, start, nil, extent, nil),
                              "H5Sselect_hyperslab", path)
                    let mspace = try H5Owned(H5Screate_simple(Int32(extent.count), extent, nil), .dataspace,
                                             function: "H5Screate_simple", object: path)
                    try check(H5Dread(handle.id, T.hdf5ElementType.nativeType, mspace.id, fspace.id, h5Default,
                                      buf.baseAddress), "H5Dread", path)
                }
                initialized = count
            }
        }
    }

    // MARK: Writing numbers

    /// Overwrites every value in place, keeping layout, filters and attributes.
    /// The element type must match exactly and `values.count` must equal `elementCount`.
    public func write<T: HDF5Scalar>(_ values: UnsafeBufferPointer<T>) throws {
        try withOpenFile {
            guard file.isWritable else {
                throw HDF5Error.invalidArgument(object: path, reason: "file was opened read-only")
            }
            try requireElementType(T.self)
            try requireCount(values.count)
            try writeLocked(from: UnsafeRawPointer(values.baseAddress), elementType: T.hdf5ElementType)
        }
    }

    /// Array convenience for `write(_:)`.
    public func write<T: HDF5Scalar>(_ values: [T]) throws {
        try values.withUnsafeBufferPointer { try write($0) }
    }

    // MARK: Internals (library lock held)

    func requireElementType<T: HDF5Scalar>(_: T.Type) throws {
        let et = try checkLayout(T.self, object: path)
        if elementType != et {
            throw HDF5Error.typeMismatch(object: path, expected: et.rawValue, found: storedTypeDescription)
        }
    }

    func requireCount(_ count: Int) throws {
        if count != elementCount {
            throw HDF5Error.shapeMismatch(object: path, expected: [count], found: shape)
        }
    }

    /// Fills `dest` with all `elementCount` values converted to `elementType`'s native type.
    func readLocked(into dest: UnsafeMutableRawPointer?, elementType: HDF5ElementType) throws {
        guard elementCount > 0, let dest else { return }
        if HDF5Tuning.directChunkIO,
           let layout = try ChunkLayout.inspect(handle.id, shape: shape, elementType: elementType, object: path) {
            let decoder = ChunkDecoder()
            if try decoder.enqueue(dataset: handle.id, layout: layout, dest: dest, object: path) {
                try decoder.flush()
                return
            }
        }
        try check(H5Dread(handle.id, elementType.nativeType, h5All, h5All, h5Default, dest), "H5Dread", path)
    }

    /// Writes all `elementCount` values from `src` (native `elementType` layout).
    func writeLocked(from src: UnsafeRawPointer?, elementType: HDF5ElementType) throws {
        guard elementCount > 0, let src else { return }
        if HDF5Tuning.directChunkIO,
           let layout = try ChunkLayout.inspect(handle.id, shape: shape, elementType: elementType, object: path) {
            try ChunkEncoder.write(dataset: handle.id, layout: layout, source: src, object: path)
            return
        }
        try check(H5Dwrite(handle.id, elementType.nativeType, h5All, h5All, h5Default, src), "H5Dwrite", path)
    }
}

/// One dataset to fill in a batched read (see `HDF5Group.read(batch:)`).
public struct HDF5ReadRequest<T: HDF5Scalar> {
    /// Dataset name relative to the group (nested paths allowed).
    public var name: String
    /// Destination; its count must equal the dataset's element count.
    public var buffer: UnsafeMutableBufferPointer<T>
    /// When set, the dataset's shape must equal it (else `.shapeMismatch`).
    public var expectedShape: [Int]?

    public init(name: String, buffer: UnsafeMutableBufferPointer<T>, expectedShape: [Int]? = nil) {
        self.name = name
        self.buffer = buffer
        self.expectedShape = expectedShape
    }
}

extension HDF5Dataset {
    /// SHA-256 (lower-case hex) of the values' bytes in row-major order and little-endian machine
    /// layout — the same digest `SHA256.hex(floats:)` gives for the `[Float]` that was written.
    /// Independent of chunking and compression, so it identifies tensor contents across stores.
    /// Throws `.typeMismatch` for non-numeric datasets.
    public func valuesSHA256() throws -> String {
        try withOpenFile {
            guard let et = elementType else {
                throw HDF5Error.typeMismatch(object: path, expected: "a numeric type", found: storedTypeDescription)
            }
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(elementCount * et.byteSize, 1), alignment: 64)
            defer { bytes.deallocate() }
            try readLocked(into: bytes.baseAddress, elementType: et)
            return SHA256.hex(UnsafeRawBufferPointer(rebasing: bytes[0..<(elementCount * et.byteSize)]))
        }
    }
}
