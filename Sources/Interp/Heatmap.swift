import Foundation

/// SVG heatmaps of causal traces in the style of ROME (Meng et al. 2022, figures 1–2).
///
/// Layout: one row per prompt token down the y axis (subject tokens marked with a trailing `*`,
/// or `head 0…H−1` for `.heads`), one column per layer across the x axis (ticks every 5 layers),
/// a sequential colour map per kind (resid: purples, mlp: greens, attn: reds, heads: blues) and a
/// colour bar labelled with the metric. Raw scores are scaled between the grid's minimum and
/// maximum; normalized scores between corrupted (0) and clean (1), clamped. The dark end of the
/// colour map always means "closer to the clean run": for raw KL (lower = closer) the map is
/// reversed. NaN cells are grey. Every cell is one `<rect>` with a `<title>` tooltip; nothing
/// else in the figure is a `<rect>`.
///
/// The output is a self-contained SVG (no scripts, fonts or external references, no XML
/// declaration) that can be saved as a `.svg` file or inlined into HTML.
public enum Heatmap {

    /// One trace as a ROME-style heatmap.
    /// - Parameters:
    ///   - title: the figure title (default: `defaultTitle(r)`, e.g.
    ///     "Impact of restoring MLP after corrupted input (window 10)").
    ///   - normalized: plot `r.normalized` (clean = 1, corrupted = 0) instead of raw scores.
    ///   - foilText: the foil token's text for the logit-difference label (`TraceResult` only
    ///     carries its id; without this the label shows "#id").
    public static func svg(_ r: TraceResult, title: String? = nil, normalized: Bool = false,
                           foilText: String? = nil) -> String {
        let panel = HeatmapPanel(r, normalized: normalized, heading: nil, rowLabels: true,
                                 targetGridWidth: 420, foilText: foilText)
        let title = title ?? defaultTitle(r)
        let titleW = Markup.textWidth(title, size: 14, bold: true)
        let pad = 12.0, top = 34.0
        let width = (max(panel.width + 2 * pad, titleW + 2 * pad)).rounded(.up)
        let height = (top + panel.height + pad).rounded(.up)
        let panelX = ((width - panel.width) / 2).rounded()
        // Centre the title over the grid when it fits, else over the figure.
        var titleX = panelX + panel.gridCenterX
        if titleX - titleW / 2 < pad || titleX + titleW / 2 > width - pad { titleX = width / 2 }
        var s = Markup.svgOpen(width: width, height: height)
        s += "<text x=\"\(Markup.num(titleX))\" y=\"22\" font-size=\"14\" font-weight=\"bold\" text-anchor=\"middle\">"
        s += Markup.escape(title) + "</text>\n"
        panel.render(into: &s, x: panelX, y: top)
        s += "</g>\n</svg>\n"
        return s
    }

    /// Several traces of one prompt side by side in one SVG, ROME's classic figure: residual
    /// state, MLP and attention (and heads, if given), in that order (stable for equal kinds).
    /// Each panel has its own colour bar; token labels are drawn once when panels share them.
    public static func threePanel(_ results: [TraceResult], title: String? = nil, normalized: Bool = false,
                                  foilText: String? = nil) -> String {
        let order = TraceKind.allCases
        let sorted = results.enumerated().sorted {
            let a = order.firstIndex(of: $0.element.settings.kind)!, b = order.firstIndex(of: $1.element.settings.kind)!
            return a != b ? a < b : $0.offset < $1.offset
        }.map(\.element)
        var panels: [HeatmapPanel] = []
        for (i, r) in sorted.enumerated() {
            let labels = i == 0 || rowLabels(r) != rowLabels(sorted[i - 1])
            panels.append(HeatmapPanel(r, normalized: normalized, heading: panelHeading(r), rowLabels: labels,
                                       targetGridWidth: 300, foilText: foilText))
        }
        let first = sorted.first
        let title = title ?? first.map { "Causal trace of \u{201C}\(displayAnswer($0))\u{201D}" } ?? "Causal trace"
        let subtitle = first.map { Markup.truncate(Markup.visible($0.tokens.joined()), 110) }
        let pad = 12.0, gap = 28.0
        let top = subtitle == nil ? 34.0 : 52.0
        let panelsW = panels.reduce(0) { $0 + $1.width } + gap * Double(max(panels.count - 1, 0))
        let titleW = max(Markup.textWidth(title, size: 14, bold: true), Markup.textWidth(subtitle ?? "", size: 11))
        let width = max(panelsW + 2 * pad, titleW + 2 * pad, 200).rounded(.up)
        let height = (top + (panels.map(\.height).max() ?? 20) + pad).rounded(.up)
        var s = Markup.svgOpen(width: width, height: height)
        s += "<text x=\"\(Markup.num(width / 2))\" y=\"22\" font-size=\"14\" font-weight=\"bold\" text-anchor=\"middle\">"
        s += Markup.escape(title) + "</text>\n"
        if let subtitle {
            s += "<text x=\"\(Markup.num(width / 2))\" y=\"40\" font-size=\"11\" fill=\"#555555\" text-anchor=\"middle\">"
            s += Markup.escape(subtitle) + "</text>\n"
        }
        var x = ((width - panelsW) / 2).rounded()
        for p in panels {
            p.render(into: &s, x: x, y: top)
            x += p.width + gap
        }
        if panels.isEmpty {
            s += "<text x=\"\(Markup.num(width / 2))\" y=\"\(Markup.num(top + 10))\" font-size=\"11\" text-anchor=\"middle\">no results</text>\n"
        }
        s += "</g>\n</svg>\n"
        return s
    }

