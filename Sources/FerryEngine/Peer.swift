import Atomics
import Glibc  // sockaddr constants and types only: system calls go through FerryLinux
import Synchronization
import FerryLinux
import FerryWire

/// A host at the other end of the tunnel: its address, the outer headers built for it, and
/// the socket address the sender aims at.
///
/// `@unchecked Sendable`: template `w` is used by worker `w` only; the link address changes
/// under its seqlock, `linkNextHop` on the next-hop thread only; `counterBaseline` is set
/// before the peer is published; the rest is immutable or atomic.
public final class Peer: @unchecked Sendable {
    public let address: IPAddress
    /// Learned from traffic (accept-any mode) rather than configured.
    public let isLearned: Bool
    /// One per worker (each carries its own IPv4 ID and GRE sequence counters): worker `w`
    /// writes outer headers with `templates[w]` and no other thread touches it.
    public let templates: [EncapsulationTemplate]
    /// The same, unmanaged, so that the packet path borrows one without reference counting.
    @usableFromInline let templateSlots: UnsafeMutablePointer<Unmanaged<EncapsulationTemplate>>
    /// Stable for the peer's life: batches point at it until they are sent.
    public let destination: UnsafeMutablePointer<SocketAddress>
    /// The peer's VXLAN port, for the UDP senders.
    public let udpDestination: UnsafeMutablePointer<SocketAddress>
    /// Where a packet socket sends this peer's packets when the link path is on and the next
    /// hop is resolved: a sockaddr_ll for the next hop's MAC on the output device. One thread
    /// (the engine's next-hop refresher) writes it, with `linkSequence` odd meanwhile; workers
    /// copy it into each message they queue and keep the copy only if the sequence did not move
    /// (a seqlock), so a batch never points at bytes that may change under it.
    @usableFromInline let linkAddress: UnsafeMutablePointer<SocketAddress>
    @usableFromInline let linkSequence = ManagedAtomic<Int>(0)
    /// Whether `linkAddress` holds a next hop (a cheap first test for the workers).
    @usableFromInline let linkActive = ManagedAtomic<Bool>(false)
    /// The next hop `linkAddress` holds, for the refreshing thread only.
    public private(set) var linkNextHop: LinkNextHop?
    /// When a packet from this peer last arrived (the workers' clock, in seconds). A learned
    /// peer silent for the ageing time is retired: no more floods, and its slot may go to
    /// another peer; a packet from it before then brings it back.
    @usableFromInline let lastHeard: ManagedAtomic<Int64>
    @usableFromInline let active = ManagedAtomic<Bool>(true)
    /// The slot's per-peer counters when this peer took it over (a retired peer's slot keeps
    /// counting): statistics subtract them. Set before the peer is published.
    public internal(set) var counterBaseline = [UInt64](repeating: 0, count: PeerCounter.allCases.count)

    public init(options: TunnelOptions, isLearned: Bool, workers: Int = 1, heardAt now: Int64 = 0) {
        precondition(workers >= 1)
        address = options.remote
        self.isLearned = isLearned
        lastHeard = ManagedAtomic(now)
        templates = (0..<workers).map { _ in EncapsulationTemplate(options) }
        if workers > 1 {
            // Each worker its own slice of the IPv4 ID space: two never send one ID together.
            let span = Int(UInt16.max) / workers
            for (w, t) in templates.enumerated() {
                let low = 1 + w * span
                t.useIdentifications(UInt16(low)...UInt16(w == workers - 1 ? Int(UInt16.max) : low + span - 1))
            }
        }
        templateSlots = .allocate(capacity: workers)
        for (w, t) in templates.enumerated() { (templateSlots + w).initialize(to: .passUnretained(t)) }
        destination = .allocate(capacity: 1)
        // Raw header-including sockets take port 0.
        destination.initialize(to: SocketAddress(options.remote, port: 0))
        udpDestination = .allocate(capacity: 1)
        udpDestination.initialize(to: SocketAddress(options.remote, port: options.destinationPort))
        linkAddress = .allocate(capacity: 1)
        linkAddress.initialize(to: SocketAddress(options.remote, port: 0))
    }

    /// Sends go to this peer (configured, or learned and heard from within the ageing time).
    @inlinable public var isActive: Bool { active.load(ordering: .relaxed) }

    /// Notes a packet from this peer at `now`; true if that brought it back from retirement.
    @inlinable @discardableResult
    public func heard(at now: Int64) -> Bool {
        // Sequentially consistent against `retire`: one of the two sees the other (a store at
        // most once a second; the load is a plain one on x86).
        if lastHeard.load(ordering: .relaxed) != now { lastHeard.store(now, ordering: .sequentiallyConsistent) }
        guard !active.load(ordering: .sequentiallyConsistent) else { return false }
        return active.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged
    }

