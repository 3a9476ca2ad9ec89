import Foundation

// Shape key: N rows (packed positions of all sequences), D model width, R logit rows, V vocabulary.

extension LlamaModel {
    /// Whether `forward` may split this batch across the cores (see `forwardDataParallel`).
    func canSplit(_ batch: [[Int]], hooks: Hooks?, logitRows: LogitRows, cache: KVCache?, tape: ForwardTape?) -> Bool {
        guard hooks == nil, cache == nil, tape == nil, batch.count >= 2, Kernels.cores > 1,
              !Kernels.isSerialHere else { return false }
        switch logitRows {
        case .rows: return false
        case .none, .last, .all: break
        }
        // Below a few dozen rows per core the split costs more than it saves.
        return batch.reduce(0) { $0 + $1.count } >= 32 * Kernels.cores
    }

    /// `forward` of a batch split into one contiguous slice of sequences per core, each run single-threaded
    /// (`Kernels.dataParallel`) through the blocks; the residuals are joined in order and the output head then
    /// runs once over all logit rows (its 113 MB weight read once, by all cores). Every row's arithmetic is the
    /// same as in one packed batch.
    func forwardDataParallel(_ batch: [[Int]], logitRows: LogitRows, upTo: Int?) -> Output {
        let parts = min(Kernels.cores, batch.count)
        // Contiguous slices with about equal token counts.
        let total = batch.reduce(0) { $0 + $1.count }
        var bounds = [0], acc = 0
        for (i, seq) in batch.enumerated() {
            acc += seq.count
            if bounds.count < parts, acc * parts >= total * bounds.count, i + 1 < batch.count { bounds.append(i + 1) }
        }
        bounds.append(batch.count)
        let slices = (0..<(bounds.count - 1)).map { Array(batch[bounds[$0]..<bounds[$0 + 1]]) }
        var outputs = [Output?](repeating: nil, count: slices.count)
        let lock = NSLock()
        Kernels.dataParallel(slices.count) { p in
            let out = forwardValidated(slices[p], hooks: nil, logitRows: logitRows, cache: nil, upTo: upTo, tape: nil,
                                       headless: true)
            lock.withLock { outputs[p] = out }
        }
        let d = config.dModel
        let layout = BatchLayout(lengths: batch.map(\.count))
        let residual = FloatBuffer(layout.rows * d)
        var rowOffset = 0
        for o in outputs.map({ $0! }) {
            (residual.pointer + rowOffset * d).update(from: o.residual.pointer, count: o.layout.rows * d)
            rowOffset += o.layout.rows
        }
        let rows = logitRows.indices(layout, ranAllLayers: min(upTo ?? config.layers, config.layers) == config.layers)
        let logits = rows.isEmpty ? FloatBuffer(0) : self.logits(residual, rows: rows)
        return Output(logits: logits, rows: rows, layout: layout, residual: residual)
    }
}
