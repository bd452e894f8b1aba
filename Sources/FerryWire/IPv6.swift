// IPv6 (RFC 8200), with the common extension headers walked to reach the upper layer.

public enum IPv6 {
    public static let headerLength = 40

    /// Writes the fixed header at `offset`; returns 40.
    @discardableResult
    public static func writeHeader(to bytes: UnsafeMutableRawBufferPointer, at offset: Int,
                                   trafficClass: UInt8 = 0, flowLabel: UInt32 = 0, payloadLength: Int,
                                   nextHeader: UInt8, hopLimit: UInt8 = 64,
                                   source: IPv6Address, destination: IPv6Address) -> Int {
        bytes.setU32(6 << 28 | UInt32(trafficClass) << 20 | (flowLabel & 0xF_FFFF), at: offset)
        bytes.setU16(UInt16(payloadLength), at: offset + 4)
        bytes.setU8(nextHeader, at: offset + 6)
        bytes.setU8(hopLimit, at: offset + 7)
        source.write(to: bytes, at: offset + 8)
        destination.write(to: bytes, at: offset + 24)
        return headerLength
    }

    /// The result of walking the extension-header chain.
    public struct UpperLayer: Equatable, Sendable {
        /// Protocol number of the upper layer (TCP, UDP, ICMPv6, GRE, …).
        public var `protocol`: UInt8
        /// Offset of the upper-layer header from the start of the IPv6 header.
        public var offset: Int
        /// True when a fragment header was crossed (the upper layer is then not whole).
        public var isFragment: Bool

        @inlinable public init(protocol: UInt8, offset: Int, isFragment: Bool) {
            self.protocol = `protocol`
            self.offset = offset
            self.isFragment = isFragment
        }
    }

    /// Skips hop-by-hop, routing, destination-options, fragment and AH headers (at most eight).
    /// Nil when the chain runs past the end of `bytes`.
    @inlinable
    public static func upperLayer(of bytes: UnsafeRawBufferPointer) -> UpperLayer? {
        guard bytes.count >= headerLength else { return nil }
        var next = bytes[6]
        var offset = headerLength
        var fragment = false
        for _ in 0..<8 {
            switch next {
            case IPProtocol.ipv6HopByHop, IPProtocol.ipv6Route, IPProtocol.ipv6DestinationOptions:
                guard bytes.count >= offset + 8 else { return nil }
                next = bytes[offset]
                offset += (Int(bytes[offset + 1]) + 1) * 8
            case IPProtocol.ipv6Fragment:
                guard bytes.count >= offset + 8 else { return nil }
                next = bytes[offset]
                // An atomic fragment (offset 0, no more fragments) is a whole packet (RFC 6946).
                if bytes.u16(offset + 2) & 0xFFF9 != 0 { fragment = true }
                offset += 8
            case IPProtocol.ah:
                guard bytes.count >= offset + 8 else { return nil }
                next = bytes[offset]
                offset += (Int(bytes[offset + 1]) + 2) * 4
            default:
                return offset <= bytes.count ? UpperLayer(protocol: next, offset: offset, isFragment: fragment) : nil
            }
        }
        return nil
    }
}

/// A read-only view of the fixed IPv6 header.
public struct IPv6View {
    public let bytes: UnsafeRawBufferPointer
    @inlinable public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= IPv6.headerLength else { return nil }
        self.bytes = bytes
    }
    @inlinable public var version: UInt8 { bytes[0] >> 4 }
    @inlinable public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: bytes.u32(0) >> 20) }
    @inlinable public var flowLabel: UInt32 { bytes.u32(0) & 0xF_FFFF }
    @inlinable public var payloadLength: Int { Int(bytes.u16(4)) }
    @inlinable public var nextHeader: UInt8 { bytes[6] }
    @inlinable public var hopLimit: UInt8 { bytes[7] }
    @inlinable public var source: IPv6Address { IPv6Address(bytes, at: 8) }
    @inlinable public var destination: IPv6Address { IPv6Address(bytes, at: 24) }
}
