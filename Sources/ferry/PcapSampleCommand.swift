import ArgumentParser

struct PcapSampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Write a small capture of container traffic (ARP, ICMP, TCP, UDP, IPv6, VLAN) to try the tools on."
    )

    @Argument(help: ArgumentHelp("Capture to write.", valueName: "out"))
    var output: String

    func run() throws {
        let count = try SampleTraffic.write(to: output)
        print("wrote \(count) frames to \(output)")
    }
}
