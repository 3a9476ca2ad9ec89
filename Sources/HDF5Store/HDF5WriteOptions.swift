/// How a numeric dataset is laid out and compressed on disk.
public struct HDF5WriteOptions: Sendable, Equatable {
    /// Compression choice.
    public enum Compression: Sendable, Equatable {
        /// Deflate (with the byte-shuffle filter) at `defaultDeflateLevel` for arrays of at least
        /// `compressionThreshold` elements; no compression for smaller ones.
        case automatic
        /// No compression.
        case none
        /// Shuffle + deflate at `level` (1...9).
        case deflate(level: Int)
    }

    /// Arrays with at least this many elements are compressed under `.automatic`.
    public static let compressionThreshold = 65_536
    /// Deflate level used by `.automatic`: level 1 compresses float weights almost as well as
    /// higher levels and is several times faster to write.
    public static let defaultDeflateLevel = 1

    /// Compression; `.automatic` by default.
    public var compression: Compression
    /// Byte-shuffle filter before deflate. `nil` (default) decides per dataset by deflating a
    /// 64 KiB sample both ways and keeping the smaller: shuffling helps smooth data (e.g.
    /// normally distributed weights) but hurts data with exactly repeated values (e.g. weights
    /// dequantized from 4-bit blocks). Ignored without compression.
    public var shuffle: Bool?
    /// Chunked layout. `nil` (default) means chunked exactly when compressed. Compression requires
    /// chunking, so `chunked: false` with compression throws `.invalidArgument`.
    /// Scalars and empty arrays are always stored contiguously, uncompressed.
    public var chunked: Bool?
    /// Approximate chunk size in bytes. Chunks span whole rows of the first dimension
    /// (so every chunk is a contiguous slab of the row-major array), at least one row each.
    public var targetChunkBytes: Int
    /// When the dataset already exists: with `false` (default) writing throws `.alreadyExists`;
    /// with `true` an existing dataset of the same element type and shape is overwritten in place
    /// (keeping its layout, filters and attributes), and any other dataset is deleted and
    /// recreated. An existing group is never replaced (`.typeMismatch`). In-place writes are not
    /// atomic: use `HDF5File.updateAtomically` when a failure must not leave a half-edited file.
    public var overwrite: Bool

    public init(compression: Compression = .automatic, shuffle: Bool? = nil, chunked: Bool? = nil,
                targetChunkBytes: Int = 1 << 20, overwrite: Bool = false) {
        self.compression = compression
        self.shuffle = shuffle
        self.chunked = chunked
        self.targetChunkBytes = targetChunkBytes
        self.overwrite = overwrite
    }

    /// Default options: automatic compression, no overwriting.
    public static let `default` = HDF5WriteOptions()

    /// Resolved storage plan for an array of `shape` with `elementSize`-byte elements.
    func resolve(shape: [Int], count: Int, elementSize: Int, object: String) throws
        -> (chunkRows: Int?, deflateLevel: Int?)
    {
        if shape.isEmpty || count == 0 { return (nil, nil) }
        var level: Int?
        switch compression {
        case .automatic: level = count >= Self.compressionThreshold ? Self.defaultDeflateLevel : nil
        case .none: level = nil
        case .deflate(let l):
            guard (1...9).contains(l) else {
                throw HDF5Error.invalidArgument(object: object, reason: "deflate level \(l) is not in 1...9")
            }
            level = l
        }
        let wantChunks = chunked ?? (level != nil)
        if level != nil && !wantChunks {
            throw HDF5Error.invalidArgument(object: object, reason: "compression requires a chunked layout")
        }
        guard wantChunks else { return (nil, nil) }
        guard targetChunkBytes > 0 else {
            throw HDF5Error.invalidArgument(object: object, reason: "targetChunkBytes must be positive")
        }
        let rowBytes = (count / shape[0]) * elementSize
        let rows = max(1, min(shape[0], targetChunkBytes / max(rowBytes, 1)))
        return (rows, level)
    }
}
