import ArgumentParser
import Foundation
import Llama

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the most likely next tokens after a prompt.")
    @OptionGroup var model: ModelOptions
    @Option(parsing: .unconditional, help: "How many candidates to show.") var top = 10
    @Flag(help: "Print JSON {prompt, ids, top: [{id, token, logit, prob}], logsumexp}.") var json = false
    @Argument(help: "The prompt.") var prompt: String

    /// Options are checked before anything is loaded.
    func validate() throws {
        try requirePrompt(prompt)
        try requireInt(top, "--top", in: 1...Int.max)
    }

    func run() throws {
        let m = try model.open()
        let ids = m.tokenizer.encode(prompt)
        let logits = try m.model.forward([ids]).row(0)
        let lse = LogitMath.logSumExp(logits)
        let best = LogitMath.topK(logits, min(top, logits.count))
        let rows: [[String: Any]] = best.map {
            ["id": $0, "token": m.tokenizer.tokenText($0), "logit": Double(logits[$0]), "prob": Double(exp(logits[$0] - lse))]
        }
        if json { return try printJSON(["prompt": prompt, "ids": ids, "top": rows, "logsumexp": Double(lse)]) }
        print("prompt: \(show(prompt)) (\(ids.count) tokens)")
        for r in rows {
            print(String(format: "%7.4f  %8.3f  %6d  ", r["prob"] as! Double, r["logit"] as! Double, r["id"] as! Int)
                  + show(r["token"] as! String))
        }
    }
}
