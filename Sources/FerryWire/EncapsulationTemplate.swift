// Push = copy + patch. The outer headers for one tunnel are built once; each packet copies
// them in front of its inner frame (into headroom, never moving the frame) and patches what
// varies: lengths, IPv4 identification and header checksum, UDP source port and checksum, GRE
// sequence number and checksum, and TOS/DF when they are inherited.

/// The outer headers of one tunnel, ready to prepend. One owner at a time: it carries the IPv4
/// identification and GRE sequence counters, so each worker thread holds its own.
public final class EncapsulationTemplate {
    public let options: TunnelOptions
    /// Ethernet + IP + UDP + VXLAN, or Ethernet + IP + GRE.
    public let fullHeaderLength: Int
    /// VXLAN, or GRE, header alone: the socket form.
    public let tunnelHeaderLength: Int

    @usableFromInline let header: UnsafeMutableRawBufferPointer
    @usableFromInline let ipOffset = Ethernet.headerLength
    @usableFromInline let transportOffset: Int
    @usableFromInline let tunnelOffset: Int
    @usableFromInline let isIPv6: Bool
    @usableFromInline let isVXLAN: Bool
    @usableFromInline let udpChecksum: Bool
    @usableFromInline let greChecksum: Bool
    @usableFromInline let greSequenceOffset: Int  // from the tunnel header, or -1
    @usableFromInline let greChecksumOffset: Int  // from the tunnel header, or -1
    /// IPv4: the sum of the header words that never change (TTL/protocol and addresses).
    @usableFromInline let ipv4ConstantSum: UInt16
    /// The pseudo-header without its length, plus the constant tunnel header for VXLAN.
    @usableFromInline let transportConstantSum: UInt16
    @usableFromInline let inheritTOS: Bool
    @usableFromInline let fixedTOS: UInt8
    @usableFromInline let dfPolicy: DFPolicy

    @usableFromInline let maximumInnerLength: Int
    /// Counts through `identifications` from a random start (so that a restart does not
    /// replay the last run's IDs); templates of several workers to one peer are given
    /// disjoint ranges, so that they never send the same ID at once (RFC 6864 §4.1). 0 is never
    /// used. Exclusivity is not checked: one owner.
    @exclusivity(unchecked) @usableFromInline var identification = UInt16.random(in: 1...UInt16.max)
    @exclusivity(unchecked) @usableFromInline var identifications: ClosedRange<UInt16> = 1...UInt16.max

    /// Keeps this template's IPv4 IDs within `range` (which must not hold 0).
    public func useIdentifications(_ range: ClosedRange<UInt16>) {
        precondition(range.lowerBound > 0)
        identifications = range
        identification = UInt16.random(in: range)
    }
    /// GRE sequence numbers count per template; a peer that checks their order (Linux `iseq`)
    /// must be sent to by one template, that is by one worker.
    @exclusivity(unchecked) @usableFromInline var sequence: UInt32 = 0

    public init(_ options: TunnelOptions) {
        self.options = options
        isIPv6 = options.local.isIPv6
        transportOffset = Ethernet.headerLength + options.ipHeaderLength
        fullHeaderLength = options.fullHeaderLength
        tunnelHeaderLength = options.encapsulation.tunnelHeaderLength
        maximumInnerLength = options.maximumInnerFrameLength
        switch options.tos {
        case .fixed(let t): inheritTOS = false; fixedTOS = t
        case .inherit: inheritTOS = true; fixedTOS = 0
        }
        dfPolicy = options.dontFragment
        udpChecksum = options.udpChecksum

        header = .allocate(byteCount: 128, alignment: 16)
        header.initializeMemory(as: UInt8.self, repeating: 0)
        Ethernet.writeHeader(to: header, at: 0, destination: options.remoteMAC, source: options.localMAC,
                             etherType: isIPv6 ? EtherType.ipv6 : EtherType.ipv4)

        let proto: UInt8
        switch options.encapsulation {
        case .vxlan(let vni):
            proto = IPProtocol.udp
            isVXLAN = true
            greChecksum = false
            greSequenceOffset = -1
            greChecksumOffset = -1
            tunnelOffset = transportOffset + UDP.headerLength
            UDP.writeHeader(to: header, at: transportOffset, sourcePort: options.sourcePortRange.lowerBound,
                            destinationPort: options.destinationPort, length: 0)
            VXLAN.writeHeader(to: header, at: tunnelOffset, vni: vni)
        case .gre(let g):
            proto = IPProtocol.gre
            isVXLAN = false
            greChecksum = g.checksum
            greChecksumOffset = g.checksum ? 4 : -1
            greSequenceOffset = g.sequence ? 4 + (g.checksum ? 4 : 0) + (g.key != nil ? 4 : 0) : -1
            tunnelOffset = transportOffset
            GRE.writeHeader(to: header, at: tunnelOffset, checksum: g.checksum, key: g.key,
                            sequence: g.sequence ? 0 : nil)
        }

        switch (options.local, options.remote) {
        case (.v4(let l), .v4(let r)):
            IPv4.writeHeader(to: header, at: ipOffset, totalLength: 0, ttl: options.ttl, protocol: proto,
                             source: l, destination: r)
            header.setU16(0, at: ipOffset + 10)
            var s = InternetChecksum.add(0, UInt16(options.ttl) << 8 | UInt16(proto))
            s = InternetChecksum.add(s, l.value)
            ipv4ConstantSum = InternetChecksum.add(s, r.value)
        case (.v6(let l), .v6(let r)):
            IPv6.writeHeader(to: header, at: ipOffset, payloadLength: 0, nextHeader: proto,
                             hopLimit: options.ttl, source: l, destination: r)
            ipv4ConstantSum = 0
        default:
            preconditionFailure("TunnelOptions guarantees one address family")
        }

        var t = InternetChecksum.pseudoHeaderSum(source: options.local, destination: options.remote,
                                                 protocol: proto, length: 0)
        if isVXLAN {
            // Destination port and the VXLAN header are the same in every packet.
            t = InternetChecksum.add(t, options.destinationPort)
            t = InternetChecksum.add(t, InternetChecksum.sum(
                UnsafeRawBufferPointer(rebasing: header[tunnelOffset..<(tunnelOffset + VXLAN.headerLength)])))
        }
        transportConstantSum = t
    }

