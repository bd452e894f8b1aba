import Foundation
import Glibc

/// Real etcd for tests and demos: one member or a cluster, each member inside a given network
/// namespace (or the current one) on a given address, its data in
/// `/dev/shm/ferry-etcd-<prefix>/` (memory: fsync costs nothing, and a crashed run leaves no
/// disk behind). Members can be stopped, killed, paused and restarted with their data, and
/// the store compacted.
///
/// Every member started is recorded in a pid file: `teardown()` kills them all and removes the
/// directory whatever state the cluster is in, and a new `EtcdLab` with the same prefix first
/// kills what a crashed run left (only processes whose command line names that directory).
///
/// `@unchecked Sendable`: `processes` changes only under `lock`.
public final class EtcdLab: @unchecked Sendable {
    public struct Member: Sendable {
        public var name: String
        /// The namespace the member runs in; nil: the current one.
        public var namespace: String?
        public var address: String
        public var clientPort: Int
        public var peerPort: Int
        public var tls: Bool

        var host: String { address.contains(":") ? "[\(address)]" : address }
        public var clientURL: String { "\(tls ? "https" : "http")://\(host):\(clientPort)" }
        public var peerURL: String { "http://\(host):\(peerPort)" }
    }

    /// Client-side TLS for every member (peers talk plain HTTP): the member's certificate and
    /// key, the CA that signed it and the clients' certificates, and whether a client must
    /// present a certificate.
    public struct TLS: Sendable {
        public var caFile: String
        public var certificateFile: String
        public var keyFile: String
        public var clientCertificateRequired: Bool

