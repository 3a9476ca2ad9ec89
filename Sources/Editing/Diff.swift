import Foundation
import Linalg
import Llama

// Checkpoint forensics: what changed between two checkpoints of one architecture, and how (max |Δ|, relative norm,
// numerical rank of Δ = B − A with its leading singular values and, for low rank, its singular vectors).
// Shape key: M rows, N columns of a parameter (row-major, as `LlamaParameter.shape`); r = min(M, N).

/// How `CheckpointDiff` decides which singular values of Δ = B − A are real.
///
/// A singular value counts when it exceeds max(`absolute` · max(‖A‖_F, ‖B‖_F), `relative` · σ₁). The absolute floor
/// sits well above float32 rounding: storing W + ΔW in float32 adds noise of at most half an ulp per element,
/// i.e. ≈ 2⁻²⁴·rms(W) per element, whose spectral norm is ≈ 2⁻²⁴·rms(W)·(√M + √N) ≈ 4·10⁻⁹ ‖W‖_F for a 576 × 1536
/// matrix — 250 times below the default floor. A rank-one ROME update leaves σ₂ at that rounding level, so it is
/// reported as rank 1 whatever the size of the edit.
public struct DiffTolerance: Codable, Equatable, Sendable {
    /// Singular values ≤ `relative` · σ₁ are noise.
    public var relative: Double
    /// Singular values ≤ `absolute` · max(‖A‖_F, ‖B‖_F) are noise (float32 rounding of the stored weights).
    public var absolute: Double
    /// Leading singular values reported per changed matrix.
    public var singularValuesKept: Int
    /// Singular vectors are kept (and subject forensics run) for Δ of rank 1 … this.
    public var vectorRankLimit: Int
    /// Matrices with more elements go through the Gram matrix of their smaller side (e.g. the [V, D] embedding:
    /// ΔᵀΔ is only [D, D]) instead of a direct SVD.
    public var directSVDLimit: Int

    public init(relative: Double = 1e-3, absolute: Double = 1e-6, singularValuesKept: Int = 8, vectorRankLimit: Int = 8,
                directSVDLimit: Int = 1 << 22) {
        self.relative = relative; self.absolute = absolute; self.singularValuesKept = singularValuesKept
        self.vectorRankLimit = vectorRankLimit; self.directSVDLimit = directSVDLimit
    }
}

/// The spectrum of one matrix's Δ = B − A.
public struct DeltaSpectrum: Sendable, Equatable {
    /// How the singular values were computed.
    public enum Method: String, Sendable, Codable { case svd, gram }
    /// Number of singular values above `threshold`.
    public var rank: Int
    /// The cut: max(absolute floor, relative · σ₁).
    public var threshold: Double
    /// The largest singular values, descending (at most `DiffTolerance.singularValuesKept`).
    public var singularValues: [Double]
    /// min(M, N): the rank of a full-rank Δ.
    public var fullRank: Int
    /// Σ_{i<rank} σᵢ² / ‖Δ‖_F²: the part of Δ's energy the counted directions hold.
    public var energyInRank: Double
    /// For 1 ≤ rank ≤ `vectorRankLimit`: the `rank` leading left singular vectors (each [M], in output space) …
    public var left: [[Double]]
    /// … and right singular vectors (each [N], in input space; for W_down, directions in key space).
    /// Δ ≈ Σᵢ σᵢ · leftᵢ ⊗ rightᵢ. Signs are LAPACK's (a pair may flip together).
    public var right: [[Double]]
    public var method: Method

    /// Whether the singular vectors are available (a low-rank change).
    public var hasVectors: Bool { !right.isEmpty }

    /// ‖Δ k‖ for an input `k` [N], from the kept factors (the low-rank part of Δ, rounding noise dropped).
    public func applyNorm(_ k: UnsafePointer<Float>) -> Double {
        var total = 0.0
        for (s, v) in zip(singularValues, right) {
            var dot = 0.0
            for j in 0..<v.count { dot += v[j] * Double(k[j]) }
            total += (s * dot) * (s * dot)
        }
        return total.squareRoot()
    }

