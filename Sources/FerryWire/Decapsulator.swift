// Pop = validate cheapest first, then hand back a range. Nothing is copied: the inner frame is
// a range of the bytes given. Every refusal is exactly one `DropReason`.

/// What a decapsulator accepts.
public struct DecapsulationPolicy: Hashable, Sendable {
    /// How the outer UDP checksum is treated.
    public enum ChecksumCheck: Hashable, Sendable {
        /// Not computed (a socket already verified it, as the kernel does before delivery).
        case ignore
        /// A checksum that does not verify is a drop (`badUDPChecksum`).
        case verify
        /// Verified and reported in the result, but never a drop: for captures, where the
        /// sender's checksum offload leaves a partial sum on the wire that is not an error.
        case report
    }

    public var acceptVXLAN: Bool
    public var acceptGRE: Bool
    public var vxlanPort: UInt16
    /// A second port VXLAN is recognised on in whole frames, 0 for none: the offline tools take
    /// Linux's default (8472) as well as 4789 when no port is given.
    public var secondVXLANPort: UInt16 = 0
    /// The VNI to accept; nil accepts any.
    public var vni: UInt32?
    /// The GRE key to accept; nil accepts any key or none.
    public var greKey: UInt32?
    public var udpChecksum: ChecksumCheck
    /// Verify the GRE checksum when the C bit is set (off only for tools reading captures cut
    /// short by their snapshot length, where the payload it covers is not all there).
    public var verifyGREChecksum: Bool
    /// Under `.verify`, accept a zero UDP checksum over IPv6 (RFC 6935 allows it for tunnels
    /// when the receiver opts in, as Linux's `udp6zerocsumrx`). Off: such packets are dropped.
    public var acceptZeroIPv6Checksum: Bool

    public init(acceptVXLAN: Bool = true, acceptGRE: Bool = true, vxlanPort: UInt16 = VXLAN.defaultPort,
                vni: UInt32? = nil, greKey: UInt32? = nil, udpChecksum: ChecksumCheck = .verify,
                acceptZeroIPv6Checksum: Bool = false, verifyGREChecksum: Bool = true) {
        self.acceptVXLAN = acceptVXLAN
        self.acceptGRE = acceptGRE
        self.vxlanPort = vxlanPort
        self.vni = vni
        self.greKey = greKey
        self.udpChecksum = udpChecksum
        self.acceptZeroIPv6Checksum = acceptZeroIPv6Checksum
        self.verifyGREChecksum = verifyGREChecksum
    }

    /// For captures: VXLAN on `port`, or, when none is given, on 4789 and on Linux's default 8472.
    public static func forCaptures(port: UInt16?, udpChecksum: ChecksumCheck, verifyGREChecksum: Bool = true) -> DecapsulationPolicy {
        var p = DecapsulationPolicy(vxlanPort: port ?? VXLAN.defaultPort, udpChecksum: udpChecksum, verifyGREChecksum: verifyGREChecksum)
        if port == nil { p.secondVXLANPort = VXLAN.linuxDefaultPort }
        return p
    }
}

/// The state of the outer UDP checksum of a decapsulated packet.
public enum ChecksumStatus: String, Hashable, Sendable {
    /// GRE, or checks turned off.
    case notChecked
    /// Zero on the wire: the sender did not compute one (allowed for VXLAN, RFC 7348 §5).
    case absent
    case valid
    /// The field holds the folded pseudo-header sum, the value a sender with checksum offload
    /// leaves for the NIC to finish: seen in captures taken on the sender, not a wire error.
    case partial
    case invalid
}

/// A successfully decapsulated packet. `inner` indexes the bytes that were given.
public struct DecapsulatedPacket: Hashable, Sendable {
    public var kind: TunnelKind
    public var inner: Range<Int>
    public var outerSource: IPAddress
    public var outerDestination: IPAddress
    /// UDP ports for VXLAN, zero for GRE.
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var vni: UInt32?
    public var greKey: UInt32?
    public var greSequence: UInt32?
    public var greChecksumPresent: Bool
    public var ttl: UInt8
    public var tos: UInt8
    public var dontFragment: Bool
    public var udpChecksum: ChecksumStatus

