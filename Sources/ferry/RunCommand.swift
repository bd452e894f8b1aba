import ArgumentParser
import Dispatch
import FerryCapture
import FerryControl
import FerryEngine
import FerryHost
import FerryLinux
import FerryMetrics
import FerryService
import FerrySettings
import FerryWire
import Foundation
import Logging

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the tunnel: a TAP on the container bridge, VXLAN or GRE to the peer hosts.",
        discussion: """
            Example (host A of the README picture):
              ferry run --tap ferry0 --bridge bridge0 --encap vxlan --vni 42 --local 10.99.0.1 --peer 10.99.0.2

            Every option may also come from a YAML file (--config FILE) whose keys are the option \
            names without dashes (`vni: 42`, `peer: [10.99.0.2, 10.99.0.3]`, `udp-csum: true`); \
            options given on the command line win. Stop with SIGINT or SIGTERM: a summary of the \
            counters is logged on exit.
            """
    )

    @Option(name: .long, help: ArgumentHelp("YAML file with any of these options.", valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("TAP device to create or attach to.", valueName: "name"))
    var tap: String?

    @Option(name: .long, help: ArgumentHelp("Bridge to add the TAP to.", valueName: "bridge"))
    var bridge: String?

    @Flag(name: .long, help: "Keep the TAP after exit (ip tuntap del removes it).")
    var persistent = false

    @Option(name: .long, help: ArgumentHelp("vxlan or gre (inferred from --vni or --key).", valueName: "type"))
    var encap: String?

    @Option(name: .long, help: "VXLAN network identifier, 0 to 16777215.")
    var vni: String?

    @Option(name: .long, help: "GRE key; omit for GRE without a key.")
    var key: String?

    @Option(name: .long, help: ArgumentHelp("This host's underlay address.", valueName: "ip"))
    var local: String?

    @Option(name: .long, help: ArgumentHelp("""
        A peer host's underlay address, with the container subnet behind it if it has one (192.168.99.101=172.17.0.0/16); \
        repeat for several.
        """, valueName: "ip[=subnet]"))
    var peer: [String] = []

    @Flag(name: .long, help: "Accept tunnel packets from any address and learn it as a peer (default: configured peers only).")
    var acceptAnyPeer = false

    @Option(name: .long, help: ArgumentHelp("""
        With --accept-any-peer, only sources inside this prefix may become peers (others count peer_not_accepted); \
        repeat for several. Needs --accept-any-peer: it narrows it, and never widens who gets in.
        """, valueName: "cidr"))
    var acceptCidr: [String] = []

    @Option(name: .long, help: ArgumentHelp("""
        Most MACs learned behind one peer; more are not learned (fdb_peer_limit), their frames still delivered (no bound).
        """, valueName: "n"))
    var maxMacsPerPeer: String?

    @Option(name: .long, help: "VXLAN UDP port (4789).")
    var dstport: String?

    @Option(name: .long, help: ArgumentHelp("UDP source ports, chosen per inner flow (32768-61000).", valueName: "low-high"))
    var srcPortRange: String?

    @Option(name: .long, help: "Outer TTL (64).")
    var ttl: String?

    @Option(name: .long, help: ArgumentHelp("Outer TOS: 0 to 255, or inherit.", valueName: "tos"))
    var tos: String?

    @Option(name: .long, help: ArgumentHelp("Outer DF bit: set, unset (default) or inherit.", valueName: "df"))
    var df: String?

    @Flag(name: .long, inversion: .prefixedNo,
          help: "Outer UDP checksum (default: on with offloads, which UDP GSO needs; else off over IPv4, as Linux, and on over IPv6).")
    var udpCsum: Bool?

    @Flag(name: .long, help: "GRE checksums.")
    var greCsum = false

    @Flag(name: .long, help: "GRE sequence numbers.")
    var greSeq = false

    @Option(name: .long, help: ArgumentHelp("""
        How GRE leaves: ip (default) through the kernel's IP output path, netfilter and qdisc; link straight to the \
        underlay device, to the next hop's MAC from the kernel's tables (cheaper per packet; bypasses netfilter, tc and IPsec).
        """, valueName: "ip|link"))
    var grePath: String?

    @Option(name: .long, help: "TAP MTU (default: the underlay MTU less the encapsulation).")
    var mtu: String?

    @Option(name: .long, help: ArgumentHelp("""
        Offloads to use, each where the kernel takes it: on (default, all), off, or a comma-separated list of csum (TAP \
        checksums), tso and uso (TAP TCP and UDP super-frames; need csum), gso (UDP_SEGMENT sends; VXLAN), gro (UDP_GRO \
        receives, and received segments joined into super-frames for the TAP).
        """, valueName: "on|off|list"))
    var offloads: String?

    @Option(name: .long, help: ArgumentHelp("Worker threads, each with its own TAP queue and socket (default: one per core).",
                                            valueName: "n"))
    var workers: String?

    @Option(name: .long, help: "Underlay MTU (default: that of the interface holding --local).")
    var underlayMtu: String?

    @Option(name: .long, help: "Seconds before a learned MAC is forgotten, and a learned peer retired (300).")
    var ageing: String?

    @Option(name: .long, help: "Most MACs the forwarding table holds (4096).")
    var fdbSize: String?

    @Option(name: .long, help: ArgumentHelp("A static forwarding entry; repeat for several.", valueName: "mac=peer"))
    var staticFdb: [String] = []

    @Option(name: .long, help: ArgumentHelp("Control socket for ferry ctl.", valueName: "path"))
    var control: String?

    @Option(name: .long, help: ArgumentHelp("Write a pcap of what crosses the tunnel.", valueName: "file"))
    var capture: String?

    @Option(name: .long, help: ArgumentHelp("inner, outer or both.", valueName: "point"))
    var capturePoint: String?

    @Option(name: .long, help: ArgumentHelp("Capture only frames matching this tcpdump expression.", valueName: "expr"))
    var captureFilter: String?

    @Option(name: .long, help: "Frames per batch (64).")
    var batch: String?

    @Option(name: .long, help: "Seconds between statistics log lines, 0 for none (10).")
    var statsInterval: String?

    @Option(name: .long, help: ArgumentHelp("trace, debug, info, notice, warning, error.", valueName: "level"))
    var logLevel: String?

    @Option(name: .long, help: ArgumentHelp("""
        After set-up, run as this user (its uid, gid and groups), keeping only the capabilities still needed: none, or \
        cap_net_admin with --gre-path link or --setup (routes follow peers).
        """, valueName: "name"))
    var user: String?

    @Option(name: .long, help: ArgumentHelp("This host's bridge address and prefix, e.g. 172.18.0.1/16.", valueName: "ip/len"))
    var subnet: String?

    @Option(name: .long, help: ArgumentHelp("""
        tunnel (default: VXLAN or GRE to every peer), routes (static routes via on-link peers, no tunnel), or auto.
        """, valueName: "mode"))
    var mode: String?

    @Flag(name: .long, help: "Set the host up at start (bridge, its address, routes to the peers' subnets), as ferry setup does.")
    var setup = false

    @Option(name: .long, help: ArgumentHelp("Serve Prometheus metrics on http://ADDRESS:PORT/metrics ([::1]:PORT for IPv6).",
                                            valueName: "ip:port"))
    var metrics: String?

    @Option(name: .long, help: ArgumentHelp("""
        Keep membership in etcd (its v3 API; comma-separate several endpoints): hosts find each other there, the tunnel \
        and subnets come from `ferry etcd init`'s config, and peers follow as hosts join and leave.
        """, valueName: "url[,url...]"))
    var etcd: String?

    @Option(name: .long, help: ArgumentHelp("The network's key prefix in etcd (/ferry/network).", valueName: "prefix"))
    var etcdPrefix: String?

    @Option(name: .long, help: ArgumentHelp("Seconds this host's etcd lease lives unrenewed (30); renewed at a third of it.",
                                            valueName: "seconds"))
    var etcdTtl: String?

    @Option(name: .long, help: ArgumentHelp("With --etcd, where the subnet held is written for Docker (/run/ferry/subnet.env).",
                                            valueName: "path"))
    var subnetFile: String?

    @OptionGroup var etcdAccess: EtcdAccessOptions

    /// The flags as the settings library takes them.
    var options: RunOptions {
        var o = RunOptions()
        o.config = config
        o.tap = tap
        o.bridge = bridge
        o.persistent = persistent
        o.encap = encap
        o.vni = vni
        o.key = key
        o.local = local
        o.peer = peer
        o.acceptAnyPeer = acceptAnyPeer
        o.acceptCidr = acceptCidr
        o.maxMacsPerPeer = maxMacsPerPeer
        o.dstport = dstport
        o.srcPortRange = srcPortRange
        o.ttl = ttl
        o.tos = tos
        o.df = df
        o.udpCsum = udpCsum
        o.greCsum = greCsum
        o.greSeq = greSeq
        o.grePath = grePath
        o.mtu = mtu
        o.offloads = offloads
        o.workers = workers
        o.underlayMtu = underlayMtu
        o.ageing = ageing
        o.fdbSize = fdbSize
        o.staticFdb = staticFdb
        o.control = control
        o.capture = capture
        o.capturePoint = capturePoint
        o.captureFilter = captureFilter
        o.batch = batch
        o.statsInterval = statsInterval
        o.logLevel = logLevel
        o.user = user
        o.subnet = subnet
        o.mode = mode
        o.setup = setup
        o.metrics = metrics
        o.etcd = etcd
        o.etcdPrefix = etcdPrefix
        o.etcdTtl = etcdTtl
        o.etcdCA = etcdAccess.etcdCa
        o.etcdCert = etcdAccess.etcdCert
        o.etcdKey = etcdAccess.etcdKey
        o.etcdUser = etcdAccess.etcdUser
        o.etcdPasswordFile = etcdAccess.etcdPasswordFile
        o.subnetFile = subnetFile
        return o
    }

    func run() throws {
        // A file that cannot be read or is not a config is the file's fault (exit 1); a bad value
        // in it or on the command line a usage error (exit 64).
        let file: ConfigFile?
        do { file = try config.map { (path) throws(SettingsError) in try ConfigFile.load(path: path) } } catch {
            throw ToolError(error.description)
        }
        // One level for every copy of the logger, so that a reload can change it.
        let logLevel = SharedLogLevel(.info)
        let logger = Logger(label: "ferry", factory: logLevel.handler)
        // `--etcd`: the tunnel, the subnet and the peers come from etcd (RunCommand+Etcd.swift).
        var options = self.options
        let join: EtcdJoin?
        do {
            join = try EtcdSettings(options: options, file: file).map { etcd in
                // With --user, in a child process: this one must stay the one thread until it gives privileges up.
                etcd.runsAsUser ? try Self.joinInChild(etcd, options: &options, logger: logger)
                    : try Self.joinEtcd(etcd, options: &options, logger: logger)
            }
        } catch let error as SettingsError {
            throw ValidationError(error.description)
        }
        defer { join?.shutdown() }
        var settings: RunSettings
        do { settings = try RunSettings(options: options, file: file) } catch { throw ValidationError(error.description) }
        if let join { settings = try Self.withMembership(settings, join) }
        logLevel.value = settings.logLevel
        if settings.layout.mode != .tunnel && !settings.layout.setup {
            throw ValidationError("--mode \(settings.layout.mode.rawValue) routes peers directly, which needs the set-up: add --setup "
                                  + "(`setup: true`), or run `ferry setup --mode \(settings.layout.mode.rawValue)` and ferry run in tunnel mode")
        }
        // A reader that goes away (a ctl client, a capture pipe, even while the capture file's
        // header is written) gives EPIPE to the write, not SIGPIPE to the process.
        signal(SIGPIPE, SIG_IGN)

        let tapCapture: CaptureTap?
        if let path = settings.capture.path {
            tapCapture = try CaptureTap(path: path, point: settings.capture.point ?? .both, filter: settings.capture.filter)
        } else {
            tapCapture = nil
        }
        // The control socket first: another ferry on it (on this TAP, by default) is refused
        // before the TAP is touched.
        try FileManager.default.createDirectory(atPath: (settings.control as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        let control = try ControlServer(path: settings.control)
        let metricsServer: MetricsServer?
        do { metricsServer = try settings.metrics.map(RunMetrics.bind) } catch {
            control.close()
            throw error
        }
        // `setup: true`: the bridge, its address and the peer routes before the TAP joins the bridge.
        let routeKeeper: RouteKeeper?
        var configuration = settings.engine
        do {
            let setUp = try startSetup(settings, logger: logger)
            routeKeeper = setUp?.keeper
            if let tunnelled = setUp?.tunnelled, settings.layout.mode != .tunnel {
                configuration.peers = tunnelled
                logger.info("routed directly, not tunnelled: \(settings.engine.peers.filter { !tunnelled.contains($0) })")
            }
        } catch {
            control.close()
            metricsServer?.stop()
            throw error
        }
        let engine: Engine
        do {
            engine = try Engine(configuration: configuration, device: settings.device, capture: tapCapture, logger: logger)
        } catch {
            control.close()
            metricsServer?.stop()
            throw ToolError(error.description)
        }
        // While the run may still write in /run/ferry. Should the start fail after this, the
        // lease is revoked on the way out and the file names a subnet nobody holds: the next
        // start asks for that one first, as after any stop.
        if let join { writeSubnetFile(join, tapMTU: engine.tapMTU, logger: logger) }
        do {
            if let user = settings.user {
                // With set-up, routes follow peers at run time: rtnetlink's route changes need CAP_NET_ADMIN.
                try dropPrivileges(to: user, keeping: engine.capabilitiesAfterStart.union(settings.layout.setup ? [.netAdmin] : []),
                                   control: settings.control, logger: logger)
            }
            if let metricsServer { try RunMetrics.start(metricsServer, engine: engine, membership: join?.agent) }
        } catch {
            control.close()
            metricsServer?.stop()
            throw error
        }

        var livePeers: (@Sendable () -> [PeerSpec])? = nil
        if let agent = join?.agent { livePeers = { agent.appliedPeers } }
        let changes = engineControl(engine, settings: settings, routeKeeper: routeKeeper, logLevel: logLevel, logger: logger,
                                    options: options, livePeers: livePeers)
        // SIGINT and SIGTERM end the run; the handlers only ask the threads to stop. SIGHUP
        // reloads the config file (as `ferry ctl reload`; it logs what it did), and never ends it.
        for sig in [SIGINT, SIGTERM, SIGHUP] { signal(sig, SIG_IGN) }
        let signalLogger = logger
        let sources = [SIGINT, SIGTERM, SIGHUP].map { sig in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                if sig == SIGHUP {
                    if case .failure(let refusal) = changes.perform(.reload) { signalLogger.warning("SIGHUP: \(refusal)") }
                } else {
                    engine.stop()
                }
            }
            s.resume()
            return s
        }
        defer { sources.forEach { $0.cancel() } }

        let c = engine.configuration
        logger.info("ferry running", metadata: [
            "tap": "\(engine.tap.name)", "mtu": "\(engine.tapMTU)", "bridge": "\(settings.device.bridge ?? "-")",
            "tunnel": "\(describe(c))", "peers": "\(c.peers.map(\.description).joined(separator: ","))",
            "control": "\(settings.control)", "offloads": "\(engine.offloads)", "workers": "\(engine.workers.count)",
        ])
        if let metricsServer { logger.info("metrics on http://\(metricsServer.endpoint)/metrics") }
        for (offload, reason) in engine.offloads.notInUse {
            logger.notice("offload \(offload) is not in use: \(reason)")
        }
        let service = ServiceNotifier.forRun(logger: logger)
        engine.start()
        // Membership changes peers only once the workers run, as `ferry ctl`'s changes do (they
        // come through the control socket, started below).
        let membership = join.map { RunningMembership($0, changes: changes) }
        service.announce(engine, logger: logger)
        // With set-up, `ferry ctl stats` reports the routes installed, and the route keeper keeps
        // them in step as peers change (`ferry ctl peer add/del`, reload: `changes`' observer).
        let source: any ControlSource = routeKeeper.map { SetUpSource(base: changes, keeper: $0) } ?? changes
        if let membership {
            control.start(serving: MembershipControlSource(base: source, agent: membership.join.agent), logger: logger)
        } else {
            control.start(serving: source, logger: logger)
        }

        var last = engine.statistics()
        var lastTime = Date()
        // Woken by a stop, asked for or not: a worker that ends on an error (the TAP deleted)
        // ends the process at once, non-zero, so that a supervisor restarts it.
        while !engine.isStopping {
            // (A reload may change the interval: it takes effect after the current one.)
            let every = changes.statsInterval
            let interval = every > 0 ? every : 3600
            if engine.waitUntilStopping(deadline: .now() + .seconds(interval)) { break }
            guard every > 0 else { continue }
            let now = engine.statistics()
            let seconds = max(0.001, Date().timeIntervalSince(lastTime))
            let line = rates(from: last, to: now, seconds: seconds)
            logger.info("\(line)")
            service.status("\(now.peers.count) peers; \(line)")
            last = now
            lastTime = Date()
        }
        service.stopping(status: "stopping")
        membership?.stop()
        let failures = engine.wait()
        control.wait()
        metricsServer?.stop()
        logger.info("ferry stopped; totals:\n\(renderStatistics(engine.statistics()))")
        if !failures.isEmpty { throw ToolError("the data plane stopped on an error: \(failures.joined(separator: "; "))") }
    }
}

/// Becomes `user` once the TAP, the sockets, the capture file and the control socket are open,
/// before any other thread starts (each thread made later inherits it). The control socket's
/// directory is root's: a small child removes the socket when this process ends.
func dropPrivileges(to user: UserAccount, keeping capabilities: Set<Capability>, control: String, logger: Logger) throws {
    do {
        try Privileges.removeWhenDone(socketAt: control)
        try Privileges.drop(to: user, keeping: capabilities)
    } catch {
        throw ToolError("cannot run as \(user.name): \(error)")
    }
    let kept = capabilities.sorted().map(\.description)
    logger.info("running as \(user.name) (uid \(user.uid), gid \(user.gid)); capabilities kept: \(kept.isEmpty ? "none" : kept.joined(separator: ","))")
}

func describe(_ c: EngineConfiguration) -> String {
    switch c.encapsulation {
    case .vxlan(let vni): "vxlan vni \(vni) from \(c.local) port \(c.destinationPort)"
    case .gre(let g): "gre" + (g.key.map { " key \($0)" } ?? "") + " from \(c.local)" + (c.grePath == .link ? " on the link path" : "")
    }
}

func rates(from a: Statistics, to b: Statistics, seconds: Double) -> String {
    func rate(_ counter: Counter) -> Double { Double(b.counter(counter) &- a.counter(counter)) / seconds }
    let out = rate(.sentPackets), inPackets = rate(.tapWrittenFrames)
    let mbitOut = rate(.sentBytes) * 8 / 1e6, mbitIn = rate(.receivedBytes) * 8 / 1e6
    return String(format: "tx %.0f pkt/s %.1f Mbit/s, rx %.0f pkt/s %.1f Mbit/s, drops +%llu, fdb %d",
                  out, mbitOut, inPackets, mbitIn, b.totalDrops &- a.totalDrops, b.fdbEntries)
}
