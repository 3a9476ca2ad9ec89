import CHDF5

/// Numeric dataset access by name.
extension HDF5Group {
    /// Opens the dataset `name`. Throws `.notFound` or `.typeMismatch` (when it is a group).
    public func dataset(_ name: String) throws -> HDF5Dataset {
        try withOpenFile { try HDF5Dataset(openingIn: self, name: name) }
    }

    /// The shape of dataset `name` (`[]` for a scalar).
    public func datasetShape(_ name: String) throws -> [Int] {
        try dataset(name).shape
    }

    /// Writes `values` as a dataset of `shape` (row-major) named `name`, creating intermediate
    /// groups as needed. `shape: []` stores a scalar (exactly one value); a zero dimension
    /// stores an empty array. See `HDF5WriteOptions` for layout, compression and overwriting.
    ///
    /// Throws `.shapeMismatch` when `values.count` differs from the product of `shape`,
    /// `.invalidArgument` for negative dimensions, `.alreadyExists` unless `options.overwrite`.
    public func write<T: HDF5Scalar>(_ values: [T], shape: [Int], to name: String,
                                     options: HDF5WriteOptions = .default) throws {
        try values.withUnsafeBufferPointer { try write($0, shape: shape, to: name, options: options) }
    }

    /// Buffer variant of `write(_:shape:to:options:)` (no copy of the caller's memory).
    public func write<T: HDF5Scalar>(_ values: UnsafeBufferPointer<T>, shape: [Int], to name: String,
                                     options: HDF5WriteOptions = .default) throws {
        try withOpenFile {
            let full = joinPath(path, name)
            guard file.isWritable else {
                throw HDF5Error.invalidArgument(object: full, reason: "file was opened read-only")
            }
            try validateName(name)
            let et = try checkLayout(T.self, object: full)
            guard let count = shapeElementCount(shape) else {
                throw HDF5Error.invalidArgument(object: full, reason: "shape \(shape) has a negative dimension or overflows")
            }
            guard count == values.count else {
                throw HDF5Error.shapeMismatch(object: full, expected: shape, found: [values.count])
            }
            let plan = try options.resolve(shape: shape, count: count, elementSize: et.byteSize, object: full)

            if existsLocked(name) {
                guard options.overwrite else { throw HDF5Error.alreadyExists(path: file.path, object: full) }
                try requireKind(name, .dataset)   // never replace a whole group by accident
                let existing = try HDF5Dataset(openingIn: self, name: name)
                if existing.elementType == et && existing.shape == shape && existing.elementCount == count {
                    try existing.writeLocked(from: UnsafeRawPointer(values.baseAddress), elementType: et)
                    return
                }
                try check(H5Ldelete(handle.id, name, h5Default), "H5Ldelete", full)
            }

            let dcpl = try makePropertyList(scalpel_h5p_dataset_create(), object: full)
            try check(H5Pset_obj_track_times(dcpl.id, false), "H5Pset_obj_track_times", full)
            if let rows = plan.chunkRows {
                var chunk = shape.map { hsize_t($0) }
                chunk[0] = hsize_t(rows)
                try check(H5Pset_chunk(dcpl.id, Int32(chunk.count), chunk), "H5Pset_chunk", full)
                if let level = plan.deflateLevel {
                    let shuffle = et.byteSize > 1 && (options.shuffle ?? ChunkEncoder.shuffleHelps(
                        UnsafeRawPointer(values.baseAddress!), bytes: min(rows * (count / shape[0]), count) * et.byteSize,
                        elementSize: et.byteSize, level: level))
                    if shuffle { try check(H5Pset_shuffle(dcpl.id), "H5Pset_shuffle", full) }
                    try check(H5Pset_deflate(dcpl.id, UInt32(level)), "H5Pset_deflate", full)
                }
            }
            let space = try makeDataspace(shape: shape, object: full)
            let lcpl = try makeIntermediateLCPL(object: full)
            let did = H5Dcreate2(handle.id, name, et.nativeType, space.id, lcpl.id, dcpl.id, h5Default)
            _ = try H5Owned(did, .dataset, function: "H5Dcreate2", object: full)
            do {
                let created = try HDF5Dataset(openingIn: self, name: name)
                try created.writeLocked(from: UnsafeRawPointer(values.baseAddress), elementType: et)
            } catch {
                _ = H5Ldelete(handle.id, name, h5Default)   // leave no half-written dataset behind
                throw error
            }
        }
    }

