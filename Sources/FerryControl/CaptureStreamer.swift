import Dispatch
import Foundation
import FerryCapture
import FerryEngine
import FerryLinux
import Glibc
import Logging
import Synchronization

/// How much a capture stream holds, and how long it waits.
enum CaptureStreamLimits {
    /// Bytes of pcapng a stream holds for its client before it leaves records in the rings.
    static var maximumPending: Int { 1 << 20 }
    /// How long a stream's last bytes (its loss count among them) wait for a client that takes
    /// none of them: a reader that paused (a pipe's reader busy) is told what it lost when it
    /// comes back within this; one that never reads again is closed after it.
    static var closeGrace: Duration { .seconds(10) }
    /// How long the last bytes wait when the server is stopping.
    static var stopGrace: Duration { .milliseconds(500) }
    /// How long a detached capture waits for every worker to leave its rings.
    static var settleGrace: Duration { .milliseconds(500) }
}

/// One `ctl capture` client: its capture's rings, drained into pcapng blocks that wait in
/// `encoder` until the client's socket takes them.
///
/// `@unchecked Sendable`: made on the control loop's thread and handed (under a lock) to the
/// streamer's, which alone touches it from then on.
final class CaptureStream: @unchecked Sendable {
    let socket: UnixSocket
    let capture: CaptureAttachment
    let request: CaptureRequest
    /// The pcapng interfaces of the stream, in order: one per point the capture records.
    let interfaces: [CapturePoint]
    var encoder = PcapngEncoder()
    /// Bytes at the front of `encoder.bytes` the client has taken.
    var sent = 0
    var records = 0
    /// When `duration` runs out.
    let ends: ContinuousClock.Instant?
    /// Detached, waiting for every worker to leave its rings (or for `giveUpAt`).
    var settling: (version: Int, giveUpAt: ContinuousClock.Instant)?
    /// The statistics block is written: what is left is to send what waits, until `closeBy`.
    var closeBy: ContinuousClock.Instant?
    /// The client shut its sending side (Ctrl-C): its socket reads as at its end from then on,
    /// and is no longer polled for input (it would wake every turn at once).
    var inputEnded = false

    init(socket: UnixSocket, capture: CaptureAttachment, request: CaptureRequest, now: ContinuousClock.Instant) {
        self.socket = socket
        self.capture = capture
        self.request = request
        interfaces = [CapturePoint.inner, .outer, .drops].filter { request.point.includes($0) }
        ends = request.duration.map { now + .milliseconds(Int64($0 * 1000)) }
        encoder.bytes.reserveCapacity(CaptureStreamLimits.maximumPending + 65536)
        encoder.sectionHeader(application: "ferry ctl capture")
        for point in interfaces {
            encoder.interfaceDescription(snapshotLength: 262_144, name: point.rawValue, description: Self.describe(point))
        }
    }

    static func describe(_ point: CapturePoint) -> String {
        switch point {
        case .outer: "outer packets, as on the underlay"
        case .drops: "frames and packets ferry refused; the comment says why"
        default: "inner frames, as on the bridge"
        }
    }

    var pending: Int { encoder.bytes.count - sent }

    /// Records still wanted (`count`), or as many as there are.
    var wanted: Int { request.count.map { max(0, $0 - records) } ?? .max }

    /// Moves up to `limit` records from the rings into pcapng blocks.
    func drain(limit: Int) {
        let interfaces = self.interfaces
        records += capture.drain(limit: min(limit, wanted)) { record in
            let interface = interfaces.firstIndex(of: record.point) ?? 0
            encoder.enhancedPacket(interface: interface,
                                   timestamp: PacketTimestamp(seconds: record.seconds, microseconds: Int32(record.nanoseconds / 1000)),
                                   captured: record.bytes, originalLength: record.originalLength, comment: record.comment)
        }
    }

    /// Writes what the socket takes now; false when the client is gone (EPIPE, ECONNRESET).
    /// At the end, a client that takes bytes keeps the stream open (`closeBy` moves on).
    func send(now: ContinuousClock.Instant) -> Bool {
        guard pending > 0 else { return true }
        do {
            if let n = try socket.sendSome(encoder.bytes[sent...]).value, n > 0 {
                sent += n
                if closeBy != nil { closeBy = now + CaptureStreamLimits.closeGrace }
            }
        } catch {
            return false
        }
        if sent == encoder.bytes.count {
            encoder.bytes.removeAll(keepingCapacity: true)
            sent = 0
        } else if sent >= CaptureStreamLimits.maximumPending / 2 {
            encoder.bytes.removeFirst(sent)
            sent = 0
        }
        return true
    }

