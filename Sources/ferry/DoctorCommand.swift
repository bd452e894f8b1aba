import ArgumentParser
import FerryDoctor
import FerrySettings
import FerryWire
import Foundation

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

/// The tunnel a `ferry run` config file describes, resolved as `ferry run` resolves it.
enum DoctorConfig {
    static func plan(path: String) throws -> DoctorPlan {
        // As ferry run: an unreadable file is the file's fault (exit 1), a bad value a usage error (64).
        let file: ConfigFile
        do { file = try ConfigFile.load(path: path) } catch { throw ToolError(error.description) }
        let settings: RunSettings
        do { settings = try RunSettings(options: RunOptions(), file: file) } catch { throw ValidationError(error.description) }
        return DoctorPlan(local: settings.engine.local, peers: settings.layout.peers.map(\.address),
                          bridge: settings.layout.bridge ?? settings.device.bridge,
                          encapsulation: settings.engine.encapsulation, port: settings.engine.destinationPort,
                          underlayMTU: settings.engine.underlayMTU, fromConfig: true)
    }
}
