import Testing
import FerryWire
import FerryTestSupport

/// Coalescing is segmentation's inverse: segments joined into a super-frame and cut again must
/// come back byte for byte, and nothing that may not be joined is.
@Suite struct SegmentCoalescerTests {
    static func segments(ipv6: Bool, payload: Int = 8000, mss: Int = 1000, seq: UInt32 = 5000, sourcePort: UInt16 = 40000,
                         flags: UInt8 = TCP.ack | TCP.psh) -> [[UInt8]] {
        let frame = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: ipv6 ? v6A : v4A, destination: ipv6 ? v6B : v4B,
                                       identification: 0x2000,
                                       payload: .tcp(sourcePort: sourcePort, destinationPort: 80, sequence: seq, acknowledgment: 99,
                                                     flags: flags, data: FrameBuilder.pattern(payload, seed: UInt8(sourcePort & 0xFF))))
        var out = [UInt8](repeating: 0, count: 200_000)
        var spans: [(Int, Int)] = []
        let l4 = ipv6 ? 54 : 34
        let h = VirtioNetHeader(gsoType: ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4, gsoSize: UInt16(mss),
                                checksumStart: UInt16(l4), checksumOffset: 16)
        _ = try! out.withUnsafeMutableBytes { o in try frame.withUnsafeBytes { try Segmentation.segment($0, header: h, into: o) { spans.append(($0, $1)) } } }
        return spans.map { Array(out[$0.0..<($0.0 + $0.1)]) }
    }

    /// Feeds frames (each behind 10 bytes of headroom) and returns what was emitted.
    static func coalesce(_ frames: [[UInt8]], _ c: SegmentCoalescer = SegmentCoalescer()) -> [[UInt8]] {
        var emitted: [[UInt8]] = []
        for f in frames {
            var withRoom = [UInt8](repeating: 0xEE, count: 10) + f
            withRoom.withUnsafeMutableBytes { b in
                c.add(UnsafeRawBufferPointer(rebasing: b[10...]), plain: b.baseAddress!) { emitted.append(Array($0)) }
            }
        }
        c.flush { emitted.append(Array($0)) }
        return emitted
    }

    @Test(arguments: [false, true])
    func joinedThenCutGivesTheSegmentsBack(ipv6: Bool) throws {
        let segs = Self.segments(ipv6: ipv6)
        let out = Self.coalesce(segs)
        try #require(out.count == 1)
        let header = out[0].withUnsafeBytes { VirtioNetHeader($0) }
        let l4 = ipv6 ? 54 : 34
        #expect(header.gsoType == (ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4))
        #expect(header.gsoSize == 1000 && header.checksumStart == UInt16(l4) && header.checksumOffset == 16 && header.needsChecksum)
        #expect(Int(header.headerLength) == l4 + 20)
        let frame = Array(out[0][10...])
        #expect(frame.count == l4 + 20 + 8000)
        var again = [UInt8](repeating: 0, count: 100_000)
        var spans: [(Int, Int)] = []
        _ = try again.withUnsafeMutableBytes { o in try frame.withUnsafeBytes { try Segmentation.segment($0, header: header, into: o) { spans.append(($0, $1)) } } }
        let back = spans.map { Array(again[$0.0..<($0.0 + $0.1)]) }
        #expect(back.count == segs.count)
        let same = back == segs
        #expect(same, "re-cut segments equal the originals")
    }

    @Test func interleavedFlowsGatherSeparately() {
        let a = Self.segments(ipv6: false, sourcePort: 1111), b = Self.segments(ipv6: false, sourcePort: 2222)
        let out = Self.coalesce(Array(zip(a, b).flatMap { [$0, $1] }))
        #expect(out.count == 2)
        #expect(out.allSatisfy { $0.withUnsafeBytes { VirtioNetHeader($0).isGSO } })
    }

    @Test func whatMayNotBeJoinedGoesAloneAndInOrder() {
        let segs = Self.segments(ipv6: false)
        // A gap in the sequence: two runs.
        #expect(Self.coalesce(Array(segs[0..<3]) + Array(segs[4...])).count == 2)
        // A damaged segment is sent as it is (the receiver's TCP will refuse it), between runs.
        var damaged = segs
        damaged[3][100] ^= 0xFF
        let out = Self.coalesce(damaged)
        #expect(out.count == 3)
        #expect(out[1].withUnsafeBytes { !VirtioNetHeader($0).isGSO } && Array(out[1][10...]) == damaged[3])
        // SYN and FIN segments are never joined; a FIN flushes its flow's run first.
        let fin = Self.segments(ipv6: false, payload: 500, seq: 5000 + 8000, flags: TCP.ack | TCP.fin)
        let withFin = Self.coalesce(Array(segs[0..<7]) + fin)
        #expect(withFin.count == 2)
        #expect(Array(withFin[1][10...]) == fin[0])
        // Not TCP: as it is, behind an empty virtio header.
        let udp = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, payload: .udp(sourcePort: 1, destinationPort: 2, data: [1, 2, 3]))
        let plain = Self.coalesce([udp])
        #expect(plain == [[UInt8](repeating: 0, count: 10) + udp])
        // A lone segment keeps its own checksum: no GSO, no NEEDS_CSUM.
        let lone = Self.coalesce([segs[0]])
        #expect(lone == [[UInt8](repeating: 0, count: 10) + segs[0]])
    }

    /// Segments whose sender left the checksum partial (the pseudo-header sum: a peer's kernel
    /// behind a veth with checksum offload) are joined as verified ones are: the super-frame's
    /// sum is the kernel's to finish anyway, and cut again it gives the full segments back.
    @Test(arguments: [false, true])
    func partialSumsAreJoinedAndCutBackWhole(ipv6: Bool) throws {
        let segs = Self.segments(ipv6: ipv6, flags: TCP.ack)
        let coalescer = SegmentCoalescer()
        let out = Self.coalesce(segs.map(withPartialSum), coalescer)
        try #require(out.count == 1)
        let header = out[0].withUnsafeBytes { VirtioNetHeader($0) }
        #expect(header.isGSO && header.needsChecksum && header.checksumStart == UInt16(ipv6 ? 54 : 34) && header.checksumOffset == 16)
        var again = [UInt8](repeating: 0, count: 100_000)
        var spans: [(Int, Int)] = []
        let frame = Array(out[0][10...])
        _ = try again.withUnsafeMutableBytes { o in try frame.withUnsafeBytes { try Segmentation.segment($0, header: header, into: o) { spans.append(($0, $1)) } } }
        let same = spans.map { Array(again[$0.0..<($0.0 + $0.1)]) } == segs
        #expect(same, "re-cut segments carry full checksums, equal to the originals")
        #expect(coalescer.merged == segs.count - 1 && coalescer.partials == segs.count)
    }

    /// A partial segment that goes alone — the last of a run, a PSH one, a pure ACK (padded to
    /// 60 bytes), a SYN, UDP without USO — goes with NEEDS_CSUM, its start and offset, and
    /// without padding; a checksum wrong otherwise goes as it is, behind an empty header, for
    /// the receiver's stack to refuse as before.
    @Test(arguments: [false, true])
    func aPartialSegmentAloneGoesWithNeedsChecksum(ipv6: Bool) throws {
        let l4 = ipv6 ? 54 : 34
        func expectPartial(_ out: [[UInt8]], _ frame: [UInt8], offset: UInt16, length: Int? = nil,
                           sourceLocation: SourceLocation = #_sourceLocation) {
            guard out.count == 1 else { Issue.record("\(out.count) frames", sourceLocation: sourceLocation); return }
            let header = out[0].withUnsafeBytes { VirtioNetHeader($0) }
            #expect(header == VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, checksumStart: UInt16(l4), checksumOffset: offset),
                    sourceLocation: sourceLocation)
            #expect(Array(out[0][10...]) == Array(frame[..<(length ?? frame.count)]), "the frame unchanged", sourceLocation: sourceLocation)
        }
        let lone = withPartialSum(Self.segments(ipv6: ipv6, payload: 1000, flags: TCP.ack)[0])
        expectPartial(Self.coalesce([lone]), lone, offset: 16)
        let push = withPartialSum(Self.segments(ipv6: ipv6, payload: 1000, flags: TCP.ack | TCP.psh)[0])
        expectPartial(Self.coalesce([push]), push, offset: 16)
        let syn = withPartialSum(segmentFrame(ipv6: ipv6, udp: false, data: 0, flags: TCP.syn))
        expectPartial(Self.coalesce([syn]), syn, offset: 16)
        let ack = withPartialSum(segmentFrame(ipv6: ipv6, udp: false, data: 0, pad: true))
        expectPartial(Self.coalesce([ack]), ack, offset: 16, length: l4 + 20)
        let datagram = withPartialSum(segmentFrame(ipv6: ipv6, udp: true))
        expectPartial(Self.coalesce([datagram]), datagram, offset: 6)
        expectPartial(Self.coalesce([datagram], SegmentCoalescer(udp: true)), datagram, offset: 6)
        // Wrong otherwise: as it is, no flags (as before this change).
        for var bad in [lone, push, ack, datagram] {
            bad[l4 + (bad == datagram ? 6 : 16)] ^= 0x40
            #expect(Self.coalesce([bad]) == [[UInt8](repeating: 0, count: 10) + bad])
        }
    }

    /// A partial segment longer than the MTU (a peer's GSO super-frame, whole) is not joined:
    /// it goes alone as a TCP super-frame cut to the MTU, after the run of its flow, and cut
    /// again it gives segments that fit, with full checksums and the same bytes.
    @Test(arguments: [false, true])
    func anOversizePartialSegmentGoesAsASuperFrame(ipv6: Bool) throws {
        let l4 = ipv6 ? 54 : 34
        let run = Self.segments(ipv6: ipv6, payload: 3000, seq: 1000, flags: TCP.ack).map(withPartialSum)
        let big = withPartialSum(Self.segments(ipv6: ipv6, payload: 9000, mss: 9000, seq: 4000, flags: TCP.ack)[0])
        let coalescer = SegmentCoalescer(mtu: 1500)
        let out = Self.coalesce(run + [big], coalescer)
        try #require(out.count == 2)
        #expect(out[0].withUnsafeBytes { VirtioNetHeader($0).gsoSize } == 1000, "the run first")
        let header = out[1].withUnsafeBytes { VirtioNetHeader($0) }
        #expect(header.needsChecksum && header.gsoType == (ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4))
        #expect(Int(header.gsoSize) == 1500 - (l4 - 14) - 20 && header.checksumStart == UInt16(l4) && header.checksumOffset == 16)
        #expect(Array(out[1][10...]) == big)
        var again = [UInt8](repeating: 0, count: 100_000)
        var spans: [(Int, Int)] = []
        _ = try again.withUnsafeMutableBytes { o in try big.withUnsafeBytes { try Segmentation.segment($0, header: header, into: o) { spans.append(($0, $1)) } } }
        let cut = spans.map { Array(again[$0.0..<($0.0 + $0.1)]) }
        #expect(cut.count == (9000 + Int(header.gsoSize) - 1) / Int(header.gsoSize))
        #expect(cut.allSatisfy { $0.count - 14 <= 1500 && l4ChecksumIsValid($0) })
        let data = cut.flatMap { Array($0[(l4 + 20)...]) }
        #expect(data == Array(big[(l4 + 20)...]))
        #expect(coalescer.partials == run.count + 1)
    }

    @Test func aShortSegmentClosesTheRun() {
        // 2500 bytes at mss 1000: 1000, 1000, 500 — then the next 1000 may not follow the 500.
        let first = Self.segments(ipv6: false, payload: 2500, flags: TCP.ack)
        let next = Self.segments(ipv6: false, payload: 1000, seq: 5000 + 2500, flags: TCP.ack)
        let out = Self.coalesce(first + next)
        #expect(out.count == 2)
        #expect(out[0].withUnsafeBytes { VirtioNetHeader($0).gsoSize } == 1000)
        #expect(out[0].count == 10 + 34 + 20 + 2500)
    }
}