    // MARK: Labels

    /// ROME-style title: "Impact of restoring MLP after corrupted input (window 10)".
    public static func defaultTitle(_ r: TraceResult) -> String {
        let s = r.settings
        let base = s.direction == .denoise
            ? "Impact of restoring \(componentName(s.kind)) after corrupted input"
            : "Impact of corrupting \(componentName(s.kind)) in the clean run"
        return base + windowSuffix(s) + (s.method == .attribution ? " [attribution estimate]" : "")
    }

    /// The x-axis label, e.g. "center of interval of 10 patched MLP layers".
    public static func xAxisLabel(_ r: TraceResult) -> String {
        let s = r.settings
        switch s.kind {
        case .resid: return "single patched layer"
        case .heads: return "layer of the patched head (all positions)"
        case .neurons: return "layer (sum over its MLP neurons)"
        case .mlp, .attn:
            let name = s.kind == .mlp ? "MLP" : "attention"
            return s.window > 1 ? "center of interval of \(s.window) patched \(name) layers" : "single patched \(name) layer"
        }
    }

    /// The colour bar's label: "p(Paris)", "logit diff (Paris − Rome)" or "KL(clean ‖ patched)".
    public static func metricLabel(_ r: TraceResult, foilText: String? = nil) -> String {
        switch r.settings.metric {
        case .prob: return "p(\(displayAnswer(r)))"
        case .logitDiff:
            let foil = foilText.map { displayToken($0, id: r.foil ?? -1) } ?? r.foil.map { "#\($0)" } ?? "foil"
            return "logit diff (\(displayAnswer(r)) \u{2212} \(foil))"
        case .kl: return "KL(clean \u{2016} patched)"
        }
    }

    /// The y-axis labels: visible token texts with the subject marked by `*`, or "head h".
    public static func rowLabels(_ r: TraceResult) -> [String] {
        let rows = r.scores.count
        if r.settings.kind == .heads { return (0..<rows).map { "head \($0)" } }
        return (0..<rows).map { i in
            let text = i < r.tokens.count ? Markup.truncate(Markup.visible(r.tokens[i]), 24) : "#\(i)"
            return (r.subject?.contains(i) ?? false) ? text + "*" : text
        }
    }

    /// The colour map of a kind as hex stops, light to dark (ColorBrewer's 9-class sequential
    /// schemes, as used by matplotlib's Purples/Greens/Reds/Blues).
    public static func colorStops(_ kind: TraceKind) -> [String] { ColorMap.of(kind).stops.map(ColorMap.hex) }

    // MARK: Internals

    static func componentName(_ k: TraceKind) -> String {
        switch k {
        case .resid: return "state"
        case .mlp: return "MLP"
        case .attn: return "Attn"
        case .heads: return "single attention heads"
        case .neurons: return "MLP neurons"
        }
    }

    static func windowSuffix(_ s: TraceSettings) -> String {
        (s.kind == .mlp || s.kind == .attn) && s.window > 1 ? " (window \(s.window))" : ""
    }

    static func panelHeading(_ r: TraceResult) -> String {
        let verb = r.settings.direction == .denoise ? "Restoring" : "Corrupting"
        let what = r.settings.kind == .heads ? "attention heads" : componentName(r.settings.kind)
        return "\(verb) \(what)\(windowSuffix(r.settings))"
    }

