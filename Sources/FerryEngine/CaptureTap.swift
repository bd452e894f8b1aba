import Atomics
import FerryCapture
import FerryLinux
import Foundation
import Logging
import Synchronization

/// Which side of the encapsulation a capture records, or what the data plane refuses.
public enum CapturePoint: String, Sendable, CaseIterable {
    /// Inner frames as they leave and enter the bridge.
    case inner
    /// Outer packets as they leave and arrive on the underlay.
    case outer
    /// Inner and outer.
    case both
    /// Every frame and packet refused (`Worker.drop`): an egress frame as read from the TAP,
    /// an ingress packet in its outer form; each record with its reason, peer and direction.
    case drops
    /// Inner, outer and drops.
    case all

    /// Whether a capture at this point records `other` (`.inner`, `.outer` or `.drops`).
    public func includes(_ other: CapturePoint) -> Bool {
        switch self {
        case .inner, .outer, .drops: self == other
        case .both: other == .inner || other == .outer
        case .all: true
        }
    }
}

/// Where captured records go once they have left the workers: a file now; `ctl capture`
/// streams and pcapng later, each a sink of its own on the same writer.
///
/// A sink is used by the capture writer's thread only. It may block in `append` and `flush`,
/// but must call `keepWaiting` at least every few tenths of a second while it does, and give up
/// (counting what it could not write as lost) as soon as that returns false.
public protocol CaptureSink: AnyObject {
    /// What it writes to, for the log.
    var name: String { get }
    func append(_ record: CaptureRecord, keepWaiting: () -> Bool)
    /// Makes what was appended visible to the reader.
    func flush(keepWaiting: () -> Bool)
    var hasPending: Bool { get }
    var recordsWritten: Int { get }
    /// Records lost because a write failed.
    var recordsLost: Int { get }
    /// Why the last write failed; nil while writes go through.
    var failure: String? { get }
    func close(keepWaiting: () -> Bool)
}

/// The pcap file (or standard output) that `--capture` names.
public final class PcapFileSink: CaptureSink {
    let writer: PcapStreamWriter

    /// Creates the file (`CaptureFile.create`: 0600, no symbolic link followed) and writes its
    /// header; throws what stops that.
    public init(path: String) throws(CaptureError) {
        // The writer closes the descriptor if it throws.
        writer = try PcapStreamWriter(descriptor: try CaptureFile.create(path: path), path: path, ownsDescriptor: path != "-")
    }

    public var name: String { writer.path == "-" ? "standard output" : writer.path }
    public func append(_ record: CaptureRecord, keepWaiting: () -> Bool) {
        writer.append(record.bytes, seconds: record.seconds, nanoseconds: record.nanoseconds,
                      originalLength: record.originalLength, keepWaiting: keepWaiting)
    }
    public func flush(keepWaiting: () -> Bool) { writer.flush(keepWaiting: keepWaiting) }
    public var hasPending: Bool { writer.hasPending }
    public var recordsWritten: Int { writer.recordsWritten }
    public var recordsLost: Int { writer.recordsLost }
    public var failure: String? { writer.failureReason }
    public func close(keepWaiting: () -> Bool) { writer.close(keepWaiting: keepWaiting) }
}