    deinit { header.deallocate() }

    /// The UDP source port this tunnel uses for a flow hash.
    @inlinable
    public func sourcePort(forFlowHash hash: UInt32) -> UInt16 {
        FlowHash.port(for: hash, in: options.sourcePortRange)
    }

    /// How much of the outer headers to write: what the sending socket does not add itself.
    public enum Form: Sendable {
        /// Ethernet + IP + UDP + VXLAN, or Ethernet + IP + GRE: a frame for a capture or AF_PACKET.
        case frame
        /// From the IP header on: for a raw socket with IP_HDRINCL / IPV6_HDRINCL.
        case ipPacket
        /// VXLAN, or GRE, alone: for a UDP or IPPROTO_GRE socket.
        case tunnelHeader
    }

    /// The length of the headers `form` writes.
    @inlinable
    public func headerLength(_ form: Form) -> Int { fullHeaderLength - offset(of: form) }

    @inlinable
    func offset(of form: Form) -> Int {
        switch form {
        case .frame: 0
        case .ipPacket: ipOffset
        case .tunnelHeader: tunnelOffset
        }
    }

    /// Writes the outer headers of `form` for `inner` at `destination`, which need not be next
    /// to the inner frame (a sender may gather header and frame from two iovecs). Returns
    /// their length. `flowHash` defaults to a hash of the inner frame.
    @inlinable
    public func writeHeaders(_ form: Form, to destination: UnsafeMutableRawPointer, inner: UnsafeRawBufferPointer,
                             flowHash: UInt32? = nil) -> Int {
        // A longer frame would wrap the 16-bit length fields into a malformed packet.
        precondition(inner.count <= maximumInnerLength, "inner frame too long for one outer packet")
        let skip = offset(of: form)
        let length = fullHeaderLength - skip
        destination.copyMemory(from: UnsafeRawPointer(header.baseAddress!) + skip, byteCount: length)
        // Offsets below are from the start of the full header, `skip` bytes before `destination`.
        let base = destination - skip
        let transportLength = fullHeaderLength - transportOffset + inner.count
        if skip <= ipOffset { patchIP(base + ipOffset, payloadLength: transportLength, inner: inner) }
        if isVXLAN {
            if skip <= transportOffset { patchUDP(base + transportOffset, length: transportLength, inner: inner, flowHash: flowHash) }
        } else {
            patchGRE(base + tunnelOffset, inner: inner)
        }
        return length
    }

    /// Writes the full outer frame's headers in the `fullHeaderLength` bytes before the inner
    /// frame at `innerOffset` in `buffer` (its headroom), and returns where the frame starts.
    @inlinable
    public func encapsulateFrame(in buffer: UnsafeMutableRawBufferPointer, innerOffset: Int, innerLength: Int,
                                 flowHash: UInt32? = nil) -> Int {
        encapsulate(.frame, in: buffer, innerOffset: innerOffset, innerLength: innerLength, flowHash: flowHash)
    }

    /// Writes the headers of `form` into the headroom before the inner frame at `innerOffset`;
    /// returns where they start.
    @inlinable
    public func encapsulate(_ form: Form, in buffer: UnsafeMutableRawBufferPointer, innerOffset: Int, innerLength: Int,
                            flowHash: UInt32? = nil) -> Int {
        let start = innerOffset - headerLength(form)
        precondition(start >= 0 && innerOffset + innerLength <= buffer.count, "no headroom for the outer header")
        let inner = UnsafeRawBufferPointer(rebasing: buffer[innerOffset..<(innerOffset + innerLength)])
        _ = writeHeaders(form, to: buffer.baseAddress! + start, inner: inner, flowHash: flowHash)
        return start
    }

