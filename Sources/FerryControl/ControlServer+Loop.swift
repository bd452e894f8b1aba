import Dispatch
import FerryCapture
import FerryEngine
import FerryLinux
import Glibc
import Logging
import Synchronization

/// A snapshot taken off the loop's thread, waiting for the loop to pick it up.
final class SnapshotHandoff: Sendable {
    let value = EngineMutex<ForwardingSnapshot?>(nil)
}

/// Changes made off the loop's thread, each reply waiting for the loop to pick it up (by its
/// connection).
final class ChangeHandoff: Sendable {
    let replies = EngineMutex<[(ticket: Int, reply: String)]>([])
}

/// The control server's one event loop: `poll` over the wake socket, the listener and every
/// connection, each turn bounded (a tenth of a second at most of waiting, a bounded piece of
/// work per connection), so that a stop is seen at once and no client waits on another.
final class ControlLoop<Source: ControlSource> {
    let server: ControlServer
    let limits: ControlServer.Limits
    let source: Source
    let logger: Logger
    let clock = ContinuousClock()
    var connections: [ControlConnection] = []
    /// The last forwarding-table snapshot, shared by the `fdb` requests that come soon after it.
    var snapshot: (taken: ContinuousClock.Instant, value: ForwardingSnapshot)?
    /// A snapshot being taken on `snapshotQueue`, handed over here when done (the loop is woken).
    let snapshotHandoff = SnapshotHandoff()
    var snapshotInProgress = false
    /// Where snapshots are taken: copying and sorting a table of 2^20 entries takes a while,
    /// which the loop spends serving the others.
    let snapshotQueue = DispatchQueue(label: "ferry-control-snapshot")
    /// Where changes are made, one at a time and in the order asked (a reload reads a file,
    /// a peer's removal sweeps the forwarding table), while the loop serves the others.
    let changeQueue = DispatchQueue(label: "ferry-control-change")
    let changeHandoff = ChangeHandoff()
    /// Where `stats` is answered: reading batch times waits on the workers (see `statistics()`).
    let statisticsQueue = DispatchQueue(label: "ferry-control-statistics")
    /// Numbers the changes asked for, so that each reply finds its connection.
    var changesAsked = 0
    /// Accepting pauses after the process ran out of descriptors (the listener would otherwise
    /// wake every turn).
    var acceptResumes: ContinuousClock.Instant?
    /// The capture writer, made at the first `capture` request; it serves every stream.
    var streamer: CaptureStreamer<Source>?
    /// Notices of refusals and time-outs: at most one a second of each, with how many.
    var notices: [String: (unlogged: Int, last: ContinuousClock.Instant?)] = [:]

    /// The longest a turn waits: a stop of the source is seen within this.
    static var turn: Duration { .milliseconds(100) }
    /// Connections accepted per turn at most, so that a flood of them cannot starve the others.
    static var acceptsPerTurn: Int { 64 }

    init(server: ControlServer, source: Source, logger: Logger) {
        self.server = server
        limits = server.limits
        self.source = source
        self.logger = logger
    }

