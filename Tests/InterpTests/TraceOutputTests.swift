import XCTest
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import Interp
@testable import Llama

/// Outputs of a trace: SVG heatmaps, the HTML report, HDF5 and JSON.
final class TraceOutputTests: XCTestCase {

    // MARK: Fixtures

    /// Tokens with characters that need escaping or making visible.
    static let tokens = ["<s>", "A & B", " \"quoted\"", "line\nbreak", " 日本🗼", " Paris"]

    /// A 6 × 7 MLP grid: unique maximum 0.9 at [2][3] (last subject token, layer 3), minimum 0.01
    /// at [5][0], NaN at [0][6].
    static func small(kind: TraceKind = .mlp, window: Int = 10, metric: MetricKind = .prob,
                      direction: PatchDirection = .denoise, foil: Int? = nil) -> TraceResult {
        var scores: [[Double]] = [
            [0.10, 0.11, 0.12, 0.13, 0.14, 0.15, .nan],
            [0.20, 0.30, 0.40, 0.50, 0.40, 0.30, 0.20],
            [0.30, 0.50, 0.70, 0.90, 0.60, 0.40, 0.20],
            [0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.11],
            [0.04, 0.04, 0.04, 0.05, 0.06, 0.07, 0.08],
            [0.01, 0.02, 0.03, 0.05, 0.20, 0.40, 0.60],
        ]
        if kind == .heads { scores = Array(scores.prefix(4)) }
        return TraceResult(settings: TraceSettings(kind: kind, window: window, metric: metric, direction: direction),
                           hookName: kind == .heads ? "blocks.{l}.attn.hook_z" : "blocks.{l}.hook_\(kind == .resid ? "resid_pre" : kind.rawValue + "_out")",
                           tokens: tokens, subject: 1...2, answer: 3681, answerText: " Paris", foil: foil,
                           scores: scores, clean: 0.85, corrupted: 0.03, seconds: 1.25)
    }

    /// A ROME-like 12-token, 30-layer trace: the subject's last token lights up in early–middle
    /// layers for resid and MLP, the last token in late layers for resid and attention.
    static func realistic(_ kind: TraceKind, window: Int = 10) -> TraceResult {
        let toks = ["<|im_start|>", "The", " Space", " Needle", " is", " located", " in", " the", " city", " of", " &", " <b>"]
        let subject = 2...3, L = 30, T = toks.count
        let clean = 0.92, low = 0.04
        func bump(_ x: Double, _ c: Double, _ w: Double) -> Double { exp(-((x - c) * (x - c)) / (2 * w * w)) }
        var scores = [[Double]](repeating: [Double](repeating: low, count: L), count: kind == .heads ? 9 : T)
        for i in scores.indices {
            for l in 0..<L {
                let x = Double(l), noise = 0.01 * sin(Double(i * 31 + l * 7))
                var v = low
                switch kind {
                case .resid:
                    if subject.contains(i) { v += (clean - low) * (i == 3 ? 1 : 0.35) * (1 - 1 / (1 + exp(-(x - 17) / 2))) }
                    if i == T - 1 { v += (clean - low) / (1 + exp(-(x - 18) / 2)) }
                case .mlp:
                    if i == 3 { v += 0.45 * bump(x, 9, 4) }
                    if i == T - 1 { v += 0.1 * bump(x, 22, 5) }
                case .attn:
                    if i == T - 1 { v += 0.5 * bump(x, 19, 4) }
                    if i == 3 { v += 0.05 * bump(x, 5, 3) }
                case .heads:
                    if i == 4 { v += 0.3 * bump(x, 17, 2) }
                case .neurons: break
                }
                scores[i][l] = max(0, v + noise)
            }
        }
        return TraceResult(settings: TraceSettings(kind: kind, window: kind == .resid || kind == .heads ? 1 : window),
                           hookName: "blocks.{l}.hook_\(kind.rawValue)", tokens: toks, subject: subject,
                           answer: 3681, answerText: " Seattle", foil: nil, scores: scores, clean: clean,
                           corrupted: low, seconds: 12.5)
    }