    /// ‖Vᵀ k‖ for an input `k` [N]: the length of k's projection on the right singular vectors.
    public func projectionNorm(_ k: UnsafePointer<Float>) -> Double {
        var total = 0.0
        for v in right {
            var dot = 0.0
            for j in 0..<v.count { dot += v[j] * Double(k[j]) }
            total += dot * dot
        }
        return total.squareRoot()
    }
}

/// How one parameter differs between A and B.
public struct ParameterDiff: Sendable {
    /// What kind of difference this is.
    public enum Kind: String, Sendable {
        /// Bitwise equal.
        case identical
        /// A 1-D parameter (a norm weight) that changed.
        case vector
        /// A matrix that changed only below the noise floor (e.g. −0 vs +0, or float32 rounding).
        case negligible
        /// A matrix whose Δ has rank 1 … `vectorRankLimit` (singular vectors kept).
        case lowRank = "low-rank"
        /// A matrix whose Δ has a larger rank (fine-tuning, requantization, noise).
        case highRank = "high-rank"
        /// A matrix whose Δ holds NaN or infinity (no spectrum).
        case nonFinite = "non-finite"
    }

    public var parameter: LlamaParameter
    public var name: String { parameter.ggufName }
    /// The layer of a per-block parameter; nil for the embedding, the output norm and head.
    public var layer: Int? { parameter.blockIndex }
    /// Row-major shape ([n] for vectors).
    public var shape: [Int]
    public var identical: Bool
    /// Elements whose values differ.
    public var changedElements: Int
    /// max |Bᵢ − Aᵢ|.
    public var maxAbsDelta: Double
    /// ‖A‖_F, ‖B‖_F, ‖B − A‖_F.
    public var normA: Double
    public var normB: Double
    public var normDelta: Double
    /// Set for matrices that differ.
    public var spectrum: DeltaSpectrum?
    /// Tolerance's vector rank limit, to classify.
    var vectorRankLimit: Int

    /// ‖B − A‖_F / ‖A‖_F (∞ when A is zero and B is not).
    public var relativeNorm: Double {
        normDelta == 0 ? 0 : (normA > 0 ? normDelta / normA : .infinity)
    }

    public var kind: Kind {
        if identical { return .identical }
        if shape.count < 2 { return .vector }
        guard let s = spectrum else { return .nonFinite }
        if s.rank == 0 { return .negligible }
        return s.rank <= vectorRankLimit ? .lowRank : .highRank
    }
}

/// Everything `CheckpointDiff.compare` found.
public struct DiffReport: Sendable {
    public var pathA: String
    public var pathB: String
    public var config: LlamaConfig
    public var tolerance: DiffTolerance
    /// Every parameter, in checkpoint order.
    public var parameters: [ParameterDiff]
    /// Remarks that are not errors (tokenizers differ, context lengths differ, …).
    public var notes: [String]
    public var seconds: Double

    /// Parameters that are not bitwise identical.
    public var changed: [ParameterDiff] { parameters.filter { !$0.identical } }
    /// Matrices whose Δ has rank 1 … `vectorRankLimit`.
    public var lowRank: [ParameterDiff] { parameters.filter { $0.kind == .lowRank } }
    /// Whether A and B hold the same weights bit for bit.
    public var isIdentical: Bool { parameters.allSatisfy(\.identical) }
}

/// Compares two checkpoints of the same architecture, parameter by parameter.
public enum CheckpointDiff {
    /// Compares two opened models. Refuses checkpoints whose configurations differ (`EditingError.architectureMismatch`);
    /// a different context length or tokenizer is only noted.
    /// - Parameter progress: (parameters done, total).
    public static func compare(_ a: ModelFile, _ b: ModelFile, tolerance: DiffTolerance = DiffTolerance(),
                               progress: ((Int, Int) -> Void)? = nil) throws -> DiffReport {
        var notes: [String] = []
        if a.tokenizer.vocabulary != b.tokenizer.vocabulary || a.tokenizer.mergeList != b.tokenizer.mergeList {
            notes.append("the tokenizers differ; subjects are tokenized with A's")
        }
        var report = try compare(a.model.weights, b.model.weights, tolerance: tolerance, progress: progress)
        report.pathA = a.path; report.pathB = b.path
        report.notes = notes + report.notes
        return report
    }

