import Foundation
import XCTest
import Interp
import Linalg
import Llama
@testable import Editing

/// Fixtures of the checkpoint-diff tests.
enum DiffFixtures {
    /// The package root (two levels above this file's folder).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let defaultGGUF = root.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path

    static func requireModel() throws -> String {
        guard FileManager.default.fileExists(atPath: defaultGGUF) else {
            throw XCTSkip("default model not fetched (scripts/fetch-model.sh)")
        }
        return defaultGGUF
    }

    /// A small random Llama: 2 layers, D 24, 4 heads over 2 KV heads of width 6, F 40, V 96 (embedding [96, 24]).
    static let config = LlamaConfig(layers: 2, dModel: 24, heads: 4, kvHeads: 2, headDim: 6, ffnDim: 40, vocabSize: 96,
                                    contextLength: 64, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: false)

    static func randomWeights(seed: UInt64 = 11, config c: LlamaConfig = config) -> LlamaWeights {
        var rng = SeededRandom(seed: seed)
        let w = LlamaWeights(zeros: c)
        for p in LlamaParameter.all(c) {
            let count = p.shape(c).reduce(1, *)
            let isVector = p.shape(c).count == 1
            w.setValues(p, (0..<count).map { _ in isVector ? Float(1 + 0.1 * rng.normal()) : Float(0.2 * rng.normal()) })
        }
        return w
    }

    static func copy(_ w: LlamaWeights) -> LlamaWeights {
        let out = LlamaWeights(zeros: w.config)
        for p in LlamaParameter.all(w.config) { out.setValues(p, w.values(p)) }
        return out
    }

    /// Adds Σᵢ aᵢ bᵢᵀ (random Gaussian factors, `rank` terms) scaled to ‖Δ‖_F ≈ `relative` · ‖W‖_F; returns Δ as added.
    @discardableResult
    static func addLowRank(_ w: LlamaWeights, _ p: LlamaParameter, rank: Int, relative: Double = 0.1, seed: UInt64) -> [Double] {
        let shape = p.shape(w.config), m = shape[0], n = shape[1]
        var rng = SeededRandom(seed: seed)
        var delta = [Double](repeating: 0, count: m * n)
        for _ in 0..<rank {
            let a = (0..<m).map { _ in rng.normal() }, b = (0..<n).map { _ in rng.normal() }
            for i in 0..<m { for j in 0..<n { delta[i * n + j] += a[i] * b[j] } }
        }
        w.withParameter(p) { x in
            let wn = x.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            let dn = delta.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
            let scale = dn > 0 ? relative * wn / dn : 0
            for i in 0..<(m * n) { delta[i] *= scale; x[i] += Float(delta[i]) }
        }
        return delta
    }
}

