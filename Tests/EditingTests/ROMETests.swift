import Foundation
import XCTest
import HDF5Store
import Hashing
import Linalg
import Llama
@testable import Editing

/// ROME on synthetic cases: the closed-form update against an independent constrained least-squares solve, the
/// original ROME's key mismatch, k*/v* wiring, subject location, and bad requests (clear error, store untouched).
final class ROMETests: XCTestCase {
    typealias F = EditLogFixtures

    // MARK: Helpers (float64, plain loops)

    static func matVec(_ a: [Double], rows: Int, cols: Int, _ x: [Double]) -> [Double] {
        (0..<rows).map { i in (0..<cols).reduce(0.0) { $0 + a[i * cols + $1] * x[$1] } }
    }
    static func norm(_ x: [Double]) -> Double { x.reduce(0) { $0 + $1 * $1 }.squareRoot() }
    static func relativeError(_ x: [Double], _ y: [Double]) -> Double { norm(zip(x, y).map { $0 - $1 }) / norm(y) }
    static func doubles(_ x: [Float]) -> [Double] { x.map(Double.init) }

    /// C = K₀K₀ᵀ / n for n random keys of width f ([f, f] row-major), and K₀ [f, n].
    static func secondMoment(f: Int, n: Int, rng: inout SeededRandom) -> (c: [Double], keys: [Double]) {
        // Keys with unequal scales per coordinate, so C is far from a multiple of the identity.
        let scale = (0..<f).map { 0.3 + 2 * Double($0 % 5) / 4 }
        let k = (0..<(f * n)).map { scale[$0 / n] * rng.normal() }
        var c = [Double](repeating: 0, count: f * f)
        for i in 0..<f { for j in 0..<f { for t in 0..<n { c[i * f + j] += k[i * n + t] * k[j * n + t] / Double(n) } } }
        return (c, k)
    }

    /// argmin ‖(Ŵ − W) K₀‖²_F subject to Ŵ k = v, from its KKT system [[C, −k], [kᵀ, 0]] [δᵢ; μᵢ] = [0; rᵢ] (one row
    /// δᵢ of Ŵ − W per right-hand side, r = v − W k), solved by QR (LAPACK dgels): no Cholesky, no closed form.
    static func constrainedLeastSquares(w: [Double], d: Int, f: Int, c: [Double], key k: [Double], value v: [Double]) throws -> [Double] {
        let n = f + 1
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<f {
            for j in 0..<f { a[i * n + j] = c[i * f + j] }
            a[i * n + f] = -k[i]
            a[f * n + i] = k[i]
        }
        let wk = matVec(w, rows: d, cols: f, k)
        var b = [Double](repeating: 0, count: n * d)
        for i in 0..<d { b[f * d + i] = v[i] - wk[i] }
        let x = try LAPACK.leastSquares(a, b, m: n, n: n, nrhs: d)
        var updated = w
        for i in 0..<d { for j in 0..<f { updated[i * f + j] += x[j * d + i] } }
        return updated
    }

    /// ‖(Ŵ − W) K₀‖²_F: what the update minimizes.
    static func disturbance(_ updated: [Double], _ w: [Double], d: Int, f: Int, keys: [Double], n: Int) -> Double {
        var total = 0.0
        for i in 0..<d {
            for t in 0..<n {
                let s = (0..<f).reduce(0.0) { $0 + (updated[i * f + $1] - w[i * f + $1]) * keys[$1 * n + t] }
                total += s * s
            }
        }
        return total
    }

    /// A tiny model's W_down(0) after `ROME.apply` with the given factors, in float64.
    static func applied(_ lambda: [Float], _ u: [Float], seed: UInt64) -> (before: [Double], after: [Double]) {
        let model = EditingTiny.make(seed: seed)
        let before = doubles(model.weights.values(.wDown(0)))
        ROME.apply(ROMEResult(layer: 0, key: [], value: [], lambda: lambda, u: u, losses: [], seconds: 0, deltaNorm: 0,
                              initialNorm: 0), to: model)
        return (before, doubles(model.weights.values(.wDown(0))))
    }

