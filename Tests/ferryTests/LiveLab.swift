import FerryLab
import FerryTestSupport
import FerryWire
import Foundation
import Testing

// The one helper of the live tests: real namespaces (FerryLab's `Lab`), the real `ferry run`
// binary in them, real containers' traffic (ping, TCP through python3 sockets, hand-made
// packets), and what `ferry ctl --json` reports. Nothing here sends to an address outside the
// lab's own namespaces.

/// Every test that builds a lab lives in a suite nested in this one (`extension LiveLabTests`,
/// whatever its file), so that the labs run one at a time: `.serialized` reaches the nested
/// suites, and there is no other parent for a lab suite to run beside (two cores are little,
/// and each lab runs two or three Ferry processes). Without root the tests are reported as
/// skipped; CI runs as root, so there they always run.
@Suite(.serialized, .ownThreads, .enabled(if: Live.isRoot, "builds network namespaces, TAP devices and kernel vxlan devices: needs root"))
struct LiveLabTests {}

enum Live {
    static let isRoot = geteuid() == 0
    static let mebibyte = 1 << 20

    static func ferry() throws -> String { try Tools.ferryPath.get() }

    /// The real python3 (not a shell shim), so that `ip netns exec` needs no PATH magic.
    static let python: Result<String, ToolNotFound> = {
        let probe = try? Lab.capture(["python3", "-c", "import sys; print(sys.executable)"], timeout: 20)
        let path = probe?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        if probe?.status == 0, FileManager.default.isExecutableFile(atPath: path) { return .success(path) }
        return .failure(ToolNotFound(tool: "python3", searched: ["PATH"]))
    }()

    /// Receives one TCP connection on (address, port) into a file; prints "listening" once bound
    /// and "received N" at the end. Every blocking call has a timeout.
    static let receiverScript = """
        import socket, sys
        host, port, path, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
        server = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen(1)
        server.settimeout(limit)
        print("listening", flush=True)
        conn, peer = server.accept()
        conn.settimeout(limit)
        count = 0
        with open(path, "wb") as out:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                out.write(data)
                count += len(data)
        conn.close()
        print("received", count, "from", peer[0], flush=True)
        """

    /// Sends a file over one TCP connection, then waits for the receiver to close: when it
    /// returns, every byte has arrived.
    static let senderScript = """
        import socket, sys
        host, port, path, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
        conn = socket.create_connection((host, port), timeout=limit)
        sent = 0
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                conn.sendall(chunk)
                sent += len(chunk)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
        conn.close()
        print("sent", sent, flush=True)
        """

    /// Byte-wise comparison of two textual IP addresses (so that fd00:99::2 and fd00:99:0::2 agree).
    static func sameAddress(_ a: String, _ b: String) -> Bool {
        func bytes(_ s: String) -> [UInt8]? {
            var v4 = in_addr(), v6 = in6_addr()
            if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
            if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
            return nil
        }
        guard let x = bytes(a), let y = bytes(b) else { return a == b }
        return x == y
    }
}

/// A lab plus what a live test needs around it: a scratch directory (logs, captures, scripts),
/// the Ferry processes, their control sockets, and the helpers that drive traffic and read
/// counters. Create it, `defer { live.teardown() }` before anything can fail, then `build()`.
final class LiveLab {
    let lab: Lab
    let tag: String
    /// The lab's scratch directory: Ferry's logs and whatever else a test writes.
    let logs: String
    let ferryBinary: String
    let python: String
    /// Turn IPv6 off in every namespace, so that the tunnel carries only what the test sends
    /// (no router solicitations or MLD reports flooded to every peer).
    let withoutIPv6: Bool
    private(set) var ferries: [Int: Process] = [:]
    /// Each host's current Ferry log (a restarted Ferry may log to a file of its own).
    private var ferryLogs: [Int: String] = [:]