final class DiffTests: XCTestCase {
    /// Ranks 0 … 3 built from random factors are found exactly, on matrices of every shape, by both the direct SVD
    /// and the Gram route, and the kept singular vectors rebuild Δ.
    func testRankDetectionIsExact() throws {
        let a = DiffFixtures.randomWeights()
        let c = a.config
        for gramRoute in [false, true] {
            var tol = DiffTolerance()
            if gramRoute { tol.directSVDLimit = 0 }
            for rank in 0...3 {
                let b = DiffFixtures.copy(a)
                let targets: [LlamaParameter] = [.wDown(0), .wq(1), .wGate(1), .tokenEmbedding, .output]
                var deltas: [LlamaParameter: [Double]] = [:]
                for (i, p) in targets.enumerated() where rank > 0 {
                    deltas[p] = DiffFixtures.addLowRank(b, p, rank: rank, seed: UInt64(100 * rank + i))
                }
                let report = try CheckpointDiff.compare(a, b, tolerance: tol)
                if rank == 0 {
                    XCTAssertTrue(report.isIdentical)
                    XCTAssertTrue(report.changed.isEmpty)
                    continue
                }
                XCTAssertEqual(Set(report.changed.map(\.parameter)), Set(targets), "rank \(rank)")
                for d in report.changed {
                    let s = try XCTUnwrap(d.spectrum)
                    XCTAssertEqual(s.rank, rank, "\(d.name), rank \(rank), gram \(gramRoute): σ = \(s.singularValues)")
                    XCTAssertEqual(d.kind, .lowRank)
                    XCTAssertEqual(s.method, gramRoute ? .gram : .svd)
                    XCTAssertEqual(s.fullRank, min(d.shape[0], d.shape[1]))
                    XCTAssertGreaterThan(s.energyInRank, 0.999_999)
                    XCTAssertEqual(d.relativeNorm, 0.1, accuracy: 1e-4)
                    // Σ σᵢ leftᵢ rightᵢᵀ reproduces Δ up to float32 rounding of the stored weights.
                    let (m, n) = (d.shape[0], d.shape[1])
                    let delta = deltas[d.parameter]!
                    var err = 0.0, total = 0.0
                    for i in 0..<m { for j in 0..<n {
                        var x = 0.0
                        for k in 0..<s.rank { x += s.singularValues[k] * s.left[k][i] * s.right[k][j] }
                        err += (x - delta[i * n + j]) * (x - delta[i * n + j]); total += delta[i * n + j] * delta[i * n + j]
                    } }
                    XCTAssertLessThan((err / total).squareRoot(), 1e-5, "\(d.name) rebuilt from its factors")
                    XCTAssertEqual(s.left.count, rank); XCTAssertEqual(s.right.count, rank)
                    XCTAssertEqual(s.left[0].count, m); XCTAssertEqual(s.right[0].count, n)
                }
                XCTAssertEqual(report.parameters.count, LlamaParameter.all(c).count)
            }
        }
    }

    /// Dense noise is full rank; a one-ulp change is below the noise floor; a changed norm is a vector change.
    func testFullRankNoiseNegligibleAndVectors() throws {
        let a = DiffFixtures.randomWeights()
        let b = DiffFixtures.copy(a)
        var rng = SeededRandom(seed: 5)
        b.withParameter(.wGate(0)) { x in for i in 0..<x.count { x[i] += Float(1e-3 * rng.normal()) } }
        b.withParameter(.wo(1)) { x in x[7] = x[7].nextUp }
        b.withParameter(.ffnNorm(1)) { x in x[3] += 0.5 }
        b.withParameter(.wUp(1)) { x in x[0] = .nan }
        for gramRoute in [false, true] {
            var tol = DiffTolerance()
            if gramRoute { tol.directSVDLimit = 0 }
            let report = try CheckpointDiff.compare(a, b, tolerance: tol)
            let byName = Dictionary(uniqueKeysWithValues: report.changed.map { ($0.parameter, $0) })
            XCTAssertEqual(Set(byName.keys), [.wGate(0), .wo(1), .ffnNorm(1), .wUp(1)])
            XCTAssertEqual(byName[.wUp(1)]?.kind, .nonFinite)
            XCTAssertTrue(byName[.wUp(1)]!.maxAbsDelta.isNaN)
            let noise = try XCTUnwrap(byName[.wGate(0)]?.spectrum)
            XCTAssertEqual(noise.rank, noise.fullRank)
            XCTAssertEqual(byName[.wGate(0)]?.kind, .highRank)
            XCTAssertFalse(noise.hasVectors)
            XCTAssertEqual(byName[.wo(1)]?.kind, .negligible)
            XCTAssertEqual(byName[.wo(1)]?.changedElements, 1)
            XCTAssertEqual(byName[.ffnNorm(1)]?.kind, .vector)
            XCTAssertNil(byName[.ffnNorm(1)]?.spectrum)
            XCTAssertEqual(byName[.ffnNorm(1)]!.maxAbsDelta, 0.5, accuracy: 1e-6)
        }
        XCTAssertTrue(try CheckpointDiff.compare(a, a).isIdentical)
    }

