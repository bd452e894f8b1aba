import FerryCapture
import FerryWire
import Testing

/// What `ferry pcap encap` writes, dissected by tshark as an independent judge: every outer
/// header field as the flags asked, every checksum good, and the inner frames those of the sample.
@Suite struct TsharkInteropTests {
    static let outerFields = [
        "frame.len", "eth.src", "eth.dst", "eth.type",
        "ip.checksum.status", "ip.ttl", "ip.dsfield", "ip.flags.df", "ip.src", "ip.dst",
        "ipv6.hlim", "ipv6.tclass", "ipv6.src", "ipv6.dst",
        "udp.srcport", "udp.dstport", "udp.checksum.status", "udp.checksum",
        "vxlan.flags", "vxlan.vni",
        "gre.flags_and_version", "gre.flags.checksum", "gre.flags.key", "gre.flags.sequence_number", "gre.proto",
        "gre.checksum.status", "gre.key", "gre.sequence_number",
    ]

    /// Fields compared between each inner frame and the sample frame it came from.
    static let innerFields = ["eth.src", "eth.dst", "eth.type", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst"]

    /// Fields that name an inner flow, for the source-port entropy check.
    static let flowFields = ["vlan.id", "ip.src", "ip.dst", "ip.proto", "ipv6.src", "ipv6.dst", "ipv6.nxt",
                             "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport"]

    @Test(arguments: EncapVariant.all)
    func encapsulatedSampleDissectsAsConfigured(_ v: EncapVariant) throws {
        try withScratch { s in
            let sample = try s.sample()
            let output = s.file("encapsulated.pcap")
            try s.ferrySucceeds(v.encapArguments(input: sample, output: output))

            let inner = try s.tshark(sample, fields: ["frame.len", "ip.dsfield", "ipv6.tclass"] + Self.innerFields + Self.flowFields)
            let outer = try s.tshark(output, fields: Self.outerFields, extra: v.tsharkOptions)
            try #require(inner.count > 30, "the sample should hold a few dozen frames")
            try #require(outer.count == inner.count, "\(v.name): \(outer.count) frames encapsulated, sample has \(inner.count)")

            var portsByFlow: [String: Set<Int>] = [:]
            for (i, (o, x)) in zip(outer, inner).enumerated() {
                let f = "\(v.name) frame \(i + 1)"
                let innerTOS = x.int("ip.dsfield") ?? x.int("ipv6.tclass") ?? 0
                checkOuterIP(o, v, expectedTOS: v.expectedOuterTOS(innerTOS: innerTOS), f)
                if v.isVXLAN {
                    checkVXLAN(o, v, f)
                    if let port = o.int("udp.srcport") { portsByFlow[flowKey(x), default: []].insert(port) }
                } else {
                    checkGRE(o, v, index: i, f)
                }

                // The inner frame: exactly the sample's, behind a header of the RFC size.
                #expect(o.int("frame.len").map { $0 - v.headerLength } == x.int("frame.len"), "\(f): inner length")
                let ipv4Outer = v.ipv6 ? 0 : 1, ipv6Outer = v.ipv6 ? 1 : 0
                for field in Self.innerFields {
                    let skip = field.hasPrefix("eth.") ? 1 : field.hasPrefix("ipv6.") ? ipv6Outer : ipv4Outer
                    #expect(o.inner(field, skipping: skip) == x.all(field), "\(f): inner \(field)")
                }
            }

            if v.isVXLAN {
                for (flow, ports) in portsByFlow {
                    #expect(ports.count == 1, "\(v.name): inner flow \(flow) went out on source ports \(ports.sorted())")
                }
                // The ports carry the flows' entropy: a constant source port would defeat ECMP.
                let distinct = Set(portsByFlow.values.flatMap { $0 })
                #expect(distinct.count > 1, "\(v.name): every flow used source port \(distinct.sorted())")
                let tcp = portsByFlow.filter { $0.key.contains("tcp 43210>5201") }
                #expect(tcp.count == 1, "\(v.name): the sample's TCP 43210 > 5201 flow: \(tcp)")
            }
        }
    }

    static let ecnVariants: [EncapVariant] = [
        EncapVariant(name: "vxlan-ipv4-tos-0x20", tunnel: .vxlan(vni: 5), tos: 0x20),
        EncapVariant(name: "vxlan-ipv6-tos-inherit", tunnel: .vxlan(vni: 5), ipv6: true, inheritTOS: true),
        EncapVariant(name: "gre-key-ipv4-tos-0xff", tunnel: .gre(key: 5, checksum: true, sequence: false), tos: 0xFF),
        EncapVariant(name: "gre-ipv6-tos-inherit", tunnel: .gre(key: nil, checksum: false, sequence: true), ipv6: true,
                     inheritTOS: true),
    ]

    /// Inner packets with every ECN codepoint (and some DSCPs), over IPv4 and IPv6, and an ARP
    /// frame: the outer header carries the configured or inherited DSCP and the inner ECN, CE
    /// as ECT(0) (RFC 6040 normal mode), and the inner packets come back untouched.
    @Test(arguments: ecnVariants)
    func outerECNFollowsTheInnerPacket(_ v: EncapVariant) throws {
        let macA = MACAddress(0x02, 0x42, 0, 0, 0, 0x0A), macB = MACAddress(0x02, 0x42, 0, 0, 0, 0x0B)
        let families: [(IPAddress, IPAddress)] = [
            (.v4(IPv4Address(10, 17, 0, 2)), .v4(IPv4Address(10, 18, 0, 3))),
            (.v6(IPv6Address("fd00:17::2")!), .v6(IPv6Address("fd00:18::3")!)),
        ]
        var innerTOS: [Int] = [0]
        var built = [FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: macA,
                                        payload: .arp(operation: 1, senderIP: IPv4Address(10, 17, 0, 2),
                                                      targetIP: IPv4Address(10, 18, 0, 3), targetMAC: .zero))]
        for (source, destination) in families {
            for tos: UInt8 in [0x00, 0x01, 0x02, 0x03, 0xB8, 0xBB, 0x29] {
                built.append(FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: source, destination: destination,
                                                tos: tos, payload: .icmpEcho(request: true, identifier: 1, sequence: UInt16(tos),
                                                                             data: FrameBuilder.pattern(32))))
                innerTOS.append(Int(tos))
            }
        }
        try withScratch { s in
            let input = s.file("ecn.pcap"), output = s.file("encapsulated.pcap"), back = s.file("decapsulated.pcap")
            let inner = built.enumerated().map { i, bytes in
                OwnedFrame(bytes: bytes, timestamp: PacketTimestamp(seconds: 1_767_225_600, microseconds: Int32(i)))
            }
            try writeCapture(inner, to: input)
            try s.ferrySucceeds(v.encapArguments(input: input, output: output))
            let rows = try s.tshark(output, fields: ["ip.dsfield", "ipv6.tclass", "ip.checksum.status"])
            try #require(rows.count == inner.count)
            for (i, row) in rows.enumerated() {
                let expected = v.expectedOuterTOS(innerTOS: innerTOS[i])
                let outer = v.ipv6 ? row.int("ipv6.tclass") : row.int("ip.dsfield")
                #expect(outer == expected, "\(v.name) frame \(i + 1): inner TOS \(innerTOS[i]), outer \(outer.map { String($0, radix: 16) } ?? "none"), expected \(String(expected, radix: 16))")
                if !v.ipv6 { #expect(row.int("ip.checksum.status") == ChecksumVerdict.good, "\(v.name) frame \(i + 1)") }
            }
            try s.ferrySucceeds(["pcap", "decap"] + v.decapArguments + [output, back])
            expectSameFrames(try frames(back), inner, "\(v.name) round trip")
        }
    }

