import FerryEngine
import FerryLinux
import FerryWire
import Foundation
import Testing

/// GRE's link path: a peer whose next hop is known gets its packets through the packet socket,
/// addressed to that MAC on that device, whole GRE packets as the IP path would send them; a
/// peer without one, or once its next hop is withdrawn, goes through the IP path.
@Suite struct LinkPathTests {
    @Test(arguments: [Variant.gre4, .gre6])
    func aPeerWithANextHopIsSentToOnTheLink(_ variant: Variant) throws {
        let h = try Harness(variant, link: true)
        let hop = LinkNextHop(interfaceIndex: 7, mac: MACAddress(0x02, 0xAB, 0, 0, 0, 0x07))
        let a = try #require(h.worker.peers.index(of: variant.peerA))
        h.worker.peers[a].setLinkNextHop(hop)

        let frame = udpFrame()
        try h.egress([frame])  // flooded: to both peers
        try #require(h.transport.linkSent.count == 1 && h.transport.sent.count == 1)
        let onLink = h.transport.linkSent[0]
        let destination = try #require(onLink.destination)
        #expect(destination.interfaceIndex == 7 && destination.mac == hop.mac)
        #expect(destination.etherType == (variant.ipv6 ? EtherType.ipv6 : EtherType.ipv4))
        // The very packet the IP path sends: outer header to peer A, the frame inside.
        let packet = try #require(decapsulate(ipPacket: onLink.bytes).packet)
        #expect(packet.kind == .gre && packet.tunnelID == 42)
        #expect(packet.outerSource == variant.local && packet.outerDestination == variant.peerA)
        #expect(Array(onLink.bytes[packet.inner]) == frame)
        #expect(h.transport.sent[0].destination == variant.peerB, "peer B has no next hop: the IP path")

        let s = h.statistics
        #expect(s.counter(.sentPackets) == 2 && s.counter(.linkSentPackets) == 1)
        #expect(h.peerStatistics(variant.peerA)?.txPackets == 1 && h.peerStatistics(variant.peerB)?.txPackets == 1)
        #expect(h.peerStatistics(variant.peerA)?.txBytes == UInt64(onLink.bytes.count))

        // Withdrawn (unresolved, or a route change): back to the IP path.
        h.worker.peers[a].setLinkNextHop(nil)
        try h.egress([frame])
        #expect(h.transport.linkSent.count == 1 && h.transport.sent.count == 3)
        #expect(h.counter(.linkSentPackets) == 1)
    }

    @Test func aNewNextHopReplacesTheOld() throws {
        let h = try Harness(.gre4, peers: [peer4a], link: true)
        let peer = h.worker.peers[0]
        for n in 1...3 {
            let hop = LinkNextHop(interfaceIndex: Int32(n), mac: MACAddress(0x02, 0, 0, 0, 0, UInt8(n)))
            peer.setLinkNextHop(hop)
            try h.egress([udpFrame()])
            #expect(h.transport.linkSent.last?.destination?.mac == hop.mac)
            #expect(h.transport.linkSent.last?.destination?.interfaceIndex == Int32(n))
        }
        #expect(h.transport.linkSent.count == 3 && h.transport.sent.isEmpty)
    }

    /// The seqlock: a reader never keeps a next hop torn between two writes (each hop's MAC
    /// ends in its interface index), however the writer and it interleave. Under TSan, the
    /// words are atomics: no race is reported.
    @Test func aReaderNeverSeesATornNextHop() throws {
        let h = try Harness(.gre4, peers: [peer4a], link: true)
        let peer = h.worker.peers[0]
        let done = DispatchSemaphore(value: 0)
        Thread {
            for n in 0..<20_000 {
                let i = Int32(n % 250 + 1)
                peer.setLinkNextHop(n % 7 == 6 ? nil : LinkNextHop(interfaceIndex: i, mac: MACAddress(0x02, UInt8(i), 0, 0, 0, UInt8(i))))
            }
            done.signal()
        }.start()
        var reads = 0, torn = 0, none = 0
        while done.wait(timeout: .now()) == .timedOut || reads == 0 {
            reads += 1
            guard let hop = peer.linkPath else { none += 1; continue }
            let mac = hop.mac.description.split(separator: ":")
            if Int32(mac[5], radix: 16) != hop.interfaceIndex || Int32(mac[1], radix: 16) != hop.interfaceIndex { torn += 1 }
        }
        #expect(torn == 0, "\(torn) torn of \(reads) reads")
    }
}
