import ArgumentParser
import Dispatch
import FerryControl
import FerryEngine
import FerryEtcd
import FerryLinux
import FerryMembership
import FerrySettings
import FerryWire
import Foundation
import Logging
import SystemPackage

/// Ferry's version, as a host registers it in etcd.
let ferryVersion = "0.15.0"

/// `ferry run --etcd`: before the engine starts, the network config is read from etcd (waiting
/// for etcd if it is away), the host registered (a subnet taken from the range when it needs
/// one) and the hosts listed; the run then starts with those peers, and the agent makes them
/// follow the store while it runs.
struct EtcdJoin {
    let store: EtcdClient
    let agent: MembershipAgent
    let config: NetworkConfig
    /// The hosts listed at start: the peers the engine starts with.
    let peers: [PeerSpec]
    /// The cluster range, if the config has one.
    let network: IPPrefix?
    let settings: EtcdSettings

    /// Ends the client's requests and connections (waiting a few seconds at most): last, once
    /// the agent is stopped.
    /// Leaves (the lease revoked, so that peers drop this host at once rather than at the
    /// TTL: a start that fails after registering must not stay listed) and shuts the client
    /// down. After a run's own clean leave, the revocation finds the lease gone, which is fine.
    func shutdown() {
        let store = store, agent = agent
        _ = try? blocking(timeout: .seconds(3)) {
            await agent.leave()
            await store.shutdown()
        }
    }
}

extension RunCommand {
    /// Joins the network in etcd and fills `options` in with what it holds: the tunnel (unless
    /// given), the subnet taken (and set-up on, when there is a range).
    static func joinEtcd(_ etcd: EtcdSettings, options: inout RunOptions, logger: Logger) throws -> EtcdJoin {
        let store = try openEtcd(etcd.endpoints, access: etcd.access)
        do {
            return try join(store, etcd, options: &options, logger: logger)
        } catch {
            _ = try? blocking(timeout: .seconds(3)) { await store.shutdown() }
            throw error
        }
    }

    static func join(_ store: EtcdClient, _ etcd: EtcdSettings, options: inout RunOptions, logger: Logger) throws -> EtcdJoin {
        let layout = MembershipLayout(prefix: etcd.prefix)
        let config = try blocking {
            try await waitingForEtcd(logger, "reading the network config \(layout.configKey)") { () async throws -> NetworkConfig in
                guard let kv = try await store.get(layout.configKey).keyValue else {
                    throw ToolError("""
                        etcd has no network config at \(layout.configKey): run `ferry etcd init --etcd \(etcd.endpoints)\
                        \(etcd.prefix == EtcdSettings.defaultPrefix ? "" : " --etcd-prefix \(etcd.prefix)") --encap vxlan --vni 42` \
                        (add --network 10.16.0.0/12 --subnet-length 24 to give each host a subnet) once, then start ferry again
                        """)
                }
                return try NetworkConfig.decode(kv.value, key: kv.key)
            }
        }
        let range = try apply(config, layout: layout, etcd, to: &options)
        let agent = try makeAgent(store, layout: layout, range: range, etcd, logger: logger)
        let peers = try blocking { () async throws -> [PeerSpec] in
            _ = try await waitingForEtcd(logger, "registering") { try await agent.register() }
            return try await waitingForEtcd(logger, "listing the hosts") { try await agent.snapshot() }
        }
        return finishJoin(store, agent, config: config, peers: peers, range: range, etcd, options: &options, logger: logger)
    }