    /// Prefix `ft-TAG-PID`: unique per run, and a later run removes what a crashed one left
    /// (namespaces and control sockets of any `ft-TAG-*` whose process is gone).
    init(tag: String, hosts: Int = 2, ipv6Underlay: Bool = false, withoutIPv6: Bool = false, withBridges: Bool = true) throws {
        ferryBinary = try Live.ferry()
        python = try Live.python.get()
        self.tag = tag
        self.withoutIPv6 = withoutIPv6
        LiveLab.removeLeftovers(tag: tag)
        let prefix = "ft-\(tag)-\(getpid())"
        lab = Lab(prefix: prefix, hosts: hosts, ipv6Underlay: ipv6Underlay, withBridges: withBridges)
        logs = (NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-live-\(prefix)")
        try? FileManager.default.removeItem(atPath: logs)
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
    }

    static func removeLeftovers(tag: String) {
        let start = "ft-\(tag)-"
        let namespaces = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        let sockets = (try? FileManager.default.contentsOfDirectory(atPath: "/run/ferry")) ?? []
        var prefixes = Set<String>()
        for name in namespaces + sockets where name.hasPrefix(start) {
            let rest = name.dropFirst(start.count)
            guard let pid = Int32(rest.prefix { $0.isNumber }) else { continue }
            if pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH) { prefixes.insert(start + String(pid)) }
        }
        for prefix in prefixes {
            Lab.removeLeftovers(prefix: prefix)
            for name in sockets where name.hasPrefix(prefix + "-") { unlink("/run/ferry/" + name) }
        }
    }

    var hosts: [Lab.Host] { lab.hosts }
    func host(_ i: Int) -> Lab.Host { lab.hosts[i] }
    func container(_ i: Int) -> Lab.Container { lab.hosts[i].containers[0] }

    /// A path in the lab's scratch directory.
    func file(_ name: String) -> String { (logs as NSString).appendingPathComponent(name) }

