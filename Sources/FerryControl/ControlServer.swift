import FerryCapture
import FerryEngine
import FerryLinux
import Foundation
import Logging
import Synchronization

/// What the control server reads: a running engine, or a test's stand-in for one.
public protocol ControlSource: AnyObject, Sendable {
    /// True once the data plane is stopping: the server then closes every connection and ends.
    var isStopping: Bool { get }
    /// Every counter now (`ferry ctl stats`).
    func statistics() -> Statistics
    /// The forwarding table, read without holding the workers' lock for O(table) time
    /// (`ferry ctl fdb`).
    func forwardingSnapshot() -> ForwardingSnapshot
    /// Makes `change` (`ferry ctl peer|fdb add|del`, `reload`), off the server's loop (on a
    /// queue of its own, one change at a time): what was done, or a refusal's message when
    /// nothing was. By default every change is refused.
    func perform(_ change: ControlChange) -> Result<ControlChangeReport, ControlChangeRefusal>
    /// What the data path would do with `frame` going `direction` (`ferry ctl trace`), walked
    /// through the engine's state without sending or changing anything. By default refused.
    func trace(_ frame: [UInt8], _ direction: TraceDirection) -> Result<TraceReport, ControlChangeRefusal>
    /// Membership (`ferry ctl members`) as the JSON of its reply; nil (the default) when the
    /// ferry keeps no membership (no `--etcd`).
    func membersReply() -> String?
    /// Attaches a capture for a `capture` request (`ferry ctl capture`), or says why not. By
    /// default every capture is refused.
    func attachCapture(point: CapturePoint, filter: PacketFilter?) -> Result<CaptureAttachment, ControlChangeRefusal>
    /// Detaches a capture; returns the version `capturesSettled` must reach before its rings
    /// take no more records.
    func detachCapture(_ capture: CaptureAttachment) -> Int
    /// Whether every worker has left the captures detached at `version` behind.
    func capturesSettled(_ version: Int) -> Bool
}

/// Why a change was not made at all.
public struct ControlChangeRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(_ message: String) { self.message = message }
}

extension ControlSource {
    public func membersReply() -> String? { nil }

    public func perform(_ change: ControlChange) -> Result<ControlChangeReport, ControlChangeRefusal> {
        .failure(ControlChangeRefusal("this ferry takes no changes over its control socket"))
    }

    public func trace(_ frame: [UInt8], _ direction: TraceDirection) -> Result<TraceReport, ControlChangeRefusal> {
        .failure(ControlChangeRefusal("this ferry cannot trace"))
    }

    public func attachCapture(point: CapturePoint, filter: PacketFilter?) -> Result<CaptureAttachment, ControlChangeRefusal> {
        .failure(ControlChangeRefusal("this ferry takes no captures over its control socket"))
    }
    public func detachCapture(_ capture: CaptureAttachment) -> Int { 0 }
    public func capturesSettled(_ version: Int) -> Bool { true }
}

/// A control source that adds to another (set-up's routes in the statistics, membership's
/// `members`): whatever it does not implement itself goes to `wrapped`, every request included,
/// so that no request of the run's source is refused by a wrapper that forgot it (a wrapper
/// that listed its forwards by hand lost `trace` and the captures).
public protocol WrappingControlSource: ControlSource {
    var wrapped: any ControlSource { get }
}

extension WrappingControlSource {
    public var isStopping: Bool { wrapped.isStopping }
    public func statistics() -> Statistics { wrapped.statistics() }
    public func forwardingSnapshot() -> ForwardingSnapshot { wrapped.forwardingSnapshot() }
    public func perform(_ change: ControlChange) -> Result<ControlChangeReport, ControlChangeRefusal> { wrapped.perform(change) }
    public func trace(_ frame: [UInt8], _ direction: TraceDirection) -> Result<TraceReport, ControlChangeRefusal> {
        wrapped.trace(frame, direction)
    }
    public func membersReply() -> String? { wrapped.membersReply() }
    public func attachCapture(point: CapturePoint, filter: PacketFilter?) -> Result<CaptureAttachment, ControlChangeRefusal> {
        wrapped.attachCapture(point: point, filter: filter)
    }
    public func detachCapture(_ capture: CaptureAttachment) -> Int { wrapped.detachCapture(capture) }
    public func capturesSettled(_ version: Int) -> Bool { wrapped.capturesSettled(version) }
}

extension Engine: ControlSource {
    public func forwardingSnapshot() -> ForwardingSnapshot { state.forwardingSnapshot() }

    public func attachCapture(point: CapturePoint, filter: PacketFilter?) -> Result<CaptureAttachment, ControlChangeRefusal> {
        state.captures.attachForControl(point: point, filter: filter)
    }

    public func capturesSettled(_ version: Int) -> Bool { state.captures.workersHaveSeen(version) }
}