    /// The end of the stream: an interface statistics block with what was sent and lost.
    func finish(now: ContinuousClock.Instant) {
        let lost = capture.dropped
        let clock = Scheduling.wallClock()
        encoder.interfaceStatistics(interface: 0, timestamp: PacketTimestamp(seconds: clock.seconds,
                                                                             microseconds: Int32(clock.nanoseconds / 1000)),
                                    received: UInt64(records + lost), dropped: UInt64(lost),
                                    comment: CaptureStreamSummary.comment(records: records, lost: lost))
        closeBy = now + CaptureStreamLimits.closeGrace
    }
}

/// Serves every `ctl capture` stream from one thread: the control side's capture writer. Each
/// turn (a few milliseconds) it drains each capture's rings into pcapng blocks, sends what
/// each client's socket takes, and ends streams: at their count or duration, at once when the
/// client hangs up (POLLHUP, EPIPE: detached, nothing more written), gracefully when the client
/// shuts its sending side (Ctrl-C in `ferry ctl capture`) or the data plane stops. A client that
/// reads slower than its capture fills leaves its records in its rings until they are full,
/// then they are dropped there and counted (never a wait in a worker, nor for another
/// client); the last block of a stream says how many (`CaptureStreamSummary`).
final class CaptureStreamer<Source: ControlSource>: @unchecked Sendable {
    let source: Source
    let logger: Logger
    let clock = ContinuousClock()
    /// Streams handed over by the control loop, adopted by the streamer's thread.
    let arriving = EngineMutex<[CaptureStream]>([])
    let stopping = Atomic<Bool>(false)
    let done = DispatchSemaphore(value: 0)
    /// The streamer thread's own.
    var streams: [CaptureStream] = []


    init(source: Source, logger: Logger) {
        self.source = source
        self.logger = logger
        let thread = Thread { [self] in
            Scheduling.nameCurrentThread("ferry-capture-stream")
            run()
            done.signal()
        }
        thread.name = "ferry-capture-stream"
        thread.start()
    }

    /// Starts streaming `capture` to `socket` (whose request line has been read).
    func add(socket: UnixSocket, capture: CaptureAttachment, request: CaptureRequest) {
        let stream = CaptureStream(socket: socket, capture: capture, request: request, now: clock.now)
        arriving.withLock { $0.append(stream) }
    }

    /// Ends every stream (each gets its statistics block if its client takes it within the
    /// grace) and waits for the thread.
    func stop() {
        stopping.store(true, ordering: .releasing)
        _ = done.wait(timeout: .now() + .seconds(5))
    }

    func run() {
        var fds: [pollfd] = []
        while true {
            streams += arriving.withLock { a in defer { a.removeAll() }; return a }
            let stop = stopping.load(ordering: .acquiring) || source.isStopping
            if stop && streams.isEmpty && arriving.withLock({ $0.isEmpty }) { return }
            fds.removeAll(keepingCapacity: true)
            for s in streams {
                fds.append(pollfd(fd: s.socket.fd, events: (s.inputEnded ? 0 : Int16(POLLIN)) | (s.pending > 0 ? Int16(POLLOUT) : 0),
                                  revents: 0))
            }
            if fds.isEmpty {
                Scheduling.sleep(milliseconds: 5)
                continue
            }
            _ = poll(&fds, nfds_t(fds.count), 2)
            let now = clock.now
            var open: [CaptureStream] = []
            for (i, s) in streams.enumerated() {
                if serve(s, events: fds[i].revents, now: now, stop: stop) { open.append(s) }
            }
            streams = open
        }
    }

