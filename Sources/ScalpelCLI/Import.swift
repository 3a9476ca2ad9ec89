import ArgumentParser
import Editing
import Foundation
import Editing
import Llama

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import a GGUF checkpoint into a Scalpel HDF5 model store (float32 weights, tokenizer, provenance).")
    @Argument(help: "The .gguf file.") var gguf: String
    @Option(help: "The .h5 store to write (default: beside the GGUF, same name).") var out: String?
    @OptionGroup var force: ForceOption
    @Flag(help: "Print JSON {store, seconds, bytes}.") var json = false
    @OptionGroup var lockOptions: LockOptions

    func run() throws {
        // Never over the GGUF itself (even with --force), nor over an existing file without --force.
        let given = out ?? ((gguf as NSString).deletingPathExtension + ".h5")
        let target = try OutputPath(given, force: force.force, inputs: [InputPath(gguf)]).path
        let t0 = Date()
        let lock = try lockOptions.lock(target)   // no edit of a store being replaced may run meanwhile
        defer { lock.release() }
        try Import.importModel(gguf, to: target, quiet: json)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: target)[.size] as? Int) ?? 0
        if json {
            try printJSON(["store": target, "seconds": Date().timeIntervalSince(t0), "bytes": bytes])
        } else {
            print("\(target) (\(bytes / 1_000_000) MB, \(String(format: "%.1f", Date().timeIntervalSince(t0))) s)")
        }
    }

    static func importModel(_ gguf: String, to out: String, quiet: Bool) throws {
        let bar = ProgressBar(label: "import", quiet: quiet)
        try ModelStore.importGGUF(gguf, to: out, toolVersion: ScalpelVersion.string) { done, total in bar.update(done, total) }
        bar.finish()
    }
}
