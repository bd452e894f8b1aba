import Synchronization

/// The underlay's MTU as the workers use it now: what `DataPathLimits.underlayMTU` said at
/// start, then, unless it was configured, what the engine reads from the interface holding
/// the local address when it changes. One writer (the engine's refresher thread); each worker
/// loads it once per egress step (a relaxed load: it is one number, published with nothing
/// else), so a change takes effect at every worker's next batch, with no lock on the path.
public final class UnderlayMTU: Sendable {
    let value: Atomic<Int>
    /// What the interface said at the last reading (the refresher's own: so that a value it
    /// will not use is logged once, not every second).
    let lastRead: Atomic<Int>

    public init(_ mtu: Int) {
        value = Atomic(mtu)
        lastRead = Atomic(mtu)
    }

    /// The MTU in use.
    @inline(__always)
    public func load() -> Int { value.load(ordering: .relaxed) }

    /// Makes `mtu` the one in use; returns the one it replaces, or nil when it is the same.
    @discardableResult
    public func publish(_ mtu: Int) -> Int? {
        let old = value.exchange(mtu, ordering: .relaxed)
        return old == mtu ? nil : old
    }

    /// Values the engine follows: what `--underlay-mtu` accepts.
    public static let followed = 576...65535
}
