import Atomics
import Glibc  // sockaddr constants and types only: system calls go through FerryLinux
import Synchronization
import FerryLinux
import FerryWire

/// A host at the other end of the tunnel: its address, the outer headers built for it, and
/// the socket address the sender aims at.
///
/// `@unchecked Sendable`: template `w` is used by worker `w` only; the link address is atomic
/// words under its seqlock, `linkNextHop` is for the next-hop thread only; `counterBaseline` is
/// set before the peer is published; the rest is immutable or atomic. Its memory (the
/// destinations batches point at) lives as long as the peer, which `PeerTable` keeps alive
/// until no worker can hold it.
public final class Peer: @unchecked Sendable {
    public let address: IPAddress
    /// Learned from traffic (accept-any mode) rather than configured.
    public let isLearned: Bool
    /// A stand-in for a configured peer removed at run time (`PeerTable.remove`): it holds the
    /// slot, inactive, until the slot may be given again. No lookup finds it (`PeerTable.index`),
    /// no packet brings it back (`heard`), statistics leave it out; a worker that took the slot's
    /// index before the removal still sends to the removed address through it (its templates
    /// are the removed peer's), for the rest of that step.
    public let isVacant: Bool
    /// One per worker (each carries its own IPv4 ID and GRE sequence counters): worker `w`
    /// writes outer headers with `templates[w]` and no other thread touches it.
    public let templates: [EncapsulationTemplate]
    /// The same, unmanaged, so that the packet path borrows one without reference counting.
    @usableFromInline let templateSlots: UnsafeMutablePointer<Unmanaged<EncapsulationTemplate>>
    /// Stable for the peer's life: batches point at it until they are sent (within the step).
    public let destination: UnsafeMutablePointer<SocketAddress>
    /// The peer's VXLAN port, for the UDP senders.
    public let udpDestination: UnsafeMutablePointer<SocketAddress>
    /// Where a packet socket sends this peer's packets when the link path is on and the next
    /// hop is resolved: the first `SocketAddress.linkLength` bytes of a sockaddr_ll for the
    /// next hop's MAC on the output device, as `linkWordCount` atomic words (all zero: none).
    /// One thread (the engine's next-hop refresher) writes them, relaxed, with `linkSequence`
    /// odd meanwhile; workers read them relaxed between two reads of the sequence and keep
    /// what they read only if it did not move (a seqlock with atomic data, so no access races
    /// and a torn copy is never used).
    @usableFromInline let linkWords: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    @usableFromInline static var linkWordCount: Int { 3 }
    @usableFromInline let linkSequence = ManagedAtomic<Int>(0)
    /// Whether `linkWords` hold a next hop (a cheap first test for the workers).
    @usableFromInline let linkActive = ManagedAtomic<Bool>(false)
    /// The next hop `linkWords` hold, for the refreshing thread only.
    public private(set) var linkNextHop: LinkNextHop?
    /// When a packet from this peer last arrived (the workers' clock, in seconds). A learned
    /// peer silent for the ageing time is retired: no more floods, and its slot may go to
    /// another peer; a packet from it before then brings it back.
    @usableFromInline let lastHeard: ManagedAtomic<Int64>
    @usableFromInline let active: ManagedAtomic<Bool>
    /// The slot's per-peer counters when this peer took it over (a retired peer's slot keeps
    /// counting): statistics subtract them. Set before the peer is published.
    public internal(set) var counterBaseline = [UInt64](repeating: 0, count: PeerCounter.allCases.count)

    public init(options: TunnelOptions, isLearned: Bool, workers: Int = 1, heardAt now: Int64 = 0) {
        precondition(workers >= 1)
        address = options.remote
        self.isLearned = isLearned
        isVacant = false
        active = ManagedAtomic(true)
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
        linkWords = .allocate(capacity: Self.linkWordCount)
        linkWords.initialize(repeating: UnsafeAtomic<UInt64>.Storage(0), count: Self.linkWordCount)
    }

