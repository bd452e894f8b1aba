import FerryLab
import Foundation
import Testing

extension LiveLabTests {
    /// The control socket of a running Ferry against clients that trickle, stall or never read,
    /// a 100 000-entry forwarding table, and what lies at its path before it starts.
    @Suite struct LiveControlTests {
        /// A client of a control socket that does what `ferry ctl` never does.
        final class Client {
            let fd: Int32

            init?(_ path: String) {
                fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                var address = sockaddr_un()
                address.sun_family = sa_family_t(AF_UNIX)
                withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8).prefix($0.count - 1)) }
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
                if connected != 0 {
                    close(fd)
                    return nil
                }
            }

            deinit { close(fd) }

            /// False once the server has closed the connection.
            @discardableResult
            func send(_ text: String) -> Bool {
                Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == text.utf8.count
            }

            /// True once the server has closed its end (nothing is read).
            func isClosed(within seconds: Double) -> Bool {
                Lab.waitUntil(timeout: seconds, interval: 0.02) {
                    var p = pollfd(fd: fd, events: 0, revents: 0)
                    return poll(&p, 1, 0) > 0 && p.revents & Int16(POLLHUP) != 0
                }
            }

            /// Everything until the server closes (10 s at most per piece).
            func readToEnd() -> [UInt8] {
                var bytes: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 65536)
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                while poll(&p, 1, 10_000) > 0 {
                    let n = read(fd, &chunk, chunk.count)
                    if n <= 0 { break }
                    bytes += chunk[0..<n]
                }
                return bytes
            }
        }

        /// `stats` asked by a client of the test's own (no process start in the measure): the
        /// seconds it took and the reply.
        static func timedStats(_ path: String) -> (seconds: Double, reply: [UInt8]) {
            let start = Date()
            guard let c = Client(path) else { return (Date().timeIntervalSince(start), []) }
            c.send("stats\n")
            let reply = c.readToEnd()
            return (Date().timeIntervalSince(start), reply)
        }

        static func seconds(_ s: Double) -> String { String(format: "%.3f", s) }

        /// The issue's case. A table of 100 000 entries (static, from a config file); a client
        /// that reads it gets all of it; one trickling a byte a second is cut at the request
        /// deadline; with one that asked for the table and never reads and one mid-request,
        /// `stats` from a third client answers within a second, and SIGTERM ends Ferry within
        /// 2 s (measured to the process's exit), exit status 0, its socket removed.
        @Test func slowAndStalledClientsHoldNeitherStatsNorSIGTERM() throws {
            let live = try LiveLab(tag: "ctl", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let entries = 100_000
            var yaml = "static-fdb:\n"
            for n in 0..<entries {
                yaml += String(format: "  - 02:55:%02x:%02x:%02x:%02x=", n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)
                    + live.host(1).underlay + "\n"
            }
            let config = live.file("fdb.yaml")
            try yaml.write(toFile: config, atomically: true, encoding: .utf8)
            let ferry = try live.startFerry(on: 0, peers: [1], tunnel: ["--encap", "vxlan", "--vni", "42"],
                                            extra: ["--config", config, "--fdb-size", "131072"])
            let path = live.lab.controlPath(0)
            let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber
            #expect(mode?.intValue == 0o600, "control socket mode \(String(describing: mode))")

            // A client that reads: the whole table.
            let fdbStart = Date()
            let fdb = try live.ctl(0, "fdb")
            let fdbSeconds = Date().timeIntervalSince(fdbStart)
            let table = try JSONDecoder().decode([CtlFDBEntry].self, from: Data(fdb.utf8))
            #expect(table.count == entries)

            // A byte a second: the 2 s request deadline runs from accept, not from the last byte.
            let trickler = try #require(Client(path))
            let trickleStart = Date()
            var cut = false
            for _ in 0..<20 {
                guard trickler.send(" "), !trickler.isClosed(within: 1) else { cut = true; break }
            }
            let trickleSeconds = Date().timeIntervalSince(trickleStart)
            #expect(cut, "a client trickling a byte a second still connected after \(Self.seconds(trickleSeconds)) s")
            #expect(trickleSeconds < 10, "cut after \(Self.seconds(trickleSeconds)) s, for a 2 s request deadline")

            // One that asks for the table and never reads, one mid-request: a third is answered.
            let stalled = try #require(Client(path))
            stalled.send("fdb\n")
            let midRequest = try #require(Client(path))
            midRequest.send("st")
            Thread.sleep(forTimeInterval: 0.3)
            let stats = Self.timedStats(path)
            #expect(stats.seconds < 1, "stats took \(Self.seconds(stats.seconds)) s beside a stalled fdb reader")
            let counters = try JSONDecoder().decode(CtlStats.self, from: Data(stats.reply))
            #expect(counters.fdbEntries == entries)
            let ctlStart = Date()
            _ = try live.stats(0)
            let ctlSeconds = Date().timeIntervalSince(ctlStart)
            #expect(!stalled.isClosed(within: 0), "the stalled reader is still connected when SIGTERM comes")

            let termStart = Date()
            kill(ferry.processIdentifier, SIGTERM)
            let ended = Lab.waitUntil(timeout: 10, interval: 0.01) { !ferry.isRunning }
            let termSeconds = Date().timeIntervalSince(termStart)
            #expect(ended && termSeconds < 2, "Ferry took \(Self.seconds(termSeconds)) s to end after SIGTERM: \(live.logTail(0))")
            guard ended else { return }
            #expect(ferry.terminationReason == .exit && ferry.terminationStatus == 0, "\(live.logTail(0))")
            #expect(stalled.isClosed(within: 1) && midRequest.isClosed(within: 1))
            #expect(!FileManager.default.fileExists(atPath: path), "the socket file is removed on exit")
            print("""
                [live control] fdb of \(table.count) entries: \(fdb.utf8.count) bytes in \(Self.seconds(fdbSeconds)) s (ferry ctl); \
                trickler cut after \(Self.seconds(trickleSeconds)) s; stats beside a stalled fdb reader \
                \(Self.seconds(stats.seconds)) s (in-process client), \(Self.seconds(ctlSeconds)) s (ferry ctl process); \
                SIGTERM to exit \(Self.seconds(termSeconds)) s
                """)
        }

        /// What lies at the control path before Ferry starts: another Ferry's live socket is
        /// refused (before the TAP is touched) and left to it; a stale one (a Ferry killed) is
        /// replaced; a file that is not a socket is refused and kept. With no --control, the
        /// socket is /run/ferry/TAP.sock, mode 0600, and `ferry ctl --tap TAP` finds it.
        @Test func whatLiesAtTheControlPath() throws {
            let live = try LiveLab(tag: "ctlpath", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let tunnel = ["--encap", "vxlan", "--vni", "42"]
            let first = try live.startFerry(on: 0, peers: [1], tunnel: tunnel)
            let path = live.lab.controlPath(0)

            // A second Ferry on the same socket path (its own TAP, in the other host).
            let args = live.lab.ferryArguments(live.host(1), peers: [live.host(0)], tunnel: tunnel)
            let clash = args.map { $0 == live.lab.controlPath(1) ? path : $0 }
            let second = try live.attempt(live.host(1).namespace, [live.ferryBinary] + clash, timeout: 30)
            #expect(second.status != 0)
            #expect(second.stderr.contains("another ferry is running on \(path)"), "\(second.stderr)")
            #expect(first.isRunning)
            #expect(try live.stats(0).counter("tap_rx_frames") >= 0, "the first still answers on its socket")
            let noTAP = try live.attempt(live.host(1).namespace, ["ip", "link", "show", "ferry0"])
            #expect(noTAP.status != 0, "the refused Ferry made no TAP")

            // Killed (the socket stays, stale): the next one replaces it.
            kill(first.processIdentifier, SIGKILL)
            first.waitUntilExit()
            live.stopFerry(on: 0)
            #expect(FileManager.default.fileExists(atPath: path), "SIGKILL leaves the socket file")
            // Started by hand: `LiveLab.startFerry` removes the file first.
            let again = try live.spawn(live.host(0).namespace,
                                       [live.ferryBinary] + live.lab.ferryArguments(live.host(0), peers: [live.host(1)], tunnel: tunnel),
                                       log: "again.log")
            let replaced = Lab.waitUntil(timeout: 15, interval: 0.1) {
                !again.isRunning || (try? Lab.capture([live.ferryBinary, "ctl", "--control", path, "stats"], timeout: 5))?.status == 0
            }
            #expect(replaced && again.isRunning,
                    "over a stale socket: \((try? String(contentsOfFile: live.file("again.log"), encoding: .utf8)) ?? "")")
            Lab.stop(again)
            #expect(again.terminationStatus == 0)
            #expect(!FileManager.default.fileExists(atPath: path), "removed on a clean exit")

            // Not a socket: refused, and kept.
            try "not a socket".write(toFile: path, atomically: false, encoding: .utf8)
            let blocked = try live.attempt(live.host(0).namespace, [live.ferryBinary] + live.lab.ferryArguments(live.host(0), peers: [live.host(1)], tunnel: tunnel), timeout: 30)
            #expect(blocked.status != 0)
            #expect(blocked.stderr.contains("not a socket"), "\(blocked.stderr)")
            #expect((try? String(contentsOfFile: path, encoding: .utf8)) == "not a socket")
            unlink(path)

            // The default path: per TAP.
            let tap = "fc\(getpid() % 100_000)"
            let defaultPath = "/run/ferry/\(tap).sock"
            unlink(defaultPath)
            defer { unlink(defaultPath) }
            let own = try live.spawn(live.host(0).namespace,
                                     [live.ferryBinary, "run", "--tap", tap, "--local", live.host(0).underlay, "--peer",
                                      live.host(1).underlay, "--stats-interval", "0"] + tunnel, log: "default.log")
            defer { Lab.stop(own) }
            let answered = Lab.waitUntil(timeout: 15, interval: 0.1) {
                (try? Lab.capture([live.ferryBinary, "ctl", "--tap", tap, "stats"], timeout: 5))?.status == 0
            }
            #expect(answered, "ferry ctl --tap \(tap) got no answer: \((try? String(contentsOfFile: live.file("default.log"), encoding: .utf8)) ?? "")")
            let mode = try FileManager.default.attributesOfItem(atPath: defaultPath)[.posixPermissions] as? NSNumber
            #expect(mode?.intValue == 0o600, "\(defaultPath) mode \(String(describing: mode))")
            let both = try Lab.capture([live.ferryBinary, "ctl", "--tap", tap, "--control", defaultPath, "stats"], timeout: 5)
            #expect(both.status != 0 && both.stderr.contains("not both"), "\(both.stderr)")
        }
    }
}