    /// `ferry run --etcd --user`: joins in a child process and goes on from its registration.
    /// The etcd client's threads (SwiftNIO's, Swift concurrency's) must not start before
    /// privileges are given up, which Ferry does only while it is the one thread, after the TAP
    /// and the sockets are open; and those need the tunnel and the subnet that joining tells.
    /// So a child forked now (this process has one thread) reads the config, registers and
    /// lists, hands over what it learnt through a pipe (`MembershipAgent.Joined`, the config)
    /// and exits, leaving its lease to this process's agent, which keeps it alive and watches
    /// from the child's revision once privileges are given up. The TLS files are loaded here,
    /// while root (the client starts no thread until its first request).
    static func joinInChild(_ etcd: EtcdSettings, options: inout RunOptions, logger: Logger) throws -> EtcdJoin {
        let store = try openEtcd(etcd.endpoints, access: etcd.access)
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw ToolError("cannot join etcd: pipe: \(String(cString: strerror(errno)))") }
        let parent = getpid()
        let child = fork()
        guard child >= 0 else {
            let why = String(cString: strerror(errno))
            close(ends[0])
            close(ends[1])
            throw ToolError("cannot join etcd: fork: \(why)")
        }
        if child == 0 {
            close(ends[0])
            // A parent that ends (SIGKILL, or stopped while etcd is away) takes the child with
            // it; one that ended before this was asked for is seen at once.
            try? Privileges.endWithParent()
            if getppid() != parent { _exit(1) }
            var handover = JoinHandover()
            var childOptions = options
            do {
                let join = try Self.join(store, etcd, options: &childOptions, logger: logger)
                handover.config = join.config
                handover.joined = join.agent.joined
            } catch {
                handover.error = "\(error)"
            }
            let bytes = (try? JSONEncoder().encode(handover)).map { [UInt8]($0) } ?? []
            let sent = (try? FileDescriptor(rawValue: ends[1]).writeAll(bytes)) == bytes.count
            // No clean-up: the lease stays, the parent's now; the client's threads end with the process.
            _exit(sent ? 0 : 1)
        }
        close(ends[1])
        let answer = FileDescriptor(rawValue: ends[0])
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while let n = try? chunk.withUnsafeMutableBytes({ try answer.read(into: $0) }), n > 0 {
            bytes += chunk[..<n]
        }
        close(ends[0])
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        guard let handover = try? JSONDecoder().decode(JoinHandover.self, from: Data(bytes)) else {
            // WIFSIGNALED / WTERMSIG / WEXITSTATUS, which Swift does not import.
            let signal = status & 0x7F
            let how = signal != 0 ? "was killed by signal \(signal)" : "exited with status \((status >> 8) & 0xFF)"
            throw ToolError("joining etcd failed: its process \(how) without an answer")
        }
        if let error = handover.error { throw ToolError(error) }
        guard let config = handover.config, let joined = handover.joined else {
            throw ToolError("joining etcd failed: its process's answer is incomplete")
        }
        do {
            let layout = MembershipLayout(prefix: etcd.prefix)
            let range = try apply(config, layout: layout, etcd, to: &options)
            let agent = try makeAgent(store, layout: layout, range: range, etcd, logger: logger)
            let peers = try agent.adopt(joined)
            return finishJoin(store, agent, config: config, peers: peers, range: range, etcd, options: &options, logger: nil)
        } catch {
            // The child registered: its lease (and a subnet under it) would stay until the TTL.
            _ = try? blocking(timeout: .seconds(3)) {
                try? await store.revokeLease(joined.lease)
                await store.shutdown()
            }
            throw error
        }
    }

    /// The config checked, and its tunnel onto `options` unless given there; its range.
    static func apply(_ config: NetworkConfig, layout: MembershipLayout, _ etcd: EtcdSettings,
                      to options: inout RunOptions) throws -> (network: IPPrefix, subnetLength: Int)? {
        let range: (network: IPPrefix, subnetLength: Int)?
        do {
            try config.check()
            range = try config.range()
        } catch {
            throw ToolError("\(error) (in \(layout.configKey); rewrite it with ferry etcd init --force)")
        }
        if !etcd.tunnelGiven {
            options.encap = config.encapsulation
            options.vni = config.vni.map(String.init)
            options.key = config.key.map(String.init)
            if options.dstport == nil { options.dstport = config.port.map(String.init) }
            try apply(config.options ?? [:], to: &options)
        }
        return range
    }

    static func makeAgent(_ store: EtcdClient, layout: MembershipLayout, range: (network: IPPrefix, subnetLength: Int)?,
                          _ etcd: EtcdSettings, logger: Logger) throws -> MembershipAgent {
        let allocator = try range.map { try SubnetAllocator(network: $0.network, subnetLength: $0.subnetLength) }
        return MembershipAgent(store: store, layout: layout, address: etcd.local, configuredSubnet: etcd.subnet?.prefix,
                               allocator: allocator, preferredSubnet: SubnetEnv.previousSubnet(at: etcd.subnetFile),
                               ttl: etcd.ttl, version: ferryVersion, logger: logger)
    }

    /// The join's outcome: the subnet taken onto `options` (set-up on, for the bridge's address).
    /// `logger`: where to say what was found (nil: said by the child that joined).
    static func finishJoin(_ store: EtcdClient, _ agent: MembershipAgent, config: NetworkConfig, peers: [PeerSpec],
                           range: (network: IPPrefix, subnetLength: Int)?, _ etcd: EtcdSettings, options: inout RunOptions,
                           logger: Logger?) -> EtcdJoin {
        if etcd.subnet == nil, let subnet = agent.subnet {
            options.subnet = SubnetAllocator.gateway(of: subnet).description
            options.setup = true
        }
        logger?.info("etcd: \(peers.count) other host\(peers.count == 1 ? "" : "s") in \(etcd.prefix)\(agent.subnet.map { "; this host's subnet \($0)" } ?? "")")
        return EtcdJoin(store: store, agent: agent, config: config, peers: peers, network: range?.network, settings: etcd)
    }

    /// The config's `options` (other `ferry run` options every host takes), onto `options`
    /// where the command line did not give them.
    static func apply(_ extra: [String: String], to options: inout RunOptions) throws {
        for (key, value) in extra.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "udp-csum": if options.udpCsum == nil { options.udpCsum = value == "true" }
            case "gre-csum": options.greCsum = options.greCsum || value == "true"
            case "gre-seq": options.greSeq = options.greSeq || value == "true"
            case "ttl": options.ttl = options.ttl ?? value
            case "tos": options.tos = options.tos ?? value
            case "df": options.df = options.df ?? value
            case "src-port-range": options.srcPortRange = options.srcPortRange ?? value
            case "mtu": options.mtu = options.mtu ?? value
            default:
                throw ToolError("the network config's option '\(key)' is not one a host takes from etcd "
                                + "(udp-csum, gre-csum, gre-seq, ttl, tos, df, src-port-range, mtu)")
            }
        }
    }

    /// The settings of a run with membership: the peers are the hosts listed.
    static func withMembership(_ settings: RunSettings, _ join: EtcdJoin) throws -> RunSettings {
        var s = settings
        s.layout.peers = join.peers
        s.engine.peers = join.peers.map(\.address)
        do { try s.layout.check() } catch { throw ToolError("the hosts in etcd: \(error)") }
        return s
    }
}

