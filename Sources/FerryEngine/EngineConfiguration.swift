import FerryWire

/// How Ferry's GRE packets leave the host. `ip`: a raw socket, through the kernel's IP output
/// path (routing, netfilter's OUTPUT and POSTROUTING hooks, the queueing discipline, IPsec
/// policies, ARP or neighbour discovery), as any locally sent packet. `link`: a packet socket
/// straight to the output device, addressed to the next hop's MAC, which the engine reads from
/// the kernel's routing and neighbour tables every second. The link path costs the sender less
/// per packet (GRE has no GSO, so every segment pays that path), but netfilter, traffic control
/// and IPsec do not see these packets. A peer whose next hop is not resolved, or not behind an
/// Ethernet device, goes through the IP path meanwhile.
public enum GREPath: String, Sendable, CaseIterable {
    case ip, link
}

/// Everything the forwarder needs to know, from flags or a config file.
public struct EngineConfiguration: Sendable {
    public var encapsulation: Encapsulation
    public var local: IPAddress
    public var peers: [IPAddress]
    public var destinationPort: UInt16 = VXLAN.defaultPort
    public var sourcePortRange: ClosedRange<UInt16> = TunnelOptions.defaultSourcePortRange
    public var ttl: UInt8 = 64
    public var tos: TOSPolicy = .fixed(0)
    public var dontFragment: DFPolicy = .unset
    public var udpChecksum: Bool? = nil
    /// Accept tunnel packets from any source and learn it as a peer (as the kernel's vxlan
    /// device does without `remote`). Off: only configured peers get in.
    public var acceptAnyPeer = false
    public var maximumPeers = 256
    public var ageingSeconds: Int64 = 300
    public var fdbCapacity = 4096
    public var staticEntries: [(mac: MACAddress, peer: IPAddress)] = []
    /// The underlay's MTU (the outer packet's limit): by default that of the interface that
    /// holds the local address.
    public var underlayMTU: Int
    /// Frames read per batch from the TAP, packets per receive.
    public var batchSize = 64
    /// Largest frame the TAP may hand over (its MTU plus an Ethernet header and a VLAN tag).
    public var maximumFrame = 65535
    /// The local outer MAC for captures of outer frames.
    public var localMAC: MACAddress = .zero
    /// How GRE leaves: through the kernel's IP output path, or on the link path.
    public var grePath: GREPath = .ip
    /// Received segments of a flow are joined into super-frames for a TAP with a virtio-net
    /// header (`Offloads.genericReceive`); off, each goes to the TAP as it came.
    public var joinsReceivedSegments = true

    public init(encapsulation: Encapsulation, local: IPAddress, peers: [IPAddress], underlayMTU: Int = 1500) {
        self.encapsulation = encapsulation
        self.local = local
        self.peers = peers
        self.underlayMTU = underlayMTU
    }

    /// The outer headers for one peer.
    public func tunnelOptions(remote: IPAddress) throws(TunnelOptionsError) -> TunnelOptions {
        try TunnelOptions(encapsulation: encapsulation, local: local, remote: remote, destinationPort: destinationPort,
                          sourcePortRange: sourcePortRange, ttl: ttl, tos: tos, dontFragment: dontFragment,
                          udpChecksum: udpChecksum, localMAC: localMAC, remoteMAC: .zero)
    }

    /// IP-layer bytes each frame gains.
    public var ipOverhead: Int {
        (local.isIPv6 ? IPv6.headerLength : IPv4.minimumHeaderLength) + encapsulation.transportHeaderLength
    }

    /// The TAP's MTU that makes every full-size frame fit the underlay: the underlay MTU less
    /// the outer headers and the inner Ethernet header (1450 for VXLAN over IPv4 on 1500).
    public var defaultTAPMTU: Int { underlayMTU - ipOverhead - Ethernet.headerLength }
}
