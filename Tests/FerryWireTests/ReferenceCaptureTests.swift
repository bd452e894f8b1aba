import Testing
import FerryCapture
import FerryWire

/// Every frame of the captures of real peers (Linux vxlan, Open vSwitch 3.1 VXLAN and GRE)
/// decapsulates to the expected inner frame: an ARP exchange, then ICMP echoes between
/// 10.201.0.1 and 10.201.0.2.
@Suite struct ReferenceCaptureTests {
    static let captures = ["kernel-vxlan.pcap", "ovs-vxlan.pcap", "ovs-gre.pcap", "kernel-vxlan-csumoffload.pcap"]

    static func frames(_ name: String) throws -> [[UInt8]] {
        try PcapFileReader(path: referenceDirectory + "/" + name).readAll().map(\.bytes)
    }

    @Test(arguments: captures)
    func everyFrameDecapsulatesToTheExpectedInnerFrame(capture: String) throws {
        let frames = try Self.frames(capture)
        #expect(frames.count == 12)
        let isGRE = capture.contains("gre")
        let h1 = IPv4Address(10, 201, 0, 1), h2 = IPv4Address(10, 201, 0, 2)
        for (i, frame) in frames.enumerated() {
            let policy = DecapsulationPolicy(vni: isGRE ? nil : 42, greKey: isGRE ? 42 : nil, udpChecksum: .report)
            guard let packet = decapsulate(frame, policy: policy).packet else {
                Issue.record("\(capture) frame \(i + 1): \(decapsulate(frame, policy: policy))")
                continue
            }
            #expect(packet.kind == (isGRE ? .gre : .vxlan))
            #expect(packet.tunnelID == 42)
            let outerFromFirst = i % 2 == 0
            #expect(packet.outerSource == .v4(IPv4Address(10, 200, 0, outerFromFirst ? 1 : 2)))
            #expect(packet.outerDestination == .v4(IPv4Address(10, 200, 0, outerFromFirst ? 2 : 1)))
            if !isGRE { #expect(packet.destinationPort == 4789) }
            switch capture {
            case "kernel-vxlan.pcap": #expect(packet.udpChecksum == .valid)
            case "ovs-vxlan.pcap": #expect(packet.udpChecksum == .absent)
            case "kernel-vxlan-csumoffload.pcap": #expect(packet.udpChecksum == .partial)
            default: #expect(packet.udpChecksum == .notChecked)
            }
            let inner = Array(frame[packet.inner])
            inner.withUnsafeBytes { b in
                let eth = EthernetView(b)!
                if i < 2 {
                    #expect(eth.etherType == EtherType.arp)
                    let arp = ARPView(eth.payload)!
                    #expect(arp.operation == (i == 0 ? ARP.request : ARP.reply))
                    #expect(arp.senderIP == (i == 0 ? h1 : h2))
                    #expect(arp.targetIP == (i == 0 ? h2 : h1))
                    #expect(eth.source == arp.senderMAC)
                    if i == 0 { #expect(eth.destination == .broadcast) }
                } else {
                    #expect(eth.etherType == EtherType.ipv4)
                    let ip = IPv4View(eth.payload)!
                    #expect(ip.isChecksumValid)
                    #expect(ip.protocol == IPProtocol.icmp)
                    let request = i % 2 == 0
                    #expect(ip.source == (request ? h1 : h2))
                    #expect(ip.destination == (request ? h2 : h1))
                    let icmp = UnsafeRawBufferPointer(rebasing: eth.payload[ip.headerLength..<ip.totalLength])
                    #expect(icmp[0] == (request ? ICMPv4.echoRequest : ICMPv4.echoReply))
                    #expect(InternetChecksum.isValid(icmp))
                    #expect(icmp.u16(6) == UInt16((i - 2) / 2 + 1), "echo sequence")
                }
            }
        }
    }

    @Test func strictChecksumPolicyRefusesTheOffloadArtefactOnly() throws {
        let strict = DecapsulationPolicy(udpChecksum: .verify)
        for frame in try Self.frames("kernel-vxlan-csumoffload.pcap") {
            #expect(decapsulate(frame, policy: strict) == .drop(.badUDPChecksum))
        }
        for frame in try Self.frames("kernel-vxlan.pcap") + Self.frames("ovs-vxlan.pcap") {
            #expect(decapsulate(frame, policy: strict).packet != nil)
        }
    }

    @Test func ferryBuildsTheSameBytesAsLinuxAndOpenVSwitch() throws {
        // Re-encapsulate each reference inner frame with the options the peer used: every byte
        // must match but those each sender chooses freely (IPv4 ID, and for VXLAN the UDP source
        // port), and the checksums that cover them.
        let cases: [(String, Encapsulation, DFPolicy, Bool)] = [
            ("kernel-vxlan.pcap", .vxlan(vni: 42), .unset, true),
            ("ovs-vxlan.pcap", .vxlan(vni: 42), .set, false),
            ("ovs-gre.pcap", .gre(GREOptions(key: 42)), .set, false),
        ]
        for (capture, encapsulation, df, udpChecksum) in cases {
            for frame in try Self.frames(capture) {
                let packet = try #require(decapsulate(frame, policy: DecapsulationPolicy(udpChecksum: .report)).packet)
                let options = try TunnelOptions(
                    encapsulation: encapsulation, local: packet.outerSource, remote: packet.outerDestination,
                    dontFragment: df, udpChecksum: udpChecksum,
                    localMAC: frame.withUnsafeBytes { MACAddress($0, at: 6) },
                    remoteMAC: frame.withUnsafeBytes { MACAddress($0, at: 0) })
                let ours = encapsulate(Array(frame[packet.inner]), with: EncapsulationTemplate(options))
                #expect(ours.count == frame.count)
                var free: Set<Int> = [18, 19, 24, 25]  // IPv4 identification and header checksum
                if !packet.kind.isGRE { free.formUnion([34, 35, 40, 41]) }  // UDP source port, checksum
                for i in 0..<min(ours.count, frame.count) where !free.contains(i) {
                    #expect(ours[i] == frame[i], "\(capture): byte \(i)")
                }
                #expect(decapsulate(ours).packet != nil, "\(capture): ours must verify")
            }
        }
    }
}

extension TunnelKind { var isGRE: Bool { self == .gre } }
