import FerryLab
import Foundation
import Testing

// The network failing under a running Ferry: the underlay link down, the peer's Ferry killed,
// addresses and routes pulled away, the TAP set down, the bridge deleted. Each test states what
// a user sees (log lines, counters, the exit status) and asserts it, and while the fault lasts
// that Ferry does not spin: its CPU time (utime + stime from /proc) stays near zero.

/// What one Ferry process did while a fault lasted: CPU seconds, log lines written, and the
/// counters before and after.
struct FaultWindow: CustomStringConvertible {
    var seconds: Double
    var cpuSeconds: Double
    var logLines: [Substring]
    var before: CtlStats
    var after: CtlStats

    /// How much `name` (a counter or a drop reason) grew.
    func grew(_ name: String) -> UInt64 {
        let a = after.counters[name] ?? after.drops[name] ?? 0
        let b = before.counters[name] ?? before.drops[name] ?? 0
        return a &- b
    }

    var description: String {
        let drops = after.drops.compactMap { name, n -> String? in
            let d = n &- (before.drops[name] ?? 0)
            return d > 0 ? "\(name) +\(d)" : nil
        }.sorted()
        return String(format: "%.1f s, CPU %.3f s, ", seconds, cpuSeconds) + "\(logLines.count) log lines, drops: "
            + (drops.isEmpty ? "none" : drops.joined(separator: ", "))
    }
}

extension LiveLab {
    /// An interface's MAC, as `ip -j link` gives it (lower case, colons).
    func macAddress(_ ns: String, _ interface: String) throws -> String {
        let o = try lab.run(["ip", "-n", ns, "-j", "link", "show", "dev", interface])
        let list = try JSONSerialization.jsonObject(with: Data(o.stdout.utf8)) as? [[String: Any]]
        guard let mac = list?.first?["address"] as? String else { throw UnexpectedOutput("no MAC of \(interface) in \(ns)") }
        return mac
    }

    /// utime + stime of process `pid`, in seconds (/proc/PID/stat fields 14 and 15).
    static func cpuSeconds(_ pid: Int32) throws -> Double {
        let text = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // The command name may hold spaces: the fields are counted after its closing parenthesis.
        guard let close = text.lastIndex(of: ")") else { throw UnexpectedOutput("/proc/\(pid)/stat: \(text)") }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else {
            throw UnexpectedOutput("/proc/\(pid)/stat: \(text)")
        }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    func logLines(_ i: Int) -> [Substring] {
        ((try? String(contentsOfFile: ferryLog(i), encoding: .utf8)) ?? "").split(separator: "\n")
    }

    /// Runs `fault` against host `i`'s Ferry (`process`), holds it for `seconds`, and measures
    /// that Ferry meanwhile; `restore` undoes the fault, after the measurement.
    func measureFault(_ i: Int, _ process: Process, seconds: Double, fault: () throws -> Void,
                      restore: () throws -> Void) throws -> FaultWindow {
        let before = try stats(i)
        let lines = logLines(i).count
        try fault()
        let cpu = try LiveLab.cpuSeconds(process.processIdentifier)
        let started = Date()
        Thread.sleep(forTimeInterval: seconds)
        let cpuAfter = try LiveLab.cpuSeconds(process.processIdentifier)
        let held = Date().timeIntervalSince(started)
        let after = try stats(i)
        let written = Array(logLines(i).dropFirst(lines))
        try restore()
        return FaultWindow(seconds: held, cpuSeconds: cpuAfter - cpu, logLines: written, before: before, after: after)
    }

    /// The process id really is Ferry's (`ip netns exec` and `env` exec, they do not fork):
    /// otherwise the CPU measured would be theirs.
    func requireFerryPID(_ process: Process) throws {
        let comm = try String(contentsOfFile: "/proc/\(process.processIdentifier)/comm", encoding: .utf8)
        guard comm.trimmingCharacters(in: .whitespacesAndNewlines) == "ferry" else {
            throw UnexpectedOutput("process \(process.processIdentifier) is \(comm), not ferry")
        }
    }
}

/// Echo replies with their arrival times (`ping -D`), from a ping log.
struct PingTimeline {
    var replies: [(time: Double, sequence: Int)] = []

