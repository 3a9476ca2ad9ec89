import Foundation
import Llama

/// A self-contained HTML report of one prompt's traces: the prompt, answer, clean and corrupted
/// scores, settings, every heatmap inline, the top-5 cells of each trace, and (when an MLP trace
/// is present) the peak MLP layer at the last subject token — ROME's candidate layer for an edit.
///
/// The page has no scripts or external resources, and is also well-formed XML (polyglot
/// XHTML), so it can be checked with any XML parser.
public enum TraceReport {

    /// - Parameters:
    ///   - results: the traces (any kinds; shown in resid, mlp, attn, heads order).
    ///   - prompt: the clean prompt.
    ///   - provenance: the model's source file and quantization, when known.
    ///   - foilText: the logit-difference foil's text (results only carry its id).
    public static func html(_ results: [TraceResult], prompt: String, provenance: ModelProvenance?,
                            foilText: String? = nil) -> String {
        let E = Markup.escape
        let first = results.first
        var h = """
        <!DOCTYPE html>
        <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
        <head>
        <meta charset="utf-8"/>
        <title>Causal trace: \(E(Markup.truncate(Markup.visible(prompt), 80)))</title>
        <style>
        body { font-family: 'DejaVu Sans', Verdana, Arial, sans-serif; color: #222; margin: 2em auto; max-width: 72em; padding: 0 1em; }
        h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
        .prompt { font-family: 'DejaVu Sans Mono', monospace; background: #f6f6f6; padding: 0.6em 0.8em; white-space: pre-wrap; }
        table { border-collapse: collapse; margin: 0.6em 0; }
        th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
        th { background: #f3f3f3; font-weight: 600; }
        td.num { text-align: right; font-variant-numeric: tabular-nums; }
        .tok { font-family: 'DejaVu Sans Mono', monospace; }
        .figure { overflow-x: auto; margin: 1em 0; }
        .note { color: #666; font-size: 0.9em; }
        </style>
        </head>
        <body>
        <h1>Causal trace</h1>
        <p class="prompt">\(E(prompt))</p>

        """
        // Summary.
        h += "<table>\n"
        if let r = first {
            h += row("Answer", "<span class=\"tok\">\(E(quoted(r.answerText)))</span> (token \(r.answer))")
            if let foil = r.foil {
                h += row("Foil", (foilText.map { "<span class=\"tok\">\(E(quoted($0)))</span> " } ?? "") + "(token \(foil))")
            }
            if let subj = r.subject {
                let text = subj.filter { $0 < r.tokens.count }.map { r.tokens[$0] }.joined()
                h += row("Subject", "<span class=\"tok\">\(E(quoted(text)))</span> (tokens \(subj.lowerBound)–\(subj.upperBound))")
            } else {
                h += row("Subject", "none")
            }
            let toks = r.tokens.enumerated().map { i, t in
                let mark = (r.subject?.contains(i) ?? false) ? "*" : ""
                return "<span class=\"tok\">\(i):\(E(Markup.visible(t)))\(mark)</span>"
            }.joined(separator: " ")
            h += row("Tokens", toks)
        }
        if let p = provenance {
            h += row("Model", "<span class=\"tok\">\(E(p.sourceFile))</span>, \(p.sourceSize) bytes")
            if !p.sourceSHA256.isEmpty { h += row("SHA-256", "<span class=\"tok\">\(E(p.sourceSHA256))</span>") }
            if !p.quantization.isEmpty {
                let q = p.quantization.sorted { $0.key < $1.key }.map { "\(E($0.key)) × \($0.value)" }.joined(separator: ", ")
                h += row("Tensor types", q)
            }
        }
        h += "</table>\n"
        if results.isEmpty { h += "<p>No traces.</p>\n" }

        // Peak MLP layer at the last subject token.
        let mlps = results.filter { $0.settings.kind == .mlp }
        if !mlps.isEmpty {
            h += "<h2>Peak MLP layer</h2>\n"
            for r in mlps {
                h += "<p>" + peakMLPSentence(r, foilText: foilText) + "</p>\n"
            }
        }

        // One section per trace.
        let order = TraceKind.allCases
        let sorted = results.enumerated().sorted {
            let a = order.firstIndex(of: $0.element.settings.kind)!, b = order.firstIndex(of: $1.element.settings.kind)!
            return a != b ? a < b : $0.offset < $1.offset
        }.map(\.element)
        for r in sorted {
            let s = r.settings
            h += "<h2>\(E(Heatmap.defaultTitle(r)))</h2>\n<table>\n"
            h += row("Metric", E(Heatmap.metricLabel(r, foilText: foilText)) + " (\(s.metric.rawValue))")
            h += row("Clean", "<span class=\"tok\">\(E(Markup.precise(r.clean)))</span>")
            h += row("Corrupted", "<span class=\"tok\">\(E(Markup.precise(r.corrupted)))</span>")
            h += row("Settings", "kind \(s.kind.rawValue), hook <span class=\"tok\">\(E(r.hookName))</span>, "
                     + "window \(s.window), direction \(s.direction.rawValue)\(s.naive ? ", naive" : "")")
            h += row("Time", String(format: "%.2f s", r.seconds))
            h += "</table>\n"
            h += "<div class=\"figure\">\n" + Heatmap.svg(r, foilText: foilText) + "</div>\n"
            h += topCellsTable(r)
        }
        h += "<p class=\"note\">Generated by Scalpel on \(E(ISO8601DateFormatter().string(from: Date()))).</p>\n"
        h += "</body>\n</html>\n"
        return h
    }

