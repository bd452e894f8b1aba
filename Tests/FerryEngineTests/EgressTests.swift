// Egress: frames read from the TAP, looked up, encapsulated per peer and sent in one batch.

import FerryEngine
import FerryLinux
import FerryWire
import Testing

@Suite("Egress: TAP → tunnel")
struct EgressTests {
    @Test("a broadcast is replicated to every peer, each copy a packet its peer decapsulates", arguments: Variant.all)
    func broadcastIsReplicatedToEveryPeer(variant: Variant) throws {
        let h = try Harness(variant)
        let frame = arpRequest(from: localMAC)
        #expect(try h.egress(frame) == 1)

        #expect(h.transport.sendCalls == 1)
        try #require(h.transport.sent.count == 2)
        #expect(Set(h.sentTo.compactMap { $0 }) == [variant.peerA, variant.peerB])
        for packet in h.transport.sent {
            let result = decapsulate(ipPacket: packet.bytes)
            let decapsulated = try #require(result.packet, "peer would drop it: \(String(describing: result.dropReason))")
            #expect(decapsulated.kind == variant.encapsulation.kind)
            #expect(decapsulated.tunnelID == 42)
            #expect(decapsulated.outerSource == variant.local)
            #expect(decapsulated.outerDestination == packet.destination)
            #expect(Array(packet.bytes[decapsulated.inner]) == frame)
            #expect(packet.bytes.count == h.configuration.ipOverhead + frame.count)
        }

        let s = h.statistics
        #expect(s.counter(.floodedFrames) == 1)
        #expect(s.counter(.unicastFrames) == 0)
        #expect(s.counter(.tapReceivedFrames) == 1)
        #expect(s.counter(.tapReceivedBytes) == UInt64(frame.count))
        #expect(s.counter(.sentPackets) == 2)
        #expect(s.counter(.sentBytes) == UInt64(2 * (h.configuration.ipOverhead + frame.count)))
        for peer in [variant.peerA, variant.peerB] {
            let p = try #require(h.peerStatistics(peer))
            #expect(p.txPackets == 1)
            #expect(p.txBytes == UInt64(h.configuration.ipOverhead + frame.count))
            #expect(p.rxPackets == 0)
        }
        #expect(s.totalDrops == 0)
    }

    @Test("unknown unicast and multicast destinations are flooded too")
    func unknownUnicastAndMulticastAreFlooded() throws {
        let h = try Harness()
        let multicast = MACAddress(0x01, 0x00, 0x5E, 0x01, 0x02, 0x03)
        try h.egress([udpFrame(to: remoteMAC), udpFrame(to: multicast)])
        #expect(h.transport.sent.count == 4)
        #expect(h.counter(.floodedFrames) == 2)
        #expect(h.sentTo.filter { $0 == peer4a }.count == 2)
        #expect(h.sentTo.filter { $0 == peer4b }.count == 2)
    }

    @Test("a full batch of 64 frames goes in one step and one send of 128 messages")
    func fullBatchInOneStep() throws {
        let h = try Harness()
        let frames = (0..<64).map { udpFrame(sourcePort: 30000 + UInt16($0), seed: UInt8($0)) }
        #expect(try h.egress(frames) == 64)
        #expect(h.device.pending.isEmpty)
        #expect(h.transport.sendCalls == 1)
        try #require(h.transport.sent.count == 128)
        #expect(h.counter(.floodedFrames) == 64)
        #expect(h.counter(.sentPackets) == 128)
        // Each frame went to both peers, intact and in order.
        for (k, frame) in frames.enumerated() {
            for copy in h.transport.sent[(2 * k)..<(2 * k + 2)] {
                let inner = try #require(decapsulate(ipPacket: copy.bytes).packet?.inner)
                #expect(Array(copy.bytes[inner]) == frame)
            }
        }

        // A 65th frame waits for the next step.
        #expect(try h.egress(frames + [udpFrame(seed: 99)]) == 64)
        #expect(h.device.pending.count == 1)
        #expect(try h.worker.egressStep() == 1)
        #expect(try h.worker.egressStep() == 0)
        #expect(h.transport.sent.count == 2 * 129)
    }

