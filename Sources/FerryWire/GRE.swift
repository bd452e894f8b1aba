// GRE (RFC 2784) with the key and sequence number extensions (RFC 2890).
//
// |C|R|K|S|s|Recur|  Flags  | Ver |         Protocol Type         |
// |      Checksum (optional)      |       Reserved1 (optional)    |
// |                         Key (optional)                        |
// |                 Sequence Number (optional)                    |

public enum GRE {
    public static let baseHeaderLength = 4
    public static let flagChecksum: UInt16 = 0x8000
    public static let flagRouting: UInt16 = 0x4000
    public static let flagKey: UInt16 = 0x2000
    public static let flagSequence: UInt16 = 0x1000
    /// RFC 2784 bits 4–5 (RFC 1701's strict source route and top recursion bit): a receiver
    /// that does not implement RFC 1701 must discard a packet with them set.
    public static let mustBeZeroFlags: UInt16 = 0x0C00
    public static let versionMask: UInt16 = 0x0007

    /// Header length for a set of optional fields.
    @inlinable
    public static func headerLength(checksum: Bool, key: Bool, sequence: Bool) -> Int {
        baseHeaderLength + (checksum ? 4 : 0) + (key ? 4 : 0) + (sequence ? 4 : 0)
    }

    /// Writes a version-0 header at `offset`; the checksum field, when present, is left zero for
    /// the caller to fill over the header and payload. Returns the header length.
    @inlinable @discardableResult
    public static func writeHeader(to bytes: UnsafeMutableRawBufferPointer, at offset: Int,
                                   protocolType: UInt16 = EtherType.transparentEthernetBridging,
                                   checksum: Bool, key: UInt32?, sequence: UInt32?) -> Int {
        var flags: UInt16 = 0
        if checksum { flags |= flagChecksum }
        if key != nil { flags |= flagKey }
        if sequence != nil { flags |= flagSequence }
        bytes.setU16(flags, at: offset)
        bytes.setU16(protocolType, at: offset + 2)
        var o = offset + 4
        if checksum { bytes.setU32(0, at: o); o += 4 }
        if let key { bytes.setU32(key, at: o); o += 4 }
        if let sequence { bytes.setU32(sequence, at: o); o += 4 }
        return o - offset
    }
}

/// A view of a GRE header whose optional fields are known to be present in `bytes`.
public struct GREView {
    public let bytes: UnsafeRawBufferPointer
    /// Nil when `bytes` is shorter than the header its flags announce.
    @inlinable public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= GRE.baseHeaderLength else { return nil }
        self.bytes = bytes
        guard bytes.count >= headerLength else { return nil }
    }
    @inlinable public var flags: UInt16 { bytes.u16(0) }
    @inlinable public var version: UInt8 { UInt8(flags & GRE.versionMask) }
    @inlinable public var protocolType: UInt16 { bytes.u16(2) }
    @inlinable public var hasChecksum: Bool { flags & GRE.flagChecksum != 0 }
    @inlinable public var hasRouting: Bool { flags & GRE.flagRouting != 0 }
    @inlinable public var hasKey: Bool { flags & GRE.flagKey != 0 }
    @inlinable public var hasSequence: Bool { flags & GRE.flagSequence != 0 }
    /// Length including the optional fields the C, K and S flags announce. (R is refused
    /// before its variable-length routing field would matter.)
    @inlinable public var headerLength: Int {
        GRE.headerLength(checksum: hasChecksum || hasRouting, key: hasKey, sequence: hasSequence)
    }
    @inlinable public var checksum: UInt16? { hasChecksum ? bytes.u16(4) : nil }
    @inlinable public var key: UInt32? {
        hasKey ? bytes.u32(4 + (hasChecksum || hasRouting ? 4 : 0)) : nil
    }
    @inlinable public var sequence: UInt32? {
        hasSequence ? bytes.u32(4 + (hasChecksum || hasRouting ? 4 : 0) + (hasKey ? 4 : 0)) : nil
    }
}