    // MARK: 1. The closed-form update

    /// r-ROME's update, applied with `ROME.apply` to a tiny model's W_down [16, 24], equals the constrained
    /// least-squares solution computed independently, makes W' k* = v*, is rank one, and disturbs the keys less than
    /// the plain minimum-norm update that ignores C.
    func testUpdateEqualsIndependentConstrainedLeastSquares() throws {
        let c = EditingTiny.config, d = c.dModel, f = c.ffnDim, n = 60
        for seed: UInt64 in [1, 2, 3] {
            var rng = SeededRandom(seed: seed)
            let (cov, keys) = Self.secondMoment(f: f, n: n, rng: &rng)
            let kStar = (0..<f).map { _ in Float(rng.normal()) }, vStar = (0..<d).map { _ in Float(rng.normal()) }
            let w = EditingTiny.make(seed: 7).weights.values(.wDown(0))
            let (lambda, u) = try ROME.rankOneFactors(weight: w, secondMoment: cov, key: kStar, value: vStar)
            let (before, after) = Self.applied(lambda, u, seed: 7)
            XCTAssertEqual(before, Self.doubles(w))

            let reference = try Self.constrainedLeastSquares(w: before, d: d, f: f, c: cov, key: Self.doubles(kStar),
                                                              value: Self.doubles(vStar))
            let delta = zip(after, before).map { $0 - $1 }, refDelta = zip(reference, before).map { $0 - $1 }
            XCTAssertLessThan(Self.relativeError(delta, refDelta), 1e-4, "seed \(seed): W' differs from the least-squares solution")
            let wk = Self.matVec(after, rows: d, cols: f, Self.doubles(kStar))
            XCTAssertLessThan(Self.relativeError(wk, Self.doubles(vStar)), 1e-4, "seed \(seed): W' k* ≠ v*")
            let s = try LAPACK.singularValues(delta, m: d, n: f)
            XCTAssertGreaterThan(s[0], 1e-3)
            XCTAssertLessThan(s[1] / s[0], 1e-5, "seed \(seed): W' − W is not rank one: \(s.prefix(3))")

            // The C weighting matters: the minimum-Frobenius-norm update r k*ᵀ / ‖k*‖² meets the constraint too but
            // disturbs the other keys more.
            let k = Self.doubles(kStar), kk = k.reduce(0) { $0 + $1 * $1 }
            let r = zip(Self.doubles(vStar), Self.matVec(before, rows: d, cols: f, k)).map { $0 - $1 }
            var naive = before
            for i in 0..<d { for j in 0..<f { naive[i * f + j] += r[i] * k[j] / kk } }
            let ours = Self.disturbance(after, before, d: d, f: f, keys: keys, n: n)
            let plain = Self.disturbance(naive, before, d: d, f: f, keys: keys, n: n)
            XCTAssertLessThan(ours, 0.9 * plain, "seed \(seed)")
        }
    }

