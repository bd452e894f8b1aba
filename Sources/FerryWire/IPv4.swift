// IPv4 (RFC 791), options carried but not interpreted.

public enum IPProtocol {
    public static let icmp: UInt8 = 1
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
    public static let ipv6Route: UInt8 = 43
    public static let ipv6Fragment: UInt8 = 44
    public static let gre: UInt8 = 47
    public static let esp: UInt8 = 50
    public static let ah: UInt8 = 51
    public static let icmpv6: UInt8 = 58
    public static let ipv6NoNext: UInt8 = 59
    public static let ipv6DestinationOptions: UInt8 = 60
    public static let ipv6HopByHop: UInt8 = 0
}

public enum IPv4 {
    public static let minimumHeaderLength = 20
    public static let flagDontFragment: UInt16 = 0x4000
    public static let flagMoreFragments: UInt16 = 0x2000
    public static let fragmentOffsetMask: UInt16 = 0x1FFF

    /// Writes a header at `offset` with the checksum filled in; `options` (a multiple of four
    /// bytes) follow the fixed part. Returns the header length.
    @discardableResult
    public static func writeHeader(to bytes: UnsafeMutableRawBufferPointer, at offset: Int,
                                   tos: UInt8 = 0, totalLength: Int, identification: UInt16 = 0,
                                   dontFragment: Bool = false, ttl: UInt8 = 64, protocol proto: UInt8,
                                   source: IPv4Address, destination: IPv4Address,
                                   options: [UInt8] = []) -> Int {
        precondition(options.count % 4 == 0 && options.count <= 40, "IPv4 options must be padded to 4 bytes")
        let headerLength = minimumHeaderLength + options.count
        bytes.setU8(0x40 | UInt8(headerLength / 4), at: offset)
        bytes.setU8(tos, at: offset + 1)
        bytes.setU16(UInt16(totalLength), at: offset + 2)
        bytes.setU16(identification, at: offset + 4)
        bytes.setU16(dontFragment ? flagDontFragment : 0, at: offset + 6)
        bytes.setU8(ttl, at: offset + 8)
        bytes.setU8(proto, at: offset + 9)
        bytes.setU16(0, at: offset + 10)
        source.write(to: bytes, at: offset + 12)
        destination.write(to: bytes, at: offset + 16)
        for (i, b) in options.enumerated() { bytes[offset + 20 + i] = b }
        let header = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + headerLength)])
        bytes.setU16(InternetChecksum.checksum(header), at: offset + 10)
        return headerLength
    }
}

/// A read-only view of an IPv4 header. `init` checks only what is needed to read the fixed
/// fields safely; the decapsulator validates the rest, each failure under its own reason.
public struct IPv4View {
    public let bytes: UnsafeRawBufferPointer
    @inlinable public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= IPv4.minimumHeaderLength else { return nil }
        self.bytes = bytes
    }
    @inlinable public var version: UInt8 { bytes[0] >> 4 }
    @inlinable public var headerLength: Int { Int(bytes[0] & 0x0F) * 4 }
    @inlinable public var tos: UInt8 { bytes[1] }
    @inlinable public var totalLength: Int { Int(bytes.u16(2)) }
    @inlinable public var identification: UInt16 { bytes.u16(4) }
    @inlinable public var flagsAndOffset: UInt16 { bytes.u16(6) }
    @inlinable public var dontFragment: Bool { flagsAndOffset & IPv4.flagDontFragment != 0 }
    /// True for any fragment but a whole datagram (MF set or a non-zero offset).
    @inlinable public var isFragment: Bool {
        flagsAndOffset & (IPv4.flagMoreFragments | IPv4.fragmentOffsetMask) != 0
    }
    @inlinable public var ttl: UInt8 { bytes[8] }
    @inlinable public var `protocol`: UInt8 { bytes[9] }
    @inlinable public var checksum: UInt16 { bytes.u16(10) }
    @inlinable public var source: IPv4Address { IPv4Address(bytes, at: 12) }
    @inlinable public var destination: IPv4Address { IPv4Address(bytes, at: 16) }
    /// True when the header (as long as `headerLength` says) sums to 0xFFFF.
    @inlinable public var isChecksumValid: Bool {
        headerLength <= bytes.count
            && InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: bytes[0..<headerLength]))
    }
}
