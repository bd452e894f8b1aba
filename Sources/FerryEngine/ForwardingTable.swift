import FerryWire

/// The forwarding database: which peer each remote MAC sits behind, learned from the inner
/// source MACs of what peers send (as a bridge learns its ports). Bounded in size; learned
/// entries age out; static entries stay. Not thread-safe by itself: the engine guards it with a
/// lock taken once per batch.
///
/// It also knows the local bridge's MACs: the source of every frame the TAP hands over is
/// recorded as local (`noteLocal`), and a MAC known as local is never learned behind a peer,
/// whoever claims it. Local entries age as learned ones do: a container silent for the ageing
/// time is no longer known as local, and a peer may then claim its MAC until it speaks again
/// (which brings it home). They share the learned entries' bound, are never a lookup's answer
/// (frames for them flood, as before), and are not listed in `entries` nor counted in `count`.
/// `localMACs` mirrors them for readers that do not take the lock.
///
/// Each peer may hold at most `macsPerPeer` learned entries; the count per peer is kept here,
/// under the same lock, by every insertion, move and removal.
public struct ForwardingTable: Sendable {
    public struct Entry: Sendable, Equatable {
        public var peer: Int
        /// Seconds on the engine's monotonic clock when the MAC was last seen.
        public var lastSeen: Int64
        public var isStatic: Bool
        public init(peer: Int, lastSeen: Int64, isStatic: Bool) {
            self.peer = peer
            self.lastSeen = lastSeen
            self.isStatic = isStatic
        }
    }

    /// What `learn` did. `peerLimit`: the peer already holds `macsPerPeer` MACs (the entry,
    /// if any, stays where it was); `localKept`: the MAC is a local bridge port's.
    public enum LearnOutcome: Equatable {
        case refreshed, learned, moved(from: Int), full, staticKept, peerLimit, localKept
    }

    /// What `noteLocal` did with a source seen on the local bridge.
    public enum LocalOutcome: Equatable {
        /// Known as local already (or pinned by a static entry, which stays).
        case known
        /// Recorded as local now.
        case recorded
        /// It was learned behind a peer: it came home, and is local now.
        case movedHome
        /// No room to record it.
        case full
    }

    /// The `peer` of a local entry.
    public static var localPort: Int { -1 }

    public let capacity: Int
    /// Changed at run time by `ForwardingState.setAgeing` (under the workers' lock, so each
    /// batch sees one value).
    public internal(set) var ageingSeconds: Int64
    /// Most learned MACs behind one peer.
    public let macsPerPeer: Int
    /// Learned and static entries (local ones are not counted here).
    public private(set) var count = 0
    /// Entries of the local bridge's MACs.
    public private(set) var localCount = 0
    /// Learned entries per peer slot.
    var peerMACs: [Int]
    /// The local entries' MACs, readable without the lock (shared by copies of the table).
    public let localMACs: LocalMACs
    var lastFullSweep = Int64.min

    // Open addressing with linear probing over a power-of-two number of slots, at most half
    // full; a removal shifts the rest of its cluster back, so there are no tombstones. A MAC
    // is 48 bits: the key `empty` marks a free slot. (A Dictionary hashes each MAC with
    // SipHash; this is one multiply, on the per-frame path of every batch.)
    @usableFromInline var keys: [UInt64]
    @usableFromInline var values: [Entry]
    @usableFromInline let mask: Int
    @usableFromInline let shift: UInt64
    @usableFromInline static var empty: UInt64 { .max }

    /// `peers`: how many peer slots there are (the engine's `maximumPeers`).
    public init(capacity: Int = 4096, ageingSeconds: Int64 = 300, peers: Int = 256, macsPerPeer: Int = .max) {
        precondition(capacity > 0 && peers > 0 && macsPerPeer > 0)
        self.capacity = capacity
        self.ageingSeconds = ageingSeconds
        self.macsPerPeer = macsPerPeer
        peerMACs = Array(repeating: 0, count: peers)
        localMACs = LocalMACs(slots: min(4 * capacity, 1 << 16))
        var slots = 8
        while slots < 2 * capacity { slots <<= 1 }
        // Allocated once, so learning in steady state never reallocates.
        keys = Array(repeating: Self.empty, count: slots)
        values = Array(repeating: Entry(peer: 0, lastSeen: 0, isStatic: false), count: slots)
        mask = slots - 1
        shift = UInt64(64 - slots.trailingZeroBitCount)
    }

    /// Every entry, aged or not, but the local ones (for `ferry ctl fdb` and tests; not for the
    /// packet path).
    public var entries: [MACAddress: Entry] {
        var all: [MACAddress: Entry] = [:]
        for i in keys.indices where keys[i] != Self.empty && values[i].peer != Self.localPort {
            all[MACAddress(value: keys[i])] = values[i]
        }
        return all
    }

    /// The local bridge's MACs, aged or not, with when each was last seen.
    public var localEntries: [MACAddress: Int64] {
        var all: [MACAddress: Int64] = [:]
        for i in keys.indices where keys[i] != Self.empty && values[i].peer == Self.localPort {
            all[MACAddress(value: keys[i])] = values[i].lastSeen
        }
        return all
    }