    func checkOuterIP(_ o: Dissection, _ v: EncapVariant, expectedTOS: Int, _ f: String) {
        if let macs = v.macs {
            #expect(o.first("eth.src") == macs.local, "\(f): outer source MAC")
            #expect(o.first("eth.dst") == macs.remote, "\(f): outer destination MAC")
        }
        if v.ipv6 {
            #expect(o.first("eth.type") == "0x86dd", "\(f): outer EtherType")
            #expect(o.first("ipv6.src") == v.local && o.first("ipv6.dst") == v.remote, "\(f): outer addresses")
            #expect(o.int("ipv6.hlim") == v.expectedTTL, "\(f): hop limit")
            #expect(o.int("ipv6.tclass") == expectedTOS, "\(f): traffic class")
        } else {
            #expect(o.first("eth.type") == "0x0800", "\(f): outer EtherType")
            #expect(o.first("ip.src") == v.local && o.first("ip.dst") == v.remote, "\(f): outer addresses")
            #expect(o.int("ip.checksum.status") == ChecksumVerdict.good, "\(f): IPv4 header checksum")
            #expect(o.int("ip.ttl") == v.expectedTTL, "\(f): TTL")
            #expect(o.int("ip.dsfield") == expectedTOS, "\(f): TOS")
            #expect(o.bool("ip.flags.df") == v.df, "\(f): DF")
        }
    }

