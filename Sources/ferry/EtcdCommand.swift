import ArgumentParser
import FerryEtcd
import FerryMembership
import FerrySettings
import FerryWire
import Foundation

/// `ferry etcd`: the network kept in etcd that `ferry run --etcd` hosts join.
struct EtcdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcd",
        abstract: "Write the network config that ferry run --etcd hosts take their tunnel and subnets from.",
        subcommands: [EtcdInitCommand.self]
    )
}

/// `ferry etcd init`: writes `<prefix>/config` once (a different one only with `--force`).
struct EtcdInitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Write <prefix>/config: the tunnel every host uses and, optionally, the range hosts take subnets from.",
        discussion: """
            Example: ferry etcd init --etcd http://10.99.0.100:2379 --encap vxlan --vni 42 --network 10.16.0.0/12 --subnet-length 24
            then on every host: ferry run --etcd http://10.99.0.100:2379 --tap ferry0 --bridge bridge0 --local ADDRESS
            """
    )

    @Option(name: .long, help: ArgumentHelp("etcd's endpoints (comma-separated URLs).", valueName: "url[,url...]"))
    var etcd: String

    @Option(name: .long, help: ArgumentHelp("The network's key prefix (/ferry/network).", valueName: "prefix"))
    var etcdPrefix = EtcdSettings.defaultPrefix

    @OptionGroup var etcdAccess: EtcdAccessOptions

    @Option(name: .long, help: ArgumentHelp("vxlan or gre (inferred from --vni or --key).", valueName: "type"))
    var encap: String?

    @Option(name: .long, help: "VXLAN network identifier, 0 to 16777215.")
    var vni: String?

    @Option(name: .long, help: "GRE key; omit for GRE without a key.")
    var key: String?

    @Option(name: .long, help: "VXLAN UDP port (4789).")
    var dstport: String?

    @Option(name: .long, help: ArgumentHelp("The container range hosts take subnets from (none: one flat L2 segment).",
                                            valueName: "cidr"))
    var network: String?

    @Option(name: .long, help: ArgumentHelp("Each host's subnet length inside --network (default: 8 bits longer, at most 24).",
                                            valueName: "bits"))
    var subnetLength: Int?

    @Option(name: .long, help: ArgumentHelp("Another run option every host takes (udp-csum=true, ttl=32, …); repeat for several.",
                                            valueName: "name=value"))
    var option: [String] = []

    @Flag(name: .long, help: "Overwrite a different config already there (hosts running take it at their next start).")
    var force = false

    func config() throws -> NetworkConfig {
        let kind: String
        do {
            kind = try encap.map { try Parse.encapsulation($0).rawValue } ?? (key != nil && vni == nil ? "gre" : "vxlan")
        } catch { throw ValidationError("\(error)") }
        var extra: [String: String] = [:]
        for o in option {
            let parts = o.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--option '\(o)' is not NAME=VALUE, e.g. udp-csum=true") }
            extra[parts[0]] = parts[1]
        }
        var options = RunOptions()
        do { try RunCommand.apply(extra, to: &options) } catch { throw ValidationError("--option: \(error)") }
        let c: NetworkConfig
        do {
            c = NetworkConfig(encapsulation: kind, vni: try vni.map(Parse.vni), key: try key.map(Parse.key),
                              port: try dstport.map(Parse.port), options: extra.isEmpty ? nil : extra,
                              network: network, subnetLength: subnetLength)
        } catch { throw ValidationError("\(error)") }
        do { try c.check() } catch {
            throw ValidationError("\(error)" + (kind == "vxlan" && vni == nil ? ": give --vni N" : ""))
        }
        return c
    }

    func validate() throws { _ = try config() }

    func run() throws {
        let wanted = try config()
        let store = try openEtcd(etcd, access: etcdAccess.access)
        let layout = MembershipLayout(prefix: etcdPrefix)
        let force = force, endpoints = etcd
        defer { _ = try? blocking(timeout: .seconds(3)) { await store.shutdown() } }
        let outcome = try blocking { () async throws -> String in
            do {
                if try await store.create(layout.configKey, value: wanted.encoded(), lease: 0) { return "written" }
                let there = try await store.get(layout.configKey).keyValue
                let current = there.flatMap { try? NetworkConfig.decode($0.value, key: $0.key) }
                if current == wanted { return "already there" }
                guard force else {
                    throw ToolError("""
                        \(layout.configKey) in \(endpoints) holds another config already \
                        (\(there.map { String(decoding: $0.value, as: UTF8.self) } ?? "?")): give --force to replace it \
                        (hosts running keep the old one until they restart)
                        """)
                }
                try await store.put(layout.configKey, value: wanted.encoded(), lease: 0)
                return "replaced"
            } catch let error as EtcdError {
                throw ToolError("etcd \(endpoints): \(error)")
            }
        }
        print("\(layout.configKey): \(outcome): \(String(decoding: wanted.encoded(), as: UTF8.self))")
    }
}