        public init(caFile: String, certificateFile: String, keyFile: String, clientCertificateRequired: Bool) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.clientCertificateRequired = clientCertificateRequired
        }
    }

    public let prefix: String
    public let members: [Member]
    public let tls: TLS?
    /// Where data, logs and pid files go.
    public let directory: String
    let etcd: String
    let extraArguments: [String]
    /// Namespaces made for the members (`Lab.startEtcd`), deleted by `teardown()`.
    let ownedNamespaces: [String]
    var processes: [Int: Process] = [:]
    let lock = NSLock()

    /// A cluster of one member per `(namespace, address)`, all on `clientPort`/`peerPort`,
    /// each started with `extraArguments` too (`--auth-token-ttl 2`, …). Kills what a crashed
    /// run with the same prefix left. Nothing starts until `start()`.
    public convenience init(prefix: String, members: [(namespace: String?, address: String)], clientPort: Int = 2379, peerPort: Int = 2380,
                tls: TLS? = nil, extraArguments: [String] = [], etcd: String = "etcd") {
        self.init(prefix: prefix, members: members, clientPort: clientPort, peerPort: peerPort, tls: tls,
                  extraArguments: extraArguments, etcd: etcd, ownedNamespaces: [])
    }

    init(prefix: String, members: [(namespace: String?, address: String)], clientPort: Int, peerPort: Int,
         tls: TLS?, extraArguments: [String], etcd: String, ownedNamespaces: [String]) {
        precondition(!members.isEmpty)
        self.ownedNamespaces = ownedNamespaces
        self.prefix = prefix
        self.tls = tls
        self.etcd = etcd
        self.extraArguments = extraArguments
        directory = Self.directory(prefix: prefix)
        self.members = members.enumerated().map { i, m in
            Member(name: "\(prefix)-e\(i)", namespace: m.namespace, address: m.address, clientPort: clientPort, peerPort: peerPort,
                   tls: tls != nil)
        }
        Self.removeLeftovers(prefix: prefix)
    }

    /// The members' client URLs, comma-separated, as `--etcd` takes them.
    public var endpoints: String { members.map(\.clientURL).joined(separator: ",") }

    static func directory(prefix: String) -> String { "/dev/shm/ferry-etcd-\(prefix)" }

    // MARK: - Starting and stopping

    /// Starts every member, then waits until each says it is healthy (a cluster has a leader).
    /// On failure, everything is torn down and the error says what the members logged.
    public func start(timeout: Double = 30) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for i in members.indices { try start(i) }
            for i in members.indices { try waitHealthy(i, timeout: timeout) }
        } catch {
            teardown()
            throw error
        }
    }

    /// Starts member `i` (again, with its data, when it ran before); does not wait.
    public func start(_ i: Int) throws {
        let m = members[i]
        let cluster = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
        var command = [etcd, "--name", m.name, "--data-dir", "\(directory)/\(m.name).data",
                       "--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
                       "--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
                       "--initial-cluster", cluster, "--initial-cluster-token", prefix, "--initial-cluster-state", "new"]
        if let tls {
            command += ["--cert-file", tls.certificateFile, "--key-file", tls.keyFile, "--trusted-ca-file", tls.caFile]
            if tls.clientCertificateRequired { command += ["--client-cert-auth"] }
        }
        command += extraArguments
        if let ns = m.namespace { command = ["ip", "netns", "exec", ns] + command }
        let log = "\(directory)/\(m.name).log"
        guard FileManager.default.fileExists(atPath: log) || FileManager.default.createFile(atPath: log, contents: nil) else {
            throw Lab.CommandFailure(command: command, status: -1, stderr: "cannot create the log file \(log)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        handle.seekToEndOfFile()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = command
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try Lab.withSignalsUnblocked { try p.run() }
        // `ip netns exec` execs etcd: the pid is etcd's.
        try? "\(p.processIdentifier)\n".write(toFile: "\(directory)/\(m.name).pid", atomically: true, encoding: .utf8)
        lock.withLock { processes[i] = p }
    }

    /// Waits until `etcdctl endpoint health` passes at member `i`; throws with its log if not.
    public func waitHealthy(_ i: Int, timeout: Double = 30) throws {
        var last = ""
        let healthy = Lab.waitUntil(timeout: timeout, interval: 0.2) {
            guard isRunning(i) else { return true }
            guard let o = try? etcdctl(["endpoint", "health"], member: i, timeout: 5) else { return false }
            last = o.stderr + o.stdout
            guard o.status == 0 else { return false }
            // Healthy over gRPC is not yet answering on the JSON gateway Ferry uses: its first
            // request sets the gateway's own connection up, which took more than 8 s on a
            // loaded CI machine (the first test's first request failed there).
            guard let g = try? gateway(i) else { return false }
            last = "the JSON gateway: " + g.stderr + g.stdout
            return g.status == 0 && g.stdout.contains("\"header\"")
        }
        guard healthy, isRunning(i) else {
            let log = (try? String(contentsOfFile: "\(directory)/\(members[i].name).log", encoding: .utf8)) ?? ""
            throw Lab.CommandFailure(command: ["etcd", members[i].name], status: -1,
                                     stderr: "not healthy within \(Int(timeout)) s (\(last.trimmingCharacters(in: .whitespacesAndNewlines))); its log ends:\n"
                                         + log.split(separator: "\n").suffix(15).joined(separator: "\n"))
        }
    }

    /// A range of one key through member `i`'s JSON gateway (`/v3/kv/range`), as Ferry's client asks.
    func gateway(_ i: Int) throws -> Lab.Output {
        let m = members[i]
        var command = ["curl", "-s", "--max-time", "5", "-X", "POST", m.clientURL + "/v3/kv/range", "-d", #"{"key":"AA=="}"#]
        if let tls { command += ["--cacert", tls.caFile, "--cert", tls.certificateFile, "--key", tls.keyFile] }
        if let ns = m.namespace { command = ["ip", "netns", "exec", ns] + command }
        return try Lab.capture(command, timeout: 8)
    }

    public func isRunning(_ i: Int) -> Bool {
        lock.withLock { processes[i]?.isRunning ?? false }
    }

    /// Stops member `i` with SIGTERM (SIGKILL after `timeout`) and waits for it.
    public func stop(_ i: Int, timeout: Double = 10) {
        guard let p = lock.withLock({ processes.removeValue(forKey: i) }) else { return }
        if p.isRunning {
            Glibc.kill(p.processIdentifier, SIGCONT)
            Glibc.kill(p.processIdentifier, SIGTERM)
            if !Lab.waitUntil(timeout: timeout, { !p.isRunning }) { Glibc.kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
        try? FileManager.default.removeItem(atPath: "\(directory)/\(members[i].name).pid")
    }

    /// Kills member `i` outright (SIGKILL), as a crash would.
    public func kill(_ i: Int) {
        guard let p = lock.withLock({ processes.removeValue(forKey: i) }) else { return }
        if p.isRunning { Glibc.kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        try? FileManager.default.removeItem(atPath: "\(directory)/\(members[i].name).pid")
    }

    /// Freezes member `i` (SIGSTOP): it keeps its connections and answers nothing, as a hung
    /// host would. `resume` thaws it.
    public func pause(_ i: Int) {
        if let p = lock.withLock({ processes[i] }), p.isRunning { Glibc.kill(p.processIdentifier, SIGSTOP) }
    }

    public func resume(_ i: Int) {
        if let p = lock.withLock({ processes[i] }), p.isRunning { Glibc.kill(p.processIdentifier, SIGCONT) }
    }

    /// Starts member `i` again with its data and waits until it is healthy.
    public func restart(_ i: Int, timeout: Double = 30) throws {
        stop(i)
        try start(i)
        try waitHealthy(i, timeout: timeout)
    }

    /// Stops every member and removes the data. Safe to call twice, and after a failed start.
    public func teardown() {
        for i in members.indices { stop(i, timeout: 3) }
        Self.removeLeftovers(prefix: prefix)
        Lab.removeNamespaces(ownedNamespaces)
    }

    /// Kills the members a crashed run with this prefix left (those whose pid file names a
    /// running etcd with this directory on its command line) and removes the directory.
    public static func removeLeftovers(prefix: String) {
        let directory = directory(prefix: prefix)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var killed: [Int32] = []
        for file in files where file.hasSuffix(".pid") {
            guard let text = try? String(contentsOfFile: "\(directory)/\(file)", encoding: .utf8),
                  let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  let cmdline = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { continue }
            let command = String(decoding: cmdline.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
            if command.contains("etcd") && command.contains(directory + "/") {
                Glibc.kill(pid, SIGCONT)
                Glibc.kill(pid, SIGKILL)
                killed.append(pid)
            }
        }
        // Until they are gone (a zombie's command line is empty): their ports are free then.
        _ = Lab.waitUntil(timeout: 5) {
            killed.allSatisfy { ((try? Data(contentsOf: URL(fileURLWithPath: "/proc/\($0)/cmdline"))) ?? Data()).isEmpty }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: - Using the store

    /// Runs `etcdctl` against member `i` (all members when nil), from the member's namespace.
    @discardableResult
    public func etcdctl(_ arguments: [String], member i: Int? = nil, timeout: Double = 15) throws -> Lab.Output {
        let m = members[i ?? 0]
        var command = ["env", "ETCDCTL_API=3", "etcdctl", "--dial-timeout=2s", "--command-timeout=\(Int(max(timeout - 1, 1)))s",
                       "--endpoints=\(i == nil ? endpoints : m.clientURL)"]
        if let tls {
            command += ["--cacert", tls.caFile, "--cert", tls.certificateFile, "--key", tls.keyFile]
        }
        command += arguments
        if let ns = m.namespace { command = ["ip", "netns", "exec", ns] + command }
        return try Lab.capture(command, timeout: timeout)
    }

    /// As `etcdctl`, throwing when it fails.
    @discardableResult
    public func etcdctlChecked(_ arguments: [String], member i: Int? = nil, timeout: Double = 15) throws -> String {
        let o = try etcdctl(arguments, member: i, timeout: timeout)
        guard o.status == 0 else { throw Lab.CommandFailure(command: ["etcdctl"] + arguments, status: o.status, stderr: o.stderr) }
        return o.stdout
    }

    /// The store's current revision, as the first running member reports it.
    public func revision() throws -> Int64 {
        let member = members.indices.first(where: isRunning) ?? 0
        let json = try etcdctlChecked(["endpoint", "status", "-w", "json"], member: member)
        guard let list = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]],
              let status = list.first?["Status"] as? [String: Any], let header = status["header"] as? [String: Any],
              let revision = (header["revision"] as? NSNumber)?.int64Value else {
            throw Lab.CommandFailure(command: ["etcdctl", "endpoint", "status"], status: -1, stderr: "no revision in \(json)")
        }
        return revision
    }

    /// Compacts the store up to its current revision (what a watch from an older one then
    /// misses); returns that revision.
    @discardableResult
    public func compact() throws -> Int64 {
        let revision = try revision()
        try etcdctlChecked(["compact", "--physical", String(revision)], member: members.indices.first(where: isRunning) ?? 0)
        return revision
    }

    // MARK: - Certificates

    /// The files `makeCertificates` writes.
    public struct Certificates: Sendable {
        public var caFile: String
        /// The members' certificate (for `addresses`, server and client use) and its key.
        public var serverCertificateFile: String
        public var serverKeyFile: String
        /// A client's certificate and key, signed by the same CA.
        public var clientCertificateFile: String
        public var clientKeyFile: String
    }

    /// A throwaway CA (valid a day) and, signed by it, a certificate for `addresses` (IP
    /// subject alternative names) and a client certificate, with openssl, in `directory`.
    public static func makeCertificates(in directory: String, addresses: [String]) throws -> Certificates {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let d = directory
        func openssl(_ args: [String]) throws {
            let o = try Lab.capture(["openssl"] + args)
            guard o.status == 0 else { throw Lab.CommandFailure(command: ["openssl"] + args, status: o.status, stderr: o.stderr) }
        }
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try openssl(["req", "-x509"] + key + ["-keyout", "\(d)/ca.key", "-out", "\(d)/ca.pem", "-days", "1", "-subj", "/CN=ferry-test-ca"])
        for (name, usage) in [("server", "serverAuth,clientAuth"), ("client", "clientAuth")] {
            try openssl(["req"] + key + ["-keyout", "\(d)/\(name).key", "-out", "\(d)/\(name).csr", "-subj", "/CN=ferry-\(name)"])
            var ext = "extendedKeyUsage=\(usage)\n"
            if name == "server" { ext += "subjectAltName=" + addresses.map { "IP:\($0)" }.joined(separator: ",") + "\n" }
            try ext.write(toFile: "\(d)/\(name).ext", atomically: true, encoding: .utf8)
            try openssl(["x509", "-req", "-in", "\(d)/\(name).csr", "-CA", "\(d)/ca.pem", "-CAkey", "\(d)/ca.key", "-CAcreateserial",
                         "-out", "\(d)/\(name).pem", "-days", "1", "-extfile", "\(d)/\(name).ext"])
        }
        return Certificates(caFile: "\(d)/ca.pem", serverCertificateFile: "\(d)/server.pem", serverKeyFile: "\(d)/server.key",
                            clientCertificateFile: "\(d)/client.pem", clientKeyFile: "\(d)/client.key")
    }
}

extension Lab {
    /// etcd on the lab's underlay, for Ferry's hosts to reach: `count` members at
    /// 10.99.0.250, .251, … (fd00:99::250, … with an IPv6 underlay), port 2379. With three
    /// hosts or more each member has a namespace of its own (`<prefix>-etcd<i>`) with a leg on
    /// the underlay bridge; with two (no bridge) the members run in host 0's namespace. Started
    /// and healthy when this returns; `teardown()` on the result stops them and deletes their
    /// namespaces (a crashed run's are removed with the lab's leftovers, by prefix).
    public func startEtcd(members count: Int = 1, extraArguments: [String] = [], timeout: Double = 30) throws -> EtcdLab {
        precondition((1...5).contains(count))
        var members: [(namespace: String?, address: String)] = []
        var created: [String] = []
        do {
            for i in 0..<count {
                let address = ipv6Underlay ? "fd00:99::\(250 + i)" : "10.99.0.\(250 + i)"
                let length = ipv6Underlay ? "/64" : "/24"
                let ns: String
                if hosts.count > 2 {
                    ns = "\(prefix)-etcd\(i)"
                    Lab.removeNamespaces([ns])
                    try run(["ip", "netns", "add", ns])
                    created.append(ns)
                    try ip(ns, "link", "set", "lo", "up")
                    try run(["ip", "link", "add", "u0", "netns", ns, "type", "veth", "peer", "name", "e\(i)", "netns", switchNamespace])
                    try ip(switchNamespace, "link", "set", "e\(i)", "master", "ubr", "up")
                    if ipv6Underlay { try sysctl(ns, "net.ipv6.conf.u0.accept_dad", "0") }
                    try ip(ns, "link", "set", "u0", "up")
                } else {
                    ns = hosts[0].namespace
                }
                if ipv6Underlay {
                    try ip(ns, "-6", "addr", "replace", address + length, "dev", "u0", "nodad")
                } else {
                    try ip(ns, "addr", "replace", address + length, "dev", "u0")
                }
                members.append((ns, address))
            }
        } catch {
            Lab.removeNamespaces(created)
            throw error
        }
        let etcd = EtcdLab(prefix: "\(prefix)-etcd", members: members, clientPort: 2379, peerPort: 2380, tls: nil,
                           extraArguments: extraArguments, etcd: "etcd", ownedNamespaces: created)
        try etcd.start(timeout: timeout)
        return etcd
    }
}
