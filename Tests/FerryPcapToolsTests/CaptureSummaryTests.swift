// CaptureSummary and summarizeCapture: what `ferry pcap inspect` reports, from files written
// here, without a subprocess.

import FerryCapture
import Foundation
import FerryPcapTools
import FerryWire
import Testing

@Suite("Capture summary")
struct CaptureSummaryTests {
    static let options = try! TunnelOptions(encapsulation: .vxlan(vni: 42), local: IPAddress("10.99.0.1")!,
                                            remote: IPAddress("10.99.0.2")!)

    /// The sample encapsulated in VXLAN over IPv4, at `dir/outer.pcap`.
    static func outerSample(in dir: String) throws -> String {
        try TestSupport.write(TestSupport.sample.map(\.frame), to: dir + "/inner.pcap")
        _ = try encapsulateCapture(input: dir + "/inner.pcap", output: dir + "/outer.pcap", options: options)
        return dir + "/outer.pcap"
    }

    @Test("an inner frame's flow: protocol, addresses, ports, VLAN")
    func flowDescriptions() {
        for (frame, flow) in TestSupport.sample {
            frame.withUnsafeBytes { #expect(CaptureSummary.flowDescription(of: $0) == flow) }
        }
        [UInt8](repeating: 0, count: 8).withUnsafeBytes { #expect(CaptureSummary.flowDescription(of: $0) == "runt frame") }
    }

    @Test("tunnels, flows, sizes and overhead of an encapsulated capture")
    func summarizesTunnelTraffic() throws {
        try TestSupport.withScratchDirectory { dir in
            let s = try summarizeCapture(path: try Self.outerSample(in: dir))
            let n = TestSupport.sample.count
            #expect(s.frames == n && s.tunnelFrames == n && s.filteredOut == 0)
            #expect(s.otherFrames.isEmpty && s.malformedFrames.isEmpty)
            #expect(s.tunnels.count == 1)
            let t = try #require(s.tunnels.first)
            #expect(t.type == "vxlan" && t.vni == 42 && t.key == nil && t.destinationPort == 4789)
            #expect(t.outerSource == "10.99.0.1" && t.outerDestination == "10.99.0.2")
            #expect(t.packets == n && t.udpChecksums == [ChecksumStatus.absent.rawValue: n])
            #expect(t.distinctSourcePorts >= 1 && t.distinctSourcePorts <= n)

            let innerBytes = TestSupport.sample.map(\.frame.count).reduce(0, +)
            #expect(s.innerBytes == innerBytes && s.wireBytes == innerBytes + n * Self.options.fullHeaderLength)
            #expect(s.overheadBytes == n * 50)
            #expect(s.overheadShare > 0 && s.overheadShare < 1)
            #expect(Set(s.innerFlows.map(\.description)) == Set(TestSupport.sample.map(\.flow)))
            #expect(s.frameSizes.map(\.outerFrames).reduce(0, +) == n)
            #expect(s.frameSizes.map(\.innerFrames).reduce(0, +) == n)
        }
    }

    @Test("a capture cut short (tcpdump -s) is counted at the frames' lengths on the wire")
    func truncatedCapture() throws {
        try TestSupport.withScratchDirectory { dir in
            let whole = try summarizeCapture(path: try Self.outerSample(in: dir))
            let cut = try TestSupport.frames(dir + "/outer.pcap")
            let writer = try PcapFileWriter(path: dir + "/cut.pcap", snapshotLength: 96)
            for f in cut { writer.write(f) }
            try writer.close()
            #expect(try TestSupport.frames(dir + "/cut.pcap").contains { $0.bytes.count < $0.originalLength })

            let s = try summarizeCapture(path: dir + "/cut.pcap")
            #expect(s.tunnelFrames == whole.tunnelFrames && s.malformedFrames.isEmpty)
            #expect(s.wireBytes == whole.wireBytes && s.innerBytes == whole.innerBytes)
            #expect(s.tunnels.first?.udpChecksums[ChecksumStatus.notChecked.rawValue] != nil)
        }
    }

    /// A classic pcap file written byte by byte, so that its header fields may lie: each
    /// record's bytes are cut to `caplen`, and `len` is put in as given.
    static func craftedPcap(snapshotLength: UInt32, records: [(bytes: [UInt8], len: UInt32)]) -> [UInt8] {
        func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        var out = le32(0xA1B2_C3D4) + [2, 0, 4, 0] + le32(0) + le32(0) + le32(snapshotLength) + le32(1)
        for (i, r) in records.enumerated() {
            out += le32(1_700_000_000 + UInt32(i)) + le32(0) + le32(UInt32(r.bytes.count)) + le32(r.len) + r.bytes
        }
        return out
    }

    @Test("a forged length on the wire (4 GiB for a 96-byte record) is not allocated: the frame is padded to an IP packet's most")
    func forgedWireLength() throws {
        try TestSupport.withScratchDirectory { dir in
            let outer = try TestSupport.frames(try Self.outerSample(in: dir)).map(\.bytes)
            // Every record cut to 96 bytes; the first claims 4 GiB on the wire, the others
            // their true length.
            let records = outer.enumerated().map { i, f in (Array(f.prefix(96)), i == 0 ? UInt32.max - 15 : UInt32(f.count)) }
            let path = dir + "/forged.pcap"
            let bytes = Self.craftedPcap(snapshotLength: UInt32.max, records: records)
            #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
            // Before the bound this appended 4 GiB of zeros (and was killed, or took minutes).
            let s = try summarizeCapture(path: path)
            #expect(s.frames == outer.count)
            #expect(s.tunnelFrames == outer.count, "\(s.malformedFrames) \(s.otherFrames)")
            let trueBytes = outer.dropFirst().map(\.count).reduce(0, +)
            #expect(s.wireBytes == trueBytes + Int(UInt32.max - 15), "the file's lengths are reported as it gives them")
            // pcap encap copies frames into a buffer sized by the tunnel, not by the file's
            // snapshot length (4 GiB here): the frames still go through, cut as they are.
            let report = try encapsulateCapture(input: path, output: dir + "/again.pcap", options: Self.options)
            #expect(report.written == outer.count)
        }
    }

    @Test("other traffic and broken tunnel packets are told apart, by reason")
    func otherAndMalformedFrames() throws {
        try TestSupport.withScratchDirectory { dir in
            var outer = try TestSupport.frames(try Self.outerSample(in: dir)).map(\.bytes)
            outer[0][14 + 20 + 8] = 0  // VXLAN flags without the I bit
            try TestSupport.write(outer + [TestSupport.sample[0].frame, TestSupport.sample[1].frame], to: dir + "/mixed.pcap")
            let s = try summarizeCapture(path: dir + "/mixed.pcap", filter: nil)
            #expect(s.frames == outer.count + 2 && s.tunnelFrames == outer.count - 1)
            #expect(s.malformedFrames == [DropReason.vxlanMissingIFlag.name: 1])
            #expect(s.otherFrames == [DropReason.notIPUnderlay.name: 1, DropReason.notTunnelProtocol.name: 1])

            let onlyARP = try summarizeCapture(path: dir + "/mixed.pcap", filter: try PacketFilter(expression: "arp"))
            #expect(onlyARP.frames == 1 && onlyARP.filteredOut == outer.count + 1)
            #expect(onlyARP.otherFrames == [DropReason.notIPUnderlay.name: 1])
        }
    }

    @Test("the reference captures: one tunnel each way, 50 bytes of VXLAN overhead per IPv4 packet")
    func referenceCapture() throws {
        let s = try summarizeCapture(path: TestSupport.reference("kernel-vxlan.pcap"))
        #expect(s.tunnelFrames == 12 && s.tunnels.count == 2)
        #expect(s.overheadBytes == 12 * 50)
        #expect(s.innerFlows.contains { $0.description.hasPrefix("arp ") })
        #expect(s.innerFlows.contains { $0.description.hasPrefix("icmp ") })
    }
}

@Suite("Capture summary of pcapng")
struct PcapngSummaryTests {
    @Test("the comments of a pcapng capture are counted, frame for frame with libpcap's reading")
    func commentsAreCounted() throws {
        try TestSupport.withScratchDirectory { dir in
            let frames = try PcapFileReader(path: TestSupport.reference("kernel-vxlan.pcap")).readAll()
            var e = PcapngEncoder()
            e.sectionHeader()
            e.interfaceDescription(snapshotLength: 65535, name: "outer")
            for (i, f) in frames.enumerated() {
                let comment = i % 4 == 0 ? "drop reason=unexpected_vni" : i % 4 == 1 ? "drop reason=peer_not_accepted" : nil
                f.bytes.withUnsafeBytes { e.enhancedPacket(interface: 0, timestamp: f.timestamp, captured: $0, originalLength: f.originalLength,
                                                           comment: comment) }
            }
            let path = dir + "/drops.pcapng"
            try Data(e.bytes).write(to: URL(fileURLWithPath: path))
            let s = try summarizeCapture(path: path)
            #expect(s.frames == frames.count && s.tunnelFrames == frames.count)
            #expect(s.comments == ["drop reason=unexpected_vni": 3, "drop reason=peer_not_accepted": 3], "\(s.comments)")
            // A filter leaves the comments of the frames it leaves out uncounted: odd frames go 2 -> 1.
            let filtered = try summarizeCapture(path: path, filter: try PacketFilter(expression: "src host 10.200.0.1"))
            #expect(filtered.comments == ["drop reason=unexpected_vni": 3], "\(filtered.comments)")
            // A pcap file has none.
            #expect(try summarizeCapture(path: TestSupport.reference("kernel-vxlan.pcap")).comments.isEmpty)
        }
    }
}