    /// A packet with nothing parsed yet beyond its outer addresses.
    @inlinable
    public init(kind: TunnelKind, outerSource: IPAddress, outerDestination: IPAddress) {
        self.kind = kind
        self.inner = 0..<0
        self.outerSource = outerSource
        self.outerDestination = outerDestination
        self.sourcePort = 0
        self.destinationPort = 0
        self.greChecksumPresent = false
        self.ttl = 0
        self.tos = 0
        self.dontFragment = false
        self.udpChecksum = .notChecked
    }

    /// The VNI or GRE key, whichever this tunnel has.
    public var tunnelID: UInt32? { vni ?? greKey }
}

public enum DecapsulationResult: Hashable, Sendable {
    case packet(DecapsulatedPacket)
    case drop(DropReason)

    public var packet: DecapsulatedPacket? { if case .packet(let p) = self { p } else { nil } }
    public var dropReason: DropReason? { if case .drop(let r) = self { r } else { nil } }
}

public struct Decapsulator: Sendable {
    public var policy: DecapsulationPolicy
    public init(policy: DecapsulationPolicy = DecapsulationPolicy()) { self.policy = policy }

    /// From an outer Ethernet frame (a capture, AF_PACKET).
    @inlinable
    public func decapsulate(frame bytes: UnsafeRawBufferPointer) -> DecapsulationResult {
        guard let eth = EthernetView(bytes) else { return .drop(.truncatedEthernet) }
        let ip = eth.payloadOffset
        switch eth.etherType {
        case EtherType.ipv4, EtherType.ipv6:
            return decapsulate(ip: bytes, at: ip, expectIPv6: eth.etherType == EtherType.ipv6)
        default:
            return .drop(.notIPUnderlay)
        }
    }

    /// From an outer IP packet (a raw IPv4 socket delivers the header with the payload).
    @inlinable
    public func decapsulate(ipPacket bytes: UnsafeRawBufferPointer) -> DecapsulationResult {
        guard bytes.count >= 1 else { return .drop(.truncatedIP) }
        switch bytes[0] >> 4 {
        case 4: return decapsulate(ip: bytes, at: 0, expectIPv6: false)
        case 6: return decapsulate(ip: bytes, at: 0, expectIPv6: true)
        default: return .drop(.badIPVersion)
        }
    }

    /// From a UDP payload that a socket received from `source` to `destination` (the kernel
    /// has checked IP and UDP already).
    @inlinable
    public func decapsulate(vxlanPayload bytes: UnsafeRawBufferPointer, source: IPAddress,
                            destination: IPAddress, sourcePort: UInt16 = 0) -> DecapsulationResult {
        var packet = DecapsulatedPacket(kind: .vxlan, outerSource: source, outerDestination: destination)
        packet.sourcePort = sourcePort
        packet.destinationPort = policy.vxlanPort
        if let reason = popVXLAN(bytes, at: 0, end: bytes.count, into: &packet) { return .drop(reason) }
        return .packet(packet)
    }

    /// From a GRE header on (a raw IPv6 socket delivers no IP header).
    @inlinable
    public func decapsulate(grePayload bytes: UnsafeRawBufferPointer, source: IPAddress,
                            destination: IPAddress) -> DecapsulationResult {
        var packet = DecapsulatedPacket(kind: .gre, outerSource: source, outerDestination: destination)
        if let reason = popGRE(bytes, at: 0, end: bytes.count, into: &packet) { return .drop(reason) }
        return .packet(packet)
    }

    // MARK: - Layers

