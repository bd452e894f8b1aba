// What encapsulation costs on the wire, for `ferry overhead` and for sizing MTUs.

public struct EncapsulationOverhead: Sendable, Hashable {
    /// A tunnel type as the overhead table lists it.
    public struct Variant: Sendable, Hashable {
        public var name: String
        public var encapsulation: Encapsulation
        public var ipv6Underlay: Bool
        public init(name: String, encapsulation: Encapsulation, ipv6Underlay: Bool) {
            self.name = name
            self.encapsulation = encapsulation
            self.ipv6Underlay = ipv6Underlay
        }
        /// Bytes in front of the inner frame, from the outer Ethernet header on.
        public var headerBytes: Int {
            Ethernet.headerLength + (ipv6Underlay ? IPv6.headerLength : IPv4.minimumHeaderLength)
                + encapsulation.transportHeaderLength
        }
        /// Bytes the outer IP packet adds to the inner frame (what the underlay MTU absorbs).
        public var ipBytes: Int { headerBytes - Ethernet.headerLength }

        public static let standard: [Variant] = [
            Variant(name: "vxlan-ipv4", encapsulation: .vxlan(vni: 0), ipv6Underlay: false),
            Variant(name: "vxlan-ipv6", encapsulation: .vxlan(vni: 0), ipv6Underlay: true),
            Variant(name: "gre-ipv4", encapsulation: .gre(GREOptions()), ipv6Underlay: false),
            Variant(name: "gre-key-ipv4", encapsulation: .gre(GREOptions(key: 0)), ipv6Underlay: false),
            Variant(name: "gre-key-csum-seq-ipv4", encapsulation: .gre(GREOptions(key: 0, checksum: true, sequence: true)),
                    ipv6Underlay: false),
            Variant(name: "gre-key-ipv6", encapsulation: .gre(GREOptions(key: 0)), ipv6Underlay: true),
        ]
    }

    public var variant: Variant
    /// The inner Ethernet frame as carried (no FCS: a tunnel does not carry it).
    public var innerFrameBytes: Int
    /// The inner frame sent natively on Ethernet, FCS and padding to 64 bytes included.
    public var nativeWireBytes: Int
    /// The encapsulated frame on the underlay, FCS and padding included.
    public var tunnelWireBytes: Int
    /// The same two figures counting preamble, start delimiter and inter-frame gap too.
    public var nativePhysicalBytes: Int
    public var tunnelPhysicalBytes: Int
    /// Whether the outer packet fits the underlay MTU without fragmentation.
    public var fitsMTU: Bool

    public init(variant: Variant, innerFrameBytes: Int, underlayMTU: Int = 1500) {
        self.variant = variant
        self.innerFrameBytes = innerFrameBytes
        let fcs = Ethernet.frameCheckSequenceLength
        let physical = Ethernet.preambleLength + Ethernet.interFrameGap
        nativeWireBytes = max(innerFrameBytes, Ethernet.minimumFrameLength) + fcs
        tunnelWireBytes = max(innerFrameBytes + variant.headerBytes, Ethernet.minimumFrameLength) + fcs
        nativePhysicalBytes = nativeWireBytes + physical
        tunnelPhysicalBytes = tunnelWireBytes + physical
        fitsMTU = innerFrameBytes + variant.ipBytes <= underlayMTU
    }

    /// Bytes the tunnel adds per frame.
    public var addedBytes: Int { tunnelWireBytes - nativeWireBytes }
    /// Inner frame bytes per wire byte, without and with preamble and gap.
    public var efficiency: Double { Double(innerFrameBytes) / Double(tunnelWireBytes) }
    public var physicalEfficiency: Double { Double(innerFrameBytes) / Double(tunnelPhysicalBytes) }
    /// What the tunnel's efficiency is as a share of native Ethernet's.
    public var relativeToNative: Double { Double(nativePhysicalBytes) / Double(tunnelPhysicalBytes) }
}