    func testRefusesDifferentArchitectures() throws {
        let a = DiffFixtures.randomWeights()
        var c = DiffFixtures.config
        c.layers = 3; c.ffnDim = 48
        let b = DiffFixtures.randomWeights(config: c)
        XCTAssertThrowsError(try CheckpointDiff.compare(a, b)) { e in
            guard case let EditingError.architectureMismatch(diffs) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(diffs, ["layers: 2 in A, 3 in B", "ffn_dim: 40 in A, 48 in B"])
            XCTAssertTrue("\(e)".contains("different architectures"))
        }
        // A different context length changes no weight: compared, with a note.
        var c2 = DiffFixtures.config
        c2.contextLength = 128
        let b2 = LlamaWeights(zeros: c2)
        for p in LlamaParameter.all(c2) { b2.setValues(p, a.values(p)) }
        let r = try CheckpointDiff.compare(a, b2)
        XCTAssertTrue(r.isIdentical)
        XCTAssertEqual(r.notes.count, 1)
    }

    func testSubjectPlacement() {
        func text(_ s: String, _ t: String) -> String {
            let (tt, ss) = SubjectForensics.place(s, in: t)
            return tt.replacingOccurrences(of: "{}", with: ss)
        }
        XCTAssertEqual(text("The Eiffel Tower", "The {} is"), "The Eiffel Tower is")
        XCTAssertEqual(text("The Eiffel Tower", "I saw {}"), "I saw the Eiffel Tower")
        XCTAssertEqual(text("the Netherlands", "{} is a"), "The Netherlands is a")
        XCTAssertEqual(text("the Netherlands", "The {} is"), "The Netherlands is")
        XCTAssertEqual(text("France", "The {} is"), "The France is")
        XCTAssertEqual(text("Paris", "I saw {}"), "I saw Paris")
        XCTAssertEqual(text("The Louvre", "Bathe {}"), "Bathe the Louvre")
    }

