// EtcdClient against real etcd (Debian's etcd-server), started by each test on loopback
// addresses of its own (127.77.N.M) and torn down whatever happens: every operation, the
// create-if-absent race, leases kept and lapsed, watches (order, lease expiry, compaction,
// the member going away), fail-over across a three-member cluster, and a stopped store.

@testable import FerryEtcd
import FerryLab
import Foundation
import Testing

@Suite("EtcdClient with real etcd", .serialized)
struct EtcdClientTests {
    /// Starts etcd (`members` members on 127.77.`block`.1…), a client of every member in
    /// order, runs `body`, and tears both down, whatever `body` does.
    func withEtcd(_ block: Int, members: Int = 1, tls: EtcdLab.TLS? = nil, extra: [String] = [],
                  configure: (inout EtcdClient.Configuration) -> Void = { _ in },
                  _ body: (EtcdLab, EtcdClient) async throws -> Void) async throws {
        let lab = EtcdLab(prefix: "fe\(block)", members: (1...members).map { (nil, "127.77.\(block).\($0)") },
                          clientPort: 32379, peerPort: 32380, tls: tls, extraArguments: extra)
        do { try await offPool { try lab.start() } } catch {
            try? await offPool { lab.teardown() }
            throw error
        }
        var failure: (any Error)?
        do { try await run(lab, configure: configure, body) } catch { failure = error }
        try? await offPool { lab.teardown() }
        if let failure { throw failure }
    }

