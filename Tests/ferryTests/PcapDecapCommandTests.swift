import FerryCapture
import Foundation
import Testing

/// `ferry pcap decap` on captures of real peers, on mixed captures, with every filter option,
/// and as the inverse of `ferry pcap encap`.
@Suite struct PcapDecapCommandTests {
    /// The four reference captures with what the fixture notes say about them: the header length
    /// in front of the inner frame (VXLAN over IPv4: 14 + 20 + 8 + 8; GRE with a key: 14 + 20 + 8)
    /// and the state of the outer UDP checksums.
    struct Reference: Sendable, CustomTestStringConvertible {
        var file: String
        var isGRE: Bool
        /// How ferry's JSON names the UDP checksum state of every frame; nil for GRE.
        var udpChecksum: String?
        var headerLength: Int { isGRE ? 42 : 50 }
        var path: String { Tools.reference(file) }
        var testDescription: String { file }
    }

    static let references = [
        Reference(file: "kernel-vxlan.pcap", isGRE: false, udpChecksum: "valid"),
        Reference(file: "ovs-vxlan.pcap", isGRE: false, udpChecksum: "absent"),
        Reference(file: "ovs-gre.pcap", isGRE: true, udpChecksum: nil),
        Reference(file: "kernel-vxlan-csumoffload.pcap", isGRE: false, udpChecksum: "partial"),
    ]

    // MARK: - Reference captures

    @Test(arguments: references)
    func referenceCaptureDecapsulatesToItsInnerFrames(_ r: Reference) throws {
        try withScratch { s in
            let output = s.file("inner.pcap")
            let result = try s.ferrySucceeds(["pcap", "decap", r.path, output])
            #expect(result.stdout.contains("12"), "the summary should count the 12 frames: \(result.stdout)")
            #expect(result.stderr.isEmpty, "\(result)")
            if r.udpChecksum == "partial" {
                #expect(result.stdout.lowercased().contains("partial"), "the partial-checksum note is missing: \(result.stdout)")
            } else {
                #expect(!result.stdout.lowercased().contains("partial"), "no partial checksums here: \(result.stdout)")
            }

            // Byte for byte: the end of each outer frame, behind the tunnel header, timestamp kept.
            let outer = try frames(r.path)
            let inner = try frames(output)
            try #require(outer.count == 12)
            let expected = outer.map {
                OwnedFrame(bytes: Array($0.bytes.dropFirst(r.headerLength)), timestamp: $0.timestamp)
            }
            expectSameFrames(inner, expected, r.file)

            // And what tshark makes of them: ARP request and reply, then ICMP echoes between the two.
            let rows = try s.tshark(output, fields: ["eth.type", "arp.opcode", "arp.src.proto_ipv4", "arp.dst.proto_ipv4",
                                                      "ip.src", "ip.dst", "ip.proto", "icmp.type"])
            try #require(rows.count == 12)
            let a = "10.201.0.1", b = "10.201.0.2"
            for (i, row) in rows.enumerated() {
                let forward = i % 2 == 0
                let (src, dst) = forward ? (a, b) : (b, a)
                if i < 2 {
                    #expect(row.first("eth.type") == "0x0806", "frame \(i + 1)")
                    #expect(row.int("arp.opcode") == (forward ? 1 : 2), "frame \(i + 1)")
                    #expect(row.first("arp.src.proto_ipv4") == src && row.first("arp.dst.proto_ipv4") == dst, "frame \(i + 1)")
                } else {
                    #expect(row.first("eth.type") == "0x0800", "frame \(i + 1)")
                    #expect(row.int("ip.proto") == 1, "frame \(i + 1)")
                    #expect(row.first("ip.src") == src && row.first("ip.dst") == dst, "frame \(i + 1)")
                    #expect(row.int("icmp.type") == (forward ? 8 : 0), "frame \(i + 1)")
                }
            }
        }
    }

