// UDP (RFC 768).

public enum UDP {
    public static let headerLength = 8

    /// Writes a header at `offset` with a zero checksum; returns 8.
    @inlinable @discardableResult
    public static func writeHeader(to bytes: UnsafeMutableRawBufferPointer, at offset: Int,
                                   sourcePort: UInt16, destinationPort: UInt16, length: Int) -> Int {
        bytes.setU16(sourcePort, at: offset)
        bytes.setU16(destinationPort, at: offset + 2)
        bytes.setU16(UInt16(truncatingIfNeeded: length), at: offset + 4)
        bytes.setU16(0, at: offset + 6)
        return headerLength
    }

    /// The value to store for a datagram whose pseudo-header and content sum to `sum`: zero
    /// means "no checksum" in UDP, so a computed zero goes on the wire as 0xFFFF.
    @inlinable @inline(__always)
    public static func finish(_ sum: UInt16) -> UInt16 {
        let c = ~sum
        return c == 0 ? 0xFFFF : c
    }
}

public struct UDPView {
    public let bytes: UnsafeRawBufferPointer
    @inlinable public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= UDP.headerLength else { return nil }
        self.bytes = bytes
    }
    @inlinable public var sourcePort: UInt16 { bytes.u16(0) }
    @inlinable public var destinationPort: UInt16 { bytes.u16(2) }
    @inlinable public var length: Int { Int(bytes.u16(4)) }
    @inlinable public var checksum: UInt16 { bytes.u16(6) }
}
