import Testing
import FerryWire

/// Coalescing is segmentation's inverse: segments joined into a super-frame and cut again must
/// come back byte for byte, and nothing that may not be joined is.
@Suite struct TCPCoalescerTests {
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
        _ = try! out.withUnsafeMutableBytes { o in try frame.withUnsafeBytes { try Segmentation.segmentTCP($0, header: h, into: o) { spans.append(($0, $1)) } } }
        return spans.map { Array(out[$0.0..<($0.0 + $0.1)]) }
    }

    /// Feeds frames (each behind 10 bytes of headroom) and returns what was emitted.
    static func coalesce(_ frames: [[UInt8]], _ c: TCPCoalescer = TCPCoalescer()) -> [[UInt8]] {
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
        _ = try again.withUnsafeMutableBytes { o in try frame.withUnsafeBytes { try Segmentation.segmentTCP($0, header: header, into: o) { spans.append(($0, $1)) } } }
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
