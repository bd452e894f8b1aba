import FerryCapture
import FerryTestSupport
import Foundation
import Testing

// Helpers for the command-line tests: they run the real `ferry` binary (and tshark, tcpdump) as
// subprocesses, in a fresh scratch directory per test, and read what they wrote.

/// What a finished subprocess left behind.
struct ProcessOutput: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var description: String { "exit \(status)\n--- stdout\n\(stdout)--- stderr\n\(stderr)" }
}

struct ToolNotFound: Error, CustomStringConvertible {
    var tool: String
    var searched: [String]
    var description: String { "\(tool) not found (looked in \(searched.joined(separator: ", ")))" }
}

struct UnexpectedOutput: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum Tools {
    /// The package root, from this file's location (Tests/ferryTests/Support.swift).
    static let packageRoot: URL = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let referenceDirectory = packageRoot.appendingPathComponent("Tests/Fixtures/reference")

    static func reference(_ name: String) -> String { referenceDirectory.appendingPathComponent(name).path }

    /// The `ferry` executable built with this test bundle. On Linux the test runner
    /// (`<Package>PackageTests.xctest`) is an executable in `.build/<triple>/<config>/`, next to
    /// the products of its dependencies; `Bundle.main` points at the same directory.
    static let ferryPath: Result<String, ToolNotFound> = {
        var directories: [URL] = []
        if let first = CommandLine.arguments.first {
            directories.append(URL(fileURLWithPath: first).resolvingSymlinksInPath().deletingLastPathComponent())
        }
        directories.append(Bundle.main.bundleURL)
        directories.append(Bundle.main.bundleURL.deletingLastPathComponent())
        // macOS puts the .xctest bundle beside the products: <config>/X.xctest/Contents/MacOS/X.
        directories.append(Bundle.main.bundleURL.deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent())
        let candidates = directories.map { $0.appendingPathComponent("ferry").path }
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            return .success(found)
        }
        return .failure(ToolNotFound(tool: "ferry", searched: candidates))
    }()

    static func system(_ tool: String) throws -> String {
        let candidates = ["/usr/bin/\(tool)", "/usr/sbin/\(tool)", "/usr/local/bin/\(tool)", "/bin/\(tool)"]
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw ToolNotFound(tool: tool, searched: candidates)
        }
        return found
    }
}

