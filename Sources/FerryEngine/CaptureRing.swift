import Atomics
import FerryCapture
import FerryLinux
import FerryWire

/// One captured frame as the capture writer sees it: what a pcap or pcapng writer, or a
/// `ctl capture` stream, needs. `bytes` is borrowed from the ring: valid only during the call
/// that hands the record over.
public struct CaptureRecord {
    /// Wall-clock time of the capture (`CLOCK_REALTIME`).
    public var seconds: Int64
    public var nanoseconds: Int
    /// Which end of the encapsulation: `.inner` or `.outer`; `.drops` for a frame or packet
    /// refused (then `drop` says why).
    public var point: CapturePoint
    /// The worker that captured it.
    public var worker: Int
    /// The frame's length when captured; `bytes` may hold fewer (the ring's record limit).
    public var originalLength: Int
    public var bytes: UnsafeRawBufferPointer
    /// A drop record's reason, and the direction and peer (when known) it was refused in.
    public var drop: DropReason? = nil
    public var direction: CounterDirection? = nil
    public var peer: IPAddress? = nil

    /// What a pcapng packet comment says of a drop record, as `ferry ctl stats` names the
    /// reason: `drop unexpected_vni peer=10.99.0.3 worker=0 direction=ingress`; nil for others.
    public var comment: String? {
        guard let drop else { return nil }
        var text = "drop \(drop.name)"
        if let peer { text += " peer=\(peer)" }
        text += " worker=\(worker)"
        if let direction { text += " direction=\(direction.rawValue)" }
        return text
    }
}

/// A worker's end of a capture: a single-producer, single-consumer ring of bytes, of fixed size
/// allocated at start, that the worker (the producer) fills with captured frames and the
/// capture writer (the consumer) drains.
///
/// The producer never waits, locks or allocates: a record that does not fit is dropped and
/// counted (`dropped`). Each record is a 48-byte header and the frame's bytes, 8-byte aligned,
/// and lies whole in the ring: one that would run past the end is placed at the start, behind a
/// marker that tells the consumer to skip there. Positions are byte counts that only grow
/// (`head`: written, `tail`: consumed); the producer publishes `head` with a release store after
/// the record's bytes, the consumer reads it with an acquire load, and the same the other way
/// round for `tail`, so each side sees the other's bytes whole. The consumer sees one worker's
/// records in the order they were made.
///
/// `@unchecked Sendable`: the producer side (`record`, `push`) belongs to one thread, the
/// consumer side (`drain`) to another; they share only the atomics and the bytes those guard.
public final class CaptureRing: @unchecked Sendable {
    /// Bytes of ring; a power of two.
    public let capacity: Int
    /// The worker whose records these are.
    public let worker: Int
    /// The most bytes of one frame a record keeps (half the ring less a header, at most the
    /// snapshot length): longer frames are cut, with their length kept.
    public let recordLimit: Int
    /// Whether frames at either end, and drops, are captured, and the filter they must pass
    /// (the capture's).
    public let inner: Bool
    public let outer: Bool
    public let drops: Bool
    let filter: PacketFilter?

    /// Length, point, direction, worker, time, lengths, drop reason and peer (family and 16
    /// bytes of address).
    static let headerLength = 48
    static let skipMarker: UInt8 = 0xFF

    let bytes: UnsafeMutableRawPointer
    let mask: Int
    /// head at byte 0, tail at 64, dropped at 128: one cache line each.
    let control: UnsafeMutableRawPointer
    var head: UnsafeAtomic<Int> { UnsafeAtomic(at: control.assumingMemoryBound(to: UnsafeAtomic<Int>.Storage.self)) }
    var tail: UnsafeAtomic<Int> { UnsafeAtomic(at: (control + 64).assumingMemoryBound(to: UnsafeAtomic<Int>.Storage.self)) }
    var droppedCount: UnsafeAtomic<Int> { UnsafeAtomic(at: (control + 128).assumingMemoryBound(to: UnsafeAtomic<Int>.Storage.self)) }
    /// The producer's last reading of `tail`: it loads the atomic only when this says full.
    var cachedTail = 0