    /// The stand-in for `peer`, removed (`isVacant`): inactive, with `peer`'s address and
    /// templates (shared: worker `w` alone uses template `w`, through either), destinations of
    /// its own, and no link path.
    init(vacating peer: Peer) {
        address = peer.address
        isLearned = false
        isVacant = true
        active = ManagedAtomic(false)
        lastHeard = ManagedAtomic(peer.lastHeard.load(ordering: .relaxed))
        templates = peer.templates
        templateSlots = .allocate(capacity: templates.count)
        for (w, t) in templates.enumerated() { (templateSlots + w).initialize(to: .passUnretained(t)) }
        destination = .allocate(capacity: 1)
        destination.initialize(to: peer.destination.pointee)
        udpDestination = .allocate(capacity: 1)
        udpDestination.initialize(to: peer.udpDestination.pointee)
        linkWords = .allocate(capacity: Self.linkWordCount)
        linkWords.initialize(repeating: UnsafeAtomic<UInt64>.Storage(0), count: Self.linkWordCount)
        counterBaseline = peer.counterBaseline
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
        // A stand-in stays out (a worker may still hold its slot's index from before the removal).
        guard !isVacant else { return false }
        return active.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged
    }

    /// Seconds since this peer was last heard from.
    @inlinable public func silence(at now: Int64) -> Int64 { now - lastHeard.load(ordering: .sequentiallyConsistent) }

    /// Stops sending to this learned peer; false if it was retired already (or came back).
    func retire() -> Bool { active.compareExchange(expected: true, desired: false, ordering: .sequentiallyConsistent).exchanged }

    /// Whether packets for this peer take the link path now.
    @inlinable public var hasLinkDestination: Bool { linkActive.load(ordering: .relaxed) }

    @inlinable func linkWord(_ k: Int) -> UnsafeAtomic<UInt64> { UnsafeAtomic(at: linkWords + k) }

    /// Copies the link-layer destination (a sockaddr_ll, `SocketAddress.linkLength` bytes) to
    /// `out`; returns its length, or 0 when there is none (the IP path then; `out` is left
    /// alone).
    @inlinable
    public func copyLinkDestination(to out: UnsafeMutableRawPointer) -> Int {
        while true {
            let before = linkSequence.load(ordering: .acquiring)
            guard before & 1 == 0 else {
                Scheduling.yield()  // being written, and the writer may have been preempted
                continue
            }
            let w0 = linkWord(0).load(ordering: .relaxed)
            let w1 = linkWord(1).load(ordering: .relaxed)
            let w2 = linkWord(2).load(ordering: .relaxed)
            // The data loads may not move below the second look at the sequence.
            Atomics.atomicMemoryFence(ordering: .acquiring)
            guard linkSequence.load(ordering: .relaxed) == before else { continue }
            // sll_family is the first two bytes (little-endian words, as the writer made them).
            guard UInt16(truncatingIfNeeded: w0) == UInt16(AF_PACKET) else { return 0 }
            out.storeBytes(of: w0, toByteOffset: 0, as: UInt64.self)
            out.storeBytes(of: w1, toByteOffset: 8, as: UInt64.self)
            out.storeBytes(of: UInt32(truncatingIfNeeded: w2), toByteOffset: 16, as: UInt32.self)
            return SocketAddress.linkLength
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
        // The new words, from the sockaddr_ll's bytes (zero: none).
        var words = (UInt64(0), UInt64(0), UInt64(0))
        if let hop {
            var link = SocketAddress(link: hop, etherType: address.isIPv6 ? EtherType.ipv6 : EtherType.ipv4)
            withUnsafeMutableBytes(of: &words) { w in
                withUnsafeBytes(of: &link.storage) { w.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<SocketAddress.linkLength])) }
            }
        } else {
            linkActive.store(false, ordering: .relaxed)
        }
        // Seqlock writer: odd, then (release fence) the data, then even with release.
        let odd = linkSequence.load(ordering: .relaxed) &+ 1
        linkSequence.store(odd, ordering: .relaxed)
        Atomics.atomicMemoryFence(ordering: .releasing)
        linkWord(0).store(words.0, ordering: .relaxed)
        linkWord(1).store(words.1, ordering: .relaxed)
        linkWord(2).store(words.2, ordering: .relaxed)
        linkSequence.store(odd &+ 1, ordering: .releasing)
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
        linkWords.deallocate()
    }
}

