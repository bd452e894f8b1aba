// swift-tools-version:6.1
import PackageDescription

// Layers (see DESIGN.md): FerryWire is pure packet formats and imports nothing; FerryCapture
// wraps libpcap; the `ferry` command line sits on top. Each module has one test target.
let package = Package(
    name: "Ferry",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
        .library(name: "FerryWire", targets: ["FerryWire"]),
        .library(name: "FerryCapture", targets: ["FerryCapture"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(name: "FerryWire"),
        .systemLibrary(
            name: "CPcap",
            pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]
        ),
        .target(name: "FerryCapture", dependencies: ["CPcap"]),
        .executableTarget(
            name: "ferry",
            dependencies: [
                "FerryWire",
                "FerryCapture",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "FerryWireTests", dependencies: ["FerryWire", "FerryCapture"]),
        .testTarget(name: "FerryCaptureTests", dependencies: ["FerryCapture"]),
        .testTarget(name: "ferryTests", dependencies: ["ferry", "FerryWire", "FerryCapture"]),
    ]
)
