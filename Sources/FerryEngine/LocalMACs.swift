import Atomics
import FerryWire

/// The local bridge's MACs as the ingress path asks about them, without the forwarding
/// table's lock: a direct-mapped set of atomic words. The table writes it, under its lock,
/// whenever a MAC becomes local or stops being local; any worker reads it. Two MACs that share
/// a slot evict each other, so a local MAC may be missing here (the table still refuses to learn
/// it behind a peer); a MAC here is one the table holds as local, or held until its last
/// removal, which clears it too.
///
/// `@unchecked Sendable`: every word is accessed atomically; `storage` lives as long as the set.
public final class LocalMACs: @unchecked Sendable {
    @usableFromInline let storage: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    @usableFromInline let mask: Int
    @usableFromInline let shift: UInt64

    /// A set of at least `slots` slots (rounded up to a power of two).
    public init(slots: Int) {
        var n = 64
        while n < slots { n <<= 1 }
        storage = .allocate(capacity: n)
        storage.initialize(repeating: UnsafeAtomic<UInt64>.Storage(0), count: n)
        mask = n - 1
        shift = UInt64(64 - n.trailingZeroBitCount)
    }

    deinit {
        storage.deinitialize(count: mask + 1)
        storage.deallocate()
    }

    /// A MAC is 48 bits: bit 63 marks a used word, so that no MAC reads as an empty slot.
    @inlinable @inline(__always)
    static func word(_ mac: MACAddress) -> UInt64 { mac.value | 1 << 63 }

    @inlinable @inline(__always)
    func atom(_ mac: MACAddress) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: storage + Int(truncatingIfNeeded: (mac.value &* 0x9E37_79B9_7F4A_7C15) >> shift))
    }

    /// Whether `mac` is known as a local bridge port's (one relaxed load).
    @inlinable @inline(__always)
    public func contains(_ mac: MACAddress) -> Bool { atom(mac).load(ordering: .relaxed) == Self.word(mac) }

    /// For the forwarding table, under its lock: `mac` is local.
    @inline(__always)
    func insert(_ mac: MACAddress) {
        let a = atom(mac)
        if a.load(ordering: .relaxed) != Self.word(mac) { a.store(Self.word(mac), ordering: .relaxed) }
    }

    /// For the forwarding table, under its lock: `mac` is not local any more.
    func remove(_ mac: MACAddress) {
        let a = atom(mac)
        if a.load(ordering: .relaxed) == Self.word(mac) { a.store(0, ordering: .relaxed) }
    }
}
