import Testing
import FerryTestSupport
import FerryWire

/// Every way a packet can be wrong yields exactly the named reason, and nothing traps.
@Suite struct DecapsulatorTests {
    // Offsets in an untagged IPv4 frame.
    static let ip = 14, udp = 34, vxlan = 42, gre = 34

    static func vxlanFrame(udpChecksum: Bool = false) -> [UInt8] {
        encapsulate(innerFrame(length: 200), with: EncapsulationTemplate(options(.vxlan(vni: 42), udpChecksum: udpChecksum)))
    }
    static func greFrame(_ g: GREOptions = GREOptions(key: 42)) -> [UInt8] {
        encapsulate(innerFrame(length: 200), with: EncapsulationTemplate(options(.gre(g))))
    }
    static func ipv6Frame() -> [UInt8] {
        encapsulate(innerFrame(length: 200), with: EncapsulationTemplate(options(.vxlan(vni: 42), ipv6: true)))
    }

    /// Applies `change`, then recomputes the outer IPv4 header checksum so that only the
    /// intended fault remains.
    static func edited(_ frame: [UInt8], fixChecksum: Bool = true, _ change: (inout [UInt8]) -> Void) -> [UInt8] {
        var f = frame
        change(&f)
        if fixChecksum && f.count >= 34 && f[12] == 0x08 && f[13] == 0x00 {
            let ihl = Int(f[14] & 0x0F) * 4
            if ihl >= 20 && f.count >= 14 + ihl {
                f[24] = 0; f[25] = 0
                let c = ~referenceSum(Array(f[14..<(14 + ihl)]))
                f[24] = UInt8(c >> 8); f[25] = UInt8(c & 0xFF)
            }
        }
        return f
    }

    static func set16(_ f: inout [UInt8], _ offset: Int, _ v: Int) {
        f[offset] = UInt8((v >> 8) & 0xFF); f[offset + 1] = UInt8(v & 0xFF)
    }

    /// Keeps the first `count` bytes and makes the IPv4 and UDP lengths agree with them, so
    /// that the fault is a short inner layer, not a lying length.
    static func shortened(_ frame: [UInt8], to count: Int) -> [UInt8] {
        edited(Array(frame[0..<count])) { f in
            set16(&f, ip + 2, count - ip)
            if f[ip + 9] == IPProtocol.udp && count >= udp + 8 {
                set16(&f, udp + 4, count - udp)
                set16(&f, udp + 6, 0)
            }
        }
    }