/// What the child of `joinInChild` hands over: the config and its registration, or its error.
struct JoinHandover: Codable {
    var config: NetworkConfig?
    var joined: MembershipAgent.Joined?
    var error: String?
}

/// Writes the subnet held where Docker reads it (`--subnet-file`), while the run may still
/// write there (before privileges are given up).
func writeSubnetFile(_ join: EtcdJoin, tapMTU: Int, logger: Logger) {
    guard let subnet = join.agent.subnet else { return }
    let address = join.settings.subnet ?? SubnetAllocator.gateway(of: subnet)
    do {
        try SubnetEnv(network: join.network, subnet: address, mtu: tapMTU).write(to: join.settings.subnetFile)
        logger.info("etcd: subnet \(address) (MTU \(tapMTU)) written to \(join.settings.subnetFile)")
    } catch {
        logger.warning("etcd: cannot write \(join.settings.subnetFile): \(error)")
    }
}

/// A running membership: the agent's task and `ferry ctl members`.
final class RunningMembership: @unchecked Sendable {
    let join: EtcdJoin
    let task: Task<Void, Never>

    init(_ join: EtcdJoin, changes: EngineControl) {
        self.join = join
        let target = EngineMembershipTarget(changes)
        let agent = join.agent, peers = join.peers
        task = Task { await agent.run(target: target, applied: peers) }
    }

    /// Stops following etcd and leaves (the lease revoked), waiting at most a few seconds for
    /// an etcd that does not answer.
    func stop() {
        task.cancel()
        let agent = join.agent, task = task
        _ = try? blocking(timeout: .seconds(3)) {
            await task.value
            await agent.leave()
        }
    }
}

/// The engine's change API as membership's target: peers added and removed through
/// `EngineControl`, so that routes (with set-up) follow as they do for `ferry ctl peer`.
final class EngineMembershipTarget: MembershipTarget {
    let control: EngineControl
    init(_ control: EngineControl) { self.control = control }

    func addPeer(_ peer: PeerSpec) throws {
        var failed: [String] = []
        try control.addPeer(peer, failed: &failed)
        if !failed.isEmpty { throw MembershipError(failed.joined(separator: "; ")) }
    }

