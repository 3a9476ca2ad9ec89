import Foundation

/// A one-line progress bar on standard error, with rate and ETA; silent when `quiet` or stderr is not a terminal
/// (then it prints at most one line per 10%).
final class ProgressBar {
    let label: String
    let quiet: Bool
    let start = Date()
    let isTTY = isatty(2) != 0
    var lastDecile = -1
    var lastDraw = Date.distantPast

    init(label: String, quiet: Bool = false) { self.label = label; self.quiet = quiet }

    func update(_ done: Int, _ total: Int, unit: String = "") {
        guard !quiet, total > 0 else { return }
        let frac = Double(done) / Double(total)
        let elapsed = Date().timeIntervalSince(start)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        if isTTY {
            guard Date().timeIntervalSince(lastDraw) > 0.1 || done == total else { return }
            lastDraw = Date()
            let width = 30, filled = Int(frac * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let line = String(format: "\r%@ %@ %3.0f%% %d/%d %.1f%@/s ETA %.0fs ", label, bar, frac * 100, done, total, rate,
                              unit.isEmpty ? "" : " " + unit, eta)
            FileHandle.standardError.write(line.data(using: .utf8)!)
        } else {
            let decile = Int(frac * 10)
            guard decile > lastDecile else { return }
            lastDecile = decile
            FileHandle.standardError.write(String(format: "%@: %3.0f%% (%d/%d, %.1fs)\n", label, frac * 100, done, total,
                                                  elapsed).data(using: .utf8)!)
        }
    }

    func finish() {
        guard !quiet, isTTY else { return }
        FileHandle.standardError.write("\n".data(using: .utf8)!)
    }
}
