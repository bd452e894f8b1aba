import FerryLab
import Foundation
import Testing

/// Membership on a real etcd (one member, in the lab's switch namespace on the underlay): hosts
/// started with nothing but --tap, --bridge, --local and --etcd find each other; a host joins,
/// one is killed, etcd stops and comes back, a watch falls behind a compaction, a host
/// restarts. Short lease TTLs (3 s). The join and failure times measured are printed.
extension LiveLabTests {
    @Suite(.serialized) struct LiveEtcdTests {}
}

/// What `ferry ctl members --json` says (the fields the tests read).
struct CtlMembers: Decodable {
    struct Host: Decodable {
        var address: String
        var subnet: String?
    }
    var subnet: String?
    var reachable: Bool
    var revision: Int64
    var hosts: [Host]
    var peers: [String]
    var relists: Int
    var registrations: Int
    var outages: Int
    var watchFailures: Int
}

/// A lab of `hosts` hosts with etcd at 10.99.0.100 in the switch namespace.
final class EtcdLive {
    let live: LiveLab
    let etcd: EtcdLab
    static let ttl = "3"

    /// etcd members at 10.99.0.100, .101, … in the switch namespace.
    init(tag: String, hosts: Int, withBridges: Bool, members: Int = 1) throws {
        live = try LiveLab(tag: tag, hosts: hosts, withoutIPv6: true, withBridges: withBridges)
        let sw = live.lab.switchNamespace
        etcd = EtcdLab(prefix: live.lab.prefix + "-etcd", members: (0..<members).map { (namespace: sw, address: "10.99.0.\(100 + $0)") })
    }

    func build() throws {
        try live.build()
        for m in etcd.members { try live.ip(live.lab.switchNamespace, "addr", "add", m.address + "/24", "dev", "ubr") }
        try etcd.start()
    }

    func teardown() {
        live.teardown()
        etcd.teardown()
        for i in live.hosts.indices { unlink(subnetFile(i)) }
        Self.removeRecords(configPaths)
    }

    /// The config files of `configs()`, whose set-up records teardown removes.
    private(set) var configPaths: [String] = []

    func subnetFile(_ i: Int) -> String { live.file("subnet-h\(i).env") }

    /// `ferry etcd init` with `arguments`, from host 0's namespace.
    func initNetwork(_ arguments: [String]) throws {
        let o = try live.attempt(live.host(0).namespace, [live.ferryBinary, "etcd", "init", "--etcd", etcd.endpoints] + arguments)
        #expect(o.status == 0, "\(o.stdout)\(o.stderr)")
    }

    /// The one same command on every host: only --tap, --bridge, --local (the lab's) and --etcd.
    @discardableResult
    func start(_ i: Int, log: String? = nil, extra: [String] = [], waitUntilReady: Bool = true) throws -> Process {
        try live.startFerry(on: i, peers: [], tunnel: [],
                            extra: ["--etcd", etcd.endpoints, "--etcd-ttl", Self.ttl, "--subnet-file", subnetFile(i)] + extra, log: log,
                            waitUntilReady: waitUntilReady)
    }

    /// Host `i`'s /metrics (its ferry started with `--metrics 127.0.0.1:9108`), read in its namespace.
    func metricsPage(_ i: Int) throws -> String {
        try live.exec(live.host(i).namespace, ["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9108/metrics"]).stdout
    }

    /// One unlabelled sample of host `i`'s /metrics (nil: not there).
    func metric(_ i: Int, _ name: String) throws -> Double? {
        try metricsPage(i).split(separator: "\n").first { $0.hasPrefix(name + " ") }
            .flatMap { Double($0.split(separator: " ")[1]) }
    }

