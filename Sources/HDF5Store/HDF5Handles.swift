import CHDF5
import Foundation

/// `H5P_DEFAULT`, `H5S_ALL` and `H5E_DEFAULT` are all the identifier 0.
let h5Default: hid_t = 0
let h5All: hid_t = 0

/// Process-wide HDF5 set-up and serialisation.
///
/// The Debian HDF5 build is the *serial* (non-thread-safe) library, so every call into it made by
/// this module happens while holding one recursive lock. Parallel work (zlib, byte shuffling) runs
/// on worker threads that never call HDF5.
enum HDF5Library {
    private static let lock = NSRecursiveLock()

    /// Runs once: initialises the library and turns off HDF5's automatic error-stack printing,
    /// so failures surface only as `HDF5Error` values.
    ///
    /// HDF5's exit handler is switched off (`H5dont_atexit`): after a write fails on a full disk, `H5Fclose` fails
    /// and leaves a half-closed file behind, which the exit handler then dereferences (SIGSEGV after the error was
    /// reported). Every file this module writes is closed explicitly, and only a successfully closed file is ever
    /// renamed into place, so skipping the handler loses nothing.
    private static let initialized: Bool = {
        _ = H5dont_atexit()
        _ = H5open()
        _ = H5Eset_auto2(h5Default, nil, nil)
        return true
    }()

    /// Runs `body` with exclusive access to the HDF5 library.
    @inline(__always)
    static func sync<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        _ = initialized
        return try body()
    }
}

/// Owns exactly one HDF5 identifier and closes it when released.
///
/// Identifiers are never reused by HDF5 (they carry an ever-increasing counter), so checking
/// `H5Iis_valid` before closing is safe even after the owning file was closed with
/// `H5F_CLOSE_STRONG`, which closes every object of the file.
final class H5Owned {
    enum Kind: String {
        case file, group, dataset, dataspace, datatype, propertyList = "property list", attribute
    }

    let id: hid_t
    let kind: Kind
    private var closed = false

    /// Takes ownership of `id`; throws `.callFailed(function:object:)` when `id` is negative.
    init(_ id: hid_t, _ kind: Kind, function: String, object: @autoclosure () -> String) throws {
        if id < 0 { HDF5Library.noteFailure(); throw HDF5Error.callFailed(function: function, object: object()) }
        self.id = id
        self.kind = kind
    }

    /// Closes the identifier now (idempotent). Returns the HDF5 status (0 when nothing to do).
    @discardableResult
    func close() -> herr_t {
        HDF5Library.sync {
            if closed { return 0 }
            closed = true
            guard H5Iis_valid(id) > 0 else { return 0 }
            switch kind {
            case .file: return H5Fclose(id)
            case .group: return H5Gclose(id)
            case .dataset: return H5Dclose(id)
            case .dataspace: return H5Sclose(id)
            case .datatype: return H5Tclose(id)
            case .propertyList: return H5Pclose(id)
            case .attribute: return H5Aclose(id)
            }
        }
    }

    deinit { close() }
}

// MARK: - Small constructors for transient identifiers

/// A new property list of `cls` (for example `scalpel_h5p_dataset_create()`).
func makePropertyList(_ cls: hid_t, object: String) throws -> H5Owned {
    try H5Owned(H5Pcreate(cls), .propertyList, function: "H5Pcreate", object: object)
}

/// A link-creation property list that creates missing intermediate groups ("a/b/c").
func makeIntermediateLCPL(object: String) throws -> H5Owned {
    let lcpl = try makePropertyList(scalpel_h5p_link_create(), object: object)
    try check(H5Pset_create_intermediate_group(lcpl.id, 1), "H5Pset_create_intermediate_group", object)
    try check(H5Pset_char_encoding(lcpl.id, H5T_CSET_UTF8), "H5Pset_char_encoding", object)
    return lcpl
}

/// A dataspace for `shape`: scalar for `[]`, simple otherwise (zero-length dimensions allowed).
func makeDataspace(shape: [Int], object: String) throws -> H5Owned {
    if shape.isEmpty {
        return try H5Owned(H5Screate(H5S_SCALAR), .dataspace, function: "H5Screate", object: object)
    }
    let dims = shape.map { hsize_t($0) }
    return try H5Owned(H5Screate_simple(Int32(dims.count), dims, nil), .dataspace,
                       function: "H5Screate_simple", object: object)
}

/// The shape of a dataspace: `[]` for scalar, `[0]` for a null dataspace.
func dataspaceShape(_ space: hid_t, object: String) throws -> [Int] {
    let cls = H5Sget_simple_extent_type(space)
    if cls == H5S_SCALAR { return [] }
    if cls == H5S_NULL { return [0] }
    let rank = try checkCount(H5Sget_simple_extent_ndims(space), "H5Sget_simple_extent_ndims", object)
    var dims = [hsize_t](repeating: 0, count: rank)
    _ = try checkCount(H5Sget_simple_extent_dims(space, &dims, nil), "H5Sget_simple_extent_dims", object)
    return dims.map { Int($0) }
}

/// A variable-length UTF-8 C-string datatype.
func makeVariableStringType(object: String, cset: H5T_cset_t = H5T_CSET_UTF8) throws -> H5Owned {
    let type = try H5Owned(H5Tcopy(scalpel_h5t_c_s1()), .datatype, function: "H5Tcopy", object: object)
    try check(H5Tset_size(type.id, scalpel_h5t_variable()), "H5Tset_size", object)
    try check(H5Tset_cset(type.id, cset), "H5Tset_cset", object)
    try check(H5Tset_strpad(type.id, H5T_STR_NULLTERM), "H5Tset_strpad", object)
    return type
}

/// Product of `shape`, or nil on a negative dimension or overflow. `[]` (scalar) has one element.
func shapeElementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        if d < 0 { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = p
    }
    return n
}

/// Joins a group path and a (relative or absolute) member name for messages and child paths.
func joinPath(_ base: String, _ name: String) -> String {
    if name.hasPrefix("/") { return name }
    if base == "/" || base.isEmpty { return "/" + name }
    return base + "/" + name
}