    /// `withEtcd`'s client on a running `lab`.
    func run(_ lab: EtcdLab, configure: (inout EtcdClient.Configuration) -> Void,
             _ body: (EtcdLab, EtcdClient) async throws -> Void) async throws {
        var configuration = try EtcdClient.Configuration(parsing: lab.endpoints)
        // Generous: these run beside the live suites, whose floods can starve etcd for seconds
        // (a first CI run saw "no answer within 3.0 seconds"); the tests that measure a
        // deadline or a fail-over set their own.
        configuration.connectTimeout = .seconds(1)
        configuration.requestTimeout = .seconds(8)
        configuration.operationTimeout = .seconds(16)
        configure(&configuration)
        let client = try EtcdClient(configuration: configuration)
        do {
            // In CI's one `swift test` process, the suites that start with this one block the
            // two threads of Swift's cooperative pool (a 2-core machine) for tens of seconds, and
            // the client's first request, whose reply this task cannot take meanwhile, ran into
            // its deadline (twice). One answer first, waited for up to 90 s, before the test's
            // own deadlines count; a store that never answers still fails the test. (The suite
            // stays on the pool: run off it, `.ownThreads`, its tests went on while the client's
            // own tasks, a watch's reader, waited for the pool, and the watch tests failed.)
            let warmUp = ContinuousClock.now + .seconds(90)
            while true {
                do {
                    _ = try await client.range(prefix: "/warm-up/")
                    break
                } catch {
                    guard ContinuousClock.now < warmUp else { throw error }
                    try await Task.sleep(for: .milliseconds(500))
                }
            }
            try await body(lab, client)
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
    }

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test("range, get, put, create, delete: values, revisions and prefixes as etcd keeps them")
    func operations() async throws {
        try await withEtcd(1) { _, etcd in
            let empty = try await etcd.range(prefix: "/t/")
            #expect(empty.keyValues.isEmpty)
            let binary: [UInt8] = [0, 1, 0xff, 0x7b, 0x22]
            let r1 = try await etcd.put("/t/a", value: binary, lease: 0)
            #expect(r1 > empty.revision)
            let r2 = try await etcd.put("/t/b/é", value: Self.bytes("b"), lease: 0)
            try await etcd.put("/tz", value: Self.bytes("outside"), lease: 0)
            try await etcd.put("/t/a", value: Self.bytes("a2"), lease: 0)

            let (a, revision) = try await etcd.get("/t/a")
            #expect(a?.value == Self.bytes("a2"))
            #expect(a?.version == 2)
            #expect(a?.createRevision == r1)
            #expect(a?.modRevision == revision)
            #expect(try await etcd.get("/t/none").keyValue == nil)

            let snapshot = try await etcd.range(prefix: "/t/")
            #expect(snapshot.keyValues.map(\.key) == ["/t/a", "/t/b/é"])
            #expect(snapshot.keyValues[1].value == Self.bytes("b"))
            #expect(snapshot.keyValues[1].createRevision == r2)
            #expect(snapshot.revision == revision)
            #expect(try await etcd.range(prefix: "").keyValues.count == 3)

            #expect(try await etcd.create("/t/c", value: binary, lease: 0))
            #expect(try await etcd.get("/t/c").keyValue?.value == binary)
            #expect(try await etcd.create("/t/c", value: Self.bytes("other"), lease: 0) == false)
            #expect(try await etcd.get("/t/c").keyValue?.value == binary, "a create that lost writes nothing")
            try await etcd.put("/t/empty", value: [], lease: 0)
            #expect(try await etcd.get("/t/empty").keyValue?.value == [])

            #expect(try await etcd.delete("/t/a"))
            #expect(try await etcd.delete("/t/a") == false)
            #expect(try await etcd.get("/t/a").keyValue == nil)
        }
    }

    @Test("create-if-absent: two clients racing for the same keys, exactly one wins each, and its value is stored")
    func createRace() async throws {
        try await withEtcd(2) { lab, etcd in
            let other = try EtcdClient(configuration: etcd.configuration)
            defer { Task { await other.shutdown() } }
            let keys = (0..<25).map { "/race/\($0)" }
            async let first = Self.createAll(etcd, keys, tag: "first")
            async let second = Self.createAll(other, keys, tag: "second")
            let (wins1, wins2) = try await (first, second)
            for key in keys {
                #expect(wins1.contains(key) != wins2.contains(key), "\(key): exactly one winner")
                let stored = try await etcd.get(key).keyValue
                #expect(stored?.value == Self.bytes(wins1.contains(key) ? "first" : "second"), "\(key)")
                #expect(stored?.version == 1)
            }
            _ = lab
        }
    }

    static func createAll(_ etcd: EtcdClient, _ keys: [String], tag: String) async throws -> Set<String> {
        try await withThrowingTaskGroup(of: String?.self) { group in
            for key in keys {
                group.addTask { try await etcd.create(key, value: bytes(tag), lease: 0) ? key : nil }
            }
            var won: Set<String> = []
            for try await key in group { if let key { won.insert(key) } }
            return won
        }
    }

    @Test("a lease kept alive holds its key past its TTL; left to lapse, the key goes and keepAlive says leaseNotFound")
    func leases() async throws {
        try await withEtcd(3) { _, etcd in
            let lease = try await etcd.grantLease(ttl: 2)
            #expect(lease.id != 0)
            #expect(lease.ttl == 2)
            try await etcd.put("/l/kept", value: Self.bytes("x"), lease: lease.id)
            #expect(try await etcd.get("/l/kept").keyValue?.lease == lease.id)
            for _ in 0..<6 {
                try await Task.sleep(for: .milliseconds(500))
                let ttl = try await etcd.keepAlive(lease.id)
                #expect(ttl == 2)
            }
            #expect(try await etcd.get("/l/kept").keyValue != nil, "3 s after a 2 s grant, kept alive")

            // Lapse: etcd checks expiry every 500 ms; TTL 2 s plus a generous margin.
            let start = Date()
            var gone = false
            while Date().timeIntervalSince(start) < 10 && !gone {
                try await Task.sleep(for: .milliseconds(250))
                gone = try await etcd.get("/l/kept").keyValue == nil
            }
            #expect(gone, "the key went with its lease")
            await #expect(throws: EtcdError.leaseNotFound(lease.id)) { _ = try await etcd.keepAlive(lease.id) }
            await #expect(throws: EtcdError.leaseNotFound(lease.id)) {
                try await etcd.put("/l/late", value: [], lease: lease.id)
            }
            try await etcd.revokeLease(lease.id)  // lapsed: not an error

            let revoked = try await etcd.grantLease(ttl: 30)
            try await etcd.put("/l/revoked", value: [], lease: revoked.id)
            try await etcd.revokeLease(revoked.id)
            #expect(try await etcd.get("/l/revoked").keyValue == nil, "revoking takes the keys at once")
        }
    }

