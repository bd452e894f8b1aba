// swift-tools-version:6.1
import PackageDescription

// Micro-benchmarks, in a package of their own so the main build stays fast:
//   cd bench && swift package benchmark
// ns per packet and mallocs per packet for each step of the data plane.
let package = Package(
    name: "FerryBenchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "FerryBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FerryWire", package: "main"),
                .product(name: "FerryEngine", package: "main"),
            ],
            path: "Benchmarks/FerryBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
