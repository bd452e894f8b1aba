// `trace` over the control socket: a frame's hex makes a line far longer than the other
// requests, which the server reads whole (up to `TraceRequest.maximumLength`), while every other
// line keeps its 256-byte bound.

@testable import FerryControl
import FerryEngine
import FerryLinux
import FerryWire
import Foundation
import Logging
import Testing

/// Answers a trace with what it was asked: the frame's length and direction.
final class EchoTraceSource: ControlSource {
    var isStopping: Bool { false }
    let inner = try! FakeSource(entries: 1)
    func statistics() -> Statistics { inner.statistics() }
    func forwardingSnapshot() -> ForwardingSnapshot { inner.forwardingSnapshot() }
    func trace(_ frame: [UInt8], _ direction: TraceDirection) -> Result<TraceReport, ControlChangeRefusal> {
        var r = TraceReport(direction: direction == .egress ? "egress" : "ingress", length: frame.count)
        r.verdict = "first byte \(frame.first ?? 0), last byte \(frame.last ?? 0)"
        return .success(r)
    }
}

@Suite("Control server: trace")
struct TraceServerTests {
    func withServer(_ source: some ControlSource, _ body: (String) throws -> Void) throws {
        let dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-trace-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/ferry0.sock"
        let server = try ControlServer(path: path)
        server.start(serving: source, logger: Logger(label: "trace-test"))
        defer {
            server.stop()
            server.wait()
        }
        try body(path)
    }

    @Test("a 64 KiB frame's trace line is read whole and answered; other long lines are still refused")
    func longLines() throws {
        try withServer(EchoTraceSource()) { path in
            for length in [60, 1600, 65_535] {
                let frame = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) }
                let report = try ControlClient.trace(TraceRequest(frame: frame, direction: .ingress(from: nil, tunnelID: nil, outerECN: 0)),
                                                     at: path)
                #expect(report.length == length && report.direction == "ingress")
                #expect(report.verdict == "first byte \(frame.first!), last byte \(frame.last!)")
            }
            let long = try RawClient(path)
            long.send("stats" + String(repeating: " ", count: 300) + "\n")
            let reply = String(decoding: long.readToEnd() ?? [], as: UTF8.self)
            #expect(reply.contains("longer than 256 bytes"), "\(reply)")
        }
    }

    @Test("a source that cannot trace refuses, and says so")
    func refused() throws {
        try withServer(try FakeSource(entries: 1)) { path in
            #expect(throws: ControlClientError.refused("this ferry cannot trace")) {
                try ControlClient.trace(TraceRequest(frame: [1, 2, 3], direction: .egress), at: path)
            }
        }
    }
}

/// A wrapper that adds only `members`, as membership's does.
final class MembersWrapper: WrappingControlSource {
    let wrapped: any ControlSource
    init(_ wrapped: any ControlSource) { self.wrapped = wrapped }
    func membersReply() -> String? { "{\"hosts\":[]}" }
}

@Suite("Control sources that wrap others")
struct WrappingControlSourceTests {
    /// A wrapper listing its forwards by hand lost `trace` and the captures when they were
    /// added; one that wraps forwards what it does not answer itself.
    @Test func aWrapperForwardsWhatItDoesNotAnswer() throws {
        let inner = EchoTraceSource()
        let outer = MembersWrapper(MembersWrapper(inner))
        guard case .success(let report) = outer.trace([1, 2, 3], .egress) else {
            Issue.record("a wrapped trace was refused")
            return
        }
        #expect(report.length == 3 && report.verdict == "first byte 1, last byte 3")
        #expect(outer.membersReply() == "{\"hosts\":[]}")
        #expect(outer.statistics().fdbEntries == inner.statistics().fdbEntries)
        // What neither answers is refused by the inner one's default, as before.
        guard case .failure(let refusal) = outer.attachCapture(point: .inner, filter: nil) else {
            Issue.record("a capture was attached by a source that takes none")
            return
        }
        #expect(refusal.message.contains("takes no captures"))
    }
}