/// UDP with USO: a super-frame cut into datagrams (as Ferry does on egress) and datagrams
/// joined into one (as it does on ingress) are each other's inverse.
@Suite struct UDPSegmentationTests {
    /// A UDP super-frame of `payload` bytes, as a TAP with USO hands it over (checksum partial).
    static func superFrame(ipv6: Bool, payload: Int, gsoSize: Int, dontFragment: Bool = false) -> ([UInt8], VirtioNetHeader) {
        let frame = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: ipv6 ? v6A : v4A, destination: ipv6 ? v6B : v4B,
                                       dontFragment: dontFragment, identification: 0x3000,
                                       payload: .udp(sourcePort: 4433, destinationPort: 443, data: FrameBuilder.pattern(payload, seed: 7)),
                                       pad: false)
        let l4 = ipv6 ? 54 : 34
        return (frame, VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, gsoType: VirtioNetHeader.gsoUDPL4,
                                       headerLength: UInt16(l4 + 8), gsoSize: UInt16(gsoSize),
                                       checksumStart: UInt16(l4), checksumOffset: 6))
    }

    static func cut(_ frame: [UInt8], _ header: VirtioNetHeader) throws -> [[UInt8]] {
        var out = [UInt8](repeating: 0, count: 200_000)
        var spans: [(Int, Int)] = []
        _ = try out.withUnsafeMutableBytes { o in try frame.withUnsafeBytes { try Segmentation.segment($0, header: header, into: o) { spans.append(($0, $1)) } } }
        return spans.map { Array(out[$0.0..<($0.0 + $0.1)]) }
    }

    @Test("a UDP super-frame is cut into datagrams each whole and checksummed", arguments: [false, true])
    func cutIntoDatagrams(ipv6: Bool) throws {
        let (frame, header) = Self.superFrame(ipv6: ipv6, payload: 10 * 1200 + 345, gsoSize: 1200)
        let datagrams = try Self.cut(frame, header)
        #expect(datagrams.count == 11)
        let l4 = ipv6 ? 54 : 34
        var data: [UInt8] = []
        for (i, d) in datagrams.enumerated() {
            let length = i == 10 ? 345 : 1200
            #expect(d.count == l4 + 8 + length)
            #expect(Int(u16(d, l4 + 4)) == 8 + length, "UDP length of datagram \(i)")
            if ipv6 {
                #expect(Int(u16(d, 18)) == 8 + length)
            } else {
                #expect(Int(u16(d, 16)) == 20 + 8 + length)
                #expect(u16(d, 18) == 0x3000 &+ UInt16(i), "IPv4 IDs count up")
                #expect(d.withUnsafeBytes { InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: $0[14..<34])) })
            }
            // The UDP checksum verifies, by an independent dissection.
            #expect(d.withUnsafeBytes { UDPChecksum.verdict(frame: $0) } == true, "UDP checksum of datagram \(i)")
            data += d[(l4 + 8)...]
        }
        #expect(data == FrameBuilder.pattern(10 * 1200 + 345, seed: 7))
    }

    @Test("datagrams joined then cut again come back byte for byte", arguments: [false, true])
    func joinedThenCut(ipv6: Bool) throws {
        let (frame, header) = Self.superFrame(ipv6: ipv6, payload: 20 * 700 + 100, gsoSize: 700)
        let datagrams = try Self.cut(frame, header)
        let out = SegmentCoalescerTests.coalesce(datagrams, SegmentCoalescer(udp: true))
        try #require(out.count == 1)
        let joined = out[0].withUnsafeBytes { VirtioNetHeader($0) }
        let l4 = ipv6 ? 54 : 34
        #expect(joined.gsoType == VirtioNetHeader.gsoUDPL4 && joined.gsoSize == 700 && joined.needsChecksum)
        #expect(joined.checksumStart == UInt16(l4) && joined.checksumOffset == 6 && Int(joined.headerLength) == l4 + 8)
        // As a UDP GSO send leaves it for __udp_gso_segment: the UDP length is the whole run's,
        // and the checksum field the pseudo-header sum over that length (the kernel swaps the
        // length for each datagram's: check - len + newlen).
        let joinedFrame = Array(out[0][10...])
        let l4Length = joinedFrame.count - l4
        #expect(Int(u16(joinedFrame, l4 + 4)) == l4Length)
        let pseudo = joinedFrame.withUnsafeBytes { f in
            ipv6 ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(f, at: 22), destination: IPv6Address(f, at: 38),
                                                    protocol: IPProtocol.udp, length: l4Length)
                 : InternetChecksum.pseudoHeaderSum(source: IPv4Address(f, at: 26), destination: IPv4Address(f, at: 30),
                                                    protocol: IPProtocol.udp, length: l4Length)
        }
        #expect(u16(joinedFrame, l4 + 6) == pseudo)
        let back = try Self.cut(joinedFrame, joined)
        #expect(back == datagrams, "re-cut datagrams equal the originals")
    }

    @Test("without USO, or when the rules say no, datagrams go as they came")
    func notJoined() throws {
        let (frame, header) = Self.superFrame(ipv6: false, payload: 8 * 500, gsoSize: 500)
        let datagrams = try Self.cut(frame, header)
        func plain(_ out: [[UInt8]]) -> Bool { out.allSatisfy { !$0.withUnsafeBytes { VirtioNetHeader($0).isGSO } } }
        // No USO on the TAP: never joined.
        let off = SegmentCoalescerTests.coalesce(datagrams)
        #expect(off.count == 8 && plain(off))
        // A gap in the IPv4 IDs (no DF): the kernel's cut would not give these IDs back.
        var gap = datagrams
        gap.remove(at: 3)
        let split = SegmentCoalescerTests.coalesce(gap, SegmentCoalescer(udp: true))
        #expect(split.count == 2 && !plain(split))
        // A bad checksum: that datagram is not joined (and ends the run before it).
        var bad = datagrams
        bad[5][34 + 8 + 10] ^= 0xFF
        let withBad = SegmentCoalescerTests.coalesce(bad, SegmentCoalescer(udp: true))
        #expect(withBad.count == 3)
        #expect(Array(withBad[1][10...]) == bad[5], "the corrupt datagram goes alone, unchanged")
        // More than 64 datagrams make two super-frames.
        let (many, manyHeader) = Self.superFrame(ipv6: false, payload: 70 * 100, gsoSize: 100, dontFragment: true)
        let seventy = try Self.cut(many, manyHeader)
        let two = SegmentCoalescerTests.coalesce(seventy, SegmentCoalescer(udp: true))
        #expect(two.count == 2)
        #expect(two.map { $0.count - 10 - 42 } == [64 * 100, 6 * 100])
    }
}