    /// The original ROME (`--original-rome`, `consistentKey = false`): the direction is still C⁻¹k* (k* averaged over
    /// contexts), but the residual and the denominator use the bare prompt's key, so W' k(bare) = v* and W' k* ≠ v*.
    func testOriginalROMEUsesTheBareKeyInResidualAndDenominator() throws {
        let c = EditingTiny.config, d = c.dModel, f = c.ffnDim
        var rng = SeededRandom(seed: 11)
        let (cov, _) = Self.secondMoment(f: f, n: 60, rng: &rng)
        let kStar = (0..<f).map { _ in Float(rng.normal()) }, vStar = (0..<d).map { _ in Float(rng.normal()) }
        let kBare = kStar.map { $0 + Float(0.5 * rng.normal()) }
        let w = EditingTiny.make(seed: 7).weights.values(.wDown(0))
        let original = try ROME.rankOneFactors(weight: w, secondMoment: cov, key: kStar, value: vStar, bareKey: kBare)
        let (before, after) = Self.applied(original.lambda, original.u, seed: 7)
        let delta = zip(after, before).map { $0 - $1 }

        XCTAssertLessThan(Self.relativeError(Self.matVec(after, rows: d, cols: f, Self.doubles(kBare)), Self.doubles(vStar)), 1e-4)
        XCTAssertGreaterThan(Self.relativeError(Self.matVec(after, rows: d, cols: f, Self.doubles(kStar)), Self.doubles(vStar)), 1e-2)
        // Every row of ΔW is a multiple of (C⁻¹k*)ᵀ, i.e. every row of ΔW C is a multiple of k*ᵀ. With W' k(bare) = v*
        // this determines the update.
        let k = Self.doubles(kStar), kk = k.reduce(0) { $0 + $1 * $1 }
        var m = [Double](repeating: 0, count: d * f)
        for i in 0..<d { for j in 0..<f { m[i * f + j] = (0..<f).reduce(0.0) { $0 + delta[i * f + $1] * cov[$1 * f + j] } } }
        var off = [Double]()
        for i in 0..<d {
            let a = (0..<f).reduce(0.0) { $0 + m[i * f + $1] * k[$1] } / kk
            off += (0..<f).map { m[i * f + $0] - a * k[$0] }
        }
        XCTAssertLessThan(Self.norm(off) / Self.norm(m), 1e-4, "ΔW's rows are not along C⁻¹k*")

        // r-ROME on the same inputs: the same direction, another scale.
        let consistent = try ROME.rankOneFactors(weight: w, secondMoment: cov, key: kStar, value: vStar)
        XCTAssertEqual(consistent.u, original.u)
        XCTAssertGreaterThan(Self.relativeError(Self.doubles(original.lambda), Self.doubles(consistent.lambda)), 1e-2)
    }

    /// `ROME.compute` on a tiny model: k* is the mean over the contexts of the key at the subject's last token, v* − m₀
    /// is δ, and the applied update gives W' k* = v* (r-ROME) or W' k(bare) = v* (original ROME), with the keys and
    /// MLP outputs read by separate, unbatched forward passes.
    func testComputeAveragesKeysOverContextsAndHonoursTheVariant() throws {
        let c = EditingTiny.config, d = c.dModel, f = c.ffnDim
        let tok = try EditingTiny.tokenizer()
        let contexts = ContextTemplates(templates: ["{}", "Some text. {}", "I saw it, then. {}"])
        let request = EditRequest(subject: "the tower", prompt: "{} is in", targetNew: "rome", targetTrue: "paris")
        var rng = SeededRandom(seed: 5)
        let cov = Self.secondMoment(f: f, n: 80, rng: &rng).c
        var h = ROMEHyperParameters(layer: 0)
        h.steps = 4
        let rome = ROME(model: EditingTiny.make(seed: 7), tokenizer: tok, contexts: contexts)
        let consistent = try rome.compute(request, hparams: h, secondMoment: cov)
        h.consistentKey = false
        let original = try rome.compute(request, hparams: h, secondMoment: cov)

        // One character = one token: the subject's last token is at (characters up to the subject's end) − 1.
        func activation(_ kind: HookKind, context: String) throws -> [Double] {
            let text = context.replacingOccurrences(of: "{}", with: request.filledPrompt)
            let end = context.replacingOccurrences(of: "{}", with: "").count + request.subject.count
            XCTAssertEqual(tok.encode(text).count, text.count)
            var rows: [Float] = []
            var hooks = Hooks()
            hooks.add(HookPoint(0, kind)) { rows = Array($0.buffer) }
            _ = try rome.model.forward([tok.encode(text)], hooks: hooks, logitRows: .none)
            let w = rows.count / text.count
            return Self.doubles(Array(rows[((end - 1) * w)..<(end * w)]))
        }
        var mean = [Double](repeating: 0, count: f)
        for ctx in contexts.templates {
            for (j, x) in try activation(.mlpPost, context: ctx).enumerated() { mean[j] += x / Double(contexts.templates.count) }
        }
        XCTAssertLessThan(Self.relativeError(Self.doubles(consistent.key), mean), 1e-5)
        let m0 = try activation(.mlpOut, context: "{}"), kBare = try activation(.mlpPost, context: "{}")
        XCTAssertGreaterThan(Self.relativeError(kBare, mean), 1e-2, "the contexts should change the key")
        XCTAssertEqual(Double(consistent.initialNorm), Self.norm(m0), accuracy: 1e-4 * Self.norm(m0))
        XCTAssertEqual(Double(consistent.deltaNorm), Self.norm(zip(Self.doubles(consistent.value), m0).map { $0 - $1 }),
                       accuracy: 1e-4 * Self.norm(m0))
        XCTAssertGreaterThan(consistent.deltaNorm, 0)
        XCTAssertEqual(consistent.losses.count, h.steps)

        let a = Self.applied(consistent.lambda, consistent.u, seed: 7).after
        XCTAssertEqual(a.count, d * f)
        XCTAssertLessThan(Self.relativeError(Self.matVec(a, rows: d, cols: f, mean), Self.doubles(consistent.value)), 1e-4)
        let b = Self.applied(original.lambda, original.u, seed: 7).after
        XCTAssertLessThan(Self.relativeError(Self.matVec(b, rows: d, cols: f, kBare), Self.doubles(original.value)), 1e-4)
        XCTAssertGreaterThan(Self.relativeError(Self.matVec(b, rows: d, cols: f, mean), Self.doubles(original.value)), 1e-3)
    }

