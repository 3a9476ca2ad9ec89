import Foundation
import Interp
import Llama

/// How to get key statistics when none are stored yet.
public struct StatisticsPlan: Sendable {
    /// Corpus files (text / JSONL); empty = text sampled from the model.
    public var corpusFiles: [String] = []
    public var sampling = CorpusSampler.SamplingSettings()
    /// Where statistics are read from and saved to (default: beside the model). A file given here that exists must
    /// hold the layer edited, unless `corpusFiles` are given (statistics over them are then added to it).
    public var path: String?
    public init(corpusFiles: [String] = [], sampling: CorpusSampler.SamplingSettings = .init(), path: String? = nil) {
        self.corpusFiles = corpusFiles; self.sampling = sampling; self.path = path
    }
}

/// One edit's before/after picture.
public struct EditOutcome: Sendable {
    public var request: EditRequest
    public var result: ROMEResult
    public var before: EditScores
    public var after: EditScores
    /// The top answer of each neighbourhood prompt before and after.
    public var neighborAnswersBefore: [String]
    public var neighborAnswersAfter: [String]
}

/// Everything an edit needs, prepared once per model: statistics per layer, context templates.
public final class EditSession {
    public let model: ModelFile
    public var plan: StatisticsPlan
    private var stats: [Int: KeyStatistics] = [:]
    private var templates: ContextTemplates?
    public var contextSeeds = ContextTemplates.defaultSeeds
    public var toolVersion = "scalpel"

    public init(model: ModelFile, plan: StatisticsPlan = StatisticsPlan()) {
        self.model = model; self.plan = plan
    }

    public var statsPath: String { plan.path ?? StatsStore.defaultPath(forModel: model.path) }
    public var modelHash: String { model.provenance.sourceSHA256 }

    /// Statistics of `layer`: from memory, the stats file, or collected now (and saved). Throws
    /// `statisticsNotFound` when the file was given explicitly (`plan.path`), holds other layers only, and no corpus
    /// was given: statistics of another layer are never used, and a file the user named is not extended with
    /// model-sampled statistics behind their back.
    public func statistics(layer: Int, log: (String) -> Void = { _ in },
                           progress: ((String, Int, Int) -> Void)? = nil) throws -> KeyStatistics {
        if let s = stats[layer] { return s }
        let path = statsPath
        if FileManager.default.fileExists(atPath: path) {
            let layers = try StatsStore.layers(path: path)
            if layers.contains(layer) {
                let s = try StatsStore.load(path: path, layer: layer, modelSHA256: modelHash, dimension: model.config.ffnDim)
                log("using key statistics of layer \(layer) from \(path) (\(s.count) tokens, \(s.corpusDescription))")
                stats[layer] = s
                return s
            }
            if plan.path != nil && plan.corpusFiles.isEmpty {
                throw EditingError.statisticsNotFound(path: path, layer: layer, available: layers)
            }
        }
        let corpus: TokenCorpus
        if plan.corpusFiles.isEmpty {
            log("sampling a corpus from the model (\(plan.sampling.texts) texts × \(plan.sampling.tokensPerText) tokens)")
            corpus = try CorpusSampler.sample(model: model.model, tokenizer: model.tokenizer, settings: plan.sampling) {
                progress?("sample", $0, $1)
            }
        } else {
            corpus = try CorpusSampler.fromFiles(plan.corpusFiles, tokenizer: model.tokenizer)
        }
        log("collecting key statistics of layer \(layer) over \(corpus.tokenCount) tokens")
        var options = CollectionOptions()
        options.toolVersion = toolVersion
        let s = try StatisticsCollector.collect(model: model.model, modelSHA256: modelHash, layer: layer, corpus: corpus,
                                                options: options) { progress?("stats", $0.tokensDone, $0.tokensTotal) }
        try StatsStore.save([s], to: path)
        log("saved to \(path)")
        stats[layer] = s
        return s
    }

    /// Context templates (sampled once per session, seeded).
    public func contexts() throws -> ContextTemplates {
        if let templates { return templates }
        let t = try ContextTemplates.sample(model: model.model, tokenizer: model.tokenizer, seeds: contextSeeds)
        templates = t
        return t
    }

    /// Computes and applies one edit, measuring before and after.
    public func edit(_ request: EditRequest, hparams: ROMEHyperParameters, log: (String) -> Void = { _ in },
                     progress: ((String, Int, Int) -> Void)? = nil) throws -> EditOutcome {
        let m = model.model, tok = model.tokenizer
        try request.validate(tokenizer: tok)
        try EditRequest.requireLayer(hparams.layer, layers: m.config.layers)
        let s = try statistics(layer: hparams.layer, log: log, progress: progress)
        // rank C ≤ tokens: fail now rather than after the optimization, in the Cholesky solve.
        guard s.count >= s.dimension else {
            throw EditingError.statisticsTooFewTokens(path: statsPath, layer: hparams.layer, tokens: s.count, dimension: s.dimension)
        }
        let neighborPrompts = request.neighborhood.map(\.prompt)
        let answersBefore = try EditEvaluator.topAnswers(model: m, tokenizer: tok, prompts: neighborPrompts)
        let before = try EditEvaluator.scores(model: m, tokenizer: tok, request: request, neighborAnswers: answersBefore)
        let rome = ROME(model: m, tokenizer: tok, contexts: try contexts())
        let result = try rome.compute(request, hparams: hparams, secondMoment: s.secondMoment) { step, _ in
            progress?("optimize", step + 1, hparams.steps)
        }
        ROME.apply(result, to: m)
        let after = try EditEvaluator.scores(model: m, tokenizer: tok, request: request, neighborAnswers: answersBefore)
        let answersAfter = try EditEvaluator.topAnswers(model: m, tokenizer: tok, prompts: neighborPrompts)
        return EditOutcome(request: request, result: result, before: before, after: after,
                           neighborAnswersBefore: answersBefore, neighborAnswersAfter: answersAfter)
    }
}
