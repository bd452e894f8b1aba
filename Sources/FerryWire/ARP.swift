// ARP for IPv4 over Ethernet (RFC 826): enough to read what crosses a tunnel and to build test
// and sample traffic.

public enum ARP {
    public static let length = 28
    public static let request: UInt16 = 1
    public static let reply: UInt16 = 2

    /// Writes an Ethernet/IPv4 ARP packet at `offset`; returns its length.
    @discardableResult
    public static func write(to bytes: UnsafeMutableRawBufferPointer, at offset: Int, operation: UInt16,
                             senderMAC: MACAddress, senderIP: IPv4Address,
                             targetMAC: MACAddress, targetIP: IPv4Address) -> Int {
        bytes.setU16(1, at: offset)                    // hardware type: Ethernet
        bytes.setU16(EtherType.ipv4, at: offset + 2)   // protocol type
        bytes.setU8(6, at: offset + 4)
        bytes.setU8(4, at: offset + 5)
        bytes.setU16(operation, at: offset + 6)
        senderMAC.write(to: bytes, at: offset + 8)
        senderIP.write(to: bytes, at: offset + 14)
        targetMAC.write(to: bytes, at: offset + 18)
        targetIP.write(to: bytes, at: offset + 24)
        return length
    }
}

/// A read-only view of an Ethernet/IPv4 ARP packet.
public struct ARPView {
    public let bytes: UnsafeRawBufferPointer
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= ARP.length, bytes.u16(0) == 1, bytes.u16(2) == EtherType.ipv4,
              bytes[4] == 6, bytes[5] == 4 else { return nil }
        self.bytes = bytes
    }
    public var operation: UInt16 { bytes.u16(6) }
    public var senderMAC: MACAddress { MACAddress(bytes, at: 8) }
    public var senderIP: IPv4Address { IPv4Address(bytes, at: 14) }
    public var targetMAC: MACAddress { MACAddress(bytes, at: 18) }
    public var targetIP: IPv4Address { IPv4Address(bytes, at: 24) }
}
