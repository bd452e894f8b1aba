import CFerryLinux
import FerryLinux
import FerryWire
import FerryTestSupport
import Foundation
import Testing

// What the FerryLinux tests share: running `ip` and friends, entering a namespace the test
// built, and real datagram sockets on the loopback with a way to collect what they receive.
// Traffic goes only to 127.0.0.1, ::1, or namespaces the tests create.

enum Linux {
    static let isRoot = geteuid() == 0

    struct CommandFailure: Error, CustomStringConvertible {
        var command: String
        var output: String
        var description: String { "`\(command)` failed: \(output)" }
    }

    /// Runs a command to completion; throws with its output when it fails.
    @discardableResult
    static func sh(_ arguments: String...) throws -> String { try sh(arguments) }

    @discardableResult
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
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs `body` on a thread of its own that has entered namespace `name` (setns moves the
    /// calling thread only, and this thread ends with `body`).
    static func inNamespace<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        try Namespaces.run(in: name, body)
    }

    /// A namespace named `prefix-PID` with its loopback up, removed after `body`. Any
    /// `prefix-N` whose process N is gone (a run that crashed) is removed first.
    static func withNamespace<R>(_ prefix: String, _ body: (String) throws -> R) throws -> R {
        let name = "\(prefix)-\(getpid())"
        for old in (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [] where old.hasPrefix(prefix + "-") {
            guard let pid = Int32(old.dropFirst(prefix.count + 1)) else { continue }
            if pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH) { _ = try? sh("ip", "netns", "del", old) }
        }
        try sh("ip", "netns", "add", name)
        defer { _ = try? sh("ip", "netns", "del", name) }
        try sh("ip", "-n", name, "link", "set", "lo", "up")
        return try body(name)
    }
}

/// What a thread hands back to the one that waits for it.
final class ThreadResult<T>: @unchecked Sendable {
    var result: Result<T, Error>?
    var entered = false
}

/// Hands an object made on another thread (a TAP opened inside a namespace) back to the test,
/// which alone uses it from then on.
final class Handover<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Memory that stays in place while a batch points into it: the buffers a send gathers from,
/// the buffers a receive fills. Freed with the arena.
final class Arena {
    private var blocks: [UnsafeMutableRawBufferPointer] = []

    /// A copy of `bytes` that stays in place.
    func put(_ bytes: [UInt8]) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(room(bytes.count, copying: bytes))
    }

    /// `count` bytes of room.
    func room(_ count: Int, copying bytes: [UInt8] = []) -> UnsafeMutableRawBufferPointer {
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
        block.copyBytes(from: bytes)
        blocks.append(block)
        return UnsafeMutableRawBufferPointer(rebasing: block[0..<count])
    }

    /// A socket address that stays in place, for a batch's messages to point at.
    func address(_ ip: IPAddress, port: UInt16) -> UnsafePointer<SocketAddress> {
        let block = room(MemoryLayout<SocketAddress>.stride)
        let p = block.baseAddress!.bindMemory(to: SocketAddress.self, capacity: 1)
        p.initialize(to: SocketAddress(ip, port: port))
        return UnsafePointer(p)
    }

    deinit { for b in blocks { b.deallocate() } }
}

/// One datagram as a receive left it in a batch.
struct Received {
    var bytes: [UInt8]
    var source: IPAddress?
    var port: UInt16?
    var truncated: Bool
    var groSegmentSize: Int?
    var tos: UInt8?
}

extension DatagramSocket {
    /// The address and port the socket is bound to.
    var boundAddress: (IPAddress, UInt16) {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        precondition(r == 0, "getsockname")
        return withUnsafeBytes(of: &storage) { SocketAddress.decode($0.baseAddress!)! }
    }

    var port: UInt16 { boundAddress.1 }

    /// Receives with `batch` (its buffers set) until `count` datagrams came or `timeout`
    /// seconds passed, waiting on the socket in between; returns them in order of arrival.
    func collect(_ count: Int, with batch: MessageBatch, timeout: Double = 5) throws -> [Received] {
        var got: [Received] = []
        let deadline = Date().addingTimeInterval(timeout)
        while got.count < count, Date() < deadline {
            _ = Poller.wait(fd: fd, events: Int16(POLLIN), milliseconds: 50)
            let n = try receive(batch)
            for i in 0..<n {
                let length = batch.receivedLength(i)
                let source = batch.source(i)
                got.append(Received(bytes: Array(UnsafeRawBufferPointer(rebasing: batch.receiveBuffer(i)[0..<length])),
                                    source: source?.0, port: source?.1, truncated: batch.wasTruncated(i),
                                    groSegmentSize: batch.groSegmentSize(i), tos: batch.receivedTOS(i)))
            }
        }
        return got
    }
}

/// A receiving batch of `capacity` messages, each with a buffer of `size` bytes in `arena`.
func receiveBatch(capacity: Int, size: Int, in arena: Arena) -> MessageBatch {
    let batch = MessageBatch(capacity: capacity)
    for i in 0..<capacity { batch.setReceiveBuffer(i, arena.room(size)) }
    return batch
}

/// Distinct, recognisable bytes: `count` of them, from a seed (a message's number).
func bytes(_ count: Int, seed: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed &* 31 &+ 1) }
}

/// `data` cut every `size` bytes (the last piece may be shorter).
func chunks(_ data: [UInt8], _ size: Int) -> [[UInt8]] {
    stride(from: 0, to: data.count, by: size).map { Array(data[$0..<min($0 + size, data.count)]) }
}

let loopback4 = IPAddress.v4(IPv4Address(127, 0, 0, 1))
let loopback6 = IPAddress.v6(IPv6Address("::1")!)

/// Records an issue when datagrams differ, naming the first that does by its number and
/// length rather than printing kilobytes of bytes.
func expectSameDatagrams(_ actual: [[UInt8]], _ expected: [[UInt8]], _ what: Comment,
                         sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual != expected else { return }
    let lengths = "got \(actual.count) datagrams of \(actual.map(\.count)), expected \(expected.count) of \(expected.map(\.count))"
    if let i = zip(actual, expected).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
        let at = zip(actual[i], expected[i]).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        Issue.record("\(what): datagram \(i) differs (at byte \(at.map(String.init) ?? "past the shorter's end")); \(lengths)",
                     sourceLocation: sourceLocation)
    } else {
        Issue.record("\(what): \(lengths)", sourceLocation: sourceLocation)
    }
}
