import Foundation

// What the soak test (`LiveSoakTests`) uses besides the lab: the control socket asked directly
// (the request `ferry ctl` sends, without starting a process ten times a second), a process's
// RSS and CPU time from /proc, the per-second samples and the windows they are compared over,
// and the Python loads (short TCP connections, peers coming and going).

enum Soak {
    // MARK: - The control socket

    /// Sends `request` ("stats", "fdb") to the Ferry listening at `path` and returns its reply:
    /// one line in, one JSON document out, then the server closes (ControlProtocol's contract,
    /// as `ferry ctl` uses it). Bounded: 5 s for each read and write.
    static func ask(_ path: String, _ request: String) throws -> Data {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw UnexpectedOutput("socket(AF_UNIX): errno \(errno)") }
        defer { close(fd) }
        var limit = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw UnexpectedOutput("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes + [0]) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw UnexpectedOutput("connect(\(path)): errno \(errno)") }
        let line = Array((request + "\n").utf8)
        guard line.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == line.count else {
            throw UnexpectedOutput("write to \(path): errno \(errno)")
        }
        var reply = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else { throw UnexpectedOutput("read from \(path): errno \(errno) after \(reply.count) bytes") }
            reply.append(contentsOf: buffer[0..<n])
        }
        return reply
    }

    static func stats(_ path: String) throws -> CtlStats {
        let reply = try ask(path, "stats")
        do { return try JSONDecoder().decode(CtlStats.self, from: reply) } catch {
            throw UnexpectedOutput("stats reply is not the documented JSON (\(error)): \(String(decoding: reply.prefix(500), as: UTF8.self))")
        }
    }

    static func fdb(_ path: String) throws -> [CtlFDBEntry] {
        let reply = try ask(path, "fdb")
        do { return try JSONDecoder().decode([CtlFDBEntry].self, from: reply) } catch {
            throw UnexpectedOutput("fdb reply is not the documented JSON (\(error)): \(String(decoding: reply.prefix(500), as: UTF8.self))")
        }
    }

    // MARK: - A process, from /proc

    /// VmRSS, in bytes.
    static func rss(_ pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(whereSeparator: \.isWhitespace)[1])
        else { throw UnexpectedOutput("no VmRSS in /proc/\(pid)/status") }
        return kib * 1024
    }

    /// utime + stime of every thread of the process so far, in seconds (/proc/PID/stat fields
    /// 14 and 15, in clock ticks: 10 ms resolution at 100 Hz).
    static func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        guard let close = stat.lastIndex(of: ")") else { throw UnexpectedOutput("unreadable /proc/\(pid)/stat: \(stat)") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state): utime is field 14, stime field 15.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else {
            throw UnexpectedOutput("no utime/stime in /proc/\(pid)/stat: \(stat)")
        }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Resident KiB of each mapping of the process (/proc/PID/smaps), keyed by its address
    /// range, with its size in KiB and its name ("" for anonymous memory): which mapping grew
    /// tells a buffer allocated at start whose pages are touched later (a mapping of its own,
    /// its size that of the buffer) from memory malloc hands out and keeps ([heap], or a
    /// thread's 64 MiB arena).
    static func mappings(_ pid: Int32) -> Mappings {
        // (String(contentsOfFile:) stops at the first 4 KiB of a /proc file, which claims size 0.)
        guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps"), let data = try? handle.readToEnd() else { return [:] }
        try? handle.close()
        let text = String(decoding: data, as: UTF8.self)
        var result: [String: (size: Int, name: String, rss: Int)] = [:]
        var current: String?
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: \.isWhitespace)
            guard let first = fields.first else { continue }
            if first.contains("-"), fields.count >= 5, !first.hasSuffix(":") {
                let bounds = first.split(separator: "-").compactMap { UInt64($0, radix: 16) }
                guard bounds.count == 2 else { continue }
                let name = fields.count > 5 ? fields[5...].joined(separator: " ") : ""
                current = String(first)
                result[String(first)] = (Int((bounds[1] - bounds[0]) / 1024), name, 0)
            } else if first == "Rss:", let key = current, fields.count >= 2, let kib = Int(fields[1]) {
                result[key]?.rss = kib
            }
        }
        return result
    }

    typealias Mappings = [String: (size: Int, name: String, rss: Int)]

    /// Whether mapping `key` is a packet buffer Ferry allocated at start: anonymous, 4 MiB or
    /// more, the same range at both readings, and not one of malloc's per-thread arenas (which
    /// glibc aligns to 64 MiB). Its pages become resident when a frame first reaches that deep
    /// into a 64 KiB slot, at whatever time a burst first fills a batch that far: growth that
    /// stops at the buffer's size (about 20 MiB for two workers), not a leak.
    static func isPacketBuffer(_ key: String, at end: Mappings, warm: Mappings) -> Bool {
        guard let m = end[key], let w = warm[key], m.name.isEmpty, m.size >= 4096, w.size == m.size,
              let start = key.split(separator: "-").first.flatMap({ UInt64($0, radix: 16) })
        else { return false }
        return start % (64 << 20) != 0
    }

    /// Resident KiB gained from `warm` to `end`: in the packet buffers, and everywhere else
    /// (the heap, malloc's arenas, mappings new since, code and data of the libraries).
    static func growth(from warm: Mappings, to end: Mappings) -> (packetBuffers: Int, other: Int) {
        var buffers = 0, other = 0
        for (key, m) in end {
            let before = warm[key]?.rss ?? 0
            if isPacketBuffer(key, at: end, warm: warm) { buffers += m.rss - before } else { other += m.rss - before }
        }
        for (key, m) in warm where end[key] == nil { other -= m.rss }
        return (buffers, other)
    }

    /// The mappings whose resident size changed from `a` to `b`, largest change first.
    static func grown(from a: Mappings, to b: Mappings) -> [String] {
        var changes: [(String, Int)] = []
        for (key, m) in b {
            let before = a[key]?.rss ?? 0
            if m.rss != before {
                changes.append(("\(key) (\(m.size) KiB\(m.name.isEmpty ? "" : " " + m.name)\(a[key] == nil ? ", new" : "")) \(before)>\(m.rss) KiB",
                                m.rss - before))
            }
        }
        for (key, m) in a where b[key] == nil { changes.append(("\(key) (\(m.size) KiB \(m.name), gone) \(m.rss)>0 KiB", -m.rss)) }
        return changes.sorted { abs($0.1) > abs($1.1) }.map(\.0)
    }

    // MARK: - Samples and windows

    /// One second's reading of one Ferry.
    struct Sample {
        var at: Double
        /// The canary's CPU time so far, in seconds.
        var canaryCPU: Double = 0
        var rss: Int
        var cpu: Double
        /// Bytes through the TAP (both ways) and the tunnel (both ways): what Ferry moved.
        var bytes: UInt64
        var tunnelPackets: UInt64
        var tapFrames: UInt64
    }

    static func sample(at: Double, pid: Int32, stats s: CtlStats) throws -> Sample {
        func c(_ name: String) throws -> UInt64 { try s.counter(name) }
        let bytes = try c("tap_rx_bytes") + c("tap_tx_bytes") + c("sent_bytes") + c("received_bytes")
        return Sample(at: at, rss: try rss(pid), cpu: try cpuSeconds(pid), bytes: bytes,
                      tunnelPackets: try c("sent_packets") + c("received_packets"),
                      tapFrames: try c("tap_rx_frames") + c("tap_tx_frames"))
    }

    /// How a soak of `duration` seconds is cut up. The first part is warm-up: buffers' pages are
    /// touched the first time a packet needs them (steps of MiBs in the first seconds), TCP
    /// ramps up, and the peer and forwarding tables fill to their steady state. The issue sets
    /// it to a minute for the 10-minute soak; a 60 s run keeps the same proportion at the start
    /// but not below 20 s, and compares two 15 s windows: long enough that the 10 ms CPU-tick
    /// resolution and a second of scheduling noise weigh under 1 %, apart enough (10 s) that
    /// the table state has turned over (the churning peers cycle in 12 s).
    struct Windows {
        var duration: Double
        /// RSS after this is compared with the sample here.
        var warmUp: Double { duration >= 180 ? 60 : max(20, duration / 3) }
        var length: Double { duration >= 180 ? 60 : duration / 4 }
        /// The first window starts when warm-up ends; the last ends with the soak.
        var first: ClosedRange<Double> { warmUp...(warmUp + length) }
        var last: ClosedRange<Double> { (duration - length)...duration }
    }

    /// What one Ferry did over a window, from the samples nearest its ends.
    struct WindowFigures {
        var range: ClosedRange<Double>
        var rssStart: Int
        var rssEnd: Int
        var cpu: Double
        var gigabits: Double
        var seconds: Double
        var tunnelPackets: UInt64
        var tapFrames: UInt64
        /// The canary's CPU time per second over the window (its work per second is fixed).
        var canaryCPUPerSecond: Double
        var cpuPerGigabit: Double { gigabits > 0 ? cpu / gigabits : .infinity }
        var gbps: Double { gigabits / seconds }
        var tunnelPPS: Double { Double(tunnelPackets) / seconds }
        var tapFPS: Double { Double(tapFrames) / seconds }
        var cpuShare: Double { cpu / seconds }
    }

    static func figures(_ samples: [Sample], over range: ClosedRange<Double>) -> WindowFigures? {
        guard let a = samples.min(by: { abs($0.at - range.lowerBound) < abs($1.at - range.lowerBound) }),
              let b = samples.min(by: { abs($0.at - range.upperBound) < abs($1.at - range.upperBound) }),
              b.at > a.at
        else { return nil }
        return WindowFigures(range: a.at...b.at, rssStart: a.rss, rssEnd: b.rss, cpu: b.cpu - a.cpu,
                             gigabits: Double(b.bytes - a.bytes) * 8 / 1e9, seconds: b.at - a.at,
                             tunnelPackets: b.tunnelPackets - a.tunnelPackets, tapFrames: b.tapFrames - a.tapFrames,
                             canaryCPUPerSecond: (b.canaryCPU - a.canaryCPU) / (b.at - a.at))
    }

    // MARK: - Counters never go backwards

    /// The counters of two successive readings that went down: totals, drops, each worker's,
    /// and each configured (not learned) peer's, whose entry is never reused.
    static func backwards(from a: CtlStats, to b: CtlStats) -> [String] {
        var found: [String] = []
        for (name, value) in b.counters where value < (a.counters[name] ?? 0) {
            found.append("\(name) \(a.counters[name] ?? 0) -> \(value)")
        }
        for (name, value) in b.drops where value < (a.drops[name] ?? 0) {
            found.append("drop \(name) \(a.drops[name] ?? 0) -> \(value)")
        }
        for name in Set(a.counters.keys).subtracting(b.counters.keys) { found.append("\(name) vanished") }
        for name in Set(a.drops.keys).subtracting(b.drops.keys) { found.append("drop \(name) vanished") }
        for (i, (x, y)) in zip(a.workers, b.workers).enumerated() {
            if y.tapRxFrames < x.tapRxFrames || y.tapTxFrames < x.tapTxFrames || y.sentPackets < x.sentPackets
                || y.receivedPackets < x.receivedPackets {
                found.append("worker \(i) \(x) -> \(y)")
            }
        }
        for p in a.peers where !p.learned {
            guard let q = b.peer(p.address) else { found.append("peer \(p.address) vanished"); continue }
            if q.txPackets < p.txPackets || q.txBytes < p.txBytes || q.rxPackets < p.rxPackets || q.rxBytes < p.rxBytes {
                found.append("peer \(p.address) tx \(p.txPackets)/\(p.txBytes) rx \(p.rxPackets)/\(p.rxBytes) -> "
                             + "tx \(q.txPackets)/\(q.txBytes) rx \(q.rxPackets)/\(q.rxBytes)")
            }
        }
        return found
    }

    // MARK: - Loads

    /// An echo server for `shortConnectionClient`: accepts, reads 100 bytes, sends them back and
    /// closes first (so that TIME_WAIT stays on this side, and the client never runs out of
    /// ports in a long soak). Runs until killed.
    static let echoServer = """
        import socket, sys
        host, port = sys.argv[1], int(sys.argv[2])
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(256)
        print("listening", flush=True)
        while True:
            c, _ = s.accept()
            c.settimeout(5)
            try:
                data = b""
                while len(data) < 100:
                    d = c.recv(100 - len(data))
                    if not d:
                        break
                    data += d
                c.sendall(data)
            except OSError:
                pass
            c.close()
        """

    /// Opens and closes TCP connections for `seconds`, one after the other, `rate` a second on
    /// average (a connection that came late is followed by the next at once; 0: as fast as it
    /// can): each sends 100
    /// random bytes and must get them back before the server closes. Writes {ok, failed, errors}.
    static let shortConnectionClient = """
        import json, os, socket, sys, time
        host, port, seconds, rate, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
        ok = failed = 0
        errors = {}
        start = time.monotonic()
        deadline = start + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            wait = start + n / rate - time.monotonic() if rate > 0 else 0
            if wait > 0:
                time.sleep(wait)
            payload = os.urandom(100)
            try:
                c = socket.create_connection((host, port), timeout=5)
                c.settimeout(5)
                c.sendall(payload)
                got = b""
                while True:
                    d = c.recv(200)
                    if not d:
                        break
                    got += d
                c.close()
                if got == payload:
                    ok += 1
                else:
                    failed += 1
                    errors["wrong echo"] = errors.get("wrong echo", 0) + 1
            except OSError as e:
                failed += 1
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        json.dump({"ok": ok, "failed": failed, "errors": errors}, open(out, "w"))
        print("done", ok, failed, flush=True)
        """

    struct ShortConnections: Decodable {
        var ok: Int
        var failed: Int
        var errors: [String: Int]
    }

    /// Peers that come and go: VXLAN (VNI 42) to `target` from `pool` addresses 10.98.x.y, `wave`
    /// new ones every `gap` seconds, cycling through the pool, for `seconds`. Each packet carries
    /// a broadcast frame from a MAC of the source's own that changes every cycle, so that the
    /// forwarding table learns new MACs as the peer table learns new peers; with `--ageing`
    /// shorter than a cycle, both are aged out and retired before the source comes back.
    /// Writes {sent, cycles}.
    static let peerChurn = """
        import json, socket, struct, sys, time
        target, pool, wave, gap, seconds, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        def packet(n, cycle):
            src = socket.inet_aton("10.98.%d.%d" % (n // 250, n % 250 + 1))
            frame = b"\\xff" * 6 + bytes([2, 0x98, cycle & 255, 0, n >> 8, n & 255]) + b"\\x88\\xb5" + bytes(46)
            vxlan = struct.pack("!II", 0x08000000, 42 << 8)
            udp = struct.pack("!HHHH", 40000 + n, 4789, 8 + len(vxlan) + len(frame), 0)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(vxlan) + len(frame), n, 0, 64, 17, 0,
                             src, socket.inet_aton(target))
            return ip + udp + vxlan + frame
        sent, cycle, first = 0, 0, 0
        start = time.monotonic()
        tick = start
        while time.monotonic() - start < seconds:
            for k in range(wave):
                s.sendto(packet((first + k) % pool, cycle), (target, 0))
                sent += 1
            first += wave
            if first >= pool:
                first -= pool
                cycle += 1
            tick += gap
            time.sleep(max(0, tick - time.monotonic()))
        json.dump({"sent": sent, "cycles": cycle}, open(out, "w"))
        print("sent", sent, flush=True)
        """

    /// A reference load of fixed work: `rate` units a second for `seconds`, each unit eight
    /// SHA-256 digests of 64 KiB (about 0.4 ms of CPU here). What one unit costs in CPU time shows how
    /// much the machine's other load slows any process down (shared caches and memory, a
    /// virtual machine's CPUs): the soak divides Ferry's CPU per gigabit by it.
    static let canary = """
        import hashlib, os, sys, time
        seconds, rate = float(sys.argv[1]), float(sys.argv[2])
        data = os.urandom(1 << 16)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            n += 1
            for _ in range(8):
                hashlib.sha256(data).digest()
            wait = start + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        print("units", n, flush=True)
        """

    struct PeerChurn: Decodable {
        var sent: Int
        var cycles: Int
    }
}