    /// With set-up, each host's record of what it made must be its own (`/run/ferry/NAME.setup.json`
    /// is named after the config file; the hosts share /run): an empty config file per host.
    func configs() throws -> [String] {
        configPaths = try live.hosts.map { h in
            let path = live.file("\(live.lab.prefix)-h\(h.index).yaml")
            try "stats-interval: 0\n".write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        return configPaths
    }

    static func removeRecords(_ configs: [String]) {
        for c in configs { unlink("/run/ferry/\(((c as NSString).lastPathComponent as NSString).deletingPathExtension).setup.json") }
    }

    func members(_ i: Int) throws -> CtlMembers {
        let out = try live.lab.run([live.ferryBinary, "ctl", "members", "--control", live.lab.controlPath(i), "--json"]).stdout
        return try JSONDecoder().decode(CtlMembers.self, from: Data(out.utf8))
    }

    func waitForMembers(_ i: Int, timeout: Double = 10, _ condition: (CtlMembers) -> Bool) -> CtlMembers? {
        var last: CtlMembers?
        _ = Lab.waitUntil(timeout: timeout, interval: 0.05) {
            last = try? members(i)
            return last.map(condition) ?? false
        }
        return last.flatMap { condition($0) ? $0 : nil }
    }

    /// Starts host `i` on a network with a range (set-up on, its config file `config`), attaches
    /// its container to the bridge set-up made and addresses it in the subnet taken: the subnet
    /// (10.x.0.0/16) and the container's address. Checks the subnet file and the bridge's address.
    func startInRange(_ i: Int, config: String, extra: [String] = []) throws -> (subnet: String, address: String) {
        try start(i, extra: ["--config", config] + extra)
        try live.lab.attachContainers(i)
        let env = try String(contentsOfFile: subnetFile(i), encoding: .utf8)
        let line = try #require(env.split(separator: "\n").first { $0.hasPrefix("FERRY_SUBNET=") })
        let gateway = String(line.dropFirst("FERRY_SUBNET=".count))           // 10.x.0.1/16
        #expect(env.contains("FERRY_NETWORK=10.16.0.0/12") && env.contains("FERRY_MTU="), "\(env)")
        let bridge = try live.lab.run(["ip", "-n", live.host(i).namespace, "-4", "-o", "addr", "show", "dev", "bridge0"]).stdout
        #expect(bridge.contains(gateway), "the bridge has the subnet's first address: \(bridge)")
        let parts = gateway.split(separator: ".")
        let address = "\(parts[0]).\(parts[1]).0.2"
        let c = live.container(i).namespace
        try live.exec(c, ["ip", "addr", "flush", "dev", "eth0"])
        try live.exec(c, ["ip", "addr", "add", address + "/16", "dev", "eth0"])
        try live.exec(c, ["ip", "route", "replace", "default", "via", String(gateway.split(separator: "/")[0])])
        return ("\(parts[0]).\(parts[1]).0.0/16", address)
    }

    /// Host `i`'s routes made by set-up (protocol 245).
    func setupRoutes(_ i: Int) throws -> String {
        try live.lab.run(["ip", "-n", live.host(i).namespace, "route", "show", "proto", "245"]).stdout
    }

    /// Pings between every pair of `hosts`' containers until each answers once; the seconds it took
    /// (nil: not all within `timeout`).
    func pingAllPairs(_ hosts: [Int], addresses: [Int: String], timeout: Double) -> Double? {
        let start = Date()
        var pending = [(Int, Int)]()
        for a in hosts { for b in hosts where a < b { pending.append((a, b)) } }
        while !pending.isEmpty && Date().timeIntervalSince(start) < timeout {
            pending.removeAll { a, b in
                (try? live.ping(from: live.container(a).namespace, to: addresses[b]!, count: 1, extra: ["-W", "1"]))?.received == 1
            }
        }
        return pending.isEmpty ? Date().timeIntervalSince(start) : nil
    }
}

extension LiveLabTests.LiveEtcdTests {
    @Test func flatHostsFindEachOtherJoinAndLeave() throws {
        let e = try EtcdLive(tag: "etcdflat", hosts: 5, withBridges: true)
        defer { e.teardown() }
        try e.build()
        try e.initNetwork(["--encap", "vxlan", "--vni", "42"])
        let live = e.live
        let addresses = Dictionary(uniqueKeysWithValues: live.hosts.map { ($0.index, live.container($0.index).address) })

        for i in 0..<4 { try e.start(i) }
        let flat = e.pingAllPairs(Array(0..<4), addresses: addresses, timeout: 15)
        #expect(flat != nil && flat! <= 5, "every pair pings within 5 s of the last start: \(String(describing: flat))\n\(live.logTail(0))")
        let m0 = try e.members(0)
        #expect(Set(m0.peers) == ["10.99.0.2", "10.99.0.3", "10.99.0.4"] && m0.reachable && m0.hosts.count == 4, "\(m0)")

        // A fifth host: registered when its control socket answers (the join comes first).
        try e.start(4)
        let joined = Date()
        let reach = Lab.waitUntil(timeout: 10, interval: 0.02) {
            (0..<4).allSatisfy { (try? e.members($0))?.peers.contains("10.99.0.5") == true }
        }
        let joinSeconds = Date().timeIntervalSince(joined)
        let fifth = e.pingAllPairs([0, 1, 2, 3, 4], addresses: addresses, timeout: 10)
        #expect(reach && joinSeconds <= 2, "every host has the fifth as a peer within 2 s of its registration: \(joinSeconds) s")
        #expect(fifth != nil, "the fifth host's container pings and is pinged by every other")

        // Host 1 killed: within the TTL (3 s) its peers drop it, with no more floods to it.
        let killed = live.ferries[1]!
        kill(killed.processIdentifier, SIGKILL)
        killed.waitUntilExit()
        live.stopFerry(on: 1)
        let died = Date()
        let dropped = Lab.waitUntil(timeout: 10, interval: 0.05) {
            [0, 2, 3, 4].allSatisfy { (try? e.members($0))?.peers.contains("10.99.0.2") == false }
        }
        let dropSeconds = Date().timeIntervalSince(died)
        #expect(dropped && dropSeconds <= 3 + 1.5, "dropped within the TTL (and a renewal's slack): \(dropSeconds) s")
        let stats = try live.stats(0)
        #expect(!stats.peers.contains { $0.address == "10.99.0.2" }, "host 1 is no peer of host 0 any more: \(stats.peers.map(\.address))")

        // Host 1 started again: its TAP has the MAC the first one had, so its bridge (made by
        // hand, without a MAC of its own) keeps its MAC, and the container's gateway entry holds.
        try e.start(1, log: "ferry-h1-again.log")
        let back = e.pingAllPairs([0, 1, 2, 3, 4], addresses: addresses, timeout: 15)
        #expect(back != nil, "the restarted host's container pings and is pinged by every other\n\(live.logTail(1))")
        print("[live etcd flat] 4 hosts all pairs ping \(String(format: "%.2f", flat ?? -1)) s after the last start; "
              + "fifth host a peer everywhere \(String(format: "%.2f", joinSeconds)) s after registering; "
              + "killed host dropped \(String(format: "%.2f", dropSeconds)) s after the kill (TTL \(EtcdLive.ttl) s)")
    }

