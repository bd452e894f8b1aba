import ArgumentParser
import FerryCapture
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

struct EncapReport {
    var written = 0, filteredOut = 0, tooShort = 0, tooLarge = 0, innerBytes = 0, outerBytes = 0
}

/// Reads `input`, writes each selected frame encapsulated to `output`, timestamps kept.
func encapsulateCapture(input: String, output: String, options: TunnelOptions, filter: PacketFilter?) throws -> EncapReport {
    let template = EncapsulationTemplate(options)
    let reader = try PcapFileReader(path: input)
    let writer = try PcapFileWriter(path: output)

    // One buffer with headroom: each frame is copied in once and the outer header written in
    // front of it, as the live path does.
    let headroom = options.fullHeaderLength
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: headroom + reader.snapshotLength, alignment: 16)
    defer { buffer.deallocate() }

    var report = EncapReport()
    while let frame = try reader.next() {
        if let filter, !filter.matches(frame) { report.filteredOut += 1; continue }
        guard frame.bytes.count >= Ethernet.headerLength else { report.tooShort += 1; continue }
        guard frame.bytes.count <= options.maximumInnerFrameLength else { report.tooLarge += 1; continue }
        UnsafeMutableRawBufferPointer(rebasing: buffer[headroom..<(headroom + frame.bytes.count)]).copyMemory(from: frame.bytes)
        let start = template.encapsulateFrame(in: buffer, innerOffset: headroom, innerLength: frame.bytes.count)
        let outer = UnsafeRawBufferPointer(rebasing: buffer[start..<(headroom + frame.bytes.count)])
        writer.write(outer, timestamp: frame.timestamp)
        report.written += 1
        report.innerBytes += frame.bytes.count
        report.outerBytes += outer.count
    }
    try writer.close()
    return report
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