    @Test("three peers overflow the send batch mid-step without losing or mixing a message")
    func sendBatchOverflowFlushesInTheMiddle() throws {
        let third = IPAddress.v4(IPv4Address(10, 99, 0, 4))
        let h = try Harness(peers: [peer4a, peer4b, third])
        let frames = (0..<64).map { udpFrame(sourcePort: 30000 + UInt16($0), seed: UInt8($0)) }
        #expect(try h.egress(frames) == 64)
        try #require(h.transport.sent.count == 192)
        #expect(h.transport.sendCalls >= 2)
        for (k, frame) in frames.enumerated() {
            let copies = h.transport.sent[(3 * k)..<(3 * k + 3)]
            #expect(copies.map(\.destination) == [peer4a, peer4b, third])
            for copy in copies {
                let inner = try #require(decapsulate(ipPacket: copy.bytes).packet?.inner)
                #expect(Array(copy.bytes[inner]) == frame)
            }
        }
        for peer in [peer4a, peer4b, third] { #expect(h.peerStatistics(peer)?.txPackets == 64) }
    }

    @Test("with no peer configured and none learned yet, a flooded frame counts no_peer")
    func noPeer() throws {
        let h = try Harness(peers: []) { $0.acceptAnyPeer = true }
        try h.egress([arpRequest(from: localMAC), udpFrame(to: remoteMAC)])
        #expect(h.transport.sent.isEmpty)
        #expect(h.drops(.noPeer) == 2)
        #expect(h.counter(.floodedFrames) == 0)
        #expect(h.counter(.sentPackets) == 0)
        #expect(h.statistics.totalDrops == 2)
    }

    @Test("a peer configured twice is one peer and gets one copy")
    func duplicatePeers() throws {
        let h = try Harness(peers: [peer4a, peer4b, peer4a])
        try h.egress(arpRequest(from: localMAC))
        #expect(h.sentTo == [peer4a, peer4b])
        #expect(h.statistics.peers.count == 2)
    }

    @Test("a frame shorter than an Ethernet header is a runt")
    func runtFrame() throws {
        let h = try Harness()
        try h.egress([[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0x11, 0, 0], udpFrame()])
        #expect(h.drops(.runtFrame) == 1)
        #expect(h.counter(.tapReceivedFrames) == 2)
        #expect(h.transport.sent.count == 2)
    }

    @Test("a send the transport refuses is counted under its reason and not as the peer's tx")
    func sendFailuresAreCounted() throws {
        let h = try Harness()
        var reason = DropReason.sendFailed
        h.transport.refuse = { _, destination in destination == peer4b ? reason : nil }
        let frame = arpRequest(from: localMAC)
        try h.egress(frame)
        reason = .sendBufferFull
        try h.egress(frame)

        #expect(h.drops(.sendFailed) == 1)
        #expect(h.drops(.sendBufferFull) == 1)
        #expect(h.sentTo == [peer4a, peer4a])
        let length = UInt64(h.configuration.ipOverhead + frame.count)
        #expect(h.peerStatistics(peer4a)?.txPackets == 2)
        #expect(h.peerStatistics(peer4a)?.txBytes == 2 * length)
        #expect(h.peerStatistics(peer4b)?.txPackets == 0)
        #expect(h.peerStatistics(peer4b)?.txBytes == 0)
        #expect(h.counter(.sentPackets) == 2)
        #expect(h.counter(.sentBytes) == 2 * length)
        #expect(h.counter(.floodedFrames) == 2)
    }

    @Test("a refusal in the middle of a batch counts only that message")
    func refusalInTheMiddleOfABatch() throws {
        let h = try Harness()
        h.transport.refuse = { ordinal, _ in ordinal == 3 ? .sendFailed : nil }
        try h.egress((0..<4).map { udpFrame(seed: UInt8($0)) })
        #expect(h.transport.sent.count == 7)
        #expect(h.drops(.sendFailed) == 1)
        #expect(h.peerStatistics(peer4a)?.txPackets == 4)
        #expect(h.peerStatistics(peer4b)?.txPackets == 3)
        #expect(h.counter(.sentPackets) == 7)
    }
}

@Suite("Egress: outer headers")
struct OuterHeaderTests {
    @Test("TTL, fixed TOS, DF, destination port and source-port range appear as configured")
    func vxlanOuterHeadersFollowTheConfiguration() throws {
        let h = try Harness {
            $0.ttl = 17
            $0.tos = .fixed(0x28)
            $0.dontFragment = .set
            $0.sourcePortRange = 40000...40099
            $0.udpChecksum = true
        }
        // Frames 0 and 1 are one flow (same addresses and ports, different payloads); the rest
        // are one flow each.
        var frames = [udpFrame(length: 100, sourcePort: 50000, seed: 0), udpFrame(length: 300, sourcePort: 50000, seed: 7)]
        frames += (1...14).map { udpFrame(sourcePort: 50000 + UInt16($0)) }
        try h.egress(frames)
        try #require(h.transport.sent.count == 2 * frames.count)

        var ports: [UInt16] = []
        var identifications: [IPAddress: Set<UInt16>] = [:]
        for packet in h.transport.sent {
            let b = packet.bytes
            let destination = try #require(packet.destination)
            #expect(b[0] == 0x45)
            #expect(b[1] == 0x28, "TOS")
            #expect(b[8] == 17, "TTL")
            #expect(b[9] == IPProtocol.udp)
            #expect(u16(b, 6) & IPv4.flagDontFragment != 0, "DF")
            #expect(Int(u16(b, 2)) == b.count, "total length")
            #expect(checksumVerifies(b[0..<20]), "IPv4 header checksum")
            #expect(IPAddress.v4(ipv4(b, 12)) == local4)
            #expect(IPAddress.v4(ipv4(b, 16)) == destination)
            #expect(u16(b, 22) == 4789)
            #expect(Int(u16(b, 24)) == b.count - 20, "UDP length")
            let sourcePort = u16(b, 20)
            #expect((40000...40099).contains(sourcePort))
            ports.append(sourcePort)
            identifications[destination, default: []].insert(u16(b, 4))
            // The UDP checksum, asked for, verifies.
            let verified = decapsulate(ipPacket: b, policy: DecapsulationPolicy(vni: 42, udpChecksum: .verify))
            #expect(verified.packet?.udpChecksum == .valid)
        }
        // One flow, one port: both frames of flow 0, to both peers.
        #expect(Set(ports[0..<4]).count == 1)
        // Both peers get the same port for a frame.
        for k in 0..<frames.count { #expect(ports[2 * k] == ports[2 * k + 1]) }
        // Different flows spread (a fixed hash of fixed inputs: deterministic).
        #expect(Set(ports).count > 1)
        // Every packet to a peer has its own IPv4 identification.
        #expect(identifications[peer4a]?.count == frames.count)
        #expect(identifications[peer4b]?.count == frames.count)
    }

    @Test("inherited TOS and DF are copied from the inner packet")
    func inheritedTOSAndDF() throws {
        let h = try Harness(peers: [peer4a]) {
            $0.tos = .inherit
            $0.dontFragment = .inherit
        }
        try h.egress([udpFrame(dontFragment: true, tos: 0xB8), udpFrame(dontFragment: false, tos: 0x20)])
        try #require(h.transport.sent.count == 2)
        let first = h.transport.sent[0].bytes
        let second = h.transport.sent[1].bytes
        #expect(first[1] == 0xB8)
        #expect(u16(first, 6) & IPv4.flagDontFragment != 0)
        #expect(second[1] == 0x20)
        #expect(u16(second, 6) & IPv4.flagDontFragment == 0)
        #expect(checksumVerifies(first[0..<20]) && checksumVerifies(second[0..<20]))
    }

    @Test("the default configuration leaves DF clear and TTL at 64")
    func defaults() throws {
        let h = try Harness(peers: [peer4a])
        try h.egress(udpFrame(dontFragment: true))
        let b = try #require(h.transport.sent.first?.bytes)
        #expect(b[8] == 64)
        #expect(b[1] == 0)
        #expect(u16(b, 6) & IPv4.flagDontFragment == 0)
        #expect((TunnelOptions.defaultSourcePortRange).contains(u16(b, 20)))
    }

    @Test("GRE with key, checksum and sequence: each peer's packets verify and count up")
    func greKeyChecksumSequence() throws {
        let h = try Harness(Variant(name: "GRE csum seq", encapsulation: .gre(GREOptions(key: 42, checksum: true, sequence: true)),
                                    ipv6: false)) {
            $0.ttl = 9
            $0.dontFragment = .set
        }
        try h.egress([udpFrame(seed: 1), udpFrame(seed: 2)])
        try #require(h.transport.sent.count == 4)
        var sequences: [IPAddress: [UInt32]] = [:]
        for packet in h.transport.sent {
            let b = packet.bytes
            #expect(b[9] == IPProtocol.gre)
            #expect(b[8] == 9)
            #expect(u16(b, 6) & IPv4.flagDontFragment != 0)
            #expect(u16(b, 20) == GRE.flagChecksum | GRE.flagKey | GRE.flagSequence)
            #expect(u16(b, 22) == EtherType.transparentEthernetBridging)
            let d = try #require(decapsulate(ipPacket: b).packet, "GRE checksum or header does not verify")
            #expect(d.greChecksumPresent)
            #expect(d.greKey == 42)
            sequences[packet.destination!, default: []].append(try #require(d.greSequence))
        }
        #expect(sequences[peer4a] == [0, 1])
        #expect(sequences[peer4b] == [0, 1])
    }
}
