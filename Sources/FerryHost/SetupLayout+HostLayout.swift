import FerrySettings
import FerryWire

extension SetupLayout {
    /// The set-up a host layout asks for (`ferry setup`, `ferry run` with `setup: true`): in
    /// tunnel mode every peer subnet goes onto the bridge. Peers without a subnet need no route.
    public init(_ host: HostLayout) throws(SetupError) {
        guard let bridge = host.bridge else {
            throw SetupError("set-up needs the bridge to create or adopt: give --bridge NAME (or `bridge:` in the config file)")
        }
        guard host.mode == .tunnel else {
            throw SetupError("--mode \(host.mode.rawValue) is not built yet: set-up routes peer subnets onto the bridge (--mode tunnel)")
        }
        self.init(bridge: bridge, address: host.subnet,
                  routes: host.peers.compactMap { p in p.subnet.map { PeerRoute(peer: p.address, subnet: $0) } })
    }
}

extension RouteKeeper {
    /// A peer joined or changed (`ferry ctl peer add ADDRESS[=SUBNET]`): its subnet's route onto the bridge.
    @discardableResult
    public func peerAdded(_ peer: PeerSpec) throws(SetupError) -> [SetupStep] {
        try peerAdded(address: peer.address, subnet: peer.subnet)
    }

    /// A peer left (`ferry ctl peer del ADDRESS`): the route Ferry made for its subnet goes.
    @discardableResult
    public func peerRemoved(_ peer: PeerSpec) throws(SetupError) -> [SetupStep] {
        try peerRemoved(address: peer.address)
    }
}
