import Atomics
import Synchronization
import FerryLinux
import FerryWire

/// A host at the other end of the tunnel: its address, the outer headers built for it, and
/// the socket address the sender aims at.
public final class Peer: @unchecked Sendable {
    public let address: IPAddress
    /// Learned from traffic (accept-any mode) rather than configured.
    public let isLearned: Bool
    /// One per worker (each carries its own IPv4 ID and GRE sequence counters): worker `w`
    /// writes outer headers with `templates[w]` and no other thread touches it.
    public let templates: [EncapsulationTemplate]
    /// The same, unmanaged, so that the packet path borrows one without reference counting.
    @usableFromInline let templateSlots: UnsafeMutablePointer<Unmanaged<EncapsulationTemplate>>
    /// Worker 0's template.
    public var template: EncapsulationTemplate { templates[0] }
    /// Stable for the peer's life: batches point at it until they are sent.
    public let destination: UnsafeMutablePointer<SocketAddress>
    /// The peer's VXLAN port, for the UDP senders.
    public let udpDestination: UnsafeMutablePointer<SocketAddress>
    /// Where a packet socket sends this peer's packets (the next hop's MAC on the output
    /// device), when the link path is on and the next hop is resolved. Two slots: the one
    /// refresh writes is never the one `linkSlot` publishes, so a worker always reads a whole
    /// address (a batch in flight points at the other slot for microseconds; refreshes come
    /// seconds apart).
    @usableFromInline let linkDestinations: UnsafeMutablePointer<SocketAddress>
    /// -1: no link path (send through the IP stack); else the slot of `linkDestinations` in use.
    @usableFromInline let linkSlot = ManagedAtomic<Int>(-1)
    /// The next hop `linkDestinations` holds, for the refreshing thread only.
    public private(set) var linkNextHop: LinkNextHop?

    public init(options: TunnelOptions, isLearned: Bool, workers: Int = 1) {
        precondition(workers >= 1)
        address = options.remote
        self.isLearned = isLearned
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
        linkDestinations = .allocate(capacity: 2)
        linkDestinations.initialize(repeating: SocketAddress(options.remote, port: 0), count: 2)
    }

    /// The link-layer destination to send to, or nil to go through the IP stack.
    @inlinable
    public var linkDestination: UnsafeMutablePointer<SocketAddress>? {
        let slot = linkSlot.load(ordering: .acquiring)
        return slot < 0 ? nil : linkDestinations + slot
    }

    /// Points the link path at `hop` (nil: back to the IP stack). Called by one thread only.
    public func setLinkNextHop(_ hop: LinkNextHop?) {
        guard hop != linkNextHop else { return }
        linkNextHop = hop
        guard let hop else {
            linkSlot.store(-1, ordering: .releasing)
            return
        }
        let next = linkSlot.load(ordering: .relaxed) == 0 ? 1 : 0
        linkDestinations[next] = SocketAddress(link: hop, etherType: address.isIPv6 ? EtherType.ipv6 : EtherType.ipv4)
        linkSlot.store(next, ordering: .releasing)
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
        linkDestinations.deallocate()
    }
}

/// The peers, in a fixed number of slots: configured ones first, then any learned. Added by
/// the ingress workers (one at a time, under a lock), read by every worker without one: a
/// slot is filled before the count that covers it is published, and never changes after.
public final class PeerTable: @unchecked Sendable {
    public let capacity: Int
    /// Unmanaged, so that the per-packet path reads a peer without a retain and release; the
    /// table owns each peer through `owners` for as long as it lives.
    @usableFromInline let slots: UnsafeMutablePointer<Unmanaged<Peer>?>
    @usableFromInline let published = ManagedAtomic<Int>(0)
    var owners: [Peer] = []
    let adding = Mutex<Void>(())

    public init(capacity: Int) {
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: nil, count: capacity)
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
    /// peer at once: `added` is true for the one that did); nil when the table is full.
    @discardableResult
    public func add(_ peer: Peer) -> (index: Int, added: Bool)? {
        adding.withLock { _ in
            if let existing = index(of: peer.address) { return (existing, false) }
            let n = published.load(ordering: .relaxed)
            guard n < capacity else { return nil }
            owners.append(peer)
            slots[n] = Unmanaged.passUnretained(peer)
            published.store(n + 1, ordering: .releasing)
            return (n, true)
        }
    }

    /// No room for another peer.
    @inlinable public var isFull: Bool { count >= capacity }

    public var all: [Peer] { (0..<count).map { self[$0] } }
}
