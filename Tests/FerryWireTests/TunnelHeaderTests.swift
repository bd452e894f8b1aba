import Testing
import FerryWire

/// Golden bytes for the tunnel headers, from the RFCs and from what Open vSwitch and Linux send.
@Suite struct TunnelHeaderTests {
    private func written(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0xAA, count: count)
        let n = bytes.withUnsafeMutableBytes(body)
        return Array(bytes[0..<n])
    }

    @Test func vxlanHeader() {
        // kernel-vxlan.pcap: 08 00 00 00 00 00 2a 00 for VNI 42.
        #expect(written(8) { VXLAN.writeHeader(to: $0, at: 0, vni: 42) } == hex("0800 0000 0000 2a00"))
        #expect(written(8) { VXLAN.writeHeader(to: $0, at: 0, vni: 0xABCDEF) } == hex("0800 0000 abcd ef00"))
    }

    @Test func greHeaderWithKeyAsOpenVSwitchSendsIt() {
        // ovs-gre.pcap: flags 0x2000, protocol 0x6558, key 0x0000002a.
        #expect(written(16) { GRE.writeHeader(to: $0, at: 0, checksum: false, key: 42, sequence: nil) }
            == hex("2000 6558 0000 002a"))
    }

    @Test func greHeaderEveryFlagCombination() {
        #expect(written(16) { GRE.writeHeader(to: $0, at: 0, checksum: false, key: nil, sequence: nil) } == hex("0000 6558"))
        #expect(written(16) { GRE.writeHeader(to: $0, at: 0, checksum: true, key: nil, sequence: nil) }
            == hex("8000 6558 0000 0000"))
        #expect(written(16) { GRE.writeHeader(to: $0, at: 0, checksum: false, key: nil, sequence: 7) }
            == hex("1000 6558 0000 0007"))
        #expect(written(16) { GRE.writeHeader(to: $0, at: 0, checksum: true, key: 0x01020304, sequence: 0x0A0B0C0D) }
            == hex("b000 6558 0000 0000 0102 0304 0a0b 0c0d"))
        for c in [false, true] { for k in [false, true] { for s in [false, true] {
            #expect(GRE.headerLength(checksum: c, key: k, sequence: s) == 4 + (c ? 4 : 0) + (k ? 4 : 0) + (s ? 4 : 0))
        } } }
    }

    @Test func greViewReadsOptionalFields() {
        let bytes = hex("b000 6558 1234 0000 0102 0304 0a0b 0c0d")
        bytes.withUnsafeBytes { b in
            let view = GREView(b)!
            #expect(view.headerLength == 16)
            #expect(view.checksum == 0x1234)
            #expect(view.key == 0x01020304)
            #expect(view.sequence == 0x0A0B0C0D)
            #expect(GREView(UnsafeRawBufferPointer(rebasing: b[0..<12])) == nil)
        }
    }

    @Test func overheadOfEachTunnel() {
        let byName = Dictionary(uniqueKeysWithValues: EncapsulationOverhead.Variant.standard.map { ($0.name, $0) })
        #expect(byName["vxlan-ipv4"]?.headerBytes == 50)
        #expect(byName["vxlan-ipv6"]?.headerBytes == 70)
        #expect(byName["gre-ipv4"]?.headerBytes == 38)
        #expect(byName["gre-key-ipv4"]?.headerBytes == 42)
        #expect(byName["gre-key-csum-seq-ipv4"]?.headerBytes == 50)
        #expect(byName["gre-key-ipv6"]?.headerBytes == 62)
        let row = EncapsulationOverhead(variant: byName["vxlan-ipv4"]!, innerFrameBytes: 1514)
        #expect(row.addedBytes == 50)
        #expect(row.fitsMTU == false)
        #expect(EncapsulationOverhead(variant: byName["vxlan-ipv4"]!, innerFrameBytes: 1450).fitsMTU)
        // Small frames: the native one is padded to 64 bytes, the tunnel one needs no padding.
        let small = EncapsulationOverhead(variant: byName["vxlan-ipv4"]!, innerFrameBytes: 42)
        #expect(small.nativeWireBytes == 64 && small.tunnelWireBytes == 96 && small.addedBytes == 32)
        #expect(small.tunnelPhysicalBytes == 116)
    }
}