    // MARK: 3. Subject location

    /// The subject's last token at the start, middle and end of a prompt, with surrounding spaces, with and without
    /// a BOS token (one character = one token, so the expected index is counted on the text).
    /// The v* loss weights: the bare prompt gets its share, the context prompts split the rest; equal weights when
    /// the share is nil (the original ROME) or there are no contexts.
    func testPromptWeights() {
        var h = ROMEHyperParameters(layer: 0)
        XCTAssertEqual(h.barePromptShare, 0.5)
        let w = h.promptWeights(count: 21)
        XCTAssertEqual(w[0], 0.5)
        for x in w.dropFirst() { XCTAssertEqual(x, 0.025, accuracy: 1e-7) }
        XCTAssertEqual(w.reduce(0, +), 1, accuracy: 1e-6)
        XCTAssertEqual(h.promptWeights(count: 1), [1])
        h.barePromptShare = nil
        for x in h.promptWeights(count: 21) { XCTAssertEqual(x, 1 / 21, accuracy: 1e-7) }
    }

    /// Hyper-parameters round-trip through JSON; a log entry written before `barePromptShare` existed decodes as
    /// the equal weights it was computed with.
    func testHyperParametersJSON() throws {
        var h = ROMEHyperParameters(layer: 4)
        h.barePromptShare = 0.25
        let back = try JSONDecoder().decode(ROMEHyperParameters.self, from: JSONEncoder().encode(h))
        XCTAssertEqual(back, h)
        let old = #"{"layer":4,"steps":20,"learningRate":0.5,"klFactor":0.0625,"weightDecay":0.5,"clampNormFactor":4,"# +
            #""earlyStopLoss":0.05,"consistentKey":true,"klPrompt":"{} is a"}"#
        let decoded = try JSONDecoder().decode(ROMEHyperParameters.self, from: Data(old.utf8))
        XCTAssertNil(decoded.barePromptShare)
        XCTAssertEqual(decoded.layer, 4)
    }

    /// A share outside (0, 1] is refused before any work.
    func testBadBarePromptShareIsRefused() throws {
        let tok = try EditingTiny.tokenizer()
        let rome = ROME(model: EditingTiny.make(seed: 7), tokenizer: tok, contexts: .bare)
        var h = ROMEHyperParameters(layer: 0)
        h.barePromptShare = 0
        let request = EditRequest(subject: "the tower", prompt: "{} is in", targetNew: "rome", targetTrue: "paris")
        let f = EditingTiny.config.ffnDim
        var identity = [Double](repeating: 0, count: f * f)
        for i in 0..<f { identity[i * f + i] = 1 }
        XCTAssertThrowsError(try rome.compute(request, hparams: h, secondMoment: identity)) { error in
            XCTAssertTrue("\(error)".contains("share"), "\(error)")
        }
    }

