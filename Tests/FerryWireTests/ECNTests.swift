import FerryWire
import Testing

/// RFC 6040 at decapsulation: CE outside reaches the inner header; CE over a packet that
/// cannot carry it is dropped; nothing else changes.
@Suite struct ECNTests {
    static func ipv4(ecn: UInt8, vlan: UInt16? = nil) -> [UInt8] {
        FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, vlan: vlan, tos: 0xB8 | ecn,
                           payload: .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(40)), pad: false)
    }

    static func ipv6(ecn: UInt8) -> [UInt8] {
        FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: v6A, destination: v6B, tos: 0xB8 | ecn,
                           payload: .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(40)), pad: false)
    }

    static func apply(_ outer: UInt8, _ frame: [UInt8]) -> (ECN.Outcome, [UInt8]) {
        var f = frame
        let outcome = f.withUnsafeMutableBytes { ECN.decapsulate(outer: outer, frame: $0) }
        return (outcome, f)
    }

    @Test("CE outside marks an ECN-capable inner packet, checksum and all", arguments: [ECN.ect0, ECN.ect1])
    func ceReachesTheInnerPacket(inner: UInt8) {
        for (frame, l3) in [(Self.ipv4(ecn: inner), 14), (Self.ipv4(ecn: inner, vlan: 7), 18)] {
            let (outcome, marked) = Self.apply(0xB8 | ECN.ce, frame)
            #expect(outcome == .marked)
            #expect(marked[l3 + 1] == 0xB8 | ECN.ce, "the DSCP stays, the ECN field becomes CE")
            #expect(marked.withUnsafeBytes { InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: $0[l3..<(l3 + 20)])) })
            var expected = frame
            expected[l3 + 1] = marked[l3 + 1]
            expected[l3 + 10] = marked[l3 + 10]
            expected[l3 + 11] = marked[l3 + 11]
            #expect(marked == expected, "only the TOS and the header checksum change")
        }
        let six = Self.ipv6(ecn: inner)
        let (outcome, marked) = Self.apply(ECN.ce, six)
        #expect(outcome == .marked)
        let trafficClass = (marked[14] & 0x0F) << 4 | marked[15] >> 4
        #expect(trafficClass == 0xB8 | ECN.ce)
        var expected = six
        expected[15] = marked[15]
        #expect(marked == expected, "only the traffic class changes; the flow label stays")
    }

    @Test("CE over a packet that is not ECN-capable is dropped")
    func ceOverNotECTDrops() {
        #expect(Self.apply(ECN.ce, Self.ipv4(ecn: ECN.notECT)).0 == .drop)
        #expect(Self.apply(ECN.ce, Self.ipv6(ecn: ECN.notECT)).0 == .drop)
    }

    @Test("anything else passes untouched")
    func otherwiseUnchanged() {
        for outer in [ECN.notECT, ECN.ect0, ECN.ect1] {
            for inner in [ECN.notECT, ECN.ect0, ECN.ect1, ECN.ce] {
                for frame in [Self.ipv4(ecn: inner), Self.ipv6(ecn: inner)] {
                    let (outcome, after) = Self.apply(outer, frame)
                    #expect(outcome == .unchanged && after == frame, "outer \(outer) inner \(inner)")
                }
            }
        }
        // CE inside already; and a frame that is not IP (ARP) cannot carry a mark.
        for frame in [Self.ipv4(ecn: ECN.ce), Self.ipv6(ecn: ECN.ce),
                      FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: macA,
                                         payload: .arp(operation: 1, senderIP: IPv4Address(10, 0, 0, 1),
                                                       targetIP: IPv4Address(10, 0, 0, 2), targetMAC: .zero))] {
            let (outcome, after) = Self.apply(ECN.ce, frame)
            #expect(outcome == .unchanged && after == frame)
        }
    }
}