    static func displayAnswer(_ r: TraceResult) -> String { displayToken(r.answerText, id: r.answer) }

    /// A token's text for labels: visible escapes, trimmed, "#id" when nothing visible remains.
    static func displayToken(_ text: String, id: Int) -> String {
        let v = Markup.truncate(Markup.visible(text), 24)
        return v.isEmpty || v == "\u{2423}" ? "#\(id)" : v
    }
}

/// A sequential colour map: linear interpolation in sRGB between evenly spaced stops.
struct ColorMap {
    let name: String
    let stops: [(UInt8, UInt8, UInt8)]

    static func of(_ kind: TraceKind) -> ColorMap {
        switch kind {
        case .resid: return ColorMap(name: "purples", hex: ["fcfbfd", "efedf5", "dadaeb", "bcbddc", "9e9ac8",
                                                            "807dba", "6a51a3", "54278f", "3f007d"])
        case .mlp, .neurons: return ColorMap(name: "greens", hex: ["f7fcf5", "e5f5e0", "c7e9c0", "a1d99b", "74c476",
                                                         "41ab5d", "238b45", "006d2c", "00441b"])
        case .attn: return ColorMap(name: "reds", hex: ["fff5f0", "fee0d2", "fcbba1", "fc9272", "fb6a4a",
                                                        "ef3b2c", "cb181d", "a50f15", "67000d"])
        case .heads: return ColorMap(name: "blues", hex: ["f7fbff", "deebf7", "c6dbef", "9ecae1", "6baed6",
                                                          "4292c6", "2171b5", "08519c", "08306b"])
        }
    }

    init(name: String, hex: [String]) {
        self.name = name
        stops = hex.map { h in
            let v = UInt32(h, radix: 16)!
            return (UInt8(v >> 16), UInt8((v >> 8) & 0xff), UInt8(v & 0xff))
        }
    }

    static let nanColor = "#bdbdbd"

    static func hex(_ c: (UInt8, UInt8, UInt8)) -> String {
        let digits = Array("0123456789abcdef")
        var s = "#"
        for b in [c.0, c.1, c.2] { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
        return s
    }

    /// The colour at `t` ∈ [0, 1] (clamped; NaN gives the NaN grey).
    func color(_ t: Double) -> String {
        guard !t.isNaN else { return ColorMap.nanColor }
        let u = min(max(t, 0), 1) * Double(stops.count - 1)
        let i = min(Int(u), stops.count - 2), f = u - Double(i)
        let a = stops[i], b = stops[i + 1]
        func mix(_ x: UInt8, _ y: UInt8) -> UInt8 { UInt8((Double(x) + (Double(y) - Double(x)) * f).rounded()) }
        return ColorMap.hex((mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2)))
    }
}

/// One heatmap with its axes and colour bar, laid out at the origin.
struct HeatmapPanel {
    let r: TraceResult
    let normalized: Bool
    let heading: String?
    let labels: [String]
    let showLabels: Bool
    let values: [[Double]]
    let layers: Int
    let cmap: ColorMap
    /// Raw KL: lower is closer to clean, so the dark end goes to the minimum.
    let reversed: Bool
    let lo: Double, hi: Double
    let metricLabel: String
    let xLabel: String

    let cellW: Double, cellH = 18.0
    let gridLeft: Double, gridTop: Double, gridW: Double, gridH: Double
    let barX: Double, barH: Double
    let tickStep: Int
    let width: Double, height: Double

    static let labelSize = 11.0, tickSize = 10.0, barW = 12.0

    var gridCenterX: Double { gridLeft + gridW / 2 }

