import Testing
import FerryWire

@Suite struct EncapsulationTemplateTests {
    static let greVariants: [GREOptions] = [false, true].flatMap { c in
        [nil, UInt32(0xDEAD_BEEF)].flatMap { k in [false, true].map { s in GREOptions(key: k, checksum: c, sequence: s) } }
    }

    static let allVariants: [(String, TunnelOptions)] = {
        var out: [(String, TunnelOptions)] = []
        for ipv6 in [false, true] {
            let family = ipv6 ? "ipv6" : "ipv4"
            for csum in [false, true] {
                out.append(("vxlan-\(family)-csum\(csum)", options(.vxlan(vni: 0x123456), ipv6: ipv6, udpChecksum: csum)))
            }
            for g in greVariants {
                out.append(("gre-\(family)-c\(g.checksum)-k\(g.key != nil)-s\(g.sequence)", options(.gre(g), ipv6: ipv6)))
            }
        }
        return out
    }()

    @Test func roundTripGivesBackTheSameBytes() {
        let sizes = [14, 15, 42, 60, 64, 65, 127, 128, 500, 1000, 1450, 1514, 1518, 4000, 9000, 9018]
        for (name, opts) in Self.allVariants {
            let template = EncapsulationTemplate(opts)
            for size in sizes {
                for vlan in [nil, UInt16(100)] {
                    let inner = innerFrame(length: size + (vlan == nil ? 0 : 4), vlan: vlan, seed: UInt8(size & 0xFF))
                    let outer = encapsulate(inner, with: template)
                    #expect(outer.count == inner.count + opts.fullHeaderLength)
                    let result = decapsulate(outer, policy: DecapsulationPolicy(udpChecksum: .verify, acceptZeroIPv6Checksum: true))
                    guard let packet = result.packet else {
                        Issue.record("\(name) size \(size): \(result)")
                        continue
                    }
                    #expect(Array(outer[packet.inner]) == inner, "\(name) size \(size)")
                    #expect(packet.outerSource == opts.local && packet.outerDestination == opts.remote)
                    #expect(packet.ttl == 64)
                    switch opts.encapsulation {
                    case .vxlan(let vni):
                        #expect(packet.vni == vni)
                        #expect(packet.udpChecksum == (opts.udpChecksum ? .valid : .absent))
                        #expect(opts.sourcePortRange.contains(packet.sourcePort))
                        #expect(packet.destinationPort == 4789)
                    case .gre(let g):
                        #expect(packet.greKey == g.key)
                        #expect(packet.greChecksumPresent == g.checksum)
                        #expect((packet.greSequence != nil) == g.sequence)
                    }
                }
            }
        }
    }

