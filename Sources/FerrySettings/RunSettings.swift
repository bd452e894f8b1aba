import FerryEngine
import FerryLinux
import FerryWire
import Foundation
import Logging

/// `ferry run`'s options resolved: the command line over the config file over the defaults,
/// each value parsed here and the whole checked by `EngineConfiguration.check` and
/// `HostLayout.check`, with messages that say what would be right.
public struct RunSettings {
    public var engine: EngineConfiguration
    public var device: Engine.DeviceOptions
    public var control: String
    public var capture: CaptureOptions
    public var statsInterval: Int
    public var logLevel: Logger.Level
    /// Who to run as once set-up is done (nil: stay root).
    public var user: UserAccount?
    /// The bridge, its subnet, the peers with theirs, the mode, whether Ferry sets them up.
    public var layout: HostLayout
    /// Where Prometheus scrapes `/metrics` (nil: not served).
    public var metrics: Endpoint?
    /// The config file read (nil: none), for a reload.
    public var configPath: String?
    /// Membership from etcd (nil: the peers are those given).
    public var etcd: EtcdSettings?

    /// The keys a config file may hold: the long option names.
    public static let keys: [String] = [
        "tap", "bridge", "persistent", "encap", "vni", "key", "local", "peer", "accept-any-peer", "accept-cidr",
        "max-macs-per-peer", "dstport",
        "src-port-range", "ttl", "tos", "df", "udp-csum", "gre-csum", "gre-seq", "gre-path", "mtu", "underlay-mtu", "ageing",
        "fdb-size", "static-fdb", "control", "capture", "capture-point", "capture-filter", "batch", "offloads",
        "workers", "stats-interval", "log-level", "user", "subnet", "mode", "setup", "metrics",
        "etcd", "etcd-prefix", "etcd-ttl", "subnet-file", "etcd-ca", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file",
    ]

    /// Where control sockets go by default: `<tap>.sock` there, one per TAP (one per VNI).
    public static let controlDirectory = "/run/ferry"
    public static func defaultControl(tap: String) -> String { "\(controlDirectory)/\(tap).sock" }

    /// Reads the config file `c.config` names, if any, and resolves.
    public init(options c: RunOptions) throws(SettingsError) {
        try self.init(options: c, file: try c.config.map { (path) throws(SettingsError) in try ConfigFile.load(path: path) })
    }

    /// `--user NAME`: an existing user other than root.
    static func account(_ name: String) throws(SettingsError) -> UserAccount {
        guard let account = UserAccount.named(name) else {
            throw SettingsError("--user '\(name)': there is no such user on this host (`getent passwd` lists them); give an existing one, e.g. nobody")
        }
        guard account.uid != 0 else {
            throw SettingsError("--user '\(name)' is root (uid 0), which keeps every privilege; give an unprivileged user, e.g. nobody")
        }
        return account
    }

