// Ingress: only peers, only our VNI or key, well-formed tunnel headers; what passes goes to the
// TAP and nowhere else.

import FerryEngine
import FerryLinux
import FerryWire
import Testing

@Suite("Ingress: tunnel → TAP")
struct IngressTests {
    @Test("a valid packet is decapsulated onto the TAP and counted", arguments: Variant.all)
    func validPacketReachesTheDevice(variant: Variant) throws {
        let h = try Harness(variant)
        let inner = remoteFrame()
        let packet = h.tunnelPacket(inner, from: variant.peerA)
        #expect(try h.ingress([(packet, variant.peerA)]) == 1)
        #expect(h.device.written == [inner])
        let s = h.statistics
        #expect(s.counter(.receivedPackets) == 1)
        // Counted as the outer IP packet, whatever the socket hands up.
        #expect(s.counter(.receivedBytes) == UInt64(packet.count + variant.strippedHeaderBytes))
        #expect(s.counter(.tapWrittenFrames) == 1)
        #expect(s.counter(.tapWrittenBytes) == UInt64(inner.count))
        #expect(h.peerStatistics(variant.peerA)?.rxPackets == 1)
        #expect(h.peerStatistics(variant.peerA)?.rxBytes == UInt64(packet.count + variant.strippedHeaderBytes))
        #expect(s.totalDrops == 0)
    }

    /// Found by the live hostile-traffic test: a 4000-byte inner frame from a peer was written
    /// to the TAP, and the bridge dropped it unseen and uncounted.
    @Test("a decapsulated frame longer than the bridge takes from the TAP is dropped as oversize_frame", arguments: Variant.all)
    func oversizeInnerFrameIsDropped(variant: Variant) throws {
        let h = try Harness(variant)
        // The TAP's default MTU (the underlay's 1500 less the encapsulation) with an Ethernet
        // header and a VLAN tag: the largest frame the kernel's bridge forwards from it.
        let largest = h.worker.limits.defaultTAPMTU(h.configuration) + Ethernet.headerLength + Ethernet.vlanTagLength
        let fits = udpFrame(to: localMAC, from: remoteMAC, length: largest, source: remoteContainer4, destination: localContainer4, seed: 1)
        let tooLong = udpFrame(to: localMAC, from: remoteMAC, length: largest + 1, source: remoteContainer4, destination: localContainer4, seed: 2)
        var notIP = [UInt8](repeating: 0, count: 4000)
        notIP.withUnsafeMutableBytes {
            MACAddress.broadcast.write(to: $0, at: 0)
            numberedMAC(7).write(to: $0, at: 6)
        }
        notIP[12] = 0x88
        notIP[13] = 0xb6
        let batch = [fits, tooLong, notIP].map { (bytes: h.tunnelPacket($0, from: variant.peerA), source: variant.peerA) }
        #expect(try h.ingress(batch) == 3)
        #expect(h.device.written == [fits])
        #expect(h.drops(.oversizeFrame) == 2)
        #expect(h.statistics.totalDrops == 2)
        #expect(h.peerStatistics(variant.peerA)?.rxPackets == 1)
        #expect(h.entry(for: numberedMAC(7)) == nil, "a dropped frame's source was learned")
    }

    @Test("a full batch of 64 packets is received, written and learned in one step")
    func fullBatchInOneStep() throws {
        let h = try Harness()
        let inners = (0..<64).map { remoteFrame(from: numberedMAC($0), seed: UInt8($0)) }
        let packets = (0..<65).map { (bytes: h.tunnelPacket(inners[$0 % 64], from: peer4a), source: peer4a) }
        #expect(try h.ingress(packets) == 64)
        #expect(h.device.written == inners)
        #expect(h.counter(.fdbLearned) == 64)
        #expect(h.transport.incoming.count == 1)
        #expect(try h.worker.ingressStep() == 1)
        #expect(try h.worker.ingressStep() == 0)
        #expect(h.counter(.fdbLearned) == 64)
        #expect(h.peerStatistics(peer4a)?.rxPackets == 65)
    }

    @Test("nothing waiting: the step returns 0 and touches nothing")
    func emptyReceive() throws {
        let h = try Harness()
        #expect(try h.worker.ingressStep() == 0)
        #expect(try h.worker.egressStep() == 0)
        #expect(h.statistics.counters.values.allSatisfy { $0 == 0 })
    }