    /// The `count` cells with the largest effect, best first: closest to the clean run when
    /// denoising, most damaging when noising (NaN cells skipped).
    public static func topCells(_ r: TraceResult, count: Int = 5) -> [(row: Int, layer: Int, score: Double)] {
        let sign = effectSign(r)
        var cells: [(row: Int, layer: Int, score: Double)] = []
        for (i, row) in r.scores.enumerated() {
            for (l, v) in row.enumerated() where !v.isNaN { cells.append((i, l, v)) }
        }
        cells.sort { a, b in
            let x = sign * a.score, y = sign * b.score
            return x != y ? x > y : (a.row, a.layer) < (b.row, b.layer)
        }
        return Array(cells.prefix(count))
    }

    /// The MLP layer with the largest effect at the last subject token, or nil without a subject.
    public static func peakMLPLayer(_ r: TraceResult) -> (layer: Int, score: Double)? {
        guard let subj = r.subject, subj.upperBound < r.scores.count else { return nil }
        let sign = effectSign(r)
        var best: (layer: Int, score: Double)?
        for (l, v) in r.scores[subj.upperBound].enumerated() where !v.isNaN {
            if best == nil || sign * v > sign * best!.score { best = (l, v) }
        }
        return best
    }

    // MARK: Internals

    /// +1 when a larger raw score is a larger effect, −1 otherwise (KL: lower is closer to
    /// clean; noising: lower is more damaging).
    static func effectSign(_ r: TraceResult) -> Double {
        (r.settings.metric == .kl ? -1 : 1) * (r.settings.direction == .denoise ? 1 : -1)
    }

    static func row(_ key: String, _ valueHTML: String) -> String {
        "<tr><th>\(Markup.escape(key))</th><td>\(valueHTML)</td></tr>\n"
    }

    /// A token text in quotes with control characters made visible (spaces kept).
    static func quoted(_ s: String) -> String {
        var out = "\u{201C}"
        for u in s.unicodeScalars {
            switch u {
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if u.properties.generalCategory == .control { out += "\\u{" + String(u.value, radix: 16) + "}" }
                else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\u{201D}"
    }

    static func rowName(_ r: TraceResult, _ i: Int) -> String {
        Heatmap.rowLabels(r)[i] + (r.settings.kind == .heads ? "" : " (\(i))")
    }

    static func topCellsTable(_ r: TraceResult) -> String {
        let E = Markup.escape
        let top = topCells(r)
        guard !top.isEmpty else { return "<p class=\"note\">No finite cells.</p>\n" }
        let what = r.settings.direction == .denoise ? "closest to the clean run" : "most damaging"
        let rowHead = r.settings.kind == .heads ? "Head" : "Token"
        var h = "<table>\n<caption style=\"text-align:left\">Top \(top.count) cells (\(what))</caption>\n"
        h += "<tr><th>#</th><th>\(rowHead)</th><th>Layer</th><th>Score</th><th>Normalized</th></tr>\n"
        for (k, c) in top.enumerated() {
            let n = Metric.normalize(c.score, clean: r.clean, corrupted: r.corrupted)
            h += "<tr><td class=\"num\">\(k + 1)</td><td class=\"tok\">\(E(rowName(r, c.row)))</td>"
            h += "<td class=\"num\">\(c.layer)</td><td class=\"num\">\(E(Markup.precise(c.score)))</td>"
            h += "<td class=\"num\">\(E(Markup.precise(n)))</td></tr>\n"
        }
        return h + "</table>\n"
    }

    static func peakMLPSentence(_ r: TraceResult, foilText: String?) -> String {
        let E = Markup.escape
        let label = "MLP" + Heatmap.windowSuffix(r.settings)
        guard let subj = r.subject else { return "\(E(label)): no subject, so no last subject token." }
        guard let peak = peakMLPLayer(r) else { return "\(E(label)): no finite scores at the last subject token." }
        let tok = subj.upperBound < r.tokens.count ? Markup.visible(r.tokens[subj.upperBound]) : "#\(subj.upperBound)"
        let n = Metric.normalize(peak.score, clean: r.clean, corrupted: r.corrupted)
        let centred = r.settings.window > 1 ? " (centre of a \(r.settings.window)-layer window)" : ""
        return "\(E(label)), \(E(r.settings.direction.rawValue)): at the last subject token "
            + "<span class=\"tok\">\(E(tok))*</span> (position \(subj.upperBound)) the largest effect is at "
            + "<strong>layer \(peak.layer)</strong>\(E(centred)): \(E(Heatmap.metricLabel(r, foilText: foilText))) = \(E(Markup.precise(peak.score))) "
            + "(normalized \(E(Markup.precise(n))); clean \(E(Markup.precise(r.clean))), corrupted \(E(Markup.precise(r.corrupted))))."
    }
}
