import ArgumentParser
import Foundation
import Editing
import Llama

/// A command-line option outside its domain. Thrown from `validate()`, before any model is loaded; printed as one
/// line ("Error: --steps must be at least 1, got 0"), without the usage text a `ValidationError` adds.
struct OptionError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// Throws `OptionError(message)` unless `condition`.
func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw OptionError(message()) }
}

/// Checks an integer option: `name` must be in `range`.
func requireInt(_ value: Int, _ name: String, in range: ClosedRange<Int>) throws {
    try require(range.contains(value), "\(name) must be \(describe(range)), got \(value)")
}

/// Checks a floating-point option: finite and in `range`; `open` excludes the lower bound.
func requireReal<T: BinaryFloatingPoint>(_ value: T, _ name: String, atLeast lower: T, open: Bool = false, atMost upper: T? = nil) throws {
    let text = "\(value)"
    try require(value.isFinite, "\(name) must be a finite number, got \(text)")
    try require(open ? value > lower : value >= lower, "\(name) must be \(open ? ">" : "≥") \(lower), got \(text)")
    if let upper { try require(value <= upper, "\(name) must be ≤ \(upper), got \(text)") }
}

private func describe(_ r: ClosedRange<Int>) -> String {
    if r.upperBound == Int.max { return r.lowerBound == 1 ? "at least 1" : "≥ \(r.lowerBound)" }
    return "between \(r.lowerBound) and \(r.upperBound)"
}

/// Largest step counts, sample counts and text counts accepted (far above any useful value; they bound the run time
/// a typo can cost).
enum OptionLimits {
    static let steps = 10_000
    static let samples = 10_000
    static let texts = 10_000_000
    static let tokens = 1_000_000
}

/// `--force`, shared by every command that writes a file.
struct ForceOption: ParsableArguments {
    @Flag(help: "Replace an existing output file (never the command's own input).") var force = false
}

extension ModelOptions {
    /// The model's path (the default model when not given) with symbolic links resolved: commands that change a
    /// store in place write through a link to its target, never replacing the link.
    func input() throws -> InputPath { InputPath(try model ?? ModelFile.defaultPath()) }
}

extension ROMEOptions {
    /// Checks `--steps` and `--bare-prompt-share` (before any model is loaded).
    func validate() throws {
        try requireInt(steps, "--steps", in: 1...OptionLimits.steps)
        _ = try hyperParameters(layer: 0)
    }
}