    @Test func hostsWithARangeGetSubnetsRoutesAndRideOutEtcdAndCompaction() throws {
        let e = try EtcdLive(tag: "etcdrange", hosts: 4, withBridges: false)
        defer { e.teardown() }
        try e.build()
        let configs = try e.configs()
        try e.initNetwork(["--encap", "vxlan", "--vni", "43", "--network", "10.16.0.0/12", "--subnet-length", "16"])
        let live = e.live
        var subnets: [Int: String] = [:]
        var addresses: [Int: String] = [:]
        for i in 0..<4 {
            let started = try e.startInRange(i, config: configs[i])
            subnets[i] = started.subnet
            addresses[i] = started.address
        }
        #expect(Set(subnets.values).count == 4, "each host its own subnet: \(subnets)")
        #expect(subnets.values.allSatisfy { $0.hasPrefix("10.") }, "\(subnets)")
        // Routes to the others' subnets (set-up's protocol, 245), once each host saw the others join.
        let routed = Lab.waitUntil(timeout: 10) {
            let routes = (try? live.lab.run(["ip", "-n", live.host(0).namespace, "route", "show", "proto", "245"]).stdout) ?? ""
            return (1..<4).allSatisfy { routes.contains(subnets[$0]! + " dev bridge0") }
        }
        #expect(routed, "host 0 routes the other three subnets onto its bridge")
        let all = e.pingAllPairs(Array(0..<4), addresses: addresses, timeout: 15)
        #expect(all != nil, "every container pings every other\n\(live.logTail(0))")

        // etcd stopped: forwarding goes on; the hosts say etcd is unreachable; it comes back.
        e.etcd.stop(0)
        let down = Date()
        let ping = try live.ping(from: live.container(0).namespace, to: addresses[1]!, count: 10, interval: 0.2)
        #expect(ping.received == 10, "forwarding goes on with etcd away: \(ping)")
        #expect(e.waitForMembers(0, timeout: 15) { !$0.reachable } != nil, "ctl members says etcd is unreachable")
        try e.etcd.restart(0)
        #expect(e.waitForMembers(0, timeout: 15) { $0.reachable && $0.hosts.count == 4 } != nil, "etcd reachable again, 4 hosts")
        let outage = Date().timeIntervalSince(down)

        // Host 0's watch falls behind: its way to etcd blackholed while host 3 leaves and the
        // store is compacted; once back it finds its revision gone, lists again, and drops host 3.
        try live.ip(live.host(0).namespace, "route", "add", "blackhole", "10.99.0.100/32")
        let cut = try e.members(0)
        let before = cut.relists
        #expect(e.waitForMembers(0, timeout: 20) { $0.watchFailures > cut.watchFailures } != nil, "host 0's watch ended")
        live.stopFerry(on: 3)
        // One more write, so that the compaction goes past host 3's deletion.
        _ = try e.etcd.etcdctlChecked(["put", "/ferry/other", "x"])
        _ = try e.etcd.compact()
        #expect(try e.members(0).peers.contains("10.99.0.4"), "host 0 cannot have heard yet")
        try live.ip(live.host(0).namespace, "route", "del", "blackhole", "10.99.0.100/32")
        let relisted = e.waitForMembers(0, timeout: 30) { $0.relists > before && !$0.peers.contains("10.99.0.4") }
        #expect(relisted != nil, "host 0 listed again after the compaction and dropped host 3\n\(live.logTail(0))")
        let routesAfter = try live.lab.run(["ip", "-n", live.host(0).namespace, "route", "show", "proto", "245"]).stdout
        #expect(!routesAfter.contains(subnets[3]!), "host 3's route went with it: \(routesAfter)")
        // Its lease most likely lapsed behind the blackhole (TTL 3 s): it is in etcd again, with
        // its subnet, once back (before host 2 starts again below and lists the hosts).
        let registered = e.waitForMembers(0, timeout: 15) { m in
            m.reachable && m.hosts.contains { $0.address == live.host(0).underlay && $0.subnet == subnets[0] }
        }
        #expect(registered != nil, "host 0 is in etcd again, its subnet kept\n\(live.logTail(0))")

        // Host 2 killed (its routes stay behind) and, while it is down, host 1 leaves. Started
        // again, host 2 keeps its subnet (etcd names it; the route to it stays), and the route
        // its earlier run made to host 1, which etcd no longer has, is cleaned up.
        let p2 = live.ferries[2]!
        kill(p2.processIdentifier, SIGKILL)
        p2.waitUntilExit()
        live.stopFerry(on: 2)
        func routes(_ i: Int) throws -> String {
            try live.lab.run(["ip", "-n", live.host(i).namespace, "route", "show", "proto", "245"]).stdout
        }
        let left = try routes(2)
        #expect(left.contains(subnets[1]! + " dev bridge0"), "the killed run left its route to host 1: \(left)")
        live.stopFerry(on: 1)
        try e.start(2, log: "ferry-h2-again.log", extra: ["--config", configs[2]])
        let again = try e.members(2)
        #expect(again.subnet == subnets[2], "a restarted host keeps its subnet: \(String(describing: again.subnet)) vs \(subnets[2]!)")
        #expect(Set(again.peers) == [live.host(0).underlay], "\(again.peers)\nh2: \(live.logTail(2))\nh0: \(live.logTail(0))")
        let kept = try routes(0)
        #expect(kept.contains(subnets[2]! + " dev bridge0"), "host 0 still routes host 2's subnet: \(kept)")
        let restarted = try routes(2)
        #expect(restarted.contains(subnets[0]! + " dev bridge0") && !restarted.contains(subnets[1]!),
                "host 2 routes host 0's subnet, and no longer host 1's, which left while it was down: \(restarted)")
        #expect(e.pingAllPairs([0, 2], addresses: addresses, timeout: 15) != nil, "the restarted host's container pings and is pinged")
        print("[live etcd range] subnets \(subnets.values.sorted()); all pairs ping after \(String(format: "%.2f", all ?? -1)) s; "
              + "etcd away and back in \(String(format: "%.1f", outage)) s with forwarding on; re-listed after a compaction")
    }

