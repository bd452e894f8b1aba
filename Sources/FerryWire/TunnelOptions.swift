// What one tunnel to one peer looks like on the wire: the options a user gives Ferry (as they
// would give the kernel's `ip link add type vxlan` or an OVS tunnel port), checked once.

public enum TunnelKind: String, Sendable, CaseIterable, Codable {
    case vxlan
    case gre
}

/// GRE's optional fields (RFC 2890). Open vSwitch's `gre` port with `key=42` is
/// `GREOptions(key: 42)`.
public struct GREOptions: Hashable, Sendable {
    public var key: UInt32?
    public var checksum: Bool
    public var sequence: Bool
    public init(key: UInt32? = nil, checksum: Bool = false, sequence: Bool = false) {
        self.key = key
        self.checksum = checksum
        self.sequence = sequence
    }
    public var headerLength: Int { GRE.headerLength(checksum: checksum, key: key != nil, sequence: sequence) }
}

public enum Encapsulation: Hashable, Sendable {
    case vxlan(vni: UInt32)
    case gre(GREOptions)

    public var kind: TunnelKind {
        switch self {
        case .vxlan: .vxlan
        case .gre: .gre
        }
    }

    /// The tunnel header alone: what goes in front of the inner frame in a UDP or raw-IP
    /// socket's payload.
    public var tunnelHeaderLength: Int {
        switch self {
        case .vxlan: VXLAN.headerLength
        case .gre(let g): g.headerLength
        }
    }

    /// Transport plus tunnel header (UDP + VXLAN, or GRE).
    public var transportHeaderLength: Int {
        switch self {
        case .vxlan: UDP.headerLength + VXLAN.headerLength
        case .gre(let g): g.headerLength
        }
    }
}

/// How the outer TOS / traffic class is chosen.
public enum TOSPolicy: Hashable, Sendable {
    case fixed(UInt8)
    /// Copy the inner IP packet's TOS (0 for non-IP frames), as `tos inherit` in Linux.
    case inherit
}

/// How the outer IPv4 DF bit is chosen. (IPv6 never fragments in flight.)
public enum DFPolicy: String, Hashable, Sendable, CaseIterable {
    case set, unset, inherit
}

public struct TunnelOptions: Hashable, Sendable {
    public var encapsulation: Encapsulation
    public var local: IPAddress
    public var remote: IPAddress
    /// UDP destination port for VXLAN.
    public var destinationPort: UInt16
    /// UDP source ports are a hash of the inner flow within this range (Open vSwitch uses
    /// 32768–61000, Linux the local ephemeral range).
    public var sourcePortRange: ClosedRange<UInt16>
    public var ttl: UInt8
    public var tos: TOSPolicy
    public var dontFragment: DFPolicy
    /// UDP checksum on the outer header. Defaults to off over IPv4 (as Linux's `udpcsum`
    /// default) and on over IPv6 (RFC 8200 requires it but for RFC 6935's tunnel exception).
    public var udpChecksum: Bool
    /// Link-layer addresses for the full-frame form (pcap output, AF_PACKET).
    public var localMAC: MACAddress
    public var remoteMAC: MACAddress

    public static let defaultSourcePortRange: ClosedRange<UInt16> = 32768...61000

    public init(encapsulation: Encapsulation, local: IPAddress, remote: IPAddress,
                destinationPort: UInt16 = VXLAN.defaultPort,
                sourcePortRange: ClosedRange<UInt16> = TunnelOptions.defaultSourcePortRange,
                ttl: UInt8 = 64, tos: TOSPolicy = .fixed(0), dontFragment: DFPolicy = .unset,
                udpChecksum: Bool? = nil,
                localMAC: MACAddress = MACAddress(0x02, 0, 0, 0, 0, 0x01),
                remoteMAC: MACAddress = MACAddress(0x02, 0, 0, 0, 0, 0x02)) throws(TunnelOptionsError) {
        guard local.isIPv6 == remote.isIPv6 else {
            throw .mixedAddressFamilies(local: local, remote: remote)
        }
        if case .vxlan(let vni) = encapsulation, vni > VXLAN.maximumVNI {
            throw .vniOutOfRange(vni)
        }
        guard ttl > 0 else { throw .zeroTTL }
        self.encapsulation = encapsulation
        self.local = local
        self.remote = remote
        self.destinationPort = destinationPort
        self.sourcePortRange = sourcePortRange
        self.ttl = ttl
        self.tos = tos
        self.dontFragment = dontFragment
        self.udpChecksum = udpChecksum ?? local.isIPv6
        self.localMAC = localMAC
        self.remoteMAC = remoteMAC
    }

    /// Outer IP header length.
    public var ipHeaderLength: Int { local.isIPv6 ? IPv6.headerLength : IPv4.minimumHeaderLength }

    /// Everything in front of the inner frame in a full outer frame.
    public var fullHeaderLength: Int {
        Ethernet.headerLength + ipHeaderLength + encapsulation.transportHeaderLength
    }

    /// Bytes added to each inner frame at the IP layer (what the underlay MTU must absorb).
    public var ipOverhead: Int { ipHeaderLength + encapsulation.transportHeaderLength }

    /// The largest inner frame one outer packet can carry: the IPv4 total length, or the IPv6
    /// payload length, is 16 bits.
    public var maximumInnerFrameLength: Int {
        Int(UInt16.max) - (local.isIPv6 ? 0 : IPv4.minimumHeaderLength) - encapsulation.transportHeaderLength
    }
}

public enum TunnelOptionsError: Error, Equatable, CustomStringConvertible {
    case mixedAddressFamilies(local: IPAddress, remote: IPAddress)
    case vniOutOfRange(UInt32)
    case zeroTTL

    public var description: String {
        switch self {
        case .mixedAddressFamilies(let l, let r):
            "local address \(l) and remote address \(r) are of different IP versions; give both as IPv4 or both as IPv6"
        case .vniOutOfRange(let v):
            "VNI \(v) does not fit in 24 bits; use a VNI from 0 to \(VXLAN.maximumVNI)"
        case .zeroTTL:
            "a TTL of 0 would be dropped by the first hop; use 1 to 255 (64 is usual)"
        }
    }
}