    /// Writes only the tunnel header (VXLAN, or GRE) before the inner frame; returns where it
    /// starts.
    @inlinable
    public func encapsulatePayload(in buffer: UnsafeMutableRawBufferPointer, innerOffset: Int,
                                   innerLength: Int) -> Int {
        encapsulate(.tunnelHeader, in: buffer, innerOffset: innerOffset, innerLength: innerLength)
    }

    @inlinable
    func patchIP(_ ip: UnsafeMutableRawPointer, payloadLength: Int, inner: UnsafeRawBufferPointer) {
        // RFC 6040 §4.1 (and Linux's INET_ECN_encapsulate): the outer ECN field copies the
        // inner one, CE becoming ECT(0), whatever the configured TOS says.
        let (innerTOS, innerDF) = Self.innerTOSAndDF(inner)
        let innerECN = innerTOS & 0x03
        var tos = (inheritTOS ? innerTOS : fixedTOS) & 0xFC
        tos |= innerECN == 0x03 ? 0x02 : innerECN
        let df = dfPolicy == .inherit ? innerDF : dfPolicy == .set
        if isIPv6 {
            ip.setU32(6 << 28 | UInt32(tos) << 20, at: 0)
            ip.setU16(UInt16(truncatingIfNeeded: payloadLength), at: 4)
        } else {
            let totalLength = UInt16(truncatingIfNeeded: IPv4.minimumHeaderLength + payloadLength)
            let versionTOS = 0x4500 | UInt16(tos)
            let flags: UInt16 = df ? IPv4.flagDontFragment : 0
            let id = identification
            // Never 0: a header-including raw socket replaces an ID of 0 with its own.
            identification = identification == identifications.upperBound ? identifications.lowerBound : identification + 1
            ip.setU16(versionTOS, at: 0)
            ip.setU16(totalLength, at: 2)
            ip.setU16(id, at: 4)
            ip.setU16(flags, at: 6)
            var s = InternetChecksum.add(ipv4ConstantSum, versionTOS)
            s = InternetChecksum.add(s, totalLength)
            s = InternetChecksum.add(s, id)
            s = InternetChecksum.add(s, flags)
            ip.setU16(~s, at: 10)
        }
    }

    @inlinable
    func patchUDP(_ udp: UnsafeMutableRawPointer, length: Int, inner: UnsafeRawBufferPointer, flowHash: UInt32?) {
        let sourcePort = sourcePort(forFlowHash: flowHash ?? FlowHash.hash(ofFrame: inner))
        let udpLength = UInt16(truncatingIfNeeded: length)
        udp.setU16(sourcePort, at: 0)
        udp.setU16(udpLength, at: 4)
        if udpChecksum {
            var s = InternetChecksum.add(transportConstantSum, udpLength)
            s = InternetChecksum.add(s, udpLength)
            s = InternetChecksum.add(s, sourcePort)
            s = InternetChecksum.add(s, InternetChecksum.sum(inner))
            udp.setU16(UDP.finish(s), at: 6)
        }
    }

    @inlinable
    func patchGRE(_ gre: UnsafeMutableRawPointer, inner: UnsafeRawBufferPointer) {
        if greSequenceOffset >= 0 {
            gre.setU32(sequence, at: greSequenceOffset)
            sequence &+= 1
        }
        if greChecksum {
            // Header and payload may lie apart; the header's length is even, so sums combine.
            let headerSum = InternetChecksum.sum(UnsafeRawBufferPointer(start: gre, count: tunnelHeaderLength))
            gre.setU16(~InternetChecksum.add(headerSum, InternetChecksum.sum(inner)), at: greChecksumOffset)
        }
    }

    /// The inner packet's TOS (or traffic class) and whether it asks not to be fragmented
    /// (IPv4 with DF, and IPv6 always, as Linux's `df inherit`).
    @inlinable
    static func innerTOSAndDF(_ inner: UnsafeRawBufferPointer) -> (UInt8, Bool) {
        guard let eth = EthernetView(inner) else { return (0, false) }
        let l3 = eth.payloadOffset
        switch eth.etherType {
        case EtherType.ipv4 where inner.count >= l3 + IPv4.minimumHeaderLength:
            return (inner[l3 + 1], inner.u16(l3 + 6) & IPv4.flagDontFragment != 0)
        case EtherType.ipv6 where inner.count >= l3 + 4:
            return (UInt8(truncatingIfNeeded: inner.u32(l3) >> 20), true)
        default:
            return (0, false)
        }
    }
}
