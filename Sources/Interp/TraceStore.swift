import Foundation
import HDF5Store
import Llama

/// Errors reading or writing trace files.
public enum TraceStoreError: Error, CustomStringConvertible, Equatable {
    /// The file is HDF5 but not a Scalpel trace (root attribute `format` ≠ "scalpel-trace").
    case notATraceFile(path: String)
    /// Written by a newer Scalpel.
    case unsupportedVersion(path: String, version: Int)
    /// A result's score rows have different lengths.
    case raggedScores(result: Int)
    /// An attribute or dataset holds a value this version does not understand.
    case badValue(object: String, value: String)

    public var description: String {
        switch self {
        case let .notATraceFile(path): return "\(path) is not a Scalpel trace file"
        case let .unsupportedVersion(path, version):
            return "\(path) has trace format version \(version); this Scalpel reads up to \(TraceStore.formatVersion)"
        case let .raggedScores(result): return "result \(result): score rows have different lengths"
        case let .badValue(object, value): return "\(object): unexpected value \(value)"
        }
    }
}

/// Trace results on disk: HDF5 (round-trips) and a JSON-ready dictionary.
///
/// HDF5 layout (`format` = "scalpel-trace", `format_version` = 1):
///
///     /                      attrs format, format_version, prompt, created (ISO 8601), result_count
///     /model                 attrs source_file, source_size, source_sha256, quantization (JSON object
///                            of tensor type → count); only when provenance is given
///     /mlp, /resid, …        one group per result, named by kind; when kinds repeat, suffixed with
///                            the window (`mlp_w10`), then metric and direction, then a counter
///         scores             float64 [rows, layers], rows = positions (heads for kind "heads"), NaN kept
///         normalized         float64 [rows, layers], clean = 1, corrupted = 0 (derived; not read back)
///         tokens             variable-length UTF-8 strings, the prompt's token texts
///         attrs              index (order of results), kind, rows ("positions"/"heads"), hook_name, window,
///                            metric, direction, naive, answer_id, answer_text, foil_id (−1 = none),
///                            subject_first, subject_last (−1 = none), clean, corrupted, seconds,
///                            method ("exact" or "attribution"; absent = exact), graddrop (bool)
///         components         attribution only: float64 [k, 4] rows (layer, position, head or neuron, effect)
///         verified           attribution with verification: float64 [m, 5] rows (row, layer, estimate, exact,
///                            1 = top-ranked / 0 = random sample)
///
/// HDF5 strings cannot hold NUL, so a NUL character in the prompt or a token is stored as U+FFFD.
public enum TraceStore {
    public static let format = "scalpel-trace"
    public static let formatVersion = 1