    init(_ r: TraceResult, normalized: Bool, heading: String?, rowLabels showLabels: Bool, targetGridWidth: Double,
         foilText: String?) {
        self.r = r; self.normalized = normalized; self.heading = heading; self.showLabels = showLabels
        values = normalized ? r.normalized : r.scores
        layers = values.map(\.count).max() ?? 0
        labels = Heatmap.rowLabels(r)
        cmap = ColorMap.of(r.settings.kind)
        reversed = r.settings.metric == .kl && !normalized
        if normalized {
            (lo, hi) = (0, 1)
        } else {
            let finite = values.joined().filter(\.isFinite)
            (lo, hi) = finite.isEmpty ? (0, 1) : (finite.min()!, finite.max()!)
        }
        metricLabel = Heatmap.metricLabel(r, foilText: foilText) + (normalized ? ", normalized" : "")
        xLabel = Heatmap.xAxisLabel(r)

        cellW = min(max((targetGridWidth / Double(max(layers, 1))).rounded(), 5), 24)
        gridW = cellW * Double(layers)
        gridH = cellH * Double(values.count)
        // Ticks every 5 layers, or every 10, 20, … when cells are narrow.
        var step = 5
        while Double(step) * cellW < 28 { step *= 2 }
        tickStep = step

        let labelW = showLabels ? (labels.map { Markup.textWidth($0, size: HeatmapPanel.labelSize) }.max() ?? 0) : 0
        let xLabelW = Markup.textWidth(xLabel, size: HeatmapPanel.labelSize)
        let headingW = heading.map { Markup.textWidth($0, size: 12, bold: true) } ?? 0
        // Left edge: row labels, or the centred x label / heading sticking out past the grid.
        var left = showLabels ? labelW + 10 : 4
        left = max(left, xLabelW / 2 - gridW / 2, headingW / 2 - gridW / 2)
        gridLeft = left.rounded(.up)
        gridTop = heading == nil ? 22 : 44
        barX = gridLeft + gridW + 14
        barH = max(gridH, 72)
        let tickLabels = HeatmapPanel.barTicks(lo: lo, hi: hi, normalized: normalized, tall: barH >= 108).map(\.1)
        let tickW = tickLabels.map { Markup.textWidth($0, size: HeatmapPanel.tickSize) }.max() ?? 0
        let barLabelW = Markup.textWidth(metricLabel, size: HeatmapPanel.labelSize)
        let right = max(barX + HeatmapPanel.barW + 5 + tickW, barX + barLabelW,
                        gridLeft + gridW / 2 + xLabelW / 2, gridLeft + gridW / 2 + headingW / 2) + 4
        width = right.rounded(.up)
        height = (gridTop + max(gridH + 40, barH + 8)).rounded(.up)
    }

    /// Colour-bar ticks as (value, label), bottom to top.
    static func barTicks(lo: Double, hi: Double, normalized: Bool, tall: Bool) -> [(Double, String)] {
        if normalized { return [(0, "0 corrupted")] + (tall ? [(0.5, "0.5")] : []) + [(1, "1 clean")] }
        if hi <= lo { return [(lo, Markup.short(lo))] }
        return [(lo, Markup.short(lo))] + (tall ? [((lo + hi) / 2, Markup.short((lo + hi) / 2))] : []) + [(hi, Markup.short(hi))]
    }

    /// Position of `v` on the colour scale, 0 = light end, 1 = dark end.
    func t(_ v: Double) -> Double {
        guard v.isFinite else { return v.isNaN ? .nan : (v > 0) != reversed ? 1 : 0 }
        let u = hi > lo ? (v - lo) / (hi - lo) : 0.5
        return reversed ? 1 - u : u
    }