    /// One turn of stream `s`; false when it is over (its socket is closed as it is dropped).
    func serve(_ s: CaptureStream, events: Int16, now: ContinuousClock.Instant, stop: Bool) -> Bool {
        if events & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 { return gone(s) }
        if events & Int16(POLLIN) != 0 {
            var discard: [UInt8] = []
            // The client sends nothing after its line; the end of its sending asks to end.
            if let result = try? s.socket.receive(upTo: 256, appendingTo: &discard), result.value == 0 {
                s.inputEnded = true
                end(s, now: now)
            }
        }
        if s.settling == nil {
            if stop || s.ends.map({ now >= $0 }) == true { end(s, now: now) }
        }
        if s.settling == nil {
            // Bounded per turn, so that one busy capture cannot starve the others.
            if s.pending < CaptureStreamLimits.maximumPending { s.drain(limit: 4096) }
            if s.wanted == 0 { end(s, now: now) }
        }
        if let settling = s.settling, s.closeBy == nil,
           source.capturesSettled(settling.version) || now >= settling.giveUpAt {
            // No worker writes into the rings any more: their last records, and the loss count, are final.
            s.drain(limit: .max)
            s.finish(now: now)
        }
        guard s.send(now: now) else { return gone(s) }
        // Stopping: a client that does not take its last bytes at once does not hold up the exit.
        if stop, let closeBy = s.closeBy, closeBy > now + CaptureStreamLimits.stopGrace { s.closeBy = now + CaptureStreamLimits.stopGrace }
        if let closeBy = s.closeBy, s.pending == 0 || now >= closeBy {
            logger.info("control: capture \(s.capture.id) (\(s.request.point.rawValue)) ended: \(s.records) records, \(s.capture.dropped) lost")
            return false
        }
        return true
    }

    /// Detaches `s`'s capture (once); from now on its records are the last.
    func end(_ s: CaptureStream, now: ContinuousClock.Instant) {
        guard s.settling == nil else { return }
        s.settling = (source.detachCapture(s.capture), now + CaptureStreamLimits.settleGrace)
    }

    /// The client went away: detached at once, nothing more written.
    func gone(_ s: CaptureStream) -> Bool {
        if s.settling == nil { _ = source.detachCapture(s.capture) }
        logger.info("control: capture \(s.capture.id) (\(s.request.point.rawValue)): the client went away after \(s.records) records")
        return false
    }
}

/// What the last block of a `ctl capture` stream says, and how the client reads it back as the
/// stream passes through: the enhanced packet blocks counted, the closing interface statistics
/// block's `isb_ifdrop` taken.
public struct CaptureStreamSummary: Sendable {
    /// Enhanced packet blocks seen.
    public private(set) var records = 0
    /// Records the ferry lost (its rings full: the reader too slow); nil until the closing block.
    public private(set) var lost: Int?
    /// The header of the block being read, while incomplete; then the bytes of its body left,
    /// and that body itself when it is an interface statistics block (its options hold the count).
    var header: [UInt8] = []
    var remaining = 0
    var keeping = false
    var body: [UInt8] = []

    public init() {}

    public static func comment(records: Int, lost: Int) -> String {
        "ferry: \(records) records, \(lost) lost (reader too slow)"
    }

    /// What the client prints at the end, on standard error.
    public var report: String {
        guard let lost else { return "\(records) records (the stream ended before the ferry's count of lost records)" }
        return "\(records) records, \(lost) lost (reader too slow)"
    }

    /// Reads the next bytes of the stream (in the host's byte order, as the server writes it).
    public mutating func consume(_ bytes: UnsafeRawBufferPointer) {
        var i = 0
        while i < bytes.count {
            if remaining > 0 {
                let n = min(remaining, bytes.count - i)
                if keeping { body += bytes[i..<(i + n)] }
                remaining -= n
                i += n
                if remaining == 0 && keeping { readStatistics() }
                continue
            }
            let n = min(8 - header.count, bytes.count - i)
            header += bytes[i..<(i + n)]
            i += n
            guard header.count == 8 else { continue }
            let type = header.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            let length = Int(header.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) })
            header.removeAll(keepingCapacity: true)
            remaining = max(0, length - 8)
            if type == Pcapng.enhancedPacketType { records += 1 }
            keeping = type == Pcapng.interfaceStatisticsType && length <= 1024
            if remaining == 0 && keeping { readStatistics() }
        }
    }

    /// The interface statistics block in `body` (interface, timestamp, options, length): its
    /// `isb_ifdrop`.
    mutating func readStatistics() {
        defer { body.removeAll(); keeping = false }
        var o = 12
        while o + 4 <= body.count - 4 {
            let code = UInt16(body[o]) | UInt16(body[o + 1]) << 8
            let length = Int(UInt16(body[o + 2]) | UInt16(body[o + 3]) << 8)
            if code == 0 { break }
            if code == 5 && length == 8 && o + 12 <= body.count {
                lost = Int(body[(o + 4)..<(o + 12)].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
            }
            o += 4 + ((length + 3) & ~3)
        }
    }
}
