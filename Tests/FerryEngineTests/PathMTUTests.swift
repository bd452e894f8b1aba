// Frames too big for the tunnel: dropped, and answered through the TAP with the ICMP error
// that makes path MTU discovery shrink the flow (RFC 1191, RFC 8201), rate-limited.

import FerryEngine
import FerryLinux
import FerryWire
import Testing

@Suite("Path MTU: frames too big for the tunnel")
struct PathMTUTests {
    @Test("an IPv4 frame with DF that does not fit gets ICMP fragmentation needed, MTU 1450", arguments: ["udp", "tcp"])
    func fragmentationNeeded(transport: String) throws {
        let h = try Harness()
        let frame = transport == "udp" ? udpFrame(to: remoteMAC, length: 1514) : tcpFrame(length: 1514)
        try #require(frame.count == 1514)
        try h.egress(frame)

        #expect(h.transport.sent.isEmpty)
        #expect(h.drops(.oversizeFrame) == 1)
        #expect(h.counter(.icmpErrorsSent) == 1)
        try #require(h.device.written.count == 1)
        let icmp = h.device.written[0]
        try #require(icmp.count >= 42 + 28)

        // Ethernet: back to the sender, as if from the host it was sending to.
        #expect(mac(icmp, 0) == localMAC)
        #expect(mac(icmp, 6) == remoteMAC)
        #expect(u16(icmp, 12) == EtherType.ipv4)
        // IPv4: from the original destination to the original source.
        #expect(icmp[14] == 0x45)
        #expect(Int(u16(icmp, 16)) == icmp.count - 14)
        #expect(icmp[23] == IPProtocol.icmp)
        #expect(icmp[22] > 0, "TTL")
        #expect(IPAddress.v4(ipv4(icmp, 26)) == remoteContainer4)
        #expect(IPAddress.v4(ipv4(icmp, 30)) == localContainer4)
        #expect(checksumVerifies(icmp[14..<34]), "IPv4 header checksum")
        // ICMP: type 3 code 4, next-hop MTU 1500 − 36 − 14.
        #expect(icmp[34] == ICMPv4.destinationUnreachable)
        #expect(icmp[35] == ICMPv4.codeFragmentationNeeded)
        #expect(u16(icmp, 40) == 1450)
        #expect(checksumVerifies(icmp[34...]), "ICMP checksum")
        // It quotes the original datagram from its header on, within 576 bytes in all.
        let quoted = icmp.count - 42
        #expect(quoted >= 28)
        #expect(icmp.count - 14 <= ICMPv4.maximumErrorDatagram)
        #expect(Array(icmp[42...]) == Array(frame[14..<(14 + quoted)]))
    }

    /// Also through a TAP with a virtio-net header but no segmentation offload, whose buffers
    /// are sized for frames of the MTU: the error (the largest there is: IPv6's, 1294 bytes)
    /// goes out whole behind an empty header.
    @Test("an IPv6 frame that does not fit gets ICMPv6 packet too big, MTU 1450", arguments: [false, true])
    func packetTooBig(virtio: Bool) throws {
        let h = try Harness(virtio: virtio, maximumFrame: 1500 + 18 + VirtioNetHeader.length)
        let frame = udpFrame(to: remoteMAC, length: 1514, ipv6: true)
        try h.egress((virtio ? [UInt8](repeating: 0, count: VirtioNetHeader.length) : []) + frame)

        #expect(h.transport.sent.isEmpty)
        #expect(h.drops(.oversizeFrame) == 1)
        #expect(h.counter(.icmpErrorsSent) == 1)
        try #require(h.device.written.count == 1)
        var icmp = h.device.written[0]
        if virtio {
            #expect(icmp.prefix(VirtioNetHeader.length).allSatisfy { $0 == 0 }, "an empty virtio-net header first")
            icmp.removeFirst(VirtioNetHeader.length)
        }
        try #require(icmp.count >= 62 + 48)
        #expect(mac(icmp, 0) == localMAC)
        #expect(mac(icmp, 6) == remoteMAC)
        #expect(u16(icmp, 12) == EtherType.ipv6)
        #expect(icmp[14] >> 4 == 6)
        #expect(Int(u16(icmp, 18)) == icmp.count - 54, "payload length")
        #expect(icmp[20] == IPProtocol.icmpv6)
        #expect(icmp[21] > 0, "hop limit")
        #expect(IPAddress.v6(ipv6(icmp, 22)) == remoteContainer6)
        #expect(IPAddress.v6(ipv6(icmp, 38)) == localContainer6)
        #expect(icmp[54] == ICMPv6.packetTooBig)
        #expect(icmp[55] == 0)
        #expect(u32(icmp, 58) == 1450)
        guard case .v6(let source) = remoteContainer6, case .v6(let destination) = localContainer6 else { return }
        let pseudo = InternetChecksum.pseudoHeaderSum(source: source, destination: destination,
                                                      protocol: IPProtocol.icmpv6, length: icmp.count - 54)
        #expect(checksumVerifies(icmp[54...], initial: pseudo), "ICMPv6 checksum over the pseudo-header")
        let quoted = icmp.count - 62
        #expect(icmp.count - 14 <= ICMPv6.minimumMTU)
        #expect(quoted >= 48)
        #expect(Array(icmp[62...]) == Array(frame[14..<(14 + quoted)]))
    }

