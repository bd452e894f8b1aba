import FerryCapture
import FerryWire

/// What `ferry pcap inspect` learns from a capture: tunnels, inner flows, frame sizes, and what
/// the encapsulation cost. Built one frame at a time (`summarizeCapture` reads a file into one);
/// kept small enough for any capture. Its JSON is what `ferry pcap inspect --json` prints.
public struct CaptureSummary: Encodable, Sendable {
    /// The packets of one tunnel: one kind, outer source and destination, port and VNI or key.
    public struct Tunnel: Encodable, Sendable {
        /// `vxlan` or `gre`.
        public internal(set) var type: String
        public internal(set) var outerSource: String
        public internal(set) var outerDestination: String
        /// VXLAN's UDP destination port; nil for GRE.
        public internal(set) var destinationPort: Int?
        public internal(set) var vni: UInt32?
        public internal(set) var key: UInt32?
        public internal(set) var packets = 0
        public internal(set) var wireBytes = 0
        public internal(set) var innerBytes = 0
        /// How many outer UDP source ports carried it (the sender's flow entropy); VXLAN only.
        public internal(set) var distinctSourcePorts = 0
        /// Outer UDP checksum verdicts (`ChecksumStatus` raw values) and their counts; VXLAN only.
        public internal(set) var udpChecksums: [String: Int] = [:]
        var sourcePorts: Set<UInt16> = []

        enum CodingKeys: String, CodingKey {
            case type, outerSource, outerDestination, destinationPort, vni, key, packets, wireBytes, innerBytes,
                 distinctSourcePorts, udpChecksums
        }
    }

    /// One inner flow (`flowDescription(of:)`) and what it carried.
    public struct Flow: Codable, Sendable {
        public internal(set) var description: String
        public internal(set) var packets = 0
        public internal(set) var bytes = 0
    }

    /// Frames of a size range (`range`, as "65-127"), outer and inner.
    public struct Bucket: Codable, Sendable {
        public internal(set) var range: String
        public internal(set) var outerFrames = 0
        public internal(set) var innerFrames = 0
    }

    /// Frames looked at: those that matched the filter.
    public internal(set) var frames = 0
    /// Frames that did not match the filter, and were not looked at further.
    public internal(set) var filteredOut = 0
    public internal(set) var tunnelFrames = 0
    /// Frames that are not tunnel traffic (another protocol or port), by reason.
    public internal(set) var otherFrames: [String: Int] = [:]
    /// Frames that look like tunnel traffic but are malformed, by reason.
    public internal(set) var malformedFrames: [String: Int] = [:]
    /// UDP datagrams to a port not looked at whose payload reads as VXLAN, by that port (as
    /// text, for JSON): `--dstport` reads them (`vxlanLookalikePort(of:)`).
    public internal(set) var vxlanLookalikes: [String: Int] = [:]
    /// pcapng packet comments (Ferry's drops capture says there why each was dropped), by text,
    /// of the frames looked at.
    public internal(set) var comments: [String: Int] = [:]
    /// In the order first seen.
    public internal(set) var tunnels: [Tunnel] = []
    /// In the order first seen.
    public internal(set) var innerFlows: [Flow] = []
    public internal(set) var frameSizes: [Bucket] = Self.bucketBounds.map { Bucket(range: $0.label) }
    /// The tunnel frames' bytes on the wire, and their inner frames' (true lengths, even where
    /// the capture cut the frame).
    public internal(set) var wireBytes = 0
    public internal(set) var innerBytes = 0
    public var overheadBytes: Int { wireBytes - innerBytes }
    /// Overhead as a share of the tunnel frames' wire bytes.
    public var overheadShare: Double { wireBytes == 0 ? 0 : Double(overheadBytes) / Double(wireBytes) }

    private var tunnelIndex: [String: Int] = [:]
    private var flowIndex: [String: Int] = [:]

    enum CodingKeys: String, CodingKey {
        case frames, filteredOut, tunnelFrames, otherFrames, malformedFrames, vxlanLookalikes, comments, tunnels, innerFlows, frameSizes,
             wireBytes, innerBytes, overheadBytes, overheadShare
    }