    /// Compares two sets of weights (see `compare(_:_:tolerance:progress:)` for models).
    public static func compare(_ a: LlamaWeights, _ b: LlamaWeights, tolerance: DiffTolerance = DiffTolerance(),
                               progress: ((Int, Int) -> Void)? = nil) throws -> DiffReport {
        let t0 = Date()
        var notes: [String] = []
        let differences = configDifferences(a.config, b.config)
        guard differences.isEmpty else { throw EditingError.architectureMismatch(differences: differences) }
        if a.config.contextLength != b.config.contextLength {
            notes.append("context lengths differ: \(a.config.contextLength) in A, \(b.config.contextLength) in B")
        }
        guard tolerance.relative >= 0, tolerance.absolute >= 0 else {
            throw EditingError.invalidArgument(name: "tolerance", reason: "thresholds must be ≥ 0")
        }
        let c = a.config
        let params = LlamaParameter.all(c)
        var out: [ParameterDiff] = []
        for (i, p) in params.enumerated() {
            let shape = p.shape(c)
            let d: ParameterDiff
            if a === b {
                // One object: nested access to the same storage would overlap; it is identical by definition.
                let norm = a.withParameter(p) { Self.norm(UnsafeBufferPointer($0)) }
                d = ParameterDiff(parameter: p, shape: shape, identical: true, changedElements: 0, maxAbsDelta: 0,
                                  normA: norm, normB: norm, normDelta: 0, spectrum: nil,
                                  vectorRankLimit: tolerance.vectorRankLimit)
            } else {
                d = try a.withParameter(p) { pa in
                    try b.withParameter(p) { pb in
                        try compareTensor(p, UnsafeBufferPointer(pa), UnsafeBufferPointer(pb), shape: shape,
                                          tolerance: tolerance)
                    }
                }
            }
            out.append(d)
            progress?(i + 1, params.count)
        }
        return DiffReport(pathA: "", pathB: "", config: c, tolerance: tolerance, parameters: out, notes: notes,
                          seconds: Date().timeIntervalSince(t0))
    }

    /// Human-readable differences of two configurations that make their checkpoints incomparable (every field
    /// but the context length, which changes no weight).
    public static func configDifferences(_ a: LlamaConfig, _ b: LlamaConfig) -> [String] {
        var out: [String] = []
        func check<T: Equatable>(_ name: String, _ x: T, _ y: T) { if x != y { out.append("\(name): \(x) in A, \(y) in B") } }
        check("layers", a.layers, b.layers)
        check("d_model", a.dModel, b.dModel)
        check("heads", a.heads, b.heads)
        check("kv_heads", a.kvHeads, b.kvHeads)
        check("head_dim", a.headDim, b.headDim)
        check("ffn_dim", a.ffnDim, b.ffnDim)
        check("vocab_size", a.vocabSize, b.vocabSize)
        check("tied_embeddings", a.tiedEmbeddings, b.tiedEmbeddings)
        check("rope_base", a.ropeBase, b.ropeBase)
        check("rms_eps", a.rmsEps, b.rmsEps)
        return out
    }

