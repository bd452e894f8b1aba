import FerryEngine
import FerryWire
import Foundation

/// What `ferry run` serves on its control socket: the engine's counters and table, and the
/// changes `ferry ctl` asks for, made through the engine's API for change. It remembers each
/// configured peer's container subnet, so that the `PeerChangeObserver` (the host's routes)
/// hears of a removed peer with the subnet it was added with; a reload (`reloading`, given by
/// the command that knows the config file) goes through the same `addPeer`/`removePeer`.
///
/// `@unchecked Sendable`: `subnets` changes only under `lock`; the rest is immutable.
public final class EngineControl: ControlSource, @unchecked Sendable {
    public let engine: Engine
    let observer: PeerChangeObserver?
    var subnets: [IPAddress: IPPrefix] = [:]
    let lock = NSLock()
    /// Reads the config file again and applies it (through this object); nil: no file to read.
    let reloading: (@Sendable (EngineControl) -> Result<ControlChangeReport, ControlChangeRefusal>)?

    /// `subnets`: the container subnets of the peers configured at start.
    public init(engine: Engine, subnets: [IPAddress: IPPrefix] = [:], observer: PeerChangeObserver? = nil,
                reloading: (@Sendable (EngineControl) -> Result<ControlChangeReport, ControlChangeRefusal>)? = nil) {
        self.engine = engine
        self.subnets = subnets
        self.observer = observer
        self.reloading = reloading
    }

    public var isStopping: Bool { engine.isStopping }
    public func statistics() -> Statistics { engine.statistics() }
    public func forwardingSnapshot() -> ForwardingSnapshot { engine.forwardingSnapshot() }

    /// The container subnet recorded for each configured peer that has one.
    public var peerSubnets: [IPAddress: IPPrefix] { lock.withLock { subnets } }

    /// Adds a configured peer with its container subnet, and tells the observer.
    public func addPeer(_ address: IPAddress, subnet: IPPrefix?) throws(PeerChangeError) -> ForwardingState.PeerAddition {
        let outcome = try engine.addPeer(address)
        lock.withLock { subnets[address] = subnet }
        observer?.peerAdded(address, subnet: subnet)
        return outcome
    }

    /// Removes a configured peer, and tells the observer (with the subnet it had).
    public func removePeer(_ address: IPAddress) throws(PeerChangeError) -> ForwardingState.PeerRemoval {
        let outcome = try engine.removePeer(address)
        let subnet = lock.withLock { subnets.removeValue(forKey: address) }
        observer?.peerRemoved(address, subnet: subnet)
        return outcome
    }

    /// A configured peer's subnet changed (a reload): the observer hears of the peer removed
    /// with the old one and added with the new one; the engine is not touched.
    public func changeSubnet(of address: IPAddress, to subnet: IPPrefix?) {
        let old = lock.withLock { () -> IPPrefix? in
            let old = subnets[address]
            subnets[address] = subnet
            return old
        }
        guard old != subnet else { return }
        observer?.peerRemoved(address, subnet: old)
        observer?.peerAdded(address, subnet: subnet)
    }

    public func perform(_ change: ControlChange) -> Result<ControlChangeReport, ControlChangeRefusal> {
        do {
            switch change {
            case .addPeer(let address, let subnet):
                let what = switch try addPeer(address, subnet: subnet) {
                case .added: "peer \(address) added"
                case .promoted: "peer \(address), learned until now, added as a configured peer"
                }
                return .success(ControlChangeReport(applied: [what + (subnet.map { " with subnet \($0)" } ?? "")]))
            case .removePeer(let address):
                let r = try removePeer(address)
                return .success(ControlChangeReport(applied: [
                    "peer \(address) removed, with \(r.entriesRemoved) forwarding entr\(r.entriesRemoved == 1 ? "y" : "ies")",
                ]))
            case .setEntry(let mac, let peer):
                let before = try engine.state.setStaticEntry(mac, peer: peer)
                let was = before.map { $0.isStatic ? " (was a static entry)" : " (was learned)" } ?? ""
                return .success(ControlChangeReport(applied: ["static entry \(mac) -> \(peer) added\(was)"]))
            case .removeEntry(let mac):
                let gone = try engine.state.removeEntry(mac)
                return .success(ControlChangeReport(applied: ["\(gone.isStatic ? "static" : "learned") entry \(mac) removed"]))
            case .reload:
                guard let reloading else {
                    return .failure(ControlChangeRefusal("this ferry was started without --config: there is no file to reload"))
                }
                return reloading(self)
            }
        } catch {
            return .failure(ControlChangeRefusal(error.description))
        }
    }
}