    func checkVXLAN(_ o: Dissection, _ v: EncapVariant, _ f: String) {
        #expect(o.all("vxlan.vni").count == 1, "\(f): one VXLAN header, got \(o.all("vxlan.vni"))")
        #expect(o.int("vxlan.vni") == v.vni.map(Int.init), "\(f): VNI")
        // RFC 7348: the I flag (0x08 in the first octet) and nothing else.
        #expect(o.int("vxlan.flags") == 0x0800, "\(f): VXLAN flags \(o.first("vxlan.flags") ?? "none")")
        #expect(o.int("udp.dstport") == v.expectedDestinationPort, "\(f): UDP destination port")
        if let port = o.int("udp.srcport") {
            #expect(v.expectedSourcePorts.contains(port), "\(f): UDP source port \(port)")
        } else {
            Issue.record("\(f): no UDP source port")
        }
        if v.expectsUDPChecksum {
            #expect(o.int("udp.checksum.status") == ChecksumVerdict.good, "\(f): UDP checksum status")
        } else {
            #expect(o.int("udp.checksum") == 0, "\(f): UDP checksum should be zero (off)")
            // tshark calls a zero checksum "not present" over IPv4 and "illegal" (4) over IPv6.
            #expect(o.int("udp.checksum.status") != ChecksumVerdict.good && o.int("udp.checksum.status") != ChecksumVerdict.bad,
                    "\(f): UDP checksum status \(o.first("udp.checksum.status") ?? "none")")
        }
        #expect(o.all("gre.proto").isEmpty, "\(f): no GRE")
    }

    func checkGRE(_ o: Dissection, _ v: EncapVariant, index: Int, _ f: String) {
        #expect(o.all("gre.proto").count == 1, "\(f): one GRE header, got \(o.all("gre.proto"))")
        #expect(o.int("gre.flags_and_version") == v.expectedGREFlags, "\(f): GRE flags \(o.first("gre.flags_and_version") ?? "none")")
        #expect(o.bool("gre.flags.checksum") == v.greChecksum, "\(f): C flag")
        #expect(o.bool("gre.flags.key") == (v.greKey != nil), "\(f): K flag")
        #expect(o.bool("gre.flags.sequence_number") == v.greSequence, "\(f): S flag")
        #expect(o.int("gre.proto") == 0x6558, "\(f): GRE protocol type")
        #expect(o.int("gre.key") == v.greKey.map(Int.init), "\(f): GRE key \(o.first("gre.key") ?? "none")")
        if v.greChecksum {
            #expect(o.int("gre.checksum.status") == ChecksumVerdict.good, "\(f): GRE checksum status")
        } else {
            #expect(o.all("gre.checksum.status").allSatisfy { Int($0) == ChecksumVerdict.notPresent }, "\(f): GRE checksum")
        }
        #expect(o.int("gre.sequence_number") == (v.greSequence ? index : nil), "\(f): GRE sequence number")
        #expect(o.all("udp.dstport").allSatisfy { $0 != "4789" }, "\(f): no VXLAN")
    }

    /// The inner flow of a sample frame: MACs and EtherType (what tells ARP frames apart), VLAN,
    /// addresses, protocol and ports. Frames with equal keys must share a source port.
    func flowKey(_ x: Dissection) -> String {
        var key = "eth \(x.all("eth.src"))>\(x.all("eth.dst")) \(x.all("eth.type")) vlan \(x.all("vlan.id")) "
        key += "\(x.all("ip.src"))>\(x.all("ip.dst")) \(x.all("ipv6.src"))>\(x.all("ipv6.dst"))"
        key += " proto \(x.all("ip.proto")) \(x.all("ipv6.nxt"))"
        if let s = x.first("tcp.srcport"), let d = x.first("tcp.dstport") { key += " tcp \(s)>\(d)" }
        if let s = x.first("udp.srcport"), let d = x.first("udp.dstport") { key += " udp \(s)>\(d)" }
        return key
    }
}
