import FerryEngine
import FerryWire
import Foundation

/// Parsers that turn a bad value into a message that says what would be right. The command
/// line uses them as its flags' transforms, the config file for its keys' values.
public enum Parse {
    public static func address(_ text: String) throws(SettingsError) -> IPAddress {
        guard let a = IPAddress(text) else {
            throw SettingsError("'\(text)' is not an IPv4 or IPv6 address; write e.g. 10.99.0.1 or fd00:99::1")
        }
        return a
    }

    /// A prefix; `what` names the option in the message.
    public static func prefix(_ text: String, _ what: String = "--accept-cidr") throws(SettingsError) -> IPPrefix {
        do {
            return try IPPrefix(parsing: text)
        } catch {
            throw SettingsError("\(what) \(error)")
        }
    }

    public static func mac(_ text: String) throws(SettingsError) -> MACAddress {
        guard let m = MACAddress(text) else {
            throw SettingsError("'\(text)' is not a MAC address; write six hex octets, e.g. 02:00:00:00:00:01")
        }
        return m
    }

    /// Decimal, or hexadecimal with 0x.
    public static func integer<T: FixedWidthInteger>(_ text: String, _ what: String, in range: ClosedRange<T>) throws(SettingsError) -> T {
        let hex = text.lowercased().hasPrefix("0x")
        // Parsed wide, so that a number too big for T is "out of range", not "not a number".
        guard let wide = hex ? Int128(text.dropFirst(2), radix: 16) : Int128(text) else {
            throw SettingsError("\(what) '\(text)' is not a number; use \(range.lowerBound) to \(range.upperBound) (decimal, or hex with 0x)")
        }
        guard wide >= Int128(range.lowerBound), wide <= Int128(range.upperBound) else {
            throw SettingsError("\(what) '\(text)' is out of range; use \(range.lowerBound) to \(range.upperBound)")
        }
        return T(wide)
    }

    public static func vni(_ text: String) throws(SettingsError) -> UInt32 { try integer(text, "VNI", in: 0...VXLAN.maximumVNI) }
    public static func key(_ text: String) throws(SettingsError) -> UInt32 { try integer(text, "GRE key", in: 0...UInt32.max) }
    public static func port(_ text: String) throws(SettingsError) -> UInt16 { try integer(text, "port", in: 1...UInt16.max) }
    public static func ttl(_ text: String) throws(SettingsError) -> UInt8 { try integer(text, "TTL", in: 1...UInt8.max) }

    public static func tos(_ text: String) throws(SettingsError) -> TOSPolicy {
        if text == "inherit" { return .inherit }
        return .fixed(try integer(text, "TOS", in: 0...UInt8.max))
    }

    public static func portRange(_ text: String) throws(SettingsError) -> ClosedRange<UInt16> {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let lo = UInt16(parts[0]), let hi = UInt16(parts[1]), 0 < lo, lo <= hi else {
            throw SettingsError("'\(text)' is not a port range; write LOW-HIGH with 1 <= LOW <= HIGH <= 65535, e.g. 32768-61000")
        }
        return lo...hi
    }

    /// The words that ask for every offload that applies.
    public static let wordsForAll: Set<String> = ["on", "true", "all"]

    /// `on`, `off`, or a comma-separated list of offload names (`Offloads.names`); whether the
    /// list makes sense is `EngineConfiguration.check`'s to say.
    public static func offloads(_ text: String) throws(SettingsError) -> Offloads {
        if wordsForAll.contains(text.lowercased()) { return .all }
        if ["off", "false", "none"].contains(text.lowercased()) { return [] }
        var set: Offloads = []
        for word in text.split(separator: ",", omittingEmptySubsequences: false) {
            let name = word.trimmingCharacters(in: .whitespaces).lowercased()
            guard let offload = Offloads.names.first(where: { $0.name == name })?.offload else {
                let known = Offloads.names.map(\.name).joined(separator: ", ")
                throw SettingsError("--offloads: '\(name)' is not an offload; list some of \(known) (e.g. csum,tso,gso), or say on or off")
            }
            set.insert(offload)
        }
        return set
    }

    public static func encapsulation(_ text: String) throws(SettingsError) -> TunnelKind {
        guard let k = TunnelKind(rawValue: text.lowercased()) else {
            throw SettingsError("'\(text)' is not an encapsulation; use vxlan or gre")
        }
        return k
    }

    /// A peer: `ADDRESS` or `ADDRESS=SUBNET` (the container subnet behind it).
    public static func peer(_ text: String) throws(SettingsError) -> PeerSpec {
        let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let address = try Self.address(parts[0])
        guard parts.count == 2 else { return PeerSpec(address: address) }
        return PeerSpec(address: address, subnet: try prefix(parts[1], "--peer \(parts[0])=SUBNET:"))
    }

    /// This host's bridge address with its prefix length: `172.18.0.1/16`.
    public static func interfaceAddress(_ text: String) throws(SettingsError) -> InterfaceAddress {
        do {
            return try InterfaceAddress(parsing: text)
        } catch {
            throw SettingsError("--subnet \(error)")
        }
    }

    public static func mode(_ text: String) throws(SettingsError) -> NetworkMode {
        guard let m = NetworkMode(rawValue: text.lowercased()) else {
            throw SettingsError("--mode '\(text)' is not a mode; use tunnel (VXLAN or GRE to every peer), routes (static routes via "
                                + "peers on this host's network, no tunnel) or auto (routes where a peer is on-link, the tunnel elsewhere)")
        }
        return m
    }

    /// `ADDRESS:PORT`, an IPv6 address in brackets: `127.0.0.1:9469`, `[::1]:9469`.
    public static func endpoint(_ text: String, _ what: String) throws(SettingsError) -> Endpoint {
        let host: Substring, portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") {
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else if let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            throw SettingsError("\(what) '\(text)' is not ADDRESS:PORT; write e.g. 127.0.0.1:9469 or [::1]:9469")
        }
        guard let address = IPAddress(String(host)) else {
            throw SettingsError("\(what) '\(text)': '\(host)' is not an IPv4 or IPv6 address; write e.g. 127.0.0.1:9469 or [::1]:9469")
        }
        return Endpoint(address: address, port: try integer(String(portText), "\(what) port", in: 1...UInt16.max))
    }
}

/// An address and a port to listen on.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }
    public var description: String { address.isIPv6 ? "[\(address)]:\(port)" : "\(address):\(port)" }
}
