// Ethernet II with up to two 802.1Q / 802.1ad tags.

public enum EtherType {
    public static let ipv4: UInt16 = 0x0800
    public static let arp: UInt16 = 0x0806
    public static let vlan: UInt16 = 0x8100
    public static let qinq: UInt16 = 0x88A8
    public static let ipv6: UInt16 = 0x86DD
    /// GRE protocol type for an Ethernet payload (transparent Ethernet bridging).
    public static let transparentEthernetBridging: UInt16 = 0x6558
}

public enum Ethernet {
    public static let headerLength = 14
    public static let vlanTagLength = 4
    /// Smallest frame on the wire without the FCS (64 bytes less 4).
    public static let minimumFrameLength = 60
    /// Preamble and start-of-frame delimiter, FCS and inter-frame gap: what each frame costs on
    /// a physical link beyond its bytes.
    public static let preambleLength = 8
    public static let frameCheckSequenceLength = 4
    public static let interFrameGap = 12
}

/// A read-only view of an Ethernet header, VLAN tags resolved.
public struct EthernetView {
    public let bytes: UnsafeRawBufferPointer
    /// Offset of the payload, after any VLAN tags.
    public let payloadOffset: Int
    /// The EtherType after the tags.
    public let etherType: UInt16
    /// The outermost VLAN ID, if tagged.
    public let vlanID: UInt16?

    /// Parses the header; nil when the frame is shorter than its header and tags.
    @inlinable
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Ethernet.headerLength else { return nil }
        self.bytes = bytes
        var offset = 12
        var type = bytes.u16(offset)
        var vlan: UInt16?
        // 802.1ad outer then 802.1Q inner at most; a third tag is left as payload.
        var tags = 0
        while (type == EtherType.vlan || type == EtherType.qinq) && tags < 2 {
            guard bytes.count >= offset + 2 + Ethernet.vlanTagLength else { return nil }
            if vlan == nil { vlan = bytes.u16(offset + 2) & 0x0FFF }
            offset += Ethernet.vlanTagLength
            type = bytes.u16(offset)
            tags += 1
        }
        self.etherType = type
        self.payloadOffset = offset + 2
        self.vlanID = vlan
    }

    @inlinable public var destination: MACAddress { MACAddress(bytes, at: 0) }
    @inlinable public var source: MACAddress { MACAddress(bytes, at: 6) }
    @inlinable public var payload: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[payloadOffset...])
    }
}

extension Ethernet {
    /// Writes an untagged header at `offset`; returns its length.
    @inlinable @discardableResult
    public static func writeHeader(to bytes: UnsafeMutableRawBufferPointer, at offset: Int,
                                   destination: MACAddress, source: MACAddress, etherType: UInt16) -> Int {
        destination.write(to: bytes, at: offset)
        source.write(to: bytes, at: offset + 6)
        bytes.setU16(etherType, at: offset + 12)
        return headerLength
    }
}
