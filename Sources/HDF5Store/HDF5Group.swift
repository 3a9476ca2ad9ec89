import CHDF5

/// The kind of object a link in a group points to.
public enum HDF5ObjectKind: String, Sendable {
    case group, dataset, other
}

/// A group (directory) inside an HDF5 file.
///
/// Member names may be nested paths ("layers/0/attn_q"); creating a nested group or dataset
/// creates the missing intermediate groups.
public final class HDF5Group: HDF5Object {

    // MARK: Opening and creating groups

    /// Opens the existing group `name`.
    /// Throws `.notFound` when it does not exist and `.typeMismatch` when it is not a group.
    public func group(_ name: String) throws -> HDF5Group {
        try withOpenFile {
            let full = joinPath(path, name)
            try requireKind(name, .group)
            let gid = H5Gopen2(handle.id, name, h5Default)
            let owned = try H5Owned(gid, .group, function: "H5Gopen2", object: full)
            return HDF5Group(file: file, handle: owned, path: full)
        }
    }

    /// Creates the group `name` (and any missing intermediate groups).
    /// Throws `.alreadyExists` when a link with that name exists.
    @discardableResult
    public func createGroup(_ name: String) throws -> HDF5Group {
        try withOpenFile {
            let full = joinPath(path, name)
            try validateName(name)
            if existsLocked(name) { throw HDF5Error.alreadyExists(path: file.path, object: full) }
            let lcpl = try makeIntermediateLCPL(object: full)
            let gcpl = try makePropertyList(scalpel_h5p_group_create(), object: full)
            try check(H5Pset_obj_track_times(gcpl.id, false), "H5Pset_obj_track_times", full)
            let gid = H5Gcreate2(handle.id, name, lcpl.id, gcpl.id, h5Default)
            let owned = try H5Owned(gid, .group, function: "H5Gcreate2", object: full)
            return HDF5Group(file: file, handle: owned, path: full)
        }
    }

    /// Opens the group `name`, creating it (and intermediate groups) when missing.
    /// Throws `.typeMismatch` when `name` exists but is not a group.
    @discardableResult
    public func openOrCreateGroup(_ name: String) throws -> HDF5Group {
        try withOpenFile {
            existsLocked(name) ? try group(name) : try createGroup(name)
        }
    }

    // MARK: Inspecting members

    /// True when `name` (possibly a nested path such as "a/b/c") resolves to an object.
    /// Never throws: a missing intermediate group, a closed file or a dangling link give `false`.
    public func exists(_ name: String) -> Bool {
        HDF5Library.sync {
            (try? file.ensureOpen()) != nil && existsLocked(name)
        }
    }

    /// What `name` is, or nil when it does not exist.
    public func kind(of name: String) throws -> HDF5ObjectKind? {
        try withOpenFile {
            guard existsLocked(name) else { return nil }
            let full = joinPath(path, name)
            let obj = H5Oopen(handle.id, name, h5Default)
            if obj < 0 { throw HDF5Error.callFailed(function: "H5Oopen", object: full) }
            defer { _ = H5Oclose(obj) }
            switch H5Iget_type(obj) {
            case H5I_GROUP: return .group
            case H5I_DATASET: return .dataset
            default: return .other
            }
        }
    }

    /// Names of the direct members of this group, sorted.
    public func memberNames() throws -> [String] {
        try withOpenFile {
            var info = H5G_info_t()
            try check(H5Gget_info(handle.id, &info), "H5Gget_info", path)
            var names: [String] = []
            names.reserveCapacity(Int(info.nlinks))
            for i in 0..<info.nlinks {
                let len = try checkCount(
                    H5Lget_name_by_idx(handle.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, h5Default),
                    "H5Lget_name_by_idx", path)
                var buf = [CChar](repeating: 0, count: len + 1)
                _ = try checkCount(
                    H5Lget_name_by_idx(handle.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buf, len + 1, h5Default),
                    "H5Lget_name_by_idx", path)
                names.append(String(decoding: buf.prefix(len).map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            return names.sorted()
        }
    }

    /// Paths (relative to this group, "/"-separated) of every dataset below it, recursively, sorted.
    /// Soft and external links are not followed into other groups.
    public func datasetPaths() throws -> [String] {
        try withOpenFile {
            var result: [String] = []
            try collectDatasets(prefix: "", into: &result)
            return result.sorted()
        }
    }

    private func collectDatasets(prefix: String, into result: inout [String]) throws {
        for name in try memberNames() {
            var linfo = H5L_info_t()
            try check(H5Lget_info(handle.id, name, &linfo, h5Default), "H5Lget_info", joinPath(path, name))
            guard linfo.type == H5L_TYPE_HARD else { continue }
            switch try kind(of: name) {
            case .dataset?: result.append(prefix + name)
            case .group?: try group(name).collectDatasets(prefix: prefix + name + "/", into: &result)
            default: break
            }
        }
    }

    /// Removes the link `name` (a dataset or a whole group subtree).
    /// HDF5 does not shrink the file; use `AtomicFile`/`HDF5File.createAtomically` to rewrite
    /// a store when its size matters. Throws `.notFound` when missing.
    public func delete(_ name: String) throws {
        try withOpenFile {
            let full = joinPath(path, name)
            guard existsLocked(name) else { throw HDF5Error.notFound(path: file.path, object: full) }
            try check(H5Ldelete(handle.id, name, h5Default), "H5Ldelete", full)
        }
    }

    // MARK: Internal helpers (library lock held)

    /// `exists` without locking or open-file checks: walks each path component with H5Lexists
    /// (which fails rather than returning false when an intermediate group is missing).
    func existsLocked(_ name: String) -> Bool {
        if name.isEmpty { return false }
        if name == "/" || name == "." { return true }
        let absolute = name.hasPrefix("/")
        let parts = name.split(separator: "/", omittingEmptySubsequences: true)
        var prefix = absolute ? "/" : ""
        for part in parts {
            prefix += (prefix.isEmpty || prefix == "/") ? String(part) : "/" + part
            if part == "." { continue }
            if H5Lexists(handle.id, prefix, h5Default) <= 0 { return false }
        }
        // The final link exists; make sure it resolves (soft links may dangle).
        return H5Oexists_by_name(handle.id, name, h5Default) > 0
    }

    /// Throws `.notFound` if `name` is missing, `.typeMismatch` if it is not of `kind`.
    func requireKind(_ name: String, _ expected: HDF5ObjectKind) throws {
        let full = joinPath(path, name)
        guard let found = try kind(of: name) else {
            throw HDF5Error.notFound(path: file.path, object: full)
        }
        if found != expected {
            throw HDF5Error.typeMismatch(object: full, expected: expected.rawValue, found: found.rawValue)
        }
    }

    /// Rejects empty names and names with empty components other than a leading "/".
    func validateName(_ name: String) throws {
        let full = joinPath(path, name)
        if name.isEmpty || name == "/" {
            throw HDF5Error.invalidArgument(object: full, reason: "empty object name")
        }
        if name.utf8.contains(0) {
            throw HDF5Error.invalidArgument(object: full, reason: "object name contains a NUL character")
        }
    }
}
