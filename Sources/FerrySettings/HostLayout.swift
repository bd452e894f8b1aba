import FerryWire

/// A peer host: its underlay address and, when it has one, the container subnet behind it
/// (`--peer 192.168.99.101=172.17.0.0/16`), which set-up routes onto the bridge (or, in
/// `routes` mode, via the peer).
public struct PeerSpec: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var subnet: IPPrefix?
    public init(address: IPAddress, subnet: IPPrefix? = nil) {
        self.address = address
        self.subnet = subnet
    }
    public var description: String { subnet.map { "\(address)=\($0)" } ?? "\(address)" }
}

/// How container subnets reach each other.
public enum NetworkMode: String, Sendable, CaseIterable {
    /// VXLAN or GRE to every peer (the default).
    case tunnel
    /// No tunnel: each peer's subnet routed via the peer's underlay address, which must be on-link.
    case routes
    /// Routes to the peers on this host's network, the tunnel to the others.
    case auto
}

/// The host's side of the overlay: the bridge, its address and subnet, the peers with their
/// subnets, and whether Ferry sets them up. `ferry setup` and `teardown` need only this; `ferry
/// run` has it inside its `RunSettings`.
public struct HostLayout: Equatable, Sendable {
    public var bridge: String?
    /// The bridge's address and prefix (`subnet:`), e.g. 172.18.0.1/16.
    public var subnet: InterfaceAddress?
    public var peers: [PeerSpec]
    public var mode: NetworkMode
    /// `ferry run` sets the host up at start (`setup: true`) and keeps routes in step with peers.
    public var setup: Bool

    public init(bridge: String? = nil, subnet: InterfaceAddress? = nil, peers: [PeerSpec] = [], mode: NetworkMode = .tunnel,
                setup: Bool = false) {
        self.bridge = bridge
        self.subnet = subnet
        self.peers = peers
        self.mode = mode
        self.setup = setup
    }

    /// Resolves the layout alone: the command line over the file.
    public init(options o: RunOptions, file: ConfigFile?) throws(SettingsError) {
        let v = Values(options: o, file: file)
        try self.init(values: v)
    }

    init(values v: Values) throws(SettingsError) {
        bridge = v.value(v.o.bridge, "bridge")
        subnet = try v.value(v.o.subnet, "subnet").map(Parse.interfaceAddress)
        peers = try v.peers()
        mode = try v.value(v.o.mode, "mode").map(Parse.mode) ?? .tunnel
        setup = try v.bool(v.o.setup, "setup")
        try check()
    }

    /// What cannot work whatever the host: one address twice, subnets that overlap (a route
    /// would shadow another), routes with no subnet to route, set-up with no bridge.
    public func check() throws(SettingsError) {
        var seen = Set<IPAddress>()
        for p in peers where !seen.insert(p.address).inserted {
            throw SettingsError("peer \(p.address) is listed twice; list each peer once (with its subnet, if any)")
        }
        var subnets: [(String, IPPrefix)] = peers.compactMap { p in p.subnet.map { ("peer \(p.address)", $0) } }
        if let subnet { subnets.insert(("this host (subnet \(subnet))", subnet.prefix), at: 0) }
        for i in subnets.indices {
            for j in subnets.indices where j > i {
                let (a, pa) = subnets[i], (b, pb) = subnets[j]
                if pa.contains(pb.address) || pb.contains(pa.address) {
                    throw SettingsError("the subnets of \(a) (\(pa)) and \(b) (\(pb)) overlap; give each host a subnet of its own")
                }
            }
        }
        if mode == .routes, let p = peers.first(where: { $0.subnet == nil }) {
            throw SettingsError("--mode routes routes each peer's subnet via the peer, and peer \(p.address) has none; "
                                + "write it as \(p.address)=SUBNET (e.g. \(p.address)=172.17.0.0/16)")
        }
        if setup && bridge == nil {
            throw SettingsError("set-up needs the bridge to create or adopt: give --bridge NAME (or `bridge:` in the config file)")
        }
    }
}
