import FerryWire

// Changes to a running engine (`ForwardingState+Changes.swift` does the work), with what the
// engine adds around them: a new peer's GRE link path looked up at once, a line in the log, and
// a new configuration compared with the running one (`apply`), for a reload.
extension Engine {
    /// Adds a configured peer (`ForwardingState.addPeer`); with GRE's link path, its next hop is
    /// looked up within a tenth of a second (until then its packets take the IP path).
    @discardableResult
    public func addPeer(_ address: IPAddress) throws(PeerChangeError) -> ForwardingState.PeerAddition {
        let outcome = try state.addPeer(address)
        if workers[0].transport.hasLinkSender { nextHopsDue.store(true, ordering: .relaxed) }
        switch outcome {
        case .added(let slot): logger.notice("peer \(address) added (slot \(slot))")
        case .promoted(let slot): logger.notice("peer \(address), learned, is a configured peer now (slot \(slot))")
        }
        return outcome
    }

    /// Removes a configured peer (`ForwardingState.removePeer`).
    @discardableResult
    public func removePeer(_ address: IPAddress) throws(PeerChangeError) -> ForwardingState.PeerRemoval {
        let outcome = try state.removePeer(address)
        logger.notice("peer \(address) removed, with \(outcome.entriesRemoved) forwarding entr\(outcome.entriesRemoved == 1 ? "y" : "ies")")
        return outcome
    }

    /// Makes the running engine what `new` says where that can change live
    /// (`ForwardingState.apply`), looking new peers' link paths up at once.
    public func apply(_ new: EngineConfiguration) -> ForwardingState.ConfigurationOutcome {
        let outcome = state.apply(new)
        if !outcome.peersAdded.isEmpty, workers[0].transport.hasLinkSender { nextHopsDue.store(true, ordering: .relaxed) }
        return outcome
    }
}

/// The engine's API for change as the control side uses it: `Engine`, or in tests a stand-in
/// over a `ForwardingState` alone.
public protocol ChangeableEngine: AnyObject, Sendable {
    var state: ForwardingState { get }
    var isStopping: Bool { get }
    func addPeer(_ address: IPAddress) throws(PeerChangeError) -> ForwardingState.PeerAddition
    func removePeer(_ address: IPAddress) throws(PeerChangeError) -> ForwardingState.PeerRemoval
    func apply(_ new: EngineConfiguration) -> ForwardingState.ConfigurationOutcome
}

extension Engine: ChangeableEngine {}

extension ForwardingState {
    /// What `apply` did with a new configuration.
    public struct ConfigurationOutcome: Sendable, Equatable {
        /// Each change made, in words ("peer 10.99.0.3 added").
        public var applied: [String] = []
        /// Each difference that only a restart applies, in words ("vni 42 -> 43").
        public var needsRestart: [String] = []
        /// Each change tried and refused, with why.
        public var failed: [String] = []
        public var peersAdded: [IPAddress] = []
        public var peersRemoved: [IPAddress] = []
        public init() {}
    }

    /// Makes the running engine what `new` says where that can change live: configured peers
    /// (removed first, so that their slots may serve the new ones), static forwarding entries,
    /// the ageing time. Every other difference from the configuration it started with is listed
    /// as needing a restart, and left as it is.
    public func apply(_ new: EngineConfiguration) -> ConfigurationOutcome {
        var out = ConfigurationOutcome()
        out.needsRestart = configuration.differencesNeedingRestart(new)
        let running = peers.configured.map(\.address)
        let wanted = Array(Set(new.peers)).sorted()
        for address in running where !wanted.contains(address) {
            do {
                let r = try removePeer(address)
                out.applied.append("peer \(address) removed (\(r.entriesRemoved) forwarding entries with it)")
                out.peersRemoved.append(address)
            } catch {
                out.failed.append("peer \(address) not removed: \(error)")
            }
        }
        for address in wanted where !running.contains(address) {
            do {
                try addPeer(address)
                out.applied.append("peer \(address) added")
                out.peersAdded.append(address)
            } catch {
                out.failed.append("peer \(address) not added: \(error)")
            }
        }
        let statics = staticEntries
        let now = Dictionary(statics.map { ($0.mac, $0.peer) }, uniquingKeysWith: { a, _ in a })
        let target = Dictionary(new.staticEntries.map { ($0.mac, $0.peer) }, uniquingKeysWith: { _, b in b })
        for (mac, peer) in now.sorted(by: { $0.key < $1.key }) where target[mac] == nil {
            do {
                try removeEntry(mac)
                out.applied.append("static entry \(mac) -> \(peer) removed")
            } catch {
                out.failed.append("static entry \(mac) not removed: \(error)")
            }
        }
        for (mac, peer) in target.sorted(by: { $0.key < $1.key }) where now[mac] != peer {
            do {
                try setStaticEntry(mac, peer: peer)
                out.applied.append("static entry \(mac) -> \(peer) " + (now[mac] == nil ? "added" : "moved from \(now[mac]!)"))
            } catch {
                out.failed.append("static entry \(mac) -> \(peer) not set: \(error)")
            }
        }
        if new.ageingSeconds != ageingSeconds {
            let before = ageingSeconds
            do {
                try setAgeing(new.ageingSeconds)
                out.applied.append("ageing \(before) s -> \(new.ageingSeconds) s")
            } catch {
                out.failed.append("ageing not changed: \(error)")
            }
        }
        return out
    }
}

extension EngineConfiguration {
    /// What differs between this configuration (the one running) and `new`, other than what
    /// `Engine.apply` changes live (peers, static entries, ageing), in words: each needs a restart.
    public func differencesNeedingRestart(_ new: EngineConfiguration) -> [String] {
        var out: [String] = []
        func note<T: Equatable>(_ name: String, _ a: T, _ b: T) {
            if a != b { out.append("\(name): \(a) -> \(b)") }
        }
        note("encapsulation", "\(encapsulation)", "\(new.encapsulation)")
        note("local", local, new.local)
        note("dstport", destinationPort, new.destinationPort)
        note("src-port-range", "\(sourcePortRange)", "\(new.sourcePortRange)")
        note("ttl", ttl, new.ttl)
        note("tos", "\(tos)", "\(new.tos)")
        note("df", "\(dontFragment)", "\(new.dontFragment)")
        note("udp-csum", udpChecksum.map(String.init) ?? "default", new.udpChecksum.map(String.init) ?? "default")
        note("accept-any-peer", acceptAnyPeer, new.acceptAnyPeer)
        note("accept-cidr", acceptPrefixes.map(\.description), new.acceptPrefixes.map(\.description))
        note("max-macs-per-peer", macsPerPeer.map(String.init) ?? "none", new.macsPerPeer.map(String.init) ?? "none")
        note("max-peers", maximumPeers, new.maximumPeers)
        note("fdb-size", fdbCapacity, new.fdbCapacity)
        note("underlay-mtu", underlayMTU.map(String.init) ?? "the interface's", new.underlayMTU.map(String.init) ?? "the interface's")
        note("batch", batchSize, new.batchSize)
        note("gre-path", grePath.rawValue, new.grePath.rawValue)
        return out
    }
}
