import FerryCapture
import FerryWire
import Foundation
@testable import FerryPcapTools
import Testing

/// `diffCaptures` on two captures of one transfer, B made from A by the test: frames removed,
/// reordered, altered (TTL, a payload byte) and duplicated. The diff must report exactly those.
@Suite struct CaptureDiffTests {
    static let mac1 = MACAddress(0x02, 0, 0, 0, 0, 0x01), mac2 = MACAddress(0x02, 0, 0, 0, 0, 0x02)
    static let h1 = IPv4Address(10, 17, 0, 2), h2 = IPv4Address(10, 18, 0, 2)
    static let start: Int64 = 1_767_225_600_000_000  // µs

    /// A frame of the transfer, with when A and B saw it (µs), and whether h1 sent it.
    struct Sent {
        var frame: [UInt8]
        var timeA: Int64
        var timeB: Int64
    }

    /// One transfer: 20 TCP data segments h1 → h2, an ACK h2 → h1 after every other one, and
    /// three pings with their replies. A sees h1's frames 200 µs before B, and h2's 200 µs after.
    static func transfer() -> [Sent] {
        var out: [Sent] = []
        var t = start
        for k in 0..<20 {
            t += 1000
            let data = FrameBuilder.frame(destinationMAC: mac2, sourceMAC: mac1, source: .v4(h1), destination: .v4(h2),
                                          identification: UInt16(100 + k),
                                          payload: .tcp(sourcePort: 40000, destinationPort: 5201, sequence: UInt32(1 + 1000 * k),
                                                        acknowledgment: 1, flags: 0x18, data: FrameBuilder.pattern(1000, seed: UInt8(k))))
            out.append(Sent(frame: data, timeA: t, timeB: t + 200))
            if k % 2 == 1 {
                t += 300
                let ack = FrameBuilder.frame(destinationMAC: mac1, sourceMAC: mac2, source: .v4(h2), destination: .v4(h1),
                                             identification: UInt16(500 + k),
                                             payload: .tcp(sourcePort: 5201, destinationPort: 40000, sequence: 1,
                                                           acknowledgment: UInt32(1 + 1000 * (k + 1)), flags: 0x10, data: []))
                out.append(Sent(frame: ack, timeA: t + 200, timeB: t))
            }
        }
        for seq in 1...3 {
            t += 1000
            let request = FrameBuilder.frame(destinationMAC: mac2, sourceMAC: mac1, source: .v4(h1), destination: .v4(h2),
                                             identification: UInt16(900 + seq),
                                             payload: .icmpEcho(request: true, identifier: 7, sequence: UInt16(seq), data: FrameBuilder.pattern(56)))
            out.append(Sent(frame: request, timeA: t, timeB: t + 200))
            let reply = FrameBuilder.frame(destinationMAC: mac1, sourceMAC: mac2, source: .v4(h2), destination: .v4(h1),
                                           identification: UInt16(950 + seq),
                                           payload: .icmpEcho(request: false, identifier: 7, sequence: UInt16(seq), data: FrameBuilder.pattern(56)))
            out.append(Sent(frame: reply, timeA: t + 600, timeB: t + 400))
        }
        return out
    }

    static func write(_ frames: [(bytes: [UInt8], time: Int64)], to path: String) throws {
        let writer = try PcapFileWriter(path: path)
        for f in frames {
            writer.write(f.bytes, timestamp: PacketTimestamp(seconds: f.time / 1_000_000, microseconds: Int32(f.time % 1_000_000)))
        }
        try writer.close()
    }