    /// `ferry run --etcd --user nobody`: the join runs in a child process (this one gives
    /// privileges up while it is the one thread), then every thread runs as nobody with only
    /// CAP_NET_ADMIN (set-up: routes follow peers), keeps the child's lease, and follows etcd:
    /// a host that joins later gets a route and pings, one that leaves loses its route.
    @Test func hostsRunAsNobodyKeepTheirLeaseAndRouteTheHostsThatCome() throws {
        let e = try EtcdLive(tag: "etcduser", hosts: 3, withBridges: false)
        defer { e.teardown() }
        try e.build()
        let configs = try e.configs()
        try e.initNetwork(["--encap", "vxlan", "--vni", "46", "--network", "10.16.0.0/12", "--subnet-length", "16"])
        let live = e.live
        let nobody = try live.exec(live.host(0).namespace, ["id", "-u", "nobody"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        var subnets: [Int: String] = [:], addresses: [Int: String] = [:]
        for i in 0..<2 {
            let started = try e.startInRange(i, config: configs[i], extra: ["--user", "nobody"])
            subnets[i] = started.subnet
            addresses[i] = started.address
        }
        for i in 0..<2 {
            let pid = live.ferries[i]!.processIdentifier
            for t in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
                let status = try String(contentsOfFile: "/proc/\(pid)/task/\(t)/status", encoding: .utf8)
                let uid = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }?.split(whereSeparator: \.isWhitespace).dropFirst()
                #expect(uid.map { $0.allSatisfy { $0 == nobody } } == true, "h\(i) thread \(t): \(uid.map(Array.init) ?? [])")
            }
            #expect(live.logTail(i, characters: 100_000).contains("running as nobody"), "\(live.logTail(i))")
            let m = try e.members(i)
            #expect(m.reachable && m.registrations == 1 && m.hosts.count == 2, "h\(i) goes on from its child's registration: \(m)")
        }
        #expect(e.pingAllPairs([0, 1], addresses: addresses, timeout: 15) != nil, "the two containers ping\n\(live.logTail(0))")

        // A host that joins now: the unprivileged hosts add its route (rtnetlink, CAP_NET_ADMIN
        // kept on the threads membership runs on) and ping it; gone, its route goes.
        let third = try e.startInRange(2, config: configs[2])
        subnets[2] = third.subnet
        addresses[2] = third.address
        let routed = Lab.waitUntil(timeout: 10) { (0..<2).allSatisfy { (try? e.setupRoutes($0))?.contains(third.subnet + " dev bridge0") == true } }
        let routes = try e.setupRoutes(0)
        #expect(routed, "the unprivileged hosts route the newcomer's subnet: \(routes)\n\(live.logTail(0))")
        #expect(e.pingAllPairs([0, 1, 2], addresses: addresses, timeout: 15) != nil, "every container pings every other")
        live.stopFerry(on: 2)
        let unrouted = Lab.waitUntil(timeout: 10) { (0..<2).allSatisfy { (try? e.setupRoutes($0))?.contains(third.subnet) == false } }
        let left = try e.setupRoutes(0)
        #expect(unrouted, "the leaver's route is gone: \(left)")
        // The lease is the child's, kept alive past several TTLs by the unprivileged process.
        Thread.sleep(forTimeInterval: 4)
        #expect(try e.members(0).registrations == 1, "no second registration: the handed-over lease lived on")
        print("[live etcd user] two hosts as nobody joined through a child process; a third routed and pinged, then unrouted")
    }

