import FerryWire

/// The forwarding table's live entries at one moment, sorted by MAC, as `ferry ctl fdb` shows
/// them: taken by the control side (`ForwardingState.forwardingSnapshot`) without holding the
/// workers' lock for longer than a bounded piece of the table, and turned into `FDBEntry`
/// values a range at a time, so that a long reply is rendered as its reader takes it.
public struct ForwardingSnapshot: Sendable {
    /// One entry, compact: the MAC, its peer's slot, and its age (nil: static).
    public struct Record: Sendable, Equatable {
        public var mac: UInt64
        public var peer: Int
        public var ageSeconds: Int64?
    }

    /// Live entries (static, or seen within the ageing time), one per MAC, by MAC.
    public let records: [Record]
    /// The peers' addresses by slot, read just after the table.
    public let peerAddresses: [String]

    public var count: Int { records.count }

    /// Records `range` as `ferry ctl fdb` shows them.
    public func entries(_ range: Range<Int>) -> [FDBEntry] {
        records[range.clamped(to: records.indices)].map { r in
            FDBEntry(mac: MACAddress(value: r.mac).description,
                     peer: r.peer < peerAddresses.count ? peerAddresses[r.peer] : "peer \(r.peer)",
                     ageSeconds: r.ageSeconds ?? 0, isStatic: r.ageSeconds == nil)
        }
    }

    /// Every record as `ferry ctl fdb` shows it.
    public func entries() -> [FDBEntry] { entries(records.indices) }
}

extension ForwardingState {
    /// Slots of the forwarding table copied per hold of its lock by `forwardingSnapshot`: a
    /// worker waits at most for this many slots to be read (microseconds), never for the table.
    public static var snapshotSlotsPerLock: Int { 1024 }

    /// The live forwarding entries, copied `slotsPerLock` slots per hold of the lock the workers
    /// take once per batch, so that a table of 2^20 entries never stalls forwarding for the time
    /// a whole copy takes.
    ///
    /// Not one atomic reading: what the workers change between two pieces shows up or not. An
    /// entry learned or refreshed meanwhile may appear with its old or its new age; one removed
    /// may still appear; one moved back into a piece already read (a removal shifts the rest of
    /// its cluster back) may be missing from this snapshot; a peer slot taken over meanwhile
    /// names its new peer. A MAC read twice (moved across the read position) appears once, as
    /// last read. For `ferry ctl fdb`, a table read over a few milliseconds of live traffic.
    public func forwardingSnapshot(slotsPerLock: Int = ForwardingState.snapshotSlotsPerLock) -> ForwardingSnapshot {
        ForwardingSnapshot.reading(slots: fdb.withLock { $0.slotCount }, slotsPerLock: slotsPerLock, now: clock(),
                                   ageing: ageingSeconds,
                                   peerAddresses: { peers.all.map(\.address.description) },
                                   read: { range, out in fdb.withLock { $0.copySlots(range, into: &out) } })
    }
}

extension ForwardingSnapshot {
    /// A snapshot of a table of `slots` slots, read by `read` at most `slotsPerLock` slots a
    /// call, in order (each call one hold of the table's lock); the peers' addresses read after.
    /// Entries aged at `now` are left out; a MAC read twice is kept as last read.
    static func reading(slots: Int, slotsPerLock: Int, now: Int64, ageing: Int64, peerAddresses: () -> [String],
                        read: (Range<Int>, inout [(mac: UInt64, entry: ForwardingTable.Entry)]) -> Void) -> ForwardingSnapshot {
        precondition(slotsPerLock > 0)
        var copied: [(mac: UInt64, entry: ForwardingTable.Entry)] = []
        // Each hold copies into room made before it: no reallocation of the whole while locked.
        var piece: [(mac: UInt64, entry: ForwardingTable.Entry)] = []
        piece.reserveCapacity(min(slots, slotsPerLock))
        var start = 0
        while start < slots {
            let end = min(slots, start + slotsPerLock)
            piece.removeAll(keepingCapacity: true)
            read(start..<end, &piece)
            copied += piece
            start = end
        }
        let addresses = peerAddresses()
        // By MAC, and for one MAC by the order read: the last one read is kept.
        let order = copied.indices.sorted { a, b in
            copied[a].mac != copied[b].mac ? copied[a].mac < copied[b].mac : a < b
        }
        var records: [Record] = []
        records.reserveCapacity(order.count)
        for (k, i) in order.enumerated() {
            if k + 1 < order.count && copied[order[k + 1]].mac == copied[i].mac { continue }
            let e = copied[i].entry
            guard e.isStatic || now - e.lastSeen < ageing else { continue }
            records.append(Record(mac: copied[i].mac, peer: e.peer, ageSeconds: e.isStatic ? nil : now - e.lastSeen))
        }
        return ForwardingSnapshot(records: records, peerAddresses: addresses)
    }
}
