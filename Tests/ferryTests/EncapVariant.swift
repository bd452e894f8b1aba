import Testing

/// One way to run `ferry pcap encap`, with what its outer headers must then hold. The
/// expectations come from the RFCs (header sizes, flag bits) and from the flags given, never
/// from Ferry's own code.
struct EncapVariant: Sendable, CustomTestStringConvertible {
    enum Tunnel: Sendable {
        case vxlan(vni: UInt32)
        case gre(key: UInt32?, checksum: Bool, sequence: Bool)
    }

    var name: String
    var tunnel: Tunnel
    var ipv6 = false
    /// Pass `--encap` explicitly.
    var explicitEncap = false
    var dstport: UInt16?
    /// `--udp-csum` (true), `--no-udp-csum` (false), or neither (nil).
    var udpChecksumFlag: Bool?
    var ttl: UInt8?
    /// Written as 0x.. on the command line.
    var tos: UInt8?
    /// `--tos inherit`.
    var inheritTOS = false
    var df = false
    var sourcePortRange: ClosedRange<UInt16>?
    var macs: (local: String, remote: String)?

    var testDescription: String { name }

    var local: String { ipv6 ? "fd00:99::1" : "10.99.0.1" }
    var remote: String { ipv6 ? "fd00:99::2" : "10.99.0.2" }

    var isVXLAN: Bool { if case .vxlan = tunnel { true } else { false } }
    var vni: UInt32? { if case .vxlan(let vni) = tunnel { vni } else { nil } }
    var greKey: UInt32? { if case .gre(let key, _, _) = tunnel { key } else { nil } }
    var greChecksum: Bool { if case .gre(_, true, _) = tunnel { true } else { false } }
    var greSequence: Bool { if case .gre(_, _, true) = tunnel { true } else { false } }

    var expectedDestinationPort: Int { Int(dstport ?? 4789) }
    /// RFC 7348 allows a zero UDP checksum; Ferry, like Linux, computes one over IPv6 unless told not to.
    var expectsUDPChecksum: Bool { udpChecksumFlag ?? ipv6 }
    var expectedTTL: Int { Int(ttl ?? 64) }
    var expectedTOS: Int { Int(tos ?? 0) }

    /// The outer TOS / traffic class for an inner packet with `innerTOS` (0 for non-IP frames):
    /// the configured (or inherited) DSCP, and the inner ECN field with CE sent as ECT(0)
    /// (RFC 6040 §4.1 normal mode, as Linux's INET_ECN_encapsulate).
    func expectedOuterTOS(innerTOS: Int) -> Int {
        let base = inheritTOS ? innerTOS : expectedTOS
        let ecn = innerTOS & 0x03
        return (base & 0xFC) | (ecn == 0x03 ? 0x02 : ecn)
    }
    var expectedSourcePorts: ClosedRange<Int> {
        let r = sourcePortRange ?? 32768...61000
        return Int(r.lowerBound)...Int(r.upperBound)
    }

    /// GRE flags and version word (RFC 2784/2890): C 0x8000, K 0x2000, S 0x1000, version 0.
    var expectedGREFlags: Int {
        (greChecksum ? 0x8000 : 0) | (greKey != nil ? 0x2000 : 0) | (greSequence ? 0x1000 : 0)
    }

    /// Everything in front of the inner frame: Ethernet, IPv4 (20) or IPv6 (40), then UDP (8) +
    /// VXLAN (8), or GRE (4, plus 4 per optional field).
    var headerLength: Int {
        let ip = ipv6 ? 40 : 20
        switch tunnel {
        case .vxlan: return 14 + ip + 8 + 8
        case .gre(let key, let checksum, let sequence):
            return 14 + ip + 4 + (checksum ? 4 : 0) + (key != nil ? 4 : 0) + (sequence ? 4 : 0)
        }
    }

