import ArgumentParser
import FerryCapture
import FerryWire
import Foundation

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Round-trip a sample capture through every tunnel type and print what it cost.",
        discussion: """
            Writes a sample of container traffic, encapsulates it as VXLAN and GRE over IPv4 and \
            IPv6, inspects and decapsulates each result, and checks that every inner frame comes \
            back byte for byte with its timestamp. Needs no privileges and no network.
            """
    )

    @Option(name: .long, help: ArgumentHelp("Keep the captures in this directory instead of a temporary one.", valueName: "dir"))
    var keep: String?

    func run() throws {
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
            let summary = try inspect(path: outerPath, filter: nil)
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
        print(render(try inspect(path: "\(directory)/vxlan-ipv4.pcap", filter: nil), top: 8), terminator: "")
        if keep != nil {
            print("\ncaptures kept in \(directory); open them with `tshark -r` or `ferry pcap inspect`")
        }
        if failures > 0 { throw ExitCode(1) }
        print("\nall \(tunnels.count) round trips gave back every frame byte for byte")
    }
}
