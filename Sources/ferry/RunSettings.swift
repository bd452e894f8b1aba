import ArgumentParser
import FerryEngine
import FerryLinux
import FerryWire
import Foundation
import Logging
import Yams

/// `ferry run`'s options resolved: the command line over the config file over the defaults,
/// each value parsed here and the whole checked by `EngineConfiguration.check`, with messages that
/// say what would be right.
struct RunSettings {
    var engine: EngineConfiguration
    var device: Engine.DeviceOptions
    var control: String
    var capture: CaptureOptions
    var statsInterval: Int
    var logLevel: Logger.Level
    /// Who to run as once set-up is done (nil: stay root).
    var user: UserAccount?

    /// The keys a config file may hold: the long option names.
    static let keys: [String] = [
        "tap", "bridge", "persistent", "encap", "vni", "key", "local", "peer", "accept-any-peer", "accept-cidr",
        "max-macs-per-peer", "dstport",
        "src-port-range", "ttl", "tos", "df", "udp-csum", "gre-csum", "gre-seq", "gre-path", "mtu", "underlay-mtu", "ageing",
        "fdb-size", "static-fdb", "control", "capture", "capture-point", "capture-filter", "batch", "offloads",
        "workers", "stats-interval", "log-level", "user",
    ]

    init(command c: RunCommand) throws {
        let file = try c.config.map(Self.loadConfig) ?? [:]

        /// A scalar: the flag, else the file's value as text.
        func value(_ flag: String?, _ key: String) -> String? { flag ?? file[key].map(Self.text) }
        func list(_ flag: [String], _ key: String) -> [String] {
            if !flag.isEmpty { return flag }
            switch file[key] {
            case let array as [Any]: return array.map(Self.text)
            case let one?: return [Self.text(one)]
            case nil: return []
            }
        }
        func bool(_ flag: Bool, _ key: String) throws -> Bool {
            if flag { return true }
            guard let v = file[key] else { return false }
            guard let b = v as? Bool else { throw ValidationError("config key '\(key)' must be true or false, not '\(Self.text(v))'") }
            return b
        }

        guard let tap = value(c.tap, "tap") else {
            throw ValidationError("give the TAP device with --tap NAME (or `tap:` in the config file)")
        }
        guard let localText = value(c.local, "local") else {
            throw ValidationError("give this host's underlay address with --local IP (or `local:` in the config file)")
        }
        let local = try Parse.address(localText)
        let peers = try list(c.peer, "peer").map(Parse.address)

        let kind = try value(c.encap, "encap").map(Parse.encapsulation)
        let vni = try value(c.vni, "vni").map(Parse.vni)
        let key = try value(c.key, "key").map(Parse.key)
        let greCsum = try bool(c.greCsum, "gre-csum"), greSeq = try bool(c.greSeq, "gre-seq")
        let encapsulation = try Self.checked { () throws(ConfigurationError) in
            try Encapsulation(kind: kind, vni: vni, greKey: key, greChecksum: greCsum, greSequence: greSeq)
        }

        var e = EngineConfiguration(encapsulation: encapsulation, local: local, peers: peers, underlayMTU: nil)
        e.acceptAnyPeer = try bool(c.acceptAnyPeer, "accept-any-peer")
        e.acceptPrefixes = try list(c.acceptCidr, "accept-cidr").map(Parse.prefix)
        e.macsPerPeer = try value(c.maxMacsPerPeer, "max-macs-per-peer").map { try Parse.integer($0, "MACs per peer", in: 1...1 << 20) }
        if let v = value(c.dstport, "dstport") { e.destinationPort = try Parse.port(v) }
        if let v = value(c.srcPortRange, "src-port-range") { e.sourcePortRange = try Parse.portRange(v) }
        if let v = value(c.ttl, "ttl") { e.ttl = try Parse.ttl(v) }
        if let v = value(c.tos, "tos") { e.tos = try Parse.tos(v) }
        if let v = value(c.df, "df") {
            guard let p = DFPolicy(rawValue: v) else { throw ValidationError("--df '\(v)' is not a DF policy; use set, unset or inherit") }
            e.dontFragment = p
        }
        if let flag = c.udpCsum { e.udpChecksum = flag } else if let v = file["udp-csum"] {
            guard let b = v as? Bool else { throw ValidationError("config key 'udp-csum' must be true or false") }
            e.udpChecksum = b
        }
        if let v = value(c.grePath, "gre-path") {
            guard let path = GREPath(rawValue: v) else { throw ValidationError("--gre-path '\(v)' must be ip or link") }
            e.grePath = path
        }
        if let v = value(c.underlayMtu, "underlay-mtu") { e.underlayMTU = try Parse.integer(v, "underlay MTU", in: 576...65535) }
        if let v = value(c.ageing, "ageing") { e.ageingSeconds = try Parse.integer(v, "ageing time", in: 1...86400 * 7) }
        if let v = value(c.fdbSize, "fdb-size") { e.fdbCapacity = try Parse.integer(v, "forwarding table size", in: 16...1 << 20) }
        if let v = value(c.batch, "batch") { e.batchSize = try Parse.integer(v, "batch size", in: 1...512) }
        e.staticEntries = try list(c.staticFdb, "static-fdb").map { entry in
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("static entry '\(entry)' is not MAC=PEER, e.g. 02:42:0a:12:00:03=10.99.0.2") }
            return (try Parse.mac(parts[0]), try Parse.address(parts[1]))
        }
        engine = e