    @Test(arguments: references)
    func jsonReportOfAReferenceCaptureAddsUp(_ r: Reference) throws {
        try withScratch { s in
            let result = try s.ferrySucceeds(["pcap", "decap", "--json", r.path, s.file("inner.pcap")])
            let report = try jsonObject(result.stdout)
            try expectConsistent(report)
            #expect(int(report, "frames") == 12)
            #expect(int(report, "decapsulated") == 12)
            #expect(counts(report, "dropped").isEmpty)
            let tunnels = counts(report, "byTunnel")
            #expect(tunnels.count == 1 && tunnels.keys.allSatisfy { $0.contains(r.isGRE ? "gre" : "vxlan") && $0.contains("42") },
                    "\(tunnels)")
            if let state = r.udpChecksum {
                #expect(counts(report, "udpChecksums") == [state: 12])
            } else {
                #expect(counts(report, "udpChecksums").isEmpty)
            }
        }
    }

    @Test func strictChecksumsDropThePartialChecksumsOfASenderSideCapture() throws {
        try withScratch { s in
            let path = Tools.reference("kernel-vxlan-csumoffload.pcap")
            let output = s.file("inner.pcap")
            let human = try s.ferrySucceeds(["pcap", "decap", "--strict-checksums", path, output])
            #expect(human.stdout.contains("bad_udp_checksum"), "\(human.stdout)")
            #expect(try frames(output).isEmpty)

            let report = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--strict-checksums", "--json", path, output]).stdout)
            try expectConsistent(report)
            #expect(int(report, "decapsulated") == 0)
            #expect(counts(report, "dropped") == ["bad_udp_checksum": 12])
        }
    }

    /// A valid checksum and an absent (zero) one are both fine under --strict-checksums.
    @Test(arguments: ["kernel-vxlan.pcap", "ovs-vxlan.pcap", "ovs-gre.pcap"])
    func strictChecksumsKeepWhatVerifies(_ file: String) throws {
        try withScratch { s in
            let output = s.file("inner.pcap")
            let report = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--strict-checksums", "--json",
                                                              Tools.reference(file), output]).stdout)
            #expect(int(report, "decapsulated") == 12)
            #expect(counts(report, "dropped").isEmpty)
            #expect(try frames(output).count == 12)
        }
    }

    @Test(arguments: ["kernel-vxlan.pcap", "ovs-vxlan.pcap", "kernel-vxlan-csumoffload.pcap"])
    func anotherVNIIsDroppedAsUnexpected(_ file: String) throws {
        try withScratch { s in
            let output = s.file("inner.pcap")
            let human = try s.ferrySucceeds(["pcap", "decap", "--vni", "43", Tools.reference(file), output])
            #expect(human.stdout.contains("unexpected_vni"), "\(human.stdout)")
            #expect(try frames(output).isEmpty)
            let report = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--vni", "43", "--json",
                                                              Tools.reference(file), output]).stdout)
            try expectConsistent(report)
            #expect(counts(report, "dropped") == ["unexpected_vni": 12])
            let right = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--vni", "42", "--json",
                                                             Tools.reference(file), output]).stdout)
            #expect(int(right, "decapsulated") == 12)
        }
    }

    @Test func anotherGREKeyIsDroppedAsUnexpected() throws {
        try withScratch { s in
            let path = Tools.reference("ovs-gre.pcap"), output = s.file("inner.pcap")
            let human = try s.ferrySucceeds(["pcap", "decap", "--key", "43", path, output])
            #expect(human.stdout.contains("unexpected_gre_key"), "\(human.stdout)")
            #expect(try frames(output).isEmpty)
            let report = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--key", "43", "--json", path, output]).stdout)
            try expectConsistent(report)
            #expect(counts(report, "dropped") == ["unexpected_gre_key": 12])
            let right = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--key", "42", "--json", path, output]).stdout)
            #expect(int(right, "decapsulated") == 12)
        }
    }

    // MARK: - Mixed captures

    /// VXLAN and GRE over IPv4 and IPv6 with the raw sample in between: every tunnel frame comes
    /// out, in order; every other frame is counted under why it is not tunnel traffic.
    @Test func mixedCaptureDecapsulatesEveryTunnelFrameAndCountsTheRest() throws {
        try withScratch { s in
            let sample = try s.sample()
            let inner = try frames(sample)
            let variants = ["vxlan-ipv4", "gre-key42-ipv4", "vxlan-ipv6", "gre-csum-key7-seq-ipv6"]
                .map { name in EncapVariant.all.first { $0.name == name }! }
            var parts: [[OwnedFrame]] = []
            for v in variants {
                let path = s.file("\(v.name).pcap")
                try s.ferrySucceeds(v.encapArguments(input: sample, output: path))
                parts.append(try frames(path))
            }
            // The raw sample sits between the IPv4 and IPv6 tunnels.
            let mixed = parts[0] + parts[1] + inner + parts[2] + parts[3]
            let mixedPath = s.file("mixed.pcap")
            try writeCapture(mixed, to: mixedPath)

            // Why each raw frame is not tunnel traffic, from tshark's reading of it.
            var expectedDrops: [String: Int] = [:]
            for row in try s.tshark(sample, fields: ["arp.opcode", "udp.dstport"]) {
                let reason = !row.all("arp.opcode").isEmpty ? "not_ip_underlay"
                    : !row.all("udp.dstport").isEmpty ? "not_tunnel_port" : "not_tunnel_protocol"
                expectedDrops[reason, default: 0] += 1
            }
            #expect(expectedDrops.count == 3, "the sample should hold ARP, UDP and other IP frames: \(expectedDrops)")

            let output = s.file("inner.pcap")
            let report = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--json", "--strict-checksums", mixedPath, output]).stdout)
            try expectConsistent(report)
            #expect(int(report, "frames") == mixed.count)
            #expect(int(report, "decapsulated") == 4 * inner.count)
            #expect(counts(report, "dropped") == expectedDrops)
            #expect(counts(report, "udpChecksums").values.reduce(0, +) == 2 * inner.count, "VXLAN frames' checksums")
            let tunnels = counts(report, "byTunnel")
            #expect(tunnels.values.reduce(0, +) == 4 * inner.count)
            #expect(tunnels.keys.contains { $0.contains("vxlan") } && tunnels.keys.contains { $0.contains("gre") }, "\(tunnels)")
            expectSameFrames(try frames(output), inner + inner + inner + inner, "decapsulated mixed capture")

            // The human summary names every reason too.
            let human = try s.ferrySucceeds(["pcap", "decap", mixedPath, output])
            for reason in expectedDrops.keys {
                #expect(human.stdout.contains(reason), "\(reason) missing from: \(human.stdout)")
            }
        }
    }

    /// VXLAN on another port is not tunnel traffic unless --dstport says so.
    @Test func vxlanOnLinuxsPortIsReadWithoutFlagsAndOnlyTheGivenPortWithOne() throws {
        try withScratch { s in
            let sample = try s.sample()
            let v = EncapVariant.all.first { $0.name == "vxlan-ipv4-dstport-8472" }!
            let encapsulated = s.file("vxlan-8472.pcap")
            try s.ferrySucceeds(v.encapArguments(input: sample, output: encapsulated))
            let count = try frames(sample).count
            let output = s.file("inner.pcap")
            let plain = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--json", encapsulated, output]).stdout)
            #expect(int(plain, "decapsulated") == count, "\(plain)")
            expectSameFrames(try frames(output), try frames(sample), "decapsulated from port 8472")
            // Told 4789, only 4789: the rest is left out, and said to look like VXLAN on 8472.
            let told = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--json", "--dstport", "4789", encapsulated, output]).stdout)
            #expect(counts(told, "dropped") == ["not_tunnel_port": count], "\(told)")
            #expect(counts(told, "vxlanLookalikes") == ["8472": count], "\(told)")
        }
    }

    // MARK: - Round trips

    @Test(arguments: EncapVariant.all)
    func encapThenDecapGivesBackTheSample(_ v: EncapVariant) throws {
        try withScratch { s in
            let sample = try s.sample()
            let encapsulated = s.file("encapsulated.pcap"), output = s.file("decapsulated.pcap")
            try s.ferrySucceeds(v.encapArguments(input: sample, output: encapsulated))
            // A zero UDP checksum over IPv6 does not pass --strict-checksums (RFC 6936): see below.
            let strict = v.ipv6 && v.isVXLAN && !v.expectsUDPChecksum ? [] : ["--strict-checksums"]
            let result = try s.ferrySucceeds(["pcap", "decap", "--json"] + strict + v.decapArguments
                                             + [encapsulated, output])
            let report = try jsonObject(result.stdout)
            try expectConsistent(report)
            #expect(counts(report, "dropped").isEmpty, "\(v.name): \(result.stdout)")
            expectSameFrames(try frames(output), try frames(sample), "\(v.name) round trip")
        }
    }

    /// RFC 8200 requires a UDP checksum over IPv6; RFC 6935/6936 let a tunnel send zero only
    /// to a receiver that opted in (Linux: udp6zerocsumrx). Strict checking refuses them as a
    /// checksum failure; the default, reporting, keeps them and says they had none.
    @Test func zeroUDPChecksumOverIPv6FailsStrictChecking() throws {
        try withScratch { s in
            let sample = try s.sample()
            let count = try frames(sample).count
            let v = EncapVariant.all.first { $0.name == "vxlan-ipv6-no-udp-csum" }!
            let encapsulated = s.file("encapsulated.pcap"), output = s.file("decapsulated.pcap")
            try s.ferrySucceeds(v.encapArguments(input: sample, output: encapsulated))
            let strict = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--json", "--strict-checksums", encapsulated, output]).stdout)
            try expectConsistent(strict)
            #expect(counts(strict, "dropped") == ["bad_udp_checksum": count])
            let lenient = try jsonObject(try s.ferrySucceeds(["pcap", "decap", "--json", encapsulated, output]).stdout)
            try expectConsistent(lenient)
            #expect(int(lenient, "decapsulated") == count)
            #expect(counts(lenient, "udpChecksums") == ["absent": count])
        }
    }

    /// Frames from the shortest Ethernet header to the largest that one outer IP packet carries
    /// (the IPv4 total length, or the IPv6 payload length, is 16 bits) go through and come back,
    /// odd lengths included (checksums pad them); what cannot be carried is skipped, not mangled.
    @Test(arguments: ["vxlan-ipv4-udp-csum", "vxlan-ipv6", "gre-key42-ipv4", "gre-csum-key7-seq-ipv6"])
    func framesOfEveryLengthRoundTripUpToTheIPLimit(_ name: String) throws {
        let v = EncapVariant.all.first { $0.name == name }!
        // The outer IP packet's length field counts everything after the Ethernet header (IPv4)
        // or after the 40-byte IPv6 header.
        let largest = 65535 - (v.headerLength - 14) + (v.ipv6 ? 40 : 0)
        try withScratch { s in
            let lengths = [13, 14, 15, 61, 1001, 9001, largest - 1, largest, largest + 1]
            let all = lengths.enumerated().map { i, length in
                var bytes: [UInt8] = [0x02, 0, 0, 0, 0, 0xBB, 0x02, 0, 0, 0, 0, 0xAA, 0x88, 0xB5]
                bytes += (0..<max(0, length - 14)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) }
                return OwnedFrame(bytes: Array(bytes.prefix(length)), timestamp: PacketTimestamp(seconds: 1_800_000_000 + Int64(i), microseconds: Int32(i)))
            }
            let input = s.file("lengths.pcap")
            try writeCapture(all, to: input)
            let encapsulated = s.file("encapsulated.pcap"), output = s.file("decapsulated.pcap")
            let encap = try s.ferrySucceeds(v.encapArguments(input: input, output: encapsulated))
            #expect(encap.stdout.components(separatedBy: "skipped 1 ").count - 1 == 2,
                    "one frame too short and one too long should be reported skipped: \(encap.stdout)")
            let carried = all.filter { (14...largest).contains($0.bytes.count) }
            let outer = try frames(encapsulated)
            #expect(outer.map { $0.bytes.count } == carried.map { $0.bytes.count + v.headerLength })
            try s.ferrySucceeds(["pcap", "decap", "--strict-checksums"] + v.decapArguments + [encapsulated, output])
            expectSameFrames(try frames(output), carried, "\(name) round trip of every length")
        }
    }

    // MARK: - Helpers

    /// The JSON report's counts are consistent: every frame read is filtered out, decapsulated
    /// or dropped for one reason, and the per-tunnel counts cover the decapsulated frames.
    func expectConsistent(_ report: [String: Any], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let frames = try #require(int(report, "frames"), sourceLocation: sourceLocation)
        let decapsulated = try #require(int(report, "decapsulated"), sourceLocation: sourceLocation)
        let filteredOut = try #require(int(report, "filteredOut"), sourceLocation: sourceLocation)
        let dropped = counts(report, "dropped").values.reduce(0, +)
        #expect(frames == filteredOut + decapsulated + dropped, "\(report)", sourceLocation: sourceLocation)
        #expect(counts(report, "byTunnel").values.reduce(0, +) == decapsulated, "\(report)", sourceLocation: sourceLocation)
        #expect(counts(report, "udpChecksums").values.reduce(0, +) <= decapsulated, "\(report)", sourceLocation: sourceLocation)
        #expect(counts(report, "dropped").values.allSatisfy { $0 > 0 }, "\(report)", sourceLocation: sourceLocation)
    }
}
