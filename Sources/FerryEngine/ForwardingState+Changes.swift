import FerryWire

// The engine's API for change at run time (`ferry ctl peer|fdb`, a reload): configured peers
// added and removed, static forwarding entries set and removed, the ageing time changed. Called
// from the control side, never by a worker; each change is a few stores the workers pick up at
// their next batch (a slot, the count of slots, the table under the lock they take once per
// batch), and nothing is freed that a worker may still hold (`PeerTable+Removal.swift`). The
// per-packet path is not changed by any of it, but for one byte read where a source's peer is
// found (`PeerTable.index(of:)` skips a removed peer's stand-in).

/// Why a change to a running engine was refused: each says what is wrong and what to do.
public enum PeerChangeError: Error, Equatable, Sendable, CustomStringConvertible {
    case alreadyPeer(IPAddress)
    case unknownPeer(IPAddress)
    /// A learned peer (accept-any mode) cannot be removed: its next packet would bring it back.
    case learnedPeer(IPAddress)
    case peerIsLocal(IPAddress)
    case notUnicast(IPAddress)
    case addressFamily(peer: IPAddress, local: IPAddress)
    /// Every slot holds a peer (`maximumPeers`; removed peers' slots are given again a moment
    /// after their removal).
    case tableFull(capacity: Int, waiting: Int)
    case forwardingTableFull(MACAddress)
    case notAnEntry(MACAddress)
    case localMAC(MACAddress)
    case ageing(Int64)

    public var description: String {
        switch self {
        case .alreadyPeer(let a): "\(a) is a peer already"
        case .unknownPeer(let a): "\(a) is not a peer (ferry ctl stats lists them)"
        case .learnedPeer(let a):
            "\(a) is a learned peer (accept-any mode), not a configured one: it leaves by ageing, and removing it would not keep its next packet from making it a peer again"
        case .peerIsLocal(let a): "\(a) is this host's own local address; give another host's"
        case .notUnicast(let a): "\(a) is not a unicast address; give a peer host's underlay address"
        case .addressFamily(let peer, let local):
            "\(peer) and the local address \(local) are of different IP versions; give a peer of the same version"
        case .tableFull(let capacity, let waiting):
            "the peer table is full (\(capacity) slots)"
                + (waiting > 0 ? "; \(waiting) slot(s) of removed peers are given again within a second or two, try again then" : "")
        case .forwardingTableFull(let mac): "the forwarding table has no room for \(mac); raise --fdb-size (needs a restart)"
        case .notAnEntry(let mac): "\(mac) is not in the forwarding table"
        case .localMAC(let mac): "\(mac) is not a unicast MAC; a static entry is for one host's MAC"
        case .ageing(let s): "an ageing time of \(s) s is out of range; give 1 to 604800 seconds"
        }
    }
}

extension ForwardingState {
    /// Seconds before a learned MAC is forgotten and a learned peer retired, now.
    public var ageingSeconds: Int64 { ageing.load(ordering: .relaxed) }

    /// Changes the ageing time: from the next batch, entries and learned peers age by it (an
    /// entry older than a shorter time is gone at once for lookups, and swept out at the next
    /// sweep).
    public func setAgeing(_ seconds: Int64) throws(PeerChangeError) {
        guard (1...604_800).contains(seconds) else { throw .ageing(seconds) }
        ageing.store(seconds, ordering: .relaxed)
        fdb.withLock { $0.ageingSeconds = seconds }
    }

    /// What `addPeer` did.
    public enum PeerAddition: Equatable, Sendable {
        /// A new peer in slot `slot` (a fresh one, or a removed peer's given again).
        case added(slot: Int)
        /// The address was a learned peer (accept-any mode); it is a configured one now, in
        /// the same slot, with what the forwarding table learned behind it.
        case promoted(slot: Int)
    }

    /// Adds a configured peer at `address`, as one given at start: templates for every worker,
    /// its destinations, in floods from every worker's next batch, and let in from then on. (A
    /// GRE link path's next hop is the engine's to look up: `Engine.addPeer`.)
    @discardableResult
    public func addPeer(_ address: IPAddress) throws(PeerChangeError) -> PeerAddition {
        guard address != configuration.local else { throw .peerIsLocal(address) }
        guard address.isIPv6 == configuration.local.isIPv6 else { throw .addressFamily(peer: address, local: configuration.local) }
        guard address.isUnicastHost else { throw .notUnicast(address) }
        let options: TunnelOptions
        do { options = try tunnelOptions(remote: address) } catch { throw .addressFamily(peer: address, local: configuration.local) }
        let peer = Peer(options: options, isLearned: false, workers: workers)
        return try changing.withLock { _ throws(PeerChangeError) -> PeerAddition in
            if let i = peers.index(of: address) {
                guard peers.all[i].isLearned, peers.promote(i, to: peer) else { throw .alreadyPeer(address) }
                return .promoted(slot: i)
            }
            guard let (slot, added, _) = peers.add(peer, baseline: peerCounters), added else {
                throw .tableFull(capacity: peers.capacity, waiting: peers.vacantSlots)
            }
            return .added(slot: slot)
        }
    }