    @inlinable
    func decapsulate(ip bytes: UnsafeRawBufferPointer, at ip: Int, expectIPv6: Bool) -> DecapsulationResult {
        let available = bytes.count - ip
        guard available >= 1 else { return .drop(.truncatedIP) }
        let version = bytes[ip] >> 4
        let unspecified = IPAddress.v4(IPv4Address(value: 0))
        var packet = DecapsulatedPacket(kind: .vxlan, outerSource: unspecified, outerDestination: unspecified)
        let proto: UInt8
        let l4: Int
        let end: Int
        if !expectIPv6 {
            guard version == 4 else { return .drop(.badIPVersion) }
            guard available >= IPv4.minimumHeaderLength else { return .drop(.truncatedIP) }
            let headerLength = Int(bytes[ip] & 0x0F) * 4
            guard headerLength >= IPv4.minimumHeaderLength else { return .drop(.badIPv4HeaderLength) }
            let totalLength = Int(bytes.u16(ip + 2))
            guard totalLength >= headerLength else { return .drop(.badIPv4TotalLength) }
            // Bytes past totalLength are link padding (60-byte minimum frames) and are ignored.
            guard totalLength <= available else { return .drop(.truncatedIP) }
            guard InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: bytes[ip..<(ip + headerLength)]))
            else { return .drop(.badIPv4HeaderChecksum) }
            let flags = bytes.u16(ip + 6)
            guard flags & (IPv4.flagMoreFragments | IPv4.fragmentOffsetMask) == 0 else { return .drop(.outerFragment) }
            proto = bytes[ip + 9]
            packet.outerSource = .v4(IPv4Address(bytes, at: ip + 12))
            packet.outerDestination = .v4(IPv4Address(bytes, at: ip + 16))
            packet.ttl = bytes[ip + 8]
            packet.tos = bytes[ip + 1]
            packet.dontFragment = flags & IPv4.flagDontFragment != 0
            l4 = ip + headerLength
            end = ip + totalLength
        } else {
            guard version == 6 else { return .drop(.badIPVersion) }
            guard available >= IPv6.headerLength else { return .drop(.truncatedIP) }
            let payloadLength = Int(bytes.u16(ip + 4))
            guard payloadLength > 0 else { return .drop(.badIPv6PayloadLength) }
            guard IPv6.headerLength + payloadLength <= available else { return .drop(.truncatedIP) }
            end = ip + IPv6.headerLength + payloadLength
            let packetBytes = UnsafeRawBufferPointer(rebasing: bytes[ip..<end])
            guard let upper = IPv6.upperLayer(of: packetBytes) else { return .drop(.truncatedIPv6ExtensionHeaders) }
            guard !upper.isFragment else { return .drop(.outerFragment) }
            proto = upper.protocol
            packet.outerSource = .v6(IPv6Address(bytes, at: ip + 8))
            packet.outerDestination = .v6(IPv6Address(bytes, at: ip + 24))
            packet.ttl = bytes[ip + 7]
            packet.tos = UInt8(truncatingIfNeeded: bytes.u32(ip) >> 20)
            packet.dontFragment = true
            l4 = ip + upper.offset
        }

        switch proto {
        case IPProtocol.udp where policy.acceptVXLAN:
            if let reason = popUDP(bytes, at: l4, end: end, into: &packet) { return .drop(reason) }
        case IPProtocol.gre where policy.acceptGRE:
            packet.kind = .gre
            if let reason = popGRE(bytes, at: l4, end: end, into: &packet) { return .drop(reason) }
        default:
            return .drop(.notTunnelProtocol)
        }
        return .packet(packet)
    }

    @inlinable
    func popUDP(_ bytes: UnsafeRawBufferPointer, at udp: Int, end: Int,
                into packet: inout DecapsulatedPacket) -> DropReason? {
        guard end - udp >= UDP.headerLength else { return .truncatedUDP }
        let length = Int(bytes.u16(udp + 4))
        guard length >= UDP.headerLength, udp + length <= end else { return .badUDPLength }
        packet.sourcePort = bytes.u16(udp)
        packet.destinationPort = bytes.u16(udp + 2)
        guard packet.destinationPort == policy.vxlanPort || policy.secondVXLANPort != 0 && packet.destinationPort == policy.secondVXLANPort
        else { return .notTunnelPort }
        // The tunnel header is cheaper to check than the datagram's checksum, so it goes first;
        // but when it fails, a checksum that fails too says the packet was damaged, and that is
        // the reason counted (as Linux verifies before it parses).
        let tunnelFault = popVXLAN(bytes, at: udp + UDP.headerLength, end: udp + length, into: &packet)
        let stored = bytes.u16(udp + 6)
        if stored == 0 {
            packet.udpChecksum = .absent
            if policy.udpChecksum == .verify, packet.outerSource.isIPv6, !policy.acceptZeroIPv6Checksum {
                return .badUDPChecksum
            }
        } else if policy.udpChecksum != .ignore {
            let pseudo = InternetChecksum.pseudoHeaderSum(source: packet.outerSource, destination: packet.outerDestination,
                                                          protocol: IPProtocol.udp, length: length)
            let datagram = UnsafeRawBufferPointer(rebasing: bytes[udp..<(udp + length)])
            if InternetChecksum.add(pseudo, InternetChecksum.sum(datagram)) == 0xFFFF {
                packet.udpChecksum = .valid
            } else if stored == pseudo {
                packet.udpChecksum = .partial
            } else {
                packet.udpChecksum = .invalid
            }
            if policy.udpChecksum == .verify, packet.udpChecksum != .valid { return .badUDPChecksum }
        }
        return tunnelFault
    }

    @inlinable
    func popVXLAN(_ bytes: UnsafeRawBufferPointer, at vxlan: Int, end: Int,
                  into packet: inout DecapsulatedPacket) -> DropReason? {
        guard end - vxlan >= VXLAN.headerLength else { return .truncatedVXLAN }
        let word0 = bytes.u32(vxlan)
        guard word0 & UInt32(VXLAN.flagVNIValid) << 24 != 0 else { return .vxlanMissingIFlag }
        guard word0 == UInt32(VXLAN.flagVNIValid) << 24, bytes[vxlan + 7] == 0 else { return .vxlanReservedBitsSet }
        let vni = bytes.u32(vxlan + 4) >> 8
        if let expected = policy.vni, expected != vni { return .unexpectedVNI }
        packet.kind = .vxlan
        packet.vni = vni
        return setInner(vxlan + VXLAN.headerLength, end: end, into: &packet)
    }

    @inlinable
    func popGRE(_ bytes: UnsafeRawBufferPointer, at gre: Int, end: Int,
                into packet: inout DecapsulatedPacket) -> DropReason? {
        guard end - gre >= GRE.baseHeaderLength else { return .truncatedGRE }
        let flags = bytes.u16(gre)
        guard flags & GRE.versionMask == 0 else { return .greBadVersion }
        guard flags & GRE.flagRouting == 0 else { return .greRoutingBitSet }
        guard flags & GRE.mustBeZeroFlags == 0 else { return .greReservedFlagsSet }
        guard bytes.u16(gre + 2) == EtherType.transparentEthernetBridging else { return .greUnsupportedProtocol }
        let hasChecksum = flags & GRE.flagChecksum != 0
        let hasKey = flags & GRE.flagKey != 0
        let hasSequence = flags & GRE.flagSequence != 0
        let headerLength = GRE.headerLength(checksum: hasChecksum, key: hasKey, sequence: hasSequence)
        guard end - gre >= headerLength else { return .truncatedGRE }
        var o = gre + GRE.baseHeaderLength + (hasChecksum ? 4 : 0)
        var key: UInt32?
        if hasKey { key = bytes.u32(o); o += 4 }
        if hasSequence { packet.greSequence = bytes.u32(o); o += 4 }
        var fault = setInner(o, end: end, into: &packet)
        if fault == nil, let expected = policy.greKey, key != expected { fault = .unexpectedGREKey }
        // The checksum covers header and payload: the dearest check, so the last, unless a
        // cheaper one failed, when damage is the likelier cause and is what gets counted.
        if hasChecksum, policy.verifyGREChecksum, fault != .innerFrameTooShort,
           !InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: bytes[gre..<end])) {
            return .badGREChecksum
        }
        if let fault { return fault }
        packet.kind = .gre
        packet.greKey = key
        packet.greChecksumPresent = hasChecksum
        return nil
    }

    @inlinable
    func setInner(_ start: Int, end: Int, into packet: inout DecapsulatedPacket) -> DropReason? {
        guard end - start >= Ethernet.headerLength else { return .innerFrameTooShort }
        packet.inner = start..<end
        return nil
    }
}
