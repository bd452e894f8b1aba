import FerryLab
import FerryLinux
import FerryService
import Foundation
import Testing

extension LiveLabTests {
    /// `ferry run` as a `Type=notify` service, against a notify socket the test listens on as
    /// systemd would; and `ferry run` inside the unit's limits (its capability bounding set, and
    /// under strace: only the system calls, address families and files the unit allows).
    @Suite struct LiveServiceTests {
        /// What the test's "service manager" heard, in order, with the time of each datagram.
        final class Manager {
            let receiver: UnixDatagramReceiver
            var heard: [(at: Date, fields: [String])] = []

            init(_ name: String) throws { receiver = try UnixDatagramReceiver(name: name) }

            /// Everything sent within `seconds` (or until `until` says stop), appended to `heard`.
            @discardableResult
            func listen(seconds: Double, until: ([String]) -> Bool = { _ in false }) throws -> [(at: Date, fields: [String])] {
                var got: [(at: Date, fields: [String])] = []
                let end = Date().addingTimeInterval(seconds)
                while Date() < end {
                    guard let d = try receiver.receive(milliseconds: Int32(max(1, end.timeIntervalSinceNow * 1000))) else { continue }
                    let fields = String(decoding: d, as: UTF8.self).split(separator: "\n").map(String.init)
                    got.append((Date(), fields))
                    if until(fields) { break }
                }
                heard += got
                return got
            }
        }

        static func keepAlives(_ got: [(at: Date, fields: [String])]) -> Int { got.filter { $0.fields.contains("WATCHDOG=1") }.count }

        /// Starts Ferry on host 0 with `environment`, its command run through `wrapper` (strace,
        /// setpriv), waiting until it answers on its control socket.
        static func start(_ live: LiveLab, environment: [String], wrapper: [String] = [], tunnel: [String] = ["--encap", "vxlan", "--vni", "42"],
                          extra: [String], log: String) throws -> Process {
            let path = live.lab.controlPath(0)
            unlink(path)
            let command = wrapper + ["env"] + environment + [live.ferryBinary]
                + live.lab.ferryArguments(live.host(0), tunnel: tunnel, extra: extra)
            let p = try live.spawn(live.host(0).namespace, command, log: log)
            let up = Lab.waitUntil(timeout: Lab.readyTimeout, interval: 0.1) {
                !p.isRunning || (try? Lab.capture([live.ferryBinary, "ctl", "--control", path, "stats"], timeout: 5))?.status == 0
            }
            guard up, p.isRunning else {
                throw UnexpectedOutput("ferry did not start: \((try? String(contentsOfFile: live.file(log), encoding: .utf8)) ?? "")")
            }
            return p
        }

        /// The process whose program is `binary` and whose arguments hold `argument`.
        static func process(running binary: String, with argument: String) -> Int32? {
            let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
            return pids.first { pid in
                guard let line = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
                let args = line.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                return args.first == binary && args.contains(argument)
            }
        }

