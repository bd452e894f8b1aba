import ArgumentParser
import FerryDoctor
import FerryWire
import Foundation
import Yams

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check this host for what breaks overlays, and say how to fix each problem.",
        discussion: """
            Checks: container MTU against the tunnel's, rp_filter, ip_forward, br_netfilter with a \
            FORWARD chain that drops bridged frames, a firewall closing the VXLAN port or GRE, peers \
            unreachable on the underlay, a duplicate local address, and the kernel vxlan device's \
            checksum-offload bug. With --config, for the tunnel the file describes (local, peer, bridge, \
            encap, dstport, underlay-mtu); without, the host's general state. Exits 0 when all is well, \
            1 when something is not. Run it as root (raw sockets for the probes, iptables-save, nft).
            """
    )

    @Option(name: .long, help: "A ferry run config file: the tunnel to check for.")
    var config: String?

    @Flag(name: .long, help: "Print the findings as JSON.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Docker's daemon settings, for their mtu.", valueName: "FILE"))
    var dockerConfig = "/etc/docker/daemon.json"

    func run() throws {
        var plan = try config.map(DoctorConfig.plan) ?? DoctorPlan()
        plan.dockerDaemonConfig = dockerConfig
        let report = Doctor.check(plan, HostReader().observe(plan))
        if json {
            print(try jsonString(report))
        } else {
            print(Self.text(report), terminator: "")
        }
        if report.exitCode != 0 { throw ExitCode(report.exitCode) }
    }

    static func text(_ report: DoctorReport) -> String {
        var out = ""
        for f in report.checks {
            let label = f.status == .problem ? "PROBLEM" : f.status.rawValue
            out += label.padding(toLength: 9, withPad: " ", startingAt: 0) + f.name + ": " + f.detail + "\n"
            if let fix = f.fix {
                for (i, line) in fix.split(separator: "\n").enumerated() {
                    out += (i == 0 ? "         fix: " : "              ") + line + "\n"
                }
            }
        }
        let problems = report.problems
        out += problems.isEmpty ? "\nNo problems found.\n"
            : "\n\(problems.count) problem\(problems.count == 1 ? "" : "s"): \(problems.map(\.name).joined(separator: ", ")).\n"
        return out
    }
}

/// The few keys of a `ferry run` config file the doctor needs. Other keys are not its business
/// and are left alone (ferry run checks them).
enum DoctorConfig {
    static func plan(path: String) throws -> DoctorPlan {
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read config file \(path): no such file or not readable")
        }
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: String(decoding: contents, as: UTF8.self))
        } catch {
            throw ValidationError("config file \(path) is not valid YAML: \(error)")
        }
        guard let map = (loaded ?? [String: Any]()) as? [String: Any] else {
            throw ValidationError("config file \(path) must be a mapping of option names to values (e.g. `local: 10.99.0.1`)")
        }
        func text(_ key: String) -> String? { map[key].map { "\($0)" } }
        func address(_ s: String, _ what: String) throws -> IPAddress {
            guard let a = IPAddress(s.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("config file \(path): \(what) '\(s)' is not an IPv4 or IPv6 address")
            }
            return a
        }
        var plan = DoctorPlan(fromConfig: true)
        plan.local = try text("local").map { try address($0, "local") }
        let peerItems: [Any] = (map["peer"] as? [Any]) ?? (map["peer"].map { [$0] } ?? [])
        plan.peers = try peerItems.map { item in
            if let m = item as? [String: Any] {
                guard let a = m["address"] else { throw ValidationError("config file \(path): a peer mapping needs an address: key") }
                return try address("\(a)", "peer address")
            }
            let s = "\(item)"
            return try address(String(s.split(separator: "=", maxSplits: 1).first ?? ""), "peer")
        }
        plan.bridge = text("bridge")
        if let encap = text("encap") {
            switch encap {
            case "vxlan": plan.encapsulation = .vxlan(vni: 0)
            case "gre":
                let key = try text("key").map { k -> UInt32 in
                    guard let v = UInt32(k) else { throw ValidationError("config file \(path): key '\(k)' is not a 32-bit number") }
                    return v
                }
                plan.encapsulation = .gre(GREOptions(key: key, checksum: map["gre-csum"] as? Bool ?? false,
                                                     sequence: map["gre-seq"] as? Bool ?? false))
            default: throw ValidationError("config file \(path): encap '\(encap)' is not vxlan or gre")
            }
        }
        if let port = text("dstport") {
            guard let p = UInt16(port), p > 0 else { throw ValidationError("config file \(path): dstport '\(port)' is not a port (1-65535)") }
            plan.port = p
        }
        if let mtu = text("underlay-mtu") {
            guard let m = Int(mtu), (576...65535).contains(m) else {
                throw ValidationError("config file \(path): underlay-mtu '\(mtu)' is not 576 to 65535")
            }
            plan.underlayMTU = m
        }
        return plan
    }
}
