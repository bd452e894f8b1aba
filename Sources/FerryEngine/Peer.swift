import Atomics
import FerryLinux
import FerryWire

/// A host at the other end of the tunnel: its address, the outer headers built for it, and
/// the socket address the sender aims at.
public final class Peer: @unchecked Sendable {
    public let address: IPAddress
    /// Learned from traffic (accept-any mode) rather than configured.
    public let isLearned: Bool
    /// Used by the egress thread only (it carries the IPv4 ID and GRE sequence counters).
    public let template: EncapsulationTemplate
    /// Stable for the peer's life: batches point at it until they are sent.
    public let destination: UnsafeMutablePointer<SocketAddress>
    /// The peer's VXLAN port, for the UDP senders.
    public let udpDestination: UnsafeMutablePointer<SocketAddress>

    public init(options: TunnelOptions, isLearned: Bool) {
        address = options.remote
        self.isLearned = isLearned
        template = EncapsulationTemplate(options)
        destination = .allocate(capacity: 1)
        // Raw header-including sockets take port 0.
        destination.initialize(to: SocketAddress(options.remote, port: 0))
        udpDestination = .allocate(capacity: 1)
        udpDestination.initialize(to: SocketAddress(options.remote, port: options.destinationPort))
    }

    deinit {
        destination.deallocate()
        udpDestination.deallocate()
    }
}

/// The peers, in a fixed number of slots: configured ones first, then any learned. Added by
/// the ingress thread, read by the egress thread: a slot is filled before the count that
/// covers it is published, and never changes after.
public final class PeerTable: @unchecked Sendable {
    public let capacity: Int
    /// Unmanaged, so that the per-packet path reads a peer without a retain and release; the
    /// table owns each peer through `owners` for as long as it lives.
    @usableFromInline let slots: UnsafeMutablePointer<Unmanaged<Peer>?>
    @usableFromInline let published = ManagedAtomic<Int>(0)
    var owners: [Peer] = []

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

    /// Adds a peer; nil when the table is full. One thread adds (the ingress loop, or set-up).
    @discardableResult
    public func add(_ peer: Peer) -> Int? {
        let n = published.load(ordering: .relaxed)
        guard n < capacity else { return nil }
        owners.append(peer)
        slots[n] = Unmanaged.passUnretained(peer)
        published.store(n + 1, ordering: .releasing)
        return n
    }

    public var all: [Peer] { (0..<count).map { self[$0] } }
}
