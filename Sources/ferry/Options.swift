import ArgumentParser
import FerryCapture
import FerryEngine
import FerrySettings
import FerryWire

/// `--filter EXPR`, shared by every command that reads a capture.
struct FilterOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Only frames matching this tcpdump-syntax expression are read (e.g. \"udp port 4789\").",
                                            valueName: "expr"))
    var filter: String?

    /// The compiled filter, or nil for every frame. A bad expression is a clear error.
    func compiled() throws -> PacketFilter? {
        guard let filter else { return nil }
        return try PacketFilter(expression: filter)
    }
}

/// The options that describe one tunnel, as `ip link add type vxlan` or an OVS tunnel port
/// would take them.
struct TunnelFlags: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("vxlan or gre (inferred from --vni or --key when omitted).", valueName: "type"),
            transform: Parse.encapsulation)
    var encap: TunnelKind?

    @Option(name: .long, help: "VXLAN network identifier, 0 to 16777215.", transform: Parse.vni)
    var vni: UInt32?

    @Option(name: .long, help: "GRE key (RFC 2890), 0 to 4294967295; omit for GRE without a key.", transform: Parse.key)
    var key: UInt32?

    @Option(name: .long, help: ArgumentHelp("Outer source address (IPv4 or IPv6).", valueName: "ip"), transform: Parse.address)
    var local: IPAddress

    @Option(name: .long, help: ArgumentHelp("Outer destination address, of the same IP version.", valueName: "ip"),
            transform: Parse.address)
    var remote: IPAddress

    @Option(name: .long, help: "VXLAN UDP destination port.", transform: Parse.port)
    var dstport: UInt16 = VXLAN.defaultPort

    @Option(name: .long, help: ArgumentHelp("UDP source ports, chosen per inner flow within this range.", valueName: "low-high"),
            transform: Parse.portRange)
    var srcPortRange: ClosedRange<UInt16> = TunnelOptions.defaultSourcePortRange

    @Option(name: .long, help: "Outer TTL or hop limit, 1 to 255.", transform: Parse.ttl)
    var ttl: UInt8 = 64

    @Option(name: .long, help: ArgumentHelp("Outer TOS / traffic class, 0 to 255, or 'inherit' to copy the inner packet's.",
                                            valueName: "tos"), transform: Parse.tos)
    var tos: TOSPolicy = .fixed(0)

    @Flag(name: .long, help: "Set DF on the outer IPv4 header.")
    var df = false

    @Flag(name: .long, inversion: .prefixedNo,
          help: "Outer UDP checksum (default: off over IPv4, as Linux; on over IPv6).")
    var udpCsum: Bool?

    @Flag(name: .long, help: "GRE checksum (C bit).")
    var greCsum = false

    @Flag(name: .long, help: "GRE sequence numbers (S bit), counting from 0.")
    var greSeq = false

    @Option(name: .long, help: ArgumentHelp("Outer source MAC.", valueName: "mac"), transform: Parse.mac)
    var localMac: MACAddress = MACAddress(0x02, 0, 0, 0, 0, 0x01)

    @Option(name: .long, help: ArgumentHelp("Outer destination MAC.", valueName: "mac"), transform: Parse.mac)
    var remoteMac: MACAddress = MACAddress(0x02, 0, 0, 0, 0, 0x02)

    /// The tunnel the flags name, by the same rules (and words) as `ferry run`'s.
    func encapsulation() throws(ConfigurationError) -> Encapsulation {
        let e = try Encapsulation(kind: encap, vni: vni, greKey: key, greChecksum: greCsum, greSequence: greSeq)
        if case .gre = e, udpCsum != nil { throw .udpChecksumWithGRE }
        return e
    }

    func validate() throws {
        do { _ = try encapsulation() } catch { throw ValidationError(error.description) }
        guard local.isIPv6 == remote.isIPv6 else {
            throw ValidationError("--local \(local) and --remote \(remote) are of different IP versions; give both as IPv4 or both as IPv6")
        }
    }

    func tunnelOptions() throws -> TunnelOptions {
        try TunnelOptions(encapsulation: try encapsulation(), local: local, remote: remote, destinationPort: dstport,
                                 sourcePortRange: srcPortRange, ttl: ttl, tos: tos, dontFragment: df ? .set : .unset,
                                 udpChecksum: udpCsum, localMAC: localMac, remoteMAC: remoteMac)
    }
}

/// Raised for what a user must fix outside the command line (files, captures).
struct ToolError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