    /// Writes `results` to `path` atomically (a temporary file renamed into place).
    public static func write(_ results: [TraceResult], prompt: String, provenance: ModelProvenance?,
                             to path: String) throws {
        for (i, r) in results.enumerated() where Set(r.scores.map(\.count)).count > 1 {
            throw TraceStoreError.raggedScores(result: i)
        }
        let names = groupNames(results)
        try HDF5File.createAtomically(at: path) { file in
            let root = file.root
            try root.setAttribute("format", format)
            try root.setAttribute("format_version", formatVersion)
            try root.setAttribute("prompt", noNUL(prompt))
            try root.setAttribute("created", ISO8601DateFormatter().string(from: Date()))
            try root.setAttribute("result_count", results.count)
            if let p = provenance {
                let g = try root.createGroup("model")
                try g.setAttribute("source_file", noNUL(p.sourceFile))
                try g.setAttribute("source_size", p.sourceSize)
                try g.setAttribute("source_sha256", p.sourceSHA256)
                try g.setAttribute("quantization", quantizationJSON(p.quantization))
            }
            for (i, (r, name)) in zip(results, names).enumerated() {
                let g = try root.createGroup(name)
                let rows = r.scores.count, layers = r.scores.first?.count ?? 0
                try g.write(Array(r.scores.joined()), shape: [rows, layers], to: "scores")
                try g.write(Array(r.normalized.joined()), shape: [rows, layers], to: "normalized")
                try g.writeStrings(r.tokens.map(noNUL), to: "tokens")
                let s = r.settings
                try g.setAttribute("index", i)
                try g.setAttribute("kind", s.kind.rawValue)
                try g.setAttribute("rows", s.kind == .heads ? "heads" : "positions")
                try g.setAttribute("hook_name", noNUL(r.hookName))
                try g.setAttribute("window", s.window)
                try g.setAttribute("metric", s.metric.rawValue)
                try g.setAttribute("direction", s.direction.rawValue)
                try g.setAttribute("naive", s.naive)
                try g.setAttribute("answer_id", r.answer)
                try g.setAttribute("answer_text", noNUL(r.answerText))
                try g.setAttribute("foil_id", r.foil ?? -1)
                try g.setAttribute("subject_first", r.subject?.lowerBound ?? -1)
                try g.setAttribute("subject_last", r.subject?.upperBound ?? -1)
                try g.setAttribute("clean", r.clean)
                try g.setAttribute("corrupted", r.corrupted)
                try g.setAttribute("seconds", r.seconds)
                try g.setAttribute("method", s.method.rawValue)
                try g.setAttribute("graddrop", s.gradDrop)
                if !r.components.isEmpty {
                    try g.write(r.components.flatMap { [Double($0.layer), Double($0.position), Double($0.index), $0.effect] },
                                shape: [r.components.count, 4], to: "components")
                }
                if !r.verified.isEmpty {
                    try g.write(r.verified.flatMap { [Double($0.row), Double($0.layer), $0.estimate, $0.exact, $0.topRanked ? 1 : 0] },
                                shape: [r.verified.count, 5], to: "verified")
                }
            }
        }
    }

    /// Reads a file written by `write`, results in their original order.
    public static func read(_ path: String) throws -> (prompt: String, results: [TraceResult]) {
        let file = try HDF5File(openingForReading: path)
        defer { try? file.close() }
        let root = try checkHeader(file)
        let prompt = try root.stringAttribute("prompt")
        var found: [(index: Int, name: String, result: TraceResult)] = []
        for name in try root.memberNames() where try root.kind(of: name) == .group {
            let g = try root.group(name)
            guard g.hasAttribute("kind") else { continue }   // "model" and anything unknown
            found.append((g.hasAttribute("index") ? try g.intAttribute("index") : Int.max, name, try readResult(g)))
        }
        found.sort { ($0.index, $0.name) < ($1.index, $1.name) }
        return (prompt, found.map(\.result))
    }

    /// The model provenance stored in a trace file, or nil when it has none.
    public static func readProvenance(_ path: String) throws -> ModelProvenance? {
        let file = try HDF5File(openingForReading: path)
        defer { try? file.close() }
        let root = try checkHeader(file)
        guard try root.kind(of: "model") == .group else { return nil }
        let g = try root.group("model")
        let qText = try g.stringAttribute("quantization")
        guard let q = (try? JSONSerialization.jsonObject(with: Data(qText.utf8))) as? [String: Int] else {
            throw TraceStoreError.badValue(object: "/model@quantization", value: qText)
        }
        return ModelProvenance(sourceFile: try g.stringAttribute("source_file"), sourceSize: try g.intAttribute("source_size"),
                               sourceSHA256: try g.stringAttribute("source_sha256"), quantization: q)
    }