        // A list in the file may be a YAML sequence too.
        let offloadText = c.offloads ?? file["offloads"].map { ($0 as? [Any])?.map(Self.text).joined(separator: ",") ?? Self.text($0) }
        let offloads = try offloadText.map(Parse.offloads) ?? .all
        // `on` means each offload that applies; one named in a list must apply.
        let offloadsListed = offloadText.map { !Parse.wordsForAll.contains($0.lowercased()) } ?? false
        device = Engine.DeviceOptions(tapName: tap, bridge: value(c.bridge, "bridge"), persistent: try bool(c.persistent, "persistent"),
                                      mtu: try value(c.mtu, "mtu").map { try Parse.integer($0, "MTU", in: 68...65521) },
                                      offloads: offloads,
                                      workers: try value(c.workers, "workers").map { try Parse.integer($0, "worker count", in: 1...64) })
        control = value(c.control, "control") ?? RunCommand.defaultControl(tap: tap)
        let point = try value(c.capturePoint, "capture-point").map { point in
            guard let p = CapturePoint(rawValue: point) else {
                throw ValidationError("--capture-point '\(point)' is not a capture point; use inner, outer or both")
            }
            return p
        }
        capture = CaptureOptions(path: value(c.capture, "capture"), point: point, filter: value(c.captureFilter, "capture-filter"))
        statsInterval = try value(c.statsInterval, "stats-interval").map { try Parse.integer($0, "statistics interval", in: 0...86400) } ?? 10
        let level = value(c.logLevel, "log-level") ?? "info"
        guard let l = Logger.Level(rawValue: level) else {
            throw ValidationError("log level '\(level)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        logLevel = l
        user = try value(c.user, "user").map { name in
            guard let account = UserAccount.named(name) else {
                throw ValidationError("--user '\(name)': there is no such user on this host (`getent passwd` lists them); give an existing one, e.g. nobody")
            }
            guard account.uid != 0 else {
                throw ValidationError("--user '\(name)' is root (uid 0), which keeps every privilege; give an unprivileged user, e.g. nobody")
            }
            return account
        }

        try Self.checked { () throws(ConfigurationError) in
            try engine.check(device: device, offloadsListed: offloadsListed, capture: capture)
        }
    }

    /// Runs a check of the library's, its error as a usage error (exit code 64).
    static func checked<T>(_ body: () throws(ConfigurationError) -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw ValidationError(error.description)
        }
    }

    static func text(_ v: Any) -> String {
        switch v {
        case let b as Bool: b ? "true" : "false"
        default: "\(v)"
        }
    }

    /// Reads a YAML mapping; an unknown key is an error that names the nearest known one.
    static func loadConfig(_ path: String) throws -> [String: Any] {
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw ToolError("cannot read config file \(path): no such file or not readable")
        }
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: String(decoding: contents, as: UTF8.self))
        } catch {
            throw ToolError("config file \(path) is not valid YAML: \(error)")
        }
        guard let map = loaded as? [String: Any] else {
            if loaded == nil { return [:] }
            throw ToolError("config file \(path) must be a mapping of option names to values (e.g. `vni: 42`)")
        }
        for key in map.keys where !keys.contains(key) {
            let near = keys.min { distance($0, key) < distance($1, key) }!
            throw ToolError("config file \(path): unknown key '\(key)'" + (distance(near, key) <= 3 ? "; did you mean '\(near)'?" : "")
                            + " (keys are the long option names of ferry run)")
        }
        return map
    }

    /// Levenshtein distance, for "did you mean".
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(1, b.count) where !b.isEmpty {
                let old = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = old
            }
        }
        return row[b.count]
    }
}
