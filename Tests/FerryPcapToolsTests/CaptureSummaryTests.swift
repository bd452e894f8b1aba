// CaptureSummary and summarizeCapture: what `ferry pcap inspect` reports, from files written
// here, without a subprocess.

import FerryCapture
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