    /// A ring of at least `capacity` bytes (rounded up to a power of two, at least 4 KiB).
    public init(capacity: Int, worker: Int, point: CapturePoint = .both, filter: PacketFilter? = nil,
                snapshotLength: Int = 262_144) {
        var size = 4096
        while size < capacity { size <<= 1 }
        self.capacity = size
        self.worker = worker
        mask = size - 1
        recordLimit = min(snapshotLength, size / 2 - Self.headerLength - 8)
        inner = point.includes(.inner)
        outer = point.includes(.outer)
        drops = point.includes(.drops)
        self.filter = filter
        bytes = .allocate(byteCount: size, alignment: 64)
        // Resident from the start, as the packet buffers: a worker's first records take no page faults.
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        control = .allocate(byteCount: 192, alignment: 64)
        for offset in [0, 64, 128] {
            (control + offset).initializeMemory(as: UnsafeAtomic<Int>.Storage.self, to: .init(0))
        }
    }

    deinit {
        bytes.deallocate()
        control.deallocate()
    }

    /// Records dropped because the ring was full (read from any thread).
    public var dropped: Int { droppedCount.load(ordering: .relaxed) }

    /// Bytes of records waiting for the consumer (read from any thread).
    public var waiting: Int { head.load(ordering: .acquiring) &- tail.load(ordering: .acquiring) }

    // MARK: - The producer (the worker)

    /// Captures `frame` at `point` if it passes the filter; true unless the ring was full (the
    /// record is then dropped and counted). Producer only.
    @inline(__always)
    @discardableResult
    public func record(_ frame: UnsafeRawBufferPointer, at point: CapturePoint) -> Bool {
        if let filter, !filter.matches(frame) { return true }
        let now = Scheduling.wallClock()
        return push(frame, at: point, seconds: now.seconds, nanoseconds: now.nanoseconds)
    }

    /// Captures a refused frame or packet, with why, which way and from or to which peer, if
    /// it passes the filter; true unless the ring was full. Producer only.
    @discardableResult
    public func recordDrop(_ frame: UnsafeRawBufferPointer, reason: DropReason, direction: CounterDirection,
                           peer: IPAddress?) -> Bool {
        if let filter, !filter.matches(frame) { return true }
        let now = Scheduling.wallClock()
        return push(frame, at: .drops, seconds: now.seconds, nanoseconds: now.nanoseconds,
                    drop: reason, direction: direction, peer: peer)
    }

