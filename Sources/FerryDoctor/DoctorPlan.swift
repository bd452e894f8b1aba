import FerryWire

/// What the doctor checks the host for: this host's tunnel as its config describes it, or,
/// without a config, nothing but the host's general state (every bridge, the default route's
/// interface as the underlay, VXLAN on its default port).
public struct DoctorPlan: Sendable {
    /// This host's underlay address (`local:`).
    public var local: IPAddress?
    /// The peers' underlay addresses (`peer:`).
    public var peers: [IPAddress]
    /// The container bridge (`bridge:`); nil: every bridge on the host.
    public var bridge: String?
    public var encapsulation: Encapsulation
    /// The VXLAN destination port (`dstport:`).
    public var port: UInt16
    /// `underlay-mtu:` when the config gives it; else the underlay interface's MTU.
    public var underlayMTU: Int?
    /// Where Docker keeps its daemon settings.
    public var dockerDaemonConfig: String
    /// Whether a config file said what to check.
    public var fromConfig: Bool

    public init(local: IPAddress? = nil, peers: [IPAddress] = [], bridge: String? = nil,
                encapsulation: Encapsulation = .vxlan(vni: 0), port: UInt16 = VXLAN.defaultPort, underlayMTU: Int? = nil,
                dockerDaemonConfig: String = "/etc/docker/daemon.json", fromConfig: Bool = false) {
        self.local = local
        self.peers = peers
        self.bridge = bridge
        self.encapsulation = encapsulation
        self.port = port
        self.underlayMTU = underlayMTU
        self.dockerDaemonConfig = dockerDaemonConfig
        self.fromConfig = fromConfig
    }

    /// The IP family of the underlay: the local address's, else the first peer's, else IPv4.
    public var ipv6Underlay: Bool { local?.isIPv6 ?? peers.first?.isIPv6 ?? false }

    /// Bytes the tunnel adds in front of an inner Ethernet frame at the IP layer.
    public var tunnelIPOverhead: Int {
        (ipv6Underlay ? IPv6.headerLength : IPv4.minimumHeaderLength) + encapsulation.transportHeaderLength
    }

    /// The largest container (inner IP) MTU a tunnel over an underlay of `underlayMTU` carries
    /// unfragmented: the underlay MTU less the outer headers and the inner Ethernet header.
    public func containerMTULimit(underlayMTU: Int) -> Int { underlayMTU - tunnelIPOverhead - Ethernet.headerLength }

    public var tunnelName: String {
        switch encapsulation {
        case .vxlan: "VXLAN over IPv\(ipv6Underlay ? 6 : 4)"
        case .gre: "GRE over IPv\(ipv6Underlay ? 6 : 4)"
        }
    }
}
