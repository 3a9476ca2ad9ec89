import Foundation
import Llama

// Scalpel benchmarks: `swift run -c release scalpel-bench [forward|load] [--model PATH]`.
// Prints JSON figures; docs/benchmarks.md records them with the command and machine.
let args = CommandLine.arguments.dropFirst()
let what = args.first ?? "forward"
let modelPath = args.firstIndex(of: "--model").map { args[args.index(after: $0)] }

func emit(_ d: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: d, options: [.sortedKeys, .prettyPrinted])
    print(String(decoding: data, as: UTF8.self))
}

do {
    switch what {
    case "forward":
        let t0 = Date()
        let m = try ModelFile.open(modelPath)
        let load = Date().timeIntervalSince(t0)
        var r = try benchForward(model: m.model)
        r["model"] = m.path
        r["load_seconds"] = load
        emit(r)
    case "gemm":
        emit(["peak": sgemmPeak()].merging(benchGemmShapes(rows: Int(args.dropFirst().first ?? "320") ?? 320)) { a, _ in a })
    case "trace":
        emit(try benchTrace(try ModelFile.open(modelPath), naive: args.contains("--naive")))
    case "batch":
        // Profiling aid: the 32 × 10 batch only, repeated.
        let m = try ModelFile.open(modelPath)
        var rng = SeededRandom(seed: 1)
        let batch = (0..<32).map { _ in (0..<10).map { _ in Int(rng.next() % 49152) } }
        let t = try bestTime(repeats: 10) { _ = try m.model.forward(batch) }
        emit(["batch_32x10_seconds": t])
    case "study":
        func arg(_ k: String) -> String? { args.firstIndex(of: k).map { args[args.index(after: $0)] } }
        emit(try tracingStudy(try ModelFile.open(modelPath), knownPath: arg("--known") ?? "../shared/data/known_1000.json",
                              ioiPath: arg("--ioi") ?? "../shared/data/ioi/ioi_dual_path_attribution.json",
                              maxFacts: Int(arg("--facts") ?? "20") ?? 20, ioiPrompts: Int(arg("--ioi-prompts") ?? "20") ?? 20,
                              svgDir: arg("--svg-dir")))
    case "kernels":
        emit(benchKernels())
    case "load":
        let path = try modelPath ?? ModelFile.defaultPath()
        var times: [Double] = []
        for _ in 0..<3 { let t0 = Date(); _ = try ModelFile.open(path); times.append(Date().timeIntervalSince(t0)) }
        emit(["model": path, "load_seconds_best": times.min()!, "load_seconds_all": times])
    default:
        print("usage: scalpel-bench forward|load|gemm N|trace [--naive]|batch|study|kernels [--model PATH]")
        exit(2)
    }
} catch {
    FileHandle.standardError.write("error: \(error)\n".data(using: .utf8)!)
    exit(1)
}
