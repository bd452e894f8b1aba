// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for Ferry's parsers of untrusted bytes, apart from the main package so that
// its build stays as it is. Build and run with `tools/fuzz` (which sets FERRY_UNITS_ONLY=1, so
// that the root package leaves out the command line and its dependencies):
//
//     swift build --package-path fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
//
// Each target is an executable whose `<Target>_main` (the symbol SwiftPM links as `main`) hands
// its `fuzzOne` to libFuzzer's driver (FuzzSupport.runFuzzer); each exports
// `LLVMFuzzerTestOneInput` too. A path dependency's identity is its directory's name, which
// differs between checkouts: it is taken from where this package lies.
let targets = ["FuzzDecapsulation", "FuzzECN", "FuzzCoalescer", "FuzzSegmentation", "FuzzPcapReader",
               "FuzzControlRequest", "FuzzConfig"]
let root = String(Context.packageDirectory.split(separator: "/").dropLast().last ?? "ferry")
func ferry(_ product: String) -> Target.Dependency { .product(name: product, package: root) }
let needs: [String: [Target.Dependency]] = [
    "FuzzPcapReader": [ferry("FerryCapture")],
    "FuzzControlRequest": [ferry("FerryControl")],
    "FuzzConfig": [ferry("FerrySettings"), ferry("FerryEngine")],
]

let package = Package(
    name: "FerryFuzz",
    dependencies: [.package(path: "..")],
    targets: [
        .target(name: "CFuzzerDriver"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzerDriver"]),
    ] + targets.map { name in
        .executableTarget(name: name, dependencies: ["FuzzSupport", ferry("FerryWire")] + (needs[name] ?? []))
    }
)