    func testSubjectLastTokenAnywhereInThePrompt() throws {
        let plain = try EditingTiny.tokenizer()
        let chars = Array("abcdefghijklmnopqrstuvwxyzTIAHSWO") + ["Ġ", ".", ",", "Ċ", "'", "-"]
        let withBOS = try Tokenizer(tokens: ["<|endoftext|>"] + chars.map { String($0) }, tokenTypes: [3] + chars.map { _ in 1 },
                                    merges: [], pre: "gpt2", bosID: 0, eosID: 0, unknownID: nil, addBOS: true)
        let cases: [(template: String, subject: String, expected: Int)] = [
            ("{} is in", "the tower", 8), ("I saw {} there", "the tower", 14), ("I saw {}", "the tower", 14),
            ("I saw{} there", " the tower", 14), ("I saw {}, then", "the tower ", 14), ("{}", "Ab", 1),
        ]
        for (tok, shift) in [(plain, 0), (withBOS, 1)] {
            let rome = ROME(model: EditingTiny.make(), tokenizer: tok, contexts: .bare)
            for (template, subject, expected) in cases {
                let (ids, last) = try rome.tokensWithSubject(template, subject: subject)
                XCTAssertEqual(last, expected + shift, "\"\(template)\" / \"\(subject)\", BOS \(shift)")
                XCTAssertEqual(ids.count, template.count - 2 + subject.count + shift)
            }
            XCTAssertThrowsError(try rome.tokensWithSubject("the tower is in", subject: "the tower")) {
                XCTAssertTrue("\($0)".contains("has no {}"), "\($0)")
            }
            XCTAssertThrowsError(try rome.tokensWithSubject("{} is in", subject: "  "))
        }
    }

    /// Request parsing: a subject spelt out in the prompt (CounterFact/EasyEdit) is found at the start, middle or end,
    /// in another case or with surrounding spaces, and becomes `{}`; a subject absent from the prompt is a clear error.
    func testRequestLocatesTheSubjectOrSaysItIsMissing() throws {
        func parse(_ subject: String, _ prompt: String) throws -> EditRequest {
            try EditRequest.from(json: ["subject": subject, "prompt": prompt, "target_new": "Rome"])
        }
        let cases: [(subject: String, prompt: String, template: String, spelt: String)] = [
            ("The Eiffel Tower", "The Eiffel Tower is located in", "{} is located in", "The Eiffel Tower"),
            ("Eiffel Tower", "I visited the Eiffel Tower in", "I visited the {} in", "Eiffel Tower"),
            ("Eiffel Tower", "The city of the Eiffel Tower", "The city of the {}", "Eiffel Tower"),
            ("the eiffel tower", "The Eiffel Tower is located in", "{} is located in", "The Eiffel Tower"),
            ("  Eiffel Tower ", "I visited the Eiffel Tower in", "I visited the {} in", "Eiffel Tower"),
            (" Eiffel Tower", "I visited the {} in", "I visited the {} in", "Eiffel Tower"),
        ]
        for (subject, prompt, template, spelt) in cases {
            let r = try parse(subject, prompt)
            XCTAssertEqual(r.prompt, template, "\"\(subject)\" in \"\(prompt)\"")
            XCTAssertEqual(r.subject, spelt)
            if !prompt.contains("{}") { XCTAssertEqual(r.filledPrompt, prompt) }
        }
        for (subject, prompt) in [("Big Ben", "The Eiffel Tower is located in"), ("", "The Eiffel Tower is in")] {
            XCTAssertThrowsError(try parse(subject, prompt)) {
                guard case let .badRequest(_, reason)? = $0 as? EditingError else { return XCTFail("\($0)") }
                XCTAssertTrue(reason.contains("does not contain the subject") || reason.contains("empty"), reason)
            }
        }
        XCTAssertThrowsError(try EditRequest(subject: "Big Ben", prompt: "The Eiffel Tower is in", targetNew: "Rome").validate()) {
            XCTAssertTrue("\($0)".contains("does not contain the subject"), "\($0)")
        }
        XCTAssertThrowsError(try parse("Eiffel", "{} and {} are")) { XCTAssertTrue("\($0)".contains("once"), "\($0)") }
    }