/// A capture fed from inside the data plane, kept off the per-packet path: each worker hands
/// its records to a ring of its own (`CaptureRing`: no lock, no allocation, no wait; a full
/// ring drops the record, counted as `capture_dropped`), and one writer thread drains every
/// ring into the sinks, flushing them whenever the rings run dry and at least once a second.
/// A sink that fails loses records (`capture_write_failed`), logged once; a sink that stalls
/// (a FIFO whose reader stopped) holds up only the writer, whose rings then fill and drop.
///
/// The filter runs in the worker, before the copy into the ring: it costs a few BPF
/// instructions over bytes the worker has in cache, where a frame that the writer would
/// filter out costs a copy of the whole frame and ring room that wanted frames then lack
/// (under load, the difference between capturing them and dropping them).
///
/// `@unchecked Sendable`: rings and counters are registered under `registry`'s lock (at
/// start-up, never by a worker's step); the sinks and the writer's tallies belong to the writer
/// thread, or to `close()` once that thread has ended or was never started.
public final class CaptureTap: @unchecked Sendable {
    public let point: CapturePoint
    let filter: PacketFilter?
    /// Bytes of each worker's ring.
    public let ringBytes: Int
    let sinks: [any CaptureSink]
    let registry = EngineMutex<(rings: [CaptureRing], counters: CounterBlock?, layout: CounterLayout?,
                                attachment: CaptureAttachment?, hub: CaptureHub?)>(([], nil, nil, nil, nil))
    let stopping = ManagedAtomic<Bool>(false)
    /// Monotonic nanoseconds after which a stalled sink is given up on (0: not closing).
    let giveUpAt = ManagedAtomic<Int64>(0)
    let writerDone = DispatchSemaphore(value: 0)
    let state = EngineMutex<(started: Bool, closed: Bool, logger: Logger?)>((false, false, nil))

    // The writer's own (see the type's note).
    var countedDropped = 0
    var countedLost = 0
    var saidFailure = false
    var saidDropped = false

    /// 4 MiB per worker: some 2 700 full-size frames, or 60 64 KiB super-frames, of slack for
    /// a sink that pauses.
    public static let defaultRingBytes = 4 << 20
    /// How long a sink that takes nothing may hold up the end of a run.
    public static let closeGrace: Int64 = 1_000_000_000

    /// A capture to the pcap file at `path` (`-`: standard output), created now: throws if it
    /// cannot be (`CaptureFile.create`'s errors) or if `filter` does not compile.
    public convenience init(path: String, point: CapturePoint, filter: String?,
                            ringBytes: Int = CaptureTap.defaultRingBytes) throws(CaptureError) {
        let compiled = try filter.map { e throws(CaptureError) in try PacketFilter(expression: e) }
        try self.init(sinks: [PcapFileSink(path: path)], point: point, filter: compiled, ringBytes: ringBytes)
    }

    public init(sinks: [any CaptureSink], point: CapturePoint, filter: PacketFilter? = nil,
                ringBytes: Int = CaptureTap.defaultRingBytes) {
        self.point = point
        self.filter = filter
        self.sinks = sinks
        self.ringBytes = ringBytes
    }

    public var inner: Bool { point.includes(.inner) }
    public var outer: Bool { point.includes(.outer) }

    /// The ring worker `worker` captures into. The first call attaches the tap to `state`'s
    /// captures (a ring per worker, which the workers pick up as any capture attached at run
    /// time) and takes the writer's counters from `state` (so they show in its statistics).
    @discardableResult
    public func ring(forWorker worker: Int, state: ForwardingState) -> CaptureRing {
        registry.withLock { r in
            if r.attachment == nil {
                // Always room: the tap is attached before any run-time capture.
                let attachment = state.captures.attach(point: point, filter: filter, ringBytes: ringBytes)!
                r.attachment = attachment
                r.hub = state.captures
                r.rings = attachment.rings
                r.counters = state.makeCounters(worker: -1, direction: nil)
                r.layout = state.layout
            }
            return r.attachment!.rings[worker]
        }
    }

    /// Starts the writer thread, which says what goes wrong to `logger`. Once only; `close()`
    /// ends it.
    public func start(logger: Logger? = nil) {
        let first = state.withLock { s in
            defer { s.started = true; s.logger = logger }
            return !s.started && !s.closed
        }
        guard first else { return }
        let thread = Thread { [self] in
            runWriter()
            writerDone.signal()
        }
        thread.name = "ferry-capture"
        thread.start()
    }