    @Test("an IPv4 frame without DF is dropped without an ICMP error")
    func noDFNoICMP() throws {
        let h = try Harness()
        try h.egress(udpFrame(to: remoteMAC, length: 1514, dontFragment: false))
        #expect(h.drops(.oversizeFrame) == 1)
        #expect(h.counter(.icmpErrorsSent) == 0)
        #expect(h.device.written.isEmpty)
        #expect(h.transport.sent.isEmpty)
    }

    @Test("ICMP echo gets an error; an ICMP error does not")
    func icmpAboutICMP() throws {
        let h = try Harness()
        let echo = FrameBuilder.frame(destinationMAC: remoteMAC, sourceMAC: localMAC, source: localContainer4,
                                      destination: remoteContainer4,
                                      payload: .icmpEcho(request: true, identifier: 1, sequence: 1,
                                                         data: FrameBuilder.pattern(1514 - 42)), pad: false)
        var datagram = [UInt8](repeating: 0, count: 1500)
        guard case .v4(let s) = localContainer4, case .v4(let d) = remoteContainer4 else { return }
        datagram.withUnsafeMutableBytes {
            _ = IPv4.writeHeader(to: $0, at: 0, totalLength: 1500, dontFragment: true, protocol: IPProtocol.icmp,
                                 source: s, destination: d)
        }
        datagram[20] = ICMPv4.destinationUnreachable
        datagram[21] = 1
        let error = FrameBuilder.frame(destinationMAC: remoteMAC, sourceMAC: localMAC,
                                       payload: .raw(etherType: EtherType.ipv4, data: datagram), pad: false)
        try #require(echo.count == 1514 && error.count == 1514)
        try h.egress([echo, error])
        #expect(h.drops(.oversizeFrame) == 2)
        #expect(h.counter(.icmpErrorsSent) == 1)
        #expect(h.device.written.count == 1)
    }

