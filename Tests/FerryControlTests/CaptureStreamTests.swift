// `capture` over the control socket: the request parser, and the streamer against a real server
// whose source attaches captures to a real hub; the test plays the workers, pushing records
// into the rings, and reads the stream back as `ferry ctl capture` does.

import FerryCapture
@testable import FerryControl
@testable import FerryEngine
import FerryLinux
import FerryWire
import Foundation
import Logging
import Synchronization
import Testing

/// A source whose captures are attached to a hub of one worker, with rings of `ringBytes`.
final class CapturingSource: ControlSource, @unchecked Sendable {
    let state: ForwardingState
    let ringBytes: Int
    let stopping = Atomic<Bool>(false)

    init(ringBytes: Int = 1 << 20) throws {
        let c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: .v4(IPv4Address(10, 99, 0, 1)),
                                    peers: [.v4(IPv4Address(10, 99, 0, 2))], underlayMTU: 1500)
        state = try ForwardingState(configuration: c)
        self.ringBytes = ringBytes
    }

    var isStopping: Bool { stopping.load(ordering: .relaxed) }
    func statistics() -> Statistics { state.statistics() }
    func forwardingSnapshot() -> ForwardingSnapshot { state.forwardingSnapshot() }
    func attachCapture(point: CapturePoint, filter: PacketFilter?) -> Result<CaptureAttachment, ControlChangeRefusal> {
        guard let a = state.captures.attach(point: point, filter: filter, ringBytes: ringBytes) else {
            return .failure(ControlChangeRefusal("full"))
        }
        return .success(a)
    }
    func detachCapture(_ capture: CaptureAttachment) -> Int { state.captures.detach(capture) }
    // No worker steps here: the test is the only producer, and it has stopped when it ends a stream.
    func capturesSettled(_ version: Int) -> Bool { true }

    /// The capture attached now, once the server has attached it (10 s at most).
    func waitForAttachment() -> CaptureAttachment? {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let a = state.captures.attachments.first { return a }
            usleep(2000)
        }
        return nil
    }
}

/// What a client thread got.
final class StreamResult: @unchecked Sendable {
    var bytes: [UInt8] = []
    var summary: CaptureStreamSummary?
    var error: ControlClientError?
    let done = DispatchSemaphore(value: 0)
}

@Suite("Capture streams")
struct CaptureStreamTests {
    func withServer(_ source: CapturingSource, _ body: (String) throws -> Void) throws {
        let dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-cap-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/ferry0.sock"
        let server = try ControlServer(path: path)
        server.start(serving: source, logger: Logger(label: "capture-test"))
        defer {
            server.stop()
            server.wait()
        }
        try body(path)
    }

    /// Runs `ferry ctl capture`'s client for `request` on a thread of its own.
    func startClient(_ request: CaptureRequest, _ path: String) -> StreamResult {
        let result = StreamResult()
        Thread {
            do {
                result.summary = try ControlClient.capture(request, at: path) { bytes in
                    result.bytes += bytes
                    return true
                }
            } catch {
                result.error = error as? ControlClientError
            }
            result.done.signal()
        }.start()
        return result
    }