    /// A `JSONSerialization`-ready dictionary: `format`, `format_version`, `prompt`, `model` (when
    /// provenance is given) and `results`, each with the HDF5 group's fields (`name`, `kind`,
    /// `hook_name`, …, `tokens`, `scores` and `normalized` as nested arrays). Missing values — no
    /// foil, no subject, NaN or infinite numbers — are `NSNull` (JSON null).
    public static func json(_ results: [TraceResult], prompt: String, provenance: ModelProvenance? = nil) -> [String: Any] {
        func num(_ v: Double) -> Any { v.isFinite ? v : NSNull() }
        let names = groupNames(results)
        var out: [String: Any] = ["format": format, "format_version": formatVersion, "prompt": prompt]
        if let p = provenance {
            out["model"] = ["source_file": p.sourceFile, "source_size": p.sourceSize, "source_sha256": p.sourceSHA256,
                            "quantization": p.quantization] as [String: Any]
        }
        out["results"] = zip(results, names).map { r, name -> [String: Any] in
            let s = r.settings
            return [
                "name": name, "kind": s.kind.rawValue, "rows": s.kind == .heads ? "heads" : "positions",
                "hook_name": r.hookName, "window": s.window, "metric": s.metric.rawValue,
                "direction": s.direction.rawValue, "naive": s.naive,
                "answer_id": r.answer, "answer_text": r.answerText,
                "foil_id": r.foil.map { $0 as Any } ?? NSNull(),
                "subject_first": r.subject.map { $0.lowerBound as Any } ?? NSNull(),
                "subject_last": r.subject.map { $0.upperBound as Any } ?? NSNull(),
                "tokens": r.tokens,
                "scores": r.scores.map { $0.map(num) },
                "normalized": r.normalized.map { $0.map(num) },
                "clean": num(r.clean), "corrupted": num(r.corrupted), "seconds": num(r.seconds),
                "method": s.method.rawValue, "estimate": s.method == .attribution, "graddrop": s.gradDrop,
                "components": r.components.map { ["layer": $0.layer, "position": $0.position, "index": $0.index,
                                                  "effect": num($0.effect)] as [String: Any] },
                "verified": r.verified.map { ["row": $0.row, "layer": $0.layer, "estimate": num($0.estimate),
                                              "exact": num($0.exact), "top_ranked": $0.topRanked] as [String: Any] },
            ]
        }
        return out
    }

    /// `json(…)` encoded as UTF-8 JSON with sorted keys.
    public static func jsonData(_ results: [TraceResult], prompt: String, provenance: ModelProvenance? = nil,
                                pretty: Bool = false) throws -> Data {
        try JSONSerialization.data(withJSONObject: json(results, prompt: prompt, provenance: provenance),
                                   options: pretty ? [.sortedKeys, .prettyPrinted] : [.sortedKeys])
    }

    /// Group names for `results`: the kind, disambiguated only where kinds repeat
    /// (`mlp_w10`, then `_prob`/`_logit_diff`/`_kl`, then `_denoise`/`_noise`, then `_2`, `_3`, …).
    public static func groupNames(_ results: [TraceResult]) -> [String] {
        func level(_ r: TraceResult, _ k: Int) -> String {
            let s = r.settings
            let parts = [s.kind.rawValue, "w\(s.window)", s.metric.rawValue.replacingOccurrences(of: "-", with: "_"),
                         s.direction.rawValue]
            return parts.prefix(k + 1).joined(separator: "_")
        }
        var names: [String] = []
        for r in results {
            var chosen: String?
            for k in 0..<4 {
                let n = level(r, k)
                if results.filter({ level($0, k) == n }).count == 1 { chosen = n; break }
            }
            names.append(chosen ?? level(r, 3))
        }
        // Identical settings: number the repeats in order.
        var seen: [String: Int] = [:]
        for i in names.indices {
            let base = names[i]
            seen[base, default: 0] += 1
            if seen[base]! > 1 {
                var k = seen[base]!
                while names.contains("\(base)_\(k)") { k += 1 }
                names[i] = "\(base)_\(k)"
            }
        }
        return names
    }

    // MARK: Internals

    static func noNUL(_ s: String) -> String {
        s.unicodeScalars.contains("\0") ? s.replacingOccurrences(of: "\0", with: "\u{FFFD}") : s
    }