    /// Compares one tensor: bitwise first, then the norms, then (matrices that differ) the spectrum of Δ.
    static func compareTensor(_ p: LlamaParameter, _ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>,
                              shape: [Int], tolerance t: DiffTolerance) throws -> ParameterDiff {
        precondition(a.count == b.count, "\(p): \(a.count) vs \(b.count) values")
        let n = a.count
        let same = n == 0 || memcmp(a.baseAddress!, b.baseAddress!, n * MemoryLayout<Float>.stride) == 0
        if same {
            let norm = Self.norm(a)
            return ParameterDiff(parameter: p, shape: shape, identical: true, changedElements: 0, maxAbsDelta: 0,
                                 normA: norm, normB: norm, normDelta: 0, spectrum: nil, vectorRankLimit: t.vectorRankLimit)
        }
        var changed = 0, maxAbs = 0.0, sa = 0.0, sb = 0.0, sd = 0.0
        for i in 0..<n {
            let x = Double(a[i]), y = Double(b[i]), d = y - x
            sa += x * x; sb += y * y; sd += d * d
            if a[i].bitPattern != b[i].bitPattern { changed += 1 }
            if abs(d) > maxAbs || d.isNaN { maxAbs = d.isNaN ? .nan : max(maxAbs, abs(d)) }
        }
        var diff = ParameterDiff(parameter: p, shape: shape, identical: false, changedElements: changed, maxAbsDelta: maxAbs,
                                 normA: sa.squareRoot(), normB: sb.squareRoot(), normDelta: sd.squareRoot(), spectrum: nil,
                                 vectorRankLimit: t.vectorRankLimit)
        if shape.count == 2, sd.isFinite {
            diff.spectrum = try spectrum(a, b, rows: shape[0], cols: shape[1], normDelta: diff.normDelta,
                                         floor: t.absolute * max(diff.normA, diff.normB), tolerance: t)
        }
        return diff
    }

    /// The spectrum of Δ = B − A for matrices [rows, cols].
    static func spectrum(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, rows m: Int, cols n: Int,
                         normDelta: Double, floor: Double, tolerance t: DiffTolerance) throws -> DeltaSpectrum {
        let r = min(m, n)
        func cut(_ s: [Double]) -> (threshold: Double, rank: Int) {
            let th = max(floor, t.relative * (s.first ?? 0))
            return (th, s.filter { $0 > th }.count)
        }
        func energy(_ s: [Double], _ rank: Int) -> Double {
            normDelta > 0 ? s.prefix(rank).reduce(0) { $0 + $1 * $1 } / (normDelta * normDelta) : 0
        }
        if m * n <= t.directSVDLimit {
            // Δ in double is exact (the difference of two floats fits in a double's mantissa).
            var delta = [Double](repeating: 0, count: m * n)
            for i in 0..<(m * n) { delta[i] = Double(b[i]) - Double(a[i]) }
            var s = try LAPACK.singularValues(delta, m: m, n: n)
            let (th, rank) = cut(s)
            var left: [[Double]] = [], right: [[Double]] = []
            if rank >= 1 && rank <= t.vectorRankLimit {
                let full = try LAPACK.svd(delta, m: m, n: n)
                s = full.s
                left = (0..<rank).map { j in (0..<m).map { full.u[$0 * r + j] } }
                right = (0..<rank).map { j in Array(full.vt[(j * n)..<((j + 1) * n)]) }
            }
            return DeltaSpectrum(rank: rank, threshold: th, singularValues: Array(s.prefix(max(t.singularValuesKept, rank))),
                                 fullRank: r, energyInRank: energy(s, rank), left: left, right: right, method: .svd)
        }
        // Gram route: G = ΔᵀΔ [n, n] when m ≥ n (else ΔΔᵀ [m, m]); σ(Δ) = √λ(G), and G's eigenvectors are Δ's right
        // (left) singular vectors. Δ is formed in double one block of rows at a time.
        let tall = m >= n
        let g = try gram(a, b, rows: m, cols: n, tall: tall)
        let lambda = try LAPACK.singularValues(g, m: r, n: r)  // G is symmetric PSD: singular values = eigenvalues
        var s = lambda.map { $0 > 0 ? $0.squareRoot() : 0 }
        let (th, rank) = cut(s)
        var left: [[Double]] = [], right: [[Double]] = []
        if rank >= 1 && rank <= t.vectorRankLimit {
            let e = try LAPACK.svd(g, m: r, n: r)
            s = e.s.map { $0 > 0 ? $0.squareRoot() : 0 }
            let small = (0..<rank).map { j in Array(e.vt[(j * r)..<((j + 1) * r)]) }
            // The other side: Δ v / σ (tall) or Δᵀ u / σ (wide).
            let other = multiply(a, b, rows: m, cols: n, vectors: small, transpose: !tall)
                .enumerated().map { j, x in x.map { $0 / s[j] } }
            if tall { right = small; left = other } else { left = small; right = other }
        }
        return DeltaSpectrum(rank: rank, threshold: th, singularValues: Array(s.prefix(max(t.singularValuesKept, rank))),
                             fullRank: r, energyInRank: energy(s, rank), left: left, right: right, method: .gram)
    }