    /// Three etcd members; one killed changes nothing the hosts show, and a host joins through
    /// the other two.
    @Test func aThreeMemberClusterLosingOneMemberChangesNothing() throws {
        let e = try EtcdLive(tag: "etcdha", hosts: 4, withBridges: true, members: 3)
        defer { e.teardown() }
        try e.build()
        try e.initNetwork(["--encap", "vxlan", "--vni", "44"])
        let live = e.live
        let addresses = Dictionary(uniqueKeysWithValues: live.hosts.map { ($0.index, live.container($0.index).address) })
        for i in 0..<3 { try e.start(i) }
        #expect(e.pingAllPairs([0, 1, 2], addresses: addresses, timeout: 15) != nil)
        e.etcd.kill(0)
        let killed = Date()
        // Longer than the TTL: the leases live on through the other members.
        try e.start(3)
        let joined = e.waitForMembers(0, timeout: 15) { $0.peers.contains("10.99.0.4") }
        let joinSeconds = Date().timeIntervalSince(killed)
        #expect(joined != nil, "a host joins through the two members left")
        Thread.sleep(forTimeInterval: max(0, 4 - Date().timeIntervalSince(killed)))
        for i in 0..<4 {
            let m = e.waitForMembers(i, timeout: 10) { $0.reachable && $0.peers.count == 3 }
            #expect(m != nil, "host \(i) still has its three peers and etcd: \(String(describing: try? e.members(i)))")
        }
        #expect(e.pingAllPairs([0, 1, 2, 3], addresses: addresses, timeout: 10) != nil)
        print("[live etcd cluster] one of three members killed: 4 hosts, all peers kept; a host started after the kill "
              + "was a peer of host 0 " + String(format: "%.2f", joinSeconds) + " s after it")
    }
}