    static func quantizationJSON(_ q: [String: Int]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: q, options: [.sortedKeys]), as: UTF8.self)
    }

    static func checkHeader(_ file: HDF5File) throws -> HDF5Group {
        let root = file.root
        guard root.hasAttribute("format"), (try? root.stringAttribute("format")) == format else {
            throw TraceStoreError.notATraceFile(path: file.path)
        }
        let version = try root.intAttribute("format_version")
        guard version <= formatVersion else { throw TraceStoreError.unsupportedVersion(path: file.path, version: version) }
        return root
    }

    static func readResult(_ g: HDF5Group) throws -> TraceResult {
        func parse<T: RawRepresentable>(_ name: String, _ type: T.Type) throws -> T where T.RawValue == String {
            let raw = try g.stringAttribute(name)
            guard let v = T(rawValue: raw) else { throw TraceStoreError.badValue(object: "\(g.path)@\(name)", value: raw) }
            return v
        }
        let settings = TraceSettings(kind: try parse("kind", TraceKind.self), window: try g.intAttribute("window"),
                                     metric: try parse("metric", MetricKind.self),
                                     direction: try parse("direction", PatchDirection.self),
                                     naive: try g.boolAttribute("naive"),
                                     method: g.hasAttribute("method") ? try parse("method", TraceMethod.self) : .exact,
                                     gradDrop: g.hasAttribute("graddrop") ? try g.boolAttribute("graddrop") : false)
        let (flat, shape) = try g.read("scores", as: Double.self)
        guard shape.count == 2 else {
            throw TraceStoreError.badValue(object: "\(g.path)/scores", value: "shape \(shape)")
        }
        let layers = shape[1]
        let scores = (0..<shape[0]).map { Array(flat[($0 * layers)..<(($0 + 1) * layers)]) }
        let first = try g.intAttribute("subject_first"), last = try g.intAttribute("subject_last")
        var subject: ClosedRange<Int>?
        if first >= 0 || last >= 0 {
            guard first >= 0, last >= first else {
                throw TraceStoreError.badValue(object: "\(g.path)@subject_first/last", value: "\(first), \(last)")
            }
            subject = first...last
        }
        let foil = try g.intAttribute("foil_id")
        var r = TraceResult(settings: settings, hookName: try g.stringAttribute("hook_name"),
                           tokens: try g.readStrings("tokens"), subject: subject,
                           answer: try g.intAttribute("answer_id"), answerText: try g.stringAttribute("answer_text"),
                           foil: foil >= 0 ? foil : nil, scores: scores,
                           clean: try g.doubleAttribute("clean"), corrupted: try g.doubleAttribute("corrupted"),
                           seconds: try g.doubleAttribute("seconds"))
        if try g.kind(of: "components") == .dataset {
            let (v, shape) = try g.read("components", as: Double.self)
            guard shape.count == 2, shape[1] == 4 else { throw TraceStoreError.badValue(object: "\(g.path)/components", value: "shape \(shape)") }
            r.components = (0..<shape[0]).map { i in
                ComponentEstimate(layer: Int(v[4 * i]), position: Int(v[4 * i + 1]), index: Int(v[4 * i + 2]), effect: v[4 * i + 3])
            }
        }
        if try g.kind(of: "verified") == .dataset {
            let (v, shape) = try g.read("verified", as: Double.self)
            guard shape.count == 2, shape[1] == 5 else { throw TraceStoreError.badValue(object: "\(g.path)/verified", value: "shape \(shape)") }
            r.verified = (0..<shape[0]).map { i in
                VerifiedCell(row: Int(v[5 * i]), layer: Int(v[5 * i + 1]), estimate: v[5 * i + 2], exact: v[5 * i + 3],
                             topRanked: v[5 * i + 4] != 0)
            }
        }
        return r
    }
}
