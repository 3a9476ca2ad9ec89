import Foundation

/// A small, seedable pseudo-random generator (SplitMix64) so sampling and noise are reproducible.
public struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A uniform float in [0, 1).
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }
    /// A standard normal sample (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}

/// How to choose the next token.
public struct Sampler: Sendable {
    /// 0 means greedy (argmax).
    public var temperature: Float
    /// Keep only the k most likely tokens (0 = all).
    public var topK: Int
    public init(temperature: Float = 0, topK: Int = 0) { self.temperature = temperature; self.topK = topK }

    /// Picks a token from one row of logits.
    public func sample(_ logits: UnsafeBufferPointer<Float>, rng: inout SeededRandom) -> Int {
        if temperature <= 0 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return best
        }
        let order = topK > 0 && topK < logits.count ? Self.topIndices(logits, topK) : Array(0..<logits.count)
        let m = order.map { logits[$0] }.max() ?? 0
        let weights = order.map { Double(expf((logits[$0] - m) / temperature)) }
        let total = weights.reduce(0, +)
        var u = rng.uniform() * total
        for (i, w) in zip(order, weights) {
            u -= w
            if u <= 0 { return i }
        }
        return order.last ?? 0
    }

    /// Indices of the k largest logits, most likely first, ties by lower index (what a stable sort of all V would
    /// keep), from a min-heap of k entries instead of sorting the whole vocabulary.
    public static func topIndices(_ logits: UnsafeBufferPointer<Float>, _ k: Int) -> [Int] {
        // `worse(a, b)`: a ranks below b (smaller logit, or equal logit and higher index).
        func worse(_ a: Int, _ b: Int) -> Bool { logits[a] < logits[b] || (logits[a] == logits[b] && a > b) }
        var heap: [Int] = []
        heap.reserveCapacity(k)
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && worse(heap[l], heap[m]) { m = l }
                if r < heap.count && worse(heap[r], heap[m]) { m = r }
                if m == i { return }
                heap.swapAt(i, m); i = m
            }
        }
        for id in 0..<logits.count {
            if heap.count < k {
                heap.append(id)
                var i = heap.count - 1
                while i > 0 && worse(heap[i], heap[(i - 1) / 2]) { heap.swapAt(i, (i - 1) / 2); i = (i - 1) / 2 }
            } else if worse(heap[0], id) {
                heap[0] = id; siftDown(0)
            }
        }
        return heap.sorted { worse($1, $0) }
    }
}

extension LlamaModel {
    /// Generates up to `maxTokens` tokens after `prompt` with a KV cache, stopping at any of `stop`.
    /// - Parameter onToken: called with each new token id as it is produced.
    public func generate(_ prompt: [Int], maxTokens: Int, sampler: Sampler = Sampler(), seed: UInt64 = 0,
                         stop: Set<Int> = [], onToken: ((Int) -> Void)? = nil) throws -> [Int] {
        try validate([prompt])
        let cache = KVCache(config: config, sequences: 1)
        var rng = SeededRandom(seed: seed)
        var out: [Int] = []
        var next = try forward([prompt], cache: cache)
        for _ in 0..<maxTokens {
            let id = next.logits.buffer.withMemoryRebound(to: Float.self) {
                sampler.sample(UnsafeBufferPointer($0), rng: &rng)
            }
            out.append(id)
            onToken?(id)
            if stop.contains(id) || prompt.count + out.count >= config.contextLength { break }
            next = try forward([[id]], cache: cache)
        }
        return out
    }
}

/// Numerically stable softmax statistics of one logit row.
public enum LogitMath {
    /// log Σ exp(logits).
    public static func logSumExp(_ logits: [Float]) -> Float {
        logits.withUnsafeBufferPointer { Kernels.logSumExp($0.baseAddress!, count: $0.count) }
    }
    /// Indices of the k largest logits, largest first.
    public static func topK(_ logits: [Float], _ k: Int) -> [Int] {
        var heap: [(Float, Int)] = []
        for (i, v) in logits.enumerated() {
            if heap.count < k { heap.append((v, i)); if heap.count == k { heap.sort { $0.0 < $1.0 } } }
            else if v > heap[0].0 {
                heap[0] = (v, i)
                var j = 0
                while j + 1 < heap.count && heap[j].0 > heap[j + 1].0 { heap.swapAt(j, j + 1); j += 1 }
            }
        }
        return heap.sorted { $0.0 > $1.0 }.map(\.1)
    }
}

extension LlamaModel {
    /// Generates continuations of several prompts together (one batched forward per step, KV cache per
    /// sequence). Each sequence stops at `stop` tokens or after `maxTokens`.
    public func generateBatch(_ prompts: [[Int]], maxTokens: Int, sampler: Sampler = Sampler(), seed: UInt64 = 0,
                              stop: Set<Int> = []) throws -> [[Int]] {
        try validate(prompts)
        let cache = KVCache(config: config, sequences: prompts.count)
        var rng = SeededRandom(seed: seed)
        var out = [[Int]](repeating: [], count: prompts.count)
        var active = Array(0..<prompts.count)
        // First step: whole prompts. Later steps: one token for each still-active sequence.
        var step = try forward(prompts, cache: cache)
        var stepSeqs = active
        for _ in 0..<maxTokens {
            var next: [Int: Int] = [:]
            for (i, s) in stepSeqs.enumerated() {
                let row = UnsafeBufferPointer(start: step.logits.pointer + i * config.vocabSize, count: config.vocabSize)
                next[s] = sampler.sample(row, rng: &rng)
            }
            for s in stepSeqs { out[s].append(next[s]!) }
            active = stepSeqs.filter { !stop.contains(next[$0]!) && prompts[$0].count + out[$0].count < config.contextLength }
            if active.isEmpty { break }
            // Sequences that stopped keep their cache; the batch holds only active ones, each reading its own cache.
            let sub = KVCache(config: config, sequences: 0)
            sub.setStorage(keys: cache.keys.map { layer in active.map { layer[$0] } },
                           values: cache.values.map { layer in active.map { layer[$0] } })
            step = try forward(active.map { [next[$0]!] }, cache: sub)
            for l in 0..<config.layers { for (j, s) in active.enumerated() {
                cache.keys[l][s] = sub.keys[l][j]; cache.values[l][s] = sub.values[l][j]
            } }
            stepSeqs = active
        }
        return out
    }
}