/// The peers, in a fixed number of slots: configured ones first, then any learned. Added by
/// the ingress workers (one at a time, under a lock), read by every worker without one: a
/// slot is filled (a release store) before the count that covers it is published, and workers
/// load slots with acquire. A slot changes after that only when the table is full and a new
/// peer takes the slot of a retired one, at once.
///
/// Memory safety by quiescent-state-based reclamation (QSBR): workers borrow peers without
/// reference counting, for one step at most (every batch is sent before the step ends), and
/// announce at the top of each step that they hold none (`passQuiescentPoint`: the global
/// epoch, stored with release in the worker's own cache line). A peer that leaves its slot
/// goes on a retire list with the epoch its leaving began (the epoch is bumped after the
/// slot's store), and its last strong reference is dropped only once every worker has
/// announced that epoch or a later one: having read that epoch (acquire), a worker reads the
/// new slot, and whatever it did with the old peer before its announcement happens before the
/// reclaimer's acquiring load of it, so before the free. A worker waiting in poll counts as
/// quiescent (`goOffline`; it comes back through a sequentially consistent fence, against the
/// one after each bump, so that it cannot both be skipped as offline and read the old slot).
/// A worker stopped (SIGSTOP, a VM pause, a blocked write) in the middle of a step holds
/// reclamation back, not the slot: memory waits, correctness does not.
///
/// Threads other than the workers (statistics, the control socket, the next-hop refresher)
/// read peers through `subscript`/`all`, which take the lock and return strong references.
///
/// `@unchecked Sendable`: `owners` and `retired` change only under `adding`; slots and
/// epochs are atomics.
public final class PeerTable: @unchecked Sendable {
    public let capacity: Int
    /// How many workers borrow peers (each announces its quiescent points in its own word).
    public let workers: Int
    /// Unmanaged, so that the per-packet path reads a peer without a retain and release; the
    /// table owns each peer through `owners` for as long as it holds a slot, then through
    /// `retired` until no worker can hold it.
    @usableFromInline let slots: UnsafeMutablePointer<UnsafeAtomic<Unmanaged<Peer>?>.Storage>
    @usableFromInline let published = ManagedAtomic<Int>(0)
    var owners: [Peer] = []
    /// Peers that left a slot, with the epoch each must be seen by every worker before it is
    /// freed; oldest first.
    var retired: [(peer: Peer, epoch: UInt64)] = []
    /// The global epoch: bumped each time a peer leaves a slot. Starts at 1 (0 means offline).
    @usableFromInline let epoch = ManagedAtomic<UInt64>(1)
    /// Per worker, the epoch it saw at its last quiescent point (0: offline), `epochStride`
    /// words apart so that no two share a cache line.
    @usableFromInline let announced: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    @usableFromInline static var epochStride: Int { 16 }
    @usableFromInline static var offline: UInt64 { 0 }
    /// Called (under the table's lock) with each peer just before the table drops it for
    /// good: a test hook, set before any worker runs.
    public var willReclaim: (@Sendable (Peer) -> Void)?
    let adding = EngineMutex<Void>(())