    init(log: String) {
        for line in log.split(separator: "\n") where line.hasPrefix("[") && line.contains("icmp_seq=") {
            guard let close = line.firstIndex(of: "]"), let time = Double(line[line.index(after: line.startIndex)..<close]),
                  let seq = line.split(separator: " ").first(where: { $0.hasPrefix("icmp_seq=") })
                    .flatMap({ Int($0.dropFirst("icmp_seq=".count)) })
            else { continue }
            replies.append((time, seq))
        }
    }

    /// The first reply at or after `time` (seconds since the epoch).
    func firstReply(after time: Double) -> Double? { replies.first { $0.time >= time }?.time }

    /// The longest time between two consecutive replies.
    var longestGap: Double { zip(replies.dropFirst(), replies).map { $0.time - $1.time }.max() ?? 0 }
}

extension LiveLabTests {
    @Suite struct LiveNetworkFaultTests {
        /// Generous: an idle Ferry polls every 100 ms per worker, which costs a few ms a
        /// second; a busy loop would cost a whole core (1 s per second held).
        static let cpuBound = 0.5

        /// Warm pings both ways: the tunnel carries, and both forwarding tables know both MACs.
        static func warm(_ live: LiveLab) throws {
            let (a, b) = (live.container(0), live.container(1))
            let there = try live.ping(from: a.namespace, to: b.address, count: 3, interval: 0.1)
            try #require(there.allReceived, "pings fail before any fault: \(there)\n\(live.logTail(0))\n\(live.logTail(1))")
        }

        /// u0 on host 0 down for 5 s while a container pings across, then up: the sends fail
        /// (counted), Ferry sleeps rather than spins, writes no flood of log lines, and carries
        /// again at once, without a restart.
        @Test func theUnderlayLinkDownForFiveSeconds() throws {
            let live = try LiveLab(tag: "fltlink", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let tunnel = LiveTunnel.vxlan.arguments
            let ferry = try live.startFerry(on: 0, tunnel: tunnel)
            try live.startFerry(on: 1, tunnel: tunnel)
            try live.requireFerryPID(ferry)
            try Self.warm(live)
            let (a, b) = (live.container(0), live.container(1))
            let ping = try live.spawn(a.namespace, ["ping", "-n", "-D", "-c", "60", "-i", "0.1", "-W", "1", b.address],
                                      log: "ping.log")
            let h0 = live.host(0).namespace
            let window = try live.measureFault(0, ferry, seconds: 5, fault: {
                try live.ip(h0, "link", "set", "u0", "down")
            }, restore: {
                try live.ip(h0, "link", "set", "u0", "up")
            })
            let restored = Date().timeIntervalSince1970
            _ = Lab.waitUntil(timeout: 20) { !ping.isRunning }
            print("[live fault: link down] h0 while down: \(window)")
            #expect(ferry.isRunning, "Ferry ended while its underlay was down: \(live.logTail(0))")
            #expect(window.cpuSeconds < Self.cpuBound, "Ferry spun while its underlay was down: \(window)")
            #expect(window.logLines.count <= 3, "log flooded while the underlay was down:\n\(window.logLines.joined(separator: "\n"))")
            #expect(window.logLines.contains { $0.contains("sends to peers fail") }, "the failing sends are not logged: \(window.logLines)")
            // The pings' requests reached the TAP and could not leave: counted, not lost silently.
            #expect(window.grew("tap_rx_frames") > 0, "\(window.after)")
            #expect(window.grew("send_failed") > 0 || window.grew("send_buffer_full") > 0,
                    "sends into a downed underlay are not counted: \(window)")

            let log = (try? String(contentsOfFile: live.file("ping.log"), encoding: .utf8)) ?? ""
            let timeline = PingTimeline(log: log)
            let resumed = timeline.firstReply(after: restored)
            #expect(resumed != nil, "no reply after the link came back:\n\(log)")
            let after = try live.ping(from: a.namespace, to: b.address, count: 3, interval: 0.1)
            #expect(after.allReceived, "no forwarding after the link came back: \(after)\n\(live.logTail(0))")
            // Within a look or two of the surroundings (once a second), the all-clear, once.
            _ = Lab.waitUntil(timeout: 5) { live.logLines(0).contains { $0.contains("no send to a peer has failed") } }
            #expect(live.logLines(0).filter { $0.contains("no send to a peer has failed") }.count == 1, "\(live.logTail(0))")
            print("[live fault: link down] first reply \(resumed.map { String(format: "%.2f", $0 - restored) } ?? "-") s after "
                  + "`link set u0 up`; longest gap \(String(format: "%.2f", timeline.longestGap)) s; h0 log while down: "
                  + (window.logLines.isEmpty ? "(nothing)" : window.logLines.joined(separator: " | ")))
        }