extension CaptureHub {
    /// `attach` as a control source answers a `capture` request: the capture, or a refusal.
    public func attachForControl(point: CapturePoint, filter: PacketFilter?) -> Result<CaptureAttachment, ControlChangeRefusal> {
        guard let capture = attach(point: point, filter: filter) else {
            return .failure(ControlChangeRefusal("""
                \(CaptureHub.maximumAttached) captures are attached, the most at once; end one and try again
                """))
        }
        return .success(capture)
    }
}

/// Answers `ferry ctl` over a Unix socket: a request line, a JSON reply (`ControlRequest`), then
/// the server closes the connection.
///
/// One thread, one `poll` loop, every socket non-blocking: many clients are served at once and
/// none can hold the others, forwarding, or shutdown. Each connection has a whole-request
/// deadline (from accept to a complete line, however the bytes trickle in), a bounded request
/// (`ControlRequest.maximumLength`), and a reply deadline (to have written the whole reply, in
/// whatever pieces the client takes); past either, the server closes it. Connections beyond
/// `Limits.maximumConnections` are refused at once. Long replies (`fdb`) are rendered a piece at a
/// time as the client takes them, from a snapshot read a bounded piece per hold of the workers'
/// lock; the snapshot (a copy and a sort of up to 2^21 slots) is taken on a queue of its own, one
/// at a time, shared by the `fdb` requests that come while it is taken (and within
/// `Limits.snapshotReuse` after, zero by default), while the loop serves the others. When the source stops (or
/// `stop()`), every connection is closed within one turn of the loop (a tenth of a second at
/// most) and the socket file removed.
///
/// `@unchecked Sendable`: the listener, the connections and the loop's state are the server
/// thread's alone; what other threads touch (`stop()`, the counts) is a socket write or atomic.
public final class ControlServer: @unchecked Sendable {
    /// How long clients may take, and how many may be connected at once.
    public struct Limits: Sendable {
        /// From accept to a complete request line.
        public var requestDeadline: Duration = .seconds(2)
        /// From the request to the last byte of the reply taken by the client.
        public var replyDeadline: Duration = .seconds(5)
        /// More for a long `fdb` reply, per 100 000 entries (it takes a reading client well
        /// under a second each; a client that stops reading is closed all the same).
        public var replyDeadlinePer100kEntries: Duration = .seconds(5)
        /// Connections open at once; one more is refused with a one-line error and closed.
        public var maximumConnections = 64
        /// A forwarding-table snapshot serves the `fdb` requests that come while it is taken (so
        /// that many at once cost one reading of the table) and, beyond them, those that come
        /// within this long after it. Zero by default: a client that asks after a change (a
        /// ping, then `ferry ctl fdb`) must see it, not a table read before.
        public var snapshotReuse: Duration = .zero
        public init() {}
    }

    /// What the server has refused or cut short since it started.
    public struct Counts: Sendable, Equatable {
        /// Connections closed at once, `maximumConnections` being open.
        public var refusedConnections = 0
        /// Clients that sent no complete request line within the request deadline.
        public var requestTimeouts = 0
        /// Clients that did not take their whole reply within the reply deadline.
        public var replyTimeouts = 0
        /// Replies written whole.
        public var replies = 0
    }

    public let path: String
    public let limits: Limits
    let listener: UnixSocket
    /// The loop polls `wakeReceiver`; `stop()` writes to `wakeSender`.
    let wakeReceiver: UnixSocket, wakeSender: UnixSocket
    let stopRequested = Atomic<Bool>(false)
    let countsLock = EngineMutex(Counts())
    let finished = DispatchGroup()

    /// Creates the socket at `path` (see `UnixSocket.listen`: mode 0600, and never over anything
    /// but a stale socket). Nothing is answered before `start`.
    public init(path: String, limits: Limits = Limits()) throws(LinuxError) {
        self.path = path
        self.limits = limits
        listener = try UnixSocket.listen(at: path, backlog: Int32(max(16, min(limits.maximumConnections, 1024))))
        (wakeReceiver, wakeSender) = try UnixSocket.pair()
    }

    deinit { listener.removeBoundFile() }

    public var counts: Counts { countsLock.withLock { $0 } }

    /// Serves `source` on a thread of its own until it stops or `stop()` is called; then closes
    /// every connection and removes the socket file.
    public func start(serving source: some ControlSource, logger: Logger) {
        finished.enter()
        let t = Thread { [self] in
            defer { finished.leave() }
            let loop = ControlLoop(server: self, source: source, logger: logger)
            loop.run()
            listener.removeBoundFile()
        }
        t.name = "ferry-control"
        t.start()
    }

    /// Asks the loop to end now (it does so by itself when the source stops).
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        wake()
    }

    /// Wakes the loop from its poll (a stop, a snapshot taken).
    func wake() { _ = try? wakeSender.sendSome([1]) }

    var isStopRequested: Bool { stopRequested.load(ordering: .acquiring) }

    /// Waits until the server has stopped (after the source, or `stop()`) and removed its socket.
    public func wait() { finished.wait() }

    /// Removes the socket of a server that was never started (its owner failed to start).
    public func close() { listener.removeBoundFile() }

    func count(_ update: (inout Counts) -> Void) { countsLock.withLock { update(&$0) } }
}