    @Test func outerIPv4HeaderIsValidAndCarriesTheOptions() {
        for df in DFPolicy.allCases {
            for tos in [TOSPolicy.fixed(0xB8), .inherit] {
                let template = EncapsulationTemplate(options(.vxlan(vni: 1), dontFragment: df, tos: tos, ttl: 7))
                let inner = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, tos: 0x2E, dontFragment: false,
                                               payload: .udp(sourcePort: 1, destinationPort: 2, data: [1, 2, 3]))
                let outer = encapsulate(inner, with: template)
                outer.withUnsafeBytes { b in
                    let ip = IPv4View(UnsafeRawBufferPointer(rebasing: b[14...]))!
                    #expect(ip.isChecksumValid)
                    #expect(ip.ttl == 7)
                    #expect(ip.totalLength == outer.count - 14)
                    #expect(ip.dontFragment == (df == .set))
                    // A fixed TOS keeps the inner ECN field (ECT(0) here), RFC 6040.
                    #expect(ip.tos == (tos == .inherit ? 0x2E : 0xBA))
                }
            }
        }
        // DF inherit follows the inner packet: an inner IPv4 packet with DF gets DF outside too.
        let template = EncapsulationTemplate(options(.gre(GREOptions(key: 1)), dontFragment: .inherit))
        let innerDF = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, dontFragment: true,
                                         payload: .udp(sourcePort: 1, destinationPort: 2, data: []))
        #expect(decapsulate(encapsulate(innerDF, with: template)).packet?.dontFragment == true)
    }

    @Test func ecnFollowsTheInnerPacketAndCEBecomesECT0() {
        for (innerTOS, expected) in [(UInt8(0x00), UInt8(0xB8)), (0x01, 0xB9), (0x02, 0xBA), (0x03, 0xBA)] {
            for ipv6 in [false, true] {
                let template = EncapsulationTemplate(options(.vxlan(vni: 1), ipv6: ipv6, tos: .fixed(0xB8)))
                let inner = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, tos: innerTOS,
                                               payload: .udp(sourcePort: 1, destinationPort: 2, data: [1]))
                let packet = decapsulate(encapsulate(inner, with: template)).packet
                // Over IPv6 this also checks that the traffic class sits in the right bits.
                #expect(packet?.tos == expected, "inner \(innerTOS) ipv6 \(ipv6)")
            }
        }
    }

    @Test func aComputedZeroUDPChecksumIsSentAsAllOnes() {
        // Make the inner bytes sum so that the checksum computes to zero: encapsulate once, put
        // the checksum into two zero bytes at the end of the frame, and encapsulate again.
        let template = EncapsulationTemplate(options(.vxlan(vni: 7), udpChecksum: true))
        var inner = innerFrame(length: 200) + [0, 0]
        let first = encapsulate(inner, with: template, flowHash: 1)
        inner[inner.count - 2] = first[40]
        inner[inner.count - 1] = first[41]
        let second = encapsulate(inner, with: template, flowHash: 1)
        #expect(second[40] == 0xFF && second[41] == 0xFF)
        #expect(decapsulate(second).packet?.udpChecksum == .valid)
    }

    @Test func templatesStartTheirIPv4IdentificationApart() {
        let ids = (0..<8).map { _ in
            let outer = encapsulate(innerFrame(length: 60), with: EncapsulationTemplate(options(.vxlan(vni: 1))))
            return UInt16(outer[18]) << 8 | UInt16(outer[19])
        }
        #expect(Set(ids).count > 1)
    }

    @Test func identificationAndSequenceAdvancePerPacket() {
        let template = EncapsulationTemplate(options(.gre(GREOptions(key: 5, checksum: true, sequence: true))))
        let inner = innerFrame(length: 100)
        var sequences: [UInt32] = []
        var ids: [UInt16] = []
        for _ in 0..<5 {
            let outer = encapsulate(inner, with: template)
            sequences.append(decapsulate(outer).packet!.greSequence!)
            ids.append(UInt16(outer[18]) << 8 | UInt16(outer[19]))
        }
        #expect(sequences == [0, 1, 2, 3, 4])
        #expect(zip(ids, ids.dropFirst()).allSatisfy { $1 == ($0 == 0xFFFF ? 1 : $0 + 1) })
        #expect(!ids.contains(0))
    }

    @Test func sourcePortIsStablePerFlowAndSpreadAcrossFlows() {
        let template = EncapsulationTemplate(options(.vxlan(vni: 9)))
        var portsByFlow: [UInt16: UInt16] = [:]
        for flow in 0..<200 {
            let inner = FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA,
                                           payload: .tcp(sourcePort: UInt16(30000 + flow), destinationPort: 443,
                                                         sequence: 1, acknowledgment: 0, flags: TCP.ack, data: []))
            let ports = Set((0..<3).map { _ in decapsulate(encapsulate(inner, with: template)).packet!.sourcePort })
            #expect(ports.count == 1, "one flow, one source port")
            portsByFlow[UInt16(flow)] = ports.first!
        }
        let distinct = Set(portsByFlow.values)
        #expect(distinct.count > 150, "200 flows spread over \(distinct.count) ports")
        #expect(distinct.allSatisfy { (32768...61000).contains($0) })

        // A narrow configured range is honoured at both ends.
        var narrow = options(.vxlan(vni: 9))
        narrow.sourcePortRange = 5000...5003
        let t = EncapsulationTemplate(narrow)
        var seen = Set<UInt16>()
        for h in stride(from: UInt32(0), to: UInt32.max - 1_000_000, by: 1_000_000) { seen.insert(t.sourcePort(forFlowHash: h)) }
        #expect(seen == [5000, 5001, 5002, 5003])
    }

    @Test func socketFormIsTheTunnelHeaderAlone() {
        let vxlan = EncapsulationTemplate(options(.vxlan(vni: 42)))
        let gre = EncapsulationTemplate(options(.gre(GREOptions(key: 42, checksum: true, sequence: true))))
        let inner = innerFrame(length: 98)
        for template in [vxlan, gre] {
            var buffer = [UInt8](repeating: 0, count: 64 + inner.count)
            buffer.replaceSubrange(64..., with: inner)
            let start = buffer.withUnsafeMutableBytes {
                template.encapsulatePayload(in: $0, innerOffset: 64, innerLength: inner.count)
            }
            #expect(start == 64 - template.tunnelHeaderLength)
            let payload = Array(buffer[start...])
            let result = payload.withUnsafeBytes { b in
                template === vxlan
                    ? Decapsulator().decapsulate(vxlanPayload: b, source: v4A, destination: v4B)
                    : Decapsulator().decapsulate(grePayload: b, source: v4A, destination: v4B)
            }
            let packet = try! #require(result.packet)
            #expect(Array(payload[packet.inner]) == inner)
            #expect(packet.tunnelID == 42)
        }
        #expect(Array(hexOf(vxlan, inner)) == hex("0800 0000 0000 2a00"))
    }

    private func hexOf(_ t: EncapsulationTemplate, _ inner: [UInt8]) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 8 + inner.count)
        buffer.replaceSubrange(8..., with: inner)
        _ = buffer.withUnsafeMutableBytes { t.encapsulatePayload(in: $0, innerOffset: 8, innerLength: inner.count) }
        return Array(buffer[0..<8])
    }

    @Test func optionsRefuseWhatCannotWork() throws {
        #expect(throws: TunnelOptionsError.self) {
            try TunnelOptions(encapsulation: .vxlan(vni: 1), local: v4A, remote: v6B)
        }
        #expect(throws: TunnelOptionsError.vniOutOfRange(1 << 24)) {
            try TunnelOptions(encapsulation: .vxlan(vni: 1 << 24), local: v4A, remote: v4B)
        }
        #expect(throws: TunnelOptionsError.zeroTTL) {
            try TunnelOptions(encapsulation: .vxlan(vni: 1), local: v4A, remote: v4B, ttl: 0)
        }
        // UDP checksums default off over IPv4 (as Linux) and on over IPv6.
        #expect(try TunnelOptions(encapsulation: .vxlan(vni: 1), local: v4A, remote: v4B).udpChecksum == false)
        #expect(try TunnelOptions(encapsulation: .vxlan(vni: 1), local: v6A, remote: v6B).udpChecksum == true)
    }
}