    // MARK: 4. Bad requests

    /// A tiny store with layer-0 statistics beside it.
    func tinyStoreWithStatistics() throws -> (dir: String, store: String, stats: String) {
        let dir = try F.tempDir(self), store = dir + "/tiny.h5", stats = dir + "/layer0.stats.h5"
        try F.makeStore(store)
        let m = try ModelFile.open(store)
        var rng = SeededRandom(seed: 1)
        let seqs = (0..<12).map { _ in (0..<20).map { _ in 1 + Int(rng.next() % 39) } }
        let s = try StatisticsCollector.collect(model: m.model, modelSHA256: m.provenance.sourceSHA256, layer: 0,
                                                corpus: TokenCorpus(sequences: seqs, settings: "test", description: "random tokens"))
        try StatsStore.save([s], to: stats)
        return (dir, store, stats)
    }

    /// What must not change: every file's bytes and modification date, and the folder's listing.
    func fingerprint(_ dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).sorted().map { name in
            let path = dir + "/" + name
            let date = try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date
            return "\(name) \(try SHA256.hex(fileAt: path)) \(date?.timeIntervalSince1970 ?? -1)"
        }
    }

    /// `scalpel edit` on a tiny store: a subject not in the prompt, an empty target, layer 99 and statistics of
    /// another layer each exit non-zero with an error naming the problem, and leave the store, the statistics and
    /// the folder byte-for-byte as they were. The same command with a good request does change the store.
    func testBadRequestsFailClearlyAndLeaveTheStoreUntouched() throws {
        let binary = try EditLogFixtures.scalpelBinary()
        let (dir, store, stats) = try tinyStoreWithStatistics()
        let requests = try F.tempDir(self)
        func request(_ name: String, _ json: [String: Any]) throws -> String {
            let path = requests + "/\(name).json"
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
            return path
        }
        let good = try request("good", ["subject": "the tower", "prompt": "{} is in", "target_new": "rome", "target_true": "paris"])
        func run(_ requestFile: String, layer: String) throws -> (status: Int32, stderr: String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["edit", requestFile, "--model", store, "--stats", stats, "--steps", "2", "--layer", layer]
            let err = Pipe()
            p.standardOutput = FileHandle.nullDevice
            p.standardError = err
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, text)
        }
        let cases: [(name: String, file: String, layer: String, fragments: [String])] = [
            ("subject not in prompt",
             try request("absent", ["subject": "big ben", "prompt": "the tower is in", "target_new": "rome"]), "0",
             ["big ben", "does not contain the subject"]),
            ("empty target", try request("empty", ["subject": "the tower", "prompt": "{} is in", "target_new": " "]), "0",
             ["target_new is empty"]),
            ("unknown layer", good, "99", ["layer 99 is outside the model (0..<2)"]),
            ("statistics of another layer", good, "1", [stats, "no key statistics for layer 1", "layers present: 0"]),
        ]
        let before = try fingerprint(dir)
        XCTAssertEqual(before.count, 2)
        for (name, file, layer, fragments) in cases {
            let r = try run(file, layer: layer)
            XCTAssertNotEqual(r.status, 0, name)
            for f in fragments { XCTAssertTrue(r.stderr.contains(f), "\(name): \"\(f)\" not in: \(r.stderr)") }
            XCTAssertEqual(try fingerprint(dir), before, name)
        }
        let ok = try run(good, layer: "0")
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertNotEqual(try fingerprint(dir), before)
        XCTAssertEqual(try EditLog.entries(path: store).map(\.layer), [0])
    }

    /// The same refusals through the library, before anything is computed or written.
    func testLibraryRefusesBadEditsBeforeWriting() throws {
        let (dir, store, stats) = try tinyStoreWithStatistics()
        let before = try fingerprint(dir)
        let m = try ModelFile.open(store)
        let session = EditSession(model: m, plan: StatisticsPlan(path: stats))
        session.contextSeeds = ["The"]
        let writer = try EditLogWriter(model: m, out: nil, toolVersion: "test")
        let good = EditRequest(subject: "the tower", prompt: "{} is in", targetNew: "rome", targetTrue: "paris")
        var absent = good
        absent.prompt = "the tower is in"
        var empty = good
        empty.targetNew = ""
        let cases: [(EditRequest, Int, EditingError)] = [
            (absent, 0, .badRequest(subject: "the tower", reason: "the prompt \"the tower is in\" does not contain the subject")),
            (empty, 0, .badRequest(subject: "the tower", reason: "target_new is empty")),
            (good, 99, .layerOutOfRange(layer: 99, layers: 2)),
            (good, 1, .statisticsNotFound(path: stats, layer: 1, available: [0])),
        ]
        for (r, layer, expected) in cases {
            XCTAssertThrowsError(try session.editAndRecord(r, hparams: ROMEHyperParameters(layer: layer), writer: writer)) {
                XCTAssertEqual($0 as? EditingError, expected)
            }
        }
        XCTAssertEqual(try fingerprint(dir), before)
        XCTAssertEqual(writer.committed, [])
        // With a corpus given, statistics of the missing layer are collected into the named file.
        let corpus = try F.tempDir(self) + "/corpus.txt"
        try String(repeating: "the tower is in paris, the bridge is in rome. ", count: 20).write(toFile: corpus, atomically: true, encoding: .utf8)
        let collecting = EditSession(model: m, plan: StatisticsPlan(corpusFiles: [corpus], path: stats))
        XCTAssertEqual(try collecting.statistics(layer: 1).layer, 1)
        XCTAssertEqual(try StatsStore.layers(path: stats), [0, 1])
        // ROME itself checks the layer and the statistics' size.
        let rome = ROME(model: m.model, tokenizer: m.tokenizer, contexts: .bare)
        XCTAssertThrowsError(try rome.compute(good, hparams: ROMEHyperParameters(layer: 99), secondMoment: [])) {
            XCTAssertEqual($0 as? EditingError, .layerOutOfRange(layer: 99, layers: 2))
        }
        XCTAssertThrowsError(try rome.compute(good, hparams: ROMEHyperParameters(layer: 0), secondMoment: [1, 0, 0, 1])) {
            guard case .statisticsMismatch(field: "dimension", _, _, _)? = $0 as? EditingError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try ROME.rankOneFactors(weight: [Float](repeating: 1, count: 6), secondMoment: [1, 0, 0, 1],
                                                     key: [0, 0], value: [1, 2, 3])) {
            XCTAssertTrue("\($0)".contains("the key is zero"), "\($0)")
        }
    }
}

