import ArgumentParser
import Editing
import Foundation
import Llama

extension ExportDType: ExpressibleByArgument {}

/// `scalpel export`: write a model (typically an edited .h5 store) as GGUF or as a Hugging Face safetensors folder.
struct ExportCommand: ParsableCommand {
    enum Format: String, ExpressibleByArgument, CaseIterable { case gguf, safetensors }

    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model as a GGUF file or a Hugging Face safetensors folder (config.json, tokenizer.json).",
        discussion: """
            GGUF: one file, matrices in --dtype (norm vectors stay F32), all metadata including the tokenizer, \
            provenance under scalpel.*. safetensors: a folder with model.safetensors, config.json, \
            generation_config.json, tokenizer.json and tokenizer_config.json, loadable by Hugging Face transformers \
            and by `scalpel --model FOLDER`. Both are written under a temporary name and renamed into place.
            """)

    @OptionGroup var model: ModelOptions
    @Option(help: "Output format: gguf or safetensors.") var format: Format
    @Option(help: "Weight type: f32, f16 or bf16.") var dtype: ExportDType = .f32
    @Option(help: "The .gguf file or the safetensors folder to write.") var out: String
    @OptionGroup var lockOptions: LockOptions
    @OptionGroup var force: ForceOption
    @Flag(help: "Print JSON {format, dtype, path, tensors, seconds, bytes, files: [{path, bytes}]}.") var json = false

    func run() throws {
        // Never over the model itself (even with --force), nor over an existing file or folder without --force.
        let input = try model.input()
        let target = try OutputPath(out, force: force.force, inputs: [input]).path
        if format == .gguf && (out as NSString).pathExtension.lowercased() != "gguf" {
            note("note: \(out) does not end in .gguf")
        }
        let lock = try lockOptions.lock(target)   // one writer of the output at a time
        defer { lock.release() }
        let m = try ModelFile.open(input.path)
        let result: ExportResult
        switch format {
        case .gguf: result = try ModelExport.gguf(m, to: target, dtype: dtype, toolVersion: ScalpelVersion.string)
        case .safetensors: result = try ModelExport.safetensors(m, to: target, dtype: dtype, toolVersion: ScalpelVersion.string)
        }
        if json { return try printJSON(result.summary) }
        print("\(result.path) (\(format.rawValue), \(dtype.rawValue), \(result.tensors) tensors, "
              + "\(megabytes(result.bytes)), \(String(format: "%.1f", result.seconds)) s)")
        if result.files.count > 1 {
            for f in result.files { print("  \((f.path as NSString).lastPathComponent)  \(megabytes(f.bytes))") }
        }
    }

    private func megabytes(_ n: Int) -> String {
        n >= 1_000_000 ? String(format: "%.1f MB", Double(n) / 1e6) : String(format: "%.1f kB", Double(n) / 1e3)
    }
}
