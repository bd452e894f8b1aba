// swift-tools-version:6.1
import PackageDescription

// Micro-benchmarks, in a package of their own so the main build stays fast:
//   cd bench && swift package benchmark
// ns per packet and mallocs per packet for each step of the data plane.
//
// And instructions per packet of the engine's steps under callgrind, a figure that does not
// wobble with the machine's load (bench/instructions runs ferry-instructions; it needs
// neither the benchmark package nor its plugin, so it builds on its own, quickly):
//   bench/instructions
let package = Package(
    name: "FerryBenchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "Ferry", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "FerryBenchmarks",
            dependencies: [
                "FerryBenchSupport",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FerryWire", package: "Ferry"),
                .product(name: "FerryEngine", package: "Ferry"),
            ],
            path: "Benchmarks/FerryBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // In-memory TAP and transport that replay prepared packets (no allocation per step).
        .target(
            name: "FerryBenchSupport",
            dependencies: [
                .product(name: "FerryWire", package: "Ferry"),
                .product(name: "FerryEngine", package: "Ferry"),
            ],
            path: "Support"
        ),
        .executableTarget(
            name: "ferry-instructions",
            dependencies: [
                "FerryBenchSupport",
                .product(name: "FerryWire", package: "Ferry"),
                .product(name: "FerryEngine", package: "Ferry"),
            ],
            path: "Instructions"
        ),
    ]
)
