import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// What must never end a running Ferry (a control client that leaves early, SIGHUP), and
    /// what must end it at once (its TAP deleted under it), as a supervisor needs.
    @Suite struct LiveLifeCycleTests {
        /// Connects to a control socket, sends `request`, and closes without reading the reply.
        static func hangUp(_ path: String, request: String) -> Bool {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8).prefix($0.count - 1)) }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard connected == 0 else { return false }
            return Array(request.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == request.utf8.count
        }

        /// Clients that ask and close before the reply (each reply then meets a closed socket:
        /// SIGPIPE, before, ended the daemon at the first or second), and SIGHUP, while pings
        /// cross the tunnel: Ferry lives, forwards, and still answers.
        @Test func clientsThatHangUpAndSIGHUPDoNotEndIt() throws {
            let live = try LiveLab(tag: "life", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let tunnel = ["--encap", "vxlan", "--vni", "42"]
            let ferry = try live.startFerry(on: 0, tunnel: tunnel)
            try live.startFerry(on: 1, tunnel: tunnel)
            let path = live.lab.controlPath(0)
            let ping = try live.spawn(live.container(1).namespace,
                                      ["ping", "-c", "100", "-i", "0.05", "-W", "2", live.container(0).address],
                                      log: "ping.log")
            var sent = 0
            for k in 0..<1000 where Self.hangUp(path, request: k % 2 == 0 ? "fdb\n" : "stats\n") { sent += 1 }
            #expect(sent >= 1, "no client got through to \(path)")
            kill(ferry.processIdentifier, SIGHUP)
            _ = Lab.waitUntil(timeout: 20) { !ping.isRunning }
            #expect(ferry.isRunning, "Ferry ended: \(live.logTail(0))")
            let pings = PingResult(output: (try? String(contentsOfFile: live.file("ping.log"), encoding: .utf8)) ?? "")
            #expect(pings.received == pings.transmitted && pings.transmitted == 100, "\(pings)")
            print("[live life cycle] \(sent) clients hung up; pings \(pings.received)/\(pings.transmitted)")
            let stats = try live.stats(0)
            #expect(try stats.counter("tap_rx_frames") > 0, "\(stats)")
            let log = (try? String(contentsOfFile: live.ferryLog(0), encoding: .utf8)) ?? ""
            #expect(log.contains("SIGHUP"), "SIGHUP is noted in the log")
        }

        /// The TAP deleted under a running Ferry: its workers fail, and the process ends at
        /// once, non-zero, naming the cause (it used to stay up until the next statistics tick,
        /// or an hour with --stats-interval 0).
        @Test func aDeletedTAPEndsItNonZero() throws {
            let live = try LiveLab(tag: "tapgone", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let ferry = try live.startFerry(on: 0, peers: [1], tunnel: ["--encap", "vxlan", "--vni", "42"])
            let started = Date()
            try live.ip(live.host(0).namespace, "link", "del", "ferry0")
            let ended = Lab.waitUntil(timeout: 10) { !ferry.isRunning }
            let seconds = Date().timeIntervalSince(started)
            print("[live tap deleted] ferry ended after \(String(format: "%.2f", seconds)) s")
            #expect(ended, "Ferry still running 10 s after its TAP went: \(live.logTail(0))")
            guard ended else { return }
            #expect(ferry.terminationStatus != 0)
            let log = (try? String(contentsOfFile: live.ferryLog(0), encoding: .utf8)) ?? ""
            #expect(log.contains("the data plane stopped on an error"), "\(live.logTail(0))")
            #expect(log.contains("the TAP was deleted under Ferry"), "the exit says what happened: \(live.logTail(0))")
        }
    }
}