    /// Learned MACs behind peer slot `peer` now (aged ones too, until they are swept out).
    public func macCount(peer: Int) -> Int { peerMACs[peer] }

    /// How many slots the table has (twice `capacity` or more): the range `copySlots` reads.
    public var slotCount: Int { mask + 1 }

    /// Appends the entries (but the local ones) in slots `range` (clamped to the table) to `into`, as (MAC, entry):
    /// one bounded piece of a table read a piece per lock hold (`ForwardingState.forwardingSnapshot`).
    public func copySlots(_ range: Range<Int>, into out: inout [(mac: UInt64, entry: Entry)]) {
        for i in range.clamped(to: 0..<(mask + 1)) where keys[i] != Self.empty && values[i].peer != Self.localPort { out.append((keys[i], values[i])) }
    }

    /// Fibonacci hashing: the top bits of the key times 2^64/φ.
    @inlinable @inline(__always)
    func home(_ key: UInt64) -> Int { Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift) }

    /// The slot holding `key`, or nil.
    @inlinable @inline(__always)
    func slot(of key: UInt64) -> Int? {
        var i = home(key)
        while true {
            let k = keys[i]
            if k == key { return i }
            if k == Self.empty { return nil }
            i = (i + 1) & mask
        }
    }

    /// The peer behind `mac`, unless unknown, local or aged out.
    @inlinable
    public func lookup(_ mac: MACAddress, now: Int64) -> Int? {
        guard let i = slot(of: mac.value) else { return nil }
        let e = values[i]
        return e.peer >= 0 && (e.isStatic || now - e.lastSeen < ageingSeconds) ? e.peer : nil
    }

    /// Records that `mac` was seen behind `peer` at `now`. A MAC that moves follows its new
    /// peer, unless that peer holds `macsPerPeer` already; a static entry is never overridden,
    /// nor a local one that has not aged out; a full table first drops what has aged out.
    @discardableResult
    public mutating func learn(_ mac: MACAddress, peer: Int, now: Int64) -> LearnOutcome {
        if let i = slot(of: mac.value) {
            let e = values[i]
            if e.isStatic { return .staticKept }
            if e.peer == peer {
                values[i].lastSeen = now
                return .refreshed
            }
            if e.peer == Self.localPort {
                if now - e.lastSeen < ageingSeconds { return .localKept }
                // Aged out: no longer known as local; the peer may have it.
                guard hasRoom(behind: peer, now: now) else { return .peerLimit }
                localMACs.remove(mac)
                localCount -= 1
                count += 1
                peerMACs[peer] += 1
                values[i] = Entry(peer: peer, lastSeen: now, isStatic: false)
                return .learned
            }
            guard hasRoom(behind: peer, now: now) else { return .peerLimit }
            peerMACs[e.peer] -= 1
            peerMACs[peer] += 1
            values[i] = Entry(peer: peer, lastSeen: now, isStatic: false)
            return .moved(from: e.peer)
        }
        guard hasRoom(behind: peer, now: now) else { return .peerLimit }
        guard hasRoom(now: now) else { return .full }
        insert(mac.value, Entry(peer: peer, lastSeen: now, isStatic: false))
        return .learned
    }

    /// Records that `mac` sent from the local bridge at `now` (a frame the TAP handed over):
    /// it is local from now on, and leaves the peer it was learned behind, if any. A static
    /// entry stays as it is.
    @inline(__always) @discardableResult
    public mutating func noteLocal(_ mac: MACAddress, now: Int64) -> LocalOutcome {
        if let i = slot(of: mac.value) {
            let e = values[i]
            if e.peer == Self.localPort {
                // One store a second per MAC at most: the egress path runs this per frame.
                if e.lastSeen != now {
                    values[i].lastSeen = now
                    localMACs.insert(mac)  // back, if another MAC evicted it
                }
                return .known
            }
            if e.isStatic { return .known }
            peerMACs[e.peer] -= 1
            count -= 1
            localCount += 1
            values[i] = Entry(peer: Self.localPort, lastSeen: now, isStatic: false)
            localMACs.insert(mac)
            return .movedHome
        }
        guard hasRoom(now: now) else { return .full }
        insert(mac.value, Entry(peer: Self.localPort, lastSeen: now, isStatic: false))
        localMACs.insert(mac)
        return .recorded
    }

    /// Whether a learned or local entry fits; a full table first drops what has aged out.
    mutating func hasRoom(now: Int64) -> Bool {
        if count + localCount < capacity { return true }
        sweepAtMostOnceASecond(now: now)
        return count + localCount < capacity
    }

    /// Whether `peer` may have one more MAC; one at its bound first drops what has aged out.
    @inline(__always)
    mutating func hasRoom(behind peer: Int, now: Int64) -> Bool {
        if peerMACs[peer] < macsPerPeer { return true }
        sweepAtMostOnceASecond(now: now)
        return peerMACs[peer] < macsPerPeer
    }

    /// Under a flood of new MACs into a full table (or from a peer at its bound), sweeping per
    /// packet would cost the whole table each time.
    mutating func sweepAtMostOnceASecond(now: Int64) {
        guard now != lastFullSweep else { return }
        lastFullSweep = now
        expire(now: now)
    }

    /// Pins `mac` to `peer`. Static entries may go past `capacity` (learning stops there; statics
    /// are few), but never past what the slots hold: false, and nothing changed, then.
    @discardableResult
    public mutating func addStatic(_ mac: MACAddress, peer: Int) -> Bool {
        let entry = Entry(peer: peer, lastSeen: 0, isStatic: true)
        if let i = slot(of: mac.value) {
            let e = values[i]
            if e.peer == Self.localPort {
                localMACs.remove(mac)
                localCount -= 1
                count += 1
            } else if !e.isStatic {
                peerMACs[e.peer] -= 1
            }
            values[i] = entry
            return true
        }
        guard count + localCount < 2 * capacity - 1 else { return false }
        insert(mac.value, entry)
        return true
    }

    /// Forgets a learned or local `mac`. True if there was one.
    @discardableResult
    public mutating func forget(_ mac: MACAddress) -> Bool {
        guard let i = slot(of: mac.value), !values[i].isStatic else { return false }
        remove(at: i)
        return true
    }

    /// Removes `mac`'s entry, static or learned (not a local one); returns it, nil if there
    /// was none.
    public mutating func remove(_ mac: MACAddress) -> Entry? {
        guard let i = slot(of: mac.value), values[i].peer != Self.localPort else { return nil }
        let gone = values[i]
        remove(at: i)
        return gone
    }

    /// Removes every entry behind `peer`, static ones too, in slots `range` (clamped to the
    /// table): one bounded piece of a removal done a piece per hold of the workers' lock
    /// (`ForwardingState.clearEntries`). Returns how many. An entry moved back into a piece
    /// already swept (a removal elsewhere shifts its cluster) is missed: sweep again.
    public mutating func forget(peer: Int, slots range: Range<Int>) -> Int {
        var removed = 0
        var i = range.lowerBound
        let end = min(range.upperBound, mask + 1)
        while i < end {
            if keys[i] != Self.empty, values[i].peer == peer {
                remove(at: i)
                removed += 1
                continue  // as in `expire`: slot i holds another entry now (or none)
            }
            i += 1
        }
        return removed
    }

    /// When the table was last swept by `expireIfDue`: one sweep per interval, whichever
    /// worker's batch comes first.
    var lastExpiry: Int64 = 0
    public static var expiryInterval: Int64 { 10 }

    /// Sweeps out aged entries if `expiryInterval` seconds have passed since the last sweep.
    public mutating func expireIfDue(now: Int64) -> Int {
        guard now - lastExpiry >= Self.expiryInterval else { return 0 }
        lastExpiry = now
        return expire(now: now)
    }

    /// Removes learned and local entries not seen for the ageing time; returns how many learned
    /// ones.
    @discardableResult
    public mutating func expire(now: Int64) -> Int {
        var removed = 0, i = 0
        while i <= mask {
            if keys[i] != Self.empty, !values[i].isStatic, now - values[i].lastSeen >= ageingSeconds {
                if values[i].peer != Self.localPort { removed += 1 }
                remove(at: i)
                continue  // the cluster shifted back: slot i holds another entry now (or none)
            }
            i += 1
        }
        return removed
    }

    /// Removes the learned entries that point at `peer` (it was retired, or its slot given to
    /// another); returns how many.
    @discardableResult
    public mutating func forget(peer: Int) -> Int {
        var removed = 0, i = 0
        while i <= mask {
            if keys[i] != Self.empty, !values[i].isStatic, values[i].peer == peer {
                remove(at: i)
                removed += 1
                continue  // as in `expire`
            }
            i += 1
        }
        return removed
    }

    /// Adds a key known to be absent. Learning stops at `capacity` and `addStatic` below twice
    /// that, and there are at least twice as many slots, so a free slot is always found.
    mutating func insert(_ key: UInt64, _ entry: Entry) {
        precondition(count + localCount < mask, "forwarding table slots exhausted")
        var i = home(key)
        while keys[i] != Self.empty { i = (i + 1) & mask }
        keys[i] = key
        values[i] = entry
        if entry.peer == Self.localPort {
            localCount += 1
        } else {
            count += 1
            if !entry.isStatic { peerMACs[entry.peer] += 1 }
        }
    }

    /// Empties slot `i` and moves back every later member of its cluster that may sit nearer
    /// its home slot (Knuth's algorithm R), so lookups never meet a gap before their key.
    mutating func remove(at slot: Int) {
        let gone = values[slot]
        if gone.peer == Self.localPort {
            localMACs.remove(MACAddress(value: keys[slot]))
            localCount -= 1
        } else {
            count -= 1
            if !gone.isStatic { peerMACs[gone.peer] -= 1 }
        }
        var hole = slot, j = slot
        while true {
            j = (j + 1) & mask
            if keys[j] == Self.empty { break }
            let h = home(keys[j])
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j)
            if !stays {
                keys[hole] = keys[j]
                values[hole] = values[j]
                hole = j
            }
        }
        keys[hole] = Self.empty
    }
}
