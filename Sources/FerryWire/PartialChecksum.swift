// A TCP or UDP checksum its sender left partial: a Linux sender with checksum offload
// (CHECKSUM_PARTIAL) stores the pseudo-header sum in the field — folded, not complemented, the
// L4 length included (`~csum_tcpudp_magic(...)`, as __tcp_v4_send_check, tcp_v6_send_check and
// udp4_hwcsum write it) — and leaves the rest to the device. Over a virtual underlay (a veth
// with offload on, the default) no device finishes it, and the inner segments of a peer's
// kernel vxlan arrive that way; the kernel's own vxlan accepts them, since the skb stays
// CHECKSUM_PARTIAL across namespaces. Ferry hands them to the TAP as what they are (a
// virtio-net header with NEEDS_CSUM, the kernel finishing or trusting the sum), or, with no
// virtio-net header, finishes the sum itself.
//
// Spotting one costs a parse of the headers and a pseudo-header sum (no pass over the data).
// A full checksum that happens to equal the pseudo-header sum is left the same by finishing
// it, so there is nothing to tell apart.

public struct PartialChecksum: Equatable, Sendable {
    /// Offset in the frame where the checksum starts (the L4 header).
    public var start: Int
    /// Offset of the checksum field from `start`: 16 for TCP, 6 for UDP.
    public var offset: Int
    /// End of the L4 segment in the frame (before any Ethernet padding): what the sum covers.
    public var end: Int

    public init(start: Int, offset: Int, end: Int) {
        self.start = start
        self.offset = offset
        self.end = end
    }

    /// The checksum of `frame` when its field holds exactly the pseudo-header sum: an untagged
    /// IPv4 (options allowed, not a fragment) or IPv6 (no extension header) frame carrying a
    /// whole TCP or UDP segment; nil for any other frame, a complete checksum included.
    @inlinable
    public static func find(in frame: UnsafeRawBufferPointer) -> PartialChecksum? {
        let l3 = Ethernet.headerLength
        guard frame.count >= l3 + IPv4.minimumHeaderLength else { return nil }
        let l4: Int, end: Int, proto: UInt8
        switch frame.u16(12) {
        case EtherType.ipv4:
            let version = frame[l3]
            let headerLength = Int(version & 0x0F) * 4
            proto = frame[l3 + 9]
            end = l3 + Int(frame.u16(l3 + 2))
            l4 = l3 + headerLength
            // A fragment's checksum covers the whole datagram; a sender never leaves one partial.
            guard version >> 4 == 4, headerLength >= IPv4.minimumHeaderLength, l4 <= end, end <= frame.count,
                  frame.u16(l3 + 6) & 0x3FFF == 0 else { return nil }
        case EtherType.ipv6:
            guard frame.count >= l3 + IPv6.headerLength, frame[l3] >> 4 == 6 else { return nil }
            proto = frame[l3 + 6]
            l4 = l3 + IPv6.headerLength
            end = l4 + Int(frame.u16(l3 + 4))
            guard end <= frame.count else { return nil }
        default:
            return nil
        }
        let offset: Int
        switch proto {
        case IPProtocol.tcp:
            guard end - l4 >= TCP.minimumHeaderLength else { return nil }
            offset = 16
        case IPProtocol.udp:
            // Zero is "no checksum" (IPv4), never a pseudo-header sum.
            guard end - l4 >= UDP.headerLength, Int(frame.u16(l4 + 4)) == end - l4, frame.u16(l4 + 6) != 0 else { return nil }
            offset = 6
        default:
            return nil
        }
        let pseudo: UInt16 = frame.u16(12) == EtherType.ipv4
            ? InternetChecksum.pseudoHeaderSum(source: IPv4Address(frame, at: l3 + 12), destination: IPv4Address(frame, at: l3 + 16),
                                               protocol: proto, length: end - l4)
            : InternetChecksum.pseudoHeaderSum(source: IPv6Address(frame, at: l3 + 8), destination: IPv6Address(frame, at: l3 + 24),
                                               protocol: proto, length: end - l4)
        guard frame.u16(l4 + offset) == pseudo else { return nil }
        return PartialChecksum(start: l4, offset: offset, end: end)
    }

    /// The virtio-net header that hands the frame to a TAP with the sum left to finish.
    @inlinable
    public var header: VirtioNetHeader {
        VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, checksumStart: UInt16(start), checksumOffset: UInt16(offset))
    }

    /// For a TCP segment longer than `mtu` (its IP packet): the header that hands it to a TAP
    /// as the TCP super-frame it is (NEEDS_CSUM, a TCP GSO type, the largest segment size that
    /// fits `mtu`); nil when it fits, is not TCP, or is a SYN or RST. Such a segment is what a
    /// peer's kernel sends when its own GSO goes through a veth unsegmented: the receiving UDP
    /// socket hands up the whole datagram, without the segment size the sender's skb had
    /// (TCP does not mind segments cut at other boundaries).
    @inlinable
    public func superFrameHeader(_ frame: UnsafeRawBufferPointer, mtu: Int) -> VirtioNetHeader? {
        let l3 = Ethernet.headerLength
        guard offset == 16, end - l3 > mtu else { return nil }
        let headerLength = start + Int(frame[start + 12] >> 4) * 4
        let flags = frame[start + 13]
        let segmentSize = mtu - (headerLength - l3)
        guard headerLength >= start + TCP.minimumHeaderLength, headerLength < end, segmentSize > 0,
              flags & (TCP.syn | TCP.rst) == 0 else { return nil }
        var gsoType = frame.u16(12) == EtherType.ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4
        if flags & 0x80 != 0 { gsoType |= VirtioNetHeader.gsoECN }  // CWR
        return VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, gsoType: gsoType, headerLength: UInt16(headerLength),
                               gsoSize: UInt16(segmentSize), checksumStart: UInt16(start), checksumOffset: UInt16(offset))
    }

    /// Finishes the checksum in place, over the segment only (not any Ethernet padding).
    @inlinable
    public func complete(_ frame: UnsafeMutableRawBufferPointer) {
        _ = Segmentation.completeChecksum(UnsafeMutableRawBufferPointer(rebasing: frame[..<end]), start: start, offset: offset)
    }
}
