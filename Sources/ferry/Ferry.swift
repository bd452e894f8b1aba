import ArgumentParser

@main
struct Ferry: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "A userspace VXLAN/GRE overlay data plane, and tools to inspect and measure encapsulation.",
        discussion: """
            Offline tools work on pcap files of Ethernet frames: `ferry pcap encap` wraps frames in \
            VXLAN or GRE, `ferry pcap decap` unwraps them (counting every refused packet under its \
            reason), `ferry pcap inspect` summarises a capture, and `ferry overhead` tabulates what \
            each encapsulation costs on the wire. `ferry demo` runs them end to end.
            """,
        subcommands: [RunCommand.self, SetupCommand.self, TeardownCommand.self, CtlCommand.self, ServiceCommand.self, DemoCommand.self,
                      LabCommand.self, PcapCommand.self, OverheadCommand.self, DoctorCommand.self, EtcdCommand.self]
    )
}

struct PcapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pcap",
        abstract: "Encapsulate, decapsulate, inspect and generate pcap captures.",
        subcommands: [PcapEncapCommand.self, PcapDecapCommand.self, PcapInspectCommand.self, PcapDiffCommand.self, PcapSampleCommand.self]
    )
}