    @Test("a watch sees puts and deletes in order, a lease's expiry as deletes, and nothing outside its prefix")
    func watchOrder() async throws {
        try await withEtcd(4) { _, etcd in
            try await etcd.put("/w/before", value: Self.bytes("0"), lease: 0)
            let snapshot = try await etcd.range(prefix: "/w/")
            let watch = WatchRecorder(etcd.watch(prefix: "/w/", from: snapshot.revision + 1))
            let lease = try await etcd.grantLease(ttl: 1)
            let r1 = try await etcd.put("/w/a", value: Self.bytes("1"), lease: 0)
            try await etcd.put("/x/outside", value: Self.bytes("no"), lease: 0)
            let r2 = try await etcd.put("/w/b", value: Self.bytes("2"), lease: lease.id)
            try await etcd.delete("/w/a")
            try await etcd.put("/w/a", value: Self.bytes("3"), lease: 0)
            let seen = await watch.events(count: 5, timeout: 15)
            guard seen.count == 5 else {
                Issue.record("saw \(seen)")
                return
            }
            guard case .put(let a) = seen[0], case .put(let b) = seen[1], case .delete(let deleted, let r3) = seen[2],
                  case .put(let a2) = seen[3], case .delete(let expired, let r4) = seen[4] else {
                Issue.record("unexpected events: \(seen)")
                return
            }
            #expect(a.key == "/w/a" && a.value == Self.bytes("1") && a.modRevision == r1)
            #expect(b.key == "/w/b" && b.lease == lease.id && b.modRevision == r2)
            #expect(deleted == "/w/a" && r3 > r2)
            #expect(a2.key == "/w/a" && a2.version == 1 && a2.modRevision > r3)
            #expect(expired == "/w/b" && r4 > a2.modRevision, "the lease's expiry is a delete")
        }
    }

    @Test("a watch from a compacted revision ends with .compacted and the compaction's revision; from after it, it works")
    func watchCompacted() async throws {
        try await withEtcd(5) { lab, etcd in
            for i in 0..<5 { try await etcd.put("/c/\(i)", value: [UInt8(i)], lease: 0) }
            let compacted = try lab.compact()
            let old = WatchRecorder(etcd.watch(prefix: "/c/", from: 2))
            #expect(await old.error() == .compacted(compactRevision: compacted))

            let fresh = WatchRecorder(etcd.watch(prefix: "/c/", from: compacted + 1))
            try await etcd.put("/c/new", value: [9], lease: 0)
            let seen = await fresh.events(count: 1)
            #expect(seen.count == 1)
        }
    }

