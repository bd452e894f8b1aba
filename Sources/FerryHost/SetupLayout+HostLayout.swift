import FerrySettings
import FerryWire

extension SetupLayout {
    /// The set-up a host layout asks for (`ferry setup`, `ferry run` with `setup: true`): in
    /// tunnel mode every peer subnet goes onto the bridge; in routes mode via the peer, each of
    /// which must be on-link (else the error names the one that is not and why); in auto mode
    /// via the peers that are on-link and onto the bridge (the tunnel) for the others. Peers
    /// without a subnet need no route. `state` is needed by the routes and auto modes only.
    public init(_ host: HostLayout, state: HostState? = nil) throws(SetupError) {
        guard let bridge = host.bridge else {
            throw SetupError("set-up needs the bridge to create or adopt: give --bridge NAME (or `bridge:` in the config file)")
        }
        var routes: [PeerRoute] = []
        for p in host.peers {
            guard let subnet = p.subnet else { continue }
            routes.append(PeerRoute(peer: p.address, subnet: subnet, target: try Self.target(p.address, host.mode, state, bridge)))
        }
        self.init(bridge: bridge, address: host.subnet, routes: routes)
    }

    static func target(_ peer: IPAddress, _ mode: NetworkMode, _ state: HostState?, _ bridge: String)
        throws(SetupError) -> PeerRoute.Target {
        guard mode != .tunnel else { return .bridge }
        guard let state else { throw SetupError("--mode \(mode.rawValue) needs the host's routes to tell on-link peers") }
        switch OnLink.check(peer, in: state, bridge: bridge) {
        case .onLink(let device): return .gateway(peer, device: device)
        case .notOnLink(let why) where mode == .routes:
            throw SetupError("--mode routes routes each peer's subnet via the peer, so every peer must be on this host's network, "
                             + "and peer \(peer) is not: \(why); use --mode auto to tunnel to it, or --mode tunnel")
        case .notOnLink: return .bridge
        }
    }

    /// The peers the tunnel must carry: all in tunnel mode, none in routes mode, in auto mode
    /// those not routed via their own address.
    public func tunnelled(_ host: HostLayout) -> [IPAddress] {
        let direct = Set(routes.compactMap { r -> IPAddress? in if case .gateway = r.target { r.peer } else { nil } })
        return host.mode == .routes ? [] : host.peers.map(\.address).filter { !direct.contains($0) }
    }
}

extension RouteKeeper {
    /// A peer joined or changed (`ferry ctl peer add ADDRESS[=SUBNET]`): its subnet's route onto the bridge.
    @discardableResult
    /// In auto mode the route goes via the peer when it is on-link (as the host's routes say now).
    public func peerAdded(_ peer: PeerSpec, mode: NetworkMode = .tunnel) throws(SetupError) -> [SetupStep] {
        var state: HostState?
        if mode != .tunnel { state = try HostSetup.readState() }
        let target = try SetupLayout.target(peer.address, mode, state, current.bridge)
        return try peerAdded(address: peer.address, subnet: peer.subnet, target: target)
    }

    /// Whether `peer`, joining now, is routed via its own address rather than tunnelled: in
    /// `routes` mode every peer (one not on-link is refused), in `auto` mode a peer with a subnet
    /// that is on-link; never in `tunnel` mode. The host's routes are read afresh.
    public func routesDirectly(_ peer: PeerSpec, mode: NetworkMode) throws(SetupError) -> Bool {
        switch mode {
        case .tunnel: return false
        case .auto where peer.subnet == nil: return false
        case .routes where peer.subnet == nil:
            throw SetupError("--mode routes routes each peer's subnet via the peer, and \(peer.address) has none; "
                             + "write it as \(peer.address)=SUBNET")
        default:
            if case .gateway = try SetupLayout.target(peer.address, mode, try HostSetup.readState(), current.bridge) { return true }
            return false
        }
    }

    /// A peer left (`ferry ctl peer del ADDRESS`): the route Ferry made for its subnet goes.
    @discardableResult
    public func peerRemoved(_ peer: PeerSpec) throws(SetupError) -> [SetupStep] {
        try peerRemoved(address: peer.address)
    }
}