    func build() throws {
        try lab.build()
        guard withoutIPv6 else { return }
        for ns in lab.namespaces {
            try exec(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        }
    }

    /// Starts `ferry run` on host `i`, peered with `peers` (host indices; every other host when
    /// nil), and waits until `ferry ctl stats` answers (unless not `waitUntilReady`). A Ferry already running there is the
    /// caller's to stop first. Its log is `log` in the scratch directory (`ferry-hI.log`).
    @discardableResult
    func startFerry(on i: Int, peers: [Int]? = nil, tunnel: [String], extra: [String] = [], log: String? = nil,
                    workingDirectory: String? = nil, waitUntilReady: Bool = true) throws -> Process {
        let path = file(log ?? "ferry-h\(i).log")
        ferryLogs[i] = path
        let process = try lab.startFerry(binary: ferryBinary, on: host(i), peers: peers.map { $0.map(host) }, tunnel: tunnel,
                                         extra: extra, log: path, workingDirectory: workingDirectory, waitUntilReady: waitUntilReady)
        ferries[i] = process
        return process
    }

    /// Host `i`'s current Ferry log.
    func ferryLog(_ i: Int) -> String { ferryLogs[i] ?? file("ferry-h\(i).log") }

    func logTail(_ i: Int, characters: Int = 3000) -> String {
        let text = (try? String(contentsOfFile: ferryLog(i), encoding: .utf8)) ?? "(no log)"
        return String(text.suffix(characters))
    }

    /// Stops every Ferry with SIGINT and returns each one's exit status.
    func stopFerries() -> [Int: Int32] {
        var statuses: [Int: Int32] = [:]
        for (i, p) in ferries {
            Lab.stop(p)
            statuses[i] = p.terminationStatus
        }
        ferries.removeAll()
        return statuses
    }

    /// Stops host `i`'s Ferry with SIGINT, bounded.
    func stopFerry(on i: Int) {
        guard let p = ferries.removeValue(forKey: i) else { return }
        Lab.stop(p)
    }

    /// Stops everything and removes the namespaces, the control sockets (teardown SIGKILLs
    /// what has not exited 200 ms after SIGTERM, and a Ferry killed so leaves its socket) and,
    /// unless FERRY_KEEP_LIVE_LOGS is set, the scratch directory.
    func teardown() {
        for (_, p) in ferries { Lab.stop(p, timeout: 5) }
        ferries.removeAll()
        lab.teardown()
        for i in lab.hosts.indices { unlink(lab.controlPath(i)) }
        if ProcessInfo.processInfo.environment["FERRY_KEEP_LIVE_LOGS"] == nil {
            try? FileManager.default.removeItem(atPath: logs)
        } else {
            print("[live \(tag)] logs kept in \(logs)")
        }
    }

    // MARK: - Commands in the lab

    @discardableResult
    func exec(_ ns: String, _ command: [String], timeout: Double = 60) throws -> Lab.Output {
        try lab.exec(ns, command, timeout: timeout)
    }

    /// As `exec`, returning the output whatever the exit status.
    func attempt(_ ns: String, _ command: [String], timeout: Double = 60) throws -> Lab.Output {
        try lab.attempt(ns, command, timeout: timeout)
    }

    /// Starts `command` in `ns` in the background, its output to `log` in the scratch directory.
    @discardableResult
    func spawn(_ ns: String, _ command: [String], log: String) throws -> Process {
        try lab.spawn(ns, command, log: file(log))
    }

    func ip(_ ns: String, _ args: String...) throws {
        try lab.run(["ip", "-n", ns] + args)
    }

    /// `ferry ctl --control … REQUEST [--json]` against host `i`, its standard output.
    func ctl(_ i: Int, _ request: String, json: Bool = true) throws -> String {
        let command = [ferryBinary, "ctl", "--control", lab.controlPath(i), request] + (json ? ["--json"] : [])
        let o = try Lab.capture(command, timeout: 20)
        guard o.status == 0 else { throw UnexpectedOutput("ferry ctl \(request) on host \(i): exit \(o.status): \(o.stderr)") }
        return o.stdout
    }

    func stats(_ i: Int) throws -> CtlStats {
        let text = try ctl(i, "stats")
        do {
            return try JSONDecoder().decode(CtlStats.self, from: Data(text.utf8))
        } catch {
            throw UnexpectedOutput("ferry ctl --json stats on host \(i) is not the documented JSON (\(error)):\n\(text)")
        }
    }

    /// Reads host `i`'s statistics until `condition` holds or `timeout` passes; returns the last
    /// reading. A condition that throws (a name the statistics lack) ends the wait with its error.
    func waitForStats(_ i: Int, timeout: Double = 10, _ condition: (CtlStats) throws -> Bool) throws -> CtlStats {
        var last = try stats(i)
        var failure: Error?
        _ = Lab.waitUntil(timeout: timeout, interval: 0.1) {
            if let s = try? stats(i) { last = s }
            do { return try condition(last) } catch { failure = error; return true }
        }
        if let failure { throw failure }
        return last
    }

    func fdb(_ i: Int) throws -> [CtlFDBEntry] {
        let text = try ctl(i, "fdb")
        do {
            return try JSONDecoder().decode([CtlFDBEntry].self, from: Data(text.utf8))
        } catch {
            throw UnexpectedOutput("ferry ctl --json fdb on host \(i) is not the documented JSON (\(error)):\n\(text)")
        }
    }

    /// The MTU of `interface` in namespace `ns`.
    func mtu(_ ns: String, _ interface: String) throws -> Int {
        let o = try lab.run(["ip", "-n", ns, "-j", "link", "show", "dev", interface])
        let list = try JSONSerialization.jsonObject(with: Data(o.stdout.utf8)) as? [[String: Any]]
        guard let mtu = (list?.first?["mtu"] as? NSNumber)?.intValue else {
            throw UnexpectedOutput("no mtu in `ip -j link show \(interface)`: \(o.stdout)")
        }
        return mtu
    }

    /// A ping bounded by its count, `-W 2` for the last reply and the process timeout (not by
    /// -w, which would make ping send past the count while replies are missing). Never throws
    /// for lost replies, only when ping cannot be run.
    func ping(from ns: String, to address: String, count: Int = 5, interval: Double = 0.2, size: Int? = nil,
              dontFragment: Bool = false, ipv6: Bool = false, extra: [String] = []) throws -> PingResult {
        var command = ["ping", "-n", "-c", String(count), "-i", String(interval), "-W", "2"]
        if ipv6 { command.append("-6") }
        if dontFragment { command += ["-M", "do"] }
        if let size { command += ["-s", String(size)] }
        command += extra
        command.append(address)
        let o = try lab.attempt(ns, command, timeout: Double(count) * interval + 15)
        return PingResult(output: o.stdout + o.stderr, status: o.status)
    }

    /// Moves `ns`'s container leg to a new MAC and address (the /16 of `address`), with an on-link
    /// route to `onLink`: what a container that moved between hosts, keeping its identity, looks like.
    func readdress(_ ns: String, mac: String, address: String, onLink: String) throws {
        try exec(ns, ["ip", "link", "set", "eth0", "down"])
        try exec(ns, ["ip", "addr", "flush", "dev", "eth0"])
        try exec(ns, ["ip", "link", "set", "eth0", "address", mac])
        try exec(ns, ["ip", "addr", "add", address + "/16", "dev", "eth0"])
        try exec(ns, ["ip", "link", "set", "eth0", "up"])
        try exec(ns, ["ip", "route", "add", onLink, "dev", "eth0"])
    }

    func sha256(_ path: String) throws -> String {
        let o = try lab.run(["sha256sum", path])
        return String(o.stdout.prefix { !$0.isWhitespace })
    }

    /// Sends `bytes` of random data over one TCP connection from namespace `sender` to
    /// `address`:`port` in namespace `receiver`, bounded by `timeout` seconds, and returns both
    /// ends' SHA-256 (by sha256sum of the file sent and of the file written by the receiver).
    func transfer(bytes: Int, from sender: String, to receiver: String, address: String, port: Int,
                  timeout: Double = 120) throws -> TransferResult {
        let source = file("send-\(port).bin")
        let sink = file("received-\(port).bin")
        defer {
            try? FileManager.default.removeItem(atPath: source)
            try? FileManager.default.removeItem(atPath: sink)
        }
        try writeRandomFile(source, bytes: bytes)
        let sentSHA = try sha256(source)

        let receiverLog = "receiver-\(port).log"
        let server = try startReceiver(in: receiver, address: address, port: port, sink: sink, timeout: timeout, log: receiverLog)
        defer { if server.isRunning { server.terminate() } }
        func receiverOutput() -> String { (try? String(contentsOfFile: file(receiverLog), encoding: .utf8)) ?? "" }

        let started = Date()
        let client = try lab.attempt(sender, [python, "-c", Live.senderScript, address, String(port), source, String(timeout)],
                                     timeout: timeout + 10)
        let finished = Lab.waitUntil(timeout: 15, interval: 0.05) { !server.isRunning }
        let seconds = Date().timeIntervalSince(started)
        guard client.status == 0, finished else {
            throw UnexpectedOutput("TCP transfer \(sender) -> \(address):\(port) failed after \(String(format: "%.1f", seconds)) s: "
                                   + "sender exit \(client.status) \(client.stdout)\(client.stderr); receiver: \(receiverOutput())")
        }
        let received = receiverOutput().split(separator: "\n").first { $0.hasPrefix("received ") }
            .flatMap { Int($0.split(separator: " ")[1]) } ?? -1
        return TransferResult(bytes: bytes, receivedBytes: received, sentSHA256: sentSHA, receivedSHA256: try sha256(sink),
                              seconds: seconds)
    }

    /// Starts `Live.receiverScript` in `ns` on `address`:`port`, writing what it receives to
    /// `sink`, and returns once it listens; its output goes to `log` in the scratch directory.
    func startReceiver(in ns: String, address: String, port: Int, sink: String, timeout: Double, log: String) throws -> Process {
        let server = try spawn(ns, [python, "-c", Live.receiverScript, address, String(port), sink, String(timeout)], log: log)
        func output() -> String { (try? String(contentsOfFile: file(log), encoding: .utf8)) ?? "" }
        guard Lab.waitUntil(timeout: 15, interval: 0.05, { output().contains("listening") || !server.isRunning }), server.isRunning else {
            if server.isRunning { server.terminate() }
            throw UnexpectedOutput("the receiver in \(ns) did not listen on \(address):\(port):\n\(output())")
        }
        return server
    }

    func writeRandomFile(_ path: String, bytes: Int) throws {
        let o = try Lab.capture(["sh", "-c", "head -c \(bytes) /dev/urandom > '\(path)'"], timeout: 60)
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue
        guard o.status == 0, size == bytes else {
            throw UnexpectedOutput("could not write \(bytes) random bytes to \(path): \(o.stderr)")
        }
    }

    /// Reads `/proc/net/snmp` (or snmp6) inside a namespace: "Udp:InCsumErrors" → value, or
    /// "Udp6InCsumErrors" → value.
    func snmp(_ ns: String) throws -> [String: Int] {
        var result: [String: Int] = [:]
        let v4 = try exec(ns, ["cat", "/proc/net/snmp"]).stdout.split(separator: "\n").map { $0.split(separator: " ") }
        var i = 0
        while i + 1 < v4.count {
            let names = v4[i], values = v4[i + 1]
            if let group = names.first, group == values.first {
                for (n, v) in zip(names.dropFirst(), values.dropFirst()) { result["\(group)\(n)"] = Int(v) }
            }
            i += 2
        }
        for line in try exec(ns, ["cat", "/proc/net/snmp6"]).stdout.split(separator: "\n") {
            let parts = line.split(whereSeparator: \.isWhitespace)
            if parts.count == 2 { result[String(parts[0])] = Int(parts[1]) }
        }
        return result
    }

    /// The kernel's counters of a link (`ip -s -j link`): "rx.packets", "rx.errors", ….
    func linkStatistics(_ ns: String, _ interface: String) throws -> [String: Int] {
        let o = try lab.run(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", interface])
        guard let list = try JSONSerialization.jsonObject(with: Data(o.stdout.utf8)) as? [[String: Any]],
              let stats = list.first?["stats64"] as? [String: Any]
        else { throw UnexpectedOutput("no stats64 in `ip -s -j link show \(interface)`: \(o.stdout)") }
        var result: [String: Int] = [:]
        for (direction, value) in stats {
            guard let fields = value as? [String: Any] else { continue }
            for (k, v) in fields { if let n = (v as? NSNumber)?.intValue { result["\(direction).\(k)"] = n } }
        }
        return result
    }
}

/// The drop reasons raised while decapsulating (Ferry's catalogue, by its stage).
let decapsulationDropNames: Set<String> = Set(DropReason.allCases.filter { $0.stage == .decapsulation }.map(\.name))

/// Expected MTUs from the RFC header sizes, not from Ferry's code: the largest inner IP packet a
/// tunnel carries on a 1500-byte underlay (outer IP + tunnel header + inner Ethernet subtracted).
enum LiveTunnel: String, Sendable {
    case vxlan, gre

    var arguments: [String] {
        switch self {
        case .vxlan: ["--encap", "vxlan", "--vni", "42"]
        case .gre: ["--encap", "gre", "--key", "42"]
        }
    }

    /// VXLAN: UDP 8 + VXLAN 8. GRE with a key: 4 + 4.
    var tunnelHeader: Int { self == .vxlan ? 16 : 8 }

    func innerMTU(ipv6Underlay: Bool, underlay: Int = 1500) -> Int {
        underlay - (ipv6Underlay ? 40 : 20) - tunnelHeader - 14
    }
}
