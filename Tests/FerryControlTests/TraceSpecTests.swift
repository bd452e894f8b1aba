// `ferry ctl trace`'s words (`TraceSpec`) and its request line (`TraceRequest`): the frames they
// describe, and the refusals that say the right form.

import FerryControl
import FerryEngine
import FerryWire
import Testing

@Suite("Trace specs and requests")
struct TraceSpecTests {
    func words(_ text: String) -> [String] { text.split(separator: " ").map(String.init) }

    @Test("an egress flow spec builds the frame it names")
    func egressSpec() throws {
        let spec = try TraceSpec(words: words("in=tap dst=02:00:00:00:00:01 src=02:00:00:00:00:02 ipv4 10.17.0.2>10.18.0.2 tcp 80"),
                                 hasBytes: false)
        #expect(spec.direction == .egress)
        let frame = try #require(spec.frame)
        let expected = FrameBuilder.frame(destinationMAC: MACAddress("02:00:00:00:00:01")!, sourceMAC: MACAddress("02:00:00:00:00:02")!,
                                          source: IPAddress("10.17.0.2")!, destination: IPAddress("10.18.0.2")!,
                                          payload: .tcp(sourcePort: 40000, destinationPort: 80, sequence: 1, acknowledgment: 0,
                                                        flags: 0x18, data: []))
        #expect(frame == expected)
    }

    @Test("len= makes the frame that long; ingress words give the direction")
    func lengthAndIngress() throws {
        let spec = try TraceSpec(words: words("in=tunnel from=10.99.0.2 vni=7 ecn=ce dst=02:00:00:00:00:01 ipv6 fd00::2>fd00::1 udp 5000>53 len=1600"),
                                 hasBytes: false)
        #expect(spec.direction == .ingress(from: IPAddress("10.99.0.2")!, tunnelID: 7, outerECN: 3))
        let frame = try #require(spec.frame)
        #expect(frame.count == 1600)
        #expect(frame[12] == 0x86 && frame[13] == 0xdd && frame[20] == 17)
        #expect(try TraceSpec(words: words("in=tap dst=ff:ff:ff:ff:ff:ff arp 10.17.0.2>10.17.0.3"), hasBytes: false).frame?[13] == 0x06)
        // A>B or A,B (no quoting in a shell).
        #expect(try TraceSpec(words: words("in=tap dst=02:00:00:00:00:01 ipv4 10.17.0.2,10.18.0.2 udp 1,2"), hasBytes: false)
                == TraceSpec(words: words("in=tap dst=02:00:00:00:00:01 ipv4 10.17.0.2>10.18.0.2 udp 1>2"), hasBytes: false))
    }

    @Test("bytes given apart: only the direction's words", arguments: [
        ("in=tap", TraceDirection.egress),
        ("in=tunnel", TraceDirection.ingress(from: nil, tunnelID: nil, outerECN: 0)),
        ("in=tunnel from=fd00::2 key=9", TraceDirection.ingress(from: IPAddress("fd00::2")!, tunnelID: 9, outerECN: 0)),
    ])
    func withBytes(text: String, direction: TraceDirection) throws {
        let spec = try TraceSpec(words: words(text), hasBytes: true)
        #expect(spec.direction == direction && spec.frame == nil)
    }

    @Test("a bad spec says what is wrong and the right form", arguments: [
        ("in=bridge dst=02:00:00:00:00:01", "in=tap"),
        ("dst=02:00:00:00:00:zz", "not a MAC address"),
        ("dst=02:00:00:00:00:01 ipv4 10.17.0.2", "SOURCE>DESTINATION"),
        ("dst=02:00:00:00:00:01 ipv4 10.17.0.2>fd00::1", "both IPv4"),
        ("dst=02:00:00:00:00:01 tcp 80", "needs ipv4 or ipv6"),
        ("dst=02:00:00:00:00:01 ipv4 10.0.0.1>10.0.0.2 tcp http", "[SPORT>]DPORT"),
        ("ipv4 10.0.0.1>10.0.0.2", "dst=MAC"),
        ("from=10.99.0.2 dst=02:00:00:00:00:01", "in=tunnel"),
        ("in=tunnel dst=02:00:00:00:00:01", "from=ADDRESS"),
        ("in=tap frobnicate", "unknown word"),
        ("in=tunnel from=10.99.0.2 ecn=lots", "ecn="),
    ])
    func badSpec(text: String, expected: String) {
        do {
            _ = try TraceSpec(words: words(text), hasBytes: false)
            Issue.record("'\(text)' parsed")
        } catch {
            #expect(error.description.contains(expected), "\(error)")
            #expect(error.description.contains("e.g. in=tap"), "the right form is given: \(error)")
        }
    }

    @Test("frame words with --hex are refused")
    func wordsAndBytes() {
        #expect(throws: TraceSpecError.self) { try TraceSpec(words: words("in=tap dst=02:00:00:00:00:01"), hasBytes: true) }
    }

    @Test("the request line round-trips, and a bad one is refused with the forms", arguments: [
        TraceDirection.egress,
        .ingress(from: IPAddress("10.99.0.2")!, tunnelID: 42, outerECN: 3),
        .ingress(from: IPAddress("fd00::2")!, tunnelID: nil, outerECN: 0),
        .ingress(from: nil, tunnelID: nil, outerECN: 0),
    ])
    func requestLine(direction: TraceDirection) throws {
        let frame = FrameBuilder.pattern(1514)
        let request = TraceRequest(frame: frame, direction: direction)
        #expect(try TraceRequest(line: request.line) == request)
    }

    @Test("request lines that are not right")
    func badRequests() throws {
        #expect(try TraceRequest(line: "stats") == nil)
        for line in ["trace egress", "trace egress 0g", "trace egress abc", "trace sideways 00", "trace ingress 0000",
                     "trace ingress from=nowhere 0000", "trace ingress from=10.0.0.1 ecn=4 0000", "trace egress x=1 0000"] {
            #expect(throws: ControlRequestError.self, "\(line)") { try TraceRequest(line: line) }
        }
        let long = "trace egress " + String(repeating: "00", count: 70_000)
        #expect(throws: ControlRequestError.self) { try TraceRequest(line: long) }
        #expect(TraceRequest.bytes(fromHex: "02:00:00:00:00:01") == [2, 0, 0, 0, 0, 1])
    }
}
