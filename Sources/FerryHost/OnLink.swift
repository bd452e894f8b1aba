import FerryLinux
import FerryWire

/// Whether a peer is on this host's L2 network, as the static-route modes need: the main
/// table's most specific route to its address has no gateway (a connected prefix of an
/// interface, or a route onto a device), so a route via the peer's address is one hop.
public enum OnLink {
    public enum Answer: Equatable, Sendable {
        /// Reached directly out of `device`.
        case onLink(device: String)
        /// Not on-link, and why (the gateway it is reached through, or no route at all).
        case notOnLink(String)
    }

    /// Looks up `peer` in `state` (never onto `bridge`: a peer is not behind the container bridge).
    public static func check(_ peer: IPAddress, in state: HostState, bridge: String?) -> Answer {
        let candidates = state.routes.filter { $0.isUnicast && $0.destination.contains(peer) }
        guard let best = candidates.max(by: { $0.destination.length < $1.destination.length }) else {
            return .notOnLink("there is no route to \(peer)")
        }
        if let gateway = best.gateway {
            return .notOnLink("\(peer) is reached via the gateway \(gateway) (dev \(state.name(of: best.interfaceIndex)))")
        }
        guard let index = best.interfaceIndex, let device = state.link(index: index)?.name else {
            return .notOnLink("the route to \(peer) (\(best.destination)) names no device")
        }
        if device == bridge { return .notOnLink("\(peer) is inside the container bridge's subnet (\(best.destination))") }
        return .onLink(device: device)
    }
}
