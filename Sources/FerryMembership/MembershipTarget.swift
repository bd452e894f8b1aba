import FerrySettings
import FerryWire

/// What membership changes: the engine's configured peers and, behind them, the host's routes
/// to their subnets. `ferry run` gives the agent its `EngineControl` through this; the unit
/// tests a recording fake. Called from the agent's one task, one change at a time; what it
/// throws is logged, and the change tried again at the next re-list.
public protocol MembershipTarget: AnyObject, Sendable {
    func addPeer(_ peer: PeerSpec) throws
    func removePeer(_ address: IPAddress) throws
}

/// The peers membership wants, from the hosts in the store: every host but this one, with its
/// subnet when it has one.
public enum MembershipDiff {
    /// What to remove and what to add to go from `applied` to `wanted`; a peer whose subnet
    /// changed is removed and added again (its route follows).
    public static func changes(applied: [IPAddress: PeerSpec], wanted: [IPAddress: PeerSpec])
        -> (remove: [IPAddress], add: [PeerSpec]) {
        var remove: [IPAddress] = []
        var add: [PeerSpec] = []
        for (address, spec) in applied where wanted[address] != spec { remove.append(address) }
        for (address, spec) in wanted where applied[address] != spec { add.append(spec) }
        return (remove.sorted(), add.sorted { $0.address < $1.address })
    }
}
