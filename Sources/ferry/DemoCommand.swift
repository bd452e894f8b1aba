import ArgumentParser
import FerryCapture
import FerryPcapTools
import FerryWire
import FerrySettings
import Foundation

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Join two hosts' container bridges with Ferry in a lab of namespaces, and measure it.",
        discussion: """
            Builds two hosts as network namespaces on a veth underlay, each with a container bridge \
            (10.17.0.0/16 and 10.18.0.0/16) and a container, starts Ferry on both, pings from one \
            container to the other, runs a short iperf3 transfer, prints Ferry's counters, and tears \
            it all down (also on Ctrl-C). Needs root, iproute2, ping and iperf3 (tools/setup).

            --offline needs none of that: it round-trips a sample capture through VXLAN and GRE over \
            IPv4 and IPv6 with the pcap tools and checks every frame comes back byte for byte.
            """
    )

    @Flag(name: .long, help: "Round-trip a sample capture through the pcap tools instead (no root, no network).")
    var offline = false

    @Option(name: .long, help: ArgumentHelp("vxlan or gre.", valueName: "type"), transform: Parse.encapsulation)
    var encap: TunnelKind = .vxlan

    @Flag(name: .long, help: "Use an IPv6 underlay (fd00:99::/64).")
    var ipv6Underlay = false

    @Option(name: .long, help: "Seconds of iperf3 traffic.")
    var seconds = 3

    @Option(name: .long, help: ArgumentHelp("Keep the captures (offline) or logs (live) in this directory.", valueName: "dir"))
    var keep: String?

    @Flag(name: .long, help: "Membership in etcd instead: etcd in the lab, ferry etcd init, the one same command on every host.")
    var etcd = false

    @Option(name: .long, help: "Hosts in the lab (with --etcd; 2 without).")
    var hosts = 2

    func validate() throws {
        guard (1...60).contains(seconds) else { throw ValidationError("--seconds \(seconds) is out of range; use 1 to 60") }
        guard (2...16).contains(hosts) else { throw ValidationError("--hosts \(hosts) is out of range; use 2 to 16") }
        guard hosts == 2 || etcd else { throw ValidationError("--hosts goes with --etcd (the plain demo has two hosts)") }
    }

    func run() throws {
        if etcd { try EtcdDemo(hosts: hosts, keep: keep).run() } else if offline { try runOffline() } else { try LiveDemo(encap: encap, ipv6Underlay: ipv6Underlay, seconds: seconds, keep: keep).run() }
    }

    func runOffline() throws {
        let fm = FileManager.default
        let directory = keep ?? (NSTemporaryDirectory() + "ferry-demo-\(getpid())")
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ToolError("cannot create \(directory): \(error.localizedDescription); pass --keep with a writable directory")
        }
        defer { if keep == nil { try? fm.removeItem(atPath: directory) } }

        let innerPath = directory + "/inner.pcap"
        let count = try SampleTraffic.write(to: innerPath)
        let original = try PcapFileReader(path: innerPath).readAll()
        print("sample: \(count) frames of container traffic (ARP, ICMP, TCP, UDP, IPv6, VLAN) -> \(innerPath)\n")

        let v4 = (IPAddress.v4(IPv4Address(10, 99, 0, 1)), IPAddress.v4(IPv4Address(10, 99, 0, 2)))
        let v6 = (IPAddress.v6(IPv6Address("fd00:99::1")!), IPAddress.v6(IPv6Address("fd00:99::2")!))
        let tunnels: [(String, Encapsulation, (IPAddress, IPAddress))] = [
            ("vxlan-ipv4", .vxlan(vni: 42), v4),
            ("vxlan-ipv6", .vxlan(vni: 42), v6),
            ("gre-key-ipv4", .gre(GREOptions(key: 42)), v4),
            ("gre-csum-key-seq-ipv6", .gre(GREOptions(key: 42, checksum: true, sequence: true)), v6),
        ]

        print("tunnel                  frames  inner bytes  wire bytes  overhead        round trip")
        var failures = 0
        for (name, encapsulation, (local, remote)) in tunnels {
            let options = try TunnelOptions(encapsulation: encapsulation, local: local, remote: remote, dontFragment: .set)
            let outerPath = "\(directory)/\(name).pcap", backPath = "\(directory)/\(name)-decap.pcap"
            _ = try encapsulateCapture(input: innerPath, output: outerPath, options: options, filter: nil)
            let summary = try summarizeCapture(path: outerPath)
            let decap = try decapsulateCapture(input: outerPath, output: backPath,
                                               policy: DecapsulationPolicy(udpChecksum: .verify), filter: nil)
            let back = try PcapFileReader(path: backPath).readAll()
            let identical = back == original && decap.dropped.isEmpty
            if !identical { failures += 1 }
            let share = percent(summary.overheadShare)
            print(pad(name, 22) + pad(String(summary.tunnelFrames), 8, left: true) + pad(String(summary.innerBytes), 13, left: true)
                  + pad(String(summary.wireBytes), 12, left: true)
                  + pad("+\(summary.overheadBytes / max(1, summary.tunnelFrames)) B/frame \(share)", 20, left: true)
                  + "  " + (identical ? "identical" : "MISMATCH (\(decap.dropped))"))
        }

        print("\nwhat the vxlan-ipv4 capture holds (ferry pcap inspect):\n")
        print(render(try summarizeCapture(path: "\(directory)/vxlan-ipv4.pcap"), top: 8), terminator: "")
        if keep != nil {
            print("\ncaptures kept in \(directory); open them with `tshark -r` or `ferry pcap inspect`")
        }
        if failures > 0 { throw ExitCode(1) }
        print("\nall \(tunnels.count) round trips gave back every frame byte for byte")
    }
}
