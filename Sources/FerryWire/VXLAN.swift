// VXLAN (RFC 7348): an 8-byte header after UDP.
//
//  0                   1                   2                   3
// |R|R|R|R|I|R|R|R|            Reserved                           |
// |                VXLAN Network Identifier (VNI) |   Reserved    |

public enum VXLAN {
    public static let headerLength = 8
    public static let defaultPort: UInt16 = 4789
    /// The port Linux's vxlan device uses when created without `dstport` (it predates IANA's
    /// 4789), and flannel's: the offline tools recognise it as well unless told a port.
    public static let linuxDefaultPort: UInt16 = 8472
    /// The I flag: the VNI is valid. The only flag RFC 7348 defines.
    public static let flagVNIValid: UInt8 = 0x08
    public static let maximumVNI: UInt32 = 0xFF_FFFF

    /// Writes the header at `offset`; returns 8.
    @inlinable @discardableResult
    public static func writeHeader(to bytes: UnsafeMutableRawBufferPointer, at offset: Int, vni: UInt32) -> Int {
        bytes.setU32(UInt32(flagVNIValid) << 24, at: offset)
        bytes.setU32((vni & maximumVNI) << 8, at: offset + 4)
        return headerLength
    }
}

public struct VXLANView {
    public let bytes: UnsafeRawBufferPointer
    @inlinable public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= VXLAN.headerLength else { return nil }
        self.bytes = bytes
    }
    @inlinable public var flags: UInt8 { bytes[0] }
    @inlinable public var hasValidVNI: Bool { flags & VXLAN.flagVNIValid != 0 }
    /// True when any bit other than I is set: the 7 flag bits and the two reserved fields. The
    /// RFC says "ignored on receipt", but Linux drops such packets (they are GBP or GPE
    /// extensions it does not speak), and so does Ferry, under their own reason.
    @inlinable public var hasReservedBits: Bool {
        bytes.u32(0) != UInt32(VXLAN.flagVNIValid) << 24 || bytes[7] != 0
    }
    @inlinable public var vni: UInt32 { bytes.u32(4) >> 8 }
}