        /// The peer's Ferry killed (SIGKILL: no goodbye, its TAP gone with it) and started again
        /// while a container pings every 50 ms: this side keeps running (the peer's kernel
        /// answers the tunnel packets meanwhile with ICMP unreachable), traffic resumes within
        /// 2 s of the restart, and the new Ferry's forwarding table learns the remote MAC again.
        @Test(arguments: [LiveTunnel.vxlan, .gre])
        func thePeersFerryKilledAndRestarted(_ tunnel: LiveTunnel) throws {
            let live = try LiveLab(tag: "fltkill", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let ferry = try live.startFerry(on: 0, tunnel: tunnel.arguments)
            try live.requireFerryPID(ferry)
            let peer = try live.startFerry(on: 1, tunnel: tunnel.arguments)
            try Self.warm(live)
            let (a, b) = (live.container(0), live.container(1))
            let ping = try live.spawn(a.namespace, ["ping", "-n", "-D", "-c", "100", "-i", "0.05", "-W", "1", b.address],
                                      log: "ping.log")
            Thread.sleep(forTimeInterval: 0.5)
            let h1 = live.host(1).namespace
            let macs = (tap: try live.macAddress(h1, "ferry0"), bridge: try live.macAddress(h1, "bridge0"))
            let before = try live.stats(0)
            let snmpBefore = try live.snmp(live.host(0).namespace)
            let cpu = try LiveLab.cpuSeconds(ferry.processIdentifier)
            kill(peer.processIdentifier, SIGKILL)
            peer.waitUntilExit()
            Thread.sleep(forTimeInterval: 1.5)
            let cpuWhileDead = try LiveLab.cpuSeconds(ferry.processIdentifier) - cpu
            let restarting = Date().timeIntervalSince1970
            try live.startFerry(on: 1, tunnel: tunnel.arguments, log: "ferry-h1-restarted.log")
            let ready = Date().timeIntervalSince1970
            _ = Lab.waitUntil(timeout: 20) { !ping.isRunning }
            let after = try live.stats(0)
            let snmpAfter = try live.snmp(live.host(0).namespace)
            let unreachables = (snmpAfter["Icmp:InDestUnreachs"] ?? 0) - (snmpBefore["Icmp:InDestUnreachs"] ?? 0)

            #expect(ferry.isRunning, "this side's Ferry ended when its peer's was killed: \(live.logTail(0))")
            #expect(cpuWhileDead < Self.cpuBound, "this side spun while its peer was dead: \(cpuWhileDead) s of CPU in 1.5 s")
            let log = (try? String(contentsOfFile: live.file("ping.log"), encoding: .utf8)) ?? ""
            let timeline = PingTimeline(log: log)
            let resumed = timeline.firstReply(after: restarting)
            #expect(resumed != nil, "no reply after the peer's Ferry restarted:\n\(log)\n\(live.logTail(1))")
            if let resumed {
                // The issue's deadline: within 2 s of the restart (the new Ferry answering on its
                // control socket), with a second of margin for a loaded machine.
                #expect(resumed - ready < 3, "traffic resumed \(resumed - ready) s after the restart")
            }
            // Proof that the fault was the one meant: the peer's kernel answered the tunnel's
            // packets with ICMP unreachable while no Ferry listened (VXLAN: port unreachable;
            // GRE's answer depends on the kernel's GRE modules, so it is only reported).
            if tunnel == .vxlan { #expect(unreachables > 0, "no ICMP unreachable reached host 0") }
            // The restarted Ferry's TAP has the MAC the first one had, so the lab's bridge (made
            // without a MAC of its own: it takes its lowest port's) keeps its MAC too, and the
            // container's ARP entry for its gateway stays right.
            let macsAgain = (tap: try live.macAddress(h1, "ferry0"), bridge: try live.macAddress(h1, "bridge0"))
            #expect(macsAgain.tap == macs.tap && macsAgain.bridge == macs.bridge, "MACs before \(macs), after the restart \(macsAgain)")
            let fdb = try live.fdb(1)
            #expect(fdb.peer(of: a.mac).map { Live.sameAddress($0, live.host(0).underlay) } == true,
                    "the restarted Ferry did not learn \(a.mac) again: \(fdb)")
            let lines = live.logLines(0).filter { !$0.contains("ferry run") }
            print("[live fault: peer killed, \(tunnel)] h0 CPU while the peer was dead (1.5 s): "
                  + "\(String(format: "%.3f", cpuWhileDead)) s; restart took \(String(format: "%.2f", ready - restarting)) s; first reply "
                  + "\(resumed.map { String(format: "%.2f", $0 - restarting) } ?? "-") s after it was started "
                  + "(\(resumed.map { String(format: "%.2f", $0 - ready) } ?? "-") s after it answered ctl); longest gap "
                  + "\(String(format: "%.2f", timeline.longestGap)) s; h0 tx +\(after.tx(live.host(1).underlay) &- before.tx(live.host(1).underlay)), "
                  + "drops \(after.drops(except: []).filter { $0.value > (before.drops[$0.key] ?? 0) }); h0 log lines: \(lines.count); "
                  + "ICMP unreachable received by h0 meanwhile: \(unreachables)")
        }

        /// The addresses and the route under a running Ferry, one after the other, each held
        /// 2 s while a container pings across, then put back: the peer's underlay address
        /// removed, Ferry's own (--local) removed, the route to the peer deleted. Ferry lives,
        /// does not spin, counts what it could not send, and carries again once each is back.
        @Test func addressesAndRouteTakenAway() throws {
            let live = try LiveLab(tag: "fltaddr", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let tunnel = LiveTunnel.vxlan.arguments
            let ferry = try live.startFerry(on: 0, tunnel: tunnel)
            let peer = try live.startFerry(on: 1, tunnel: tunnel)
            try live.requireFerryPID(ferry)
            try Self.warm(live)
            let (a, b) = (live.container(0), live.container(1))
            let (h0, h1) = (live.host(0), live.host(1))
            let ping = try live.spawn(a.namespace, ["ping", "-n", "-D", "-c", "400", "-i", "0.05", "-W", "1", b.address],
                                      log: "ping.log")
            defer { if ping.isRunning { ping.terminate() } }
            var results: [(String, FaultWindow, Double?)] = []
            func phase(_ name: String, fault: () throws -> Void, restore: () throws -> Void) throws {
                let w = try live.measureFault(0, ferry, seconds: 2, fault: fault, restore: restore)
                let restored = Date().timeIntervalSince1970
                _ = Lab.waitUntil(timeout: 8) {
                    PingTimeline(log: (try? String(contentsOfFile: live.file("ping.log"), encoding: .utf8)) ?? "")
                        .firstReply(after: restored) != nil
                }
                let first = PingTimeline(log: (try? String(contentsOfFile: live.file("ping.log"), encoding: .utf8)) ?? "")
                    .firstReply(after: restored)
                results.append((name, w, first.map { $0 - restored }))
                print("[live fault: \(name)] h0 while faulted: \(w); first reply "
                      + "\(first.map { String(format: "%.2f", $0 - restored) } ?? "none") s after it was put back; log: "
                      + (w.logLines.isEmpty ? "(nothing)" : w.logLines.joined(separator: " | ")))
                #expect(ferry.isRunning && peer.isRunning, "\(name): a Ferry ended:\n\(live.logTail(0))\n\(live.logTail(1))")
                #expect(w.cpuSeconds < Self.cpuBound, "\(name): Ferry spun: \(w)")
                #expect(w.logLines.count <= 5, "\(name): log flooded:\n\(w.logLines.joined(separator: "\n"))")
                #expect(first != nil, "\(name): no reply after it was put back\n\(live.logTail(0))")
            }
            let mask = "/24"
            // The peer's address changed (to 10.99.0.12): for host 0 the peer is an address,
            // now nobody's; for host 1 its own --local went under it.
            let h1Lines = live.logLines(1).count
            try phase("peer address changed", fault: {
                try live.ip(h1.namespace, "addr", "del", h1.underlay + mask, "dev", "u0")
                try live.ip(h1.namespace, "addr", "add", "10.99.0.12" + mask, "dev", "u0")
            }, restore: {
                try live.ip(h1.namespace, "addr", "del", "10.99.0.12" + mask, "dev", "u0")
                try live.ip(h1.namespace, "addr", "add", h1.underlay + mask, "dev", "u0")
            })
            let peerLog = live.logLines(1).dropFirst(h1Lines)
            print("[live fault: peer address changed] h1 log: " + peerLog.joined(separator: " | "))
            #expect(peerLog.contains { $0.contains("local address \(h1.underlay) is no longer on any interface") },
                    "the peer's Ferry did not say its address went: \(live.logTail(1))")
            try phase("local address removed", fault: {
                try live.ip(h0.namespace, "addr", "del", h0.underlay + mask, "dev", "u0")
            }, restore: {
                try live.ip(h0.namespace, "addr", "add", h0.underlay + mask, "dev", "u0")
            })
            // The lab's underlay is one veth between the hosts: the route to the peer is the
            // connected /24 route, deleted here (the address stays).
            try phase("route to the peer deleted", fault: {
                try live.ip(h0.namespace, "route", "del", "10.99.0.0/24", "dev", "u0")
            }, restore: {
                try live.ip(h0.namespace, "route", "add", "10.99.0.0/24", "dev", "u0", "src", h0.underlay)
            })
            let after = try live.ping(from: a.namespace, to: b.address, count: 3, interval: 0.1)
            #expect(after.allReceived, "no forwarding after every fault was put back: \(after)")
            // Without a local address or a route, sends fail: counted under send_failed.
            for (name, w, _) in results where name != "peer address changed" {
                #expect(w.grew("send_failed") > 0, "\(name): the failed sends are not counted: \(w)")
            }
            // And said once each: the address gone (which explains the failing sends), and,
            // with the address there, the sends failing.
            for (name, w, _) in results {
                let said = switch name {
                case "local address removed": "local address \(h0.underlay) is no longer on any interface"
                case "route to the peer deleted": "sends to peers fail"
                default: ""
                }
                if !said.isEmpty { #expect(w.logLines.filter { $0.contains(said) }.count == 1, "\(name): \(w.logLines)") }
            }
        }

        /// The TAP set down for 2 s and up again (as `ifdown`, or a network manager restarting,
        /// does): Ferry keeps running and does not spin; frames from peers meanwhile are counted
        /// under tap_write_failed (the kernel refuses writes to a TAP that is down); it logs
        /// the TAP going down and coming back, once each; and it carries again once it is up.
        @Test func theTAPSetDownAndUp() throws {
            let live = try LiveLab(tag: "flttap", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let tunnel = LiveTunnel.vxlan.arguments
            let ferry = try live.startFerry(on: 0, tunnel: tunnel)
            try live.startFerry(on: 1, tunnel: tunnel)
            try live.requireFerryPID(ferry)
            try Self.warm(live)
            let (a, b) = (live.container(0), live.container(1))
            // From host 1's container: its requests reach host 0's Ferry, which cannot hand them on.
            let ping = try live.spawn(b.namespace, ["ping", "-n", "-D", "-c", "60", "-i", "0.1", "-W", "1", a.address],
                                      log: "ping.log")
            defer { if ping.isRunning { ping.terminate() } }
            let h0 = live.host(0).namespace
            let window = try live.measureFault(0, ferry, seconds: 2.5, fault: {
                try live.ip(h0, "link", "set", "ferry0", "down")
            }, restore: {
                try live.ip(h0, "link", "set", "ferry0", "up")
            })
            let restored = Date().timeIntervalSince1970
            _ = Lab.waitUntil(timeout: 20) { !ping.isRunning }
            let timeline = PingTimeline(log: (try? String(contentsOfFile: live.file("ping.log"), encoding: .utf8)) ?? "")
            let resumed = timeline.firstReply(after: restored)
            print("[live fault: TAP down] h0 while down: \(window); first reply "
                  + "\(resumed.map { String(format: "%.2f", $0 - restored) } ?? "none") s after `link set ferry0 up`; log: "
                  + (window.logLines.isEmpty ? "(nothing)" : window.logLines.joined(separator: " | ")))
            #expect(ferry.isRunning, "Ferry ended when its TAP was set down: \(live.logTail(0))")
            #expect(window.cpuSeconds < Self.cpuBound, "Ferry spun while its TAP was down: \(window)")
            #expect(window.grew("tap_write_failed") > 0, "frames for a downed TAP are not counted: \(window)")
            #expect(window.logLines.contains { $0.contains("TAP ferry0 is down") }, "the TAP going down is not logged: \(window.logLines)")
            #expect(window.logLines.count <= 3, "log flooded:\n\(window.logLines.joined(separator: "\n"))")
            #expect(resumed != nil, "no reply after the TAP came back up\n\(live.logTail(0))")
            let after = try live.ping(from: a.namespace, to: b.address, count: 3, interval: 0.1)
            #expect(after.allReceived, "no forwarding after the TAP came back up: \(after)")
            let up = live.logLines(0).filter { $0.contains("TAP ferry0 is up again") }
            #expect(up.count == 1, "the TAP coming back is logged once: \(live.logTail(0))")
        }

        /// The bridge deleted under a running Ferry: the TAP survives, but detached it carries
        /// to nothing, so Ferry ends, non-zero, naming the bridge (a supervisor restarting it
        /// then meets the clear start-up error until the bridge is back).
        @Test func theBridgeDeletedEndsItNamingTheCause() throws {
            let live = try LiveLab(tag: "fltbridge", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let ferry = try live.startFerry(on: 0, peers: [1], tunnel: LiveTunnel.vxlan.arguments)
            let started = Date()
            try live.ip(live.host(0).namespace, "link", "del", "bridge0")
            let ended = Lab.waitUntil(timeout: 10) { !ferry.isRunning }
            let seconds = Date().timeIntervalSince(started)
            let log = live.logLines(0)
            print("[live fault: bridge deleted] ferry ended after \(String(format: "%.2f", seconds)) s, exit "
                  + "\(ended ? String(ferry.terminationStatus) : "-"); log: \(log.suffix(3).joined(separator: " | "))")
            #expect(ended, "Ferry still running 10 s after its bridge went: \(live.logTail(0))")
            guard ended else { return }
            #expect(ferry.terminationStatus != 0)
            #expect(log.contains { $0.contains("bridge0") && $0.contains("ferry0") && $0.contains("no longer") },
                    "the exit does not name the bridge: \(live.logTail(0))")
        }
    }
}
