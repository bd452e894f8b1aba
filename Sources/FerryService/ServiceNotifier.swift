import Dispatch
import FerryLinux
import Foundation

/// The service manager's notify protocol (`sd_notify(3)`), as a `Type=notify` unit expects it:
/// newline-separated `KEY=VALUE` fields in one datagram to the socket named by
/// `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). `READY=1` once the daemon
/// does its job, `STATUS=` lines for `systemctl status`, `STOPPING=1` when it begins to stop,
/// and `WATCHDOG=1` keep-alives when the unit sets `WatchdogSec=` (systemd passes the interval
/// as `$WATCHDOG_USEC`, and `$WATCHDOG_PID` when it is meant for one process only).
///
/// Without `$NOTIFY_SOCKET` (not started by systemd) every call does nothing. A send that fails
/// is reported to `onError` (the first only) and never stops the daemon: the protocol is advice
/// to the manager.
public final class ServiceNotifier: @unchecked Sendable {
    /// Where the datagrams go; nil when no service manager asked for them.
    public let socket: String?
    /// How often the manager wants a keep-alive at the latest (`$WATCHDOG_USEC`); nil for none.
    public let watchdogTimeout: Duration?
    let onError: @Sendable (String) -> Void
    let lock = NSLock()
    var timer: DispatchSourceTimer?
    var errorReported = false

    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` from `environment`; the
    /// watchdog is ours when `$WATCHDOG_PID` is unset or `pid`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment, pid: Int32 = getpid(),
                onError: @escaping @Sendable (String) -> Void = { _ in }) {
        let name = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socket = name
        self.onError = onError
        let mine = environment["WATCHDOG_PID"].map { Int32($0) == pid } ?? true
        if name != nil, mine, let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 {
            watchdogTimeout = .microseconds(usec)
        } else {
            watchdogTimeout = nil
        }
    }

    public var isEnabled: Bool { socket != nil }

    /// Sends `fields` (`KEY=VALUE` each) in one datagram; true when it went (or there is no
    /// manager to tell). A value holding a newline is cut there: the protocol is line-based.
    @discardableResult
    public func notify(_ fields: [String]) -> Bool {
        guard let socket else { return true }
        let text = fields.map { $0.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? "" }
            .joined(separator: "\n")
        do {
            try UnixDatagram.send(Array(text.utf8), to: socket)
            return true
        } catch {
            // Once: a manager that has gone away would otherwise fill the log.
            if lock.withLock({ () -> Bool in defer { errorReported = true }; return !errorReported }) {
                onError("cannot tell the service manager \(fields.first ?? ""): \(error) (further failures are not logged)")
            }
            return false
        }
    }

    /// The daemon does its job now.
    public func ready(status: String? = nil) { notify(["READY=1"] + (status.map { ["STATUS=\($0)"] } ?? [])) }

    /// A line for `systemctl status`.
    public func status(_ text: String) { notify(["STATUS=\(text)"]) }

    /// The daemon begins to stop; ends the watchdog.
    public func stopping(status: String? = nil) {
        stopWatchdog()
        notify(["STOPPING=1"] + (status.map { ["STATUS=\($0)"] } ?? []))
    }

    /// How often `startWatchdog` checks and sends: half the manager's timeout, so that one late
    /// tick still arrives in time.
    public var watchdogInterval: Duration? { watchdogTimeout.map { $0 / 2 } }

    /// What a watchdog check found.
    public enum Health: Sendable, Equatable {
        case alive
        /// The daemon cannot do its job (a worker wedged, the engine stopping): no keep-alive.
        case failing(String)
    }

    /// Sends `WATCHDOG=1` every `watchdogInterval`, from a timer of its own (never a worker's
    /// thread), each time `check` says the daemon is alive; withholds it while `check` says
    /// otherwise, so that the manager restarts the daemon when the timeout passes. `onChange`
    /// hears each change between alive and failing, once. Does nothing without a watchdog.
    public func startWatchdog(check: @escaping @Sendable () -> Health, onChange: @escaping @Sendable (Health) -> Void = { _ in }) {
        guard let interval = watchdogInterval else { return }
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "ferry-watchdog"))
        let nanoseconds = max(1_000_000, Int(interval.components.seconds) * 1_000_000_000 + Int(interval.components.attoseconds / 1_000_000_000))
        // Not-yet-alive (the first tick) counts as a change only when it is not alive.
        let last = NSLock(), state = Box(Health.alive)
        t.schedule(deadline: .now() + .nanoseconds(nanoseconds), repeating: .nanoseconds(nanoseconds), leeway: .milliseconds(10))
        t.setEventHandler { [self] in
            let health = check()
            let changed = last.withLock { () -> Bool in
                defer { state.value = health }
                return state.value != health
            }
            if changed { onChange(health) }
            if health == .alive { notify(["WATCHDOG=1"]) }
        }
        lock.withLock {
            timer?.cancel()
            timer = t
        }
        t.resume()
    }

    /// Ends the keep-alives (`stopping` does it too).
    public func stopWatchdog() {
        lock.withLock {
            timer?.cancel()
            timer = nil
        }
    }

    final class Box<T>: @unchecked Sendable {
        var value: T
        init(_ value: T) { self.value = value }
    }
}