    func removePeer(_ address: IPAddress) throws {
        var failed: [String] = []
        do { try control.removePeer(address, failed: &failed) } catch {
            // Already gone from the engine (removed by `ferry ctl`): nothing more to do.
            if !control.peers.contains(where: { $0.address == address }) { return }
            throw error
        }
        if !failed.isEmpty { throw MembershipError(failed.joined(separator: "; ")) }
    }
}

/// `ferry ctl members` on a run with membership; everything else as the run's source.
final class MembershipControlSource: WrappingControlSource {
    let wrapped: any ControlSource
    let agent: MembershipAgent

    init(base: any ControlSource, agent: MembershipAgent) {
        wrapped = base
        self.agent = agent
    }

    func membersReply() -> String? { ControlReply.encode(agent.status) }
}

/// Runs `body` until it succeeds, waiting (with back-off, said once) while etcd is unreachable;
/// any other error ends it. The back-off stops at about 2 s (±20 %, so that hosts started
/// together do not ask in step): the host has no data plane until etcd answers, and an attempt
/// while etcd is away costs a connection attempt per member (refused at once where etcd's host
/// is up; the connect timeout where it cannot be reached).
func waitingForEtcd<T: Sendable>(_ logger: Logger, _ what: String, _ body: () async throws -> T) async throws -> T {
    var backoff = Duration.milliseconds(250)
    var said = false
    while true {
        do {
            let value = try await body()
            if said { logger.notice("etcd: reachable; \(what)") }
            return value
        } catch EtcdError.unavailable(let why) {
            if !said {
                logger.warning("etcd is unreachable (\(why)); waiting for it, \(what)")
                said = true
            }
            try await Task.sleep(for: backoff * Double.random(in: 0.8...1.2))
            backoff = min(backoff * 2, .seconds(2))
        } catch let error as EtcdError {
            throw ToolError("etcd: \(what): \(error)")
        }
    }
}

/// Runs async work to its end from the command's synchronous code; nil after `timeout`.
func blocking<T: Sendable>(timeout: Duration? = nil, _ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        done.signal()
    }
    if let timeout {
        let (s, a) = timeout.components
        guard done.wait(timeout: .now() + .nanoseconds(Int(s) * 1_000_000_000 + Int(a / 1_000_000_000))) == .success else {
            throw ToolError("timed out")
        }
    } else {
        done.wait()
    }
    return try box.result!.get()
}

final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

/// The etcd client for `--etcd URL[,URL…]`, with the TLS files and the user `access` gives (the
/// password read from its file, a trailing newline dropped).
func openEtcd(_ endpoints: String, access: EtcdAccess = EtcdAccess()) throws -> EtcdClient {
    do {
        var configuration = try EtcdClient.Configuration(parsing: endpoints)
        configuration.caFile = access.caFile
        configuration.certificateFile = access.certificateFile
        configuration.keyFile = access.keyFile
        configuration.user = access.user
        if let file = access.passwordFile {
            guard let bytes = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read --etcd-password-file \(file): check the path and its permissions")
            }
            var password = String(decoding: bytes, as: UTF8.self)
            while password.hasSuffix("\n") || password.hasSuffix("\r") { password.removeLast() }
            configuration.password = password
        }
        return try EtcdClient(configuration: configuration)
    } catch let error as ValidationError {
        throw error
    } catch {
        throw ValidationError("--etcd \(endpoints): \(error)")
    }
}

/// How `ferry run` and `ferry etcd init` reach etcd beyond its URLs.
struct EtcdAccessOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("With https etcd URLs: the CA that signed etcd's certificate (default: the system's).",
                                            valueName: "file"))
    var etcdCa: String?

    @Option(name: .long, help: ArgumentHelp("A client certificate for etcd (PEM), with --etcd-key.", valueName: "file"))
    var etcdCert: String?

    @Option(name: .long, help: ArgumentHelp("The client certificate's key (PEM).", valueName: "file"))
    var etcdKey: String?

    @Option(name: .long, help: ArgumentHelp("An etcd user, when etcd's authentication is on, with --etcd-password-file.",
                                            valueName: "name"))
    var etcdUser: String?

    @Option(name: .long, help: ArgumentHelp("A file holding the etcd user's password (never the password on the command line).",
                                            valueName: "file"))
    var etcdPasswordFile: String?

    var access: EtcdAccess {
        EtcdAccess(caFile: etcdCa, certificateFile: etcdCert, keyFile: etcdKey, user: etcdUser, passwordFile: etcdPasswordFile)
    }
}
