import FerryWire

/// What `ferry pcap inspect` learns from a capture: tunnels, inner flows, frame sizes, and what
/// the encapsulation cost. Built one frame at a time; kept small enough for any capture.
struct CaptureSummary: Encodable {
    struct Tunnel: Encodable {
        var type: String
        var outerSource: String
        var outerDestination: String
        var destinationPort: Int?
        var vni: UInt32?
        var key: UInt32?
        var packets = 0
        var wireBytes = 0
        var innerBytes = 0
        var distinctSourcePorts = 0
        var udpChecksums: [String: Int] = [:]
        var sourcePorts: Set<UInt16> = []

        enum CodingKeys: String, CodingKey {
            case type, outerSource, outerDestination, destinationPort, vni, key, packets, wireBytes, innerBytes,
                 distinctSourcePorts, udpChecksums
        }
    }

    struct Flow: Codable {
        var description: String
        var packets = 0
        var bytes = 0
    }

    struct Bucket: Codable {
        var range: String
        var outerFrames = 0
        var innerFrames = 0
    }

    var frames = 0
    var filteredOut = 0
    var tunnelFrames = 0
    /// Frames that are not tunnel traffic (another protocol or port), by reason.
    var otherFrames: [String: Int] = [:]
    /// Frames that look like tunnel traffic but are malformed, by reason.
    var malformedFrames: [String: Int] = [:]
    var tunnels: [Tunnel] = []
    var innerFlows: [Flow] = []
    var frameSizes: [Bucket] = Self.bucketBounds.map { Bucket(range: $0.label) }
    var wireBytes = 0
    var innerBytes = 0
    var overheadBytes: Int { wireBytes - innerBytes }
    /// Overhead as a share of the tunnel frames' wire bytes.
    var overheadShare: Double { wireBytes == 0 ? 0 : Double(overheadBytes) / Double(wireBytes) }

    private var tunnelIndex: [String: Int] = [:]
    private var flowIndex: [String: Int] = [:]

    enum CodingKeys: String, CodingKey {
        case frames, filteredOut, tunnelFrames, otherFrames, malformedFrames, tunnels, innerFlows, frameSizes,
             wireBytes, innerBytes, overheadBytes, overheadShare
    }

    init() {}

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(frames, forKey: .frames)
        try c.encode(filteredOut, forKey: .filteredOut)
        try c.encode(tunnelFrames, forKey: .tunnelFrames)
        try c.encode(otherFrames, forKey: .otherFrames)
        try c.encode(malformedFrames, forKey: .malformedFrames)
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

    mutating func add(frame: UnsafeRawBufferPointer, wireLength: Int, result: DecapsulationResult) {
        frames += 1
        frameSizes[Self.bucket(wireLength)].outerFrames += 1
        switch result {
        case .drop(let reason):
            if Self.notTunnelTraffic.contains(reason) {
                otherFrames[reason.name, default: 0] += 1
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

            let flow = describeFlow(inner)
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

/// One line naming an inner frame's flow: protocol, addresses and ports.
func describeFlow(_ frame: UnsafeRawBufferPointer) -> String {
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
