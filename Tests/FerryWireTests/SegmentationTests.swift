import FerryCapture
import FerryTestSupport
import FerryWire
import Glibc
import Testing

/// Userspace TCP segmentation of TAP super-frames, checked field by field against what the
/// kernel's tcp_gso_segment produces: every segment a valid packet, the payloads in order.
@Suite struct SegmentationTests {
    func superFrame(ipv6: Bool, vlan: UInt16? = nil, payload: Int, flags: UInt8 = TCP.ack | TCP.psh | TCP.fin | 0x80) -> [UInt8] {
        FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, vlan: vlan,
                           source: ipv6 ? v6A : .v4(IPv4Address(10, 17, 0, 2)),
                           destination: ipv6 ? v6B : .v4(IPv4Address(10, 18, 0, 2)), identification: 0x1000,
                           payload: .tcp(sourcePort: 40000, destinationPort: 5201, sequence: 0xFFFF_F000,
                                         acknowledgment: 7, flags: flags, data: FrameBuilder.pattern(payload, seed: 3)))
    }

    func segments(_ frame: [UInt8], mss: Int, l4: Int, ipv6: Bool) throws -> [[UInt8]] {
        var output = [UInt8](repeating: 0, count: 200_000)
        var spans: [(Int, Int)] = []
        let header = VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, gsoType: ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
                                     headerLength: 0, gsoSize: UInt16(mss), checksumStart: UInt16(l4), checksumOffset: 16)
        _ = try output.withUnsafeMutableBytes { out in
            try frame.withUnsafeBytes { try Segmentation.segment($0, header: header, into: out) { spans.append(($0, $1)) } }
        }
        return spans.map { Array(output[$0.0..<($0.0 + $0.1)]) }
    }

    @Test(arguments: [(false, nil), (true, nil), (false, UInt16(5))] as [(Bool, UInt16?)])
    func everySegmentIsAValidPacketAndThePayloadSurvives(ipv6: Bool, vlan: UInt16?) throws {
        let payload = 10_000, mss = 1448
        let frame = superFrame(ipv6: ipv6, vlan: vlan, payload: payload)
        let l3 = vlan == nil ? 14 : 18
        let l4 = l3 + (ipv6 ? 40 : 20)
        let segs = try segments(frame, mss: mss, l4: l4, ipv6: ipv6)
        #expect(segs.count == (payload + mss - 1) / mss)
        var data: [UInt8] = []
        for (i, s) in segs.enumerated() {
            let last = i == segs.count - 1
            #expect(s.count == l4 + 20 + (last ? payload - mss * (segs.count - 1) : mss))
            #expect(Array(s[0..<l3]) == Array(frame[0..<l3]), "Ethernet header copied")
            s.withUnsafeBytes { b in
                let ip = UnsafeRawBufferPointer(rebasing: b[l3...])
                if ipv6 {
                    #expect(Int(ip.u16(4)) == s.count - l3 - 40)
                } else {
                    let v = IPv4View(ip)!
                    #expect(v.totalLength == s.count - l3)
                    #expect(v.isChecksumValid)
                    #expect(v.identification == 0x1000 &+ UInt16(i))
                }
                let tcp = UnsafeRawBufferPointer(rebasing: b[l4...])
                #expect(tcp.u32(4) == 0xFFFF_F000 &+ UInt32(i * mss), "sequence wraps like TCP's")
                let flags = tcp[13]
                #expect((flags & (TCP.fin | TCP.psh) != 0) == last)
                #expect((flags & 0x80 != 0) == (i == 0), "CWR on the first segment only")
                #expect(flags & TCP.ack != 0)
                let pseudo = ipv6
                    ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(ip, at: 8), destination: IPv6Address(ip, at: 24), protocol: 6, length: tcp.count)
                    : InternetChecksum.pseudoHeaderSum(source: IPv4Address(ip, at: 12), destination: IPv4Address(ip, at: 16), protocol: 6, length: tcp.count)
                #expect(InternetChecksum.add(pseudo, referenceSum(Array(tcp))) == 0xFFFF, "TCP checksum of segment \(i)")
            }
            data += s[(l4 + 20)...]
        }
        #expect(data == Array(frame[(l4 + 20)...]))
    }

    /// The scatter-gather form writes headers only, leaves the payload in the super-frame, and
    /// checksums it there: each segment's headers then its payload, joined, must be the very
    /// bytes the copying form lays out (whose segments the test above checks field by field).
    @Test(arguments: [(false, nil, false), (true, nil, false), (false, UInt16(5), false), (false, nil, true), (true, nil, true)]
          as [(Bool, UInt16?, Bool)])
    func headersAloneWithThePayloadInPlaceMakeTheSameSegments(ipv6: Bool, vlan: UInt16?, udp: Bool) throws {
        let frame: [UInt8], header: VirtioNetHeader
        if udp {
            (frame, header) = UDPSegmentationTests.superFrame(ipv6: ipv6, payload: 9 * 1200 + 31, gsoSize: 1200)
        } else {
            // An odd MSS: payload pieces start at odd offsets in the super-frame.
            frame = superFrame(ipv6: ipv6, vlan: vlan, payload: 10_001)
            let l4 = (vlan == nil ? 14 : 18) + (ipv6 ? 40 : 20)
            header = VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, gsoType: ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
                                     gsoSize: 1447, checksumStart: UInt16(l4), checksumOffset: 16)
        }
        var copied = [UInt8](repeating: 0, count: 100_000)
        var copiedSpans: [(Int, Int)] = []
        let n = try copied.withUnsafeMutableBytes { o in
            try frame.withUnsafeBytes { try Segmentation.segment($0, header: header, into: o, gap: 8) { copiedSpans.append(($0, $1)) } }
        }
        var headers = [UInt8](repeating: 0xEE, count: 100_000)
        var pieces: [(Int, Int, Int, Int)] = []
        let m = try headers.withUnsafeMutableBytes { o in
            try frame.withUnsafeBytes { try Segmentation.segmentHeaders($0, header: header, into: o, gap: 8) { pieces.append(($0, $1, $2, $3)) } }
        }
        #expect(n == m && pieces.count == n && n > 5)
        var previousEnd = 0
        for (i, p) in pieces.enumerated() {
            #expect(p.0 == previousEnd + 8, "headers end to end, each after its gap")
            previousEnd = p.0 + p.1
            let joined = Array(headers[p.0..<(p.0 + p.1)]) + Array(frame[p.2..<(p.2 + p.3)])
            let span = copiedSpans[i]
            #expect(joined == Array(copied[span.0..<(span.0 + span.1)]), "segment \(i)")
        }
        #expect(headers[0..<8].allSatisfy { $0 == 0xEE }, "the gap is left alone")
    }

    @Test func refusesWhatItCannotCut() {
        let udp = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, payload: .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(3000)))
        let tcp = superFrame(ipv6: false, payload: 3000)
        var out = [UInt8](repeating: 0, count: 100_000)
        func attempt(_ f: [UInt8], _ h: VirtioNetHeader, outputSize: Int = 100_000) -> Segmentation.Failure? {
            do {
                _ = try out.withUnsafeMutableBytes { o in
                    try f.withUnsafeBytes { try Segmentation.segment($0, header: h, into: UnsafeMutableRawBufferPointer(rebasing: o[0..<outputSize])) { _, _ in } }
                }
                return nil
            } catch { return error as? Segmentation.Failure }
        }
        let good = VirtioNetHeader(gsoType: VirtioNetHeader.gsoTCPv4, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        #expect(attempt(tcp, good) == nil)
        #expect(attempt(udp, good) == .wrongProtocol)
        #expect(attempt(tcp, VirtioNetHeader(gsoType: 1, gsoSize: 0, checksumStart: 34)) == .zeroSegmentSize)
        #expect(attempt(tcp, VirtioNetHeader(gsoType: 1, gsoSize: 1448, checksumStart: 40)) == .wrongProtocol)
        #expect(attempt(tcp, VirtioNetHeader(gsoType: 1, gsoSize: 1448, checksumStart: 4000)) == .headersOutOfBounds)
        #expect(attempt(tcp, good, outputSize: 1000) == .tooManySegments)
        #expect(attempt(Array(tcp[0..<20]), good) == .headersOutOfBounds)
    }

    @Test func aPartialChecksumIsCompleted() {
        for ipv6 in [false, true] {
            let full = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: ipv6 ? v6A : v4A, destination: ipv6 ? v6B : v4B,
                                          payload: .udp(sourcePort: 9, destinationPort: 10, data: FrameBuilder.pattern(333)))
            let l4 = ipv6 ? 54 : 34
            var partial = full
            // What a sender with checksum offload leaves: the pseudo-header sum, not complemented.
            let pseudo = InternetChecksum.pseudoHeaderSum(source: ipv6 ? v6A : v4A, destination: ipv6 ? v6B : v4B, protocol: 17, length: 341)
            partial[l4 + 6] = UInt8(pseudo >> 8); partial[l4 + 7] = UInt8(pseudo & 0xFF)
            #expect(partial != full)
            let ok = partial.withUnsafeMutableBytes { Segmentation.completeChecksum($0, start: l4, offset: 6) }
            #expect(ok && partial == full)
        }
    }

    @Test func virtioHeaderRoundTrips() {
        let h = VirtioNetHeader(flags: 1, gsoType: 5, headerLength: 42, gsoSize: 1000, checksumStart: 34, checksumOffset: 6)
        var bytes = [UInt8](repeating: 0, count: 10)
        bytes.withUnsafeMutableBytes { h.write(to: $0.baseAddress!) }
        // Seen here: an 8000-byte UDP GSO send came out of a TAP as exactly these fields.
        #expect(bytes == [1, 5, 42, 0, 0xE8, 0x03, 34, 0, 6, 0])
        #expect(bytes.withUnsafeBytes { VirtioNetHeader($0) } == h)
        #expect(h.isGSO && h.needsChecksum)
        #expect(!VirtioNetHeader(gsoType: VirtioNetHeader.gsoECN).isGSO)
    }
}