    /// What `removePeer` did.
    public struct PeerRemoval: Equatable, Sendable {
        public var slot: Int
        /// Forwarding entries (static and learned) that pointed at it, removed.
        public var entriesRemoved: Int
    }

    /// Removes the configured peer at `address`: no flood goes to it from every worker's next
    /// batch, no frame is forwarded to it once its forwarding entries are gone (here, static
    /// ones too), packets from it are refused as from an unknown peer (or, in accept-any mode,
    /// make it a learned peer again), and its memory is freed once no worker can hold it.
    /// `settlePeerChanges` finishes the job a moment later.
    @discardableResult
    public func removePeer(_ address: IPAddress) throws(PeerChangeError) -> PeerRemoval {
        try changing.withLock { _ throws(PeerChangeError) -> PeerRemoval in
            switch peers.remove(address) {
            case .unknown: throw .unknownPeer(address)
            case .learned: throw .learnedPeer(address)
            case .removed(let slot):
                // Unicast to it stops with its entries; a worker in the middle of a step may
                // still learn one behind the slot, which the settling sweep removes.
                return PeerRemoval(slot: slot, entriesRemoved: clearEntries(peer: slot))
            }
        }
    }

    /// Finishes removals: the slots of removed peers that every worker has passed are cleared
    /// of the forwarding entries a step in progress at the removal may have learned behind
    /// them, and may then be given again; peers that left their slots and that no worker can
    /// hold are freed. Any thread may call it, as often as it likes (the engine does once a
    /// second); cheap when there is nothing to do.
    public func settlePeerChanges() {
        changing.withLock { _ in
            let slots = peers.quiescentVacancies()
            if !slots.isEmpty {
                for slot in slots { clearEntries(peer: slot) }
                peers.markReady(slots)
            }
            peers.reclaim()
        }
    }

    /// Removes every forwarding entry behind peer slot `peer`, `slotsPerLock` slots of the
    /// table per hold of the workers' lock; returns how many.
    @discardableResult
    func clearEntries(peer: Int, slotsPerLock: Int = ForwardingState.snapshotSlotsPerLock * 4) -> Int {
        let slots = fdb.withLock { $0.slotCount }
        var removed = 0, start = 0
        while start < slots {
            let end = min(slots, start + slotsPerLock)
            removed += fdb.withLock { $0.forget(peer: peer, slots: start..<end) }
            start = end
        }
        return removed
    }

    /// Pins `mac` to the peer at `peer` (a static entry: never aged, never moved by learning);
    /// returns the entry it replaced, if any.
    @discardableResult
    public func setStaticEntry(_ mac: MACAddress, peer: IPAddress) throws(PeerChangeError) -> ForwardingTable.Entry? {
        guard !mac.isMulticast, mac != .zero else { throw .localMAC(mac) }
        return try changing.withLock { _ throws(PeerChangeError) -> ForwardingTable.Entry? in
            guard let p = peers.index(of: peer) else { throw .unknownPeer(peer) }
            return try fdb.withLock { table throws(PeerChangeError) -> ForwardingTable.Entry? in
                let before = table.entry(for: mac)
                guard table.addStatic(mac, peer: p) else { throw .forwardingTableFull(mac) }
                return before
            }
        }
    }

    /// Removes `mac`'s forwarding entry, static or learned; returns it.
    @discardableResult
    public func removeEntry(_ mac: MACAddress) throws(PeerChangeError) -> ForwardingTable.Entry {
        guard let gone = fdb.withLock({ $0.remove(mac) }) else { throw .notAnEntry(mac) }
        return gone
    }

    /// The static entries now, with their peers' addresses.
    public var staticEntries: [(mac: MACAddress, peer: IPAddress)] {
        let addresses = peers.all.map(\.address)
        return forwardingSnapshot().records.filter { $0.ageSeconds == nil && $0.peer < addresses.count }
            .map { (MACAddress(value: $0.mac), addresses[$0.peer]) }
    }
}

extension ForwardingTable {
    /// `mac`'s entry, unless none or local.
    public func entry(for mac: MACAddress) -> Entry? {
        guard let i = slot(of: mac.value), values[i].peer != Self.localPort else { return nil }
        return values[i]
    }
}

extension IPAddress {
    /// Neither multicast, broadcast nor unspecified: one host's address, as a peer's must be.
    var isUnicastHost: Bool {
        switch self {
        case .v4(let a): !a.isMulticast && !a.isUnspecified && a.value != .max
        case .v6(let a): !a.isMulticast && !(a.high == 0 && a.low == 0)
        }
    }
}
