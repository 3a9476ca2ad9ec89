import Llama

// Shape key: N rows of a packed batch, S sequences, T positions, D model width, L layers, V vocabulary.

/// Activations recorded from one forward pass over a batch, by hook point, plus the per-layer keys/values
/// (so a patched run can reuse every position before its first patch).
public final class RunCache {
    public let layout: BatchLayout
    public let tokens: [[Int]]
    /// Values at each recorded point: [N, width of the kind].
    public private(set) var activations: [HookPoint: [Float]] = [:]
    /// Keys/values of every layer for every sequence (after RoPE).
    public let kv: KVCache
    /// Logits at the last position of each sequence: [S, V].
    public let lastLogits: [[Float]]

    /// Runs `model` on `tokens` (with `interventions`, e.g. embedding noise, applied first) and records `points`.
    public init(model: LlamaModel, tokens: [[Int]], record points: Set<HookPoint>, interventions: Hooks = Hooks()) throws {
        self.tokens = tokens
        kv = KVCache(config: model.config, sequences: tokens.count)
        var hooks = interventions
        var store: [HookPoint: [Float]] = [:]
        for p in points { hooks.add(p) { a in store[p] = Array(a.buffer) } }
        let out = try model.forward(tokens, hooks: hooks, logitRows: .last, cache: kv)
        layout = out.layout
        activations = store
        lastLogits = (0..<tokens.count).map { out.row($0) }
        let c = model.config
        // The last block's output, under the name of a virtual block L's input.
        if points.contains(HookPoint(c.layers, .residPre)) { activations[HookPoint(c.layers, .residPre)] = out.residual.array }
    }

    /// The activation at `point`, or nil when it was not recorded.
    public subscript(point: HookPoint) -> [Float]? { activations[point] }

    /// Row of sequence `seq` at absolute position `pos` of a recorded activation.
    public func row(_ point: HookPoint, seq: Int, pos: Int, width: Int) -> ArraySlice<Float> {
        let r = layout.row(seq: seq, pos: pos)
        return activations[point]![(r * width)..<((r + 1) * width)]
    }
}
