import CHDF5

/// String-array datasets (for example a tokenizer's vocabulary and merges).
///
/// Strings are stored as a 1-D dataset of variable-length UTF-8 strings, written and read with a
/// single HDF5 call each (no per-string HDF5 calls). h5py reads them with
/// `ds.asstr()[()]` (or gets `bytes` from `ds[()]`, as for any h5py string dataset).
/// Strings may be empty but must not contain NUL characters (C-string storage).
extension HDF5Group {
    /// Writes `strings` as a 1-D dataset `name` of variable-length UTF-8 strings.
    /// With `overwrite`, an existing dataset `name` is replaced; otherwise it throws `.alreadyExists`.
    /// An existing group is never replaced (`.typeMismatch`).
    public func writeStrings(_ strings: [String], to name: String, overwrite: Bool = false) throws {
        try withOpenFile {
            let full = joinPath(path, name)
            guard file.isWritable else {
                throw HDF5Error.invalidArgument(object: full, reason: "file was opened read-only")
            }
            try validateName(name)
            // One contiguous NUL-terminated UTF-8 buffer plus an offset per string.
            var bytes: [CChar] = []
            var offsets: [Int] = []
            offsets.reserveCapacity(strings.count)
            bytes.reserveCapacity(strings.reduce(0) { $0 + $1.utf8.count + 1 })
            for (i, s) in strings.enumerated() {
                offsets.append(bytes.count)
                for b in s.utf8 {
                    if b == 0 {
                        throw HDF5Error.invalidArgument(object: full, reason: "string \(i) contains a NUL character")
                    }
                    bytes.append(CChar(bitPattern: b))
                }
                bytes.append(0)
            }
            if existsLocked(name) {
                guard overwrite else { throw HDF5Error.alreadyExists(path: file.path, object: full) }
                try requireKind(name, .dataset)
                try check(H5Ldelete(handle.id, name, h5Default), "H5Ldelete", full)
            }
            let type = try makeVariableStringType(object: full)
            let space = try makeDataspace(shape: [strings.count], object: full)
            let lcpl = try makeIntermediateLCPL(object: full)
            let dcpl = try makePropertyList(scalpel_h5p_dataset_create(), object: full)
            try check(H5Pset_obj_track_times(dcpl.id, false), "H5Pset_obj_track_times", full)
            let dset = try H5Owned(H5Dcreate2(handle.id, name, type.id, space.id, lcpl.id, dcpl.id, h5Default),
                                   .dataset, function: "H5Dcreate2", object: full)
            guard !strings.isEmpty else { return }
            try bytes.withUnsafeBufferPointer { buf in
                let base = buf.baseAddress!
                let pointers: [UnsafePointer<CChar>?] = offsets.map { base + $0 }
                try pointers.withUnsafeBufferPointer { p in
                    try check(H5Dwrite(dset.id, type.id, h5All, h5All, h5Default, p.baseAddress),
                              "H5Dwrite", full)
                }
            }
        }
    }

    /// Reads a string dataset of any rank (flattened, row-major). Variable-length and
    /// fixed-length (NUL- or space-padded) strings are accepted; invalid UTF-8 is repaired.
    /// Throws `.typeMismatch` when the dataset does not hold strings.
    public func readStrings(_ name: String) throws -> [String] {
        try dataset(name).readStrings()
    }
}

extension HDF5Dataset {
    /// Reads this dataset as strings (see `HDF5Group.readStrings(_:)`).
    public func readStrings() throws -> [String] {
        try withOpenFile {
            let ftype = try H5Owned(H5Dget_type(handle.id), .datatype, function: "H5Dget_type", object: path)
            guard H5Tget_class(ftype.id) == H5T_STRING else {
                throw HDF5Error.typeMismatch(object: path, expected: "string", found: storedTypeDescription)
            }
            let space = try H5Owned(H5Dget_space(handle.id), .dataspace, function: "H5Dget_space", object: path)
            return try readStringValues(
                count: elementCount, fileType: ftype.id, space: space.id, object: path,
                read: { mem, buf in H5Dread(handle.id, mem, h5All, h5All, h5Default, buf) })
        }
    }
}

/// Reads `count` strings stored with `fileType` through `read(memoryType, buffer)` (a dataset
/// or attribute read). Shared by string datasets and string attributes. Library lock held.
func readStringValues(count: Int, fileType: hid_t, space: hid_t, object: String,
                      read: (hid_t, UnsafeMutableRawPointer?) -> herr_t) throws -> [String] {
    if count == 0 { return [] }
    let cset = H5Tget_cset(fileType)
    if try checkTri(H5Tis_variable_str(fileType), "H5Tis_variable_str", object) {
        let mem = try makeVariableStringType(object: object, cset: cset)
        var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
        return try pointers.withUnsafeMutableBufferPointer { p -> [String] in
            try check(read(mem.id, p.baseAddress), "read (variable-length strings)", object)
            defer { _ = H5Dvlen_reclaim(mem.id, space, h5Default, p.baseAddress) }
            return p.map { $0.map { String(cString: $0) } ?? "" }
        }
    }
    let size = H5Tget_size(fileType)
    guard size > 0 else { throw HDF5Error.callFailed(function: "H5Tget_size", object: object) }
    let mem = try H5Owned(H5Tcopy(fileType), .datatype, function: "H5Tcopy", object: object)
    let spacePadded = H5Tget_strpad(fileType) == H5T_STR_SPACEPAD
    var bytes = [UInt8](repeating: 0, count: size * count)
    try bytes.withUnsafeMutableBytes { raw in
        try check(read(mem.id, raw.baseAddress), "read (fixed-length strings)", object)
    }
    return (0..<count).map { i in
        var slice = bytes[(i * size)..<((i + 1) * size)]
        if let nul = slice.firstIndex(of: 0) { slice = slice[..<nul] }
        if spacePadded { while slice.last == 0x20 { slice = slice.dropLast() } }
        return String(decoding: slice, as: UTF8.self)
    }
}