    /// Seconds since this peer was last heard from.
    @inlinable public func silence(at now: Int64) -> Int64 { now - lastHeard.load(ordering: .sequentiallyConsistent) }

    /// Stops sending to this learned peer; false if it was retired already (or came back).
    func retire() -> Bool { active.compareExchange(expected: true, desired: false, ordering: .sequentiallyConsistent).exchanged }

    /// Whether packets for this peer take the link path now.
    @inlinable public var hasLinkDestination: Bool { linkActive.load(ordering: .relaxed) }

    /// Copies the link-layer destination (a sockaddr_ll) to `out`; returns its length, or 0
    /// when there is none (the IP path then).
    @inlinable
    public func copyLinkDestination(to out: UnsafeMutableRawPointer) -> Int {
        while true {
            let before = linkSequence.load(ordering: .acquiring)
            guard before & 1 == 0 else {
                Scheduling.yield()  // being written, and the writer may have been preempted
                continue
            }
            let length = Int(linkAddress.pointee.length)
            out.copyMemory(from: UnsafeRawPointer(linkAddress), byteCount: SocketAddress.linkLength)
            Atomics.atomicMemoryFence(ordering: .acquiring)
            if linkSequence.load(ordering: .relaxed) == before {
                return out.load(as: UInt16.self) == UInt16(AF_PACKET) ? length : 0
            }
        }
    }

    /// The link path's next hop as the workers see it now (nil: the IP path); safe from any
    /// thread, for `ferry ctl`.
    public var linkPath: LinkNextHop? {
        guard hasLinkDestination else { return nil }
        var address = sockaddr_storage()
        let length = withUnsafeMutableBytes(of: &address) { copyLinkDestination(to: $0.baseAddress!) }
        guard length >= SocketAddress.linkLength else { return nil }
        return withUnsafeBytes(of: address) {
            LinkNextHop(interfaceIndex: $0.loadUnaligned(fromByteOffset: 4, as: Int32.self), mac: MACAddress($0, at: 12))
        }
    }

    /// Points the link path at `hop` (nil: back to the IP path). Called by one thread only.
    public func setLinkNextHop(_ hop: LinkNextHop?) {
        guard hop != linkNextHop else { return }
        linkNextHop = hop
        if hop == nil { linkActive.store(false, ordering: .relaxed) }
        linkSequence.wrappingIncrement(ordering: .relaxed)
        Atomics.atomicMemoryFence(ordering: .releasing)
        linkAddress.pointee = hop.map { SocketAddress(link: $0, etherType: address.isIPv6 ? EtherType.ipv6 : EtherType.ipv4) }
            ?? SocketAddress(address, port: 0)
        linkSequence.wrappingIncrement(ordering: .releasing)
        if hop != nil { linkActive.store(true, ordering: .releasing) }
    }

    /// Runs `body` with worker `w`'s template, borrowed.
    @inlinable
    public func withTemplate<R>(_ w: Int, _ body: (EncapsulationTemplate) -> R) -> R {
        templateSlots[w]._withUnsafeGuaranteedRef(body)
    }

    deinit {
        templateSlots.deallocate()
        destination.deallocate()
        udpDestination.deallocate()
        linkAddress.deallocate()
    }
}

/// The peers, in a fixed number of slots: configured ones first, then any learned. Added by
/// the ingress workers (one at a time, under a lock), read by every worker without one: a
/// slot is filled before the count that covers it is published. A slot changes after that only
/// when the table is full and a new peer takes the slot of a retired one; the peer it held is
/// kept alive until the slot is taken again, which is not before `reuseGrace` seconds, so a
/// worker still reading it in the middle of a batch reads a live object. (That grace is time,
/// not a proof: workers hold a peer for one batch, microseconds.)
///
/// `@unchecked Sendable`: `owners`, `departed` and `departedAt` change only under `adding`;
/// slots are written before the count (or a fence) publishes them.
public final class PeerTable: @unchecked Sendable {
    public let capacity: Int
    /// Unmanaged, so that the per-packet path reads a peer without a retain and release; the
    /// table owns each peer through `owners` for as long as it lives.
    @usableFromInline let slots: UnsafeMutablePointer<Unmanaged<Peer>?>
    @usableFromInline let published = ManagedAtomic<Int>(0)
    var owners: [Peer] = []
    /// Per slot, the peer that last left it for another, and when (the workers' clock).
    var departed: [Peer?]
    var departedAt: [Int64]
    /// Seconds a slot keeps a peer that left it before the slot can be given again.
    public static var reuseGrace: Int64 { 10 }
    let adding = Mutex<Void>(())

