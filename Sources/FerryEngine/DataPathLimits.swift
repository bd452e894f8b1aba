import FerryWire

/// What the engine works out at start from the configuration, the host and the offloads in
/// use, for every worker: the sizes buffers are made for and facts about the underlay. The
/// configuration stays what was asked for; these are what follows from it here.
public struct DataPathLimits: Sendable {
    /// The underlay's MTU at start: the configured one, or that of the interface holding the
    /// local address. When not configured, the engine follows its changes
    /// (`ForwardingState.underlayMTU` is the one in use).
    public var underlayMTU: Int
    /// The largest frame a buffer holds, virtio-net header included: the TAP's MTU (or 64 KiB
    /// with super-frames) plus an Ethernet header and a VLAN tag.
    public var maximumFrame: Int
    /// The underlay interface's MAC: the source of captured outer frames.
    public var localMAC: MACAddress
    /// Received segments of a flow are joined into super-frames for a TAP with a virtio-net
    /// header (`Offloads.genericReceive`); off, each goes to the TAP as it came.
    public var joinsReceivedSegments: Bool
    /// The TAP's MTU, once the engine has set it (nil: `defaultTAPMTU`). A decapsulated frame
    /// longer than it (and an Ethernet header and a VLAN tag) is one the bridge would drop
    /// unseen, unless it is a super-frame the TAP writer cuts (a partial checksum).
    public var tapMTU: Int?

    /// Limits for `configuration` on an underlay of `underlayMTU` (its configured one, else 1500),
    /// with buffers for 64 KiB frames: what tests and tools use without a host to ask.
    public init(configuration: EngineConfiguration, underlayMTU: Int? = nil, maximumFrame: Int = 65535,
                localMAC: MACAddress = .zero, joinsReceivedSegments: Bool = true) {
        self.underlayMTU = underlayMTU ?? configuration.underlayMTU ?? 1500
        self.maximumFrame = maximumFrame
        self.localMAC = localMAC
        self.joinsReceivedSegments = joinsReceivedSegments
    }

    /// The TAP's MTU that makes every full-size frame fit the underlay: the underlay MTU less
    /// the outer headers and the inner Ethernet header (1450 for VXLAN over IPv4 on 1500).
    public func defaultTAPMTU(_ configuration: EngineConfiguration) -> Int {
        underlayMTU - configuration.ipOverhead - Ethernet.headerLength
    }

    /// The largest outer IP packet: the underlay's MTU, and never more than an IP length field
    /// holds (lo has 65536).
    public var maximumIPPacket: Int { min(underlayMTU, 65535) }
}