    @Test("split horizon: what comes from a peer goes to the TAP only, never to a peer")
    func splitHorizon() throws {
        let h = try Harness()
        // .3 has a MAC behind it, so a frame for it is "known unicast" to another peer.
        try h.receive(remoteFrame(from: otherRemoteMAC), from: peer4b)
        let broadcast = arpRequest(from: remoteMAC)
        let unknownUnicast = remoteFrame(from: remoteMAC, to: MACAddress(0x02, 0x44, 0, 0, 0, 1), seed: 1)
        let toOtherPeer = remoteFrame(from: remoteMAC, to: otherRemoteMAC, seed: 2)
        let batch = [broadcast, unknownUnicast, toOtherPeer].map { (bytes: h.tunnelPacket($0, from: peer4a), source: peer4a) }
        try h.ingress(batch)
        #expect(h.device.written.count == 4)
        #expect(Array(h.device.written.suffix(3)) == [broadcast, unknownUnicast, toOtherPeer])
        #expect(h.transport.sendCalls == 0)
        #expect(h.transport.sent.isEmpty)
        #expect(h.counter(.sentPackets) == 0)
        #expect(h.counter(.floodedFrames) == 0)
        #expect(h.counter(.unicastFrames) == 0)
    }

    @Test("a full TAP queue is counted as tap_queue_full")
    func tapQueueFull() throws {
        let h = try Harness()
        h.device.refuseWrites = true
        try h.receive(remoteFrame(), from: peer4a)
        #expect(h.drops(.tapQueueFull) == 1)
        #expect(h.counter(.tapWrittenFrames) == 0)
        #expect(h.statistics.totalDrops == 1)
    }
}

@Suite("Ingress: security")
struct IngressSecurityTests {
    /// A VXLAN payload with its header bytes changed.
    static func tampered(_ payload: [UInt8], _ change: (inout [UInt8]) -> Void) -> [UInt8] {
        var p = payload
        change(&p)
        return p
    }

    @Test("VXLAN: strangers, other VNIs, bad flags and short packets are each dropped under their own name")
    func vxlanRefusals() throws {
        let h = try Harness()
        let valid = remoteFrame(from: remoteMAC, seed: 1)
        // Each bad packet carries a distinct inner source MAC, so learning from it would show.
        func inner(_ k: Int) -> [UInt8] { remoteFrame(from: numberedMAC(k), seed: UInt8(k)) }
        let good = h.tunnelPacket(inner(0), from: peer4a)
        let batch: [(bytes: [UInt8], source: IPAddress)] = [
            (h.tunnelPacket(inner(1), from: stranger4), stranger4),
            (h.tunnelPacket(inner(2), from: peer4a, encapsulation: .vxlan(vni: 43)), peer4a),
            (Self.tampered(h.tunnelPacket(inner(3), from: peer4a)) { $0[0] = 0x0C }, peer4a),  // I + a reserved flag
            (Self.tampered(h.tunnelPacket(inner(4), from: peer4a)) { $0[7] = 0x01 }, peer4a),  // reserved last byte
            (Self.tampered(h.tunnelPacket(inner(5), from: peer4a)) { $0[2] = 0x80 }, peer4a),  // reserved field
            (Self.tampered(h.tunnelPacket(inner(6), from: peer4a)) { $0[0] = 0x00 }, peer4a),  // no I flag
            (Array(good.prefix(5)), peer4a),                                                  // truncated header
            (Array(good.prefix(8 + 10)), peer4a),                                             // inner shorter than Ethernet
            (h.tunnelPacket(valid, from: peer4b), peer4b),
        ]
        #expect(try h.ingress(batch) == batch.count)

        #expect(h.device.written == [valid])
        let s = h.statistics
        #expect(s.drops(.unknownPeer) == 1)
        #expect(s.drops(.unexpectedVNI) == 1)
        #expect(s.drops(.vxlanReservedBitsSet) == 3)
        #expect(s.drops(.vxlanMissingIFlag) == 1)
        #expect(s.drops(.truncatedVXLAN) == 1)
        #expect(s.drops(.innerFrameTooShort) == 1)
        #expect(s.totalDrops == 8, "every drop counted once, under one name")
        #expect(s.counter(.receivedPackets) == UInt64(batch.count))
        #expect(s.counter(.tapWrittenFrames) == 1)
        #expect(h.worker.state.forwardingEntries().map(\.mac) == [remoteMAC.description])
        #expect(s.counter(.peersLearned) == 0)
        #expect(s.peers.count == 2)
        #expect(h.peerStatistics(peer4a)?.rxPackets == 0)
        #expect(h.peerStatistics(peer4b)?.rxPackets == 1)
        #expect(h.transport.sent.isEmpty)
    }

