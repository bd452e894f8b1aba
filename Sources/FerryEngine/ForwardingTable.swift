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
        public init(peer: Int, lastSeen: Int64, isStatic: Bool) {
            self.peer = peer
            self.lastSeen = lastSeen
            self.isStatic = isStatic
        }
    }

    /// What `learn` did.
    public enum LearnOutcome: Equatable {
        case refreshed, learned, moved(from: Int), full, staticKept
    }

    public let capacity: Int
    public let ageingSeconds: Int64
    public private(set) var count = 0
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

    public init(capacity: Int = 4096, ageingSeconds: Int64 = 300) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.ageingSeconds = ageingSeconds
        var slots = 8
        while slots < 2 * capacity { slots <<= 1 }
        // Allocated once, so learning in steady state never reallocates.
        keys = Array(repeating: Self.empty, count: slots)
        values = Array(repeating: Entry(peer: 0, lastSeen: 0, isStatic: false), count: slots)
        mask = slots - 1
        shift = UInt64(64 - slots.trailingZeroBitCount)
    }

    /// Every entry, aged or not (for `ferry ctl fdb` and tests; not for the packet path).
    public var entries: [MACAddress: Entry] {
        var all: [MACAddress: Entry] = [:]
        for i in keys.indices where keys[i] != Self.empty { all[MACAddress(value: keys[i])] = values[i] }
        return all
    }

    /// How many slots the table has (twice `capacity` or more): the range `copySlots` reads.
    public var slotCount: Int { mask + 1 }

    /// Appends the entries in slots `range` (clamped to the table) to `into`, as (MAC, entry):
    /// one bounded piece of a table read a piece per lock hold (`ForwardingState.forwardingSnapshot`).
    public func copySlots(_ range: Range<Int>, into out: inout [(mac: UInt64, entry: Entry)]) {
        for i in range.clamped(to: 0..<(mask + 1)) where keys[i] != Self.empty { out.append((keys[i], values[i])) }
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

    /// The peer behind `mac`, unless unknown or aged out.
    @inlinable
    public func lookup(_ mac: MACAddress, now: Int64) -> Int? {
        guard let i = slot(of: mac.value) else { return nil }
        let e = values[i]
        return e.isStatic || now - e.lastSeen < ageingSeconds ? e.peer : nil
    }

    /// Records that `mac` was seen behind `peer` at `now`. A MAC that moves follows its new
    /// peer; a static entry is never overridden; a full table first drops what has aged out.
    @discardableResult
    public mutating func learn(_ mac: MACAddress, peer: Int, now: Int64) -> LearnOutcome {
        if let i = slot(of: mac.value) {
            let e = values[i]
            if e.isStatic { return .staticKept }
            values[i] = Entry(peer: peer, lastSeen: now, isStatic: false)
            return e.peer == peer ? .refreshed : .moved(from: e.peer)
        }
        if count >= capacity {
            // A full table sweeps at most once a second: under a flood of new MACs, sweeping
            // per packet would cost the whole table each time.
            if now != lastFullSweep {
                lastFullSweep = now
                expire(now: now)
            }
            if count >= capacity { return .full }
        }
        insert(mac.value, Entry(peer: peer, lastSeen: now, isStatic: false))
        return .learned
    }

    /// Pins `mac` to `peer`. Static entries may go past `capacity` (learning stops there; statics
    /// are few), but never past what the slots hold: false, and nothing changed, then.
    @discardableResult
    public mutating func addStatic(_ mac: MACAddress, peer: Int) -> Bool {
        let entry = Entry(peer: peer, lastSeen: 0, isStatic: true)
        if let i = slot(of: mac.value) {
            values[i] = entry
            return true
        }
        guard count < 2 * capacity - 1 else { return false }
        insert(mac.value, entry)
        return true
    }

    /// Forgets a learned `mac` (it now lives on the local bridge). True if there was one.
    @discardableResult
    public mutating func forget(_ mac: MACAddress) -> Bool {
        guard let i = slot(of: mac.value), !values[i].isStatic else { return false }
        remove(at: i)
        return true
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

    /// Removes learned entries not seen for the ageing time; returns how many.
    @discardableResult
    public mutating func expire(now: Int64) -> Int {
        var removed = 0, i = 0
        while i <= mask {
            if keys[i] != Self.empty, !values[i].isStatic, now - values[i].lastSeen >= ageingSeconds {
                remove(at: i)
                removed += 1
                continue  // the cluster shifted back: slot i holds another entry now (or none)
            }
            i += 1
        }
        return removed
    }

    /// Removes the learned entries that point at `peer` (it was retired); returns how many.
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
        precondition(count < mask, "forwarding table slots exhausted")
        var i = home(key)
        while keys[i] != Self.empty { i = (i + 1) & mask }
        keys[i] = key
        values[i] = entry
        count += 1
    }

    /// Empties slot `i` and moves back every later member of its cluster that may sit nearer
    /// its home slot (Knuth's algorithm R), so lookups never meet a gap before their key.
    mutating func remove(at slot: Int) {
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
        count -= 1
    }
}
