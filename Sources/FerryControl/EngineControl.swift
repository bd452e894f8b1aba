import FerryCapture
import FerryEngine
import FerrySettings
import FerryWire
import Foundation
import Logging

/// Told of every configured peer added or removed at run time (by `ferry ctl` or a reload),
/// after the engine has it: what keeps the host's routes to peers' container subnets in step.
/// Called on the thread that made the change (the control socket's change queue, or a
/// SIGHUP's), one change at a time. What it throws is reported with the change (which stands:
/// the engine has it).
public protocol PeerChangeObserver: AnyObject, Sendable {
    func peerAdded(_ peer: PeerSpec) throws
    func peerRemoved(_ peer: PeerSpec) throws
    /// Whether a peer joining now is routed via its own address instead of tunnelled (`--mode
    /// routes`, or `auto` and on-link); throws when it can be neither (`routes` and not on-link).
    /// Asked before the engine is changed: a peer routed directly never enters it.
    func routesDirectly(_ peer: PeerSpec) throws -> Bool
}

extension PeerChangeObserver {
    public func routesDirectly(_ peer: PeerSpec) throws -> Bool { false }
}

/// What `ferry run` serves on its control socket: the engine's counters and table, and the
/// changes `ferry ctl` asks for, made through the engine's API for change. It remembers each
/// configured peer's container subnet, so that the `PeerChangeObserver` (the host's routes)
/// hears of a removed peer with the subnet it was added with; a reload (`reload(_:)`) compares
/// new settings with what runs and goes through the same `addPeer`/`removePeer`.
///
/// `@unchecked Sendable`: `subnets` and `live` change only under `lock`; the rest is immutable
/// (or, `logLevel`, atomic).
public final class EngineControl: ControlSource, @unchecked Sendable {
    public let engine: any ChangeableEngine
    /// The settings the run started with: what a reload compares a new file's with.
    public let started: RunSettings
    let observer: PeerChangeObserver?
    let logLevel: SharedLogLevel?
    let logger: Logger
    /// Reads the config file again into settings (nil: no file to read, or a refusal's
    /// message: a file that no longer reads or resolves).
    let readSettings: (@Sendable () -> Result<RunSettings, ControlChangeRefusal>)?
    var subnets: [IPAddress: IPPrefix] = [:]
    /// Peers of the settings routed directly, not tunnelled (`--mode routes|auto`, decided at
    /// start): a reload keeps them out of the engine, and drops their routes when they leave.
    var direct: Set<IPAddress>
    /// The statistics log interval in use (a reload changes it).
    var live: (statsInterval: Int, Void)
    let lock = NSLock()
    /// One reload at a time (the control socket's and SIGHUP's).
    let reloading = NSLock()

    /// `routedDirectly`: the peers of `settings` that the set-up routes via their own address
    /// rather than through the tunnel.
    public init(engine: any ChangeableEngine, settings: RunSettings, routedDirectly: [IPAddress] = [],
                observer: PeerChangeObserver? = nil, logLevel: SharedLogLevel? = nil,
                logger: Logger, readSettings: (@Sendable () -> Result<RunSettings, ControlChangeRefusal>)? = nil) {
        self.engine = engine
        direct = Set(routedDirectly)
        started = settings
        self.observer = observer
        self.logLevel = logLevel
        self.logger = logger
        self.readSettings = readSettings
        live = (settings.statsInterval, ())
        for p in settings.layout.peers { if let s = p.subnet { subnets[p.address] = s } }
    }

    public var isStopping: Bool { engine.isStopping }
    public func statistics() -> Statistics { engine.state.statistics(includingBatchTimes: true) }
    public func forwardingSnapshot() -> ForwardingSnapshot { engine.state.forwardingSnapshot() }
    public func attachCapture(point: CapturePoint, filter: PacketFilter?) -> Result<CaptureAttachment, ControlChangeRefusal> {
        engine.state.captures.attachForControl(point: point, filter: filter)
    }
    public func detachCapture(_ capture: CaptureAttachment) -> Int { engine.state.captures.detach(capture) }
    public func capturesSettled(_ version: Int) -> Bool { engine.state.captures.workersHaveSeen(version) }