    /// Reads dataset `name` as `T`. With `expectedShape`, a different stored shape throws
    /// `.shapeMismatch`; a different element type throws `.typeMismatch`.
    public func read<T: HDF5Scalar>(_ name: String, as type: T.Type = T.self,
                                    expectedShape: [Int]? = nil) throws -> (values: [T], shape: [Int]) {
        try withOpenFile {
            let ds = try dataset(name)
            try ds.requireElementType(T.self)
            if let expectedShape, expectedShape != ds.shape {
                throw HDF5Error.shapeMismatch(object: ds.path, expected: expectedShape, found: ds.shape)
            }
            return (try ds.read(as: T.self), ds.shape)
        }
    }

    /// Reads dataset `name` into caller-owned memory (for example a model's preallocated weight
    /// storage) without an intermediate copy, returning its shape. `buffer.count` must equal the
    /// element count; with `expectedShape`, the stored shape must equal it.
    @discardableResult
    public func read<T: HDF5Scalar>(_ name: String, into buffer: UnsafeMutableBufferPointer<T>,
                                    expectedShape: [Int]? = nil) throws -> [Int] {
        try read(batch: [HDF5ReadRequest(name: name, buffer: buffer, expectedShape: expectedShape)])
        return try datasetShape(name)
    }

    /// Reads rows `rows` of dataset `name`'s first dimension.
    public func read<T: HDF5Scalar>(_ name: String, rows: Range<Int>,
                                    as type: T.Type = T.self) throws -> (values: [T], shape: [Int]) {
        try withOpenFile {
            let ds = try dataset(name)
            let values = try ds.read(rows: rows, as: T.self)
            return (values, [rows.count] + ds.shape.dropFirst())
        }
    }

    /// Reads many datasets into caller-owned buffers in one pass: compressed chunks of all of them
    /// are fetched first (HDF5 is single-threaded), then decompressed on all cores together, so
    /// small datasets also benefit from parallelism. Buffers must not overlap. Every request is
    /// validated (existence, type, shape) before any data is read.
    public func read<T: HDF5Scalar>(batch requests: [HDF5ReadRequest<T>]) throws {
        try withOpenFile {
            var opened: [HDF5Dataset] = []
            opened.reserveCapacity(requests.count)
            for request in requests {
                let ds = try dataset(request.name)
                try ds.requireElementType(T.self)
                if let expected = request.expectedShape, expected != ds.shape {
                    throw HDF5Error.shapeMismatch(object: ds.path, expected: expected, found: ds.shape)
                }
                try ds.requireCount(request.buffer.count)
                opened.append(ds)
            }
            let et = T.hdf5ElementType
            let decoder = ChunkDecoder()
            for (ds, request) in zip(opened, requests) {
                guard ds.elementCount > 0, let base = request.buffer.baseAddress else { continue }
                let dest = UnsafeMutableRawPointer(base)
                if HDF5Tuning.directChunkIO,
                   let layout = try ChunkLayout.inspect(ds.handle.id, shape: ds.shape, elementType: et, object: ds.path),
                   try decoder.enqueue(dataset: ds.handle.id, layout: layout, dest: dest, object: ds.path) {
                    continue
                }
                try check(H5Dread(ds.handle.id, et.nativeType, h5All, h5All, h5Default, dest), "H5Dread", ds.path)
            }
            try decoder.flush()
        }
    }
}