    /// Serves until the source stops or the server is asked to; then closes every connection.
    func run() {
        var fds: [pollfd] = []
        while !source.isStopping && !server.isStopRequested {
            let now = clock.now
            expire(now: now)
            if let resume = acceptResumes, resume <= now { acceptResumes = nil }
            if let s = snapshot, now - s.taken >= limits.snapshotReuse { snapshot = nil }

            fds.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: server.wakeReceiver.fd, events: Int16(POLLIN), revents: 0))
            fds.append(pollfd(fd: server.listener.fd, events: acceptResumes == nil ? Int16(POLLIN) : 0, revents: 0))
            for c in connections {
                // One waiting for a snapshot is polled for nothing: its hang-up still shows.
                fds.append(pollfd(fd: c.socket.fd, events: c.isWriting ? Int16(POLLOUT) : c.isReading ? Int16(POLLIN) : 0,
                                  revents: 0))
            }
            let ready = poll(&fds, nfds_t(fds.count), timeout(now: now))
            if ready < 0 {
                if errno != EINTR { logger.error("control socket: poll failed: \(String(cString: strerror(errno)))") }
                continue
            }
            if ready == 0 { continue }
            if fds[0].revents != 0 {
                var drained: [UInt8] = []
                _ = try? server.wakeReceiver.receive(upTo: 64, appendingTo: &drained)
            }
            var open: [ControlConnection] = []
            open.reserveCapacity(connections.count)
            for (i, c) in connections.enumerated() {
                if fds[i + 2].revents == 0 || serve(c, events: fds[i + 2].revents) { open.append(c) }
            }
            connections = open
            if let taken = snapshotHandoff.value.withLock({ v in defer { v = nil }; return v }) { deliver(taken) }
            deliverChanges()
            if fds[1].revents != 0 { acceptWaiting() }
        }
        let open = connections.count
        connections.removeAll()  // closes every client's socket, whatever it was doing
        streamer?.stop()
        let c = server.counts
        logger.debug("""
            control socket closed with \(open) connection(s) open; \(c.replies) replies, \(c.refusedConnections) connections \
            refused, \(c.requestTimeouts) request and \(c.replyTimeouts) reply time-outs
            """)
    }

    /// Milliseconds to wait: to the nearest deadline, a turn at most.
    func timeout(now: ContinuousClock.Instant) -> Int32 {
        var until = now + Self.turn
        for c in connections where c.deadline < until { until = c.deadline }
        if let resume = acceptResumes, resume < until { until = resume }
        let (seconds, attoseconds) = (until - now).components
        return Int32(clamping: max(0, seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000))
    }

    /// Moves connection `c` on as far as it goes now that poll said `events`; false when it is
    /// over (and to be closed).
    func serve(_ c: ControlConnection, events: Int16) -> Bool {
        switch c.phase {
        case .awaitingSnapshot, .awaitingChange:
            return events & Int16(POLLHUP | POLLERR) == 0
        case .writing:
            return write(c)
        case .reading:
            switch c.read() {
            case .waiting:
                return true
            case .failed(let e):
                logger.debug("control connection: \(e)")
                return false
            case .line(let line):
                switch capture(in: line, for: c) {
                case .notCapture: break
                case .streaming: return false  // the streamer has the socket now
                case .refused(let refusal):
                    begin(refusal, on: c)
                    return write(c)
                }
                if (try? ControlRequest(line: line)) == .stats {
                    // Off the loop: reading the workers' batch times waits for each to reach a
                    // batch boundary (a tenth of a second for an idle one), which would hold up
                    // every other client and capture stream.
                    answerOffLoop(c, on: statisticsQueue, within: Self.statisticsDeadline) { [source] in
                        ControlReply.encode(source.statistics())
                    }
                    return true
                }
                if let change = change(in: line, for: c) {
                    guard let refusal = change else { return true }  // being made: the reply comes then
                    begin(refusal, on: c)
                    return write(c)
                }
                guard let reply = reply(to: line) else {
                    // The snapshot is being taken: the reply begins when it comes.
                    c.phase = .awaitingSnapshot
                    c.deadline = clock.now + Self.snapshotDeadline
                    return true
                }
                begin(reply, on: c)
                return write(c)
            }
        }
    }

    /// The longest a snapshot may take (far longer than a table of 2^20 entries needs).
    static var snapshotDeadline: Duration { .seconds(60) }

    /// Starts writing `reply` to `c`, with its deadline: more for a longer forwarding table.
    func begin(_ reply: ReplyStream, on c: ControlConnection) {
        var deadline = clock.now + limits.replyDeadline
        if let entries = reply.snapshot?.count {
            deadline += limits.replyDeadlinePer100kEntries * (Double(entries) / 100_000)
        }
        c.phase = .writing(reply)
        c.deadline = deadline
    }

    /// A snapshot taken: the `fdb` replies waiting for it begin.
    func deliver(_ taken: ForwardingSnapshot) {
        snapshotInProgress = false
        snapshot = (clock.now, taken)
        var open: [ControlConnection] = []
        for c in connections {
            guard case .awaitingSnapshot = c.phase else { open.append(c); continue }
            begin(ReplyStream(forwarding: taken), on: c)
            if write(c) { open.append(c) }
        }
        connections = open
    }

    /// Writes what `c`'s socket takes now; false when the reply is over (written, or failed).
    func write(_ c: ControlConnection) -> Bool {
        switch c.write() {
        case .blocked:
            return true
        case .done:
            server.count { $0.replies += 1 }
            return false
        case .failed(let e):
            // A client that left before its reply: EPIPE or ECONNRESET, nothing to do.
            logger.debug("control connection: \(e)")
            return false
        }
    }

    enum CaptureOutcome {
        case notCapture
        /// Handed to the streamer, which writes pcapng to the client from now on.
        case streaming
        case refused(ReplyStream)
    }

    /// If `line` asks for a capture: its filter compiled, attached, and `c`'s socket handed to
    /// the streamer; or a refusal saying what is wrong (before any pcapng).
    func capture(in line: String, for c: ControlConnection) -> CaptureOutcome {
        let request: CaptureRequest
        do {
            guard let parsed = try CaptureRequest(line: line) else { return .notCapture }
            request = parsed
        } catch {
            return .refused(ReplyStream(ControlReply.refusal(error.description)))
        }
        var filter: PacketFilter?
        if let expression = request.filter {
            do {
                filter = try PacketFilter(expression: expression)
            } catch {
                return .refused(ReplyStream(ControlReply.refusal("capture: \(error)")))
            }
        }
        switch source.attachCapture(point: request.point, filter: filter) {
        case .failure(let refusal):
            return .refused(ReplyStream(ControlReply.refusal(refusal.message)))
        case .success(let attachment):
            if streamer == nil { streamer = CaptureStreamer(source: source, logger: logger) }
            streamer!.add(socket: c.socket, capture: attachment, request: request)
            logger.info("""
                control: capture \(attachment.id) attached: \(request.point.rawValue)\(request.filter.map { ", filter '\($0)'" } ?? "")\
                \(request.count.map { ", \($0) records" } ?? "")\(request.duration.map { ", \($0) s" } ?? "")
                """)
            return .streaming
        }
    }

    /// The longest a change may take to be made (a reload reads a file) before its client is
    /// closed; the change goes on all the same.
    static var changeDeadline: Duration { .seconds(30) }

    /// If `line` asks for a change: nil inside when it is being made for `c` on the change
    /// queue (its reply comes through `changeHandoff`), or the refusal of a malformed one. Nil
    /// for any other line.
    func change(in line: String, for c: ControlConnection) -> ReplyStream?? {
        let change: ControlChange
        do {
            guard let parsed = try ControlChange(line: line) else { return nil }
            change = parsed
        } catch {
            return .some(ReplyStream(ControlReply.refusal(error.description)))
        }
        answerOffLoop(c, on: changeQueue, within: Self.changeDeadline) { [source, logger] in
            switch source.perform(change) {
            case .success(let report):
                logger.info("control: \(change.line.dropLast()): \((report.applied + report.failed).joined(separator: "; "))")
                return ControlReply.encode(report)
            case .failure(let refusal):
                logger.notice("control: \(change.line.dropLast()) refused: \(refusal.message)")
                return ControlReply.refusal(refusal.message)
            }
        }
        return .some(nil)
    }

    /// The longest `stats` may take (each worker's batch times are waited for half a second
    /// at most).
    static var statisticsDeadline: Duration { .seconds(10) }

    /// Answers `c` with what `work` returns, computed on `queue` while the loop serves the
    /// others: the reply comes through `changeHandoff`, and `c` is closed if it is not there
    /// within `deadline`.
    func answerOffLoop(_ c: ControlConnection, on queue: DispatchQueue, within deadline: Duration,
                       _ work: @escaping @Sendable () -> String) {
        c.phase = .awaitingChange
        c.deadline = clock.now + deadline
        changesAsked += 1
        let ticket = changesAsked
        c.changeTicket = ticket
        queue.async { [changeHandoff, server] in
            let reply = work()
            changeHandoff.replies.withLock { $0.append((ticket, reply)) }
            server.wake()
        }
    }

    /// Changes made: their replies begin (a client that left meanwhile is not there to take its).
    func deliverChanges() {
        let done = changeHandoff.replies.withLock { r in defer { r.removeAll() }; return r }
        guard !done.isEmpty else { return }
        var open: [ControlConnection] = []
        for c in connections {
            guard case .awaitingChange = c.phase, let reply = done.first(where: { $0.ticket == c.changeTicket })
            else { open.append(c); continue }
            begin(ReplyStream(reply.reply), on: c)
            if write(c) { open.append(c) }
        }
        connections = open
    }

    /// The reply to a request line: the value asked for, or a refusal saying what to ask; nil
    /// for an `fdb` whose snapshot is being taken (a recent one serves if there is one).
    func reply(to line: String) -> ReplyStream? {
        if let trace = traceReply(to: line) { return trace }
        let request: ControlRequest
        do {
            request = try ControlRequest(line: line)
        } catch {
            return ReplyStream(ControlReply.refusal(error.description))
        }
        switch request {
        case .stats:
            return ReplyStream(ControlReply.encode(source.statistics()))  // (answered off the loop before this)
        case .members:
            return ReplyStream(source.membersReply()
                ?? ControlReply.refusal("this ferry was started without --etcd: its peers are those given, with no membership to show"))
        case .fdb:
            if let s = snapshot, clock.now - s.taken < limits.snapshotReuse { return ReplyStream(forwarding: s.value) }
            if !snapshotInProgress {
                snapshotInProgress = true
                snapshotQueue.async { [source, snapshotHandoff, server] in
                    let taken = source.forwardingSnapshot()
                    snapshotHandoff.value.withLock { $0 = taken }
                    server.wake()
                }
            }
            return nil
        }
    }

    /// Closes the connections whose deadline has passed: a request not complete in time gets
    /// a one-line refusal if its socket takes it at once; a reply not taken in time is cut.
    func expire(now: ContinuousClock.Instant) {
        guard connections.contains(where: { $0.deadline <= now }) else { return }
        connections.removeAll { c in
            guard c.deadline <= now else { return false }
            if !c.isReading {
                server.count { $0.replyTimeouts += 1 }
                notice("reply-timeout", now: now) { n in
                    "control socket: closed \(n) client(s) that did not take their reply within \(self.limits.replyDeadline)"
                }
            } else {
                server.count { $0.requestTimeouts += 1 }
                notice("request-timeout", now: now) { n in
                    "control socket: closed \(n) client(s) that sent no complete request line within \(self.limits.requestDeadline)"
                }
                let refusal = ControlReply.refusal("no complete request line within \(limits.requestDeadline); send "
                                                   + ControlRequest.choices + " and a newline")
                _ = try? c.socket.sendSome(ArraySlice(refusal.utf8))
            }
            return true
        }
    }

    /// Accepts what waits, up to `acceptsPerTurn`; past `maximumConnections`, each new one is
    /// told so in one line (if its socket takes it at once) and closed.
    func acceptWaiting() {
        let now = clock.now
        for _ in 0..<Self.acceptsPerTurn {
            let accepted: UnixSocket?
            do {
                accepted = try server.listener.acceptNonBlocking()
            } catch {
                switch error.errno {
                case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
                    acceptResumes = now + Self.turn
                    notice("accept", now: now) { _ in "control socket: cannot accept: \(error); pausing a tenth of a second" }
                default:
                    logger.debug("control socket: \(error)")
                }
                return
            }
            guard let socket = accepted else { return }
            guard connections.count < limits.maximumConnections else {
                server.count { $0.refusedConnections += 1 }
                notice("refused", now: now) { n in
                    "control socket: refused \(n) connection(s): \(self.limits.maximumConnections) are open, the most served at once"
                }
                let refusal = ControlReply.refusal("busy: \(limits.maximumConnections) control connections are open; try again")
                _ = try? socket.sendSome(ArraySlice(refusal.utf8))
                continue
            }
            connections.append(ControlConnection(socket: socket, deadline: now + limits.requestDeadline))
        }
    }

    /// Logs `message(count)` for an event of `kind`, at most once a second with how many there
    /// were since the last line (the totals are in `ControlServer.counts`).
    func notice(_ kind: String, now: ContinuousClock.Instant, _ message: (Int) -> String) {
        var entry = notices[kind] ?? (0, nil)
        entry.unlogged += 1
        if entry.last.map({ now - $0 >= .seconds(1) }) ?? true {
            logger.notice("\(message(entry.unlogged))")
            entry = (0, now)
        }
        notices[kind] = entry
    }
}
