/// A heap buffer of floats owned by a class (freed in deinit), used for scratch activations so the forward
/// pass can work with plain pointers instead of nested `withUnsafe…` closures.
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    /// Uninitialized storage of `count` floats (zeroed when `zeroed`).
    public init(_ count: Int, zeroed: Bool = false) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        if zeroed { pointer.initialize(repeating: 0, count: max(count, 1)) }
    }

    /// A copy of `values`.
    public convenience init(_ values: [Float]) {
        self.init(values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { pointer.deallocate() }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
    public var array: [Float] { Array(buffer) }
    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }
}

/// Per-layer keys and values of past positions, for generation and for recomputing only a suffix.
public final class KVCache {
    public let config: LlamaConfig
    /// keys[l][b]: [positions, KVH·HD] after RoPE; values likewise.
    public internal(set) var keys: [[[Float]]]
    public internal(set) var values: [[[Float]]]

    public init(config: LlamaConfig, sequences: Int) {
        self.config = config
        keys = Array(repeating: Array(repeating: [], count: sequences), count: config.layers)
        values = keys
    }

    /// Positions cached for sequence `b` (as seen by layer 0).
    public func length(_ b: Int) -> Int { keys.isEmpty ? 0 : positions(layer: 0, seq: b) }

    /// Cached positions of sequence `b` in layer `l`.
    public func positions(layer l: Int, seq b: Int) -> Int { keys[l][b].count / (config.kvHeads * config.headDim) }

    /// Drops cached positions ≥ `n` of every sequence.
    public func truncate(to n: Int) {
        let w = config.kvHeads * config.headDim
        for l in 0..<keys.count { for b in 0..<keys[l].count where keys[l][b].count > n * w {
            keys[l][b].removeLast(keys[l][b].count - n * w)
            values[l][b].removeLast(values[l][b].count - n * w)
        } }
    }

    /// Replaces the storage: keys[l][b], values[l][b] as [positions, KVH·HD] (layers not used may be empty).
    public func setStorage(keys: [[[Float]]], values: [[[Float]]]) {
        precondition(keys.count == config.layers && values.count == config.layers, "one entry per layer")
        self.keys = keys; self.values = values
    }

    /// A deep copy (to branch one prefix into many continuations).
    public func copy() -> KVCache {
        let c = KVCache(config: config, sequences: 0)
        c.keys = keys; c.values = values
        return c
    }
}
