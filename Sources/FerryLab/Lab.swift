import Foundation

/// A lab of hosts as network namespaces, in the classic two-bridge layout: each host has an
/// underlay leg (a veth pair for two hosts, an underlay bridge in a switch namespace for more),
/// a container bridge `bridge0` holding its own /16 (10.17.0.0/16, 10.18.0.0/16, …), containers
/// as namespaces with a leg on that bridge, and routes sending the other hosts' container
/// subnets to `bridge0`. Ferry (or a kernel vxlan device) on each host joins the bridges.
///
/// Every lab has a name prefix; `build()` first removes whatever a crashed run with the same
/// prefix left, and `teardown()` removes everything, whatever state the lab is in.
///
/// `@unchecked Sendable`: `hosts` is set in `init` and only read after; `children` changes only
/// under `lock`.
public final class Lab: @unchecked Sendable {
    public struct Container: Sendable {
        public var namespace: String
        public var address: String
        public var mac: String
    }

    public struct Host: Sendable {
        public var index: Int
        public var namespace: String
        /// The underlay address (IPv4 or IPv6) and the underlay interface.
        public var underlay: String
        public var underlayInterface: String
        /// 10.(17 + index).0.0/16 and the bridge's own address in it.
        public var subnet: String
        public var bridgeAddress: String
        public var containers: [Container]
    }

    public let prefix: String
    public let ipv6Underlay: Bool
    /// False: the hosts have no bridge0, no address on it and no routes to the other subnets
    /// (`ferry setup` makes them); the containers' host legs are up but on no bridge until
    /// `attachContainers` (what Docker does when it starts on the bridge).
    public let withBridges: Bool
    public private(set) var hosts: [Host] = []
    public var switchNamespace: String { prefix + "-sw" }
    var children: [Process] = []
    let lock = NSLock()

    public init(prefix: String, hosts count: Int, containersPerHost: Int = 1, ipv6Underlay: Bool = false, withBridges: Bool = true) {
        precondition(count >= 2 && count <= 200 && containersPerHost >= 1)
        self.prefix = prefix
        self.ipv6Underlay = ipv6Underlay
        self.withBridges = withBridges
        hosts = (0..<count).map { i in
            Host(index: i, namespace: "\(prefix)-h\(i)",
                 underlay: ipv6Underlay ? "fd00:99::\(i + 1)" : "10.99.0.\(i + 1)",
                 underlayInterface: "u0",
                 subnet: "10.\(17 + i).0.0/16", bridgeAddress: "10.\(17 + i).0.1",
                 containers: (0..<containersPerHost).map { j in
                     Container(namespace: "\(prefix)-h\(i)c\(j)", address: "10.\(17 + i).0.\(2 + j)",
                               mac: String(format: "02:42:0a:%02x:00:%02x", 17 + i, 2 + j))
                 })
        }
    }

    public var namespaces: [String] {
        hosts.flatMap { [$0.namespace] + $0.containers.map(\.namespace) } + (hosts.count > 2 ? [switchNamespace] : [])
    }

    /// Builds the lab. On failure, what was built is torn down before the error is thrown.
    public func build() throws {
        Lab.removeLeftovers(prefix: prefix)
        do {
            try buildUnguarded()
        } catch {
            teardown()
            throw error
        }
    }

    func buildUnguarded() throws {
        for ns in namespaces {
            try run(["ip", "netns", "add", ns])
            try ip(ns, "link", "set", "lo", "up")
        }
        let mask = ipv6Underlay ? "/64" : "/24"
        if hosts.count == 2 {
            try run(["ip", "link", "add", "u0", "netns", hosts[0].namespace, "type", "veth",
                     "peer", "name", "u0", "netns", hosts[1].namespace])
        } else {
            try ip(switchNamespace, "link", "add", "ubr", "type", "bridge")
            try ip(switchNamespace, "link", "set", "ubr", "up")
            for h in hosts {
                try run(["ip", "link", "add", "u0", "netns", h.namespace, "type", "veth",
                         "peer", "name", "p\(h.index)", "netns", switchNamespace])
                try ip(switchNamespace, "link", "set", "p\(h.index)", "master", "ubr", "up")
            }
        }
        for h in hosts {
            let ns = h.namespace
            if ipv6Underlay {
                try sysctl(ns, "net.ipv6.conf.u0.accept_dad", "0")
                try ip(ns, "-6", "addr", "add", h.underlay + mask, "dev", "u0", "nodad")
            } else {
                try ip(ns, "addr", "add", h.underlay + mask, "dev", "u0")
            }
            try ip(ns, "link", "set", "u0", "up")
            if withBridges {
                try ip(ns, "link", "add", "bridge0", "type", "bridge")
                try ip(ns, "addr", "add", h.bridgeAddress + "/16", "dev", "bridge0")
                try ip(ns, "link", "set", "bridge0", "up")
            }
            try sysctl(ns, "net.ipv4.ip_forward", "1")
            for (j, c) in h.containers.enumerated() {
                try run(["ip", "link", "add", "c\(j)", "netns", ns, "type", "veth", "peer", "name", "eth0", "netns", c.namespace])
                if withBridges { try ip(ns, "link", "set", "c\(j)", "master", "bridge0") }
                try ip(ns, "link", "set", "c\(j)", "up")
                try ip(c.namespace, "link", "set", "eth0", "address", c.mac)
                try ip(c.namespace, "addr", "add", c.address + "/16", "dev", "eth0")
                try ip(c.namespace, "link", "set", "eth0", "up")
                try ip(c.namespace, "route", "add", "default", "via", h.bridgeAddress)
            }
            for other in hosts where other.index != h.index && withBridges {
                try ip(ns, "route", "add", other.subnet, "dev", "bridge0")
            }
        }
    }