    /// Appends one record, unfiltered, with the time given; false (and counted) if it does
    /// not fit. Producer only.
    @discardableResult
    public func push(_ frame: UnsafeRawBufferPointer, at point: CapturePoint, seconds: Int64, nanoseconds: Int,
                     drop: DropReason? = nil, direction: CounterDirection? = nil, peer: IPAddress? = nil) -> Bool {
        let captured = min(frame.count, recordLimit)
        let need = (Self.headerLength &+ captured &+ 7) & ~7
        var h = head.load(ordering: .relaxed)  // its own: no other thread stores it
        let offset = h & mask
        let toEnd = capacity &- offset
        // A record that would cross the end goes to the start, behind a skip marker.
        let total = toEnd < need ? toEnd &+ need : need
        if total > capacity &- (h &- cachedTail) {
            cachedTail = tail.load(ordering: .acquiring)
            if total > capacity &- (h &- cachedTail) {
                droppedCount.store(droppedCount.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
                return false
            }
        }
        if toEnd < need {
            // toEnd is a multiple of 8, so the marker's stride and kind fit.
            (bytes + offset).storeBytes(of: UInt32(toEnd), as: UInt32.self)
            (bytes + offset + 4).storeBytes(of: Self.skipMarker, as: UInt8.self)
            h &+= toEnd
        }
        let out = bytes + (h & mask)
        out.storeBytes(of: UInt32(need), as: UInt32.self)
        (out + 4).storeBytes(of: point == .outer ? 1 : point == .drops ? 2 : 0, as: UInt8.self)
        (out + 5).storeBytes(of: direction == .egress ? 1 : direction == .ingress ? 2 : 0, as: UInt8.self)
        (out + 6).storeBytes(of: UInt16(truncatingIfNeeded: worker), as: UInt16.self)
        (out + 8).storeBytes(of: seconds, as: Int64.self)
        (out + 16).storeBytes(of: UInt32(truncatingIfNeeded: nanoseconds), as: UInt32.self)
        (out + 20).storeBytes(of: UInt32(truncatingIfNeeded: captured), as: UInt32.self)
        (out + 24).storeBytes(of: UInt32(truncatingIfNeeded: frame.count), as: UInt32.self)
        (out + 28).storeBytes(of: drop.map { $0.rawValue &+ 1 } ?? 0, as: UInt8.self)
        switch peer {
        case .v4(let a)?:
            (out + 29).storeBytes(of: 4, as: UInt8.self)
            (out + 32).storeBytes(of: a.value, as: UInt32.self)
        case .v6(let a)?:
            (out + 29).storeBytes(of: 6, as: UInt8.self)
            (out + 32).storeBytes(of: a.high, as: UInt64.self)
            (out + 40).storeBytes(of: a.low, as: UInt64.self)
        case nil:
            (out + 29).storeBytes(of: 0, as: UInt8.self)
        }
        if captured > 0 { (out + Self.headerLength).copyMemory(from: frame.baseAddress!, byteCount: captured) }
        head.store(h &+ need, ordering: .releasing)
        return true
    }

    // MARK: - The consumer (the capture writer)

    /// Hands every record waiting, oldest first, to `body`, and frees each one's room as soon
    /// as `body` returns; at most `limit` records. Returns how many. Consumer only.
    @discardableResult
    public func drain(limit: Int = .max, _ body: (CaptureRecord) -> Void) -> Int {
        let h = head.load(ordering: .acquiring)
        var t = tail.load(ordering: .relaxed)  // its own
        var count = 0
        while t != h && count < limit {
            let at = bytes + (t & mask)
            let stride = Int(at.load(as: UInt32.self))
            if (at + 4).load(as: UInt8.self) == Self.skipMarker {
                t &+= stride
                continue
            }
            let captured = Int((at + 20).load(as: UInt32.self))
            let kind = (at + 4).load(as: UInt8.self)
            var record = CaptureRecord(seconds: (at + 8).load(as: Int64.self), nanoseconds: Int((at + 16).load(as: UInt32.self)),
                                       point: kind == 1 ? .outer : kind == 2 ? .drops : .inner,
                                       worker: Int((at + 6).load(as: UInt16.self)),
                                       originalLength: Int((at + 24).load(as: UInt32.self)),
                                       bytes: UnsafeRawBufferPointer(start: at + Self.headerLength, count: captured))
            if kind == 2 {
                let reason = (at + 28).load(as: UInt8.self)
                record.drop = reason == 0 ? nil : DropReason(rawValue: reason &- 1)
                let direction = (at + 5).load(as: UInt8.self)
                record.direction = direction == 1 ? .egress : direction == 2 ? .ingress : nil
                switch (at + 29).load(as: UInt8.self) {
                case 4: record.peer = .v4(IPv4Address(value: (at + 32).load(as: UInt32.self)))
                case 6: record.peer = .v6(IPv6Address(high: (at + 32).load(as: UInt64.self), low: (at + 40).load(as: UInt64.self)))
                default: break
                }
            }
            body(record)
            t &+= stride
            count += 1
            tail.store(t, ordering: .releasing)
        }
        tail.store(t, ordering: .releasing)
        return count
    }
}
