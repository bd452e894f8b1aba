import FerryLinux

/// The offloads Ferry may use, each one probed at start (the kernel may refuse it), set aside
/// for a back-off when the kernel refuses it later, and each one switchable, under the names `ethtool -k`
/// users know. What all of them buy together is in the README's benchmark table ("offloads off").
public struct Offloads: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The TAP hands frames over with checksums left to finish, and takes them back so
    /// (TUN_F_CSUM, with a virtio-net header on every frame). The other TAP offloads need it.
    public static let checksum = Offloads(rawValue: 1 << 0)
    /// The TAP hands over TCP super-frames of up to 64 KiB (TUN_F_TSO4, TUN_F_TSO6), which
    /// Ferry cuts to the tunnel's size.
    public static let tcpSegmentation = Offloads(rawValue: 1 << 1)
    /// The TAP hands over, and takes, UDP super-frames (TUN_F_USO4, TUN_F_USO6; Linux 6.2).
    public static let udpSegmentation = Offloads(rawValue: 1 << 2)
    /// VXLAN leaves through UDP sockets with `UDP_SEGMENT`: one send for many packets of a flow.
    public static let genericSegmentation = Offloads(rawValue: 1 << 3)
    /// VXLAN arrives through a `UDP_GRO` socket (one receive for many packets), and received
    /// segments of a flow are joined into super-frames for the TAP (which needs `checksum`).
    public static let genericReceive = Offloads(rawValue: 1 << 4)

    public static let all: Offloads = [.checksum, .tcpSegmentation, .udpSegmentation, .genericSegmentation, .genericReceive]

    /// The names on the command line and in logs, in this order.
    public static let names: [(name: String, offload: Offloads)] = [
        ("csum", .checksum), ("tso", .tcpSegmentation), ("uso", .udpSegmentation),
        ("gso", .genericSegmentation), ("gro", .genericReceive),
    ]

    /// The TUNSETOFFLOAD flags these ask of the TAP (0: no virtio-net header at all).
    public var tapFlags: UInt32 {
        guard contains(.checksum) else { return 0 }
        var flags = TAPDevice.offloadChecksum
        if contains(.tcpSegmentation) { flags |= TAPDevice.offloadTSO4 | TAPDevice.offloadTSO6 }
        if contains(.udpSegmentation) { flags |= TAPDevice.offloadUSO4 | TAPDevice.offloadUSO6 }
        return flags
    }

    /// The TAP offloads that TUNSETOFFLOAD `flags` stand for.
    public init(tapFlags flags: UInt32) {
        self = []
        if flags & TAPDevice.offloadChecksum != 0 { insert(.checksum) }
        if flags & TAPDevice.offloadTSO4 != 0 { insert(.tcpSegmentation) }
        if flags & TAPDevice.offloadUSO4 != 0 { insert(.udpSegmentation) }
    }

    /// The names, comma-separated; "none" for none.
    public var description: String {
        let on = Self.names.filter { contains($0.offload) }.map(\.name)
        return on.isEmpty ? "none" : on.joined(separator: ",")
    }
}

/// The offloads an engine uses, decided once at start, and why each other one asked for is not.
public struct OffloadResolution: Sendable, CustomStringConvertible {
    public var inUse: Offloads
    /// In `Offloads.names` order.
    public var notInUse: [(offload: Offloads, reason: String)]

    public func contains(_ offload: Offloads) -> Bool { inUse.contains(offload) }
    public var description: String { inUse.description }
}