    static let provenance = ModelProvenance(sourceFile: "SmolLM2-135M-Instruct.Q4_1.gguf", sourceSize: 98_000_000,
                                            sourceSHA256: String(repeating: "ab", count: 32),
                                            quantization: ["Q4_1": 210, "F32": 61])

    // MARK: Helpers

    func rectFills(_ svg: String) -> [String] {
        let re = try! NSRegularExpression(pattern: "<rect [^>]*fill=\"(#[0-9a-f]{6})\"")
        let ns = svg as NSString
        return re.matches(in: svg, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range(at: 1)) }
    }

    func count(_ needle: String, in s: String) -> Int { s.components(separatedBy: needle).count - 1 }

    /// Well-formed per Foundation's XMLParser (libxml2 on Linux). On Linux `parse()` can return
    /// true for some errors (mismatched tags) while setting `parserError`, so both are checked.
    func isWellFormedXML(_ text: String) -> (ok: Bool, error: String) {
        let parser = XMLParser(data: Data(text.utf8))
        let ok = parser.parse() && parser.parserError == nil
        return (ok, "\(String(describing: parser.parserError)) at line \(parser.lineNumber)")
    }

    func assertWellFormedXML(_ text: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let (ok, error) = isWellFormedXML(text)
        XCTAssertTrue(ok, "\(what): \(error)", file: file, line: line)
    }

    /// A second, independent opinion (expat via Python's minidom); skipped without python3.
    func assertPythonParses(_ text: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let python = which("python3") else { throw XCTSkip("python3 not installed") }
        let path = tempPath("doc.xml")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let (status, out) = try run(python, ["-c", "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])", path])
        XCTAssertEqual(status, 0, "\(what): \(out)", file: file, line: line)
    }

    func which(_ tool: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    func run(_ tool: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func tempPath(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("scalpel-trace-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir.appendingPathComponent(name).path
    }

    /// Equal including NaN positions.
    func sameGrid(_ a: [[Double]], _ b: [[Double]]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { x, y in
            x.count == y.count && zip(x, y).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) }
        }
    }

    func assertSame(_ a: TraceResult, _ b: TraceResult, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.settings.kind, b.settings.kind, file: file, line: line)
        XCTAssertEqual(a.settings.window, b.settings.window, file: file, line: line)
        XCTAssertEqual(a.settings.metric, b.settings.metric, file: file, line: line)
        XCTAssertEqual(a.settings.direction, b.settings.direction, file: file, line: line)
        XCTAssertEqual(a.settings.naive, b.settings.naive, file: file, line: line)
        XCTAssertEqual(a.hookName, b.hookName, file: file, line: line)
        XCTAssertEqual(a.tokens, b.tokens, file: file, line: line)
        XCTAssertEqual(a.subject, b.subject, file: file, line: line)
        XCTAssertEqual(a.answer, b.answer, file: file, line: line)
        XCTAssertEqual(a.answerText, b.answerText, file: file, line: line)
        XCTAssertEqual(a.foil, b.foil, file: file, line: line)
        XCTAssertTrue(sameGrid(a.scores, b.scores), "scores differ", file: file, line: line)
        XCTAssertEqual(a.clean.bitPattern, b.clean.bitPattern, file: file, line: line)
        XCTAssertEqual(a.corrupted.bitPattern, b.corrupted.bitPattern, file: file, line: line)
        XCTAssertEqual(a.seconds.bitPattern, b.seconds.bitPattern, file: file, line: line)
    }

    // MARK: SVG

    func testXMLCheckerRejectsBrokenXML() {
        for bad in ["<a><b></a>", "<a>x & y</a>", "<a>\u{1}</a>", "<a></a><b/>", "<a x='1' x='2'/>"] {
            XCTAssertFalse(isWellFormedXML(bad).ok, bad)
        }
        XCTAssertTrue(isWellFormedXML("<a><b>x &amp; y</b></a>").ok)
    }

    func testSVGsAreWellFormed() {
        let r = Self.small()
        assertWellFormedXML(Heatmap.svg(r), "mlp")
        assertWellFormedXML(Heatmap.svg(r, title: "a <b> & \"c\" 'd'\u{1}", normalized: true), "mlp normalized")
        assertWellFormedXML(Heatmap.svg(Self.small(kind: .heads)), "heads")
        assertWellFormedXML(Heatmap.svg(Self.small(metric: .kl)), "kl")
        assertWellFormedXML(Heatmap.svg(Self.small(metric: .logitDiff, foil: 7), foilText: " R<o>me"), "logit diff")
        assertWellFormedXML(Heatmap.threePanel([.resid, .mlp, .attn].map { Self.realistic($0) }, title: "x & y"), "three")
        assertWellFormedXML(Heatmap.threePanel([]), "empty")
        var odd = Self.small()
        odd.tokens = ["", " ", "\u{0}\u{7}\t", "\u{202E}rtl", "e\u{301}", "x"]
        odd.answerText = "\n"
        assertWellFormedXML(Heatmap.svg(odd), "odd tokens")
        var empty = Self.small()
        empty.scores = []
        XCTAssertEqual(count("<rect ", in: Heatmap.svg(empty)), 0)
        assertWellFormedXML(Heatmap.svg(empty), "empty grid")
        var flat = Self.small()
        flat.scores = [[0.5, 0.5], [0.5, .nan]]
        XCTAssertEqual(Set(rectFills(Heatmap.svg(flat))).count, 2)   // one colour and NaN grey
        assertWellFormedXML(Heatmap.svg(flat), "flat grid")
    }

    func testPythonAgreesSVGAndHTMLAreWellFormed() throws {
        try assertPythonParses(Heatmap.threePanel([.resid, .mlp, .attn].map { Self.realistic($0) }), "three")
        try assertPythonParses(Heatmap.svg(Self.small(metric: .logitDiff, foil: 7), foilText: "&<>"), "small")
        try assertPythonParses(TraceReport.html([Self.small()], prompt: "<&>\n\u{1}", provenance: Self.provenance), "report")
    }

    func testSVGHasSizeAndViewBox() throws {
        let svg = Heatmap.svg(Self.small())
        XCTAssertTrue(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        let re = try NSRegularExpression(pattern: "^<svg [^>]*width=\"(\\d+)\" height=\"(\\d+)\" viewBox=\"0 0 (\\d+) (\\d+)\"")
        let ns = svg as NSString
        let m = try XCTUnwrap(re.firstMatch(in: svg, range: NSRange(location: 0, length: ns.length)))
        let w = Int(ns.substring(with: m.range(at: 1)))!, h = Int(ns.substring(with: m.range(at: 2)))!
        XCTAssertEqual(ns.substring(with: m.range(at: 3)), String(w))
        XCTAssertEqual(ns.substring(with: m.range(at: 4)), String(h))
        XCTAssertGreaterThan(w, 200)
        XCTAssertGreaterThan(h, 6 * 18)
        XCTAssertFalse(svg.contains("<script"))
        XCTAssertFalse(svg.contains("href"))
    }

    func testOneRectPerCell() {
        let r = Self.small()
        XCTAssertEqual(count("<rect ", in: Heatmap.svg(r)), 6 * 7)
        XCTAssertEqual(count("<rect ", in: Heatmap.svg(Self.small(kind: .heads))), 4 * 7)
        let three = [TraceKind.resid, .mlp, .attn].map { Self.realistic($0) }
        XCTAssertEqual(count("<rect ", in: Heatmap.threePanel(three)), 3 * 12 * 30)
    }

    func testLabelsSubjectAndEscaping() {
        let svg = Heatmap.svg(Self.small())
        // Subject tokens 1...2 carry a trailing '*', others do not.
        XCTAssertTrue(svg.contains(">A &amp; B*</text>"))
        XCTAssertTrue(svg.contains(">&quot;quoted&quot;*</text>"))
        XCTAssertTrue(svg.contains(">&lt;s&gt;</text>"))
        XCTAssertTrue(svg.contains(">line\\nbreak</text>"))
        XCTAssertTrue(svg.contains(">日本🗼</text>"))
        XCTAssertTrue(svg.contains(">Paris</text>"))
        XCTAssertFalse(svg.contains("Paris*"))
        XCTAssertFalse(svg.contains("<s>"))
        XCTAssertEqual(Heatmap.rowLabels(Self.small()).filter { $0.hasSuffix("*") }.count, 2)
        // Title, axis label, layer ticks, colour bar label and its min/max ticks.
        XCTAssertTrue(svg.contains(">Impact of restoring MLP after corrupted input (window 10)</text>"))
        XCTAssertTrue(svg.contains(">center of interval of 10 patched MLP layers</text>"))
        XCTAssertTrue(svg.contains(">p(Paris)</text>"))
        XCTAssertTrue(svg.contains(">0.9</text>"))
        XCTAssertTrue(svg.contains(">0.01</text>"))
        XCTAssertTrue(svg.contains(">0</text>"))
        XCTAssertTrue(svg.contains(">5</text>"))
        // Heads: rows are heads, no token labels.
        let heads = Heatmap.svg(Self.small(kind: .heads))
        for h in 0..<4 { XCTAssertTrue(heads.contains(">head \(h)</text>")) }
        XCTAssertFalse(heads.contains("Paris*") || heads.contains("A &amp; B"))
        // Metric labels.
        XCTAssertTrue(Heatmap.svg(Self.small(metric: .logitDiff, foil: 7), foilText: " Rome")
            .contains(">logit diff (Paris \u{2212} Rome)</text>"))
        XCTAssertTrue(Heatmap.svg(Self.small(metric: .logitDiff, foil: 7)).contains(">logit diff (Paris \u{2212} #7)</text>"))
        XCTAssertTrue(Heatmap.svg(Self.small(metric: .kl)).contains(">KL(clean \u{2016} patched)</text>"))
        XCTAssertTrue(Heatmap.svg(Self.small(), normalized: true).contains(">p(Paris), normalized</text>"))
        XCTAssertTrue(Heatmap.svg(Self.small(kind: .resid)).contains(">Impact of restoring state after corrupted input</text>"))
        XCTAssertTrue(Heatmap.svg(Self.small(direction: .noise)).contains("Impact of corrupting MLP in the clean run"))
    }

    func testColoursFollowScores() {
        let r = Self.small()
        let fills = rectFills(Heatmap.svg(r))
        XCTAssertEqual(fills.count, 42)
        // Greens (mlp): the maximum gets the dark end, the minimum the light end, NaN grey.
        XCTAssertEqual(fills[2 * 7 + 3], "#00441b")
        XCTAssertEqual(fills[5 * 7 + 0], "#f7fcf5")
        XCTAssertEqual(fills[0 * 7 + 6], "#bdbdbd")
        XCTAssertEqual(fills.filter { $0 == "#00441b" }.count, 1)
        // Each kind has its own map.
        XCTAssertEqual(rectFills(Heatmap.svg(Self.small(kind: .resid)))[17], "#3f007d")
        XCTAssertEqual(rectFills(Heatmap.svg(Self.small(kind: .attn)))[17], "#67000d")
        XCTAssertEqual(rectFills(Heatmap.svg(Self.small(kind: .heads)))[17], "#08306b")
        // Raw KL: lower is closer to clean, so the minimum is darkest.
        let kl = rectFills(Heatmap.svg(Self.small(metric: .kl)))
        XCTAssertEqual(kl[35], "#00441b")
        XCTAssertEqual(kl[17], "#f7fcf5")
        // Normalized: scaled between corrupted (0.03) and clean (0.85), clamped; 0.9 is past clean.
        let norm = rectFills(Heatmap.svg(r, normalized: true))
        XCTAssertEqual(norm[17], "#00441b")
        XCTAssertEqual(norm[35], "#f7fcf5")   // 0.01 < corrupted → clamped to the light end
        // Darkness grows with the score along row 2 up to the peak.
        let lum = { (hex: String) -> Int in
            let v = Int(hex.dropFirst(), radix: 16)!
            return 299 * (v >> 16) + 587 * ((v >> 8) & 255) + 114 * (v & 255)
        }
        let row2 = (0..<4).map { lum(fills[14 + $0]) }
        XCTAssertEqual(row2, row2.sorted(by: >))
    }

    func testThreePanelOrderAndSharedLabels() {
        let results = [TraceKind.attn, .resid, .mlp].map { Self.realistic($0) }
        let svg = Heatmap.threePanel(results)
        let iResid = svg.range(of: "Restoring state")!.lowerBound
        let iMLP = svg.range(of: "Restoring MLP (window 10)")!.lowerBound
        let iAttn = svg.range(of: "Restoring Attn (window 10)")!.lowerBound
        XCTAssertTrue(iResid < iMLP && iMLP < iAttn)
        XCTAssertEqual(count(">Needle*</text>", in: svg), 1)   // token labels drawn once
        XCTAssertTrue(svg.contains("Causal trace of \u{201C}Seattle\u{201D}"))
        XCTAssertEqual(Set(rectFills(svg)).intersection(["#3f007d", "#00441b", "#67000d"]).count, 3)
    }

    // MARK: HTML

    func testHTMLReport() {
        let results = [Self.small(kind: .resid), Self.small(), Self.small(kind: .attn), Self.small(metric: .kl)]
        let html = TraceReport.html(results, prompt: "A & B <tag> \"quoted\"\nline", provenance: Self.provenance)
        assertWellFormedXML(html, "report")
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
        XCTAssertTrue(html.contains("A &amp; B &lt;tag&gt; &quot;quoted&quot;\nline"))
        XCTAssertEqual(count("<svg ", in: html), 4)
        XCTAssertEqual(count("<caption", in: html), 4)
        XCTAssertTrue(html.contains("SmolLM2-135M-Instruct.Q4_1.gguf"))
        XCTAssertTrue(html.contains("F32 × 61, Q4_1 × 210"))
        XCTAssertTrue(html.contains("Peak MLP layer"))
        XCTAssertTrue(html.contains("<strong>layer 3</strong>"))
        XCTAssertTrue(html.contains("0.85") && html.contains("0.03"))
        XCTAssertFalse(html.contains("<script"))
        // No MLP trace → no peak section.
        XCTAssertFalse(TraceReport.html([Self.small(kind: .attn)], prompt: "p", provenance: nil).contains("Peak MLP"))
    }

    func testTopCellsAndPeak() {
        let r = Self.small()
        let top = TraceReport.topCells(r)
        XCTAssertEqual(top.count, 5)
        XCTAssertEqual(top.map { [$0.row, $0.layer] }, [[2, 3], [2, 2], [2, 4], [5, 6], [1, 3]])
        // KL: lowest first; noising: lowest first; KL noising: highest first.
        XCTAssertEqual(TraceReport.topCells(Self.small(metric: .kl), count: 1).first?.score, 0.01)
        XCTAssertEqual(TraceReport.topCells(Self.small(direction: .noise), count: 1).first?.score, 0.01)
        XCTAssertEqual(TraceReport.topCells(Self.small(metric: .kl, direction: .noise), count: 1).first?.score, 0.9)
        XCTAssertEqual(TraceReport.peakMLPLayer(r)?.layer, 3)
        var noSubject = r
        noSubject.subject = nil
        XCTAssertNil(TraceReport.peakMLPLayer(noSubject))
        XCTAssertEqual(TraceReport.topCells(Self.small()).count, 5)
    }

    // MARK: HDF5

    func testHDF5RoundTrip() throws {
        var heads = Self.small(kind: .heads, metric: .logitDiff, foil: 42)
        heads.subject = nil
        heads.settings.naive = true
        var kl = Self.small(kind: .attn, window: 5, metric: .kl, direction: .noise)
        kl.clean = .nan
        let results = [Self.small(window: 10), Self.small(window: 1), Self.small(kind: .resid, window: 1), kl, heads]
        let prompt = "The <Eiffel> & \"Tower\"\nis in 日本 🗼"
        let path = tempPath("trace.h5")
        try TraceStore.write(results, prompt: prompt, provenance: Self.provenance, to: path)
        let (p, back) = try TraceStore.read(path)
        XCTAssertEqual(p, prompt)
        XCTAssertEqual(back.count, results.count)
        for (a, b) in zip(results, back) { assertSame(a, b) }
        XCTAssertEqual(try TraceStore.readProvenance(path), Self.provenance)
        XCTAssertEqual(TraceStore.groupNames(results), ["mlp_w10", "mlp_w1", "resid", "attn", "heads"])

        guard let h5dump = which("h5dump") else { throw XCTSkip("h5dump not installed") }
        let (status, out) = try run(h5dump, ["-H", path])
        XCTAssertEqual(status, 0, out)
        for g in ["mlp_w10", "mlp_w1", "resid", "attn", "heads", "model"] { XCTAssertTrue(out.contains("GROUP \"\(g)\""), g) }
        for d in ["scores", "normalized", "tokens"] { XCTAssertTrue(out.contains("DATASET \"\(d)\""), d) }
        XCTAssertTrue(out.contains("H5T_IEEE_F64LE"))
        XCTAssertTrue(out.contains("( 6, 7 )"))   // scores [rows, layers]
        for a in ["format", "format_version", "prompt", "created", "kind", "hook_name", "window", "metric", "direction",
                  "answer_id", "answer_text", "foil_id", "subject_first", "subject_last", "clean", "corrupted",
                  "seconds", "naive", "source_sha256", "quantization"] {
            XCTAssertTrue(out.contains("ATTRIBUTE \"\(a)\""), a)
        }
        let (_, attrs) = try run(h5dump, ["-a", "/heads/foil_id", "-a", "/heads/subject_first", "-a", "/format", path])
        XCTAssertTrue(attrs.contains("42"), attrs)
        XCTAssertTrue(attrs.contains("-1"), attrs)
        XCTAssertTrue(attrs.contains("\"scalpel-trace\""), attrs)
    }

    func testHDF5NameCollisionsAndErrors() throws {
        let a = Self.small(), b = Self.small(metric: .kl), c = Self.small()
        XCTAssertEqual(TraceStore.groupNames([a, b, c]), ["mlp_w10_prob_denoise", "mlp_w10_kl", "mlp_w10_prob_denoise_2"])
        let path = tempPath("dups.h5")
        try TraceStore.write([a, b, c], prompt: "", provenance: nil, to: path)
        let back = try TraceStore.read(path)
        XCTAssertEqual(back.prompt, "")
        XCTAssertEqual(back.results.map(\.settings.metric), [.prob, .kl, .prob])
        XCTAssertNil(try TraceStore.readProvenance(path))

        // Ragged grids are refused before anything is written.
        var ragged = Self.small()
        ragged.scores[1].removeLast()
        let bad = tempPath("ragged.h5")
        XCTAssertThrowsError(try TraceStore.write([ragged], prompt: "p", provenance: nil, to: bad)) {
            XCTAssertEqual($0 as? TraceStoreError, .raggedScores(result: 0))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: bad))
        // Not HDF5 at all.
        let text = tempPath("not.h5")
        try "hello".write(toFile: text, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TraceStore.read(text))
        // Empty result list and an empty grid.
        var empty = Self.small()
        empty.scores = []
        empty.tokens = []
        let e = tempPath("empty.h5")
        try TraceStore.write([empty], prompt: "x", provenance: nil, to: e)
        let r = try TraceStore.read(e).results
        XCTAssertEqual(r.count, 1)
        XCTAssertEqual(r[0].scores.count, 0)
        XCTAssertEqual(r[0].tokens, [])
    }

    // MARK: JSON

    func testJSON() throws {
        var r = Self.small(metric: .logitDiff, foil: 9)
        r.corrupted = .infinity
        var noFoil = Self.small(kind: .resid)
        noFoil.subject = nil
        let dict = TraceStore.json([r, noFoil], prompt: "P & <q>", provenance: Self.provenance)
        XCTAssertTrue(JSONSerialization.isValidJSONObject(dict))
        let data = try JSONSerialization.data(withJSONObject: dict, options: [.sortedKeys])
        let back = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        XCTAssertEqual(back["prompt"] as? String, "P & <q>")
        XCTAssertEqual(back["format"] as? String, "scalpel-trace")
        let results = try XCTUnwrap(back["results"] as? [[String: Any]])
        XCTAssertEqual(results.count, 2)
        let first = results[0]
        XCTAssertEqual(first["name"] as? String, "mlp")
        XCTAssertEqual(first["metric"] as? String, "logit-diff")
        XCTAssertEqual(first["foil_id"] as? Int, 9)
        XCTAssertEqual(first["subject_first"] as? Int, 1)
        XCTAssertEqual(first["subject_last"] as? Int, 2)
        XCTAssertEqual(first["tokens"] as? [String], Self.tokens)
        XCTAssertTrue(first["corrupted"] is NSNull)
        let scores = try XCTUnwrap(first["scores"] as? [[Any]])
        XCTAssertEqual(scores.count, 6)
        XCTAssertTrue(scores[0][6] is NSNull)
        XCTAssertEqual(scores[2][3] as? Double, 0.9)
        XCTAssertTrue(results[1]["foil_id"] is NSNull)
        XCTAssertTrue(results[1]["subject_first"] is NSNull)
        XCTAssertEqual((back["model"] as? [String: Any])?["source_size"] as? Int, 98_000_000)
        let text = String(decoding: try TraceStore.jsonData([r], prompt: "p"), as: UTF8.self)
        XCTAssertTrue(text.contains("null"))
        XCTAssertFalse(text.lowercased().contains("nan"))
    }

    // MARK: Preview

    /// With SCALPEL_TRACE_PREVIEW=DIR, writes sample figures and a report there to look at.
    func testWritePreviewWhenAsked() throws {
        guard let dir = ProcessInfo.processInfo.environment["SCALPEL_TRACE_PREVIEW"] else {
            throw XCTSkip("set SCALPEL_TRACE_PREVIEW=DIR to write sample figures")
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let all = TraceKind.allCases.map { Self.realistic($0) }
        for r in all {
            try Heatmap.svg(r).write(toFile: "\(dir)/\(r.settings.kind.rawValue).svg", atomically: true, encoding: .utf8)
        }
        try Heatmap.svg(all[1], normalized: true).write(toFile: "\(dir)/mlp-normalized.svg", atomically: true, encoding: .utf8)
        try Heatmap.threePanel(Array(all.prefix(3))).write(toFile: "\(dir)/three.svg", atomically: true, encoding: .utf8)
        try Heatmap.svg(Self.small(metric: .logitDiff, foil: 7), foilText: " Rome")
            .write(toFile: "\(dir)/small.svg", atomically: true, encoding: .utf8)
        try Heatmap.svg(Self.small(kind: .attn, metric: .kl)).write(toFile: "\(dir)/small-kl.svg", atomically: true, encoding: .utf8)
        try TraceReport.html(all, prompt: all[0].tokens.joined(), provenance: Self.provenance)
            .write(toFile: "\(dir)/report.html", atomically: true, encoding: .utf8)
    }
}
