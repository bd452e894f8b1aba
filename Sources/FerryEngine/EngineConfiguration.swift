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

/// Everything the engine needs to know, from flags or a config file.
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
    /// Peers are added at run time (membership in etcd): starting with none is not an error.
    public var peersAtRunTime = false
    /// With `acceptAnyPeer`: only sources inside one of these may become a peer (empty: any).
    /// Configured peers are peers wherever they are.
    public var acceptPrefixes: [IPPrefix] = []
    /// Most MACs the forwarding table learns behind one peer, at least 1 (nil: no bound but the
    /// table's).
    public var macsPerPeer: Int?
    public var maximumPeers = 256
    public var ageingSeconds: Int64 = 300
    public var fdbCapacity = 4096
    public var staticEntries: [(mac: MACAddress, peer: IPAddress)] = []
    /// The underlay's MTU (the outer packet's limit); nil: that of the interface that holds the
    /// local address, which the engine reads at start (`DataPathLimits.underlayMTU`).
    public var underlayMTU: Int?
    /// Frames read per batch from the TAP, packets per receive.
    public var batchSize = 64
    /// How GRE leaves: through the kernel's IP output path, or on the link path.
    public var grePath: GREPath = .ip

    public init(encapsulation: Encapsulation, local: IPAddress, peers: [IPAddress], underlayMTU: Int? = 1500) {
        self.encapsulation = encapsulation
        self.local = local
        self.peers = peers
        self.underlayMTU = underlayMTU
    }

    /// The outer headers for one peer; `localMAC` is the source of captured outer frames.
    public func tunnelOptions(remote: IPAddress, localMAC: MACAddress = .zero) throws(TunnelOptionsError) -> TunnelOptions {
        try TunnelOptions(encapsulation: encapsulation, local: local, remote: remote, destinationPort: destinationPort,
                          sourcePortRange: sourcePortRange, ttl: ttl, tos: tos, dontFragment: dontFragment,
                          udpChecksum: udpChecksum, localMAC: localMAC, remoteMAC: .zero)
    }

    /// Why VXLAN cannot leave through UDP sockets that the kernel segments (`Offloads.genericSegmentation`),
    /// or nil when it can: the one place that says so. The kernel builds the outer IP and UDP
    /// headers there, so they must be the same for every packet of a send.
    public func udpSegmentationBlocker(capturingOuter: Bool) -> UDPSegmentationBlocker? {
        guard case .vxlan = encapsulation else { return .notVXLAN }
        if udpChecksum == false { return .noUDPChecksum }
        if case .inherit = tos { return .inheritedTOS }
        if dontFragment == .inherit { return .inheritedDF }
        if capturingOuter { return .outerCapture }
        return nil
    }

    /// IP-layer bytes each frame gains.
    public var ipOverhead: Int {
        (local.isIPv6 ? IPv6.headerLength : IPv4.minimumHeaderLength) + encapsulation.transportHeaderLength
    }
}

/// What keeps VXLAN from leaving through UDP GSO sends (`EngineConfiguration.udpSegmentationBlocker`).
public enum UDPSegmentationBlocker: Sendable, Equatable, CustomStringConvertible {
    case notVXLAN, noUDPChecksum, inheritedTOS, inheritedDF, outerCapture

    /// The tunnel's own options rule gso out (not a choice made for this run, such as a capture):
    /// asking for it by name is a mistake.
    public var contradictsTunnel: Bool { self == .notVXLAN || self == .noUDPChecksum }

    public var description: String {
        switch self {
        case .notVXLAN: "gso is for VXLAN (GRE leaves through raw sockets, without UDP_SEGMENT)"
        case .noUDPChecksum: "gso needs the outer UDP checksum; drop --no-udp-csum"
        case .inheritedTOS: "UDP GSO sends need a fixed outer TOS (--tos N, not inherit)"
        case .inheritedDF: "UDP GSO sends need --df set or unset, not inherit"
        case .outerCapture: "an outer capture needs the headers Ferry writes itself, so VXLAN takes the raw path"
        }
    }
}
