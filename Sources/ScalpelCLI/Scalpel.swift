import ArgumentParser

/// `scalpel`: locate where a language model stores a fact, and rewrite it there.
@main
struct Scalpel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scalpel",
        abstract: "Locate where a language model stores a fact, and rewrite it there.",
        version: ScalpelVersion.string,
        subcommands: [Fetch.self, Import.self, Inspect.self, Tokenize.self, Predict.self, Generate.self,
                      TraceCommand.self, LocateCommand.self, EditCommand.self,
                      LogCommand.self, RevertCommand.self, ReapplyCommand.self, AuditCommand.self,
                      EvalCommand.self, StatsCommand.self, ExportCommand.self,
                      DiffCommand.self])
}

enum ScalpelVersion {
    static let string = "0.1.0"
}