/// ROME on SmolLM2-135M-Instruct (skipped without weights/SmolLM2-135M-Instruct.h5 or the WikiText sample that
/// `EditLogRealModelTests` also uses). Edits happen in memory: nothing under weights/ is written.
final class ROMERealModelTests: XCTestCase {
    typealias F = EditLogFixtures
    static let store = EditLogRealModelTests.store

    func open() throws -> ModelFile {
        guard FileManager.default.fileExists(atPath: Self.store) else {
            throw XCTSkip("default model not fetched and imported (scalpel fetch)")
        }
        return try ModelFile.open(Self.store)
    }

    /// With the byte-level BPE tokenizer the subject's last token is " Tower" (leading space) at the start, middle
    /// and end of a prompt: the tokens up to it decode to exactly the text up to the subject's end.
    func testSubjectLastTokenWithBPE() throws {
        let m = try open()
        let rome = ROME(model: m.model, tokenizer: m.tokenizer, contexts: .bare)
        for (template, subject) in [("{} is located in the city of", "The Eiffel Tower"), ("I visited {} in May", "the Eiffel Tower"),
                                    ("Tell me about {}", "the Eiffel Tower"), ("Tell me about {}", "the eiffel tower")] {
            let (ids, last) = try rome.tokensWithSubject(template, subject: subject)
            let upTo = template.components(separatedBy: "{}")[0] + subject
            XCTAssertEqual(m.tokenizer.decode(Array(ids[...last])), upTo, "\(template) / \(subject)")
            XCTAssertEqual(m.tokenizer.decode(ids), template.replacingOccurrences(of: "{}", with: subject))
        }
    }

