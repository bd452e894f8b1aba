import Foundation
import FerryCapture
import Testing

/// Helpers shared by the FerryCapture tests: fixture paths, scratch directories, outside tools.
enum TestSupport {
    /// `Tests/Fixtures/reference`, found from this file's location. The test directory may be
    /// reached through a symlink (a scratch package pointing into the repository), so resolve it
    /// before stepping up to its sibling.
    static let referenceDirectory: String = {
        let testDirectory = (#filePath as NSString).deletingLastPathComponent
        let resolved = URL(fileURLWithPath: testDirectory).resolvingSymlinksInPath().path
        return ((resolved as NSString).deletingLastPathComponent as NSString)
            .appendingPathComponent("Fixtures/reference")
    }()

    /// The four reference captures, each 12 Ethernet frames between 10.200.0.1 and 10.200.0.2.
    static let vxlanCaptures = ["kernel-vxlan.pcap", "ovs-vxlan.pcap", "kernel-vxlan-csumoffload.pcap"]
    static let greCaptures = ["ovs-gre.pcap"]
    static var allCaptures: [String] { vxlanCaptures + greCaptures }

    static func reference(_ name: String) -> String {
        (referenceDirectory as NSString).appendingPathComponent(name)
    }

    /// Runs `body` with a fresh directory that is removed afterwards, whatever happens.
    static func withScratchDirectory<R>(_ body: (String) throws -> R) throws -> R {
        let path = (NSTemporaryDirectory() as NSString)
            .appendingPathComponent("ferry-capture-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    /// Runs an installed tool (tcpdump, tshark) and returns its exit status and standard output.
    /// Its standard error (tshark's "running as root" notice) is discarded.
    static func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let candidates = ["/usr/bin/\(tool)", "/usr/sbin/\(tool)", "/usr/local/bin/\(tool)"]
        guard let executable = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw ToolMissing(tool: tool)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Read before waiting: a full pipe would otherwise block the tool and the test with it.
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    struct ToolMissing: Error, CustomStringConvertible {
        var tool: String
        var description: String { "\(tool) is not installed; the tests use it as an independent pcap reader" }
    }
}
