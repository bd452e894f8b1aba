import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// Issue 12, item 5: a soak. Three hosts on VXLAN (VNI 42): h0 and h1 run Ferry, peered;
    /// h1 is in accept-any mode with `--ageing 2`, and h2 plays peers that come and go (50 new
    /// sources a second from a pool of 600, each with a new MAC every cycle), so that h1 keeps
    /// learning, retiring and reusing peer slots and forwarding-table entries. Meanwhile, for
    /// `duration` seconds: an iperf3 TCP stream from h0's container to h1's, iperf3 64-byte UDP
    /// the other way (both at fixed rates: `tcpMegabits`, `udpPacketsPerSecond`), a loop of
    /// short TCP connections as fast as one Python client opens them (each an echo of 100
    /// bytes) from h0's container to h1's, and both Ferries' control sockets asked for `stats`
    /// and `fdb` every 100 ms. Each Ferry's RSS, CPU time and counters are read once a second.
    ///
    /// Asserted, for each Ferry: RSS after warm-up never exceeds its value at the end of warm-up
    /// by 1 MiB or more; no counter ever reads lower than in the poll before; the CPU time per
    /// gigabit moved (TAP and tunnel bytes, both ways) in the last window is within 10 % of the
    /// first window's (20 % in the short soak: `cpuPerGigabitTolerance`); each load made
    /// progress; both Ferries live to the end and exit 0.
    /// Windows: `Soak.Windows`. `FERRY_SOAK_SECONDS` sets the duration (60 s by default: about
    /// 65 s in all; the issue's soak is FERRY_SOAK_SECONDS=600). A canary of fixed CPU work runs
    /// beside, its CPU per unit printed per window: when Ferry's CPU per gigabit moves, it tells
    /// whether the machine slowed every process down (it is printed, not asserted).
    ///
    /// The loads are paced because CPU per gigabit follows the traffic mix: with no limits, in
    /// one run the last window, where the TCP sender got less of the shared machine, moved 37 %
    /// of the first window's bytes at 57 % of its packet rate, and Ferry's CPU per gigabit rose
    /// 83 % and 104 %. Paced, eleven of twelve runs (60 s to 600 s) gave -8 % to +4 %, and one
    /// +14 % and +20 % for both Ferries at once (the same work; the machine's other load).
    @Suite struct LiveSoakTests {
        static let duration: Double = ProcessInfo.processInfo.environment["FERRY_SOAK_SECONDS"].flatMap(Double.init) ?? 60
        /// The offered load, fixed so that every window carries the same mix: the TCP stream's
        /// rate (iperf3 -b) and the 64-byte UDP datagrams a second. 0 lifts a limit, which on a
        /// quiet machine is the harder test; on a shared one it makes the CPU per gigabit follow
        /// the mix, not Ferry (a window where the TCP sender got less of the machine moves fewer
        /// bytes for the same per-packet work): see the closing note of issue 12.
        static let tcpMegabits = ProcessInfo.processInfo.environment["FERRY_SOAK_TCP_MBPS"].flatMap(Int.init) ?? 50
        static let udpPacketsPerSecond = ProcessInfo.processInfo.environment["FERRY_SOAK_UDP_PPS"].flatMap(Int.init) ?? 5000
        /// Short connections a second (each about ten packets each way through both Ferries).
        static let connectionsPerSecond = ProcessInfo.processInfo.environment["FERRY_SOAK_CONNECTIONS"].flatMap(Int.init) ?? 200
        static let rssGrowthBound = Live.mebibyte
        /// The issue's 10 % over minute-long windows (the 10-minute soak); 20 % over the quarter-
        /// minute windows of the short soak CI runs, where a few seconds of the shared machine's
        /// other load weigh more (eleven of twelve runs stayed within -8 % to +4 % either way).
        static let cpuPerGigabitTolerance = duration >= 180 ? 0.10 : 0.20
        static let ageing = 2
        /// Units of the canary's fixed work a second (about 0.4 ms of CPU each: 4 % of a CPU).
        static let canaryRate = 100
        /// The churning peers: 10 new ones every 0.2 s from 600 addresses, a cycle every 12 s.
        /// With `--ageing 2` about 100–150 of them hold a slot at once, under the 256 slots.
        static let churnPool = 600, churnWave = 10, churnGap = 0.2

        @Test func mixedLoadForAWhile() throws {
            let windows = Soak.Windows(duration: Self.duration)
            let live = try LiveLab(tag: "soak", hosts: 3, withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let (h0, h1, h2) = (live.host(0), live.host(1), live.host(2))
            let (a, b) = (h0.containers[0], h1.containers[0])
            // h1 floods broadcasts to the learned peers too: their addresses lead to h2, which drops them.
            try live.ip(h1.namespace, "route", "add", "10.98.0.0/16", "via", h2.underlay)
            try live.ip(h2.namespace, "route", "add", "blackhole", "10.98.0.0/16")
            let tunnel = LiveTunnel.vxlan.arguments
            let ferries = [
                try live.startFerry(on: 0, peers: [1], tunnel: tunnel),
                try live.startFerry(on: 1, peers: [0], tunnel: tunnel, extra: ["--accept-any-peer", "--ageing", "\(Self.ageing)"]),
            ]
            let controls = [live.lab.controlPath(0), live.lab.controlPath(1)]
            let warm = try live.ping(from: a.namespace, to: b.address, count: 3)
            try #require(warm.received >= 1, "no ping through Ferry: \(warm)")

            // The loads.
            let seconds = String(Int(Self.duration.rounded(.up)))
            let tcpServer = try live.spawn(b.namespace, ["iperf3", "-s", "-1", "-B", b.address, "-p", "5201"], log: "iperf-tcp-server.log")
            let udpServer = try live.spawn(a.namespace, ["iperf3", "-s", "-1", "-B", a.address, "-p", "5202"], log: "iperf-udp-server.log")
            let echo = try live.spawn(b.namespace, [live.python, "-c", Soak.echoServer, b.address, "6000"], log: "echo.log")
            defer { for p in [tcpServer, udpServer, echo] where p.isRunning { p.terminate() } }
            for (ns, port, log) in [(b.namespace, 5201, "iperf-tcp-server.log"), (a.namespace, 5202, "iperf-udp-server.log")] {
                try #require(Lab.waitUntil(timeout: 10) {
                    (try? live.exec(ns, ["ss", "-Hltn", "sport = :\(port)"]).stdout.contains("\(port)")) ?? false
                }, "iperf3 server did not start: \(Self.read(live.file(log)))")
            }
            try #require(Lab.waitUntil(timeout: 10) { Self.read(live.file("echo.log")).contains("listening") },
                         "echo server did not start: \(Self.read(live.file("echo.log")))")
            try live.exec(a.namespace, ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])

            let started = Date()
            let canary = try live.spawn(h2.namespace, [live.python, "-c", Soak.canary, "\(Self.duration + 5)", "\(Self.canaryRate)"],
                                        log: "canary.log")
            defer { if canary.isRunning { canary.terminate() } }
            let clients = [
                try live.spawn(a.namespace, ["iperf3", "-c", b.address, "-p", "5201", "-t", seconds, "-J", "-b", "\(Self.tcpMegabits)M"],
                               log: "iperf-tcp.json"),
                // (iperf3's rate counts the payload: 64 bytes are 512 bits.)
                try live.spawn(b.namespace, ["iperf3", "-c", a.address, "-p", "5202", "-u", "-l", "64", "-b", "\(Self.udpPacketsPerSecond * 512)",
                                             "-t", seconds, "-J"], log: "iperf-udp.json"),
                try live.spawn(a.namespace, [live.python, "-c", Soak.shortConnectionClient, b.address, "6000", seconds,
                                             "\(Self.connectionsPerSecond)", live.file("short.json")], log: "short.log"),
                try live.spawn(h2.namespace, [live.python, "-c", Soak.peerChurn, h1.underlay, "\(Self.churnPool)", "\(Self.churnWave)",
                                              "\(Self.churnGap)", seconds, live.file("churn.json")], log: "churn.log"),
            ]
            defer { for p in clients where p.isRunning { p.terminate() } }

            // Poll both control sockets every 100 ms; every tenth round, sample RSS and CPU too.
            var samples: [[Soak.Sample]] = [[], []]
            var previous: [CtlStats?] = [nil, nil]
            var backwards: [String] = []
            var polls = 0, pollFailures: [String] = [], mostFDB = [0, 0], mostPeers = [0, 0]
            var round = 0
            var warmMappings: [Soak.Mappings?] = [nil, nil]
            while true {
                let now = Date().timeIntervalSince(started)
                if now >= Self.duration { break }
                for i in 0..<2 {
                    do {
                        let s = try Soak.stats(controls[i])
                        let entries = try Soak.fdb(controls[i])
                        polls += 1
                        if let p = previous[i] {
                            backwards += Soak.backwards(from: p, to: s).map { "h\(i) at \(String(format: "%.1f", now)) s: \($0)" }
                        }
                        previous[i] = s
                        mostFDB[i] = max(mostFDB[i], entries.count)
                        mostPeers[i] = max(mostPeers[i], s.peers.count)
                        if round % 10 == 0 {
                            var sample = try Soak.sample(at: Date().timeIntervalSince(started), pid: ferries[i].processIdentifier, stats: s)
                            sample.canaryCPU = (try? Soak.cpuSeconds(canary.processIdentifier)) ?? 0
                            if warmMappings[i] == nil, sample.at >= windows.warmUp - 0.5 {
                                warmMappings[i] = Soak.mappings(ferries[i].processIdentifier)
                            }
                            samples[i].append(sample)
                        }
                    } catch {
                        pollFailures.append("h\(i) at \(String(format: "%.1f", now)) s: \(error)")
                        if !ferries[i].isRunning { break }
                    }
                }
                if ferries.contains(where: { !$0.isRunning }) { break }
                round += 1
                let next = Double(round) * 0.1
                let wait = next - Date().timeIntervalSince(started)
                if wait > 0 { usleep(UInt32(wait * 1e6)) }
            }
            let elapsed = Date().timeIntervalSince(started)
            let alive = ferries.map(\.isRunning)
            let endMappings = ferries.map { Soak.mappings($0.processIdentifier) }
            let clientsDone = Lab.waitUntil(timeout: 20) { clients.allSatisfy { !$0.isRunning } }
            let finalStats = try (0..<2).map { try Soak.stats(controls[$0]) }
            let statuses = live.stopFerries()

            // The loads' own accounts.
            let tcp = Self.iperf(live.file("iperf-tcp.json"))
            let udp = Self.iperf(live.file("iperf-udp.json"))
            let short = try? JSONDecoder().decode(Soak.ShortConnections.self, from: Data(contentsOf: URL(fileURLWithPath: live.file("short.json"))))
            let churn = try? JSONDecoder().decode(Soak.PeerChurn.self, from: Data(contentsOf: URL(fileURLWithPath: live.file("churn.json"))))

            // The figures first, so that a failure below still shows them.
            var table = ["[live soak] \(String(format: "%.0f", elapsed)) s of mixed load (TCP \(Self.tcpMegabits) Mbit/s, "
                         + "UDP \(Self.udpPacketsPerSecond) packets/s of 64 B, \(Self.connectionsPerSecond) connections/s; 0: no limit); warm-up \(Int(windows.warmUp)) s, "
                         + "windows \(Self.describe(windows.first)) and \(Self.describe(windows.last))",
                         "  ferry window     RSS KiB (start>end)  CPU s  CPU share  Gbit/s  CPU s/Gbit  tunnel pps  tap fps"]
            var perFerry: [(first: Soak.WindowFigures?, last: Soak.WindowFigures?)] = []
            for i in 0..<2 {
                let f = Soak.figures(samples[i], over: windows.first), l = Soak.figures(samples[i], over: windows.last)
                perFerry.append((f, l))
                for w in [f, l].compactMap({ $0 }) {
                    table.append("  h\(i)    " + Self.pad(Self.describe(w.range), 10) + " "
                                 + Self.pad("\(w.rssStart / 1024)>\(w.rssEnd / 1024)", 20) + " "
                                 + Self.pad(String(format: "%.2f", w.cpu), 6) + " "
                                 + Self.pad(String(format: "%.0f %%", w.cpuShare * 100), 10) + " "
                                 + Self.pad(String(format: "%.3f", w.gbps), 7) + " "
                                 + Self.pad(String(format: "%.3f", w.cpuPerGigabit), 11) + " "
                                 + Self.pad(String(format: "%.0f", w.tunnelPPS), 11) + " "
                                 + String(format: "%.0f", w.tapFPS))
                }
                if let f, let l {
                    let canary = l.canaryCPUPerSecond / f.canaryCPUPerSecond
                    table.append("  h\(i)    CPU/Gbit last/first \(String(format: "%+.1f %%", (l.cpuPerGigabit / f.cpuPerGigabit - 1) * 100)); "
                                 + "the canary's CPU per unit of work \(String(format: "%.2f ms > %.2f ms (%+.1f %%)", f.canaryCPUPerSecond / Double(Self.canaryRate) * 1000, l.canaryCPUPerSecond / Double(Self.canaryRate) * 1000, (canary - 1) * 100)); "
                                 + "Ferry's CPU/Gbit relative to it \(String(format: "%+.1f %%", (l.cpuPerGigabit / f.cpuPerGigabit / canary - 1) * 100))")
                }
                let every = max(1, Int(Self.duration) / 60)
                let rss = samples[i].enumerated().filter { $0.offset % every == 0 || $0.offset == samples[i].count - 1 }
                    .map { "\(Int($0.element.at)):\($0.element.rss / 1024)" }
                table.append("  h\(i)    RSS KiB by \(every == 1 ? "second" : "\(every) s"): " + rss.joined(separator: " "))
                if let warm = warmMappings[i] {
                    let grown = Soak.grown(from: warm, to: endMappings[i])
                    let g = Soak.growth(from: warm, to: endMappings[i])
                    table.append("  h\(i)    resident after warm-up: packet buffers \(g.packetBuffers >= 0 ? "+" : "")\(g.packetBuffers) KiB, "
                                 + "the rest \(g.other >= 0 ? "+" : "")\(g.other) KiB; mappings changed: "
                                 + (grown.isEmpty ? "none" : grown.prefix(6).joined(separator: "; ")))
                }
            }
            table.append("  loads: TCP \(tcp.map { String(format: "%.0f MB, %.3f Gbit/s", $0.bytes / 1e6, $0.bitsPerSecond / 1e9) } ?? "?"); "
                         + "UDP 64 B \(udp.map { String(format: "%.0f packets (%.0f/s)", $0.packets, $0.packets / max(1, $0.seconds)) } ?? "?"); "
                         + "short connections \(short.map { "\($0.ok) ok (\(Int(Double($0.ok) / Self.duration))/s), \($0.failed) failed \($0.errors)" } ?? "?"); "
                         + "churn \(churn.map { "\($0.sent) packets, \($0.cycles) cycles" } ?? "?")")
            table.append("  h1 peers learned \(finalStats[1].counters["peers_learned"] ?? 0), retired \(finalStats[1].counters["peers_retired"] ?? 0), "
                         + "fdb learned \(finalStats[1].counters["fdb_learned"] ?? 0), expired \(finalStats[1].counters["fdb_expired"] ?? 0); "
                         + "most peers \(mostPeers), most fdb entries \(mostFDB); \(polls) polls (stats+fdb), \(pollFailures.count) failed")
            for i in 0..<2 {
                table.append("  h\(i) drops: " + finalStats[i].drops(except: []).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
            }
            print(table.joined(separator: "\n"))

            // Ferry lived, and ended cleanly.
            #expect(alive == [true, true], "a Ferry exited during the soak: h0 \(live.logTail(0)) h1 \(live.logTail(1))")
            #expect(statuses[0] == 0 && statuses[1] == 0, "exit statuses \(statuses)")
            #expect(elapsed >= Self.duration - 1, "the soak stopped early at \(elapsed) s")
            #expect(pollFailures.isEmpty, "control socket polls failed: \(pollFailures.prefix(5))")
            #expect(polls >= Int(Self.duration) * 2 * 5, "too few polls: \(polls) in \(Self.duration) s (every 100 ms per Ferry asked for)")

            // No counter went backwards.
            #expect(backwards.isEmpty, "counters went backwards (\(backwards.count)): \(backwards.prefix(10))")

            // Memory after warm-up: RSS, sampled every second, stays within the bound of its
            // value at the end of warm-up. (The packet buffers are resident from the start:
            // `OwnedBytes` zeroes them, so first touches no longer count here.)
            for i in 0..<2 {
                let after = samples[i].filter { $0.at >= windows.warmUp - 0.5 }
                guard let base = after.first else { Issue.record("h\(i): no RSS sample after warm-up"); continue }
                let peak = after.map(\.rss).max()!
                let grown = warmMappings[i].map { Soak.grown(from: $0, to: endMappings[i]).prefix(8).joined(separator: "; ") } ?? "?"
                #expect(peak - base.rss < Self.rssGrowthBound,
                        "h\(i)'s RSS grew by \(peak - base.rss) bytes after warm-up (\(base.rss / 1024) KiB at \(Int(base.at)) s, peak \(peak / 1024) KiB); mappings changed: \(grown)")
                #expect(samples[i].count >= Int(Self.duration) - 3, "h\(i): \(samples[i].count) RSS samples in \(Int(Self.duration)) s")
            }

            // CPU per gigabit, first window against the last.
            for i in 0..<2 {
                guard let f = perFerry[i].first, let l = perFerry[i].last else { Issue.record("h\(i): windows without samples"); continue }
                #expect(f.gigabits > 0 && l.gigabits > 0, "h\(i) moved nothing in a window: \(f) \(l)")
                let change = l.cpuPerGigabit / f.cpuPerGigabit - 1
                let figures = String(format: "%+.1f %% (%.3f -> %.3f s/Gbit)", change * 100, f.cpuPerGigabit, l.cpuPerGigabit)
                #expect(abs(change) <= Self.cpuPerGigabitTolerance,
                        "h\(i)'s CPU per gigabit changed by \(figures) from the first window to the last")
            }

            // Every load made progress.
            #expect(clientsDone, "load clients still running after the soak")
            #expect((tcp?.bytes ?? 0) > 0, "the TCP stream moved nothing: \(String(Self.read(live.file("iperf-tcp.json")).suffix(2000)))")
            #expect((udp?.packets ?? 0) > 0, "the UDP sender sent nothing: \(String(Self.read(live.file("iperf-udp.json")).suffix(2000)))")
            if let short {
                // Half the rate asked for at least: the client is paced, and behind it catches up.
                #expect(short.ok >= Int(Self.duration) * max(2, Self.connectionsPerSecond) / 2,
                        "too few short connections: \(short.ok) in \(Self.duration) s at \(Self.connectionsPerSecond)/s")
                #expect(short.failed * 20 <= short.ok, "short connections failed: \(short.failed) of \(short.ok + short.failed): \(short.errors)")
            } else {
                Issue.record("no report from the short-connection client: \(Self.read(live.file("short.log")))")
            }
            let accepting = finalStats[1]
            let learned = try accepting.counter("peers_learned"), retired = try accepting.counter("peers_retired")
            #expect(learned > UInt64(Self.churnPool), "the churning peers were not all learned: \(accepting)")
            #expect(retired > 0 && retired + 256 >= learned, "learned peers were not retired as they fell silent: \(accepting)")
            #expect(try accepting.counter("fdb_expired") > 0, "\(accepting)")
            // Ageing keeps the table small: without it the churn's new MACs (50 a second) would fill it.
            #expect(mostFDB[1] <= 1000, "h1's forwarding table held \(mostFDB[1]) entries with --ageing \(Self.ageing)")
            #expect(churn.map { $0.cycles >= 1 } ?? false, "the churning sender did not cycle its pool: \(Self.read(live.file("churn.log")))")
        }

        static func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

        static func describe(_ r: ClosedRange<Double>) -> String { "\(Int(r.lowerBound.rounded()))-\(Int(r.upperBound.rounded())) s" }

        static func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }

        struct IperfResult {
            var bytes: Double
            var bitsPerSecond: Double
            var packets: Double
            var seconds: Double
        }

        /// iperf3 -J's end summary: for TCP what the receiver got, for UDP what was sent.
        static func iperf(_ path: String) -> IperfResult? {
            guard let data = FileManager.default.contents(atPath: path),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let end = json["end"] as? [String: Any]
            else { return nil }
            let sum = (end["sum_received"] as? [String: Any]) ?? (end["sum"] as? [String: Any]) ?? [:]
            func n(_ key: String) -> Double { (sum[key] as? NSNumber)?.doubleValue ?? 0 }
            return IperfResult(bytes: n("bytes"), bitsPerSecond: n("bits_per_second"), packets: n("packets"), seconds: n("seconds"))
        }
    }
}