    public init(capacity: Int) {
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: nil, count: capacity)
        departed = Array(repeating: nil, count: capacity)
        departedAt = Array(repeating: .min, count: capacity)
    }

    deinit {
        slots.deinitialize(count: capacity)
        slots.deallocate()
    }

    /// Peers visible now.
    @inlinable public var count: Int { published.load(ordering: .acquiring) }

    @inlinable public subscript(_ i: Int) -> Peer { slots[i]!.takeUnretainedValue() }

    /// Runs `body` with peer `i`, borrowed: no reference counting on the packet path.
    @inlinable
    public func withPeer<R>(_ i: Int, _ body: (Peer) -> R) -> R {
        slots[i].unsafelyUnwrapped._withUnsafeGuaranteedRef(body)
    }

    /// The index of the peer at `address`, if any.
    @inlinable
    public func index(of address: IPAddress) -> Int? {
        let n = count
        for i in 0..<n where slots[i].unsafelyUnwrapped._withUnsafeGuaranteedRef({ $0.address == address }) { return i }
        return nil
    }

    /// Adds a peer, or finds the one already at its address (two workers may learn the same
    /// peer at once: `added` is true for the one that did). When the table is full, the peer
    /// takes the slot of the retired one silent longest (`reused`), whose slot's counters
    /// `baseline` reads, at `now`; nil when no slot may be given.
    @discardableResult
    public func add(_ peer: Peer, now: Int64 = 0,
                    baseline: (Int) -> [UInt64] = { _ in [UInt64](repeating: 0, count: PeerCounter.allCases.count) })
        -> (index: Int, added: Bool, reused: Bool)? {
        adding.withLock { _ in
            if let existing = index(of: peer.address) { return (existing, false, false) }
            let n = published.load(ordering: .relaxed)
            guard n < capacity else {
                let candidates = (0..<n).filter {
                    owners[$0].isLearned && !owners[$0].isActive && (departedAt[$0] == .min || now - departedAt[$0] >= Self.reuseGrace)
                }.sorted { owners[$0].lastHeard.load(ordering: .relaxed) < owners[$1].lastHeard.load(ordering: .relaxed) }
                for slot in candidates {
                    // Claimed as a packet from it would (a worker may be bringing it back now:
                    // then the next slot is looked at).
                    guard owners[slot].active.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged
                    else { continue }
                    retiredCount.wrappingDecrement(ordering: .relaxed)
                    peer.counterBaseline = baseline(slot)
                    departed[slot] = owners[slot]
                    departedAt[slot] = now
                    owners[slot] = peer
                    Atomics.atomicMemoryFence(ordering: .releasing)
                    slots[slot] = Unmanaged.passUnretained(peer)
                    return (slot, true, true)
                }
                return nil
            }
            owners.append(peer)
            slots[n] = Unmanaged.passUnretained(peer)
            published.store(n + 1, ordering: .releasing)
            return (n, true, false)
        }
    }

    /// Learned peers retired and not yet back or replaced.
    @usableFromInline let retiredCount = ManagedAtomic<Int>(0)

    /// No room for another peer, not even in a retired one's slot.
    @inlinable public var isFull: Bool { count >= capacity && retiredCount.load(ordering: .relaxed) == 0 }

    /// Retires learned peer `i` if it is active and still silent for `ageing` seconds at
    /// `now`; true if it did.
    public func retire(_ i: Int, now: Int64, ageing: Int64) -> Bool {
        adding.withLock { _ in
            guard i < count, owners[i].isLearned, owners[i].retire() else { return false }
            if owners[i].silence(at: now) < ageing {
                // Heard from between the caller's look and the retirement: undo it — unless
                // that packet already brought it back, counting a retirement never counted.
                if !owners[i].active.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged {
                    retiredCount.wrappingIncrement(ordering: .relaxed)
                }
                return false
            }
            retiredCount.wrappingIncrement(ordering: .relaxed)
            return true
        }
    }

    /// Notes a packet from peer `i` at `now`, bringing it back if it was retired (true then).
    @inlinable @discardableResult
    public func heard(_ i: Int, at now: Int64) -> Bool {
        guard withPeer(i, { $0.heard(at: now) }) else { return false }
        retiredCount.wrappingDecrement(ordering: .relaxed)
        return true
    }

    public var all: [Peer] { (0..<count).map { self[$0] } }
}