    public init() {}

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(frames, forKey: .frames)
        try c.encode(filteredOut, forKey: .filteredOut)
        try c.encode(tunnelFrames, forKey: .tunnelFrames)
        try c.encode(otherFrames, forKey: .otherFrames)
        try c.encode(malformedFrames, forKey: .malformedFrames)
        try c.encode(vxlanLookalikes, forKey: .vxlanLookalikes)
        try c.encode(comments, forKey: .comments)
        try c.encode(tunnels, forKey: .tunnels)
        try c.encode(innerFlows, forKey: .innerFlows)
        try c.encode(frameSizes, forKey: .frameSizes)
        try c.encode(wireBytes, forKey: .wireBytes)
        try c.encode(innerBytes, forKey: .innerBytes)
        try c.encode(overheadBytes, forKey: .overheadBytes)
        try c.encode((overheadShare * 10000).rounded() / 10000, forKey: .overheadShare)
    }

    static let bucketBounds: [(upTo: Int, label: String)] = [
        (64, "<=64"), (127, "65-127"), (255, "128-255"), (511, "256-511"), (1023, "512-1023"),
        (1518, "1024-1518"), (9022, "1519-9022"), (Int.max, ">9022"),
    ]

    static func bucket(_ size: Int) -> Int { bucketBounds.firstIndex { size <= $0.upTo }! }

    /// Reasons that mean "some other traffic", as opposed to a broken tunnel packet.
    static let notTunnelTraffic: Set<DropReason> = [.notIPUnderlay, .notTunnelProtocol, .notTunnelPort]

    /// Counts the comments of a frame looked at.
    public mutating func add(comments list: [String]) {
        for c in list { comments[c, default: 0] += 1 }
    }

    /// Counts a frame that a filter left out (it counts in `filteredOut` only, not in `frames`).
    public mutating func addFilteredOut() {
        filteredOut += 1
    }

    /// Counts one frame: its captured bytes, its length on the wire, and what decapsulating it
    /// gave (with `inner` within `frame`).
    public mutating func add(frame: UnsafeRawBufferPointer, wireLength: Int, result: DecapsulationResult) {
        frames += 1
        frameSizes[Self.bucket(wireLength)].outerFrames += 1
        switch result {
        case .drop(let reason):
            if Self.notTunnelTraffic.contains(reason) {
                otherFrames[reason.name, default: 0] += 1
                if reason == .notTunnelPort, let port = vxlanLookalikePort(of: frame) {
                    vxlanLookalikes[String(port), default: 0] += 1
                }
            } else {
                malformedFrames[reason.name, default: 0] += 1
            }
        case .packet(let p):
            tunnelFrames += 1
            let inner = UnsafeRawBufferPointer(rebasing: frame[p.inner])
            // The inner frame's true length: the capture may have cut the outer one.
            let innerLength = inner.count + (wireLength - frame.count)
            wireBytes += wireLength
            innerBytes += innerLength
            frameSizes[Self.bucket(innerLength)].innerFrames += 1

            let tunnelKey = "\(p.kind) \(p.outerSource) \(p.outerDestination) \(p.destinationPort) \(p.tunnelID ?? 0) \(p.greKey == nil)"
            let t = tunnelIndex[tunnelKey] ?? {
                tunnels.append(Tunnel(type: p.kind.rawValue, outerSource: "\(p.outerSource)",
                                      outerDestination: "\(p.outerDestination)",
                                      destinationPort: p.kind == .vxlan ? Int(p.destinationPort) : nil,
                                      vni: p.vni, key: p.greKey))
                tunnelIndex[tunnelKey] = tunnels.count - 1
                return tunnels.count - 1
            }()
            tunnels[t].packets += 1
            tunnels[t].wireBytes += wireLength
            tunnels[t].innerBytes += innerLength
            if p.kind == .vxlan {
                tunnels[t].udpChecksums[p.udpChecksum.rawValue, default: 0] += 1
                tunnels[t].sourcePorts.insert(p.sourcePort)
                tunnels[t].distinctSourcePorts = tunnels[t].sourcePorts.count
            }

            let flow = Self.flowDescription(of: inner)
            let f = flowIndex[flow] ?? {
                innerFlows.append(Flow(description: flow))
                flowIndex[flow] = innerFlows.count - 1
                return innerFlows.count - 1
            }()
            innerFlows[f].packets += 1
            innerFlows[f].bytes += innerLength
        }
    }
}

