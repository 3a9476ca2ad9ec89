import CKernels
import Foundation
import Linalg

// Elementwise and row-wise kernels of the Llama block, each forward followed by its backward (llm.c style:
// `dinp` first, then `dout`, then the saved values). Shapes: N rows, D width, H heads, HD head width.

/// An uninitialized float array of `count` elements (every caller overwrites all of it).
@inline(__always)
public func uninitializedFloats(_ count: Int) -> [Float] {
    [Float](unsafeUninitializedCapacity: count) { _, n in n = count }
}

public enum Kernels {
    /// Cores the element-wise kernels split rows over (`SCALPEL_ELEMENTWISE_THREADS` overrides).
    static let elementwiseThreads: Int = {
        if let s = ProcessInfo.processInfo.environment["SCALPEL_ELEMENTWISE_THREADS"], let n = Int(s), n > 0 { return n }
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    /// Splits rows 0..<n over the cores when the work is large enough to pay for the hand-off (serially inside
    /// `dataParallel`, where every core already has work of its own).
    @inline(__always)
    static func parallelRows(_ n: Int, work: Int, _ body: (Range<Int>) -> Void) {
        let parts = work >= 1 << 16 ? min(threadsHere, n) : 1
        if parts <= 1 { body(0..<n); return }
        DispatchQueue.concurrentPerform(iterations: parts) { p in
            body((n * p / parts)..<(n * (p + 1) / parts))
        }
    }

    /// Whether the AVX2/FMA versions of the element-wise kernels (CKernels) run: when the CPU has AVX2 and FMA, unless
    /// `SCALPEL_PORTABLE_KERNELS` is set. The portable Swift versions below are the fallback and the tests' reference.
    public static let usesAVX2: Bool =
        ck_has_avx2_fma() != 0 && ProcessInfo.processInfo.environment["SCALPEL_PORTABLE_KERNELS"] == nil

    /// Cores available for `dataParallel` work (same override as the element-wise kernels).
    public static var cores: Int { elementwiseThreads }

    /// Threads the element-wise kernels may use on the calling thread: 1 inside `dataParallel`.
    static var threadsHere: Int { isSerialHere ? 1 : elementwiseThreads }

    private static let serialKey: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    /// Whether the calling thread runs one part of a `dataParallel` section.
    public static var isSerialHere: Bool { pthread_getspecific(serialKey) != nil }

    /// Runs `body(part)` for parts 0..<parts at once, one per core, each part single-threaded: BLAS runs on one
    /// thread and the element-wise kernels serially. For independent pieces of work (sequences of a batch, groups
    /// of patched runs, shards of a corpus) this beats splitting every matrix product over the cores: no hand-offs
    /// between BLAS threads and Swift code, and the small element-wise steps run in parallel for free.
    /// Nested calls (already inside a part) run the parts one after another.
    public static func dataParallel(_ parts: Int, _ body: (Int) -> Void) {
        if parts <= 1 || isSerialHere || elementwiseThreads <= 1 {
            for p in 0..<parts { body(p) }
            return
        }
        let saved = BLAS.threads
        BLAS.setThreads(1)
        defer { BLAS.setThreads(saved) }
        DispatchQueue.concurrentPerform(iterations: parts) { p in
            pthread_setspecific(serialKey, UnsafeRawPointer(bitPattern: 1))
            defer { pthread_setspecific(serialKey, nil) }
            body(p)
        }
    }

    /// Runs `body(i)` for i in 0..<count, the cores taking the next index in turn, each single-threaded as in
    /// `dataParallel`: for pieces of uneven cost (list them costliest first).
    public static func takeInTurn(_ count: Int, _ body: (Int) -> Void) {
        let lock = NSLock()
        var next = 0
        dataParallel(max(1, min(cores, count))) { _ in
            while true {
                let i: Int? = lock.withLock {
                    guard next < count else { return nil }
                    next += 1
                    return next - 1
                }
                guard let i else { return }
                body(i)
            }
        }
    }

    /// out[N,D] = x / sqrt(mean(x²) + eps) ⊙ w; also returns rstd[N] when `rstd` is given.
    public static func rmsnormForward(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                                      rows: Int, width d: Int, eps: Float, rstd: UnsafeMutablePointer<Float>? = nil) {
        parallelRows(rows, work: rows * d) { range in
            if usesAVX2 {
                ck_rmsnorm_forward(out + range.lowerBound * d, x + range.lowerBound * d, w, range.count, d, eps,
                                   rstd.map { $0 + range.lowerBound })
            } else {
                rmsnormPortable(out: out, x: x, w: w, rows: range, width: d, eps: eps, rstd: rstd)
            }
        }
    }

    static func rmsnormPortable(out: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                                rows: Range<Int>, width d: Int, eps: Float, rstd: UnsafeMutablePointer<Float>?) {
        for r in rows {
            let xr = x + r * d, o = out + r * d
            var ss: Float = 0
            for i in 0..<d { ss += xr[i] * xr[i] }
            let s = 1 / (ss / Float(d) + eps).squareRoot()
            rstd?[r] = s
            for i in 0..<d { o[i] = xr[i] * s * w[i] }
        }
    }

    /// dinp[N,D] (+)= ∂L/∂x given dout[N,D], the input x and saved rstd; dw[D] += ∂L/∂w when given.
    public static func rmsnormBackward(dinp: UnsafeMutablePointer<Float>, dw: UnsafeMutablePointer<Float>?,
                                       dout: UnsafePointer<Float>, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                                       rstd: UnsafePointer<Float>, rows: Int, width d: Int, accumulate: Bool) {
        for r in 0..<rows {
            let xr = x + r * d, g = dout + r * d, di = dinp + r * d
            let s = rstd[r]
            // y_i = x_i s w_i, s = (mean x² + eps)^(-1/2); ∂s/∂x_j = -s³ x_j / D
            var dot: Float = 0
            for i in 0..<d { dot += g[i] * w[i] * xr[i] }
            let c = dot * s * s * s / Float(d)
            for i in 0..<d {
                let v = g[i] * w[i] * s - c * xr[i]
                di[i] = accumulate ? di[i] + v : v
            }
            if let dw { for i in 0..<d { dw[i] += g[i] * xr[i] * s } }
        }
    }

    /// Rotates pairs (2i, 2i+1) of each head by angle pos·θᵢ, θᵢ = base^(−2i/HD) (GGUF/llama.cpp "normal" RoPE).
    /// x is [rows, heads·HD]; `positions[r]` is the absolute position of row r. `inverse` rotates by −angle
    /// (the backward of the forward rotation).
    public static func rope(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim hd: Int,
                            positions: UnsafePointer<Int32>, table: RopeTable, inverse: Bool = false) {
        let half = hd / 2
        let sign: Float = inverse ? -1 : 1
        for r in 0..<rows {
            let p = Int(positions[r])
            table.withRow(p) { cosr, sinr in
                for h in 0..<heads {
                    let v = x + r * heads * hd + h * hd
                    for i in 0..<half {
                        let c = cosr[i], s = sign * sinr[i]
                        let a = v[2 * i], b = v[2 * i + 1]
                        v[2 * i] = a * c - b * s
                        v[2 * i + 1] = a * s + b * c
                    }
                }
            }
        }
    }

    /// out[N,F] = silu(gate) ⊙ up, where gateUp is [N, 2F] with gate in the first F columns.
    public static func swigluForward(out: UnsafeMutablePointer<Float>, gateUp: UnsafePointer<Float>, rows: Int, width f: Int) {
        parallelRows(rows, work: rows * f * 2) { range in
            if usesAVX2 {
                ck_swiglu_forward(out + range.lowerBound * f, gateUp + range.lowerBound * 2 * f, range.count, f)
            } else {
                swigluPortable(out: out, gateUp: gateUp, rows: range, width: f)
            }
        }
    }

    static func swigluPortable(out: UnsafeMutablePointer<Float>, gateUp: UnsafePointer<Float>, rows: Range<Int>, width f: Int) {
        for r in rows {
            let g = gateUp + r * 2 * f, u = g + f, o = out + r * f
            let gr = UnsafeRawPointer(g), ur = UnsafeRawPointer(u), orow = UnsafeMutableRawPointer(o)
            var i = 0
            while i + 8 <= f {
                let x = gr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                let up = ur.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                orow.storeBytes(of: x / (1 + exp8(-x)) * up, toByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            while i < f { let x = g[i]; o[i] = x / (1 + expf(-x)) * u[i]; i += 1 }
        }
    }

    /// eˣ in 8 lanes: x = n·ln2 + r with |r| ≤ ln2/2 (n by round-to-nearest through the 1.5·2²³ trick, ln2 split in
    /// two parts for an exact reduction), eʳ by a degree-6 polynomial (the classic Cephes `expf` coefficients), and
    /// 2ⁿ built in the exponent bits. Inputs are clamped to [−87, 88]; relative error ≤ 1.2e-7 there (tested against
    /// `expf`). Plain SSE2 arithmetic, so it vectorizes on any x86-64.
    @inline(__always)
    static func exp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let lo = SIMD8<Float>(repeating: -87), hi = SIMD8<Float>(repeating: 88)
        let x = x.replacing(with: lo, where: x .< lo).replacing(with: hi, where: x .> hi)
        let magic = SIMD8<Float>(repeating: 12_582_912)  // 1.5·2²³: adding it rounds to an integer
        let m = x * 1.442_695_04 + magic
        let n = m - magic
        let r = x - n * 0.693_359_375 + n * 2.121_944_40e-4
        var p = SIMD8<Float>(repeating: 1.987_569_150_0e-4)
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        p = p * (r * r) + r + 1
        // m's low mantissa bits hold n (offset by the magic number's bits); n + 127 shifted into the exponent is 2ⁿ.
        let e = (unsafeBitCast(m, to: SIMD8<UInt32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        return p * unsafeBitCast(e, to: SIMD8<Float>.self)
    }

    /// Σ a[i]·b[i] over n values, in 8-lane partial sums (a fixed order, so the result is reproducible).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count n: Int) -> Float {
        let ar = UnsafeRawPointer(a), br = UnsafeRawPointer(b)
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
        var i = 0
        while i + 16 <= n {
            acc0 += ar.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                * br.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            acc1 += ar.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
                * br.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
            i += 16
        }
        var s = (acc0 + acc1).sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// dGateUp[N,2F] = ∂L/∂[gate|up] given dout[N,F] and the saved gateUp.
    public static func swigluBackward(dGateUp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                                      gateUp: UnsafePointer<Float>, rows: Int, width f: Int) {
        for r in 0..<rows {
            let g = gateUp + r * 2 * f, u = g + f, d = dout + r * f
            let dg = dGateUp + r * 2 * f, du = dg + f
            var i = 0
            while i + 8 <= f {
                // Same formulas 8 lanes at a time.
                func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
                    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
                }
                let x = load(g), up = load(u), dv = load(d)
                let sig = 1 / (1 + exp8(-x))
                let duv = dv * (x * sig), dgv = dv * up * sig * (1 + x * (1 - sig))
                UnsafeMutableRawPointer(du + i).storeBytes(of: duv, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(dg + i).storeBytes(of: dgv, as: SIMD8<Float>.self)
                i += 8
            }
            while i < f {
                let x = g[i]
                let sig = 1 / (1 + expf(-x))
                let silu = x * sig
                du[i] = d[i] * silu
                dg[i] = d[i] * u[i] * sig * (1 + x * (1 - sig))
                i += 1
            }
        }
    }

    /// Causal attention of one head for a short sequence: scores[rows, keys] = softmax(q kᵀ · scale) (row i sees keys
    /// ≤ firstPosition + i) and z[rows, HD] = scores · v. q and z rows are `qStride` apart, k and v rows `kvStride`.
    public static func attentionSmall(scores s: UnsafeMutablePointer<Float>, z: UnsafeMutablePointer<Float>,
                                      q: UnsafePointer<Float>, qStride: Int, k: UnsafePointer<Float>,
                                      v: UnsafePointer<Float>, kvStride: Int, rows t: Int, keys tAll: Int,
                                      firstPosition p0: Int, headDim hd: Int, scale: Float) {
        if usesAVX2 {
            ck_attention_small(s, z, q, qStride, k, v, kvStride, t, tAll, p0, hd, scale)
        } else {
            attentionSmallPortable(scores: s, z: z, q: q, qStride: qStride, k: k, v: v, kvStride: kvStride, rows: t,
                                   keys: tAll, firstPosition: p0, headDim: hd, scale: scale)
        }
    }

    static func attentionSmallPortable(scores s: UnsafeMutablePointer<Float>, z: UnsafeMutablePointer<Float>,
                                       q: UnsafePointer<Float>, qStride: Int, k: UnsafePointer<Float>,
                                       v: UnsafePointer<Float>, kvStride: Int, rows t: Int, keys tAll: Int,
                                       firstPosition p0: Int, headDim hd: Int, scale: Float) {
        for i in 0..<t {
            let qi = q + i * qStride, si = s + i * tAll, valid = p0 + i + 1
            for j in 0..<valid {
                si[j] = dot(qi, k + j * kvStride, count: hd) * scale
            }
            softmaxRowPortable(si, count: tAll, valid: valid)
            let zi = z + i * qStride
            for e in 0..<hd { zi[e] = 0 }
            for j in 0..<valid {
                let p = si[j], vj = v + j * kvStride
                for e in 0..<hd { zi[e] += p * vj[e] }
            }
        }
    }

    /// In-place softmax of row r over its first `valid` entries; entries past `valid` are set to 0.
    public static func softmaxRow(_ row: UnsafeMutablePointer<Float>, count: Int, valid: Int) {
        if usesAVX2 { ck_softmax_row(row, count, valid); return }
        softmaxRowPortable(row, count: count, valid: valid)
    }

    static func softmaxRowPortable(_ row: UnsafeMutablePointer<Float>, count: Int, valid: Int) {
        var m = -Float.infinity
        for j in 0..<valid where row[j] > m { m = row[j] }
        // Exponentials 8 lanes at a time (`exp8`), partial sums per lane.
        let raw = UnsafeMutableRawPointer(row), mv = SIMD8<Float>(repeating: m)
        var acc = SIMD8<Float>(repeating: 0), j = 0
        while j + 8 <= valid {
            let e = exp8(raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self) - mv)
            raw.storeBytes(of: e, toByteOffset: j * 4, as: SIMD8<Float>.self)
            acc += e; j += 8
        }
        var s = acc.sum()
        while j < valid { let e = expf(row[j] - m); row[j] = e; s += e; j += 1 }
        let inv = 1 / s
        for j in 0..<valid { row[j] *= inv }
        for j in valid..<count { row[j] = 0 }
    }

    /// log Σ exp over n values (8-lane `exp8`, partial sums in Float per lane, totals in Double).
    public static func logSumExp(_ x: UnsafePointer<Float>, count n: Int) -> Float {
        usesAVX2 ? ck_log_sum_exp(x, n) : logSumExpPortable(x, count: n)
    }

    static func logSumExpPortable(_ x: UnsafePointer<Float>, count n: Int) -> Float {
        let raw = UnsafeRawPointer(x)
        var m8 = SIMD8<Float>(repeating: -.infinity), j = 0
        while j + 8 <= n {
            let v = raw.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
            m8 = m8.replacing(with: v, where: v .> m8)
            j += 8
        }
        var m = m8.max()
        while j < n { m = max(m, x[j]); j += 1 }
        let mv = SIMD8<Float>(repeating: m)
        var s: Double = 0, i = 0
        while i + 8 <= n {
            // Blocks of at most 512 values keep the Float partial sums exact to ~1e-7.
            var acc = SIMD8<Float>()
            let end = min(n, i + 512)
            while i + 8 <= end {
                acc += exp8(raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - mv)
                i += 8
            }
            s += Double(acc.sum())
        }
        while i < n { s += Double(expf(x[i] - m)); i += 1 }
        return m + Float(log(s))
    }
}

/// Cached cos/sin of RoPE angles, grown on demand. Rows are positions, columns i < HD/2.
public final class RopeTable {
    public let headDim: Int
    public let base: Float
    private var cosv: [Float] = []
    private var sinv: [Float] = []
    private var positions = 0
    private let lock = NSLock()

    public init(headDim: Int, base: Float) { self.headDim = headDim; self.base = base }

    /// Makes sure positions 0..<n are tabulated.
    public func reserve(_ n: Int) {
        lock.lock(); defer { lock.unlock() }
        guard n > positions else { return }
        let half = headDim / 2
        let newCount = max(n, positions * 2, 64)
        cosv.reserveCapacity(newCount * half); sinv.reserveCapacity(newCount * half)
        for p in positions..<newCount {
            for i in 0..<half {
                let theta = Double(p) * pow(Double(base), -2 * Double(i) / Double(headDim))
                cosv.append(Float(cos(theta))); sinv.append(Float(sin(theta)))
            }
        }
        positions = newCount
    }

    func withRow(_ p: Int, _ body: (UnsafePointer<Float>, UnsafePointer<Float>) -> Void) {
        if p >= positions { reserve(p + 1) }
        let half = headDim / 2
        cosv.withUnsafeBufferPointer { c in sinv.withUnsafeBufferPointer { s in
            body(c.baseAddress! + p * half, s.baseAddress! + p * half)
        } }
    }
}
