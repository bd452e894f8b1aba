// ICMPv4 (RFC 792) and ICMPv6 (RFC 4443): echo, and the two errors that make path MTU
// discovery work through a tunnel — "fragmentation needed" (RFC 1191) and "packet too big"
// (RFC 8201).

public enum ICMPv4 {
    public static let headerLength = 8
    public static let echoReply: UInt8 = 0
    public static let destinationUnreachable: UInt8 = 3
    public static let echoRequest: UInt8 = 8
    public static let codeFragmentationNeeded: UInt8 = 4
    /// RFC 1812 §4.3.2.3: an error quotes as much of the original as fits in 576 bytes.
    public static let maximumErrorDatagram = 576

    /// Writes an echo request or reply with its checksum; returns its length.
    @discardableResult
    public static func writeEcho(to bytes: UnsafeMutableRawBufferPointer, at offset: Int, type: UInt8,
                                 identifier: UInt16, sequence: UInt16, payload: [UInt8]) -> Int {
        bytes.setU8(type, at: offset)
        bytes.setU8(0, at: offset + 1)
        bytes.setU16(0, at: offset + 2)
        bytes.setU16(identifier, at: offset + 4)
        bytes.setU16(sequence, at: offset + 6)
        for (i, b) in payload.enumerated() { bytes[offset + 8 + i] = b }
        let length = headerLength + payload.count
        let message = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
        bytes.setU16(InternetChecksum.checksum(message), at: offset + 2)
        return length
    }

    /// Writes a "fragmentation needed and DF set" message quoting `original` (an IPv4 datagram
    /// from its header on) up to the RFC 1812 limit; returns the ICMP message length.
    @discardableResult
    public static func writeFragmentationNeeded(to bytes: UnsafeMutableRawBufferPointer, at offset: Int,
                                                nextHopMTU: Int, original: UnsafeRawBufferPointer) -> Int {
        let quoted = min(original.count, maximumErrorDatagram - IPv4.minimumHeaderLength - headerLength)
        bytes.setU8(destinationUnreachable, at: offset)
        bytes.setU8(codeFragmentationNeeded, at: offset + 1)
        bytes.setU16(0, at: offset + 2)
        bytes.setU16(0, at: offset + 4)
        bytes.setU16(UInt16(clamping: nextHopMTU), at: offset + 6)
        UnsafeMutableRawBufferPointer(rebasing: bytes[(offset + 8)..<(offset + 8 + quoted)])
            .copyMemory(from: UnsafeRawBufferPointer(rebasing: original[0..<quoted]))
        let length = headerLength + quoted
        let message = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
        bytes.setU16(InternetChecksum.checksum(message), at: offset + 2)
        return length
    }
}

public enum ICMPv6 {
    public static let headerLength = 8
    public static let packetTooBig: UInt8 = 2
    public static let echoRequest: UInt8 = 128
    public static let echoReply: UInt8 = 129
    public static let neighborSolicitation: UInt8 = 135
    public static let neighborAdvertisement: UInt8 = 136
    /// RFC 4443 §2.4(c): an error must not exceed the minimum IPv6 MTU.
    public static let minimumMTU = 1280

    /// Writes a "packet too big" message quoting `original` (an IPv6 packet from its header on)
    /// up to the 1280-byte limit, checksummed over the pseudo-header of `source` → `destination`
    /// (the addresses of the ICMPv6 packet itself). Returns the message length.
    @discardableResult
    public static func writePacketTooBig(to bytes: UnsafeMutableRawBufferPointer, at offset: Int,
                                         mtu: Int, original: UnsafeRawBufferPointer,
                                         source: IPv6Address, destination: IPv6Address) -> Int {
        let quoted = min(original.count, minimumMTU - IPv6.headerLength - headerLength)
        bytes.setU8(packetTooBig, at: offset)
        bytes.setU8(0, at: offset + 1)
        bytes.setU16(0, at: offset + 2)
        bytes.setU32(UInt32(clamping: mtu), at: offset + 4)
        UnsafeMutableRawBufferPointer(rebasing: bytes[(offset + 8)..<(offset + 8 + quoted)])
            .copyMemory(from: UnsafeRawBufferPointer(rebasing: original[0..<quoted]))
        let length = headerLength + quoted
        bytes.setU16(checksum(bytes, at: offset, length: length, source: source, destination: destination),
                     at: offset + 2)
        return length
    }

    /// Writes an echo request or reply with its checksum; returns its length.
    @discardableResult
    public static func writeEcho(to bytes: UnsafeMutableRawBufferPointer, at offset: Int, type: UInt8,
                                 identifier: UInt16, sequence: UInt16, payload: [UInt8],
                                 source: IPv6Address, destination: IPv6Address) -> Int {
        bytes.setU8(type, at: offset)
        bytes.setU8(0, at: offset + 1)
        bytes.setU16(0, at: offset + 2)
        bytes.setU16(identifier, at: offset + 4)
        bytes.setU16(sequence, at: offset + 6)
        for (i, b) in payload.enumerated() { bytes[offset + 8 + i] = b }
        let length = headerLength + payload.count
        bytes.setU16(checksum(bytes, at: offset, length: length, source: source, destination: destination),
                     at: offset + 2)
        return length
    }

    static func checksum(_ bytes: UnsafeMutableRawBufferPointer, at offset: Int, length: Int,
                         source: IPv6Address, destination: IPv6Address) -> UInt16 {
        let pseudo = InternetChecksum.pseudoHeaderSum(source: source, destination: destination,
                                                      protocol: IPProtocol.icmpv6, length: length)
        let message = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
        return ~InternetChecksum.add(pseudo, InternetChecksum.sum(message))
    }
}