    /// Seconds between statistics log lines now (0: none).
    public var statsInterval: Int { lock.withLock { live.statsInterval } }

    /// The configured peers now, with the container subnets they were given (those routed
    /// directly too).
    public var peers: [PeerSpec] {
        let addresses = engine.state.peers.configured.map(\.address)
        return lock.withLock { (addresses + direct.sorted()).map { PeerSpec(address: $0, subnet: subnets[$0]) } }
    }

    /// How a peer was added: into the tunnel (the engine's outcome), or routed via its own
    /// address with no tunnel (`--mode routes|auto`: the observer's route is all there is).
    public enum PeerAdded: Equatable, Sendable {
        case tunnelled(ForwardingState.PeerAddition)
        case routedDirectly
    }

    /// Adds a configured peer with its container subnet, and tells the observer; `failed`
    /// gets what the observer could not do. A peer the observer routes directly does not enter
    /// the engine, and a route that cannot be made refuses the change (there is nothing else).
    @discardableResult
    public func addPeer(_ peer: PeerSpec, failed: inout [String]) throws(ControlChangeRefusal) -> PeerAdded {
        if let subnet = peer.subnet { try checkSubnet(subnet, of: peer.address) }
        if let observer {
            let routed: Bool
            do { routed = try observer.routesDirectly(peer) } catch { throw ControlChangeRefusal("\(error)") }
            if routed {
                let known = lock.withLock { direct.contains(peer.address) }
                    || engine.state.peers.configured.contains { $0.address == peer.address }
                guard !known else { throw ControlChangeRefusal("\(peer.address) is a peer already") }
                do { try observer.peerAdded(peer) } catch {
                    throw ControlChangeRefusal("\(peer.address) is routed directly (no tunnel), and its route could not be made: \(error)")
                }
                lock.withLock {
                    direct.insert(peer.address)
                    subnets[peer.address] = peer.subnet
                }
                return .routedDirectly
            }
        }
        let outcome: ForwardingState.PeerAddition
        do { outcome = try engine.addPeer(peer.address) } catch { throw ControlChangeRefusal(error.description) }
        lock.withLock { subnets[peer.address] = peer.subnet }
        tell(&failed) { try $0.peerAdded(peer) }
        return .tunnelled(outcome)
    }

    /// Removes a configured peer, and tells the observer (with the subnet it had); one routed
    /// directly loses its route (nothing in the engine). Returns the forwarding entries removed
    /// with it; nil for a peer routed directly.
    @discardableResult
    public func removePeer(_ address: IPAddress, failed: inout [String]) throws(ControlChangeRefusal) -> Int? {
        if lock.withLock({ direct.remove(address) != nil }) {
            let subnet = lock.withLock { subnets.removeValue(forKey: address) }
            tell(&failed) { try $0.peerRemoved(PeerSpec(address: address, subnet: subnet)) }
            return nil
        }
        let outcome: ForwardingState.PeerRemoval
        do { outcome = try engine.removePeer(address) } catch { throw ControlChangeRefusal(error.description) }
        let subnet = lock.withLock { subnets.removeValue(forKey: address) }
        tell(&failed) { try $0.peerRemoved(PeerSpec(address: address, subnet: subnet)) }
        return outcome.entriesRemoved
    }

    /// Runs `body` with the observer, if any; what it throws goes to `failed` and the log.
    func tell(_ failed: inout [String], _ body: (PeerChangeObserver) throws -> Void) {
        guard let observer else { return }
        do { try body(observer) } catch {
            failed.append("routes: \(error)")
            logger.warning("routes not kept in step: \(error)")
        }
    }