    /// Drains what the workers left (call it once they have stopped), flushes and closes the
    /// sinks, and logs the totals. A sink that takes nothing is given `closeGrace`; what it
    /// did not take is counted lost. Idempotent.
    public func close() {
        let (started, wasClosed) = state.withLock { s in
            defer { s.closed = true }
            return (s.started, s.closed)
        }
        guard !wasClosed else { return }
        if let (hub, attachment) = registry.withLock({ r in r.hub.map { ($0, r.attachment!) } }) { hub.detach(attachment) }
        giveUpAt.store(Scheduling.monotonicNanoseconds() + Self.closeGrace, ordering: .relaxed)
        stopping.store(true, ordering: .releasing)
        if started {
            if writerDone.wait(timeout: .now() + .nanoseconds(Int(Self.closeGrace) + 1_000_000_000)) == .timedOut {
                log(.warning, "capture: the writer did not finish in time; what it held is lost")
            }
        } else {
            finish()
        }
    }

    /// Every record waiting in every ring, handed to every sink; how many.
    func drainRings() -> Int {
        let rings = registry.withLock { $0.rings }
        var moved = 0
        for ring in rings {
            moved += ring.drain(limit: 4096) { record in
                for sink in sinks { sink.append(record, keepWaiting: keepWaiting) }
            }
        }
        return moved
    }

    /// Asked by a sink that waits on its reader: yes until the tap closes and its grace is
    /// spent. Keeps the counters current meanwhile.
    func keepWaiting() -> Bool {
        syncCounters()
        guard stopping.load(ordering: .acquiring) else { return true }
        return Scheduling.monotonicNanoseconds() < giveUpAt.load(ordering: .relaxed)
    }

    func runWriter() {
        var lastFlush = Scheduling.monotonicNanoseconds()
        while true {
            let stop = stopping.load(ordering: .acquiring)
            let moved = drainRings()
            let now = Scheduling.monotonicNanoseconds()
            if moved == 0 || now - lastFlush >= 1_000_000_000 {
                for sink in sinks where sink.hasPending { sink.flush(keepWaiting: keepWaiting) }
                lastFlush = now
            }
            syncCounters()
            if stop && moved == 0 { break }
            if moved == 0 { Scheduling.sleep(milliseconds: 2) }
        }
        finish()
    }

    /// The end, on the writer's thread or in `close()`: drain, close, count, and say so.
    func finish() {
        while drainRings() > 0 {}
        for sink in sinks { sink.close(keepWaiting: keepWaiting) }
        syncCounters()
        let dropped = registry.withLock { $0.rings }.reduce(0) { $0 + $1.dropped }
        for sink in sinks {
            log(.info, "capture to \(sink.name) closed: \(sink.recordsWritten) records written, \(dropped) dropped "
                + "(ring full), \(sink.recordsLost) lost to failed writes")
        }
    }

    /// Brings `capture_dropped` and `capture_write_failed` up to date, and says once each that
    /// records are being lost. Writer only.
    func syncCounters() {
        let (rings, counters, layout) = registry.withLock { ($0.rings, $0.counters, $0.layout) }
        let dropped = rings.reduce(0) { $0 + $1.dropped }
        let lost = sinks.reduce(0) { $0 + $1.recordsLost }
        if let counters, let layout {
            if dropped > countedDropped { counters.add(layout.index(.captureDropped), UInt64(dropped - countedDropped)) }
            if lost > countedLost { counters.add(layout.index(.captureWriteFailed), UInt64(lost - countedLost)) }
        }
        countedDropped = dropped
        countedLost = lost
        if !saidFailure, let failed = sinks.first(where: { $0.failure != nil && $0.recordsLost > 0 }) {
            saidFailure = true
            log(.error, """
                capture: writing to \(failed.name) failed (\(failed.failure ?? "")); capture records are lost while it \
                fails (counted as capture_write_failed); forwarding goes on
                """)
        }
        if !saidDropped, dropped > 0 {
            saidDropped = true
            log(.warning, """
                capture: the writer falls behind the workers; capture records are dropped while it does \
                (counted as capture_dropped); forwarding goes on
                """)
        }
    }

    func log(_ level: Logger.Level, _ message: String) {
        state.withLock { $0.logger }?.log(level: level, "\(message)")
    }
}
