// TCP (RFC 9293): the fields the data plane reads and patches.

public enum TCP {
    public static let minimumHeaderLength = 20
    public static let fin: UInt8 = 0x01
    public static let syn: UInt8 = 0x02
    public static let rst: UInt8 = 0x04
    public static let psh: UInt8 = 0x08
    public static let ack: UInt8 = 0x10

    /// Writes a 20-byte header with a zero checksum; returns 20.
    @discardableResult
    public static func writeHeader(to bytes: UnsafeMutableRawBufferPointer, at offset: Int,
                                   sourcePort: UInt16, destinationPort: UInt16,
                                   sequence: UInt32, acknowledgment: UInt32, flags: UInt8,
                                   window: UInt16 = 65535) -> Int {
        bytes.setU16(sourcePort, at: offset)
        bytes.setU16(destinationPort, at: offset + 2)
        bytes.setU32(sequence, at: offset + 4)
        bytes.setU32(acknowledgment, at: offset + 8)
        bytes.setU8(5 << 4, at: offset + 12)
        bytes.setU8(flags, at: offset + 13)
        bytes.setU16(window, at: offset + 14)
        bytes.setU16(0, at: offset + 16)
        bytes.setU16(0, at: offset + 18)
        return minimumHeaderLength
    }
}

public struct TCPView {
    public let bytes: UnsafeRawBufferPointer
    @inlinable public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= TCP.minimumHeaderLength else { return nil }
        self.bytes = bytes
    }
    @inlinable public var sourcePort: UInt16 { bytes.u16(0) }
    @inlinable public var destinationPort: UInt16 { bytes.u16(2) }
    @inlinable public var sequence: UInt32 { bytes.u32(4) }
    @inlinable public var acknowledgment: UInt32 { bytes.u32(8) }
    @inlinable public var headerLength: Int { Int(bytes[12] >> 4) * 4 }
    @inlinable public var flags: UInt8 { bytes[13] }
    @inlinable public var window: UInt16 { bytes.u16(14) }
    @inlinable public var checksum: UInt16 { bytes.u16(16) }
}
