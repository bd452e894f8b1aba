import ArgumentParser
import FerryPcapTools
import FerryWire
import FerrySettings

struct PcapInspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Summarise a capture: tunnels, inner flows, frame sizes and encapsulation overhead."
    )

    @Argument(help: ArgumentHelp("Capture to read.", valueName: "in"))
    var input: String

    @Flag(name: .long, help: "Print the summary as JSON.")
    var json = false

    @Option(name: .long, help: "VXLAN UDP destination port (default: 4789 and Linux's 8472).", transform: Parse.port)
    var dstport: UInt16?

    @Option(name: .long, help: "Inner flows to list, busiest first (0 for all).")
    var top = 20

    @OptionGroup var filter: FilterOptions

    func run() throws {
        let summary = try summarizeCapture(path: input, filter: try filter.compiled(), vxlanPort: dstport)
        if json {
            print(try jsonString(summary))
        } else {
            print(render(summary, top: top), terminator: "")
        }
    }
}

func render(_ s: CaptureSummary, top: Int) -> String {
    var out = "\(s.frames) frames: \(s.tunnelFrames) tunnel"
    let other = s.otherFrames.values.reduce(0, +), malformed = s.malformedFrames.values.reduce(0, +)
    if other > 0 { out += ", \(other) other traffic" }
    if malformed > 0 { out += ", \(malformed) malformed tunnel packets" }
    if s.filteredOut > 0 { out += " (\(s.filteredOut) more did not match the filter)" }
    out += "\n"

    if !s.tunnels.isEmpty {
        out += "\ntunnels\n"
        for t in s.tunnels {
            var line = "  \(t.type)"
            if let vni = t.vni { line += " vni \(vni)" }
            if t.type == "gre" { line += t.key.map { " key \($0)" } ?? " (no key)" }
            line += "  \(t.outerSource) -> \(t.outerDestination)"
            if let port = t.destinationPort { line += " udp \(port)" }
            line += "  \(t.packets) packets, \(t.wireBytes) bytes"
            if t.type == "vxlan" {
                line += ", \(t.distinctSourcePorts) source port\(t.distinctSourcePorts == 1 ? "" : "s")"
                line += ", udp checksum " + t.udpChecksums.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                    .joined(separator: ", ")
            }
            out += line + "\n"
        }
    }

    if !s.innerFlows.isEmpty {
        let flows = s.innerFlows.sorted { ($0.bytes, $1.description) > ($1.bytes, $0.description) }
        let shown = top > 0 ? Array(flows.prefix(top)) : flows
        out += "\ninner flows (\(s.innerFlows.count))\n"
        for f in shown {
            out += "  \(pad(f.description, 52)) \(pad(String(f.packets), 8, left: true)) pkts \(pad(String(f.bytes), 10, left: true)) bytes\n"
        }
        if shown.count < flows.count { out += "  … \(flows.count - shown.count) more (--top 0 lists all)\n" }
    }

    out += "\nframe sizes        outer    inner\n"
    for b in s.frameSizes where b.outerFrames > 0 || b.innerFrames > 0 {
        out += "  \(pad(b.range, 12)) \(pad(String(b.outerFrames), 8, left: true)) \(pad(String(b.innerFrames), 8, left: true))\n"
    }

    if s.tunnelFrames > 0 {
        let share = (s.overheadShare * 1000).rounded() / 10
        out += "\noverhead: \(s.overheadBytes) of \(s.wireBytes) wire bytes are encapsulation (\(share) %), "
        out += "\(s.overheadBytes / s.tunnelFrames) bytes per packet; inner frames carry \(s.innerBytes) bytes\n"
    }
    if !s.otherFrames.isEmpty || !s.malformedFrames.isEmpty {
        out += "\nnot decapsulated\n"
        for (name, count) in (s.otherFrames.merging(s.malformedFrames) { $0 + $1 }).sorted(by: { $0.key < $1.key }) {
            out += "  \(pad(name, 34)) \(pad(String(count), 6, left: true))\n"
        }
    }
    if !s.comments.isEmpty {
        let sorted = s.comments.sorted { ($0.value, $1.key) > ($1.value, $0.key) }
        out += "\npacket comments (\(s.comments.values.reduce(0, +)))\n"
        for (text, count) in sorted.prefix(top > 0 ? top : sorted.count) {
            out += "  \(pad(String(count), 6, left: true))  \(text)\n"
        }
        if top > 0, sorted.count > top { out += "  … \(sorted.count - top) more (--top 0 lists all)\n" }
    }
    let hints = lookalikeHints(s.vxlanLookalikes)
    if !hints.isEmpty { out += "\n" + hints.joined(separator: "\n") + "\n" }
    return out
}