    public init(options c: RunOptions, file: ConfigFile?) throws(SettingsError) {
        let v = Values(options: c, file: file)
        configPath = c.config
        etcd = try EtcdSettings(options: c, file: file)
        layout = try HostLayout(values: v)

        guard let tap = v.value(c.tap, "tap") else {
            throw SettingsError("give the TAP device with --tap NAME (or `tap:` in the config file)")
        }
        guard let localText = v.value(c.local, "local") else {
            throw SettingsError("give this host's underlay address with --local IP (or `local:` in the config file)")
        }
        let local = try Parse.address(localText)

        let kind = try v.value(c.encap, "encap").map(Parse.encapsulation)
        let vni = try v.value(c.vni, "vni").map(Parse.vni)
        let key = try v.value(c.key, "key").map(Parse.key)
        let greCsum = try v.bool(c.greCsum, "gre-csum"), greSeq = try v.bool(c.greSeq, "gre-seq")
        let encapsulation = try Self.checked { () throws(ConfigurationError) in
            try Encapsulation(kind: kind, vni: vni, greKey: key, greChecksum: greCsum, greSequence: greSeq)
        }

        var e = EngineConfiguration(encapsulation: encapsulation, local: local, peers: layout.peers.map(\.address), underlayMTU: nil)
        e.acceptAnyPeer = try v.bool(c.acceptAnyPeer, "accept-any-peer")
        e.peersAtRunTime = etcd != nil
        e.acceptPrefixes = try v.list(c.acceptCidr, "accept-cidr").map { (text) throws(SettingsError) in try Parse.prefix(text) }
        e.macsPerPeer = try v.value(c.maxMacsPerPeer, "max-macs-per-peer").map { (text) throws(SettingsError) in
            try Parse.integer(text, "MACs per peer", in: 1...1 << 20)
        }
        if let t = v.value(c.dstport, "dstport") { e.destinationPort = try Parse.port(t) }
        if let t = v.value(c.srcPortRange, "src-port-range") { e.sourcePortRange = try Parse.portRange(t) }
        if let t = v.value(c.ttl, "ttl") { e.ttl = try Parse.ttl(t) }
        if let t = v.value(c.tos, "tos") { e.tos = try Parse.tos(t) }
        if let t = v.value(c.df, "df") {
            guard let p = DFPolicy(rawValue: t) else { throw SettingsError("--df '\(t)' is not a DF policy; use set, unset or inherit") }
            e.dontFragment = p
        }
        if let flag = c.udpCsum { e.udpChecksum = flag } else if let t = file?["udp-csum"] {
            guard let b = t as? Bool else { throw SettingsError("config key 'udp-csum' must be true or false") }
            e.udpChecksum = b
        }
        if let t = v.value(c.grePath, "gre-path") {
            guard let path = GREPath(rawValue: t) else { throw SettingsError("--gre-path '\(t)' must be ip or link") }
            e.grePath = path
        }
        if let t = v.value(c.underlayMtu, "underlay-mtu") { e.underlayMTU = try Parse.integer(t, "underlay MTU", in: 576...65535) }
        if let t = v.value(c.ageing, "ageing") { e.ageingSeconds = try Parse.integer(t, "ageing time", in: 1...86400 * 7) }
        if let t = v.value(c.fdbSize, "fdb-size") { e.fdbCapacity = try Parse.integer(t, "forwarding table size", in: 16...1 << 20) }
        if let t = v.value(c.batch, "batch") { e.batchSize = try Parse.integer(t, "batch size", in: 1...512) }
        e.staticEntries = try v.list(c.staticFdb, "static-fdb").map { (entry) throws(SettingsError) in
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw SettingsError("static entry '\(entry)' is not MAC=PEER, e.g. 02:42:0a:12:00:03=10.99.0.2") }
            return (try Parse.mac(parts[0]), try Parse.address(parts[1]))
        }
        engine = e

        // A list in the file may be a YAML sequence too.
        let offloadText = c.offloads ?? file?["offloads"].map { ($0 as? [Any])?.map(ConfigFile.text).joined(separator: ",") ?? ConfigFile.text($0) }
        let offloads = try offloadText.map { (text) throws(SettingsError) in try Parse.offloads(text) } ?? .all
        // `on` means each offload that applies; one named in a list must apply.
        let offloadsListed = offloadText.map { !Parse.wordsForAll.contains($0.lowercased()) } ?? false
        device = Engine.DeviceOptions(tapName: tap, bridge: layout.bridge, persistent: try v.bool(c.persistent, "persistent"),
                                      mtu: try v.value(c.mtu, "mtu").map { (t) throws(SettingsError) in try Parse.integer(t, "MTU", in: 68...65521) },
                                      offloads: offloads,
                                      workers: try v.value(c.workers, "workers").map { (t) throws(SettingsError) in
                                          try Parse.integer(t, "worker count", in: 1...64)
                                      })
        control = v.value(c.control, "control") ?? Self.defaultControl(tap: tap)
        let point = try v.value(c.capturePoint, "capture-point").map { (point) throws(SettingsError) in
            guard let p = CapturePoint(rawValue: point) else {
                throw SettingsError("--capture-point '\(point)' is not a capture point; use inner, outer, both, drops or all")
            }
            return p
        }
        capture = CaptureOptions(path: v.value(c.capture, "capture"), point: point, filter: v.value(c.captureFilter, "capture-filter"))
        statsInterval = try v.value(c.statsInterval, "stats-interval").map { (t) throws(SettingsError) in
            try Parse.integer(t, "statistics interval", in: 0...86400)
        } ?? 10
        let level = v.value(c.logLevel, "log-level") ?? "info"
        guard let l = Logger.Level(rawValue: level) else {
            throw SettingsError("log level '\(level)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        logLevel = l
        user = try v.value(c.user, "user").map(Self.account)
        metrics = try v.value(c.metrics, "metrics").map { (t) throws(SettingsError) in try Parse.endpoint(t, "--metrics") }

        let engineConfiguration = engine, deviceOptions = device, captureOptions = capture
        try Self.checked { () throws(ConfigurationError) in
            try engineConfiguration.check(device: deviceOptions, offloadsListed: offloadsListed, capture: captureOptions)
        }
    }

    /// Runs one of the engine's checks, its error said as a setting's.
    static func checked<T>(_ body: () throws(ConfigurationError) -> T) throws(SettingsError) -> T {
        do {
            return try body()
        } catch {
            throw SettingsError(error.description)
        }
    }
}