    func encapArguments(input: String, output: String) -> [String] {
        var a = ["pcap", "encap", "--local", local, "--remote", remote]
        switch tunnel {
        case .vxlan(let vni):
            if explicitEncap { a += ["--encap", "vxlan"] }
            a += ["--vni", String(vni)]
        case .gre(let key, let checksum, let sequence):
            if explicitEncap || (key == nil && !checksum && !sequence) { a += ["--encap", "gre"] }
            if let key { a += ["--key", String(key)] }
            if checksum { a.append("--gre-csum") }
            if sequence { a.append("--gre-seq") }
        }
        if let dstport { a += ["--dstport", String(dstport)] }
        if let udpChecksumFlag { a.append(udpChecksumFlag ? "--udp-csum" : "--no-udp-csum") }
        if let ttl { a += ["--ttl", String(ttl)] }
        if let tos { a += ["--tos", "0x" + String(tos, radix: 16)] }
        if inheritTOS { a += ["--tos", "inherit"] }
        if df { a.append("--df") }
        if let r = sourcePortRange { a += ["--src-port-range", "\(r.lowerBound)-\(r.upperBound)"] }
        if let macs { a += ["--local-mac", macs.local, "--remote-mac", macs.remote] }
        return a + [input, output]
    }

    /// Arguments that make `ferry pcap decap` accept exactly this tunnel.
    var decapArguments: [String] {
        var a: [String] = []
        if let vni { a += ["--vni", String(vni)] }
        if let greKey { a += ["--key", String(greKey)] }
        if let dstport { a += ["--dstport", String(dstport)] }
        return a
    }

    /// tshark options so it knows a non-standard VXLAN port.
    var tsharkOptions: [String] {
        guard let dstport, isVXLAN, dstport != 4789 else { return [] }
        return ["-d", "udp.port==\(dstport),vxlan"]
    }

    static let vxlan: [EncapVariant] = [
        EncapVariant(name: "vxlan-ipv4", tunnel: .vxlan(vni: 42)),
        EncapVariant(name: "vxlan-ipv4-udp-csum", tunnel: .vxlan(vni: 4242), udpChecksumFlag: true, ttl: 17, tos: 0xB8,
                     df: true, macs: ("02:aa:bb:cc:dd:ee", "02:11:22:33:44:55")),
        EncapVariant(name: "vxlan-ipv4-dstport-8472", tunnel: .vxlan(vni: 1), explicitEncap: true, dstport: 8472, ttl: 255,
                     tos: 0x04, df: true),
        EncapVariant(name: "vxlan-ipv4-src-port-range", tunnel: .vxlan(vni: 0), ttl: 1, sourcePortRange: 40000...40009),
        EncapVariant(name: "vxlan-ipv6", tunnel: .vxlan(vni: 16_777_215), ipv6: true, ttl: 3, tos: 0x20),
        EncapVariant(name: "vxlan-ipv4-tos-inherit", tunnel: .vxlan(vni: 9), ttl: 64, inheritTOS: true),
        EncapVariant(name: "vxlan-ipv6-no-udp-csum", tunnel: .vxlan(vni: 7), ipv6: true, udpChecksumFlag: false, ttl: 200,
                     tos: 0xFF),
    ]

    /// Every combination of C, K and S, over IPv4 and IPv6, with TTL, TOS and DF varied.
    static let gre: [EncapVariant] = (0..<16).map { i in
        let ipv6 = i >= 8
        let checksum = i & 4 != 0, hasKey = i & 2 != 0, sequence = i & 1 != 0
        let key: UInt32? = hasKey ? [42, 4_294_967_295, 0, 7][i / 4] : nil
        var name = "gre"
        if checksum { name += "-csum" }
        if let key { name += "-key\(key)" }
        if sequence { name += "-seq" }
        name += ipv6 ? "-ipv6" : "-ipv4"
        return EncapVariant(name: name, tunnel: .gre(key: key, checksum: checksum, sequence: sequence), ipv6: ipv6,
                            explicitEncap: i == 7, ttl: UInt8(10 + i), tos: UInt8(i * 8), df: !ipv6 && i % 2 == 0)
    }

    static let all = vxlan + gre
}
