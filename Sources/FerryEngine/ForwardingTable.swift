import FerryWire

/// The forwarding database: which peer each remote MAC sits behind, learned from the inner
/// source MACs of what peers send (as a bridge learns its ports). Bounded in size; learned
/// entries age out; static entries stay. Not thread-safe by itself: the engine guards it with a
/// lock taken once per batch.
public struct ForwardingTable: Sendable {
    public struct Entry: Sendable, Equatable {
        public var peer: Int
        /// Seconds on the engine's monotonic clock when the MAC was last seen.
        public var lastSeen: Int64
        public var isStatic: Bool
    }

    /// What `learn` did.
    public enum LearnOutcome: Equatable {
        case refreshed, learned, moved(from: Int), full, staticKept
    }

    public let capacity: Int
    public let ageingSeconds: Int64
    public private(set) var entries: [MACAddress: Entry]
    var lastFullSweep = Int64.min

    public init(capacity: Int = 4096, ageingSeconds: Int64 = 300) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.ageingSeconds = ageingSeconds
        entries = [:]
        // Reserved once, so learning in steady state never reallocates.
        entries.reserveCapacity(capacity)
    }

    public var count: Int { entries.count }

    /// The peer behind `mac`, unless unknown or aged out.
    @inlinable
    public func lookup(_ mac: MACAddress, now: Int64) -> Int? {
        guard let e = entries[mac] else { return nil }
        return e.isStatic || now - e.lastSeen < ageingSeconds ? e.peer : nil
    }

    /// Records that `mac` was seen behind `peer` at `now`. A MAC that moves follows its new
    /// peer; a static entry is never overridden; a full table first drops what has aged out.
    @discardableResult
    public mutating func learn(_ mac: MACAddress, peer: Int, now: Int64) -> LearnOutcome {
        if let e = entries[mac] {
            if e.isStatic { return .staticKept }
            entries[mac] = Entry(peer: peer, lastSeen: now, isStatic: false)
            return e.peer == peer ? .refreshed : .moved(from: e.peer)
        }
        if entries.count >= capacity {
            // A full table sweeps at most once a second: under a flood of new MACs, sweeping
            // per packet would cost the whole table each time.
            if now != lastFullSweep {
                lastFullSweep = now
                expire(now: now)
            }
            if entries.count >= capacity { return .full }
        }
        entries[mac] = Entry(peer: peer, lastSeen: now, isStatic: false)
        return .learned
    }

    public mutating func addStatic(_ mac: MACAddress, peer: Int) {
        entries[mac] = Entry(peer: peer, lastSeen: 0, isStatic: true)
    }

    /// Forgets a learned `mac` (it now lives on the local bridge). True if there was one.
    @discardableResult
    public mutating func forget(_ mac: MACAddress) -> Bool {
        guard let e = entries[mac], !e.isStatic else { return false }
        entries[mac] = nil
        return true
    }

    /// Removes learned entries not seen for the ageing time; returns how many.
    @discardableResult
    public mutating func expire(now: Int64) -> Int {
        let before = entries.count
        entries = entries.filter { $0.value.isStatic || now - $0.value.lastSeen < ageingSeconds }
        entries.reserveCapacity(capacity)
        return before - entries.count
    }
}