    @Test("etcd stopped: operations and a running watch end with .unavailable within the deadline; restarted, they work again")
    func stopped() async throws {
        try await withEtcd(6) { lab, etcd in
            try await etcd.put("/s/a", value: [1], lease: 0)
            let revision = try await etcd.get("/s/a").revision
            let watch = WatchRecorder(etcd.watch(prefix: "/s/", from: revision + 1))
            try await etcd.put("/s/b", value: [2], lease: 0)
            #expect(await watch.events(count: 1).count == 1)

            try await offPool { lab.stop(0) }
            #expect(await watch.error()?.isUnavailable == true, "the running watch ends")
            let start = ContinuousClock.now
            do {
                _ = try await etcd.get("/s/a")
                Issue.record("a get with etcd stopped answered")
            } catch EtcdError.unavailable(let why) {
                #expect(why.contains("127.77.6.1:32379"), "names the endpoint: \(why)")
            } catch {
                Issue.record("\(error)")
            }
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < etcd.configuration.operationTimeout + .seconds(2), "within the operation's deadline: \(elapsed)")
            print("[etcd stopped] a get ended with .unavailable after \(elapsed)")
            let down = WatchRecorder(etcd.watch(prefix: "/s/", from: 0))
            #expect(await down.error()?.isUnavailable == true, "a new watch too")

            try await offPool {
                try lab.start(0)
                try lab.waitHealthy(0)
            }
            // Set aside, but the only member: tried all the same.
            let (a, now) = try await etcd.get("/s/a")
            #expect(a?.value == [1])
            let again = WatchRecorder(etcd.watch(prefix: "/s/", from: now + 1))
            try await etcd.put("/s/c", value: [3], lease: 0)
            #expect(await again.events(count: 1).count == 1)
        }
    }

    @Test("three members, the first killed: operations, a new watch and a create go on through the others; a watch on it ends")
    func failOver() async throws {
        try await withEtcd(7, members: 3) { lab, etcd in
            try await etcd.put("/f/a", value: [1], lease: 0)
            let revision = try await etcd.get("/f/a").revision
            // The first endpoint is the one in use: its watch ends when it dies.
            let onFirst = WatchRecorder(etcd.watch(prefix: "/f/", from: revision + 1))
            try await etcd.put("/f/b", value: [2], lease: 0)
            #expect(await onFirst.events(count: 1).count == 1)

            let killed = ContinuousClock.now
            lab.kill(0)
            #expect(await onFirst.error()?.isUnavailable == true)

            // A new leader may take an election timeout or two: give the first write room.
            var written = false
            for _ in 0..<10 where !written {
                do {
                    try await etcd.put("/f/c", value: [3], lease: 0)
                    written = true
                } catch {
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
            #expect(written)
            print("[etcd fail-over] first member killed: its watch ended and a write went through another in \(ContinuousClock.now - killed)")
            let snapshot = try await etcd.range(prefix: "/f/")
            #expect(snapshot.keyValues.map(\.key) == ["/f/a", "/f/b", "/f/c"])
            let watch = WatchRecorder(etcd.watch(prefix: "/f/", from: snapshot.revision + 1))
            #expect(try await etcd.create("/f/d", value: [4], lease: 0))
            let lease = try await etcd.grantLease(ttl: 5)
            #expect(try await etcd.keepAlive(lease.id) == 5)
            let seen = await watch.events(count: 1)
            #expect(seen.first.map { if case .put(let kv) = $0 { kv.key == "/f/d" } else { false } } == true)
        }
    }

    @Test("a member frozen (SIGSTOP): requests go on through the others after the request timeout, and a watch on it ends")
    func frozen() async throws {
        try await withEtcd(8, members: 3, configure: {
            $0.requestTimeout = .seconds(2)
            $0.watchCheckInterval = .seconds(1)
        }) { lab, etcd in
            try await etcd.put("/z/a", value: [1], lease: 0)
            let revision = try await etcd.get("/z/a").revision
            let onFirst = WatchRecorder(etcd.watch(prefix: "/z/", from: revision + 1))
            try await etcd.put("/z/b", value: [2], lease: 0)
            #expect(await onFirst.events(count: 1).count == 1)
            let paused = ContinuousClock.now
            lab.pause(0)
            defer { lab.resume(0) }
            let ended = await onFirst.error()
            #expect(ended.map { if case .unavailable(let why) = $0 { why.contains("stopped answering") } else { false } } == true,
                    "\(String(describing: ended))")
            let watchEnded = ContinuousClock.now - paused
            var written = false
            for _ in 0..<10 where !written {
                do {
                    try await etcd.put("/z/c", value: [3], lease: 0)
                    written = true
                } catch {
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
            #expect(written)
            print("[etcd frozen] first member stopped (SIGSTOP): its watch ended after \(watchEnded), a write went through another after \(ContinuousClock.now - paused)")
            #expect(try await etcd.get("/z/c").keyValue?.value == [3])
        }
    }

    @Test("TLS: a client with the CA and a client certificate works; without the certificate, or without the CA, it is refused")
    func tls() async throws {
        let directory = "/dev/shm/ferry-etcd-fe9-certs"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = try EtcdLab.makeCertificates(in: directory, addresses: ["127.77.9.1"])
        let tls = EtcdLab.TLS(caFile: certificates.caFile, certificateFile: certificates.serverCertificateFile,
                              keyFile: certificates.serverKeyFile, clientCertificateRequired: true)
        try await withEtcd(9, tls: tls, configure: {
            $0.caFile = certificates.caFile
            $0.certificateFile = certificates.clientCertificateFile
            $0.keyFile = certificates.clientKeyFile
        }) { _, etcd in
            #expect(etcd.configuration.endpoints.allSatisfy { $0.tls })
            try await etcd.put("/tls/a", value: [1], lease: 0)
            #expect(try await etcd.get("/tls/a").keyValue?.value == [1])
            let revision = try await etcd.get("/tls/a").revision
            let watch = WatchRecorder(etcd.watch(prefix: "/tls/", from: revision + 1))
            try await etcd.put("/tls/b", value: [2], lease: 0)
            #expect(await watch.events(count: 1).count == 1)

            // A handshake that fails is the member's failure (another may do): `.unavailable`,
            // with BoringSSL's reason.
            for (name, configuration, reason) in [
                ("no client certificate", EtcdClient.Configuration(endpoints: etcd.configuration.endpoints, caFile: certificates.caFile),
                 "BAD_CERTIFICATE"),
                ("no CA", EtcdClient.Configuration(endpoints: etcd.configuration.endpoints, certificateFile: certificates.clientCertificateFile,
                                                   keyFile: certificates.clientKeyFile), "CERTIFICATE_VERIFY_FAILED"),
            ] {
                var c = configuration
                c.operationTimeout = .seconds(3)
                let refused = try EtcdClient(configuration: c)
                do {
                    _ = try await refused.get("/tls/a")
                    Issue.record("\(name): answered")
                } catch EtcdError.unavailable(let why) {
                    #expect(why.contains(reason) && why.contains("https://127.77.9.1:32379"), "\(name): \(why)")
                } catch {
                    Issue.record("\(name): \(error)")
                }
                await refused.shutdown()
            }
        }
    }

    @Test("auth: a user's token is sent, taken again when it expires; a wrong password and no user are refused, saying why")
    func auth() async throws {
        try await withEtcd(10, extra: ["--auth-token-ttl", "1"]) { lab, open in
            for command in [["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"],
                            ["user", "add", "ferry:ferrypw"], ["role", "add", "ferry"],
                            ["role", "grant-permission", "ferry", "--prefix=true", "readwrite", "/auth/"],
                            ["user", "grant-role", "ferry", "ferry"], ["auth", "enable"]] {
                try lab.etcdctlChecked(command)
            }
            var configuration = open.configuration
            configuration.user = "ferry"
            configuration.password = "ferrypw"
            let etcd = try EtcdClient(configuration: configuration)
            defer { Task { await etcd.shutdown() } }
            try await etcd.put("/auth/a", value: [1], lease: 0)
            #expect(etcd.state.withLockedValue { $0.authentications } == 1)
            let revision = try await etcd.get("/auth/a").revision
            let watch = WatchRecorder(etcd.watch(prefix: "/auth/", from: revision + 1))
            // The token lives 1 s: past it, the next request is refused once and succeeds.
            try await Task.sleep(for: .seconds(3))
            try await etcd.put("/auth/b", value: [2], lease: 0)
            #expect(etcd.state.withLockedValue { $0.authentications } >= 2, "a new token after the first expired")
            #expect(try await etcd.range(prefix: "/auth/").keyValues.count == 2)
            #expect(await watch.events(count: 1).count == 1)
            let lease = try await etcd.grantLease(ttl: 10)
            #expect(try await etcd.keepAlive(lease.id) == 10)

            await #expect {
                _ = try await etcd.get("/elsewhere")
            } throws: { ($0 as? EtcdError).map { if case .refused(let why) = $0 { why.contains("permission denied") } else { false } } ?? false }
            await #expect {
                _ = try await open.get("/auth/a")
            } throws: { ($0 as? EtcdError).map { if case .refused(let why) = $0 { why.contains("--etcd-user") } else { false } } ?? false }
            configuration.password = "wrong"
            let wrong = try EtcdClient(configuration: configuration)
            await #expect {
                _ = try await wrong.get("/auth/a")
            } throws: { ($0 as? EtcdError).map { if case .refused(let why) = $0 { why.contains("authenticating as ferry") } else { false } } ?? false }
            await wrong.shutdown()
        }
    }

    /// etcd's own count of open watchers, from its /metrics.
    static func watchers(_ lab: EtcdLab) throws -> Int? {
        let o = try Lab.capture(["curl", "-s", "--max-time", "3", lab.members[0].clientURL + "/metrics"])
        let line = o.stdout.split(separator: "\n").first { $0.hasPrefix("etcd_debugging_mvcc_watcher_total ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "").map { Int($0) } }
    }

    @Test("cancelling the task that consumes a watch ends its HTTP request: etcd's watchers go back to none")
    func cancelEndsRequest() async throws {
        try await withEtcd(11) { lab, etcd in
            let tasks = (0..<3).map { i in
                Task {
                    var n = 0
                    for try await batch in etcd.watch(prefix: "/k\(i)/", from: 0) { n += batch.events.count }
                    return n
                }
            }
            #expect(Lab.waitUntil(timeout: 10, interval: 0.1) { (try? Self.watchers(lab)) == 3 }, "three watchers open")
            for task in tasks { task.cancel() }
            for task in tasks { _ = try? await task.value }
            #expect(Lab.waitUntil(timeout: 10, interval: 0.1) { (try? Self.watchers(lab)) == 0 },
                    "watchers left: \(String(describing: try? Self.watchers(lab)))")
        }
    }

    @Test("etcd on a lab's underlay: three members in namespaces of their own, reached from the hosts, one killed, all gone after")
    func onLabUnderlay() throws {
        let lab = Lab(prefix: "fe12", hosts: 3, withBridges: false)
        try lab.build()
        defer { lab.teardown() }
        let etcd = try lab.startEtcd(members: 3)
        defer { etcd.teardown() }
        #expect(etcd.endpoints == "http://10.99.0.250:2379,http://10.99.0.251:2379,http://10.99.0.252:2379")
        let h1 = lab.hosts[1].namespace, h2 = lab.hosts[2].namespace
        try lab.exec(h1, ["etcdctl", "--endpoints=\(etcd.endpoints)", "put", "/lab/a", "1"])
        etcd.kill(0)
        let got = try lab.exec(h2, ["etcdctl", "--endpoints=\(etcd.endpoints)", "--command-timeout=10s", "get", "--print-value-only", "/lab/a"])
        #expect(got.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        etcd.teardown()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        #expect(!names.contains { $0.hasPrefix("fe12-etcd") }, "the members' namespaces are gone")
        #expect(!FileManager.default.fileExists(atPath: etcd.directory), "and their data")
        #expect(etcd.members.indices.allSatisfy { !etcd.isRunning($0) })
    }

    @Test("an IPv6 member: the URL in brackets, operations and a watch through it")
    func ipv6() async throws {
        let lab = EtcdLab(prefix: "fe13", members: [(nil, "::1")], clientPort: 32379, peerPort: 32380)
        defer { lab.teardown() }
        try await offPool { try lab.start() }
        #expect(lab.endpoints == "http://[::1]:32379")
        let etcd = try EtcdClient(configuration: try EtcdClient.Configuration(parsing: lab.endpoints))
        let revision = try await etcd.put("/v6/a", value: [6], lease: 0)
        let watch = WatchRecorder(etcd.watch(prefix: "/v6/", from: revision))
        try await etcd.put("/v6/b", value: [7], lease: 0)
        #expect(await watch.events(count: 2).count == 2)
        #expect(try await etcd.range(prefix: "/v6/").keyValues.map(\.value) == [[6], [7]])
        await etcd.shutdown()
    }
}

/// Runs blocking work (etcd started, stopped, waited for) on a thread of its own, and waits
/// for it without holding one of the cooperative pool's threads: on a 2-core machine that pool
/// has two, and this suite's starts and stops held one for most of a minute, while the pool's
/// other suites (the membership agent's, whose tasks need it) waited. No `#expect` inside: a
/// thread of its own is outside the test's task.
func offPool(_ body: @escaping () throws -> Void) async throws {
    let work = UncheckedWork(body)
    try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
        Thread { done.resume(with: Result { try work.body() }) }.start()
    }
}

private final class UncheckedWork: @unchecked Sendable {
    let body: () throws -> Void
    init(_ body: @escaping () throws -> Void) { self.body = body }
}
