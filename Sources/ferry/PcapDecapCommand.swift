import ArgumentParser
import FerryCapture
import FerryPcapTools
import FerryWire
import FerrySettings
import Foundation

struct PcapDecapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decap",
        abstract: "Unwrap VXLAN and GRE frames of a capture into their inner Ethernet frames.",
        discussion: """
            VXLAN and GRE, over IPv4 and IPv6, may be mixed; every VNI and key is accepted unless \
            --vni or --key asks for one. Each frame that is not a valid tunnel packet is counted under \
            its reason and left out. Outer UDP checksums are verified and reported; a partial checksum \
            (the sender's checksum offload, seen in captures taken on the sending host) is not a drop \
            unless --strict-checksums is given.
            """
    )

    @Option(name: .long, help: "Accept only this VXLAN network identifier.", transform: Parse.vni)
    var vni: UInt32?

    @Option(name: .long, help: "Accept only GRE packets with this key.", transform: Parse.key)
    var key: UInt32?

    @Option(name: .long, help: "VXLAN UDP destination port (default: 4789 and Linux's 8472).", transform: Parse.port)
    var dstport: UInt16?

    @Flag(name: .long, help: "Drop packets whose outer UDP checksum does not verify, partial ones included.")
    var strictChecksums = false

    @Flag(name: .long, help: "Print the counts as JSON.")
    var json = false

    @OptionGroup var filter: FilterOptions

    @Argument(help: ArgumentHelp("Capture of encapsulated frames.", valueName: "in"))
    var input: String

    @Argument(help: ArgumentHelp("Capture of inner frames to write.", valueName: "out"))
    var output: String

    func run() throws {
        var policy = DecapsulationPolicy.forCaptures(port: dstport, udpChecksum: strictChecksums ? .verify : .report)
        policy.vni = vni
        policy.greKey = key
        let report = try decapsulateCapture(input: input, output: output, policy: policy, filter: try filter.compiled())
        if json {
            print(try jsonString(report))
            return
        }
        print("read \(report.frames) frames; decapsulated \(report.decapsulated)"
              + (report.filteredOut > 0 ? "; \(report.filteredOut) did not match the filter" : ""))
        for (label, count) in report.byTunnel.sorted(by: { $0.key < $1.key }) {
            print("  \(label): \(count)")
        }
        let dropped = report.dropped.values.reduce(0, +)
        if dropped > 0 {
            print("dropped \(dropped):")
            for reason in DropReason.allCases {
                guard let count = report.dropped[reason.name] else { continue }
                print("  \(pad(reason.name, 34)) \(pad(String(count), 6, left: true))  \(reason.summary)")
            }
        }
        if let partial = report.udpChecksums[ChecksumStatus.partial.rawValue] {
            print("note: \(partial) packets carried a partial outer UDP checksum: the capture was taken on a sender with checksum offload (not a wire error)")
        }
        for line in lookalikeHints(report.vxlanLookalikes) { print(line) }
        if let invalid = report.udpChecksums[ChecksumStatus.invalid.rawValue] {
            print("warning: \(invalid) packets have an outer UDP checksum that does not verify (kept; --strict-checksums drops them)")
        }
    }
}

/// "note: N UDP datagrams to port P look like VXLAN: give --dstport P", busiest port first.
func lookalikeHints(_ ports: [String: Int]) -> [String] {
    ports.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { port, count in
        "note: \(count) UDP datagram\(count == 1 ? "" : "s") to port \(port) look\(count == 1 ? "s" : "") like VXLAN; "
            + "give --dstport \(port) to read \(count == 1 ? "it" : "them") as such"
    }
}

func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return left ? fill + s : s + fill
}

func jsonString<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
