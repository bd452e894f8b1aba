import FerryCapture
import Testing
import FerryWire

/// `frame` (untagged, IPv4 without options or IPv6, TCP or UDP) as a Linux sender with checksum
/// offload leaves it: the L4 checksum field holding the folded pseudo-header sum, L4 length
/// included, not complemented. Computed here from the headers, independently of `PartialChecksum`.
func withPartialSum(_ frame: [UInt8]) -> [UInt8] {
    var f = frame
    f.withUnsafeMutableBytes { b in
        let r = UnsafeRawBufferPointer(b)
        let ipv6 = r.u16(12) == EtherType.ipv6
        let proto = ipv6 ? r[20] : r[23]
        let l4 = ipv6 ? 54 : 34
        let length = ipv6 ? Int(r.u16(18)) : Int(r.u16(16)) - 20
        let pseudo = ipv6
            ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(r, at: 22), destination: IPv6Address(r, at: 38), protocol: proto, length: length)
            : InternetChecksum.pseudoHeaderSum(source: IPv4Address(r, at: 26), destination: IPv4Address(r, at: 30), protocol: proto, length: length)
        b.setU16(pseudo, at: l4 + (proto == IPProtocol.tcp ? 16 : 6))
    }
    return f
}

/// A TCP or UDP frame with every checksum right, over IPv4 or IPv6.
func segmentFrame(ipv6: Bool, udp: Bool, data: Int = 300, flags: UInt8 = TCP.ack, pad: Bool = false, seed: UInt8 = 3) -> [UInt8] {
    FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: ipv6 ? v6A : v4A, destination: ipv6 ? v6B : v4B,
                       payload: udp ? .udp(sourcePort: 4433, destinationPort: 443, data: FrameBuilder.pattern(data, seed: seed))
                                    : .tcp(sourcePort: 40000, destinationPort: 80, sequence: 7, acknowledgment: 9, flags: flags,
                                           data: FrameBuilder.pattern(data, seed: seed)),
                       pad: pad)
}

/// The L4 checksum of `frame` verifies (IPv4 without options or IPv6; up to the IP length).
func l4ChecksumIsValid(_ frame: [UInt8]) -> Bool {
    frame.withUnsafeBytes { r in
        let ipv6 = r.u16(12) == EtherType.ipv6
        let proto = ipv6 ? r[20] : r[23]
        let l4 = ipv6 ? 54 : 34
        let end = ipv6 ? 54 + Int(r.u16(18)) : 14 + Int(r.u16(16))
        let pseudo = ipv6
            ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(r, at: 22), destination: IPv6Address(r, at: 38), protocol: proto, length: end - l4)
            : InternetChecksum.pseudoHeaderSum(source: IPv4Address(r, at: 26), destination: IPv4Address(r, at: 30), protocol: proto, length: end - l4)
        return InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: r[l4..<end]), initial: pseudo)
    }
}

@Suite struct PartialChecksumTests {
    static let kinds: [(ipv6: Bool, udp: Bool)] = [(false, false), (false, true), (true, false), (true, true)]

    func find(_ frame: [UInt8]) -> PartialChecksum? { frame.withUnsafeBytes { PartialChecksum.find(in: $0) } }

