import FerryLinux
import FerryService
import Foundation
import Testing

@Suite struct ServiceNotifierTests {
    static func scratch(_ tag: String) -> String { "/tmp/ferry-notify-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock" }

    /// The datagrams `receiver` gets within `seconds`, each as text.
    static func drain(_ receiver: UnixDatagramReceiver, seconds: Double) throws -> [(Date, String)] {
        var got: [(Date, String)] = []
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            let left = Int32(max(1, end.timeIntervalSinceNow * 1000))
            if let d = try receiver.receive(milliseconds: left) { got.append((Date(), String(decoding: d, as: UTF8.self))) }
        }
        return got
    }

    /// $WATCHDOG_USEC counts for this process only when $WATCHDOG_PID is unset or its pid; no
    /// $NOTIFY_SOCKET means no manager at all (every call a no-op).
    @Test func readsTheEnvironmentAsSdNotifyDoes() {
        let base = ["NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"]
        #expect(ServiceNotifier(environment: base, pid: 42).watchdogTimeout == .seconds(30))
        #expect(ServiceNotifier(environment: base, pid: 42).watchdogInterval == .seconds(15))
        #expect(ServiceNotifier(environment: base.merging(["WATCHDOG_PID": "42"]) { $1 }, pid: 42).watchdogTimeout == .seconds(30))
        #expect(ServiceNotifier(environment: base.merging(["WATCHDOG_PID": "41"]) { $1 }, pid: 42).watchdogTimeout == nil)
        #expect(ServiceNotifier(environment: base.merging(["WATCHDOG_USEC": "0"]) { $1 }, pid: 42).watchdogTimeout == nil)
        let none = ServiceNotifier(environment: ["WATCHDOG_USEC": "30000000"], pid: 42)
        #expect(!none.isEnabled && none.watchdogTimeout == nil)
        #expect(none.notify(["READY=1"]))
    }

    /// One datagram per call, fields joined by newlines, to a path and to an abstract name (a
    /// leading '@'); a newline inside a value cannot inject a field.
    @Test(arguments: [false, true]) func sendsOneDatagramPerCall(abstract: Bool) throws {
        let name = abstract ? "@ferry-notify-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" : Self.scratch("plain")
        let receiver = try UnixDatagramReceiver(name: name)
        if !abstract { #expect(FileManager.default.fileExists(atPath: name)) }
        let n = ServiceNotifier(environment: ["NOTIFY_SOCKET": name])
        n.ready(status: "forwarding")
        n.status("2 peers\nREADY=0")
        n.stopping()
        let got = try Self.drain(receiver, seconds: 0.5).map(\.1)
        #expect(got == ["READY=1\nSTATUS=forwarding", "STATUS=2 peers", "STOPPING=1"])
    }

    /// What systemd's own client sends for the same notice is what Ferry sends: the test's
    /// receiver hears `systemd-notify` and `ServiceNotifier` alike.
    @Test func sendsWhatSystemdNotifySends() throws {
        let name = Self.scratch("sdnotify")
        let receiver = try UnixDatagramReceiver(name: name)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["NOTIFY_SOCKET=\(name)", "systemd-notify", "--no-block", "--ready", "--status=forwarding"]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let theirs = try #require(try receiver.receive(milliseconds: 5000)).map { $0 }
        ServiceNotifier(environment: ["NOTIFY_SOCKET": name]).ready(status: "forwarding")
        let ours = try #require(try receiver.receive(milliseconds: 5000))
        // systemd-notify adds MAINPID= (its parent's pid); the fields both send are equal. (--no-block:
        // without it, it waits for the manager to answer a BARRIER=1, which this receiver does not.)
        let theirFields = Set(String(decoding: theirs, as: UTF8.self).split(separator: "\n").filter { !$0.hasPrefix("MAINPID=") })
        #expect(theirFields == Set(String(decoding: ours, as: UTF8.self).split(separator: "\n")))
    }

    /// WATCHDOG=1 every half timeout while the check says alive; none while it says failing
    /// (each change heard once); again when it recovers; none after STOPPING=1.
    @Test func watchdogFollowsTheHealthCheck() throws {
        let name = Self.scratch("watchdog")
        let receiver = try UnixDatagramReceiver(name: name)
        let n = ServiceNotifier(environment: ["NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000"])
        #expect(n.watchdogInterval == .milliseconds(200))
        let health = Locked(ServiceNotifier.Health.alive)
        let changes = Locked<[ServiceNotifier.Health]>([])
        n.startWatchdog(check: { health.value }, onChange: { h in changes.update { $0.append(h) } })
        let alive = try Self.drain(receiver, seconds: 2).map(\.1)
        // 10 ticks of 200 ms in 2 s; a loaded machine delays some.
        #expect(alive.count >= 4 && alive.count <= 11, "\(alive.count) keep-alives in 2 s")
        #expect(alive.allSatisfy { $0 == "WATCHDOG=1" })
        health.value = .failing("worker 0 stalled")
        _ = try Self.drain(receiver, seconds: 0.3)  // a tick under way may still send
        let failing = try Self.drain(receiver, seconds: 1.5).map(\.1)
        #expect(failing.isEmpty, "\(failing)")
        health.value = .alive
        let back = try Self.drain(receiver, seconds: 1.5).map(\.1)
        #expect(back.count >= 2, "keep-alives resume: \(back)")
        n.stopping()
        let after = try Self.drain(receiver, seconds: 1).map(\.1)
        #expect(after == ["STOPPING=1"])
        #expect(changes.value == [.failing("worker 0 stalled"), .alive])
    }
}

final class Locked<T>: @unchecked Sendable {
    private var v: T
    private let lock = NSLock()
    init(_ v: T) { self.v = v }
    var value: T {
        get { lock.withLock { v } }
        set { lock.withLock { v = newValue } }
    }
    func update(_ body: (inout T) -> Void) { lock.withLock { body(&v) } }
}