/// IPv6 super-frames with extension headers between the fixed header and TCP/UDP: the chain is
/// copied into every segment, and the checksum takes the final destination (RFC 8200 §8.1).
/// Each segment is checked against an independent computation (the naive RFC 1071 sum over a
/// pseudo-header written out byte by byte); with FERRY_SEGMENT_PCAP_DIR set, the segments are
/// also written there as pcap files for tshark to judge.
@Suite struct IPv6ExtensionSegmentationTests {
    static let intermediate = IPv6Address("fd00:99::77")!
    static var finalDestination: IPv6Address { IPv6Address("fd00:99::2")! }

    enum Chain: String, CaseIterable, CustomStringConvertible {
        case hopByHopAndDestinationOptions
        case hopByHopRoutingWithSegmentsLeftDestinationOptions
        case routingWithNoSegmentsLeft
        var description: String { rawValue }

        var headers: [(UInt8, [UInt8])] {
            switch self {
            case .hopByHopAndDestinationOptions:
                [(IPProtocol.ipv6HopByHop, IPv6ExtensionHeaders.options(units: 0)),
                 (IPProtocol.ipv6DestinationOptions, IPv6ExtensionHeaders.options(units: 2, data: [9, 8, 7, 6, 5, 4, 3, 2, 1]))]
            case .hopByHopRoutingWithSegmentsLeftDestinationOptions:
                [(IPProtocol.ipv6HopByHop, IPv6ExtensionHeaders.options(units: 1)),
                 (IPProtocol.ipv6Route, IPv6ExtensionHeaders.segmentRouting([intermediate, finalDestination], segmentsLeft: 1)),
                 (IPProtocol.ipv6DestinationOptions, IPv6ExtensionHeaders.options(units: 0))]
            case .routingWithNoSegmentsLeft:
                [(IPProtocol.ipv6Route, IPv6ExtensionHeaders.segmentRouting([intermediate, finalDestination], segmentsLeft: 0))]
            }
        }
        /// On the way to its first segment the packet is addressed to it, not to the last.
        var headerDestination: IPv6Address { self == .hopByHopRoutingWithSegmentsLeftDestinationOptions ? intermediate : finalDestination }
    }

