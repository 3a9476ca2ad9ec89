// swift-tools-version:6.0
import PackageDescription

/// Scalpel: locate facts in a language model and rewrite them there.
/// Layering: C shims (and AVX2 kernels) → Linalg → formats (GGUF, HDF5Store) → Llama → Interp → Editing → scalpel CLI.
let swift5: [SwiftSetting] = [.swiftLanguageMode(.v5)]

let package = Package(
    name: "Scalpel",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "scalpel", targets: ["ScalpelCLI"]),
        .executable(name: "scalpel-bench", targets: ["ScalpelBench"]),
        .library(name: "Scalpel", targets: ["Hashing", "Linalg", "GGUF", "HDF5Store", "Llama", "Interp", "Editing"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // C shims: one [system] module map each, resolved through pkg-config.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CLAPACKE", pkgConfig: "lapacke",
                       providers: [.apt(["liblapacke-dev"])]),
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),

        // AVX2/FMA element-wise kernels (each function carries its own target attribute; used after a CPU check).
        .target(name: "CKernels"),

        .target(name: "Linalg", dependencies: ["CBLAS", "CLAPACKE"], swiftSettings: swift5),
        .target(name: "Hashing", swiftSettings: swift5),
        .target(name: "GGUF", dependencies: ["Hashing"], swiftSettings: swift5),
        .target(name: "HDF5Store", dependencies: ["CHDF5", "Hashing"], swiftSettings: swift5),
        .target(name: "Llama",
                dependencies: ["Linalg", "GGUF", "HDF5Store", "Hashing", "CKernels"],
                swiftSettings: swift5),
        .target(name: "Interp", dependencies: ["Llama", "Linalg", "HDF5Store"], swiftSettings: swift5),
        .target(name: "Editing", dependencies: ["Llama", "Interp", "Linalg", "HDF5Store", "GGUF"],
                swiftSettings: swift5),
        .executableTarget(name: "ScalpelCLI",
                          dependencies: ["Llama", "Interp", "Editing", "GGUF", "HDF5Store",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: swift5),

        .executableTarget(name: "ScalpelBench", dependencies: ["Llama", "Interp", "Linalg"],
                          path: "benchmarks/ScalpelBench", swiftSettings: swift5),

        .testTarget(name: "CLITests", dependencies: ["ScalpelCLI", "GGUF", "Llama", "Editing", "HDF5Store", "Hashing"], swiftSettings: swift5),
        .testTarget(name: "HashingTests", dependencies: ["Hashing"], swiftSettings: swift5),
        .testTarget(name: "LinalgTests", dependencies: ["Linalg"], swiftSettings: swift5),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF"], swiftSettings: swift5),
        .testTarget(name: "HDF5StoreTests", dependencies: ["HDF5Store"], swiftSettings: swift5),
        .testTarget(name: "InterpTests", dependencies: ["Interp", "Llama"], swiftSettings: swift5),
        .testTarget(name: "LlamaTests", dependencies: ["Llama", "GGUF", "HDF5Store", "Linalg"], swiftSettings: swift5),
        .testTarget(name: "EditingTests", dependencies: ["Editing", "Llama", "Interp", "HDF5Store", "GGUF"], swiftSettings: swift5),
    ]
)
