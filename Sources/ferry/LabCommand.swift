import ArgumentParser
import FerryLab
import Foundation

struct LabCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lab",
        abstract: "Build or remove a lab of hosts as network namespaces, joined by Ferry.",
        discussion: """
            `ferry lab up` builds N hosts (veth underlay for two, a bridge for more), each with bridge0 \
            holding 10.(16+N).0.0/16 and containers as namespaces on it, then starts Ferry on every \
            host, peered with all the others, and leaves it all running. Enter a namespace with \
            `ip netns exec PREFIX-h0c0 bash`. `ferry lab down` removes everything with the prefix.
            """,
        subcommands: [Up.self, Down.self]
    )

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Build the lab and start Ferry on every host.")

        @Option(name: .long, help: "Name prefix of the namespaces.")
        var prefix = "ferrylab"
        @Option(name: .long, help: "Number of hosts, 2 to 200.")
        var hosts = 2
        @Option(name: .long, help: "Containers per host.")
        var containers = 1
        @Flag(name: .long, help: "Use an IPv6 underlay.")
        var ipv6Underlay = false
        @Option(name: .long, help: ArgumentHelp("vxlan, gre, or none (no tunnel: start your own).", valueName: "type"))
        var encap = "vxlan"
        @Option(name: .long, help: ArgumentHelp("Directory for the Ferry logs.", valueName: "dir"))
        var logs = "/tmp"

        func validate() throws {
            guard (2...200).contains(hosts) else { throw ValidationError("--hosts \(hosts) is out of range; use 2 to 200") }
            guard (1...50).contains(containers) else { throw ValidationError("--containers \(containers) is out of range; use 1 to 50") }
            guard ["vxlan", "gre", "none"].contains(encap) else { throw ValidationError("--encap must be vxlan, gre or none") }
        }

        func run() throws {
            guard geteuid() == 0 else { throw ToolError("building namespaces needs root (sudo)") }
            let lab = Lab(prefix: prefix, hosts: hosts, containersPerHost: containers, ipv6Underlay: ipv6Underlay)
            try lab.build()
            let tunnel = encap == "vxlan" ? ["--vni", "42"] : ["--encap", "gre", "--key", "42"]
            do {
                for host in lab.hosts where encap != "none" {
                    try lab.startFerry(binary: Lab.currentExecutable, on: host, tunnel: tunnel,
                                       log: "\(logs)/\(prefix)-h\(host.index).log")
                }
            } catch {
                lab.teardown()
                throw error
            }
            for h in lab.hosts {
                print("\(h.namespace)  underlay \(h.underlay)  bridge0 \(h.bridgeAddress)/16  containers "
                      + h.containers.map { "\($0.namespace)=\($0.address)" }.joined(separator: " ")
                      + (encap == "none" ? "" : "  ctl --control \(lab.controlPath(h.index))"))
            }
            print("remove with: ferry lab down --prefix \(prefix)")
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop everything in the lab and remove its namespaces.")
        @Option(name: .long, help: "Name prefix of the namespaces.")
        var prefix = "ferrylab"

        func run() throws {
            guard geteuid() == 0 else { throw ToolError("removing namespaces needs root (sudo)") }
            Lab.removeLeftovers(prefix: prefix)
            print("removed \(prefix)-*")
        }
    }
}
