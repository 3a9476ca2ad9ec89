/// Activation hook points, named as in TransformerLens (`blocks.{l}.hook_resid_pre`, `blocks.{l}.attn.hook_z`, …).
public enum HookKind: String, CaseIterable, Sendable {
    case residPre = "hook_resid_pre"          // [N, D] block input
    case attnQ = "attn.hook_q"                // [N, H·HD] queries before RoPE
    case attnK = "attn.hook_k"                // [N, KVH·HD] keys before RoPE
    case attnV = "attn.hook_v"                // [N, KVH·HD] values
    case attnZ = "attn.hook_z"                // [N, H·HD] attention-weighted values, before W_O
    case attnOut = "hook_attn_out"            // [N, D]
    case residMid = "hook_resid_mid"          // [N, D] resid_pre + attn_out
    case mlpPre = "mlp.hook_pre"              // [N, F] gate projection (pre-activation)
    case mlpPreLinear = "mlp.hook_pre_linear" // [N, F] up projection
    case mlpPost = "mlp.hook_post"            // [N, F] silu(gate)·up: the key ROME edits
    case mlpOut = "hook_mlp_out"              // [N, D]
    case residPost = "hook_resid_post"        // [N, D] block output

    /// Width of one row of this activation.
    public func width(_ c: LlamaConfig) -> Int {
        switch self {
        case .residPre, .attnOut, .residMid, .mlpOut, .residPost: return c.dModel
        case .attnQ, .attnZ: return c.heads * c.headDim
        case .attnK, .attnV: return c.kvHeads * c.headDim
        case .mlpPre, .mlpPreLinear, .mlpPost: return c.ffnDim
        }
    }

    /// Heads per row for the per-head activations (q, k, v, z), else nil.
    public func heads(_ c: LlamaConfig) -> Int? {
        switch self {
        case .attnQ, .attnZ: return c.heads
        case .attnK, .attnV: return c.kvHeads
        default: return nil
        }
    }
}

/// One hook point: a layer and a kind.
public struct HookPoint: Hashable, Sendable, CustomStringConvertible {
    public let layer: Int
    public let kind: HookKind
    public init(_ layer: Int, _ kind: HookKind) { self.layer = layer; self.kind = kind }

    /// TransformerLens name, e.g. `blocks.3.mlp.hook_post`.
    public var name: String { "blocks.\(layer).\(kind.rawValue)" }
    public var description: String { name }

    /// Parses a TransformerLens name (`hook_embed` is accepted as `blocks.0.hook_resid_pre`).
    public init?(name: String) {
        if name == "hook_embed" { self.init(0, .residPre); return }
        let parts = name.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, parts[0] == "blocks", let l = Int(parts[1]), let k = HookKind(rawValue: parts[2]) else {
            return nil
        }
        self.init(l, k)
    }
}

/// Packed batch geometry: sequences laid end to end as rows, no padding.
public struct BatchLayout: Sendable, Equatable {
    /// New rows of each sequence.
    public let lengths: [Int]
    /// Absolute position of each sequence's first new row (> 0 when a KV cache holds the earlier ones).
    public let startPositions: [Int]
    /// First row of each sequence.
    public let offsets: [Int]
    public var rows: Int { (offsets.last ?? 0) + (lengths.last ?? 0) }
    public var sequences: Int { lengths.count }

    public init(lengths: [Int], startPositions: [Int]? = nil) {
        self.lengths = lengths
        self.startPositions = startPositions ?? [Int](repeating: 0, count: lengths.count)
        var o = 0, offs: [Int] = []
        for n in lengths { offs.append(o); o += n }
        offsets = offs
    }

    /// Row index of absolute position `pos` in sequence `seq`.
    public func row(seq: Int, pos: Int) -> Int { offsets[seq] + pos - startPositions[seq] }

    /// Absolute position of every row.
    public var positions: [Int32] {
        var p: [Int32] = []
        p.reserveCapacity(rows)
        for (n, s) in zip(lengths, startPositions) { for t in 0..<n { p.append(Int32(s + t)) } }
        return p
    }

    /// Rows that are the last of each sequence.
    public var lastRows: [Int] { zip(offsets, lengths).map { $0 + $1 - 1 } }
}

/// A view of one activation during a forward pass, valid only inside the hook call.
public struct Activation {
    public let point: HookPoint
    /// [rows, width] row-major.
    public let data: UnsafeMutablePointer<Float>
    public let width: Int
    public let layout: BatchLayout

    /// Pointer to the row of absolute position `pos` in sequence `seq`.
    public func row(seq: Int, pos: Int) -> UnsafeMutablePointer<Float> { data + layout.row(seq: seq, pos: pos) * width }
    /// All values as a buffer.
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: layout.rows * width) }
}

/// Functions called at hook points; each may read (cache) or overwrite (patch) the activation in place.
public struct Hooks {
    public typealias Function = (Activation) -> Void
    private var table: [HookPoint: [Function]] = [:]
    /// Rows each point's functions overwrite entirely, while every function there declared its rows.
    private var overwrites: [HookPoint: Set<Int>] = [:]
    public init() {}

    /// Adds `fn` at `point` (several functions at one point run in the order added).
    public mutating func add(_ point: HookPoint, _ fn: @escaping Function) {
        table[point, default: []].append(fn)
        overwrites[point] = nil
    }

    /// Adds `fn` at `point`, declaring that it only writes, and writes the whole of batch rows `rows` (it reads
    /// nothing). When every function at a point declares its rows, the forward pass may skip computing those rows of
    /// that activation (e.g. the MLP of rows whose `hook_mlp_out` is replaced).
    public mutating func add(_ point: HookPoint, overwritingRows rows: [Int], _ fn: @escaping Function) {
        let declared = table[point] == nil || overwrites[point] != nil
        table[point, default: []].append(fn)
        overwrites[point] = declared ? overwrites[point, default: []].union(rows) : nil
    }

    /// Rows of `point` that its functions overwrite entirely (empty unless every function declared its rows).
    func overwrittenRows(_ point: HookPoint) -> Set<Int> { overwrites[point] ?? [] }
    public var isEmpty: Bool { table.isEmpty }
    public var points: [HookPoint] { Array(table.keys) }

    /// Whether any hook is registered at or below layer `l` (used to skip work).
    func has(_ p: HookPoint) -> Bool { table[p] != nil }

    func fire(_ point: HookPoint, _ data: UnsafeMutablePointer<Float>, width: Int, layout: BatchLayout) {
        guard let fns = table[point] else { return }
        let a = Activation(point: point, data: data, width: width, layout: layout)
        for f in fns { f(a) }
    }
}