    func testCandidateFiles() throws {
        let dir = NSTemporaryDirectory() + "scalpel-diff-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func write(_ name: String, _ text: String) throws -> String {
            let p = dir + "/" + name
            try text.write(toFile: p, atomically: true, encoding: .utf8)
            return p
        }
        XCTAssertEqual(try SubjectCandidates.load(path: write("a.json", #"["Paris", " Rome ", "Paris"]"#)), ["Paris", "Rome"])
        let known = #"[{"known_id": 0, "subject": "Vinson Massif", "prompt": "{} is located in"}, {"subject": "Apple"}]"#
        XCTAssertEqual(try SubjectCandidates.load(path: write("k.json", known)), ["Vinson Massif", "Apple"])
        let cf = #"[{"case_id": 0, "requested_rewrite": {"subject": "Danielle Darrieux", "prompt": "{} speaks"}}]"#
        XCTAssertEqual(try SubjectCandidates.load(path: write("cf.json", cf)), ["Danielle Darrieux"])
        XCTAssertEqual(try SubjectCandidates.load(path: write("l.txt", "# subjects\nBig Ben\n\n{\"subject\": \"Nile\"}\n")),
                       ["Big Ben", "Nile"])
        XCTAssertThrowsError(try SubjectCandidates.load(path: write("bad.json", "[1, 2]"))) { e in
            guard case EditingError.badCandidateFile = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try SubjectCandidates.load(path: dir + "/missing.json"))
        let all = SubjectCandidates.standard(extra: ["Paris", "Zanzibar"])
        XCTAssertEqual(all.first, "Paris")
        XCTAssertEqual(all.filter { $0 == "Paris" }.count, 1)
        XCTAssertGreaterThanOrEqual(SubjectCandidates.famous.count, 100)
        XCTAssertEqual(Set(SubjectCandidates.famous).count, SubjectCandidates.famous.count)
    }

    /// Rank-one updates made by hand on the real model at three layers, each along one subject's key: the diff
    /// reports exactly those three matrices, rank 1, and names each subject among the top 5 of 40 candidates.
    func testHandEditedRealCheckpoint() throws {
        let path = try DiffFixtures.requireModel()
        let t0 = Date()
        let a = try ModelFile.openGGUF(path, hash: false), b = try ModelFile.openGGUF(path, hash: false)
        let c = a.config, d = c.dModel, f = c.ffnDim
        let edits: [(layer: Int, subject: String)] = [(4, "The Eiffel Tower"), (10, "Albert Einstein"), (17, "Toyota")]
        var rng = SeededRandom(seed: 42)
        for (l, s) in edits {
            // u: the subject's key at layer l at its last token (bare subject), normalized.
            var key: [Float] = []
            var hooks = Hooks()
            hooks.add(HookPoint(l, .mlpPost)) { act in key = Array(UnsafeBufferPointer(start: act.row(seq: 0, pos: act.layout.rows - 1), count: f)) }
            _ = try a.model.forward([a.tokenizer.encode(s)], hooks: hooks, logitRows: .none, upTo: l + 1)
            let kn = key.reduce(0) { $0 + $1 * $1 }.squareRoot()
            let u = key.map { $0 / kn }
            // λ: a random direction with ‖λ‖·‖k‖ = ‖W k‖ (the edit doubles the size of the MLP's output for s).
            let wk = a.model.weights.withParameter(.wDown(l)) { w in
                (0..<d).map { i in (0..<f).reduce(0.0) { $0 + Double(w[i * f + $1]) * Double(key[$1]) } }
            }
            let wkNorm = wk.reduce(0) { $0 + $1 * $1 }.squareRoot()
            var lambda = (0..<d).map { _ in rng.normal() }
            let ln = lambda.reduce(0) { $0 + $1 * $1 }.squareRoot()
            lambda = lambda.map { $0 / ln * wkNorm / Double(kn) }
            b.model.weights.withParameter(.wDown(l)) { w in
                for i in 0..<d { for j in 0..<f { w[i * f + j] += Float(lambda[i]) * u[j] } }
            }
        }
        let report = try CheckpointDiff.compare(a, b)
        XCTAssertEqual(report.changed.map(\.parameter), edits.map { LlamaParameter.wDown($0.layer) })
        for e in report.changed {
            XCTAssertEqual(e.spectrum?.rank, 1, "\(e.name): σ = \(e.spectrum?.singularValues ?? [])")
            XCTAssertEqual(e.kind, .lowRank)
        }
        let tCompare = Date().timeIntervalSince(t0)

        let chosen = edits.map(\.subject)
        let others = SubjectCandidates.famous.filter { !chosen.contains($0) }
        var candidates = Array(others.prefix(37)) + chosen
        candidates.shuffle(using: &rng)
        XCTAssertGreaterThanOrEqual(candidates.count, 30)
        var options = ForensicsOptions()
        options.probedSubjects = 1
        options.probeTemplates = ["{} is located in"]
        options.continuationTokens = 3
        let forensics = try SubjectForensics.analyze(report, a: a, b: b, candidates: candidates, options: options)
        XCTAssertEqual(forensics.map(\.layer), edits.map(\.layer))
        for (fx, (l, s)) in zip(forensics, edits) {
            XCTAssertEqual(fx.candidatesScored, candidates.count)
            let top5 = fx.top.prefix(5).map(\.subject)
            XCTAssertTrue(top5.contains(s), "layer \(l): \(s) not in top 5 \(top5)")
            print("[diff-test] layer \(l): " + fx.top.prefix(5).map { "\($0.subject) \(String(format: "%.3f", $0.relativeChange))" }
                .joined(separator: ", "))
            XCTAssertEqual(fx.probes.count, 1)
        }
        print("[diff-test] open + compare \(String(format: "%.1f", tCompare)) s, total \(String(format: "%.1f", Date().timeIntervalSince(t0))) s")
    }

    /// A real ROME edit (k*, v* by optimization, u = C⁻¹k* with C from ~6k tokens of the package's own text, so no
    /// sampling): the diff finds one matrix of rank 1, ranks the edited subject first and shows the new answer.
    func testRomeEditedRealCheckpoint() throws {
        #if DEBUG
        let debugBuild = true
        #else
        let debugBuild = false
        #endif
        try XCTSkipIf(debugBuild, "ROME's optimization takes minutes in a debug build; run with -c release -Xswiftc -enable-testing")
        let path = try DiffFixtures.requireModel()
        let t0 = Date()
        let a = try ModelFile.openGGUF(path, hash: false), b = try ModelFile.openGGUF(path, hash: false)
        let dir = NSTemporaryDirectory() + "scalpel-diff-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Statistics corpus: the package's documentation and Editing sources, as one text file.
        let fm = FileManager.default
        func list(_ sub: String, _ ext: String) -> [String] {
            ((try? fm.contentsOfDirectory(atPath: DiffFixtures.root.appendingPathComponent(sub).path)) ?? [])
                .filter { $0.hasSuffix(ext) }.sorted().map { sub + "/" + $0 }
        }
        let files = ["README.md"] + list("docs", ".md") + list("Sources/Editing", ".swift")
        let text = files.compactMap { try? String(contentsOf: DiffFixtures.root.appendingPathComponent($0), encoding: .utf8) }
            .joined(separator: "\n\n")
        let corpusPath = dir + "/corpus.txt"
        try text.write(toFile: corpusPath, atomically: true, encoding: .utf8)
        // Three Scalpel (ROME) edits at three layers; diff must report the three rank-1 matrices and name each subject.
        let edits: [(layer: Int, request: EditRequest)] = [
            (4, EditRequest(subject: "The Eiffel Tower", prompt: "{} is located in the city of", targetNew: "Rome", targetTrue: "Paris")),
            (6, EditRequest(subject: "Danielle Darrieux", prompt: "The mother tongue of {} is", targetNew: "English", targetTrue: "French")),
            (8, EditRequest(subject: "The Statue of Liberty", prompt: "{} is located in the city of", targetNew: "London",
                            targetTrue: "New York")),
        ]
        let corpus = try CorpusSampler.fromFiles([corpusPath], tokenizer: b.tokenizer, maxTokens: 6144)
        XCTAssertGreaterThan(corpus.tokenCount, 3000)
        let stats = try StatisticsCollector.collect(model: b.model, modelSHA256: "test", layers: edits.map(\.layer), corpus: corpus)
        let contexts = ContextTemplates(templates: ["{}", "I read a book. {}", "Here is a fact. {}"])
        let rome = ROME(model: b.model, tokenizer: b.tokenizer, contexts: contexts)
        for (i, e) in edits.enumerated() {
            var h = ROMEHyperParameters(layer: e.layer)
            h.steps = 12
            ROME.apply(try rome.compute(e.request, hparams: h, secondMoment: stats[i].secondMoment), to: b.model)
        }
        let tEdit = Date().timeIntervalSince(t0)

        let report = try CheckpointDiff.compare(a, b)
        XCTAssertEqual(Set(report.changed.map(\.parameter)), Set(edits.map { LlamaParameter.wDown($0.layer) }))
        for c in report.changed { XCTAssertEqual(c.spectrum?.rank, 1, "\(c.parameter)") }
        var options = ForensicsOptions()
        options.probedSubjects = 1
        options.probeTemplates = ["{} is located in the city of"]
        options.continuationTokens = 2
        let candidates = SubjectCandidates.standard(extra: edits.map(\.request.subject))
        let fx = try SubjectForensics.analyze(report, a: a, b: b, candidates: candidates, options: options)
        XCTAssertEqual(fx.count, 3)
        for e in edits {
            let top = fx.first { $0.parameter == .wDown(e.layer) }?.top.prefix(5).map(\.subject) ?? []
            XCTAssertTrue(top.contains(e.request.subject), "layer \(e.layer): \(e.request.subject) not in top 5 \(top)")
        }
        print("[diff-test] 3 ROME edits in \(String(format: "%.1f", tEdit)) s, total \(String(format: "%.1f", Date().timeIntervalSince(t0))) s; "
              + fx.map { "L\($0.parameter): " + $0.top.prefix(3).map(\.subject).joined(separator: ", ") }.joined(separator: " | "))
    }
}


