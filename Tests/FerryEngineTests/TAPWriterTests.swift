// What reaches the TAP for inner segments whose sender left the checksum partial (a peer's
// kernel vxlan behind a veth with checksum offload): NEEDS_CSUM with the checksum's start and
// offset when the TAP has a virtio-net header (joined or not), the checksum finished by Ferry
// when it has none; and a checksum that is wrong otherwise delivered as before, unchanged and
// without flags, for the container's stack to refuse.

import FerryEngine
import FerryTestSupport
import FerryWire
import Testing

@Suite("TAP writer: partial checksums from the tunnel")
struct TAPWriterTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var underlay: Variant
        var ipv6: Bool
        var udp: Bool
        var testDescription: String { "\(udp ? "UDP" : "TCP")/IPv\(ipv6 ? 6 : 4) over \(underlay.name)" }
    }

    static let cases: [Case] = [false, true].flatMap { ipv6 in [false, true].map { udp in Case(underlay: .vxlan4, ipv6: ipv6, udp: udp) } }
        + [Case(underlay: .vxlan6, ipv6: true, udp: false), Case(underlay: .gre4, ipv6: false, udp: true)]

    static let remote = MACAddress(0x02, 0x22, 0, 0, 0, 0x02)

    /// A container's segment with every checksum right: TCP ACK (with data) or UDP.
    static func full(_ c: Case, data: Int = 700, sequence: UInt32 = 1, flags: UInt8 = TCP.ack, pad: Bool = false) -> [UInt8] {
        FrameBuilder.frame(destinationMAC: localMAC, sourceMAC: remote,
                           source: c.ipv6 ? .v6(IPv6Address("fd00:18::2")!) : .v4(IPv4Address(10, 18, 0, 2)),
                           destination: c.ipv6 ? .v6(IPv6Address("fd00:17::2")!) : .v4(IPv4Address(10, 17, 0, 2)),
                           payload: c.udp ? .udp(sourcePort: 5353, destinationPort: 4000, data: FrameBuilder.pattern(data, seed: 9))
                                          : .tcp(sourcePort: 5201, destinationPort: 40000, sequence: sequence, acknowledgment: 77,
                                                 flags: flags, data: FrameBuilder.pattern(data, seed: UInt8(truncatingIfNeeded: sequence))),
                           pad: pad)
    }

    /// `frame` as a sender with checksum offload leaves it: the pseudo-header sum in the field.
    static func partial(_ frame: [UInt8]) -> [UInt8] {
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

    static func field(_ c: Case) -> Int { (c.ipv6 ? 54 : 34) + (c.udp ? 6 : 16) }

    func needsChecksum(_ c: Case) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 10)
        h.withUnsafeMutableBytes {
            VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, checksumStart: UInt16(c.ipv6 ? 54 : 34),
                            checksumOffset: c.udp ? 6 : 16).write(to: $0.baseAddress!)
        }
        return h
    }

    @Test(arguments: cases)
    func withAVirtioHeaderAPartialSegmentGoesWithNeedsChecksum(_ c: Case) throws {
        for joins in [true, false] {
            let h = try Harness(c.underlay, virtio: true, joinsSegments: joins)
            let peer = c.underlay.peerA
            let segment = Self.partial(Self.full(c))
            try h.receive(segment, from: peer)
            #expect(h.device.written == [needsChecksum(c) + segment], "\(c), joining \(joins)")
            #expect(h.counter(.partialChecksums) == 1, "\(c), joining \(joins)")
            #expect(h.statistics.totalDrops == 0)
        }
    }

    @Test(arguments: cases)
    func withoutAVirtioHeaderFerryFinishesTheChecksum(_ c: Case) throws {
        let h = try Harness(c.underlay, virtio: false)
        let full = Self.full(c)
        try h.receive(Self.partial(full), from: c.underlay.peerA)
        #expect(h.device.written == [full], "\(c): the full checksum, as the sender's device would have written it")
        #expect(h.counter(.partialChecksums) == 1)
        // A pure ACK padded to 60 bytes: the sum leaves the padding out.
        if !c.udp && !c.ipv6 {
            let ack = Self.full(c, data: 0, pad: true)
            var padded = Self.partial(ack)
            padded[54...].withUnsafeMutableBufferPointer { $0.initialize(repeating: 0x5A) }
            try h.receive(padded, from: c.underlay.peerA)
            #expect(h.device.written.last == Array(ack[..<54]), "\(c): finished, written without the padding")
        }
    }

    /// A checksum that is neither right nor the pseudo-header sum is delivered as before (as
    /// it came, no NEEDS_CSUM) and not counted as partial; a right one is untouched.
    @Test(arguments: cases)
    func aWrongChecksumIsNotTakenForAPartialOne(_ c: Case) throws {
        var damaged = Self.partial(Self.full(c))
        damaged[Self.field(c) + 1] ^= 0x04
        for virtio in [true, false] {
            let h = try Harness(c.underlay, virtio: virtio)
            try h.receive(damaged, from: c.underlay.peerA)
            try h.receive(Self.full(c), from: c.underlay.peerA)
            let empty = [UInt8](repeating: 0, count: virtio ? 10 : 0)
            #expect(h.device.written == [empty + damaged, empty + Self.full(c)], "\(c), virtio \(virtio)")
            #expect(h.counter(.partialChecksums) == 0)
        }
    }

    /// A peer's kernel whose GSO crossed its veth whole sends TCP segments longer than the
    /// tunnel's MTU (1450 here). With joining, each goes to the TAP as a TCP super-frame cut to
    /// fit the MTU; without (or with no virtio-net header), Ferry cuts it into segments that fit,
    /// each with its full checksum. The bytes arrive, in order, whatever the form.
    @Test(arguments: [false, true])
    func anOversizePartialSegmentIsCutToTheMTU(ipv6: Bool) throws {
        let c = Case(underlay: .vxlan4, ipv6: ipv6, udp: false)
        let l4 = ipv6 ? 54 : 34, mtu = 1450
        let big = (0..<3).map { Self.partial(Self.full(c, data: 7240, sequence: UInt32(1 + 7240 * $0))) }
        let data = big.flatMap { Array($0[(l4 + 20)...]) }
        for (virtio, joins) in [(true, true), (true, false), (false, false)] {
            let h = try Harness(virtio: virtio, joinsSegments: joins)
            try h.ingress(big.map { (h.tunnelPacket($0, from: peer4a), peer4a) })
            let v = virtio ? 10 : 0
            if joins {
                #expect(h.device.written.count == 3, "\(c): one super-frame each")
                for (w, frame) in zip(h.device.written, big) {
                    let header = w.withUnsafeBytes { VirtioNetHeader($0) }
                    #expect(header.isGSO && header.needsChecksum && Int(header.gsoSize) == mtu - (l4 - 14) - 20)
                    #expect(Array(w[10...]) == frame)
                }
            } else {
                let perFrame = (7240 + mtu - (l4 - 14) - 21) / (mtu - (l4 - 14) - 20)
                #expect(h.device.written.count == 3 * perFrame, "\(c), virtio \(virtio)")
                for w in h.device.written {
                    #expect(Array(w[..<v]) == [UInt8](repeating: 0, count: v), "an empty virtio header")
                    let frame = Array(w[v...])
                    #expect(frame.count - 14 <= mtu && Self.l4ChecksumIsValid(frame), "\(c), virtio \(virtio): \(frame.count) bytes")
                }
                let received = h.device.written.flatMap { Array($0[(v + l4 + 20)...]) }
                #expect(received == data, "\(c), virtio \(virtio): the bytes, in order")
            }
            #expect(h.counter(.partialChecksums) == 3 && h.statistics.totalDrops == 0)
        }
    }

    static func l4ChecksumIsValid(_ frame: [UInt8]) -> Bool {
        frame.withUnsafeBytes { r in
            let ipv6 = r.u16(12) == EtherType.ipv6
            let l4 = ipv6 ? 54 : 34
            let end = ipv6 ? 54 + Int(r.u16(18)) : 14 + Int(r.u16(16))
            let pseudo = ipv6
                ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(r, at: 22), destination: IPv6Address(r, at: 38), protocol: r[20], length: end - l4)
                : InternetChecksum.pseudoHeaderSum(source: IPv4Address(r, at: 26), destination: IPv4Address(r, at: 30), protocol: r[23], length: end - l4)
            return InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: r[l4..<end]), initial: pseudo)
        }
    }

    /// A TCP stream from a sender with checksum offload: its segments are joined into one
    /// super-frame (NEEDS_CSUM, as any), and the lone ones around it go with NEEDS_CSUM too.
    @Test(arguments: [false, true])
    func aPartialStreamIsJoinedIntoASuperFrame(ipv6: Bool) throws {
        let c = Case(underlay: .vxlan4, ipv6: ipv6, udp: false)
        let h = try Harness(virtio: true)
        let syn = Self.partial(Self.full(c, data: 0, flags: TCP.syn))
        let stream = (0..<8).map { Self.partial(Self.full(c, data: 1000, sequence: UInt32(1 + 1000 * $0))) }
        try h.ingress(([syn] + stream).map { (h.tunnelPacket($0, from: peer4a), peer4a) })
        try #require(h.device.written.count == 2)
        #expect(h.device.written[0] == needsChecksum(c) + syn)
        let joined = h.device.written[1].withUnsafeBytes { VirtioNetHeader($0) }
        #expect(joined.isGSO && joined.needsChecksum && joined.gsoSize == 1000 && joined.checksumOffset == 16)
        let payloadIntact = Array(h.device.written[1][(10 + (ipv6 ? 74 : 54))...]) == stream.flatMap { Array($0[(ipv6 ? 74 : 54)...]) }
        #expect(payloadIntact)
        #expect(h.counter(.partialChecksums) == 9 && h.counter(.coalescedSegments) == 7)
    }
}
