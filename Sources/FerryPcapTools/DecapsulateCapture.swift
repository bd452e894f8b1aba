import FerryCapture
import FerryWire

/// What `decapsulateCapture` did with a capture; its JSON is what `ferry pcap decap --json`
/// prints.
public struct DecapsulationReport: Codable, Sendable, Equatable {
    /// Frames read, the filtered-out ones included.
    public internal(set) var frames = 0
    /// Frames that did not match the filter.
    public internal(set) var filteredOut = 0
    /// Inner frames written.
    public internal(set) var decapsulated = 0
    /// Frames left out, by drop reason name (`DropReason.name`); only reasons that counted.
    public internal(set) var dropped: [String: Int] = [:]
    /// Outer UDP checksum verdicts of the VXLAN packets kept, by `ChecksumStatus` raw value.
    public internal(set) var udpChecksums: [String: Int] = [:]
    /// Inner frames written per tunnel (`tunnelLabel(_:)`).
    public internal(set) var byTunnel: [String: Int] = [:]
    /// Datagrams left out as `not_tunnel_port` whose payload reads as VXLAN, by port (as text).
    public internal(set) var vxlanLookalikes: [String: Int] = [:]

    public init() {}
}

/// Reads `input`, writes the inner frame of each tunnel packet that `policy` admits to `output`
/// (timestamps kept), and counts the rest under their drop reasons. Only frames that match
/// `filter` are looked at. The output is not created if the input cannot be opened.
public func decapsulateCapture(input: String, output: String, policy: DecapsulationPolicy,
                               filter: PacketFilter? = nil) throws(CaptureError) -> DecapsulationReport {
    let decapsulator = Decapsulator(policy: policy)
    let reader = try PcapFileReader(path: input)
    let writer = try PcapFileWriter(path: output)

    var report = DecapsulationReport()
    var drops = [Int](repeating: 0, count: DropReason.allCases.count)
    while let frame = try reader.next() {
        report.frames += 1
        if let filter, !filter.matches(frame) { report.filteredOut += 1; continue }
        switch decapsulator.decapsulate(frame: frame.bytes) {
        case .drop(let reason):
            drops[Int(reason.rawValue)] += 1
            if reason == .notTunnelPort, let port = vxlanLookalikePort(of: frame.bytes) {
                report.vxlanLookalikes[String(port), default: 0] += 1
            }
        case .packet(let p):
            writer.write(UnsafeRawBufferPointer(rebasing: frame.bytes[p.inner]), timestamp: frame.timestamp)
            report.decapsulated += 1
            if p.kind == .vxlan { report.udpChecksums[p.udpChecksum.rawValue, default: 0] += 1 }
            report.byTunnel[tunnelLabel(p), default: 0] += 1
        }
    }
    try writer.close()
    for reason in DropReason.allCases where drops[Int(reason.rawValue)] > 0 {
        report.dropped[reason.name] = drops[Int(reason.rawValue)]
    }
    return report
}

/// A packet's tunnel in a few words: "vxlan vni 42", "gre key 7", "gre (no key)".
public func tunnelLabel(_ p: DecapsulatedPacket) -> String {
    switch p.kind {
    case .vxlan: "vxlan vni \(p.vni ?? 0)"
    case .gre: p.greKey.map { "gre key \($0)" } ?? "gre (no key)"
    }
}
