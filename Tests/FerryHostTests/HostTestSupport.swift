import CFerryLinux
import FerryTestSupport
import Foundation
import Testing

// Running `ip` and entering a namespace the test built; nothing here touches the test's own
// namespace.
enum HostTest {
    static let isRoot = geteuid() == 0

    struct CommandFailure: Error, CustomStringConvertible {
        var command: String
        var output: String
        var description: String { "`\(command)` failed: \(output)" }
    }

    @discardableResult
    static func sh(_ arguments: String...) throws -> String { try sh(arguments) }

    /// `ip -d link`, `ip -d addr` and `ip route` (both families) of a namespace: what teardown
    /// must leave as it found it; without the bridge's running timers and IPv6 duplicate-address
    /// detection's passing flag, which change by themselves.
    /// Read until two readings 200 ms apart agree (at most 5 s): a link just set up gains its
    /// IPv6 link-local address and routes a moment later, by itself, and a loaded machine
    /// stretches that moment.
    static func snapshot(_ ns: String) throws -> String {
        func reading() throws -> String {
            let text = try ["-d link", "-d addr", "route", "-6 route"].map { args in
                try sh(["ip", "-n", ns] + args.split(separator: " ").map(String.init) + ["show"])
            }.joined(separator: "----\n")
            return text.replacing(/\w+_timer\s+[0-9.]+/, with: "").replacing(" tentative", with: "")
        }
        var last = try reading()
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            usleep(200_000)
            let next = try reading()
            if next == last { return next }
            last = next
        }
        return last
    }

    /// Runs a command to completion; throws with its output when it fails.
    static func sh(_ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else { throw CommandFailure(command: arguments.joined(separator: " "), output: text) }
        return text
    }

    /// Runs `body` on a thread of its own that has entered namespace `name`.
    static func inNamespace<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        try Namespaces.run(in: name, body)
    }

    /// A namespace `prefix-PID` with its loopback up and an underlay leg `u0` (10.99.0.1/24, a
    /// veth whose other end is in a second namespace), removed after `body`, with whatever a
    /// crashed run with the same prefix left.
    static func withHost<R>(_ prefix: String, _ body: (String) throws -> R) throws -> R {
        let name = "\(prefix)-\(getpid())", far = "\(prefix)-\(getpid())-far"
        for old in (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [] where old.hasPrefix(prefix + "-") {
            guard let pid = Int32(old.dropFirst(prefix.count + 1).prefix { $0.isNumber }) else { continue }
            if pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH) { _ = try? sh("ip", "netns", "del", old) }
        }
        defer {
            _ = try? sh("ip", "netns", "del", name)
            _ = try? sh("ip", "netns", "del", far)
        }
        try sh("ip", "netns", "add", name)
        try sh("ip", "netns", "add", far)
        try sh("ip", "-n", name, "link", "set", "lo", "up")
        try sh("ip", "link", "add", "u0", "netns", name, "type", "veth", "peer", "name", "u0", "netns", far)
        try sh("ip", "-n", name, "addr", "add", "10.99.0.1/24", "dev", "u0")
        try sh("ip", "-n", name, "link", "set", "u0", "up")
        try sh("ip", "-n", far, "link", "set", "u0", "up")
        return try body(name)
    }

    /// A scratch directory for records, removed after `body`.
    static func withDirectory<R>(_ body: (String) throws -> R) throws -> R {
        let path = (NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-host-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }
}

