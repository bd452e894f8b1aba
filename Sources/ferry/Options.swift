import ArgumentParser
import FerryCapture
import FerryEngine
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

/// Parsers that turn a bad value into a message that says what would be right.
enum Parse {
    static func address(_ text: String) throws -> IPAddress {
        guard let a = IPAddress(text) else {
            throw ValidationError("'\(text)' is not an IPv4 or IPv6 address; write e.g. 10.99.0.1 or fd00:99::1")
        }
        return a
    }

    static func prefix(_ text: String) throws -> IPPrefix {
        do {
            return try IPPrefix(parsing: text)
        } catch {
            throw ValidationError("--accept-cidr \(error)")
        }
    }

    static func mac(_ text: String) throws -> MACAddress {
        guard let m = MACAddress(text) else {
            throw ValidationError("'\(text)' is not a MAC address; write six hex octets, e.g. 02:00:00:00:00:01")
        }
        return m
    }

    /// Decimal, or hexadecimal with 0x.
    static func integer<T: FixedWidthInteger>(_ text: String, _ what: String, in range: ClosedRange<T>) throws -> T {
        let hex = text.lowercased().hasPrefix("0x")
        // Parsed wide, so that a number too big for T is "out of range", not "not a number".
        guard let wide = hex ? Int128(text.dropFirst(2), radix: 16) : Int128(text) else {
            throw ValidationError("\(what) '\(text)' is not a number; use \(range.lowerBound) to \(range.upperBound) (decimal, or hex with 0x)")
        }
        guard wide >= Int128(range.lowerBound), wide <= Int128(range.upperBound) else {
            throw ValidationError("\(what) '\(text)' is out of range; use \(range.lowerBound) to \(range.upperBound)")
        }
        return T(wide)
    }

    static func vni(_ text: String) throws -> UInt32 { try integer(text, "VNI", in: 0...VXLAN.maximumVNI) }
    static func key(_ text: String) throws -> UInt32 { try integer(text, "GRE key", in: 0...UInt32.max) }
    static func port(_ text: String) throws -> UInt16 { try integer(text, "port", in: 1...UInt16.max) }
    static func ttl(_ text: String) throws -> UInt8 { try integer(text, "TTL", in: 1...UInt8.max) }

    static func tos(_ text: String) throws -> TOSPolicy {
        if text == "inherit" { return .inherit }
        return .fixed(try integer(text, "TOS", in: 0...UInt8.max))
    }

    static func portRange(_ text: String) throws -> ClosedRange<UInt16> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let lo = UInt16(parts[0]), let hi = UInt16(parts[1]), 0 < lo, lo <= hi else {
            throw ValidationError("'\(text)' is not a port range; write LOW-HIGH with 1 <= LOW <= HIGH <= 65535, e.g. 32768-61000")
        }
        return lo...hi
    }

    /// The words that ask for every offload that applies.
    static let wordsForAll: Set<String> = ["on", "true", "all"]

    /// `on`, `off`, or a comma-separated list of offload names (`Offloads.names`); whether the
    /// list makes sense is `EngineConfiguration.check`'s to say.
    static func offloads(_ text: String) throws -> Offloads {
        if wordsForAll.contains(text.lowercased()) { return .all }
        if ["off", "false", "none"].contains(text.lowercased()) { return [] }
        var set: Offloads = []
        for word in text.split(separator: ",", omittingEmptySubsequences: false) {
            let name = word.trimmingCharacters(in: .whitespaces).lowercased()
            guard let offload = Offloads.names.first(where: { $0.name == name })?.offload else {
                let known = Offloads.names.map(\.name).joined(separator: ", ")
                throw ValidationError("--offloads: '\(name)' is not an offload; list some of \(known) (e.g. csum,tso,gso), or say on or off")
            }
            set.insert(offload)
        }
        return set
    }

    static func encapsulation(_ text: String) throws -> TunnelKind {
        guard let k = TunnelKind(rawValue: text.lowercased()) else {
            throw ValidationError("'\(text)' is not an encapsulation; use vxlan or gre")
        }
        return k
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
