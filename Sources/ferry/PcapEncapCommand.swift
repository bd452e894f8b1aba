import ArgumentParser
import FerryPcapTools
import FerryWire

struct PcapEncapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encap",
        abstract: "Wrap every Ethernet frame of a capture in VXLAN or GRE, as full outer frames.",
        discussion: """
            The IP version of the underlay follows --local and --remote. Timestamps are kept. \
            Frames too large for one outer IP packet are skipped and counted.

            Example: ferry pcap encap --encap vxlan --vni 42 --local 10.99.0.1 --remote 10.99.0.2 in.pcap out.pcap
            """
    )

    @OptionGroup var tunnel: TunnelFlags
    @OptionGroup var filter: FilterOptions

    @Argument(help: ArgumentHelp("Capture of inner Ethernet frames.", valueName: "in"))
    var input: String

    @Argument(help: ArgumentHelp("Capture to write.", valueName: "out"))
    var output: String

    func run() throws {
        let options = try tunnel.tunnelOptions()
        let report = try encapsulateCapture(input: input, output: output, options: options, filter: try filter.compiled())
        var line = "encapsulated \(report.written) frames as \(describe(options))"
        if report.written > 0 {
            line += "; \(report.innerBytes) inner bytes became \(report.outerBytes)"
            line += " (+\(report.outerBytes - report.innerBytes), \(options.fullHeaderLength) per frame)"
        }
        print(line)
        if report.filteredOut > 0 { print("skipped \(report.filteredOut) frames not matching the filter") }
        if report.tooShort > 0 { print("skipped \(report.tooShort) frames shorter than an Ethernet header") }
        if report.tooLarge > 0 {
            print("skipped \(report.tooLarge) frames larger than \(options.maximumInnerFrameLength) bytes, the most one outer IP packet carries")
        }
    }
}

func describe(_ o: TunnelOptions) -> String {
    switch o.encapsulation {
    case .vxlan(let vni):
        "VXLAN VNI \(vni) \(o.local) -> \(o.remote) port \(o.destinationPort)"
    case .gre(let g):
        "GRE" + (g.key.map { " key \($0)" } ?? "") + (g.checksum ? " csum" : "") + (g.sequence ? " seq" : "")
            + " \(o.local) -> \(o.remote)"
    }
}
