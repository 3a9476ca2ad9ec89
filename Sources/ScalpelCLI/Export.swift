import ArgumentParser
import Editing
import Foundation
import Llama

extension ExportDType: ExpressibleByArgument {}
extension EditedTensorDType: ExpressibleByArgument {}

/// `scalpel export`: write a model (typically an edited .h5 store) as GGUF or as a Hugging Face safetensors folder.
struct ExportCommand: ParsableCommand {
    enum Format: String, ExpressibleByArgument, CaseIterable { case gguf, safetensors }
    /// `--dtype`: a plain storage type, or the source checkpoint's own quantization.
    enum DType: String, ExpressibleByArgument, CaseIterable { case source, f32, f16, bf16 }

    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model as a GGUF file or a Hugging Face safetensors folder (config.json, tokenizer.json).",
        discussion: """
            GGUF: one file, all metadata including the tokenizer, provenance under scalpel.*. With --dtype source \
            (the default for a model from a GGUF when that file is found) every tensor whose values equal the source \
            checkpoint's is copied block for block (Q4_1, Q4_K, Q6_K, Q8_0, …) and the edited ones are written as \
            --edited-dtype; the source is --source, the model's own .gguf, or the file the store's provenance names, \
            beside the store or in the weights folder, and must match the recorded SHA-256. When no file of that name \
            is found and --dtype was not given, the export is f32 (with a note). --dtype f32/f16/bf16 writes every \
            matrix in that type (norm vectors stay F32). safetensors: a folder with model.safetensors, config.json, \
            generation_config.json, tokenizer.json and tokenizer_config.json, loadable by Hugging Face transformers \
            and by `scalpel --model FOLDER`. Both are written under a temporary name and renamed into place. \
            Afterwards the behaviour checks of every applied edit (as `scalpel audit` runs them) are re-run on the \
            exported file, loaded back; an edit that no longer holds makes the command fail (the file stays).
            """)

    @OptionGroup var model: ModelOptions
    @Option(help: "Output format: gguf or safetensors.") var format: Format
    @Option(help: "Weight type: source (GGUF only: the source checkpoint's own blocks for unedited tensors), f32, f16 or bf16. Default: source for a GGUF-sourced model whose source file is found, else f32.")
    var dtype: DType?
    @Option(help: "With --dtype source: type of the tensors whose values differ from the source (f16, q8_0 or f32).")
    var editedDtype: EditedTensorDType = .f16
    @Option(help: "With --dtype source: the source GGUF (default: the model's own .gguf, or the store's provenance source_file beside the store or in the weights folder).")
    var source: String?
    @Flag(help: "Do not re-run the edits' behaviour checks on the exported file.") var noCheck = false
    @Option(help: "The .gguf file or the safetensors folder to write.") var out: String
    @OptionGroup var lockOptions: LockOptions
    @OptionGroup var force: ForceOption
    @Flag(help: "Print JSON {format, dtype, path, tensors, seconds, bytes, files: [{path, bytes}], source?, edits: [{id, verdict, p_new_before, p_new_after, …}]}.")
    var json = false

    func validate() throws {
        if format == .safetensors && dtype == .source { throw ValidationError("--dtype source is for --format gguf") }
        if format == .safetensors && source != nil { throw ValidationError("--source is for --format gguf --dtype source") }
        if let dtype, dtype != .source, source != nil { throw ValidationError("--source is for --dtype source, not \(dtype.rawValue)") }
    }

    func run() throws {
        // Never over the model itself (even with --force), nor over an existing file or folder without --force.
        let input = try model.input()
        let target = try OutputPath(out, force: force.force, inputs: [input] + [source].compactMap { $0 }.map(InputPath.init)).path
        if format == .gguf && (out as NSString).pathExtension.lowercased() != "gguf" {
            note("note: \(out) does not end in .gguf")
        }
        let lock = try lockOptions.lock(target)   // one writer of the output at a time
        defer { lock.release() }
        let m = try ModelFile.open(input.path)
        var plain = ExportDType(rawValue: dtype?.rawValue ?? "f32") ?? .f32
        var checkpoint: SourceCheckpoint?
        if format == .gguf && (dtype == .source || (dtype == nil && (source != nil || SourceCheckpoint.isGGUFSourced(m)))) {
            checkpoint = try SourceCheckpoint.locate(for: m, explicit: source, required: dtype != nil || source != nil)
            if checkpoint == nil {
                note("note: source checkpoint \(m.provenance.sourceFile) not found (looked for "
                     + SourceCheckpoint.candidates(for: m).joined(separator: ", ") + "); writing f32 (--source FILE keeps its quantization)")
                plain = .f32
            }
        }
        let result: ExportResult
        if let checkpoint {
            result = try ModelExport.ggufKeepingSource(m, source: checkpoint, to: target, edited: editedDtype, toolVersion: ScalpelVersion.string)
        } else if format == .gguf {
            result = try ModelExport.gguf(m, to: target, dtype: plain, toolVersion: ScalpelVersion.string)
        } else {
            result = try ModelExport.safetensors(m, to: target, dtype: plain, toolVersion: ScalpelVersion.string)
        }
        var checks: [EditSurvival] = []
        let entries = noCheck ? [] : try ExportCheck.appliedEntries(of: m)
        if !entries.isEmpty {
            note("checking \(entries.count) edit\(entries.count == 1 ? "" : "s") on the exported file")
            checks = try ExportCheck.survival(of: entries, before: m, after: try ModelFile.open(result.path))
        }
        if json {
            var s = result.summary
            s["edits"] = checks.map(\.summary)
            try printJSON(s)
        } else {
            print("\(result.path) (\(format.rawValue), \(result.dtype), \(result.tensors) tensors, "
                  + "\(megabytes(result.bytes)), \(String(format: "%.1f", result.seconds)) s)")
            if result.files.count > 1 {
                for f in result.files { print("  \((f.path as NSString).lastPathComponent)  \(megabytes(f.bytes))") }
            }
            if let d = result.source {
                let copied = d.copied.sorted { $0.value > $1.value }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
                print("  copied bit for bit from \((d.sourcePath as NSString).lastPathComponent): \(copied)")
                if !d.edited.isEmpty { print("  re-encoded as \(d.editedDType.rawValue.uppercased()): \(d.edited.joined(separator: ", "))") }
            }
            for c in checks { print("  " + line(c)) }
        }
        let lost = checks.filter { $0.verdict == "lost" }
        if !lost.isEmpty {
            throw ExportError.editsLost(path: result.path, ids: lost.map(\.id),
                                        detail: lost.map { $0.failuresAfter.first ?? "" }.joined(separator: "; "))
        }
    }

    private func line(_ c: EditSurvival) -> String {
        var s = "\(c.id) \(c.subject): \(c.change)  \(c.verdict)  p(new) " + String(format: "%.3f → %.3f", c.pNewBefore, c.pNewAfter)
        if let b = c.pTrueBefore, let a = c.pTrueAfter { s += ", p(true) " + String(format: "%.3f → %.3f", b, a) }
        if !c.failuresAfter.isEmpty { s += "  (" + c.failuresAfter.joined(separator: "; ") + ")" }
        return s
    }

    private func megabytes(_ n: Int) -> String {
        n >= 1_000_000 ? String(format: "%.1f MB", Double(n) / 1e6) : String(format: "%.1f kB", Double(n) / 1e3)
    }
}