    public init(capacity: Int, workers: Int = 1) {
        precondition(workers >= 1)
        self.capacity = capacity
        self.workers = workers
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: UnsafeAtomic<Unmanaged<Peer>?>.Storage(nil), count: capacity)
        announced = .allocate(capacity: workers * Self.epochStride)
        announced.initialize(repeating: UnsafeAtomic<UInt64>.Storage(Self.offline), count: workers * Self.epochStride)
    }

    deinit {
        slots.deallocate()
        announced.deallocate()
    }

    /// Peers visible now.
    @inlinable public var count: Int { published.load(ordering: .acquiring) }

    @inlinable func slot(_ i: Int) -> UnsafeAtomic<Unmanaged<Peer>?> { UnsafeAtomic(at: slots + i) }

    /// Peer `i` now, for any thread (a strong reference, taken under the lock).
    public subscript(_ i: Int) -> Peer { adding.withLock { _ in owners[i] } }

    /// Runs `body` with peer `i`, borrowed: no reference counting on the packet path. For a
    /// worker inside a step only (the peer is not freed before the worker's next quiescent
    /// point; `body` must not keep it, nor anything it points at, beyond the step).
    @inlinable
    public func withPeer<R>(_ i: Int, _ body: (Peer) -> R) -> R {
        slot(i).load(ordering: .acquiring).unsafelyUnwrapped._withUnsafeGuaranteedRef(body)
    }

    /// The index of the peer at `address`, if any (a worker inside a step, or under the lock).
    /// (A removed peer's stand-in is never found: one more byte read, of the peer whose
    /// address matched.)
    @inlinable
    public func index(of address: IPAddress) -> Int? {
        let n = count
        for i in 0..<n where withPeer(i, { $0.address == address && !$0.isVacant }) { return i }
        return nil
    }

    // MARK: Quiescent states

    @inlinable func announcement(_ w: Int) -> UnsafeAtomic<UInt64> { UnsafeAtomic(at: announced + w * Self.epochStride) }

    /// Worker `w` holds no peer (nor any pointer into one): the top of each of its steps. One
    /// load of the epoch, and a release store only when it moved; no lock, no allocation.
    @inlinable @inline(__always)
    public func passQuiescentPoint(worker w: Int) {
        let mine = announcement(w)
        let now = epoch.load(ordering: .acquiring)
        let last = mine.load(ordering: .relaxed)  // only this worker writes it
        guard last != now else { return }
        if last == Self.offline {
            comeOnline(mine, now)
        } else {
            mine.store(now, ordering: .releasing)
        }
    }

    /// Back from offline: the announcement must be visible before any slot is read, or a
    /// reclaimer could skip this worker while it reads a slot's old peer.
    @usableFromInline @inline(never)
    func comeOnline(_ mine: UnsafeAtomic<UInt64>, _ now: UInt64) {
        mine.store(now, ordering: .sequentiallyConsistent)
        Atomics.atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Worker `w` will hold no peer until its next step (it is about to wait in poll, or is
    /// stopping): reclamation does not wait for it.
    public func goOffline(worker w: Int) {
        announcement(w).store(Self.offline, ordering: .releasing)
    }

    /// Frees the peers that left their slots and that no worker can hold any more; returns
    /// how many are still waiting. The table does this itself when it gives a slot and when
    /// peers are aged; any thread may.
    @discardableResult
    public func reclaim() -> Int {
        adding.withLock { _ in reclaimLocked() }
    }

    /// Peers that left a slot and are not freed yet.
    public var awaitingReclamation: Int { adding.withLock { _ in retired.count } }

    /// The oldest epoch an online worker announced (`UInt64.max`: every worker offline): what
    /// left a slot at that epoch or before, no worker can hold.
    func oldestAnnouncedEpoch() -> UInt64 {
        // Against `comeOnline`'s fence: either this sees the worker's announcement, or the
        // worker sees every slot stored before the epoch bump that precedes this fence.
        Atomics.atomicMemoryFence(ordering: .sequentiallyConsistent)
        var oldest = UInt64.max
        for w in 0..<workers {
            let seen = announcement(w).load(ordering: .acquiring)
            if seen != Self.offline { oldest = min(oldest, seen) }
        }
        return oldest
    }

    @discardableResult
    func reclaimLocked() -> Int {
        guard !retired.isEmpty else { return 0 }
        let oldest = oldestAnnouncedEpoch()
        var kept = 0
        for entry in retired {
            if entry.epoch <= oldest { willReclaim?(entry.peer) } else { kept += 1 }
        }
        if kept < retired.count { retired.removeAll { $0.epoch <= oldest } }
        return kept
    }

    /// Adds a peer, or finds the one already at its address (two workers may learn the same
    /// peer at once: `added` is true for the one that did). When the table is full, the peer
    /// takes the slot of the retired one silent longest (`reused`), whose slot's counters
    /// `baseline` reads; the peer that leaves the slot is freed once no worker can hold it.
    /// Nil when no slot may be given. (`now` is unused, kept for callers.)
    @discardableResult
    public func add(_ peer: Peer, now: Int64 = 0,
                    baseline: (Int) -> [UInt64] = { _ in [UInt64](repeating: 0, count: PeerCounter.allCases.count) })
        -> (index: Int, added: Bool, reused: Bool)? {
        adding.withLock { _ in
            if let existing = index(of: peer.address) { return (existing, false, false) }
            // A removed peer's slot, once nothing may point at it any more, before a new one.
            if let k = vacancies.firstIndex(where: \.isReady) {
                let slot = vacancies.remove(at: k).slot
                vacantCount.wrappingDecrement(ordering: .relaxed)
                peer.counterBaseline = baseline(slot)
                replaceLocked(slot, with: peer)
                return (slot, true, true)
            }
            let n = published.load(ordering: .relaxed)
            guard n < capacity else {
                let candidates = (0..<n).filter { owners[$0].isLearned && !owners[$0].isActive }
                    .sorted { owners[$0].lastHeard.load(ordering: .relaxed) < owners[$1].lastHeard.load(ordering: .relaxed) }
                for slot in candidates {
                    // Claimed as a packet from it would (a worker may be bringing it back now:
                    // then the next slot is looked at).
                    guard owners[slot].active.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged
                    else { continue }
                    retiredCount.wrappingDecrement(ordering: .relaxed)
                    peer.counterBaseline = baseline(slot)
                    let leaving = owners[slot]
                    owners[slot] = peer
                    self.slot(slot).store(.passUnretained(peer), ordering: .releasing)
                    // After the store: a worker that reads this epoch reads the new peer.
                    let left = epoch.wrappingIncrementThenLoad(ordering: .acquiringAndReleasing)
                    Atomics.atomicMemoryFence(ordering: .sequentiallyConsistent)
                    retired.append((leaving, left))
                    reclaimLocked()
                    return (slot, true, true)
                }
                return nil
            }
            owners.append(peer)
            slot(n).store(.passUnretained(peer), ordering: .releasing)
            published.store(n + 1, ordering: .releasing)
            return (n, true, false)
        }
    }

    /// Learned peers retired and not yet back or replaced.
    @usableFromInline let retiredCount = ManagedAtomic<Int>(0)
    /// Slots of configured peers removed at run time (`PeerTable+Removal.swift`), not given
    /// again yet; under `adding`.
    var vacancies: [Vacancy] = []
    /// `vacancies.count`, for `isFull` without the lock.
    @usableFromInline let vacantCount = ManagedAtomic<Int>(0)

    /// No room for another peer, not even in a retired one's slot or a removed one's.
    @inlinable public var isFull: Bool {
        count >= capacity && retiredCount.load(ordering: .relaxed) == 0 && vacantCount.load(ordering: .relaxed) == 0
    }

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

    /// Every peer in a slot now, for any thread (strong references, taken under the lock).
    public var all: [Peer] { adding.withLock { _ in owners } }
}