    @Test("GRE with a key: a missing or different key, a stranger and broken IP headers are refused")
    func greKeyedRefusals() throws {
        let h = try Harness(.gre4)
        func inner(_ k: Int) -> [UInt8] { remoteFrame(from: numberedMAC(k), seed: UInt8(k)) }
        let valid = remoteFrame(from: remoteMAC)
        let good = h.tunnelPacket(inner(0), from: peer4a)
        let badChecksum = Self.tampered(h.tunnelPacket(inner(4), from: peer4a)) { $0[10] ^= 0xFF }
        let batch: [(bytes: [UInt8], source: IPAddress)] = [
            (h.tunnelPacket(inner(1), from: peer4a, encapsulation: .gre(GREOptions())), peer4a),           // no key
            (h.tunnelPacket(inner(2), from: peer4a, encapsulation: .gre(GREOptions(key: 43))), peer4a),    // other key
            (h.tunnelPacket(inner(3), from: stranger4), stranger4),
            (badChecksum, peer4a),
            (Array(good.prefix(30)), peer4a),                                                             // cut short
            (h.tunnelPacket(inner(5), from: peer4a, encapsulation: .vxlan(vni: 42)), peer4a),            // UDP, not GRE
            (h.tunnelPacket(valid, from: peer4b), peer4b),
        ]
        try h.ingress(batch)
        #expect(h.device.written == [valid])
        let s = h.statistics
        #expect(s.drops(.unexpectedGREKey) == 2)
        #expect(s.drops(.unknownPeer) == 1)
        #expect(s.drops(.badIPv4HeaderChecksum) == 1)
        #expect(s.drops(.truncatedIP) == 1)
        #expect(s.drops(.notTunnelProtocol) == 1)
        #expect(s.totalDrops == 6)
        #expect(h.worker.state.forwardingEntries().map(\.mac) == [remoteMAC.description])
    }

    @Test("GRE key mismatch over either underlay", arguments: [Variant.gre4, .gre6])
    func greKeyMismatch(variant: Variant) throws {
        let h = try Harness(variant)
        let valid = remoteFrame(seed: 3)
        try h.ingress([
            (h.tunnelPacket(remoteFrame(seed: 1), from: variant.peerA, encapsulation: .gre(GREOptions(key: 7))), variant.peerA),
            (h.tunnelPacket(remoteFrame(seed: 2), from: variant.peerA, encapsulation: .gre(GREOptions())), variant.peerA),
            (h.tunnelPacket(valid, from: variant.peerA), variant.peerA),
        ])
        #expect(h.drops(.unexpectedGREKey) == 2)
        #expect(h.device.written == [valid])
    }

    @Test("a keyless GRE tunnel refuses keyed packets: they belong to another tunnel")
    func keylessTunnelRefusesKeys() throws {
        let keyless = Variant(name: "GRE/IPv4 keyless", encapsulation: .gre(GREOptions()), ipv6: false)
        let h = try Harness(keyless)
        let valid = remoteFrame(seed: 2)
        try h.ingress([
            (h.tunnelPacket(remoteFrame(seed: 1), from: peer4a, encapsulation: .gre(GREOptions(key: 42))), peer4a),
            (h.tunnelPacket(valid, from: peer4a), peer4a),
        ])
        #expect(h.drops(.unexpectedGREKey) == 1)
        #expect(h.device.written == [valid])
        #expect(h.statistics.totalDrops == 1)
    }