    func render(into s: inout String, x: Double, y: Double) {
        let N = Markup.num
        s += "<g transform=\"translate(\(N(x)),\(N(y)))\">\n"
        if let heading {
            s += "<text x=\"\(N(gridCenterX))\" y=\"14\" font-size=\"12\" font-weight=\"bold\" text-anchor=\"middle\">"
            s += Markup.escape(heading) + "</text>\n"
        }
        // Cells.
        s += "<g shape-rendering=\"crispEdges\">\n"
        for (i, row) in values.enumerated() {
            for l in 0..<layers {
                let v = l < row.count ? row[l] : .nan
                let fill = cmap.color(t(v))
                var tip = "\(labels[i]) \u{00B7} layer \(l): \(Markup.precise(v))"
                if normalized, i < r.scores.count, l < r.scores[i].count { tip += " (raw \(Markup.precise(r.scores[i][l])))" }
                s += "<rect x=\"\(N(gridLeft + Double(l) * cellW))\" y=\"\(N(gridTop + Double(i) * cellH))\" "
                s += "width=\"\(N(cellW))\" height=\"\(N(cellH))\" fill=\"\(fill)\"><title>\(Markup.escape(tip))</title></rect>\n"
            }
        }
        s += "</g>\n"
        // Frame and ticks.
        let bottom = gridTop + gridH
        s += "<path d=\"M\(N(gridLeft)) \(N(gridTop))h\(N(gridW))v\(N(gridH))h\(N(-gridW))Z\" fill=\"none\" stroke=\"#333333\" stroke-width=\"0.8\"/>\n"
        var ticks = ""
        for l in stride(from: 0, to: layers, by: tickStep) { ticks += "M\(N(gridLeft + (Double(l) + 0.5) * cellW)) \(N(bottom))v4" }
        if showLabels { for i in values.indices { ticks += "M\(N(gridLeft)) \(N(gridTop + (Double(i) + 0.5) * cellH))h-4" } }
        if !ticks.isEmpty { s += "<path d=\"\(ticks)\" stroke=\"#333333\" stroke-width=\"0.8\"/>\n" }
        // Row labels.
        if showLabels {
            s += "<g font-size=\"\(N(HeatmapPanel.labelSize))\" text-anchor=\"end\">\n"
            for (i, label) in labels.enumerated() {
                s += "<text x=\"\(N(gridLeft - 6))\" y=\"\(N(gridTop + (Double(i) + 0.5) * cellH))\" dy=\"0.35em\">"
                s += Markup.escape(label) + "</text>\n"
            }
            s += "</g>\n"
        }
        // Layer tick labels and the x-axis label.
        s += "<g font-size=\"\(N(HeatmapPanel.tickSize))\" text-anchor=\"middle\">\n"
        for l in stride(from: 0, to: layers, by: tickStep) {
            s += "<text x=\"\(N(gridLeft + (Double(l) + 0.5) * cellW))\" y=\"\(N(bottom + 15))\">\(l)</text>\n"
        }
        s += "</g>\n"
        s += "<text x=\"\(N(gridCenterX))\" y=\"\(N(bottom + 32))\" font-size=\"\(N(HeatmapPanel.labelSize))\" text-anchor=\"middle\">"
        s += Markup.escape(xLabel) + "</text>\n"
        renderBar(into: &s)
        s += "</g>\n"
    }

    private func renderBar(into s: inout String) {
        let N = Markup.num
        let id = "scalpel-cmap-\(cmap.name)\(reversed ? "-r" : "")"
        // The gradient runs bottom (low values) to top (high values); identical ids always carry
        // identical gradients, so several figures inlined into one HTML page do not conflict.
        s += "<defs><linearGradient id=\"\(id)\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">"
        let n = cmap.stops.count
        for k in 0..<n {
            let f = Double(k) / Double(n - 1)
            s += "<stop offset=\"\(String(format: "%.4g", f))\" stop-color=\"\(cmap.color(reversed ? 1 - f : f))\"/>"
        }
        s += "</linearGradient></defs>\n"
        let top = gridTop, bw = HeatmapPanel.barW
        s += "<path d=\"M\(N(barX)) \(N(top))h\(N(bw))v\(N(barH))h\(N(-bw))Z\" fill=\"url(#\(id))\" stroke=\"#333333\" stroke-width=\"0.8\"/>\n"
        s += "<text x=\"\(N(barX))\" y=\"\(N(top - 8))\" font-size=\"\(N(HeatmapPanel.labelSize))\">\(Markup.escape(metricLabel))</text>\n"
        let ticks = HeatmapPanel.barTicks(lo: lo, hi: hi, normalized: normalized, tall: barH >= 108)
        let (a, b) = normalized ? (0.0, 1.0) : (lo, hi)
        var marks = ""
        var texts = ""
        for (v, label) in ticks {
            let f = b > a ? (v - a) / (b - a) : 0.5
            let y = top + barH * (1 - f)
            marks += "M\(N(barX + bw)) \(N(y))h3"
            texts += "<text x=\"\(N(barX + bw + 5))\" y=\"\(N(y))\" dy=\"0.35em\">\(Markup.escape(label))</text>\n"
        }
        s += "<path d=\"\(marks)\" stroke=\"#333333\" stroke-width=\"0.8\"/>\n"
        s += "<g font-size=\"\(N(HeatmapPanel.tickSize))\">\n\(texts)</g>\n"
    }
}