    /// A subnet that overlaps this host's or another peer's would shadow a route.
    func checkSubnet(_ subnet: IPPrefix, of address: IPAddress) throws(ControlChangeRefusal) {
        var others = lock.withLock { subnets.filter { $0.key != address }.map { ("peer \($0.key)", $0.value) } }
        if let own = started.layout.subnet { others.append(("this host", own.prefix)) }
        for (who, other) in others where other.contains(subnet.address) || subnet.contains(other.address) {
            throw ControlChangeRefusal("subnet \(subnet) overlaps \(who)'s (\(other)); give each host a subnet of its own")
        }
    }

    public func perform(_ change: ControlChange) -> Result<ControlChangeReport, ControlChangeRefusal> {
        do throws(ControlChangeRefusal) {
            switch change {
            case .addPeer(let address, let subnet):
                var failed: [String] = []
                let what = switch try addPeer(PeerSpec(address: address, subnet: subnet), failed: &failed) {
                case .tunnelled(.added): "peer \(address) added"
                case .tunnelled(.promoted): "peer \(address), learned until now, added as a configured peer"
                case .routedDirectly: "peer \(address) routed directly (on this host's network: no tunnel)"
                }
                return .success(ControlChangeReport(applied: [what + (subnet.map { " with subnet \($0)" } ?? "")], failed: failed))
            case .removePeer(let address):
                var failed: [String] = []
                let removed = try removePeer(address, failed: &failed)
                return .success(ControlChangeReport(applied: [
                    removed.map { "peer \(address) removed, with \($0) forwarding entr\($0 == 1 ? "y" : "ies")" }
                        ?? "peer \(address) removed (it was routed directly) with its route",
                ], failed: failed))
            case .setEntry(let mac, let peer):
                let before: ForwardingTable.Entry?
                do { before = try engine.state.setStaticEntry(mac, peer: peer) } catch { throw ControlChangeRefusal(error.description) }
                let was = before.map { $0.isStatic ? " (it was a static entry)" : " (it was learned)" } ?? ""
                return .success(ControlChangeReport(applied: ["static entry \(mac) -> \(peer) added\(was)"]))
            case .removeEntry(let mac):
                let gone: ForwardingTable.Entry
                do { gone = try engine.state.removeEntry(mac) } catch { throw ControlChangeRefusal(error.description) }
                return .success(ControlChangeReport(applied: ["\(gone.isStatic ? "static" : "learned") entry \(mac) removed"]))
            case .reload:
                guard let readSettings else {
                    throw ControlChangeRefusal("this ferry was started without --config: there is no file to reload")
                }
                return try .success(reload(readSettings().get()))
            }
        } catch {
            return .failure(error)
        }
    }

