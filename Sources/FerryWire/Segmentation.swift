// Userspace GSO: a TCP or UDP super-frame from a TAP with TSO or USO cut into frames that fit
// the tunnel, each with its headers copied and patched (IPv4 length, ID and checksum; IPv6
// payload length; TCP sequence number, flags and checksum; UDP length and checksum), as the
// kernel's tcp_gso_segment and __udp_gso_segment do. And the checksum a NEEDS_CSUM frame
// leaves to whoever sends it.

public enum Segmentation {
    /// Why a super-frame could not be segmented.
    public enum Failure: Error, Equatable, Sendable {
        /// Neither TCP under a TCP GSO type nor UDP under UDP_L4.
        case wrongProtocol
        case headersOutOfBounds
        case zeroSegmentSize
        case tooManySegments
        /// An IPv6 extension header runs past the transport header, or the chain does not end
        /// where csum_start says the transport header begins.
        case badExtensionHeaders
        /// More IPv6 extension headers than `maximumExtensionHeaders`, or more bytes of them
        /// than `maximumExtensionBytes`.
        case tooManyExtensionHeaders
        /// A fragment, AH or ESP header, a second routing header, or a routing header with
        /// segments left whose final destination (for the checksum) is not known.
        case unsupportedExtensionHeader

        /// The drop reason a frame refused for this is counted under.
        @inlinable public var dropReason: DropReason {
            switch self {
            case .wrongProtocol, .headersOutOfBounds, .zeroSegmentSize, .tooManySegments: .badSuperFrame
            case .badExtensionHeaders, .tooManyExtensionHeaders, .unsupportedExtensionHeader: .badSuperFrameExtensionHeaders
            }
        }
    }

    /// Finishes a checksum the sender left partial: the field at `start + offset` holds the
    /// pseudo-header sum; the one's complement of the sum from `start` to the end goes there.
    @inlinable
    public static func completeChecksum(_ frame: UnsafeMutableRawBufferPointer, start: Int, offset: Int) -> Bool {
        guard start >= 0, offset >= 0, start + offset + 2 <= frame.count else { return false }
        let covered = UnsafeRawBufferPointer(rebasing: frame[start...])
        var c = ~InternetChecksum.sum(covered)
        // A UDP checksum that computes to zero is sent as all ones.
        if c == 0, offset == 6 { c = 0xFFFF }
        frame.setU16(c, at: start + offset)
        return true
    }

    /// Cuts the super-frame `frame` (Ethernet on) — TCP, or UDP when `header` says UDP_L4 —
    /// into segments of at most `header.gsoSize` payload bytes, written one after another into
    /// `output`; calls `emit` with each segment's offset and length. Returns the number of
    /// segments. `hdr_len` is not trusted (wireguard-go's lesson): the header length comes from
    /// the checksum start and the TCP data offset (or UDP's fixed 8 bytes). IPv6 extension
    /// headers (hop-by-hop, routing, destination options) between the fixed header and the
    /// transport header are copied into every segment (see `finalDestinationOffset`).
    /// `gap` bytes are left free before each segment (for a tunnel header written in place, so
    /// that the segments and their headers lie end to end for one UDP GSO send).
    @inlinable
    public static func segment(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader,
                               into output: UnsafeMutableRawBufferPointer, gap: Int = 0,
                               emit: (Int, Int) -> Void) throws(Failure) -> Int {
        try cut(frame, header: header, into: output, gap: gap, copyPayload: true) { at, headerLength, _, chunk in
            emit(at, headerLength + chunk)
        }
    }

    /// The scatter-gather form of `segment`: only each segment's headers are written to
    /// `output` (after `gap` free bytes each), and its payload stays where it is in `frame`, to
    /// be sent from there. `emit` gets the headers' offset in `output` and length, then the
    /// payload's offset in `frame` and length. The checksums cover the payload in place.
    @inlinable
    public static func segmentHeaders(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader,
                                      into output: UnsafeMutableRawBufferPointer, gap: Int = 0,
                                      emit: (_ headerAt: Int, _ headerLength: Int, _ payloadAt: Int, _ payloadLength: Int) -> Void)
        throws(Failure) -> Int {
        try cut(frame, header: header, into: output, gap: gap, copyPayload: false, emit: emit)
    }

