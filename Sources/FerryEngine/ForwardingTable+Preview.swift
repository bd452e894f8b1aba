import FerryWire

// Read-only questions for the trace (`ferry ctl trace`): the entry a MAC has, and what
// learning it would do, without changing the table.
extension ForwardingTable {
    /// `mac`'s entry, whatever it is (learned, static, local; aged or not); nil if none.
    public func anyEntry(for mac: MACAddress) -> Entry? {
        slot(of: mac.value).map { values[$0] }
    }

    /// What `learn(mac, peer:, now:)` would return, without learning: the same rules, read
    /// from the same entry. One difference: where `learn` would first sweep out aged entries
    /// (a full table, or a peer at its bound), this counts the aged entries it would sweep out
    /// instead of sweeping (ForwardingTableTests checks that the two agree).
    public func learnPreview(_ mac: MACAddress, peer: Int, now: Int64) -> LearnOutcome {
        if let i = slot(of: mac.value) {
            let e = values[i]
            if e.isStatic { return .staticKept }
            if e.peer == peer { return .refreshed }
            if e.peer == Self.localPort {
                if now - e.lastSeen < ageingSeconds { return .localKept }
                guard wouldHaveRoom(behind: peer, now: now) else { return .peerLimit }
                return .learned
            }
            guard wouldHaveRoom(behind: peer, now: now) else { return .peerLimit }
            return .moved(from: e.peer)
        }
        guard wouldHaveRoom(behind: peer, now: now) else { return .peerLimit }
        guard count + localCount < capacity || count + localCount - agedEntries(now: now) < capacity else { return .full }
        return .learned
    }

    /// `hasRoom(behind:now:)` without its sweep: the aged entries behind `peer` are counted out.
    func wouldHaveRoom(behind peer: Int, now: Int64) -> Bool {
        if peerMACs[peer] < macsPerPeer { return true }
        guard now != lastFullSweep else { return false }
        return peerMACs[peer] - agedEntries(now: now, peer: peer) < macsPerPeer
    }

    /// Entries (learned or local; behind `peer` only, when given) that `expire(now:)` would remove.
    func agedEntries(now: Int64, peer: Int? = nil) -> Int {
        guard now != lastFullSweep else { return 0 }
        var n = 0
        for i in 0...mask where keys[i] != Self.empty && !values[i].isStatic && now - values[i].lastSeen >= ageingSeconds {
            if peer == nil || values[i].peer == peer { n += 1 }
        }
        return n
    }
}