/// Runs `body` with a fresh scratch directory, removed afterwards whatever happens: every file a
/// test and its subprocesses write goes there.
func withScratch<R>(_ body: (Scratch) throws -> R) throws -> R {
    let path = (NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-cli-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try body(Scratch(path: path))
}

struct Scratch {
    let path: String

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Runs `executable` with `arguments` in the scratch directory. Output goes through files,
    /// not pipes, so a chatty tool can never block on a full pipe.
    func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> ProcessOutput {
        let id = UUID().uuidString
        let outPath = file(".stdout-\(id)"), errPath = file(".stderr-\(id)")
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        defer {
            try? out.close()
            try? err.close()
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: path)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        try process.run()
        process.waitUntilExit()
        let stdout = String(decoding: FileManager.default.contents(atPath: outPath) ?? Data(), as: UTF8.self)
        let stderr = String(decoding: FileManager.default.contents(atPath: errPath) ?? Data(), as: UTF8.self)
        return ProcessOutput(status: process.terminationStatus, stdout: stdout, stderr: stderr)
    }

    /// Runs `ferry ARGUMENTS`.
    func ferry(_ arguments: [String], environment: [String: String] = [:]) throws -> ProcessOutput {
        try run(try Tools.ferryPath.get(), arguments, environment: environment)
    }

    func ferry(_ arguments: String..., environment: [String: String] = [:]) throws -> ProcessOutput {
        try ferry(arguments, environment: environment)
    }

    /// Runs a ferry command that must succeed; records an issue with its output otherwise.
    @discardableResult
    func ferrySucceeds(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> ProcessOutput {
        let result = try ferry(arguments)
        #expect(result.status == 0, "ferry \(arguments.joined(separator: " ")): \(result)", sourceLocation: sourceLocation)
        guard result.status == 0 else {
            throw UnexpectedOutput("ferry \(arguments.joined(separator: " ")) failed: \(result)")
        }
        return result
    }

    /// Writes `ferry pcap sample` to `name` and returns its path.
    func sample(_ name: String = "sample.pcap") throws -> String {
        let path = file(name)
        try ferrySucceeds(["pcap", "sample", path])
        return path
    }

    /// Dissects `capture` with tshark and returns, per frame, every occurrence of each field
    /// (outer header first, then the inner one). IP, UDP and GRE checksums are verified.
    func tshark(_ capture: String, fields: [String], extra: [String] = []) throws -> [Dissection] {
        var arguments = ["-n", "-r", capture, "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                         "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
        arguments += extra
        for field in fields { arguments += ["-e", field] }
        let result = try run(try Tools.system("tshark"), arguments)
        guard result.status == 0 else { throw UnexpectedOutput("tshark \(arguments.joined(separator: " ")): \(result)") }
        return result.stdout.split(separator: "\n", omittingEmptySubsequences: true).map { line in
            let columns = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            var values: [String: [String]] = [:]
            for (i, field) in fields.enumerated() {
                let column = i < columns.count ? columns[i] : ""
                values[field] = column.isEmpty ? [] : column.split(separator: ",").map(String.init)
            }
            return Dissection(values: values)
        }
    }

    /// Filters `capture` through tcpdump into `output`: an independent selection of frames.
    func tcpdumpFilter(_ capture: String, _ expression: String, into output: String) throws {
        let result = try run(try Tools.system("tcpdump"), ["-r", capture, "-w", output, expression])
        guard result.status == 0 else { throw UnexpectedOutput("tcpdump \(expression): \(result)") }
    }
}

/// One frame as tshark dissected it: each field's occurrences, outermost first.
struct Dissection {
    var values: [String: [String]]

    func all(_ field: String) -> [String] { values[field] ?? [] }
    func first(_ field: String) -> String? { all(field).first }
    /// The occurrences after the first `skip`: the inner frame's, when the outer headers hold `skip`.
    func inner(_ field: String, skipping skip: Int) -> [String] { Array(all(field).dropFirst(skip)) }

    /// A field's first occurrence as an integer; tshark prints hex fields with 0x.
    func int(_ field: String) -> Int? { first(field).flatMap(parseInt) }
    /// A boolean field; tshark 4.0 prints 1/0, later versions True/False.
    func bool(_ field: String) -> Bool? {
        switch first(field) {
        case "1", "True", "true": true
        case "0", "False", "false": false
        default: nil
        }
    }
}

func parseInt(_ text: String) -> Int? {
    text.lowercased().hasPrefix("0x") ? Int(text.dropFirst(2), radix: 16) : Int(text)
}

/// tshark's checksum status values (Wireshark's proto_checksum_enum_e).
enum ChecksumVerdict {
    static let bad = 0, good = 1, unverified = 2, notPresent = 3, illegal = 4
}

/// Reads every frame of a capture.
func frames(_ path: String) throws -> [OwnedFrame] {
    try PcapFileReader(path: path).readAll()
}

/// Writes frames to a new capture.
func writeCapture(_ frames: [OwnedFrame], to path: String) throws {
    let writer = try PcapFileWriter(path: path)
    for frame in frames { writer.write(frame) }
    try writer.close()
}

/// Parses a JSON object printed by ferry.
func jsonObject(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
    let value = try JSONSerialization.jsonObject(with: Data(text.utf8))
    return try #require(value as? [String: Any], "not a JSON object: \(text)", sourceLocation: sourceLocation)
}

func jsonArray(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [[String: Any]] {
    let value = try JSONSerialization.jsonObject(with: Data(text.utf8))
    return try #require(value as? [[String: Any]], "not a JSON array of objects: \(text)", sourceLocation: sourceLocation)
}

/// `[String: Int]` out of a JSON object field (missing is empty).
func counts(_ object: [String: Any], _ key: String) -> [String: Int] {
    guard let dictionary = object[key] as? [String: Any] else { return [:] }
    return dictionary.compactMapValues { ($0 as? NSNumber)?.intValue }
}

func int(_ object: [String: Any], _ key: String) -> Int? { (object[key] as? NSNumber)?.intValue }

/// Records an issue per differing frame (at most a few) when two captures differ.
func expectSameFrames(_ actual: [OwnedFrame], _ expected: [OwnedFrame], _ what: String,
                      sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, "\(what): \(actual.count) frames, expected \(expected.count)",
            sourceLocation: sourceLocation)
    var reported = 0
    for (i, (a, e)) in zip(actual, expected).enumerated() where a != e && reported < 5 {
        reported += 1
        Issue.record("\(what): frame \(i + 1) is \(digest(a)), expected \(digest(e))", sourceLocation: sourceLocation)
    }
}