/// The UDP checksum of an Ethernet/IP/UDP frame, verified from the bytes alone.
enum UDPChecksum {
    static func verdict(frame f: UnsafeRawBufferPointer) -> Bool {
        let isIPv6 = f.u16(12) == EtherType.ipv6
        let l4 = isIPv6 ? 54 : 34
        var sum: UInt32 = 0
        func add(_ bytes: UnsafeRawBufferPointer) {
            var i = 0
            while i + 1 < bytes.count { sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
            if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        }
        if isIPv6 { add(UnsafeRawBufferPointer(rebasing: f[22..<54])) } else { add(UnsafeRawBufferPointer(rebasing: f[26..<34])) }
        sum += UInt32(IPProtocol.udp) + UInt32(f.count - l4)
        add(UnsafeRawBufferPointer(rebasing: f[l4...]))
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return sum == 0xFFFF
    }
}

private func u16(_ bytes: [UInt8], _ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }

/// Received IPv6 segments with extension headers are not joined: each reaches the TAP as it
/// came, byte for byte, and after any run of its flow gathered before it.
@Suite struct SegmentCoalescerExtensionHeaderTests {
    @Test(arguments: [false, true])
    func segmentsWithExtensionHeadersGoAsTheyCameAndInOrder(udp: Bool) {
        let plain = udp ? UDPSegmentationTests.superFrame(ipv6: true, payload: 4000, gsoSize: 1000).0 : []
        let segs = udp ? try! UDPSegmentationTests.cut(plain, UDPSegmentationTests.superFrame(ipv6: true, payload: 4000, gsoSize: 1000).1)
                       : SegmentCoalescerTests.segments(ipv6: true, payload: 4000, flags: TCP.ack)
        let chain = [(IPProtocol.ipv6HopByHop, IPv6ExtensionHeaders.options(units: 0)),
                     (IPProtocol.ipv6DestinationOptions, IPv6ExtensionHeaders.options(units: 1))]
        let withChain = segs.map { IPv6ExtensionHeaders.splice($0, chain) }
        let empty = [UInt8](repeating: 0, count: 10)
        let c = SegmentCoalescer(udp: udp)
        #expect(SegmentCoalescerTests.coalesce(withChain, c) == withChain.map { empty + $0 }, "each alone, intact, in order")
        // Two plain segments start a run; a segment of the same flow with extension headers
        // sends that run out before itself.
        let mixed = SegmentCoalescerTests.coalesce([segs[0], segs[1], withChain[2], segs[3]], c)
        #expect(mixed.count == 3)
        #expect(mixed.first.map { $0.withUnsafeBytes { VirtioNetHeader($0).isGSO } } == true, "the run of the first two")
        #expect(mixed.count == 3 && mixed[1] == empty + withChain[2] && mixed[2] == empty + segs[3])
    }
}