    /// A TCP or UDP super-frame to the final destination (checksummed for it), with `chain`.
    static func superFrame(udp: Bool, chain: Chain, payload: Int, gsoSize: Int) -> ([UInt8], VirtioNetHeader, Int) {
        let data = FrameBuilder.pattern(payload, seed: 11)
        let plain = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: v6A, destination: .v6(finalDestination),
                                       payload: udp ? .udp(sourcePort: 4433, destinationPort: 443, data: data)
                                                    : .tcp(sourcePort: 40000, destinationPort: 5201, sequence: 77, acknowledgment: 5,
                                                           flags: TCP.ack | TCP.psh, data: data),
                                       pad: false)
        var frame = IPv6ExtensionHeaders.splice(plain, chain.headers)
        frame.withUnsafeMutableBytes { chain.headerDestination.write(to: $0, at: 14 + 24) }
        let l4 = 54 + chain.headers.reduce(0) { $0 + $1.1.count }
        let header = VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum,
                                     gsoType: udp ? VirtioNetHeader.gsoUDPL4 : VirtioNetHeader.gsoTCPv6,
                                     headerLength: UInt16(l4 + (udp ? 8 : 20)), gsoSize: UInt16(gsoSize),
                                     checksumStart: UInt16(l4), checksumOffset: udp ? 6 : 16)
        return (frame, header, l4)
    }

    static func cut(_ frame: [UInt8], _ header: VirtioNetHeader) throws -> [[UInt8]] {
        var out = [UInt8](repeating: 0, count: 200_000)
        var spans: [(Int, Int)] = []
        _ = try out.withUnsafeMutableBytes { o in try frame.withUnsafeBytes { try Segmentation.segment($0, header: header, into: o) { spans.append(($0, $1)) } } }
        return spans.map { Array(out[$0.0..<($0.0 + $0.1)]) }
    }

    /// The pseudo-header (RFC 8200 §8.1) written out byte by byte, summed with the segment's
    /// transport bytes by the naive reference sum: 0xFFFF when the checksum is right.
    static func referenceVerifies(source: IPv6Address, destination: IPv6Address, proto: UInt8, transport: [UInt8]) -> Bool {
        var pseudo = [UInt8](repeating: 0, count: 40)
        pseudo.withUnsafeMutableBytes { source.write(to: $0, at: 0); destination.write(to: $0, at: 16) }
        pseudo[32] = UInt8(transport.count >> 24); pseudo[33] = UInt8((transport.count >> 16) & 0xFF)
        pseudo[34] = UInt8((transport.count >> 8) & 0xFF); pseudo[35] = UInt8(transport.count & 0xFF)
        pseudo[39] = proto
        return referenceSum(pseudo + transport) == 0xFFFF
    }

    @Test(arguments: [false, true], Chain.allCases)
    func everySegmentCarriesTheChainAndAChecksumForTheFinalDestination(udp: Bool, chain: Chain) throws {
        let payload = 9 * 1300 + 77, gsoSize = 1300
        let (frame, header, l4) = Self.superFrame(udp: udp, chain: chain, payload: payload, gsoSize: gsoSize)
        let transportHeader = udp ? 8 : 20
        let segments = try Self.cut(frame, header)
        #expect(segments.count == 10)
        var data: [UInt8] = []
        for (i, s) in segments.enumerated() {
            let chunk = i == 9 ? 77 : gsoSize
            #expect(s.count == l4 + transportHeader + chunk, "segment \(i) length")
            #expect(Array(s[0..<18]) == Array(frame[0..<18]), "Ethernet header and the IPv6 first word")
            #expect(Array(s[20..<l4]) == Array(frame[20..<l4]), "next header, hop limit, addresses and the whole chain, copied")
            #expect(Int(s[18]) << 8 | Int(s[19]) == s.count - 54, "payload length covers the chain and the segment")
            let transport = Array(s[l4...])
            if udp { #expect(Int(transport[4]) << 8 | Int(transport[5]) == transport.count, "UDP length") }
            #expect(Self.referenceVerifies(source: IPv6Address("fd00:99::1")!, destination: Self.finalDestination,
                                           proto: udp ? IPProtocol.udp : IPProtocol.tcp, transport: transport),
                    "segment \(i): checksum over the final destination")
            if chain == .hopByHopRoutingWithSegmentsLeftDestinationOptions {
                #expect(!Self.referenceVerifies(source: IPv6Address("fd00:99::1")!, destination: Self.intermediate,
                                                proto: udp ? IPProtocol.udp : IPProtocol.tcp, transport: transport),
                        "not over the next segment's address")
            }
            data += s[(l4 + transportHeader)...]
        }
        #expect(data == FrameBuilder.pattern(payload, seed: 11), "the payload, in order")
        try Self.dump(segments, name: "\(udp ? "udp" : "tcp")-\(chain)")
    }

    /// The scatter-gather form agrees with the copying one on a chain too.
    @Test func headersAloneAgreeWithTheCopyingForm() throws {
        let (frame, header, _) = Self.superFrame(udp: false, chain: .hopByHopRoutingWithSegmentsLeftDestinationOptions,
                                                 payload: 5000, gsoSize: 1001)
        let copied = try Self.cut(frame, header)
        var out = [UInt8](repeating: 0, count: 100_000)
        var joined: [[UInt8]] = []
        _ = try out.withUnsafeMutableBytes { o in
            try frame.withUnsafeBytes { f in
                try Segmentation.segmentHeaders(f, header: header, into: o, gap: 8) { at, length, payloadAt, chunk in
                    joined.append(Array(o[at..<(at + length)]) + Array(f[payloadAt..<(payloadAt + chunk)]))
                }
            }
        }
        #expect(joined == copied)
    }

    @Test func aChainThatDoesNotAddUpIsRefusedUnderANamedReason() {
        func attempt(_ chain: [(UInt8, [UInt8])], l4Shift: Int = 0, udp: Bool = false, patch: (inout [UInt8]) -> Void = { _ in }) -> Segmentation.Failure? {
            let plain = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: v6A, destination: v6B,
                                           payload: udp ? .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(4000))
                                                        : .tcp(sourcePort: 1, destinationPort: 2, sequence: 1, acknowledgment: 1, flags: TCP.ack,
                                                               data: FrameBuilder.pattern(4000)))
            var frame = IPv6ExtensionHeaders.splice(plain, chain)
            patch(&frame)
            let l4 = 54 + chain.reduce(0) { $0 + $1.1.count } + l4Shift
            let header = VirtioNetHeader(gsoType: udp ? VirtioNetHeader.gsoUDPL4 : VirtioNetHeader.gsoTCPv6, gsoSize: 1000,
                                         checksumStart: UInt16(l4), checksumOffset: udp ? 6 : 16)
            do { _ = try Self.cut(frame, header); return nil } catch { return error as? Segmentation.Failure }
        }
        let hop = (IPProtocol.ipv6HopByHop, IPv6ExtensionHeaders.options(units: 0))
        let destination = (IPProtocol.ipv6DestinationOptions, IPv6ExtensionHeaders.options(units: 0))
        #expect(attempt([hop, destination]) == nil)
        #expect(attempt([hop, destination], udp: true) == nil)
        // A header whose length runs past the transport header (and the frame's end).
        #expect(attempt([hop, destination]) { $0[54 + 8 + 1] = 255 } == .badExtensionHeaders)
        #expect(attempt([hop, destination]) { $0[54 + 1] = 1 } == .badExtensionHeaders)
        // csum_start short of the chain's end, or past it.
        #expect(attempt([hop, destination], l4Shift: -8) == .badExtensionHeaders)
        #expect(attempt([hop, destination], l4Shift: 8) == .badExtensionHeaders)
        #expect(attempt([hop], l4Shift: -8) == .badExtensionHeaders, "csum_start inside the fixed header's reach")
        // Nine headers, or more than 512 bytes of them.
        #expect(attempt([hop] + Array(repeating: destination, count: 7)) == nil)
        #expect(attempt([hop] + Array(repeating: destination, count: 8)) == .tooManyExtensionHeaders)
        #expect(attempt([(IPProtocol.ipv6HopByHop, IPv6ExtensionHeaders.options(units: 63))]) == nil, "512 bytes")
        #expect(attempt([(IPProtocol.ipv6HopByHop, IPv6ExtensionHeaders.options(units: 64))]) == .tooManyExtensionHeaders)
        // What cannot be cut: a fragment header, AH; a routing header twice, or of a type whose
        // final destination Ferry does not know, with segments left.
        let fragment = (IPProtocol.ipv6Fragment, [UInt8](repeating: 0, count: 8))
        #expect(attempt([hop, fragment]) == .unsupportedExtensionHeader)
        #expect(attempt([(IPProtocol.ah, [0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])]) == .unsupportedExtensionHeader)
        let route = (IPProtocol.ipv6Route, IPv6ExtensionHeaders.segmentRouting([Self.intermediate, Self.finalDestination], segmentsLeft: 1))
        #expect(attempt([route]) == nil)
        #expect(attempt([route, route]) == .unsupportedExtensionHeader)
        let typeZero = (IPProtocol.ipv6Route, IPv6ExtensionHeaders.segmentRouting([Self.intermediate, Self.finalDestination], segmentsLeft: 1, type: 0))
        #expect(attempt([typeZero]) == .unsupportedExtensionHeader)
        let typeZeroDone = (IPProtocol.ipv6Route, IPv6ExtensionHeaders.segmentRouting([Self.intermediate], segmentsLeft: 0, type: 0))
        #expect(attempt([typeZeroDone]) == nil, "no segments left: the header's destination is the final one")
        // The chain ends in UDP under a TCP GSO type.
        #expect(attempt([hop]) { $0[54] = IPProtocol.udp } == .wrongProtocol)
        // Each counted under the extension headers' own drop reason; the others as before.
        #expect(Segmentation.Failure.tooManyExtensionHeaders.dropReason == .badSuperFrameExtensionHeaders)
        #expect(Segmentation.Failure.unsupportedExtensionHeader.dropReason.name == "bad_super_frame_extension_headers")
        #expect(Segmentation.Failure.wrongProtocol.dropReason == .badSuperFrame)
    }

    /// Writes `segments` to `$FERRY_SEGMENT_PCAP_DIR/<name>.pcap` when that is set.
    static func dump(_ segments: [[UInt8]], name: String) throws {
        guard let value = getenv("FERRY_SEGMENT_PCAP_DIR") else { return }
        let directory = String(cString: value)
        let writer = try PcapFileWriter(path: "\(directory)/\(name).pcap")
        for s in segments { writer.write(s, timestamp: PacketTimestamp(seconds: 0, microseconds: 0)) }
        try writer.close()
    }
}