    static func frame(_ k: Int, length: Int = 200) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: length)
        f[0] = 0x02; f[5] = 1; f[6] = 0x02; f[11] = 2; f[12] = 0x08; f[13] = 0
        f[14] = UInt8(truncatingIfNeeded: k); f[15] = UInt8(truncatingIfNeeded: k >> 8)
        return f
    }

    @Test("the request line is parsed and checked: point, count, duration, and a filter with spaces taking the rest")
    func requestParser() throws {
        let r = try #require(try CaptureRequest(line: "capture point=drops count=5 duration=2.5 filter=udp port 4789\n"))
        #expect(r == CaptureRequest(point: .drops, filter: "udp port 4789", count: 5, duration: 2.5))
        #expect(try CaptureRequest(line: r.line) == r)
        #expect(try CaptureRequest(line: "capture") == CaptureRequest())
        #expect(try CaptureRequest(line: "stats") == nil)
        #expect(try CaptureRequest(line: "captures") == nil)
        for (line, says) in [("capture point=middle", "not a capture point"), ("capture count=0", "count must be"),
                             ("capture count=x", "count must be"), ("capture duration=-1", "duration must be"),
                             ("capture duration=nan", "duration must be"), ("capture colour=red", "unknown argument"),
                             ("capture inner", "not key=value")] {
            #expect(throws: ControlRequestError.self, "\(line)") { _ = try CaptureRequest(line: line) }
            do { _ = try CaptureRequest(line: line) } catch { #expect(error.description.contains(says), "\(line): \(error)") }
        }
    }

    @Test("refusals come as JSON before any pcapng: a bad point, a filter libpcap does not compile")
    func refusals() throws {
        let source = try CapturingSource()
        try withServer(source) { path in
            let client = try RawClient(path)
            client.send("capture point=sideways\n")
            let reply = try #require(client.readToEnd())
            #expect(String(decoding: reply, as: UTF8.self).contains("not a capture point"))
            do throws(ControlClientError) {
                _ = try ControlClient.capture(CaptureRequest(point: .inner, filter: "udp port banana"), at: path) { _ in true }
                Issue.record("a filter that does not compile was taken")
            } catch {
                guard case .refused(let message) = error else { Issue.record("\(error)"); return }
                #expect(message.contains("banana"), "\(message)")
            }
            #expect(source.state.captures.attachments.isEmpty)
        }
    }

    @Test("records stream as pcapng, one named interface per point, drops with their comment; the count ends it")
    func streamsUntilCount() throws {
        let source = try CapturingSource()
        try withServer(source) { path in
            let result = startClient(CaptureRequest(point: .all, count: 4), path)
            let capture = try #require(source.waitForAttachment())
            let ring = capture.rings[0]
            Self.frame(1).withUnsafeBytes { _ = ring.record($0, at: .inner) }
            Self.frame(2).withUnsafeBytes { _ = ring.record($0, at: .outer) }
            Self.frame(3).withUnsafeBytes {
                _ = ring.recordDrop($0, reason: .unexpectedVNI, direction: .ingress, peer: .v4(IPv4Address(10, 99, 0, 3)))
            }
            Self.frame(4).withUnsafeBytes { _ = ring.record($0, at: .inner) }
            Self.frame(5).withUnsafeBytes { _ = ring.record($0, at: .inner) }  // past the count
            #expect(result.done.wait(timeout: .now() + 10) == .success)
            #expect(result.error == nil)
            let summary = try #require(result.summary)
            #expect(summary.records == 4 && summary.lost == 0)
            #expect(summary.report == "4 records, 0 lost (reader too slow)")
            // Read back a byte at a time, as a stream may come.
            var bytewise = CaptureStreamSummary()
            for b in result.bytes { [b].withUnsafeBytes { bytewise.consume($0) } }
            #expect(bytewise.records == 4 && bytewise.lost == 0)
            var blocks = PcapngBlocks(result.bytes).makeIterator()
            var packets: [PcapngBlocks.Packet] = []
            while let p = try blocks.nextPacket() { packets.append(p) }
            #expect(blocks.interfaces.map(\.name) == ["inner", "outer", "drops"])
            #expect(packets.map { Array($0.data) } == [Self.frame(1), Self.frame(2), Self.frame(3), Self.frame(4)])
            #expect(packets.map(\.interfaceName) == ["inner", "outer", "drops", "inner"])
            #expect(packets[2].comments == ["drop unexpected_vni peer=10.99.0.3 worker=0 direction=ingress"])
            #expect(packets[0].comments.isEmpty)
            #expect(source.state.captures.attachments.isEmpty, "detached at the end")
        }
    }

    @Test("records that do not fit the capture's rings are lost, counted, and reported at the end of the stream")
    func lossIsReported() throws {
        // 8 KiB rings: 33 records of 200 bytes at most wait.
        let source = try CapturingSource(ringBytes: 8192)
        try withServer(source) { path in
            let result = startClient(CaptureRequest(point: .inner, duration: 1), path)
            let capture = try #require(source.waitForAttachment())
            for k in 0..<500 { Self.frame(k).withUnsafeBytes { _ = capture.rings[0].record($0, at: .inner) } }
            #expect(result.done.wait(timeout: .now() + 10) == .success)
            let summary = try #require(result.summary)
            let lost = try #require(summary.lost)
            #expect(lost > 0 && lost == capture.dropped)
            #expect(summary.records + lost == 500)
            #expect(summary.report == "\(summary.records) records, \(lost) lost (reader too slow)")
        }
    }

    @Test("a client that hangs up is detached at once; one that shuts its sending side gets a clean end")
    func hangUpAndCleanEnd() throws {
        let source = try CapturingSource()
        try withServer(source) { path in
            var first: RawClient? = try RawClient(path)
            first!.send(CaptureRequest(point: .inner).line)
            _ = try #require(source.waitForAttachment())
            first = nil  // closed
            #expect(first == nil)
            let deadline = Date().addingTimeInterval(5)
            while !source.state.captures.attachments.isEmpty && Date() < deadline { usleep(2000) }
            #expect(source.state.captures.attachments.isEmpty, "a capture outlived its client")

            let client = try RawClient(path)
            client.send(CaptureRequest(point: .inner).line)
            let capture = try #require(source.waitForAttachment())
            Self.frame(9).withUnsafeBytes { _ = capture.rings[0].record($0, at: .inner) }
            shutdown(client.fd, Int32(SHUT_WR))
            let bytes = try #require(client.readToEnd())
            var summary = CaptureStreamSummary()
            bytes.withUnsafeBytes { summary.consume($0) }
            #expect(summary.records == 1 && summary.lost == 0)
        }
    }
}
