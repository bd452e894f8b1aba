import FerryWire

/// What `ferry setup` makes of a host: a container bridge with its address, up, and a route
/// for every peer's container subnet (onto the bridge, where the tunnel carries it; or via the
/// peer's underlay address, where the peer is on-link and no tunnel is needed).
public struct SetupLayout: Equatable, Sendable {
    /// The bridge to create or adopt (`bridge0`).
    public var bridge: String
    /// The bridge's own address and prefix length (`172.18.0.1/16`): this host's container subnet.
    public var address: InterfaceAddress?
    /// One route per peer whose container subnet is known.
    public var routes: [PeerRoute]

    public init(bridge: String, address: InterfaceAddress?, routes: [PeerRoute]) {
        self.bridge = bridge
        self.address = address
        self.routes = routes
    }
}

/// The route a peer's container subnet needs.
public struct PeerRoute: Hashable, Sendable, CustomStringConvertible {
    /// The peer's underlay address (what names it in `ferry ctl peer del` and in the record).
    public var peer: IPAddress
    public var subnet: IPPrefix
    /// How the subnet is reached: onto the bridge (the tunnel carries it), or via the peer's
    /// underlay address out of `device` (static-route mode).
    public var target: Target

    public enum Target: Hashable, Sendable {
        case bridge
        case gateway(IPAddress, device: String)
    }

    public init(peer: IPAddress, subnet: IPPrefix, target: Target = .bridge) {
        self.peer = peer
        self.subnet = subnet
        self.target = target
    }

    public var description: String {
        switch target {
        case .bridge: "\(subnet) (peer \(peer), onto the bridge)"
        case .gateway(let g, let device): "\(subnet) via \(g) dev \(device)"
        }
    }
}
