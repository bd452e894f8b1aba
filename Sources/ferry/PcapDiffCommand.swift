import ArgumentParser
import FerryPcapTools
import FerrySettings

struct PcapDiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Match the frames of two captures of the same traffic and say, per flow, what was lost, altered, duplicated or reordered.",
        discussion: """
            A and B are captures taken on the two sides of a tunnel, or before and after Ferry. A capture \
            that holds tunnel packets (VXLAN on 4789 and 8472 unless --dstport says otherwise, GRE) is \
            decapsulated and its inner frames compared; one without is compared frame for frame. A frame \
            is identified by what a tunnel does not change: addresses, IP ID, the L4 header's ports, \
            sequence numbers and flags (or ICMP's identifier and sequence) and a digest of the payload; \
            TTL, DSCP/ECN, checksums and Ethernet addresses are compared but do not identify. Frames \
            whose payload or addresses changed are paired on the rest and shown as altered. A flow's \
            direction is the side that saw its frames first; one-way delays are the receiver's \
            timestamps minus the sender's, believable only if both clocks agree (negative delays say \
            they do not).
            """
    )

    @Option(name: .long, help: "VXLAN UDP destination port (default: 4789 and Linux's 8472).", transform: Parse.port)
    var dstport: UInt16?

    @Flag(name: .long, help: "Print the comparison as JSON.")
    var json = false

    @Option(name: .long, help: "Frame numbers to list per flow and kind (0 for all).")
    var top = 10

    @OptionGroup var filter: FilterOptions

    @Argument(help: ArgumentHelp("The first capture (a sender's side, say).", valueName: "a"))
    var a: String

    @Argument(help: ArgumentHelp("The second capture.", valueName: "b"))
    var b: String

    func run() throws {
        let diff = try diffCaptures(a: a, b: b, vxlanPort: dstport, filter: try filter.compiled())
        if json {
            print(try jsonString(diff))
        } else {
            print(renderDiff(diff, top: top), terminator: "")
        }
    }
}

func renderDiff(_ d: CaptureDiff, top: Int) -> String {
    func side(_ name: String, _ s: CaptureDiff.Side) -> String {
        var line = "\(name): \(s.path): \(s.frames) frames"
        if s.form == "tunnel" {
            line += ", \(s.compared) inner frames (" + s.tunnels.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
                .joined(separator: ", ") + ")"
            let left = s.leftOut.values.reduce(0, +)
            if left > 0 {
                line += "; \(left) left out (" + s.leftOut.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                    .joined(separator: ", ") + ")"
            }
        } else {
            line += ", no tunnel packets: compared as they are"
        }
        if s.filteredOut > 0 { line += "; \(s.filteredOut) did not match the filter" }
        return line + "\n"
    }
    func numbers(_ list: [Int], _ capture: String) -> String {
        let shown = top > 0 ? list.prefix(top) : list[...]
        return shown.map { "\(capture)#\($0)" }.joined(separator: " ") + (shown.count < list.count ? " …" : "")
    }
    func µs(_ v: Int64) -> String { v >= 10_000 ? "\((Double(v) / 100).rounded() / 10) ms" : "\(v) µs" }

    var out = side("A", d.a) + side("B", d.b)
    out += "matched \(d.matched); lost \(d.lost), altered \(d.altered), duplicated \(d.duplicated), reordered \(d.reordered)"
    out += d.unexpected > 0 ? ", unexpected \(d.unexpected)\n" : "\n"
    if !d.alteredFields.isEmpty {
        out += "altered fields: " + d.alteredFields.sorted { ($0.value, $1.key) > ($1.value, $0.key) }
            .map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n"
    }
    for f in d.flows {
        let (sender, receiver) = f.direction == "b>a" ? ("B", "A") : ("A", "B")
        let arrow = f.direction.map { $0 == "a>b" ? "A→B" : "B→A" } ?? (f.inA > 0 ? "only in A" : "only in B")
        out += "\nflow \(f.flow) (\(arrow)): \(f.inA) in A, \(f.inB) in B, \(f.matched) matched\n"
        if !f.lost.isEmpty {
            out += "  lost \(f.lost.count): \(numbers(f.lost, f.direction == nil ? (f.inA > 0 ? "A" : "B") : sender))\n"
        }
        if !f.unexpected.isEmpty {
            out += "  \(f.direction == nil ? "only in B" : "not sent") \(f.unexpected.count): \(numbers(f.unexpected, f.direction == nil ? "B" : receiver))\n"
        }
        if !f.duplicated.isEmpty { out += "  duplicated \(f.duplicated.count): \(numbers(f.duplicated, receiver))\n" }
        if !f.reordered.isEmpty { out += "  reordered \(f.reordered.count): \(numbers(f.reordered, receiver))\n" }
        if !f.altered.isEmpty {
            out += "  altered \(f.altered.count): " + f.alteredFields.sorted { ($0.value, $1.key) > ($1.value, $0.key) }
                .map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n"
            for alt in top > 0 ? f.altered.prefix(top) : f.altered[...] {
                out += "    A#\(alt.a) B#\(alt.b): " + alt.fields.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                    .joined(separator: "; ") + "\n"
            }
        }
        if let delays = f.delays {
            out += "  one-way delay \(sender)→\(receiver): p50 \(µs(delays.p50)), p99 \(µs(delays.p99)), max \(µs(delays.maximum))"
            out += delays.negative > 0 ? " (\(delays.negative) negative: the clocks differ)\n" : "\n"
        }
    }
    if !d.clocksComparable {
        out += "\nnote: some one-way delays are negative: the two captures' clocks are not comparable (taken on hosts whose clocks differ); the delays include the offset\n"
    }
    return out
}
