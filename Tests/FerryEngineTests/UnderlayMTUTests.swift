// The underlay MTU in use is shared by the workers and may change while they run (the engine
// follows the interface's): each egress step takes the value in use, for what crosses whole
// and for the MTU its ICMP errors announce.

import FerryEngine
import FerryLinux
import FerryWire
import Testing

@Suite("Underlay MTU followed")
struct UnderlayMTUTests {
    /// The MTU an ICMP "fragmentation needed" written to the TAP announces.
    func announcedMTU(_ h: Harness) -> Int? {
        guard let icmp = h.device.written.last, icmp.count >= 42, icmp[34] == ICMPv4.destinationUnreachable else { return nil }
        return Int(u16(icmp, 40))
    }

    @Test func aLoweredMTUTakesEffectAtTheNextStepAndARaisedOneToo() throws {
        let h = try Harness()  // VXLAN over IPv4: 36 bytes of IP overhead, underlay MTU 1500
        #expect(h.worker.state.underlayMTU.load() == 1500 && h.statistics.underlayMTU == 1500)
        let full = udpFrame(to: remoteMAC, length: 1500 - 36)
        try h.egress(full)
        #expect(h.transport.sent.count == 2 && h.drops(.oversizeFrame) == 0, "fits a 1500-byte underlay (flooded to both peers)")

        #expect(h.worker.state.underlayMTU.publish(1400) == 1500)
        #expect(h.worker.state.underlayMTU.publish(1400) == nil, "the same value again is no change")
        #expect(h.statistics.underlayMTU == 1400)
        try h.egress(full)
        #expect(h.transport.sent.count == 2, "too big for 1400 now: nothing sent")
        #expect(h.drops(.oversizeFrame) == 1 && h.counter(.icmpErrorsSent) == 1)
        #expect(announcedMTU(h) == 1400 - 36 - 14, "the ICMP error announces the new MTU")
        let fits = udpFrame(to: remoteMAC, length: 1400 - 36)
        try h.egress(fits)
        #expect(h.transport.sent.count == 4 && h.transport.sent.suffix(2).allSatisfy { $0.bytes.count == 1400 },
                "the largest frame that fits 1400 crosses, as 1400-byte packets")
        try h.egress(udpFrame(to: remoteMAC, length: 1400 - 36 + 1))
        #expect(h.drops(.oversizeFrame) == 2, "one byte more does not")

        #expect(h.worker.state.underlayMTU.publish(1500) == 1400)
        try h.egress(full)
        #expect(h.transport.sent.count == 6 && h.drops(.oversizeFrame) == 2, "back at 1500: the full frame crosses again")
    }

    /// Over an IPv6 underlay the overhead is 56: the ICMPv6 error for an inner IPv6 packet
    /// announces the new MTU less that and the inner Ethernet header.
    @Test func anIPv6UnderlayAnnouncesItsNewMTU() throws {
        let h = try Harness(.vxlan6)
        #expect(h.worker.state.underlayMTU.publish(1380) == 1500)
        try h.egress(udpFrame(to: remoteMAC, length: 1500 - 56, ipv6: true))
        #expect(h.transport.sent.isEmpty && h.drops(.oversizeFrame) == 1)
        let icmp = try #require(h.device.written.last)
        #expect(icmp[54] == ICMPv6.packetTooBig && u32(icmp, 58) == 1380 - 56 - 14)
    }
}
