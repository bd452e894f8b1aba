// encapsulateCapture and decapsulateCapture over files: what one writes, the other gives back
// byte for byte, with the counts `ferry pcap encap` and `ferry pcap decap` print.

import FerryCapture
import FerryPcapTools
import FerryWire
import Foundation
import Testing

@Suite("Capture encapsulation and decapsulation")
struct PcapRoundTripTests {
    static let v4 = (IPAddress("10.99.0.1")!, IPAddress("10.99.0.2")!)
    static let v6 = (IPAddress("fd00:99::1")!, IPAddress("fd00:99::2")!)

    struct Variant: Sendable, CustomTestStringConvertible {
        var encapsulation: Encapsulation
        var ipv6: Bool
        var label: String
        var testDescription: String { "\(label) over IPv\(ipv6 ? 6 : 4)" }
    }

    static let variants = [
        Variant(encapsulation: .vxlan(vni: 42), ipv6: false, label: "vxlan vni 42"),
        Variant(encapsulation: .vxlan(vni: 7), ipv6: true, label: "vxlan vni 7"),
        Variant(encapsulation: .gre(GREOptions(key: 9)), ipv6: false, label: "gre key 9"),
        Variant(encapsulation: .gre(GREOptions(checksum: true, sequence: true)), ipv6: true, label: "gre (no key)"),
    ]

    @Test(arguments: variants)
    func everyFrameComesBack(_ variant: Variant) throws {
        try TestSupport.withScratchDirectory { dir in
            let inner = try TestSupport.write(TestSupport.sample.map(\.frame), to: dir + "/inner.pcap")
            let (local, remote) = variant.ipv6 ? Self.v6 : Self.v4
            let options = try TunnelOptions(encapsulation: variant.encapsulation, local: local, remote: remote)
            let encap = try encapsulateCapture(input: dir + "/inner.pcap", output: dir + "/outer.pcap", options: options)
            #expect(encap.written == inner.count)
            #expect(encap.filteredOut == 0 && encap.tooShort == 0 && encap.tooLarge == 0)
            #expect(encap.innerBytes == inner.map(\.bytes.count).reduce(0, +))
            #expect(encap.outerBytes - encap.innerBytes == inner.count * options.fullHeaderLength)
            let outer = try TestSupport.frames(dir + "/outer.pcap")
            #expect(outer.map(\.timestamp) == inner.map(\.timestamp))

            let decap = try decapsulateCapture(input: dir + "/outer.pcap", output: dir + "/back.pcap",
                                               policy: DecapsulationPolicy(udpChecksum: .verify))
            #expect(decap.frames == inner.count && decap.decapsulated == inner.count)
            #expect(decap.dropped.isEmpty)
            #expect(decap.byTunnel == [variant.label: inner.count])
            #expect(try TestSupport.frames(dir + "/back.pcap") == inner)
        }
    }

    @Test("frames too short for Ethernet or too long for one outer packet are skipped and counted")
    func unfitFramesAreSkipped() throws {
        try TestSupport.withScratchDirectory { dir in
            let fit = TestSupport.sample[1].frame
            try TestSupport.write([[UInt8](repeating: 1, count: 10), FrameBuilder.pattern(65_536), fit], to: dir + "/inner.pcap")
            let options = try TunnelOptions(encapsulation: .vxlan(vni: 1), local: Self.v4.0, remote: Self.v4.1)
            let report = try encapsulateCapture(input: dir + "/inner.pcap", output: dir + "/outer.pcap", options: options)
            #expect(report.written == 1 && report.tooShort == 1 && report.tooLarge == 1)
            #expect(report.innerBytes == fit.count)
        }
    }

    @Test("a filter selects the frames encapsulated; the others count as filtered out")
    func filterSelectsFrames() throws {
        try TestSupport.withScratchDirectory { dir in
            try TestSupport.write(TestSupport.sample.map(\.frame), to: dir + "/inner.pcap")
            let options = try TunnelOptions(encapsulation: .gre(GREOptions(key: 1)), local: Self.v4.0, remote: Self.v4.1)
            let report = try encapsulateCapture(input: dir + "/inner.pcap", output: dir + "/outer.pcap", options: options,
                                                filter: try PacketFilter(expression: "icmp"))
            // The VLAN-tagged echo is not "icmp" to BPF without "vlan and".
            #expect(report.written == 1 && report.filteredOut == TestSupport.sample.count - 1)

            let decap = try decapsulateCapture(input: dir + "/outer.pcap", output: dir + "/back.pcap", policy: DecapsulationPolicy(),
                                               filter: try PacketFilter(expression: "udp port 4789"))
            #expect(decap.frames == 1 && decap.filteredOut == 1 && decap.decapsulated == 0 && decap.dropped.isEmpty)
        }
    }

    /// The captures of real peers: every frame decapsulates; the one taken on a sender with
    /// checksum offload has partial UDP checksums, reported, and dropped only when verified.
    @Test(arguments: ["kernel-vxlan.pcap", "ovs-vxlan.pcap", "ovs-gre.pcap", "kernel-vxlan-csumoffload.pcap"])
    func referenceCaptures(_ name: String) throws {
        try TestSupport.withScratchDirectory { dir in
            let report = try decapsulateCapture(input: TestSupport.reference(name), output: dir + "/inner.pcap",
                                                policy: DecapsulationPolicy(udpChecksum: .report))
            #expect(report.frames == 12 && report.decapsulated == 12 && report.dropped.isEmpty)
            #expect(report.byTunnel == [name.contains("gre") ? "gre key 42" : "vxlan vni 42": 12])
            #expect(try TestSupport.frames(dir + "/inner.pcap").count == 12)

            let partial = report.udpChecksums[ChecksumStatus.partial.rawValue] ?? 0
            #expect((partial > 0) == name.contains("csumoffload"))
            let strict = try decapsulateCapture(input: TestSupport.reference(name), output: dir + "/strict.pcap",
                                                policy: DecapsulationPolicy(udpChecksum: .verify))
            #expect(strict.decapsulated == 12 - partial)
            #expect(strict.dropped[DropReason.badUDPChecksum.name] == (partial > 0 ? partial : nil))
        }
    }

    @Test("a VNI other than the one asked for is dropped under its reason")
    func unexpectedVNI() throws {
        try TestSupport.withScratchDirectory { dir in
            let report = try decapsulateCapture(input: TestSupport.reference("kernel-vxlan.pcap"), output: dir + "/inner.pcap",
                                                policy: DecapsulationPolicy(vni: 7))
            #expect(report.decapsulated == 0 && report.dropped == [DropReason.unexpectedVNI.name: 12])
        }
    }

    @Test("a missing input is an error that names it, and no output is left behind")
    func missingInput() throws {
        try TestSupport.withScratchDirectory { dir in
            let missing = dir + "/missing.pcap", output = dir + "/out.pcap"
            let options = try TunnelOptions(encapsulation: .vxlan(vni: 1), local: Self.v4.0, remote: Self.v4.1)
            #expect(throws: CaptureError.fileNotFound(path: missing)) {
                try encapsulateCapture(input: missing, output: output, options: options)
            }
            #expect(throws: CaptureError.fileNotFound(path: missing)) {
                try decapsulateCapture(input: missing, output: output, policy: DecapsulationPolicy())
            }
            #expect(throws: CaptureError.fileNotFound(path: missing)) { try summarizeCapture(path: missing) }
            #expect(!FileManager.default.fileExists(atPath: output))
        }
    }
}
