import Testing
import FerryWire

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