    @Test("the pseudo-header sum in the field is found, and finishing it gives the full checksum back",
          arguments: [false, true], [false, true])
    func aPartialSumIsFoundAndFinished(ipv6: Bool, udp: Bool) throws {
        let full = segmentFrame(ipv6: ipv6, udp: udp)
        var partial = withPartialSum(full)
        try #require(partial != full)
        let l4 = ipv6 ? 54 : 34
        let found = try #require(find(partial))
        #expect(found == PartialChecksum(start: l4, offset: udp ? 6 : 16, end: full.count))
        #expect(found.header == VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, checksumStart: UInt16(l4),
                                                checksumOffset: udp ? 6 : 16))
        partial.withUnsafeMutableBytes { found.complete($0) }
        #expect(partial == full)
        // A complete checksum is not partial.
        #expect(find(full) == nil)
    }

    @Test("a checksum that is wrong otherwise is not taken for a partial one", arguments: [false, true], [false, true])
    func aWrongChecksumIsNotPartial(ipv6: Bool, udp: Bool) {
        let partial = withPartialSum(segmentFrame(ipv6: ipv6, udp: udp))
        let field = (ipv6 ? 54 : 34) + (udp ? 6 : 16)
        var off = partial
        off[field + 1] ^= 0x01
        #expect(find(off) == nil)
        // The complement of the sum (what a confused sender might store) is not it either.
        var inverted = partial
        inverted[field] ^= 0xFF; inverted[field + 1] ^= 0xFF
        #expect(find(inverted) == nil)
        // The sum over another length (a mangled IP length) does not match.
        var longer = partial + [0, 0]
        longer.withUnsafeMutableBytes { b in
            if ipv6 { b.setU16(UInt16(partial.count - 54 + 2), at: 18) } else { b.setU16(UInt16(partial.count - 14 + 2), at: 16) }
        }
        if udp { longer.withUnsafeMutableBytes { $0.setU16(UInt16(partial.count - (ipv6 ? 54 : 34) + 2), at: (ipv6 ? 54 : 34) + 4) } }
        #expect(find(longer) == nil)
    }

    @Test func paddingIsLeftOutOfTheSum() throws {
        // A pure ACK over IPv4 is 54 bytes, padded to 60 on the wire.
        let full = segmentFrame(ipv6: false, udp: false, data: 0, pad: true)
        try #require(full.count == 60)
        var partial = withPartialSum(full)
        partial[54...].withUnsafeMutableBufferPointer { $0.initialize(repeating: 0xA5) }
        let found = try #require(find(partial))
        #expect(found.end == 54)
        partial.withUnsafeMutableBytes { found.complete($0) }
        #expect(Array(partial[..<54]) == Array(full[..<54]))
    }

    @Test func ipv4OptionsMoveTheStart() throws {
        // The same TCP segment behind a 24-byte IPv4 header (one 4-byte option: NOPs and EOL).
        let full = segmentFrame(ipv6: false, udp: false)
        var withOptions = Array(full[..<34]) + [1, 1, 1, 0] + Array(full[34...])
        withOptions.withUnsafeMutableBytes { b in
            b[14] = 0x46
            b.setU16(UInt16(full.count - 14 + 4), at: 16)
            b.setU16(0, at: 24)
            b.setU16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: b[14..<38])), at: 24)
            let r = UnsafeRawBufferPointer(b)
            let pseudo = InternetChecksum.pseudoHeaderSum(source: IPv4Address(r, at: 26), destination: IPv4Address(r, at: 30),
                                                          protocol: IPProtocol.tcp, length: full.count - 34)
            b.setU16(pseudo, at: 38 + 16)
        }
        let found = try #require(find(withOptions))
        #expect(found == PartialChecksum(start: 38, offset: 16, end: withOptions.count))
    }

    @Test func whatCannotBePartialIsNot() {
        // An IPv4 fragment (MF set): its checksum covers the whole datagram.
        var fragment = withPartialSum(segmentFrame(ipv6: false, udp: true))
        fragment[20] |= 0x20
        #expect(find(fragment) == nil)
        // UDP over IPv4 with no checksum.
        var none = segmentFrame(ipv6: false, udp: true)
        none[40] = 0; none[41] = 0
        #expect(find(none) == nil)
        // An IP length past the frame's end; a frame cut inside the headers; ICMP; ARP.
        var cut = withPartialSum(segmentFrame(ipv6: true, udp: false))
        cut.removeLast()
        #expect(find(cut) == nil)
        #expect(find(Array(withPartialSum(segmentFrame(ipv6: false, udp: false))[..<40])) == nil)
        let echo = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA,
                                      payload: .icmpEcho(request: true, identifier: 1, sequence: 1, data: [1, 2, 3]))
        #expect(find(echo) == nil)
        let arp = FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: macA,
                                     payload: .arp(operation: 1, senderIP: IPv4Address(10, 0, 0, 1), targetIP: IPv4Address(10, 0, 0, 2),
                                                   targetMAC: .zero))
        #expect(find(arp) == nil)
    }

    /// A TCP segment longer than the MTU with a partial sum (a peer's GSO super-frame that
    /// crossed a veth whole) is described as the TCP super-frame it is, cut to fit the MTU.
    @Test(arguments: [false, true])
    func anOversizeTCPSegmentIsASuperFrame(ipv6: Bool) throws {
        let l4 = ipv6 ? 54 : 34
        let big = withPartialSum(segmentFrame(ipv6: ipv6, udp: false, data: 7000))
        let found = try #require(find(big))
        let header = try #require(big.withUnsafeBytes { found.superFrameHeader($0, mtu: 1450) })
        #expect(header == VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum,
                                          gsoType: ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
                                          headerLength: UInt16(l4 + 20), gsoSize: UInt16(1450 - (l4 - 14) - 20),
                                          checksumStart: UInt16(l4), checksumOffset: 16))
        // It fits a larger MTU: no super-frame.
        #expect(big.withUnsafeBytes { found.superFrameHeader($0, mtu: 9000) } == nil)
        // CWR asks for the ECN form.
        var cwr = big
        cwr[l4 + 13] |= 0x80
        let ecn = try #require(find(cwr).flatMap { p in cwr.withUnsafeBytes { p.superFrameHeader($0, mtu: 1450) } })
        #expect(ecn.gsoType & VirtioNetHeader.gsoECN != 0)
        // Not for UDP (its datagram boundaries are not in the bytes), nor a SYN.
        let datagram = withPartialSum(segmentFrame(ipv6: ipv6, udp: true, data: 7000))
        #expect(find(datagram).flatMap { p in datagram.withUnsafeBytes { p.superFrameHeader($0, mtu: 1450) } } == nil)
        let syn = withPartialSum(segmentFrame(ipv6: ipv6, udp: false, data: 7000, flags: TCP.syn))
        #expect(find(syn).flatMap { p in syn.withUnsafeBytes { p.superFrameHeader($0, mtu: 1450) } } == nil)
    }

    /// A capture from the lab: two kernel vxlan devices over a veth pair with the default
    /// offloads (checksum offload on), TCP and UDP over IPv4 and IPv6 inside, captured on one
    /// veth. Every inner TCP and UDP segment, both ways, super-frames included, carries the
    /// pseudo-header sum — the form `PartialChecksum` looks for — and finishing it verifies.
    @Test func theKernelsPartialSumsInALabCapture() throws {
        let frames = try PcapFileReader(path: referenceDirectory + "/kernel-vxlan-inner-partial.pcap").readAll().map(\.bytes)
        var found = (tcp4: 0, udp4: 0, tcp6: 0, udp6: 0)
        for frame in frames {
            guard let packet = decapsulate(frame, policy: DecapsulationPolicy(vni: 42, udpChecksum: .report)).packet else {
                Issue.record("not VXLAN: \(frame.count) bytes")
                continue
            }
            var inner = Array(frame[packet.inner])
            let ipv6 = inner[12] == 0x86, proto = ipv6 ? inner[20] : inner[23]
            guard proto == IPProtocol.tcp || proto == IPProtocol.udp else { continue }
            #expect(!l4ChecksumIsValid(inner), "the capture holds partial sums, not full ones")
            guard let partial = find(inner) else {
                Issue.record("an inner \(proto == IPProtocol.tcp ? "TCP" : "UDP") segment whose sum is not partial: \(inner.count) bytes")
                continue
            }
            inner.withUnsafeMutableBytes { partial.complete($0) }
            #expect(l4ChecksumIsValid(inner))
            switch (ipv6, proto == IPProtocol.udp) {
            case (false, false): found.tcp4 += 1
            case (false, true): found.udp4 += 1
            case (true, false): found.tcp6 += 1
            case (true, true): found.udp6 += 1
            }
        }
        #expect(found == (12, 1, 12, 1), "segments found partial: \(found)")
    }
}
