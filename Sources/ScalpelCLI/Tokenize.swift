import ArgumentParser
import Llama

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Split text into the model's tokens.")
    @OptionGroup var model: ModelOptions
    @Flag(help: "Recognize special tokens such as <|im_start|> in the text.") var special = false
    @Flag(help: "Print JSON {\"ids\": [...], \"tokens\": [...]}.") var json = false
    @Argument(help: "The text.") var text: String

    func run() throws {
        let tok = try model.open().tokenizer
        let ids = tok.encode(text, parseSpecial: special)
        let tokens = ids.map { tok.tokenText($0) }
        if json { return try printJSON(["ids": ids, "tokens": tokens]) }
        for (id, t) in zip(ids, tokens) { print(String(format: "%6d  ", id) + show(t)) }
    }
}