    @inlinable
    static func cut(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, into output: UnsafeMutableRawBufferPointer,
                    gap: Int, copyPayload: Bool, emit: (Int, Int, Int, Int) -> Void) throws(Failure) -> Int {
        guard let eth = EthernetView(frame) else { throw .headersOutOfBounds }
        let l3 = eth.payloadOffset
        let isIPv6 = eth.etherType == EtherType.ipv6
        guard isIPv6 || eth.etherType == EtherType.ipv4 else { throw .wrongProtocol }
        let isUDP = header.gsoType & ~VirtioNetHeader.gsoECN == VirtioNetHeader.gsoUDPL4
        let proto = isUDP ? IPProtocol.udp : IPProtocol.tcp
        let l4 = Int(header.checksumStart)
        guard l4 > l3, l4 + (isUDP ? UDP.headerLength : TCP.minimumHeaderLength) <= frame.count else { throw .headersOutOfBounds }
        // Where the pseudo-header's destination lies (IPv6: the final one, past a routing header).
        var destinationAt = l3 + 16
        if isIPv6 {
            destinationAt = try finalDestinationOffset(frame, l3: l3, l4: l4, proto: proto)
        } else {
            guard frame[l3 + 9] == proto, l3 + Int(frame[l3] & 0x0F) * 4 == l4 else { throw .wrongProtocol }
        }
        let l4HeaderLength = isUDP ? UDP.headerLength : Int(frame[l4 + 12] >> 4) * 4
        let headerLength = l4 + l4HeaderLength
        guard isUDP || l4HeaderLength >= TCP.minimumHeaderLength, headerLength <= frame.count else { throw .headersOutOfBounds }
        let mss = Int(header.gsoSize)
        guard mss > 0 else { throw .zeroSegmentSize }
        let payload = frame.count - headerLength
        let segments = max(1, (payload + mss - 1) / mss)
        guard segments * (headerLength + gap) + (copyPayload ? payload : 0) <= output.count else { throw .tooManySegments }

        let sequence0 = isUDP ? 0 : frame.u32(l4 + 4)
        let flags0 = isUDP ? 0 : frame[l4 + 13]
        let id0: UInt16 = isIPv6 ? 0 : frame.u16(l3 + 4)
        let pseudoBase: UInt16
        if isIPv6 {
            pseudoBase = InternetChecksum.pseudoHeaderSum(source: IPv6Address(frame, at: l3 + 8),
                                                          destination: IPv6Address(frame, at: destinationAt),
                                                          protocol: proto, length: 0)
        } else {
            pseudoBase = InternetChecksum.pseudoHeaderSum(source: IPv4Address(frame, at: l3 + 12),
                                                          destination: IPv4Address(frame, at: destinationAt),
                                                          protocol: proto, length: 0)
        }
        var o = 0
        for i in 0..<segments {
            let start = headerLength + i * mss
            let chunk = min(mss, frame.count - start)
            o += gap
            let out = output.baseAddress! + o
            out.copyMemory(from: frame.baseAddress!, byteCount: headerLength)
            if copyPayload, chunk > 0 { (out + headerLength).copyMemory(from: frame.baseAddress! + start, byteCount: chunk) }
            let headers = UnsafeMutableRawBufferPointer(start: out, count: headerLength)
            let last = i == segments - 1
            if isIPv6 {
                headers.setU16(UInt16(headerLength - l3 - IPv6.headerLength + chunk), at: l3 + 4)
            } else {
                let ihl = l4 - l3
                headers.setU16(UInt16(headerLength - l3 + chunk), at: l3 + 2)
                headers.setU16(id0 &+ UInt16(truncatingIfNeeded: i), at: l3 + 4)
                headers.setU16(0, at: l3 + 10)
                headers.setU16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: headers[l3..<(l3 + ihl)])), at: l3 + 10)
            }
            let l4Length = l4HeaderLength + chunk
            let checksumAt: Int
            if isUDP {
                headers.setU16(UInt16(l4Length), at: l4 + 4)
                checksumAt = l4 + 6
            } else {
                headers.setU32(sequence0 &+ UInt32(truncatingIfNeeded: i * mss), at: l4 + 4)
                var flags = flags0
                if !last { flags &= ~(TCP.fin | TCP.psh) }
                if i > 0 { flags &= ~0x80 }  // CWR only on the first segment
                headers[l4 + 13] = flags
                checksumAt = l4 + 16
            }
            headers.setU16(0, at: checksumAt)
            // The transport header, then the payload where it lies in the super-frame: the
            // header's length is even (a multiple of 4 for TCP, 8 for UDP), so the two sums add.
            let payloadSum = InternetChecksum.sum(UnsafeRawBufferPointer(start: frame.baseAddress! + start, count: chunk))
            let sum = InternetChecksum.add(InternetChecksum.add(pseudoBase, UInt16(l4Length)),
                                           InternetChecksum.add(InternetChecksum.sum(UnsafeRawBufferPointer(rebasing: headers[l4...])),
                                                                payloadSum))
            // A UDP checksum that computes to zero is sent as all ones (zero means none).
            headers.setU16(isUDP && ~sum == 0 ? 0xFFFF : ~sum, at: checksumAt)
            emit(o, headerLength, start, chunk)
            o += headerLength + (copyPayload ? chunk : 0)
        }
        return segments
    }
}
