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

    @usableFromInline var identification: UInt16 = 0
    @usableFromInline var sequence: UInt32 = 0

    public init(_ options: TunnelOptions) {
        self.options = options
        isIPv6 = options.local.isIPv6
        transportOffset = Ethernet.headerLength + options.ipHeaderLength
        fullHeaderLength = options.fullHeaderLength
        tunnelHeaderLength = options.encapsulation.tunnelHeaderLength
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

    /// Writes the full outer frame's headers in the `fullHeaderLength` bytes before the inner
    /// frame at `innerOffset` in `buffer`, and returns the offset where the outer frame starts.
    /// `flowHash` defaults to a hash of the inner frame.
    @inlinable
    public func encapsulateFrame(in buffer: UnsafeMutableRawBufferPointer, innerOffset: Int, innerLength: Int,
                                 flowHash: UInt32? = nil) -> Int {
        let start = innerOffset - fullHeaderLength
        precondition(start >= 0 && innerOffset + innerLength <= buffer.count, "no headroom for the outer header")
        buffer.baseAddress!.advanced(by: start)
            .copyMemory(from: UnsafeRawPointer(header.baseAddress!), byteCount: fullHeaderLength)
        let inner = UnsafeRawBufferPointer(rebasing: buffer[innerOffset..<(innerOffset + innerLength)])
        let transportLength = fullHeaderLength - transportOffset + innerLength
        patchIP(buffer, at: start + ipOffset, payloadLength: transportLength, inner: inner)

        let t = start + transportOffset
        if isVXLAN {
            let sourcePort = sourcePort(forFlowHash: flowHash ?? FlowHash.hash(ofFrame: inner))
            buffer.setU16(sourcePort, at: t)
            buffer.setU16(UInt16(truncatingIfNeeded: transportLength), at: t + 4)
            if udpChecksum {
                var s = InternetChecksum.add(transportConstantSum, UInt16(truncatingIfNeeded: transportLength))
                s = InternetChecksum.add(s, UInt16(truncatingIfNeeded: transportLength))
                s = InternetChecksum.add(s, sourcePort)
                s = InternetChecksum.add(s, InternetChecksum.sum(inner))
                buffer.setU16(UDP.finish(s), at: t + 6)
            }
        } else {
            patchGRE(buffer, at: t, innerOffset: innerOffset, innerLength: innerLength)
        }
        return start
    }

    /// Writes only the tunnel header (VXLAN, or GRE) before the inner frame, for a UDP or raw
    /// IP socket that supplies the outer IP (and UDP) header; returns where it starts.
    @inlinable
    public func encapsulatePayload(in buffer: UnsafeMutableRawBufferPointer, innerOffset: Int,
                                   innerLength: Int) -> Int {
        let start = innerOffset - tunnelHeaderLength
        precondition(start >= 0 && innerOffset + innerLength <= buffer.count, "no headroom for the tunnel header")
        buffer.baseAddress!.advanced(by: start).copyMemory(
            from: UnsafeRawPointer(header.baseAddress!.advanced(by: tunnelOffset)), byteCount: tunnelHeaderLength)
        if !isVXLAN { patchGRE(buffer, at: start, innerOffset: innerOffset, innerLength: innerLength) }
        return start
    }

    @inlinable
    func patchIP(_ buffer: UnsafeMutableRawBufferPointer, at ip: Int, payloadLength: Int,
                 inner: UnsafeRawBufferPointer) {
        var tos = fixedTOS
        var df = dfPolicy == .set
        if inheritTOS || dfPolicy == .inherit {
            let (innerTOS, innerDF) = Self.innerTOSAndDF(inner)
            if inheritTOS { tos = innerTOS }
            if dfPolicy == .inherit { df = innerDF }
        }
        if isIPv6 {
            buffer.setU32(6 << 28 | UInt32(tos) << 20, at: ip)
            buffer.setU16(UInt16(truncatingIfNeeded: payloadLength), at: ip + 4)
        } else {
            let totalLength = UInt16(truncatingIfNeeded: IPv4.minimumHeaderLength + payloadLength)
            let versionTOS = 0x4500 | UInt16(tos)
            let flags: UInt16 = df ? IPv4.flagDontFragment : 0
            let id = identification
            identification &+= 1
            buffer.setU16(versionTOS, at: ip)
            buffer.setU16(totalLength, at: ip + 2)
            buffer.setU16(id, at: ip + 4)
            buffer.setU16(flags, at: ip + 6)
            var s = InternetChecksum.add(ipv4ConstantSum, versionTOS)
            s = InternetChecksum.add(s, totalLength)
            s = InternetChecksum.add(s, id)
            s = InternetChecksum.add(s, flags)
            buffer.setU16(~s, at: ip + 10)
        }
    }

    @inlinable
    func patchGRE(_ buffer: UnsafeMutableRawBufferPointer, at gre: Int, innerOffset: Int, innerLength: Int) {
        if greSequenceOffset >= 0 {
            buffer.setU32(sequence, at: gre + greSequenceOffset)
            sequence &+= 1
        }
        if greChecksum {
            let covered = UnsafeRawBufferPointer(rebasing: buffer[gre..<(innerOffset + innerLength)])
            buffer.setU16(InternetChecksum.checksum(covered), at: gre + greChecksumOffset)
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