    @Test func reportsExactlyWhatTheTestDid() throws {
        try TestSupport.withScratchDirectory { dir in
            let sent = Self.transfer()
            // A: h1's side, on the underlay: VXLAN (VNI 42), in the order A saw the frames.
            let inA = sent.sorted { $0.timeA < $1.timeA }
            try Self.write(inA.map { ($0.frame, $0.timeA) }, to: dir + "/a-inner.pcap")
            let options = try TunnelOptions(encapsulation: .vxlan(vni: 42), local: IPAddress("10.99.0.1")!,
                                            remote: IPAddress("10.99.0.2")!)
            _ = try encapsulateCapture(input: dir + "/a-inner.pcap", output: dir + "/a.pcap", options: options)

            // B: h2's side, plain, in the order B saw them, then what the test does to it.
            var inB = sent.sorted { $0.timeB < $1.timeB }.map { (bytes: $0.frame, time: $0.timeB) }
            // The data segments are inB's frames whose TCP source port is 40000.
            func isData(_ f: [UInt8]) -> Bool { f.count > 40 && f[12] == 0x08 && f[23] == 6 && f[34] == 0x9C && f[35] == 0x40 }
            let data = inB.indices.filter { isData(inB[$0].bytes) }
            #expect(data.count == 20)
            // Altered: segment 5's TTL (64 → 61, the IP checksum made right again), segment 14's
            // payload byte 100 (the TCP checksum left as it was).
            inB[data[5]].bytes = FrameBuilder.frame(destinationMAC: Self.mac2, sourceMAC: Self.mac1, source: .v4(Self.h1),
                                                    destination: .v4(Self.h2), ttl: 61, identification: 105,
                                                    payload: .tcp(sourcePort: 40000, destinationPort: 5201, sequence: 5001,
                                                                  acknowledgment: 1, flags: 0x18,
                                                                  data: FrameBuilder.pattern(1000, seed: 5)))
            inB[data[14]].bytes[14 + 20 + 20 + 100] ^= 0xFF
            // Duplicated: segment 16, again right after itself.
            inB.insert(inB[data[16]], at: data[16] + 1)
            // Reordered: segment 11 held back until 50 µs after segment 12 (sent 1300 µs after
            // it): its delay is 1550 µs.
            let t12 = inB[data[12]].time
            inB.swapAt(data[11], data[12])
            inB[data[12]].time = t12 + 50
            // Lost: segments 3 and 8.
            inB.remove(at: data[8])
            inB.remove(at: data[3])
            try Self.write(inB, to: dir + "/b.pcap")

            let diff = try diffCaptures(a: dir + "/a.pcap", b: dir + "/b.pcap")
            #expect(diff.a.form == "tunnel" && diff.a.compared == sent.count && diff.a.tunnels == ["vxlan vni 42": sent.count])
            #expect(diff.b.form == "plain" && diff.b.compared == sent.count - 2 + 1)
            // Frame numbers in A: where each data segment sits there (1-based).
            let dataInA = inA.indices.filter { isData(inA[$0].frame) }.map { $0 + 1 }
            // …and in B, as written.
            let bNumbers = try PcapFileReader(path: dir + "/b.pcap").readAll().enumerated()
                .filter { isData(Array($0.element.bytes)) }.map { $0.offset + 1 }

            #expect(diff.flows.map(\.flow) == ["tcp 10.17.0.2:40000 > 10.18.0.2:5201", "tcp 10.18.0.2:5201 > 10.17.0.2:40000",
                                              "icmp 10.17.0.2 > 10.18.0.2", "icmp 10.18.0.2 > 10.17.0.2"])
            let segments = diff.flows[0]
            #expect(segments.direction == "a>b")
            #expect(segments.inA == 20 && segments.inB == 19 && segments.matched == 18)
            #expect(segments.lost == [dataInA[3], dataInA[8]])
            // B's data frames: 0,1,2,4,5,6,7,9,10,12,11,13,14,15,16,16',17,18,19.
            #expect(segments.reordered == [bNumbers[10]])
            #expect(segments.duplicated == [bNumbers[15]])
            #expect(segments.unexpected.isEmpty)
            #expect(segments.altered.map(\.a) == [dataInA[5], dataInA[14]])
            #expect(segments.altered[0].fields.keys.sorted() == ["ip checksum", "ttl"])
            #expect(segments.altered[0].fields["ttl"] == "64 → 61")
            #expect(segments.altered[1].fields == ["payload": "byte 100: 0x\(String(FrameBuilder.pattern(1000, seed: 14)[100], radix: 16)) → 0x\(String(FrameBuilder.pattern(1000, seed: 14)[100] ^ 0xFF, radix: 16))"])
            #expect(segments.alteredFields == ["ttl": 1, "ip checksum": 1, "payload": 1])
            #expect(segments.delays == CaptureDiff.Delays(count: 18, minimum: 200, p50: 200, p99: 1550, maximum: 1550, negative: 0))

            // The other flows came through whole; the replies and ACKs go B → A.
            for f in diff.flows.dropFirst() {
                #expect(f.lost.isEmpty && f.unexpected.isEmpty && f.duplicated.isEmpty && f.reordered.isEmpty && f.altered.isEmpty,
                        "\(f.flow)")
                #expect(f.matched == f.inA && f.inA == f.inB)
                #expect(f.delays?.p50 == 200 && f.delays?.maximum == 200)
            }
            #expect(diff.flows[1].direction == "b>a" && diff.flows[2].direction == "a>b" && diff.flows[3].direction == "b>a")
            #expect(diff.lost == 2 && diff.duplicated == 1 && diff.reordered == 1 && diff.altered == 2 && diff.unexpected == 0)
            #expect(diff.clocksComparable)
        }
    }

    /// Two sides whose clocks are apart by more than the delay: said, not hidden.
    @Test func clocksApartAreSaid() throws {
        try TestSupport.withScratchDirectory { dir in
            let sent = Self.transfer()
            try Self.write(sent.map { ($0.frame, $0.timeA) }, to: dir + "/a.pcap")
            // B's clock 150 µs behind, and jitter: some of h1's frames reach B "before" they left.
            try Self.write(sent.enumerated().map { k, s in (s.frame, s.timeB - 150 - (k % 3 == 0 ? 100 : 0)) }, to: dir + "/b.pcap")
            let diff = try diffCaptures(a: dir + "/a.pcap", b: dir + "/b.pcap")
            #expect(diff.lost == 0 && diff.altered == 0 && diff.matched == sent.count)
            #expect(!diff.clocksComparable)
            #expect((diff.flows[0].delays?.negative ?? 0) > 0)
        }
    }

    /// A capture against itself: everything matched, nothing else; and a capture against an
    /// empty one: everything only in A.
    @Test func identicalAndEmpty() throws {
        try TestSupport.withScratchDirectory { dir in
            let frames = TestSupport.sample.map(\.frame)
            try TestSupport.write(frames, to: dir + "/a.pcap")
            let same = try diffCaptures(a: dir + "/a.pcap", b: dir + "/a.pcap")
            #expect(same.matched == frames.count && same.lost == 0 && same.altered == 0 && same.unexpected == 0)
            #expect(same.flows.allSatisfy { $0.delays?.maximum == 0 })
            try TestSupport.write([], to: dir + "/empty.pcap")
            let gone = try diffCaptures(a: dir + "/a.pcap", b: dir + "/empty.pcap")
            #expect(gone.matched == 0 && gone.lost == frames.count && gone.flows.allSatisfy { $0.direction == nil })
        }
    }
}