    /// Makes what runs what `new` says where that can change live: configured peers and their
    /// subnets (the observer hears of each), static forwarding entries, the ageing time, the log
    /// level and the statistics interval. Every other difference from the settings the run
    /// started with is listed as needing a restart, and left as it runs.
    public func reload(_ new: RunSettings) -> ControlChangeReport {
        reloading.withLock {
            var report = ControlChangeReport()
            report.needsRestart = started.differencesNeedingRestart(new)
            let running = peers
            let wanted = new.layout.peers
            for p in running where !wanted.contains(where: { $0.address == p.address }) {
                do {
                    let removed = try removePeer(p.address, failed: &report.failed)
                    report.applied.append(removed.map { "peer \(p) removed (\($0) forwarding entries with it)" }
                                          ?? "peer \(p) removed (it was routed directly)")
                } catch {
                    report.failed.append("peer \(p) not removed: \(error)")
                }
            }
            for p in wanted {
                guard let now = running.first(where: { $0.address == p.address }) else {
                    do {
                        let added = try addPeer(p, failed: &report.failed)
                        report.applied.append("peer \(p) added" + (added == .routedDirectly ? " (routed directly: no tunnel)" : ""))
                    } catch {
                        report.failed.append("peer \(p) not added: \(error)")
                    }
                    continue
                }
                guard now.subnet != p.subnet else { continue }
                do {
                    if let subnet = p.subnet { try checkSubnet(subnet, of: p.address) }
                    lock.withLock { subnets[p.address] = p.subnet }
                    tell(&report.failed) { observer in
                        try observer.peerRemoved(now)
                        try observer.peerAdded(p)
                    }
                    report.applied.append("peer \(p.address): subnet \(now.subnet?.description ?? "none") -> \(p.subnet?.description ?? "none")")
                } catch {
                    report.failed.append("peer \(p.address): subnet not changed: \(error)")
                }
            }
            // Static entries and ageing (peers are as wanted now: it finds none to change).
            var engineSide = new.engine
            engineSide.peers = engine.state.peers.configured.map(\.address)  // as they are now
            let outcome = engine.apply(engineSide)
            report.applied += outcome.applied
            report.failed += outcome.failed
            report.needsRestart += outcome.needsRestart
            if let logLevel, logLevel.value != new.logLevel {
                report.applied.append("log-level: \(logLevel.value) -> \(new.logLevel)")
                logLevel.value = new.logLevel
            }
            lock.withLock {
                if live.statsInterval != new.statsInterval {
                    report.applied.append("stats-interval: \(live.statsInterval) -> \(new.statsInterval)")
                    live.statsInterval = new.statsInterval
                }
            }
            logger.notice("""
                reload: \(report.applied.isEmpty ? "nothing to change" : report.applied.joined(separator: "; "))\
                \(report.failed.isEmpty ? "" : "; not done: " + report.failed.joined(separator: "; "))\
                \(report.needsRestart.isEmpty ? "" : "; needs a restart (left as it runs): " + report.needsRestart.joined(separator: "; "))
                """)
            return report
        }
    }
}

extension RunSettings {
    /// What differs between these settings (the run's) and `new` outside the engine's
    /// configuration and what a reload changes live, in words: each needs a restart.
    public func differencesNeedingRestart(_ new: RunSettings) -> [String] {
        var out: [String] = []
        func note(_ name: String, _ a: String?, _ b: String?) {
            if a != b { out.append("\(name): \(a ?? "none") -> \(b ?? "none")") }
        }
        note("tap", device.tapName, new.device.tapName)
        note("bridge", device.bridge, new.device.bridge)
        note("persistent", "\(device.persistent)", "\(new.device.persistent)")
        note("mtu", device.mtu.map(String.init), new.device.mtu.map(String.init))
        note("offloads", "\(device.offloads)", "\(new.device.offloads)")
        note("workers", device.workers.map(String.init), new.device.workers.map(String.init))
        note("control", control, new.control)
        note("capture", capture.path, new.capture.path)
        note("capture-point", capture.point.map { "\($0)" }, new.capture.point.map { "\($0)" })
        note("capture-filter", capture.filter, new.capture.filter)
        note("user", user?.name, new.user?.name)
        note("subnet", layout.subnet?.description, new.layout.subnet?.description)
        note("mode", layout.mode.rawValue, new.layout.mode.rawValue)
        note("setup", "\(layout.setup)", "\(new.layout.setup)")
        note("metrics", metrics?.description, new.metrics?.description)
        // Membership: the client, its lease and its watch are made once, at start.
        note("etcd", etcd?.endpoints, new.etcd?.endpoints)
        if let a = etcd, let b = new.etcd {
            note("etcd-prefix", a.prefix, b.prefix)
            note("etcd-ttl", String(a.ttl), String(b.ttl))
            note("subnet-file", a.subnetFile, b.subnetFile)
            if a.access != b.access { out.append("etcd-ca, etcd-cert, etcd-key, etcd-user or etcd-password-file changed") }
        }
        return out
    }
}
