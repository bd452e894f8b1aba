import Atomics
import FerryCapture
import FerryWire

/// One capture attached to an engine: where it looks (`point`), what it keeps (`filter`,
/// compiled once, run in the workers), and a ring per worker that its reader alone drains. A
/// reader that falls behind fills only its own rings: its records are dropped and counted
/// (`dropped`), nobody else's, and no worker waits.
///
/// `@unchecked Sendable`: everything is immutable but the rings, whose two sides belong to the
/// workers (producers) and to this capture's reader (the consumer).
public final class CaptureAttachment: @unchecked Sendable {
    /// Unique within its hub, in the order attached.
    public let id: Int
    public let point: CapturePoint
    public let filter: PacketFilter?
    /// One per worker, by worker index.
    public let rings: [CaptureRing]

    init(id: Int, point: CapturePoint, filter: PacketFilter?, workers: Int, ringBytes: Int) {
        self.id = id
        self.point = point
        self.filter = filter
        rings = (0..<workers).map { CaptureRing(capacity: ringBytes, worker: $0, point: point, filter: filter) }
    }

    /// Records dropped because a ring was full (the reader behind), over every worker.
    public var dropped: Int { rings.reduce(0) { $0 + $1.dropped } }

    /// Hands the records waiting in every ring to `body` (each worker's in order), at most
    /// `limit` in all; how many. The reader only.
    @discardableResult
    public func drain(limit: Int = .max, _ body: (CaptureRecord) -> Void) -> Int {
        var moved = 0
        for ring in rings where moved < limit {
            moved += ring.drain(limit: limit - moved, body)
        }
        return moved
    }
}

/// What one worker captures into: the rings of every capture attached when it last looked,
/// and whether any of them wants inner frames, outer packets or drops. Immutable: a change is
/// a new one, published by the hub and picked up by the worker at its next step.
public final class WorkerCaptures: @unchecked Sendable {
    let rings: ContiguousArray<CaptureRing>
    public let inner: Bool
    public let outer: Bool
    public let drops: Bool

    init(rings: [CaptureRing]) {
        self.rings = ContiguousArray(rings)
        inner = rings.contains { $0.inner }
        outer = rings.contains { $0.outer }
        drops = rings.contains { $0.drops }
    }

    /// Captures `frame` at `point` (`.inner` or `.outer`) into each ring that wants it. Not
    /// inlined: the packet path holds only the call, behind its `captures` branch, so that its
    /// steps stay small enough for the optimiser to inline what they call.
    @inline(never)
    public func record(_ frame: UnsafeRawBufferPointer, at point: CapturePoint) {
        for ring in rings where point == .outer ? ring.outer : ring.inner { ring.record(frame, at: point) }
    }

    /// Captures a refused frame or packet into each ring that takes drops.
    public func recordDrop(_ frame: UnsafeRawBufferPointer, reason: DropReason, direction: CounterDirection, peer: IPAddress?) {
        for ring in rings where ring.drops { ring.recordDrop(frame, reason: reason, direction: direction, peer: peer) }
    }
}

/// The captures attached to an engine, attached and detached at run time (`attach`, `detach`)
/// from any thread, each with its own point, filter and rings.
///
/// Workers pick the set up at a batch boundary: each change builds every worker's
/// `WorkerCaptures` anew under the lock and bumps `version`; a worker compares `version` with
/// its own at the top of each step (one relaxed-cost acquiring load per batch) and, only when it
/// moved, takes the lock for its new view and announces the version it now uses. A detached
/// capture's rings stay alive (reference counted) while a worker still holds the old view;
/// `workersHaveSeen(version)` tells its reader when no worker can write into them any more (a
/// worker announces at every step, and an idle one steps at least every tenth of a second), so
/// its last records and its loss count are final. With nothing attached a worker holds nil: the
/// cost on the packet path is one branch per capture site.
///
/// `@unchecked Sendable`: the list and the views change only under `attached`'s lock; the
/// version and the announcements are atomics.
public final class CaptureHub: @unchecked Sendable {
    public let workers: Int
    @usableFromInline let version = ManagedAtomic<Int>(0)
    let attached = EngineMutex<(list: [CaptureAttachment], views: [WorkerCaptures?], next: Int)>(([], [], 1))
    /// Per worker, the version it captures with, 16 words apart (a cache line each).
    let announced: UnsafeMutablePointer<UnsafeAtomic<Int>.Storage>
    static var stride: Int { 16 }

    /// The most captures attached at once (each costs a ring per worker).
    public static let maximumAttached = 16
    /// Bytes of each worker's ring for a capture attached at run time.
    public static let defaultRingBytes = 2 << 20

    public init(workers: Int) {
        self.workers = workers
        announced = .allocate(capacity: workers * Self.stride)
        announced.initialize(repeating: UnsafeAtomic<Int>.Storage(-1), count: workers * Self.stride)
        attached.withLock { $0.views = Array(repeating: nil, count: workers) }
    }

    deinit { announced.deallocate() }

    func announcement(_ w: Int) -> UnsafeAtomic<Int> { UnsafeAtomic(at: announced + w * Self.stride) }

    /// Attaches a capture of `point` keeping what passes `filter`, with a ring of `ringBytes`
    /// per worker; nil when `maximumAttached` are attached already. Workers record into it
    /// from their next step.
    public func attach(point: CapturePoint, filter: PacketFilter?, ringBytes: Int = CaptureHub.defaultRingBytes)
        -> CaptureAttachment? {
        attached.withLock { a in
            guard a.list.count < Self.maximumAttached else { return nil }
            let capture = CaptureAttachment(id: a.next, point: point, filter: filter, workers: workers, ringBytes: ringBytes)
            a.next += 1
            a.list.append(capture)
            publish(&a)
            return capture
        }
    }

    /// Detaches `capture` (nothing if it is not attached); returns the version to wait for
    /// (`workersHaveSeen`) before its rings are final.
    @discardableResult
    public func detach(_ capture: CaptureAttachment) -> Int {
        attached.withLock { a in
            if a.list.contains(where: { $0 === capture }) {
                a.list.removeAll { $0 === capture }
                publish(&a)
            }
            return version.load(ordering: .relaxed)
        }
    }

    /// The captures attached now.
    public var attachments: [CaptureAttachment] { attached.withLock { $0.list } }

    /// Every worker's view rebuilt from the list, then the version bumped (under the lock).
    func publish(_ a: inout (list: [CaptureAttachment], views: [WorkerCaptures?], next: Int)) {
        let list = a.list
        a.views = (0..<workers).map { w in list.isEmpty ? nil : WorkerCaptures(rings: list.map { $0.rings[w] }) }
        version.wrappingIncrement(ordering: .releasing)
    }

    /// The version now (for a worker's cheap check at the top of its step).
    @inlinable @inline(__always)
    public var currentVersion: Int { version.load(ordering: .acquiring) }

    /// Worker `w`'s view now and its version; the worker announces it has it.
    public func view(worker w: Int) -> (WorkerCaptures?, Int) {
        let (view, v) = attached.withLock { a in (a.views[w], version.load(ordering: .relaxed)) }
        announcement(w).store(v, ordering: .releasing)
        return (view, v)
    }

    /// Whether every worker has picked up version `v` or a later one: a capture detached at
    /// `v` gets no more records then.
    public func workersHaveSeen(_ v: Int) -> Bool {
        (0..<workers).allSatisfy { announcement($0).load(ordering: .acquiring) >= v }
    }
}