    /// The Eiffel Tower → Rome at layer 4 (statistics over 20 KB of WikiText, collected here): the prompt's top
    /// answer becomes " Rome", the paraphrases move to Rome, and neighbours the unedited model gets right keep their
    /// answers (the Colosseum: Rome, the Louvre: Paris).
    func testEiffelTowerToRome() throws {
        let m = try open()
        let wikitext = EditLogRealModelTests.wikitext
        guard FileManager.default.fileExists(atPath: wikitext) else { throw XCTSkip("no WikiText sample at \(wikitext)") }
        let storeDate = try FileManager.default.attributesOfItem(atPath: Self.store)[.modificationDate] as? Date
        let dir = try F.tempDir(self), corpus = dir + "/corpus.txt"
        try String(try String(contentsOfFile: wikitext, encoding: .utf8).prefix(20_000)).write(toFile: corpus, atomically: true, encoding: .utf8)
        let request = try EditRequest.load(path: F.root.appendingPathComponent("edits/eiffel-rome.json").path)[0]
        XCTAssertEqual(request.filledPrompt, "The Eiffel Tower is located in the city of")
        let tok = m.tokenizer, rome = tok.encode(" Rome")
        XCTAssertEqual(rome.count, 1)
        /// Greedy next token and p(" Rome") after each prompt (softmax in float64).
        func next(_ prompts: [String]) throws -> [(top: String, pRome: Double)] {
            let out = try m.model.forward(prompts.map { tok.encode($0) })
            return prompts.indices.map { i in
                let row = out.row(i).map(Double.init), top = row.indices.max { row[$0] < row[$1] }!
                let z = row.map { exp($0 - row[top]) }.reduce(0, +)
                return (tok.tokenText(top), exp(row[rome[0]] - row[top]) / z)
            }
        }
        let neighbours = ["The Colosseum is located in the city of": " Rome", "The Louvre is located in the city of": " Paris"]
        let prompts = [request.filledPrompt] + request.paraphrases + neighbours.keys.sorted()
        XCTAssertEqual(request.paraphrases.count, 2)
        let before = try next(prompts)
        XCTAssertEqual(before[0].top, " Paris")
        for (i, p) in prompts.enumerated().dropFirst(3) { XCTAssertEqual(before[i].top, neighbours[p], "unedited: \(p)") }

        let session = EditSession(model: m, plan: StatisticsPlan(corpusFiles: [corpus], path: dir + "/stats.h5"))
        let t0 = Date()
        let outcome = try session.edit(request, hparams: ROMEHyperParameters(layer: 4))
        let seconds = Date().timeIntervalSince(t0)
        let after = try next(prompts)
        XCTAssertEqual(after[0].top, " Rome")
        for i in 1...2 {
            XCTAssertGreaterThan(after[i].pRome, 0.5, prompts[i])
            XCTAssertGreaterThan(after[i].pRome - before[i].pRome, 0.4, prompts[i])
        }
        for (i, p) in prompts.enumerated().dropFirst(3) { XCTAssertEqual(after[i].top, neighbours[p], "edited: \(p)") }
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: Self.store)[.modificationDate] as? Date, storeDate)
        print("Eiffel → Rome, layer 4 (statistics, contexts and edit \(String(format: "%.1f", seconds)) s, "
              + "\(outcome.result.losses.count) steps): "
              + zip(prompts, zip(before, after)).map { "\"\($0)\" p(Rome) \(String(format: "%.3f → %.3f", $1.0.pRome, $1.1.pRome)) "
                + "top \($1.0.top) → \($1.1.top)" }.joined(separator: "; "))
    }
}