    @Test("the largest frame that fits is sent; one byte more is refused with the matching MTU",
          arguments: Variant.all)
    func boundary(variant: Variant) throws {
        let h = try Harness(variant)
        let fits = 1500 - h.configuration.ipOverhead
        #expect(fits == [Variant.vxlan4.name: 1464, Variant.gre4.name: 1472,
                         Variant.vxlan6.name: 1444, Variant.gre6.name: 1452][variant.name])
        try h.egress(udpFrame(to: remoteMAC, length: fits))
        #expect(h.transport.sent.count == 2)
        #expect(h.transport.sent.allSatisfy { $0.bytes.count == 1500 })
        #expect(h.drops(.oversizeFrame) == 0)
        #expect(h.device.written.isEmpty)

        try h.egress(udpFrame(to: remoteMAC, length: fits + 1))
        #expect(h.transport.sent.count == 2)
        #expect(h.drops(.oversizeFrame) == 1)
        let icmp = try #require(h.device.written.first)
        try #require(icmp.count >= 42)
        #expect(icmp[34] == ICMPv4.destinationUnreachable && icmp[35] == ICMPv4.codeFragmentationNeeded)
        #expect(Int(u16(icmp, 40)) == fits - 14)
    }

    @Test("ICMP errors are limited to icmpPerSecond each second")
    func rateLimit() throws {
        let h = try Harness()
        let limit = TestWorker.icmpPerSecond
        let frames = (0..<(limit + 50)).map { udpFrame(to: remoteMAC, length: 1514, sourcePort: UInt16(1000 + $0)) }
        h.device.pending = frames
        while try h.worker.egressStep() > 0 {}
        #expect(h.drops(.oversizeFrame) == UInt64(limit + 50))
        #expect(h.counter(.icmpErrorsSent) == UInt64(limit))
        #expect(h.device.written.count == limit)

        h.clock.advance(by: 1)
        try h.egress(frames[0])
        #expect(h.counter(.icmpErrorsSent) == UInt64(limit + 1))
    }

    // RFC 1812 §4.3.2.7 and RFC 1122 §3.2.2: no ICMP error about a datagram sent to a
    // broadcast or multicast address, nor about one whose source does not name a single host.
    // Linux's bridged-tunnel PMTU code (iptunnel_pmtud_check_icmp) refuses the same. The error
    // would also carry a group MAC and a group IP address as its source, which no bridge or
    // host accepts.
    @Test("no ICMP error about a datagram to a group address or from a non-unicast source",
          arguments: [
              ("multicast destination", MACAddress(0x01, 0x00, 0x5E, 0x01, 0x02, 0x03), IPv4Address(10, 17, 0, 2), IPv4Address(239, 1, 2, 3)),
              ("broadcast destination", MACAddress.broadcast, IPv4Address(10, 17, 0, 2), IPv4Address(255, 255, 255, 255)),
              ("unspecified source", remoteMAC, IPv4Address(0, 0, 0, 0), IPv4Address(10, 18, 0, 3)),
          ])
    func noICMPAboutGroupsOrNonUnicastSources(_ label: String, destinationMAC: MACAddress, source: IPv4Address,
                                              destination: IPv4Address) throws {
        let h = try Harness()
        try h.egress(udpFrame(to: destinationMAC, length: 1514, source: .v4(source), destination: .v4(destination)))
        #expect(h.drops(.oversizeFrame) == 1)
        #expect(h.transport.sent.isEmpty)
        #expect(h.counter(.icmpErrorsSent) == 0, "\(label)")
        #expect(h.device.written.count == 0,
                "ICMP error written with source MAC \(h.device.written.first.map { mac($0, 6) }?.description ?? "-")")
    }

    @Test("an underlay MTU of 65536 (loopback's) still sends the largest IPv4 packet there is")
    func largestIPv4Packet() throws {
        let h = try Harness { $0.underlayMTU = 65536 }
        let frame = udpFrame(to: remoteMAC, length: 65535 - 36, dontFragment: false)
        try h.egress(frame)
        #expect(h.transport.sent.count == 2)
        let packet = try #require(h.transport.sent.first)
        #expect(packet.bytes.count == 65535)
        let d = try #require(decapsulate(ipPacket: packet.bytes).packet)
        #expect(Array(packet.bytes[d.inner]) == frame)
    }

    // With the underlay MTU read from a loopback underlay (65536), a 65500-byte frame passes
    // the MTU check (65500 + 36 ≤ 65536) but makes an IPv4 packet of 65536 bytes, which has
    // no total length: EncapsulationTemplate.writeHeaders' precondition stops the process.
    @Test("an underlay MTU above 65535 must not let a frame overflow the IPv4 length and crash the engine")
    func underlayMTUAbove65535() async {
        await #expect(processExitsWith: .success) {
            let h = try! Harness { $0.underlayMTU = 65536 }
            try! h.egress(udpFrame(to: remoteMAC, length: 65500, dontFragment: false))
            precondition(h.transport.sent.isEmpty, "a 65536-byte IPv4 packet was sent")
            precondition(h.drops(.oversizeFrame) == 1, "not counted as oversize")
        }
    }
}