    @Test("other VNIs are refused over an IPv6 underlay too")
    func vniOverIPv6() throws {
        let h = try Harness(.vxlan6)
        let valid = remoteFrame(seed: 2)
        try h.ingress([
            (h.tunnelPacket(remoteFrame(seed: 1), from: peer6a, encapsulation: .vxlan(vni: 4242)), peer6a),
            (h.tunnelPacket(valid, from: peer6a), peer6a),
            // From an IPv4 source: not a peer (the VXLAN payload is the same either way).
            (peerPacket(remoteFrame(seed: 3), from: peer4a, to: local4, encapsulation: .vxlan(vni: 42), form: .vxlanPayload),
             peer4a),
        ])
        #expect(h.drops(.unexpectedVNI) == 1)
        #expect(h.drops(.unknownPeer) == 1)
        #expect(h.device.written == [valid])
    }

    @Test("a stranger is refused even when accepting any peer if its family differs from ours")
    func strangerOfTheOtherFamily() throws {
        let h = try Harness(.vxlan4) { $0.acceptAnyPeer = true }
        let payload = peerPacket(remoteFrame(), from: stranger6, to: local6, encapsulation: .vxlan(vni: 42), form: .vxlanPayload)
        try h.ingress([(payload, stranger6)])
        #expect(h.drops(.unknownPeer) == 1)
        #expect(h.device.written.isEmpty)
        #expect(h.counter(.peersLearned) == 0)
    }

    /// RFC 6040: congestion marked on the underlay (outer CE) reaches the container in the
    /// inner header; an inner packet that cannot carry it is dropped and counted.
    @Test("outer CE is copied inward, or the packet dropped if it cannot carry it", arguments: Variant.all)
    func congestionMarkReachesTheInnerPacket(variant: Variant) throws {
        let h = try Harness(variant)
        func inner(ecn: UInt8, seed: UInt8) -> [UInt8] {
            variant.ipv6
                ? FrameBuilder.frame(destinationMAC: localMAC, sourceMAC: remoteMAC, source: remoteContainer6, destination: localContainer6,
                                     tos: ecn, payload: .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(50, seed: seed)),
                                     pad: false)
                : remoteFrameWithTOS(ecn, seed: seed)
        }
        func congested(_ frame: [UInt8]) -> [UInt8] {
            var packet = h.tunnelPacket(frame, from: variant.peerA)
            if variant.receivedForm == .ipPacket {
                // A raw IPv4 socket hands up the outer header: mark CE there, checksum and all.
                packet[1] |= ECN.ce
                packet[10] = 0; packet[11] = 0
                let sum = packet.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<20])) }
                packet[10] = UInt8(sum >> 8); packet[11] = UInt8(sum & 0xFF)
            }
            return packet
        }
        if variant.receivedForm != .ipPacket { h.transport.reportedTOS = ECN.ce }
        let capable = inner(ecn: ECN.ect0, seed: 1), incapable = inner(ecn: ECN.notECT, seed: 2)
        try h.ingress([(congested(capable), variant.peerA), (congested(incapable), variant.peerA)])
        try #require(h.device.written.count == 1, "only the ECN-capable packet gets through")
        let got = h.device.written[0]
        let l3 = 14
        let ecn = variant.ipv6 ? (got[l3 + 1] >> 4) & 3 : got[l3 + 1] & 3
        #expect(ecn == ECN.ce, "the inner header carries the underlay's congestion mark")
        if !variant.ipv6 {
            #expect(got.withUnsafeBytes { InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: $0[14..<34])) })
        }
        #expect(h.drops(.congestionOnNotECT) == 1)
        #expect(h.statistics.totalDrops == 1)
    }

    @Test("without CE outside, the inner ECN field is left as it came", arguments: Variant.all)
    func noMarkNoChange(variant: Variant) throws {
        let h = try Harness(variant)
        if variant.receivedForm != .ipPacket { h.transport.reportedTOS = ECN.ect0 }
        let frame = remoteFrameWithTOS(ECN.notECT, seed: 3)
        try h.receive(frame, from: variant.peerA)
        #expect(h.device.written == [frame])
        #expect(h.statistics.totalDrops == 0)
    }
}

/// `remoteFrame` over IPv4 with the TOS byte `tos`.
func remoteFrameWithTOS(_ tos: UInt8, seed: UInt8) -> [UInt8] {
    udpFrame(to: localMAC, from: remoteMAC, length: 120, tos: tos, source: remoteContainer4, destination: localContainer4, seed: seed)
}
