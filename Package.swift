// swift-tools-version:6.1
import PackageDescription

// Layers, each depending only on those above it in this list: FerryWire (pure packet formats,
// imports nothing), CPcap/FerryCapture (libpcap files and filters), CFerryLinux/CCap (libcap)/FerryLinux (the
// only system calls), FerryEngine (the data plane: workers, peers, forwarding table), then
// FerrySettings (options and the config file resolved), FerryControl (the control socket; over
// the settings, for a reload), FerryMetrics (Prometheus `/metrics`, over SwiftNIO), FerryService
// (systemd: the notify protocol, the unit, install; over FerryLinux alone), FerryEtcd (the
// etcd v3 client membership uses) and
// FerryPcapTools (offline capture tools) over it, FerryLab (namespace labs), and the `ferry`
// command line. One test target per module; FerryTestSupport
// holds what the test targets share (fakes of the TAP and the sockets, a digest). Linux only.
//
// FERRY_UNITS_ONLY=1 in the environment leaves out the command line, the lab, the metrics server
// and their tests (and the argument parser, NIO and Prometheus packages they need): CI's
// sanitizer runs of the unit suites build only what those suites test.
let unitsOnly = Context.environment["FERRY_UNITS_ONLY"] == "1"

let package = Package(
    name: "Ferry",
    products: (unitsOnly ? [] : [.executable(name: "ferry", targets: ["ferry"])]) + [
        .library(name: "FerryWire", targets: ["FerryWire"]),
        .library(name: "FerryCapture", targets: ["FerryCapture"]),
        .library(name: "FerryEngine", targets: ["FerryEngine"]),
        .library(name: "FerryControl", targets: ["FerryControl"]),
        .library(name: "FerryPcapTools", targets: ["FerryPcapTools"]),
        .library(name: "FerryHost", targets: ["FerryHost"]),
        .library(name: "FerrySettings", targets: ["FerrySettings"]),
        .library(name: "FerryService", targets: ["FerryService"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // The workers' batch-time distributions (`BatchTimings`): HdrHistogram's Swift port.
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", exact: "0.2.0"),
    ] + (unitsOnly ? [] : [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", exact: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", exact: "2.37.6"),
    ]),
    targets: [
        .target(name: "FerryWire"),
        .systemLibrary(
            name: "CPcap",
            pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]
        ),
        .target(name: "FerryCapture", dependencies: ["CPcap"]),
        .target(name: "CFerryLinux"),
        .systemLibrary(
            name: "CCap",
            pkgConfig: "libcap",
            providers: [.apt(["libcap-dev"])]
        ),
        .target(
            name: "FerryLinux",
            dependencies: ["CFerryLinux", "CCap", "FerryWire", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(
            name: "FerryEngine",
            dependencies: [
                "FerryWire", "FerryLinux", "FerryCapture",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .target(
            name: "FerryControl",
            dependencies: ["FerryCapture", "FerryEngine", "FerryLinux", "FerrySettings", .product(name: "Logging", package: "swift-log")]
        ),
        .target(name: "FerryPcapTools", dependencies: ["FerryWire", "FerryCapture"]),
        // Host set-up over rtnetlink: the bridge, its address, the routes to peers' subnets.
        .target(name: "FerryHost", dependencies: ["FerryLinux", "FerryWire", "FerrySettings",
                                                .product(name: "SystemPackage", package: "swift-system")]),
        .target(
            name: "FerrySettings",
            dependencies: ["FerryEngine", "FerryLinux", "FerryWire", .product(name: "Logging", package: "swift-log"),
                           .product(name: "Yams", package: "Yams")]
        ),
        // `ferry doctor`'s checks of a host: pure functions of observed state, and the reader that observes it.
        .target(name: "FerryDoctor", dependencies: ["FerryLinux", "FerryWire"]),
        // Running as a system service: the notify protocol, the unit, install and uninstall.
        .target(name: "FerryService", dependencies: ["FerryLinux"]),
        // What the test targets share (they cannot import one another).
        .target(name: "FerryTestSupport", dependencies: ["FerryEngine", "FerryCapture", "CFerryLinux"], path: "Tests/FerryTestSupport"),
        .testTarget(name: "FerryWireTests", dependencies: ["FerryWire", "FerryCapture", "FerryTestSupport"]),
        .testTarget(name: "FerryCaptureTests", dependencies: ["FerryCapture", "FerryTestSupport"]),
        .testTarget(name: "FerryLinuxTests", dependencies: ["FerryLinux", "FerryWire", "CFerryLinux", "FerryTestSupport"]),
        .testTarget(name: "FerryEngineTests", dependencies: ["FerryEngine", "FerryLinux", "FerryWire", "FerryCapture",
                                                            "FerryTestSupport"]),
        .testTarget(name: "FerryControlTests", dependencies: ["FerryControl", "FerryEngine", "FerryLinux", "FerryWire", "FerrySettings",
                                                             .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "FerryPcapToolsTests", dependencies: ["FerryPcapTools", "FerryCapture", "FerryWire"]),
        .testTarget(name: "FerryHostTests", dependencies: ["FerryHost", "FerrySettings", "FerryLinux", "FerryWire", "CFerryLinux",
                                                          "FerryTestSupport"]),
        .testTarget(name: "FerrySettingsTests", dependencies: ["FerrySettings", "FerryEngine", "FerryWire"]),
        .testTarget(name: "FerryDoctorTests", dependencies: ["FerryDoctor", "FerryLinux", "FerryWire"]),
        .testTarget(name: "FerryServiceTests", dependencies: ["FerryService", "FerryLinux"]),
    ] + (unitsOnly ? [] : [
        .target(name: "FerryLab"),
        // Membership's store: etcd's v3 API (`KeyValueStore`, and the client over the JSON gateway).
        .target(
            name: "FerryEtcd",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .testTarget(name: "FerryEtcdTests", dependencies: ["FerryEtcd", "FerryLab"]),
        // `/metrics` over HTTP: a target of its own so that SwiftNIO stays out of FerryControl,
        // the engine and the unit-only builds (see FerryMetrics/MetricsServer.swift).
        .target(
            name: "FerryMetrics",
            dependencies: [
                "FerryEngine", "FerryWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .testTarget(name: "FerryMetricsTests", dependencies: ["FerryMetrics", "FerryEngine", "FerryWire",
                                                              .product(name: "NIOCore", package: "swift-nio"),
                                                              .product(name: "NIOPosix", package: "swift-nio")]),
        // Membership on etcd: the layout, the subnet allocator, the agent that makes peers follow the store.
        .target(name: "FerryMembership", dependencies: ["FerryEtcd", "FerrySettings", "FerryWire",
                                                       .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "FerryMembershipTests", dependencies: ["FerryMembership", "FerryEtcd", "FerrySettings", "FerryWire",
                                                                .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "ferry",
            dependencies: [
                "FerryWire",
                "FerryCapture",
                "FerryLinux",
                "FerryEngine",
                "FerryControl",
                "FerryPcapTools",
                "FerryHost",
                "FerrySettings",
                "FerryDoctor",
                "FerryService",
                "FerryLab",
                "FerryMetrics",
                "FerryEtcd",
                "FerryMembership",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .testTarget(name: "ferryTests", dependencies: ["ferry", "FerryWire", "FerryCapture", "FerryLab", "FerryTestSupport",
                                                 "FerryLinux", "FerryService"]),
    ])
)