    /// Puts host `index`'s containers' legs on its bridge0 (made by `ferry setup` in a lab
    /// built without bridges).
    public func attachContainers(_ index: Int) throws {
        let h = hosts[index]
        for j in h.containers.indices { try ip(h.namespace, "link", "set", "c\(j)", "master", "bridge0") }
    }

    /// Kills every process in the lab's namespaces and deletes them. Safe to call twice, and
    /// on a lab that was only half built.
    public func teardown() {
        lock.withLock {
            for p in children where p.isRunning { p.terminate() }
        }
        Lab.removeNamespaces(namespaces)
        lock.withLock {
            for p in children where p.isRunning { kill(p.processIdentifier, SIGKILL) }
            children.removeAll()
        }
    }

    /// Removes namespaces named `<prefix>-…` that an earlier run left behind.
    public static func removeLeftovers(prefix: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        removeNamespaces(names.filter { $0.hasPrefix(prefix + "-") })
        let sockets = (try? FileManager.default.contentsOfDirectory(atPath: "/run/ferry")) ?? []
        for s in sockets where s.hasPrefix(prefix + "-") { try? FileManager.default.removeItem(atPath: "/run/ferry/" + s) }
    }

    static func removeNamespaces(_ names: [String]) {
        for ns in names {
            if let pids = try? Lab.capture(["ip", "netns", "pids", ns]).stdout {
                for pid in pids.split(whereSeparator: \.isNewline).compactMap({ Int32($0) }) { kill(pid, SIGTERM) }
            }
        }
        // Give processes a moment to write their summaries, then make sure.
        if !names.isEmpty { usleep(200_000) }
        for ns in names {
            if let pids = try? Lab.capture(["ip", "netns", "pids", ns]).stdout {
                for pid in pids.split(whereSeparator: \.isNewline).compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
            }
            _ = try? Lab.capture(["ip", "netns", "del", ns])
        }
    }

    // MARK: - Running things in the lab

    public struct CommandFailure: Error, CustomStringConvertible {
        public var command: [String]
        public var status: Int32
        public var stderr: String
        public var description: String {
            "`\(command.joined(separator: " "))` exited \(status): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
        }
    }

    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs a command to completion (bounded by `timeout` seconds) and returns its output.
    @discardableResult
    public static func capture(_ command: [String], timeout: Double = 60) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = command
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Read both pipes while the process runs, so that a chatty one cannot block on a full pipe.
        // `nonisolated(unsafe)`: each is written by its reader alone, and read after `group.wait()`.
        nonisolated(unsafe) var outData = Data(), errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning {
            p.terminate()
            usleep(200_000)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
        group.wait()
        return Output(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Runs a command and throws when it fails.
    @discardableResult
    public func run(_ command: [String], timeout: Double = 60) throws -> Output {
        let o = try Lab.capture(command, timeout: timeout)
        guard o.status == 0 else { throw CommandFailure(command: command, status: o.status, stderr: o.stderr) }
        return o
    }

    /// Runs `command` inside namespace `ns`.
    @discardableResult
    public func exec(_ ns: String, _ command: [String], timeout: Double = 60) throws -> Output {
        try run(["ip", "netns", "exec", ns] + command, timeout: timeout)
    }

    /// As `exec`, returning the output whatever the exit status.
    public func attempt(_ ns: String, _ command: [String], timeout: Double = 60) throws -> Output {
        try Lab.capture(["ip", "netns", "exec", ns] + command, timeout: timeout)
    }

    func ip(_ ns: String, _ args: String...) throws { try run(["ip", "-n", ns] + args) }

    func sysctl(_ ns: String, _ key: String, _ value: String) throws {
        try exec(ns, ["sysctl", "-qw", "\(key)=\(value)"])
    }

    /// Starts `command` in `ns` in the background, its output to `log` (and in
    /// `workingDirectory`, if given). Teardown stops it.
    @discardableResult
    public func spawn(_ ns: String, _ command: [String], log: String, workingDirectory: String? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ip", "netns", "exec", ns] + command
        if let workingDirectory { p.currentDirectoryURL = URL(fileURLWithPath: workingDirectory) }
        // Said here, where the cause is known, rather than by the FileHandle that would fail next.
        guard FileManager.default.createFile(atPath: log, contents: nil) else {
            throw CommandFailure(command: command, status: -1, stderr: "cannot create the log file \(log)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try Lab.withSignalsUnblocked { try p.run() }
        lock.withLock { children.append(p) }
        return p
    }

    /// A child inherits the spawning thread's signal mask, and test runners block SIGINT and
    /// SIGTERM in their threads: unblocked around the spawn, so that the child can be stopped
    /// politely (and write its summary) rather than killed.
    static func withSignalsUnblocked<T>(_ body: () throws -> T) rethrows -> T {
        var unblock = sigset_t(), previous = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGINT)
        sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        return try body()
    }

    /// Waits (bounded) until `condition` holds; false on timeout.
    public static func waitUntil(timeout: Double, interval: Double = 0.05, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(UInt32(interval * 1e6))
        }
        return condition()
    }
}