    static var cases: [(DropReason, [UInt8], DecapsulationPolicy)] {
        let v = vxlanFrame(), g = greFrame(), six = ipv6Frame()
        let any = DecapsulationPolicy()
        return [
            (.truncatedEthernet, Array(v[0..<10]), any),
            (.truncatedEthernet, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x81, 0x00, 0, 1], any),
            (.notIPUnderlay, edited(v) { set16(&$0, 12, 0x0806) }, any),
            (.truncatedIP, Array(v[0..<30]), any),
            (.truncatedIP, Array(v[0..<(v.count - 1)]), any),
            (.truncatedIP, Array(six[0..<50]), any),
            (.badIPVersion, edited(v) { $0[ip] = 0x55 }, any),
            (.badIPVersion, edited(v) { set16(&$0, 12, 0x86DD) }, any),
            (.badIPv4HeaderLength, edited(v) { $0[ip] = 0x44 }, any),
            (.badIPv4TotalLength, edited(v) { set16(&$0, ip + 2, 19) }, any),
            (.badIPv4HeaderChecksum, edited(v, fixChecksum: false) { $0[ip + 8] &-= 1 }, any),
            (.badIPv6PayloadLength, edited(six) { set16(&$0, ip + 4, 0) }, any),
            (.truncatedIPv6ExtensionHeaders, edited(six) { $0[ip + 6] = 0; $0[54] = 17; $0[55] = 200 }, any),
            (.outerFragment, edited(v) { set16(&$0, ip + 6, 0x2000) }, any),
            (.outerFragment, edited(v) { set16(&$0, ip + 6, 0x0010) }, any),
            (.outerFragment, edited(six) { $0[ip + 6] = 44; $0[54] = 17; $0[57] = 1 }, any),
            (.notTunnelProtocol, edited(v) { $0[ip + 9] = IPProtocol.tcp }, any),
            (.notTunnelProtocol, v, DecapsulationPolicy(acceptVXLAN: false)),
            (.notTunnelProtocol, g, DecapsulationPolicy(acceptGRE: false)),
            (.truncatedUDP, shortened(v, to: udp + 4), any),
            (.badUDPLength, edited(v) { set16(&$0, udp + 4, 7) }, any),
            (.badUDPLength, edited(v) { set16(&$0, udp + 4, v.count - udp + 1) }, any),
            (.notTunnelPort, edited(v) { set16(&$0, udp + 2, 4790) }, any),
            (.notTunnelPort, v, DecapsulationPolicy(vxlanPort: 8472)),
            (.badUDPChecksum, edited(vxlanFrame(udpChecksum: true)) { $0[100] ^= 0x40 }, any),
            // Damage to a header a checksum covers is counted as damage, not as what it mimics.
            (.badUDPChecksum, edited(vxlanFrame(udpChecksum: true)) { $0[vxlan + 2] ^= 0x01 }, any),
            (.badUDPChecksum, edited(vxlanFrame(udpChecksum: true)) { $0[vxlan + 6] ^= 0x01 }, DecapsulationPolicy(vni: 42)),
            (.badGREChecksum, edited(greFrame(GREOptions(key: 42, checksum: true))) { $0[gre + 11] ^= 0x01 }, DecapsulationPolicy(greKey: 42)),
            // A zero UDP checksum over IPv6 is refused unless the receiver opted in (RFC 6935).
            (.badUDPChecksum, encapsulate(innerFrame(length: 100), with: EncapsulationTemplate(options(.vxlan(vni: 1), ipv6: true, udpChecksum: false))), any),
            (.truncatedVXLAN, shortened(v, to: vxlan + 7), any),
            (.vxlanMissingIFlag, edited(v) { $0[vxlan] = 0x00 }, any),
            (.vxlanMissingIFlag, edited(v) { $0[vxlan] = 0x80 }, any),
            (.vxlanReservedBitsSet, edited(v) { $0[vxlan] = 0x0C }, any),
            (.vxlanReservedBitsSet, edited(v) { $0[vxlan + 2] = 1 }, any),
            (.vxlanReservedBitsSet, edited(v) { $0[vxlan + 7] = 1 }, any),
            (.unexpectedVNI, v, DecapsulationPolicy(vni: 43)),
            (.truncatedGRE, shortened(g, to: gre + 3), any),
            (.truncatedGRE, shortened(g, to: gre + 6), any),
            (.greBadVersion, edited(g) { $0[gre + 1] |= 0x01 }, any),
            (.greRoutingBitSet, edited(g) { $0[gre] |= 0x40 }, any),
            (.greReservedFlagsSet, edited(g) { $0[gre] |= 0x08 }, any),
            (.greReservedFlagsSet, edited(g) { $0[gre] |= 0x04 }, any),
            (.greUnsupportedProtocol, edited(g) { set16(&$0, gre + 2, 0x0800) }, any),
            (.badGREChecksum, edited(greFrame(GREOptions(key: 42, checksum: true))) { $0[120] ^= 1 }, any),
            (.unexpectedGREKey, g, DecapsulationPolicy(greKey: 43)),
            (.unexpectedGREKey, greFrame(GREOptions()), DecapsulationPolicy(greKey: 42)),
            (.innerFrameTooShort, shortened(v, to: vxlan + 8 + 13), any),
            (.innerFrameTooShort, shortened(g, to: gre + 8 + 2), any),
        ]
    }

    @Test func eachFaultHasItsOwnReason() {
        var seen = Set<DropReason>()
        for (i, (reason, frame, policy)) in Self.cases.enumerated() {
            #expect(decapsulate(frame, policy: policy) == .drop(reason), "case \(i): \(reason)")
            seen.insert(reason)
        }
        // The decapsulator's part of the catalogue has no reason that nothing can produce.
        let decapsulation = Set(DropReason.allCases.filter { $0.stage == .decapsulation })
        #expect(seen == decapsulation, "untested: \(decapsulation.subtracting(seen))")
    }

    @Test func zeroIPv6ChecksumPassesWhenAllowed() {
        let frame = encapsulate(innerFrame(length: 100), with: EncapsulationTemplate(options(.vxlan(vni: 1), ipv6: true, udpChecksum: false)))
        #expect(decapsulate(frame, policy: DecapsulationPolicy(acceptZeroIPv6Checksum: true)).packet?.udpChecksum == .absent)
        #expect(decapsulate(frame, policy: DecapsulationPolicy(udpChecksum: .report)).packet?.udpChecksum == .absent)
    }

    @Test func outerIPv4OptionsAndIgnoredGREBitsAreAccepted() {
        // An outer IPv4 header with 4 bytes of options (NOPs): the payload starts after them.
        let v = Self.vxlanFrame()
        var withOptions = Array(v[0..<34]) + [1, 1, 1, 1] + Array(v[34...])
        withOptions[14] = 0x46
        withOptions = Self.edited(withOptions) { Self.set16(&$0, Self.ip + 2, v.count - 14 + 4) }
        let packet = try! #require(decapsulate(withOptions).packet)
        #expect(Array(withOptions[packet.inner]) == Array(v[50...]))
        // RFC 2784 bits 6-12 are ignored on receipt.
        let g = Self.edited(Self.greFrame()) { $0[Self.gre] |= 0x02; $0[Self.gre + 1] |= 0x40 }
        #expect(decapsulate(g).packet?.greKey == 42)
    }

    @Test func theUnmodifiedPacketsPass() {
        for frame in [Self.vxlanFrame(), Self.vxlanFrame(udpChecksum: true), Self.greFrame(), Self.ipv6Frame()] {
            #expect(decapsulate(frame, policy: DecapsulationPolicy(vni: 42, greKey: 42)).packet != nil)
        }
    }

    @Test func reasonNamesAreUniqueAndSnakeCase() {
        let names = DropReason.allCases.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(names.allSatisfy { $0.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" } })
        #expect(DropReason.allCases.allSatisfy { !$0.summary.isEmpty })
    }

    @Test func ethernetPaddingAfterTheIPDatagramIsIgnored() {
        // A short GRE packet padded to 60 bytes on the wire: the padding is not inner data.
        let inner = innerFrame(length: 14)
        let outer = encapsulate(inner, with: EncapsulationTemplate(options(.gre(GREOptions()))))
        #expect(outer.count < 60)
        let padded = outer + [UInt8](repeating: 0, count: 60 - outer.count)
        let packet = try! #require(decapsulate(padded).packet)
        #expect(Array(padded[packet.inner]) == inner)
    }

    @Test func vlanTaggedUnderlayAndIPv6ExtensionHeaders() {
        // An 802.1Q tag on the underlay frame.
        let v = Self.vxlanFrame()
        let tagged = Array(v[0..<12]) + [0x81, 0x00, 0x00, 0x0A] + Array(v[12...])
        #expect(Array(tagged[decapsulate(tagged).packet!.inner]) == Array(v[50...]))

        // A destination-options header between IPv6 and UDP.
        let six = Self.ipv6Frame()
        var withExt = Array(six[0..<54]) + [17, 0, 1, 4, 0, 0, 0, 0] + Array(six[54...])
        withExt[20] = 60
        Self.set16(&withExt, 18, Int(UInt16(six[18]) << 8 | UInt16(six[19])) + 8)
        let packet = try! #require(decapsulate(withExt).packet)
        #expect(Array(withExt[packet.inner]) == Array(six[(54 + 16)...]))
    }

    @Test func everyTruncationIsADropAndNeverTraps() {
        for (name, opts) in EncapsulationTemplateTests.allVariants {
            let template = EncapsulationTemplate(opts)
            for vlan in [nil, UInt16(7)] {
                let frame = encapsulate(innerFrame(length: 120, vlan: vlan), with: template)
                for n in 0..<frame.count {
                    let r = decapsulate(Array(frame[0..<n]))
                    #expect(r.dropReason != nil, "\(name) cut to \(n)")
                }
                // Truncations whose lengths were made consistent reach the inner layers.
                guard !opts.local.isIPv6 else { continue }
                var reasons = Set<DropReason>()
                for n in (Self.ip + 20)..<(opts.fullHeaderLength + 14) {
                    let r = decapsulate(Self.shortened(frame, to: n), policy: DecapsulationPolicy(udpChecksum: .ignore))
                    if let reason = r.dropReason { reasons.insert(reason) } else { Issue.record("\(name) kept at \(n)") }
                }
                let expected: Set<DropReason> = opts.encapsulation.kind == .vxlan
                    ? [.truncatedUDP, .truncatedVXLAN, .innerFrameTooShort]
                    : [.truncatedGRE, .innerFrameTooShort]
                #expect(reasons == expected, "\(name)")
            }
        }
    }

    @Test func corruptionIsCaughtWhereAChecksumCoversIt() {
        var rng = SplitMix64(seed: 7)
        // Over IPv4 with a UDP or GRE checksum, every byte from the EtherType on is covered.
        let covered = [Self.vxlanFrame(udpChecksum: true), Self.greFrame(GREOptions(key: 42, checksum: true, sequence: true))]
        for frame in covered {
            // (Not GRE's first byte: clearing its C bit removes the very check that would tell.)
            for offset in 12..<frame.count where offset != Self.gre || frame[Self.ip + 9] != IPProtocol.gre {
                var f = frame
                f[offset] ^= UInt8.random(in: 1...255, using: &rng)
                #expect(decapsulate(f).dropReason != nil, "corruption at \(offset) went unseen")
            }
        }
        // Anywhere else, random damage and random bytes give some result and never trap.
        for (_, opts) in EncapsulationTemplateTests.allVariants {
            let frame = encapsulate(innerFrame(length: 90), with: EncapsulationTemplate(opts))
            for _ in 0..<300 {
                var f = frame
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    f[Int.random(in: 0..<f.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
                _ = decapsulate(f)
                _ = f.withUnsafeBytes { Decapsulator().decapsulate(ipPacket: UnsafeRawBufferPointer(rebasing: $0[14...])) }
                _ = f.withUnsafeBytes { Decapsulator().decapsulate(vxlanPayload: UnsafeRawBufferPointer(rebasing: $0[30...]), source: v4A, destination: v4B) }
                _ = f.withUnsafeBytes { Decapsulator().decapsulate(grePayload: UnsafeRawBufferPointer(rebasing: $0[34...]), source: v4A, destination: v4B) }
            }
        }
        for _ in 0..<3000 {
            let garbage = (0..<Int.random(in: 0...120, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = decapsulate(garbage)
        }
    }

    @Test func rawIPSocketForm() {
        let g = Self.greFrame()
        let ipPacket = Array(g[14...])
        let r = ipPacket.withUnsafeBytes { Decapsulator().decapsulate(ipPacket: $0) }
        #expect(r.packet?.greKey == 42)
        #expect([UInt8]().withUnsafeBytes { Decapsulator().decapsulate(ipPacket: $0) } == .drop(.truncatedIP))
        #expect([0x50].withUnsafeBytes { Decapsulator().decapsulate(ipPacket: $0) } == .drop(.badIPVersion))
    }
}