        /// The thread id of `name` (`ferry-worker-0`) in process `pid`.
        static func thread(_ name: String, of pid: Int32) -> Int32? {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            return tasks.first { (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == name }.flatMap { Int32($0) }
        }

        /// Stops one thread of a process, and only it, for `seconds`: PTRACE_SEIZE then
        /// PTRACE_INTERRUPT (no signal, so no group stop of the other threads), then detach.
        /// A worker wedged in a step, as a blocked call or a livelock would leave it.
        static let stallScript = """
            import ctypes, os, sys, time
            libc = ctypes.CDLL(None, use_errno=True)
            libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
            tid, seconds = int(sys.argv[1]), float(sys.argv[2])
            if libc.ptrace(0x4206, tid, None, None) != 0: sys.exit("PTRACE_SEIZE: errno %d" % ctypes.get_errno())
            if libc.ptrace(0x4207, tid, None, None) != 0: sys.exit("PTRACE_INTERRUPT: errno %d" % ctypes.get_errno())
            os.waitpid(tid, 0x40000000)  # __WALL: until it has stopped
            print("stopped", flush=True)
            time.sleep(seconds)
            libc.ptrace(17, tid, None, None)  # PTRACE_DETACH
            print("resumed", flush=True)
            """

        /// READY=1 only once the tunnel forwards (a ping across answers at once), and nothing
        /// before it; WATCHDOG=1 at half $WATCHDOG_USEC with STATUS= lines; a worker stopped in
        /// place withholds the keep-alives (and says why) until it turns again; SIGTERM gives
        /// STOPPING=1 and a clean exit. Then a deleted TAP (the workers fail): STOPPING=1, a
        /// non-zero exit, and no keep-alive after.
        @Test func notifyProtocolFollowsTheWorkers() throws {
            let live = try LiveLab(tag: "notify", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            try live.startFerry(on: 1, tunnel: ["--encap", "vxlan", "--vni", "42"])
            let socket = live.file("notify.sock")
            let manager = try Manager(socket)
            let environment = ["NOTIFY_SOCKET=\(socket)", "WATCHDOG_USEC=2000000"]
            let ferry = try Self.start(live, environment: environment, extra: ["--workers", "2", "--stats-interval", "1"],
                                       log: "ferry-notify.log")
            defer { if ferry.isRunning { Lab.stop(ferry) } }

            // The control socket answers after READY=1 was sent: it is in the socket's queue.
            let first = try manager.listen(seconds: 10) { $0.contains("READY=1") }
            let ready = try #require(first.last.flatMap { $0.fields.contains("READY=1") ? $0 : nil }, "no READY=1: \(manager.heard)")
            #expect(first.dropLast().isEmpty, "before READY=1: \(first.dropLast().map(\.fields))")
            #expect(ready.fields.contains { $0.hasPrefix("STATUS=forwarding on ferry0") }, "\(ready.fields)")
            let ping = try live.ping(from: live.container(1).namespace, to: live.container(0).address, count: 3)
            #expect(ping.received == 3, "a ping across at READY: \(ping)")

            // Keep-alives every second (half of 2 s); six seconds see about six.
            let steady = try manager.listen(seconds: 6)
            let beats = Self.keepAlives(steady)
            print("[live notify] \(beats) keep-alives in 6 s at WATCHDOG_USEC=2000000")
            #expect(beats >= 3 && beats <= 8, "\(steady.map(\.fields))")
            #expect(steady.contains { $0.fields.contains { $0.hasPrefix("STATUS=") && $0.contains("peers") } }, "STATUS lines each second")

            // Worker 0 stopped in place for 6 s: at most the keep-alive of a check that still saw
            // its last turns, then none, and a STATUS that says why; keep-alives again after.
            let worker = try #require(Self.thread("ferry-worker-0", of: ferry.processIdentifier))
            let staller = try live.lab.spawn(live.host(0).namespace, [live.python, "-c", Self.stallScript, String(worker), "6"],
                                             log: live.file("stall.log"))
            defer { if staller.isRunning { kill(staller.processIdentifier, SIGTERM) } }
            #expect(Lab.waitUntil(timeout: 5) { ((try? String(contentsOfFile: live.file("stall.log"), encoding: .utf8)) ?? "").contains("stopped") },
                    "the worker was not stopped: \((try? String(contentsOfFile: live.file("stall.log"), encoding: .utf8)) ?? "")")
            let stalled = try manager.listen(seconds: 5)
            let during = Self.keepAlives(stalled)
            print("[live notify] \(during) keep-alives in the 5 s worker 0 was stopped")
            #expect(during <= 1, "keep-alives went on while worker 0 was stopped: \(stalled.map(\.fields))")
            #expect(stalled.contains { $0.fields.contains { $0.hasPrefix("STATUS=stalled: worker 0") } }, "\(stalled.map(\.fields))")
            #expect(ferry.isRunning)
            _ = Lab.waitUntil(timeout: 10) { !staller.isRunning }
            let after = try manager.listen(seconds: 4)
            #expect(Self.keepAlives(after) >= 2, "keep-alives resume once the worker turns: \(after.map(\.fields))")

            kill(ferry.processIdentifier, SIGTERM)
            let stopping = try manager.listen(seconds: 15) { $0.contains("STOPPING=1") }
            #expect(stopping.last?.fields.contains("STOPPING=1") == true, "\(stopping.map(\.fields))")
            #expect(Lab.waitUntil(timeout: 15) { !ferry.isRunning })
            ferry.waitUntilExit()
            #expect(ferry.terminationStatus == 0, "\(live.logTail(0))")

            // Its TAP deleted: the workers fail, the engine stops, and so do the keep-alives.
            let second = try Self.start(live, environment: environment, extra: ["--workers", "2"], log: "ferry-tapgone.log")
            defer { if second.isRunning { Lab.stop(second) } }
            _ = try #require(try manager.listen(seconds: 10) { $0.contains("READY=1") }.last { $0.fields.contains("READY=1") })
            try live.ip(live.host(0).namespace, "link", "del", "ferry0")
            let end = try manager.listen(seconds: 15) { $0.contains("STOPPING=1") }
            #expect(end.last?.fields.contains("STOPPING=1") == true, "\(end.map(\.fields))")
            #expect(Lab.waitUntil(timeout: 15) { !second.isRunning })
            second.waitUntilExit()
            #expect(second.terminationStatus != 0)
            let silence = try manager.listen(seconds: 2.5)
            #expect(Self.keepAlives(silence) == 0, "\(silence.map(\.fields))")
        }

        /// Every system call of the unit's allow list, expanded by systemd itself.
        static func allowedSystemCalls(user: Bool) throws -> Set<String> {
            func expand(_ group: String) throws -> Set<String> {
                let o = try Lab.capture(["systemd-analyze", "syscall-filter", group], timeout: 20)
                var out = Set<String>()
                for line in o.stdout.split(separator: "\n").dropFirst() {
                    let word = line.trimmingCharacters(in: .whitespaces)
                    if word.isEmpty || word.hasPrefix("#") { continue }
                    out.formUnion(word.hasPrefix("@") ? try expand(word) : [word])
                }
                return out
            }
            var allowed = Set<String>()
            for entry in ServiceUnit.systemCallFilter + (user ? ServiceUnit.userSystemCalls : []) {
                for word in entry.split(separator: " ").map(String.init) {
                    if word.hasPrefix("~") {
                        allowed.subtract(try expand(String(word.dropFirst())))
                    } else {
                        allowed.formUnion(word.hasPrefix("@") ? try expand(word) : [word])
                    }
                }
            }
            return allowed
        }

        /// Ferry with the unit's capability bounding set only (setpriv, no new privileges),
        /// under `strace -f`, two workers (the steering program), forwarding a ping — VXLAN as
        /// root, and GRE on the link path (raw IP and packet sockets) becoming `nobody` with the
        /// drop-in's additions: what it
        /// asked of the kernel from its exec on must be what the unit allows: system calls in
        /// its filter, sockets of its families, /proc of its own, files written only in
        /// /run/ferry and /dev/net/tun (ProtectSystem=strict, ProtectKernelTunables).
        @Test(arguments: [false, true]) func runsWithinTheUnitsLimits(user: Bool) throws {
            let live = try LiveLab(tag: user ? "unitu" : "unit", withoutIPv6: true)
            defer { live.teardown() }
            try live.build()
            let tunnel = user ? ["--encap", "gre", "--key", "42", "--gre-path", "link"] : ["--encap", "vxlan", "--vni", "42"]
            try live.startFerry(on: 1, tunnel: tunnel)
            let capabilities = ServiceUnit.capabilities + (user ? ServiceUnit.userCapabilities : [])
            let bounding = "-all," + capabilities.map { "+" + $0.dropFirst(4).lowercased() }.joined(separator: ",")
            let trace = live.file("strace.txt")
            let ferry = try Self.start(live, environment: [],
                                       wrapper: ["strace", "-f", "-qq", "-o", trace, "setpriv", "--bounding-set", bounding, "--no-new-privs", "--"],
                                       tunnel: tunnel,
                                       // /metrics too (as root; its SwiftNIO server's calls are the unit's concern as well).
                                       extra: ["--workers", "2"] + (user ? ["--user", "nobody"] : ["--metrics", "\(live.host(0).underlay):9586"]),
                                       log: "ferry-unit.log")
            defer { if ferry.isRunning { kill(ferry.processIdentifier, SIGKILL) } }
            let ping = try live.ping(from: live.container(1).namespace, to: live.container(0).address, count: 3)
            #expect(ping.received == 3, "\(ping) \(live.logTail(0))")
            // SIGINT to Ferry itself: strace would detach on one and leave Ferry running.
            let pid = try #require(Self.process(running: live.ferryBinary, with: live.lab.controlPath(0)))
            kill(pid, SIGINT)
            #expect(Lab.waitUntil(timeout: 20) { !ferry.isRunning }, "\(live.logTail(0))")
            ferry.waitUntilExit()
            #expect(ferry.terminationStatus == 0, "\(live.logTail(0))")
            let log = (try? String(contentsOfFile: live.file("ferry-unit.log"), encoding: .utf8)) ?? ""
            #expect(!log.contains("TAP queues are chosen by the kernel"), "CAP_BPF lets the steering program load: \(live.logTail(0))")

            let text = try String(contentsOfFile: trace, encoding: .utf8)
            let lines = text.split(separator: "\n").map(String.init)
            // From ferry's exec on (setpriv's own calls are not the unit's concern).
            let start = try #require(lines.firstIndex { $0.contains("execve(\"\(live.ferryBinary)\"") && $0.hasSuffix("= 0") })
            let calls = lines[start...].compactMap { line -> (String, String)? in
                let rest = line.drop { $0 != " " }.drop { $0 == " " }
                guard let paren = rest.firstIndex(of: "("), rest[..<paren].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return nil }
                return (String(rest[..<paren]), String(rest))
            }
            #expect(calls.count > 100)
            let allowed = try Self.allowedSystemCalls(user: user)
            let used = Set(calls.map(\.0))
            #expect(used.subtracting(allowed).isEmpty, "called outside SystemCallFilter: \(used.subtracting(allowed).sorted())")
            #expect(used.contains("bpf"), "two workers load the steering program")

            let families = Set(calls.filter { $0.0 == "socket" || $0.0 == "socketpair" }.compactMap { call in
                call.1.range(of: #"AF_[A-Z0-9]+"#, options: .regularExpression).map { String(call.1[$0]) }
            })
            #expect(families.subtracting(ServiceUnit.addressFamilies).isEmpty, "families: \(families.sorted())")
            if user { #expect(families.contains("AF_PACKET"), "GRE's link path opens a packet socket: \(families.sorted())") }

            let opened = calls.filter { $0.0 == "openat" || $0.0 == "open" }.compactMap { call -> (path: String, writes: Bool)? in
                guard let r = call.1.range(of: #""[^"]*""#, options: .regularExpression) else { return nil }
                let writes = call.1.contains("O_WRONLY") || call.1.contains("O_RDWR") || call.1.contains("O_CREAT")
                return (String(call.1[r].dropFirst().dropLast()), writes)
            }
            let foreignProc = opened.filter { $0.path.hasPrefix("/proc/") && !$0.path.hasPrefix("/proc/self/") && !$0.path.hasPrefix("/proc/thread-self/") }
            #expect(foreignProc.isEmpty, "ProcSubset=pid hides these: \(foreignProc.map(\.path))")
            let written = opened.filter { $0.writes }.map(\.path)
            let outside = written.filter { !$0.hasPrefix("/run/ferry/") && $0 != "/dev/net/tun" }
            #expect(outside.isEmpty, "ProtectSystem=strict makes these read-only: \(outside)")
            print("[live unit limits] \(user ? "gre link path, user nobody" : "vxlan, root"): \(used.count) distinct system calls, families \(families.sorted()), writes \(Set(written).sorted())")
        }
    }
}