/// Text helpers shared by the SVG and HTML writers.
enum Markup {
    static func svgOpen(width: Double, height: Double) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"\(num(width))\" height=\"\(num(height))\" "
            + "viewBox=\"0 0 \(num(width)) \(num(height))\">\n"
            + "<path d=\"M0 0h\(num(width))v\(num(height))h\(num(-width))Z\" fill=\"#ffffff\"/>\n"
            + "<g font-family=\"'DejaVu Sans', Verdana, Arial, sans-serif\" fill=\"#222222\">\n"
    }

    /// Escapes text for XML/HTML content and attribute values. Characters XML 1.0 forbids even
    /// escaped (C0 controls other than tab/LF/CR, U+FFFE, U+FFFF) become U+FFFD.
    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for u in s.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\t", "\n", "\r": out.unicodeScalars.append(u)
            default:
                if u.value < 0x20 || u.value == 0xFFFE || u.value == 0xFFFF {
                    out += "\u{FFFD}"
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }

    /// A token's text made visible on one line: newline/tab/CR as `\n`, `\t`, `\r`, other control
    /// and format characters as `\u{…}`, outer whitespace trimmed, internal runs of spaces kept
    /// as one; a whitespace-only token becomes "␣" and an empty one "∅".
    static func visible(_ s: String) -> String {
        if s.isEmpty { return "\u{2205}" }
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                switch u.properties.generalCategory {
                case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .unassigned, .privateUse:
                    if u.properties.generalCategory == .format && u.value == 0x200D { out.unicodeScalars.append(u); continue }
                    out += "\\u{" + String(u.value, radix: 16) + "}"
                case .spaceSeparator: out += " "
                default: out.unicodeScalars.append(u)
                }
            }
        }
        let trimmed = out.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        return trimmed.isEmpty ? "\u{2423}" : trimmed
    }

    /// At most `n` characters, with "…" when cut.
    static func truncate(_ s: String, _ n: Int) -> String {
        s.count <= n ? s : String(s.prefix(n - 1)) + "\u{2026}"
    }

    /// Rough rendered width of `s` in a DejaVu-Sans-like font (for layout only).
    static func textWidth(_ s: String, size: Double, bold: Bool = false) -> Double {
        var em = 0.0
        for u in s.unicodeScalars {
            let v = u.value
            switch u {
            case "i", "l", "j", "!", "|", ".", ",", ":", ";", "'", "`": em += 0.3
            case "f", "t", "r", "(", ")", "[", "]", "{", "}", " ", "*", "\"", "-": em += 0.4
            case "m", "w", "M", "W", "@", "%": em += 0.9
            default:
                if u.properties.generalCategory == .nonspacingMark || u.properties.generalCategory == .enclosingMark || v == 0x200D {
                    continue
                } else if (0x1100...0x115F).contains(v) || (0x2E80...0xA4CF).contains(v) || (0xAC00...0xD7A3).contains(v)
                            || (0xF900...0xFAFF).contains(v) || (0xFE30...0xFE4F).contains(v) || (0xFF00...0xFF60).contains(v)
                            || (0x1F300...0x1FAFF).contains(v) || (0x20000...0x3FFFD).contains(v) {
                    em += 1.0
                } else if ("A"..."Z").contains(u) {
                    em += 0.7
                } else {
                    em += 0.62
                }
            }
        }
        return em * size * (bold ? 1.15 : 1)
    }

    /// A coordinate: at most two decimals, no trailing zeros.
    static func num(_ v: Double) -> String {
        let r = (v * 100).rounded() / 100
        if r == r.rounded() && abs(r) < 1e15 { return String(Int(r)) }
        var s = String(format: "%.2f", r)
        while s.hasSuffix("0") { s.removeLast() }
        return s
    }

    /// A value for axis labels: 3 significant digits, U+2212 for minus.
    static func short(_ v: Double) -> String { pretty(v, digits: 3) }

    /// A value for tooltips and tables: 4 significant digits.
    static func precise(_ v: Double) -> String { pretty(v, digits: 4) }

    static func pretty(_ v: Double, digits: Int) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "\u{221E}" : "\u{2212}\u{221E}" }
        if v == 0 { return "0" }
        let a = abs(v)
        var s = a >= 1e5 || a < 1e-3 ? String(format: "%.\(digits - 1)e", a) : String(format: "%.\(digits)g", a)
        if s.contains("e") {
            // 1.23e-05 → 1.23e−5
            let parts = s.split(separator: "e")
            var mant = String(parts[0])
            if mant.contains(".") { while mant.hasSuffix("0") { mant.removeLast() }; if mant.hasSuffix(".") { mant.removeLast() } }
            let exp = Int(parts[1])!
            s = mant + "e" + (exp < 0 ? "\u{2212}" : "") + String(abs(exp))
        }
        return (v < 0 ? "\u{2212}" : "") + s
    }
}
