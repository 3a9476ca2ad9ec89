import Foundation

/// A heap buffer of floats owned by a class (freed in deinit), used for scratch activations so the forward
/// pass can work with plain pointers instead of nested `withUnsafe…` closures.
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    /// Uninitialized storage of `count` floats (zeroed when `zeroed`). Storage of large buffers is recycled
    /// through `BufferPool`, so contents are arbitrary unless `zeroed`.
    public init(_ count: Int, zeroed: Bool = false) {
        self.count = count
        pointer = BufferPool.shared.take(count) ?? .allocate(capacity: max(count, 1))
        if zeroed { pointer.update(repeating: 0, count: max(count, 1)) }
    }

    /// A copy of `values`.
    public convenience init(_ values: [Float]) {
        self.init(values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit {
        if !BufferPool.shared.give(pointer, count: count) { pointer.deallocate() }
    }

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

/// Recycles the storage of large scratch buffers. A forward pass allocates the same sizes layer after layer; large
/// allocations come from fresh pages of the OS each time (page faults, zeroing), which cost more than some
/// matrix products. Freed buffers wait here (up to `limitBytes`) for the next request of the same size; when the
/// pool is full, the buffers freed longest ago make room (sizes of an earlier workload give way to the current one).
final class BufferPool: @unchecked Sendable {
    static let shared = BufferPool()
    /// Buffers smaller than this are left to malloc.
    let minimumCount = 16 * 1024
    /// Bytes of free storage kept at most.
    let limitBytes: Int
    /// Free buffers, oldest first: (size class, storage).
    private var free: [(size: Int, pointer: UnsafeMutablePointer<Float>)] = []
    private var pooledBytes = 0
    private let lock = NSLock()

    init(limitBytes: Int = 256 << 20) { self.limitBytes = limitBytes }

    /// Bytes of free storage held now.
    var heldBytes: Int { lock.withLock { pooledBytes } }

    /// The capacity allocated for a request of `count` floats: requests are rounded up to size classes (steps of
    /// a sixteenth of the next power of two), so batches whose row count varies (patching waves) still reuse buffers.
    static func sizeClass(_ count: Int) -> Int {
        guard count > 8 else { return max(count, 1) }
        let step = 1 << (Int.bitWidth - (count - 1).leadingZeroBitCount - 4)
        return (count + step - 1) / step * step
    }

    /// Storage for at least `count` floats (exactly `sizeClass(count)`), recycled when one is free.
    func take(_ count: Int) -> UnsafeMutablePointer<Float>? {
        guard count >= minimumCount else { return nil }
        let size = Self.sizeClass(count)
        lock.lock()
        var p: UnsafeMutablePointer<Float>?
        if let i = free.lastIndex(where: { $0.size == size }) {
            p = free.remove(at: i).pointer
            pooledBytes -= size * 4
        }
        lock.unlock()
        return p ?? .allocate(capacity: size)
    }

    /// Keeps storage taken for `count` floats for reuse, freeing the oldest kept buffers if needed to stay within
    /// `limitBytes`; false when it does not fit at all (the caller frees it).
    func give(_ p: UnsafeMutablePointer<Float>, count: Int) -> Bool {
        guard count >= minimumCount else { return false }
        let size = Self.sizeClass(count)
        guard size * 4 <= limitBytes else { return false }
        lock.lock()
        var evicted: [UnsafeMutablePointer<Float>] = []
        var drop = 0
        while pooledBytes + size * 4 > limitBytes {
            pooledBytes -= free[drop].size * 4
            evicted.append(free[drop].pointer)
            drop += 1
        }
        free.removeFirst(drop)
        free.append((size, p))
        pooledBytes += size * 4
        lock.unlock()
        for e in evicted { e.deallocate() }
        return true
    }
}