    /// Rows of Δ handled at once on the Gram route.
    static let gramBlockRows = 2048

    /// ΔᵀΔ [n, n] (tall) or ΔΔᵀ [m, m], full symmetric, accumulated in double over blocks of rows.
    static func gram(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, rows m: Int, cols n: Int,
                     tall: Bool) throws -> [Double] {
        let size = tall ? n : m
        var g = [Double](repeating: 0, count: size * size)
        if tall {
            var block = [Double](repeating: 0, count: gramBlockRows * n)
            var r0 = 0
            while r0 < m {
                let rows = min(gramBlockRows, m - r0)
                for i in 0..<(rows * n) { block[i] = Double(b[r0 * n + i]) - Double(a[r0 * n + i]) }
                block.withUnsafeBufferPointer { bp in
                    g.withUnsafeMutableBufferPointer { gp in
                        BLAS.dsyrkUpperAtA(n: n, k: rows, a: bp.baseAddress!, lda: n, c: gp.baseAddress!, ldc: n)
                    }
                }
                r0 += rows
            }
            for i in 0..<n { for j in 0..<i { g[i * n + j] = g[j * n + i] } }
        } else {
            // Wide: G = ΔΔᵀ over blocks of columns, C += Δ[:, c0..<c1] · Δ[:, c0..<c1]ᵀ.
            let width = max(1, gramBlockRows)
            var block = [Double](repeating: 0, count: m * width)
            var c0 = 0
            while c0 < n {
                let cols = min(width, n - c0)
                for i in 0..<m { for j in 0..<cols { block[i * cols + j] = Double(b[i * n + c0 + j]) - Double(a[i * n + c0 + j]) } }
                block.withUnsafeBufferPointer { bp in
                    g.withUnsafeMutableBufferPointer { gp in
                        BLAS.dgemm(transB: true, m: m, n: m, k: cols, a: bp.baseAddress!, lda: cols, b: bp.baseAddress!,
                                   ldb: cols, beta: 1, c: gp.baseAddress!, ldc: m)
                    }
                }
                c0 += cols
            }
        }
        return g
    }

    /// Δ·x for each x [cols] (returns [rows] each), or Δᵀ·x for each x [rows] when `transpose`.
    static func multiply(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, rows m: Int, cols n: Int,
                         vectors: [[Double]], transpose: Bool) -> [[Double]] {
        var out = vectors.map { _ in [Double](repeating: 0, count: transpose ? n : m) }
        for i in 0..<m {
            for (k, x) in vectors.enumerated() {
                if transpose {
                    let xi = x[i]
                    for j in 0..<n { out[k][j] += (Double(b[i * n + j]) - Double(a[i * n + j])) * xi }
                } else {
                    var dot = 0.0
                    for j in 0..<n { dot += (Double(b[i * n + j]) - Double(a[i * n + j])) * x[j] }
                    out[k][i] = dot
                }
            }
        }
        return out
    }

    static func norm(_ x: UnsafeBufferPointer<Float>) -> Double {
        var s = 0.0
        for v in x { s += Double(v) * Double(v) }
        return s.squareRoot()
    }
}

extension LlamaParameter {
    /// The block index of a per-layer parameter; nil for the embedding, output norm and output head.
    var blockIndex: Int? {
        switch self {
        case .tokenEmbedding, .outputNorm, .output: return nil
        case let .attnNorm(l), let .wq(l), let .wk(l), let .wv(l), let .wo(l), let .ffnNorm(l), let .wGate(l), let .wUp(l),
             let .wDown(l):
            return l
        }
    }
}