extension CaptureSummary {
    /// One line naming an inner frame's flow: protocol, addresses and ports.
    public static func flowDescription(of frame: UnsafeRawBufferPointer) -> String {
        guard let eth = EthernetView(frame) else { return "runt frame" }
        let vlan = eth.vlanID.map { "vlan \($0) " } ?? ""
        let payload = eth.payload
        func ports(_ proto: UInt8, _ l4: UnsafeRawBufferPointer, _ s: String, _ d: String) -> String {
            switch proto {
            case IPProtocol.tcp where l4.count >= 4: "tcp \(s):\(l4.u16(0)) > \(d):\(l4.u16(2))"
            case IPProtocol.udp where l4.count >= 4: "udp \(s):\(l4.u16(0)) > \(d):\(l4.u16(2))"
            case IPProtocol.icmp: "icmp \(s) > \(d)"
            case IPProtocol.icmpv6: "icmp6 \(s) > \(d)"
            case IPProtocol.gre: "gre \(s) > \(d)"
            default: "ip proto \(proto) \(s) > \(d)"
            }
        }
        switch eth.etherType {
        case EtherType.arp:
            if let arp = ARPView(payload) { return vlan + "arp \(arp.senderIP) > \(arp.targetIP)" }
        case EtherType.ipv4:
            if let ip = IPv4View(payload), ip.headerLength >= 20, ip.headerLength <= payload.count {
                let l4 = UnsafeRawBufferPointer(rebasing: payload[ip.headerLength...])
                return vlan + ports(ip.protocol, ip.isFragment ? UnsafeRawBufferPointer(start: nil, count: 0) : l4,
                                    "\(ip.source)", "\(ip.destination)")
            }
        case EtherType.ipv6:
            if let ip = IPv6View(payload), let upper = IPv6.upperLayer(of: payload) {
                let l4 = UnsafeRawBufferPointer(rebasing: payload[upper.offset...])
                return vlan + ports(upper.protocol, l4, "[\(ip.source)]", "[\(ip.destination)]")
            }
        default:
            break
        }
        return vlan + "ethertype 0x\(String(eth.etherType, radix: 16)) \(eth.source) > \(eth.destination)"
    }
}

/// The longest frame a cut-short record is padded back to: the largest IP packet behind an
/// Ethernet header and two VLAN tags. (A capture's `len` field may say anything.)
let maximumPaddedFrame = 65_535 + Ethernet.headerLength + 2 * Ethernet.vlanTagLength

/// Reads the capture at `path` into a summary: every frame that matches `filter` (all without
/// one) is decapsulated, VXLAN looked for on `vxlanPort` (nil: on 4789 and Linux's 8472).
///
/// A frame the capture cut short (tcpdump -s) is judged at its length on the wire: padded back
/// to it, with the checksums over what is missing left unchecked, and its inner frame counted at
/// its true length.
public func summarizeCapture(path: String, filter: PacketFilter? = nil,
                             vxlanPort: UInt16? = nil) throws(CaptureError) -> CaptureSummary {
    let reader = try PcapFileReader(path: path)
    let decapsulator = Decapsulator(policy: .forCaptures(port: vxlanPort, udpChecksum: .report))
    let cut = Decapsulator(policy: .forCaptures(port: vxlanPort, udpChecksum: .ignore, verifyGREChecksum: false))
    var padded: [UInt8] = []
    var summary = CaptureSummary()
    // libpcap reads pcapng but hands over no comments: a second reading, block by block, finds
    // them, one list a packet in the order libpcap gives the packets.
    let comments = PcapngCommentReader(path: path)
    while let frame = try reader.next() {
        let frameComments = comments?.next() ?? []
        if let filter, !filter.matches(frame) { summary.addFilteredOut(); continue }
        summary.add(comments: frameComments)
        var result: DecapsulationResult
        if frame.isTruncated {
            // The length on the wire is the file's word only: padded no further than the
            // largest frame an IP packet makes, however large a forged header says it was.
            padded.removeAll(keepingCapacity: true)
            padded.append(contentsOf: frame.bytes)
            let wire = min(frame.originalLength, maximumPaddedFrame)
            if wire > frame.bytes.count { padded.append(contentsOf: repeatElement(0, count: wire - frame.bytes.count)) }
            result = padded.withUnsafeBytes { cut.decapsulate(frame: $0) }
            if case .packet(var p) = result {
                p.inner = p.inner.clamped(to: 0..<frame.bytes.count)
                p.udpChecksum = .notChecked
                result = .packet(p)
            }
        } else {
            result = decapsulator.decapsulate(frame: frame.bytes)
        }
        summary.add(frame: frame.bytes, wireLength: frame.originalLength, result: result)
    }
    return summary
}
