import FerryWire
import Foundation

/// Where Ferry keeps a network's membership in etcd, after flannel's layout:
///
/// - `<prefix>/config`: the network (`NetworkConfig`, JSON), written once by `ferry etcd init`.
/// - `<prefix>/hosts/<underlay address>`: one host (`HostRecord`, JSON) under a lease the host
///   keeps alive; when the host dies the lease lapses and the key goes, and every other host
///   drops it as a peer.
/// - `<prefix>/subnets/<subnet, / written ->` (e.g. `10.16.3.0-24`): a host's container subnet,
///   taken from the range by a create-if-absent transaction (`SubnetRecord`), under the same lease.
///
/// A prefix has no trailing slash (`/ferry/network`).
public struct MembershipLayout: Sendable, Equatable {
    public static let defaultPrefix = "/ferry/network"

    public let prefix: String

    /// `prefix` with any trailing slashes dropped; it must start with `/`.
    public init(prefix: String) {
        var p = prefix
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        self.prefix = p
    }

    public var configKey: String { prefix + "/config" }
    public var hostsPrefix: String { prefix + "/hosts/" }
    public var subnetsPrefix: String { prefix + "/subnets/" }

    public func hostKey(_ address: IPAddress) -> String { hostsPrefix + address.description }
    public func subnetKey(_ subnet: IPPrefix) -> String {
        subnetsPrefix + subnet.description.replacingOccurrences(of: "/", with: "-")
    }

    /// The subnet a `<prefix>/subnets/…` key names; nil for any other key.
    public func subnet(ofKey key: String) -> IPPrefix? {
        guard key.hasPrefix(subnetsPrefix) else { return nil }
        let name = String(key.dropFirst(subnetsPrefix.count))
        guard let dash = name.lastIndex(of: "-") else { return nil }
        return try? IPPrefix(parsing: name[..<dash] + "/" + name[name.index(after: dash)...])
    }

    /// The address a `<prefix>/hosts/…` key names; nil for any other key.
    public func address(ofHostKey key: String) -> IPAddress? {
        guard key.hasPrefix(hostsPrefix) else { return nil }
        return IPAddress(String(key.dropFirst(hostsPrefix.count)))
    }
}

/// `<prefix>/config`: the tunnel every host uses and, optionally, the container range hosts
/// take their subnets from.
public struct NetworkConfig: Codable, Sendable, Equatable {
    /// `vxlan` or `gre`.
    public var encapsulation: String
    /// The VXLAN network identifier (VXLAN).
    public var vni: UInt32?
    /// The GRE key (GRE; none: GRE without a key).
    public var key: UInt32?
    /// The VXLAN UDP port (none: 4789).
    public var port: UInt16?
    /// Other `ferry run` options every host takes (`udp-csum: "true"`, `gre-csum`, …), as text.
    public var options: [String: String]?
    /// The cluster's container range, e.g. `10.16.0.0/12`; none: one flat L2 segment.
    public var network: String?
    /// The length of each host's subnet inside `network` (e.g. 24).
    public var subnetLength: Int?

    public init(encapsulation: String, vni: UInt32? = nil, key: UInt32? = nil, port: UInt16? = nil,
                options: [String: String]? = nil, network: String? = nil, subnetLength: Int? = nil) {
        self.encapsulation = encapsulation
        self.vni = vni
        self.key = key
        self.port = port
        self.options = options
        self.network = network
        self.subnetLength = subnetLength
    }

    /// The range and subnet length, checked; nil without a range.
    public func range() throws(MembershipError) -> (network: IPPrefix, subnetLength: Int)? {
        guard let network else {
            if subnetLength != nil { throw MembershipError("the network config has subnetLength but no network (the range to take subnets from)") }
            return nil
        }
        let prefix: IPPrefix
        do { prefix = try IPPrefix(parsing: network) } catch {
            throw MembershipError("the network config's range '\(network)' is not a prefix: \(error)")
        }
        guard !prefix.address.isIPv6 else { throw MembershipError("the network config's range \(network) is IPv6; ranges are IPv4 (as flannel's)") }
        let length = subnetLength ?? min(prefix.length + 8, 24)
        guard length > prefix.length, length <= 30 else {
            throw MembershipError("subnetLength \(length) must be longer than the range's /\(prefix.length) and at most 30")
        }
        return (prefix, length)
    }

    /// Checks what a host cannot run with.
    public func check() throws(MembershipError) {
        switch encapsulation {
        case "vxlan": guard vni != nil else { throw MembershipError("the network config says vxlan but has no vni") }
        case "gre": break
        default: throw MembershipError("the network config's encapsulation '\(encapsulation)' is not vxlan or gre")
        }
        _ = try range()
    }

    public func encoded() -> [UInt8] { MembershipJSON.encode(self) }
    public static func decode(_ bytes: [UInt8], key: String) throws(MembershipError) -> NetworkConfig {
        try MembershipJSON.decode(NetworkConfig.self, bytes, key: key)
    }
}

/// `<prefix>/hosts/<address>`: one host as it registered.
public struct HostRecord: Codable, Sendable, Equatable {
    /// The underlay address (the key's last part).
    public var address: String
    /// Its container subnet, if it has one (taken from the range, or configured).
    public var subnet: String?
    /// Ferry's version on that host.
    public var version: String
    /// When the host registered (ISO 8601, UTC).
    public var since: String

    public init(address: String, subnet: String?, version: String, since: String) {
        self.address = address
        self.subnet = subnet
        self.version = version
        self.since = since
    }

    public func encoded() -> [UInt8] { MembershipJSON.encode(self) }
    public static func decode(_ bytes: [UInt8], key: String) throws(MembershipError) -> HostRecord {
        try MembershipJSON.decode(HostRecord.self, bytes, key: key)
    }
}

/// `<prefix>/subnets/<subnet>`: who holds a subnet.
public struct SubnetRecord: Codable, Sendable, Equatable {
    /// The holder's underlay address.
    public var address: String

    public init(address: String) { self.address = address }

    public func encoded() -> [UInt8] { MembershipJSON.encode(self) }
    public static func decode(_ bytes: [UInt8], key: String) throws(MembershipError) -> SubnetRecord {
        try MembershipJSON.decode(SubnetRecord.self, bytes, key: key)
    }
}

/// What is wrong with membership: the network config, a record, or the store's answer.
public struct MembershipError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

enum MembershipJSON {
    static func encode(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding these plain structs cannot fail.
        return Array(try! encoder.encode(value))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], key: String) throws(MembershipError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw MembershipError("etcd key \(key) does not hold what Ferry wrote there (\(String(decoding: bytes.prefix(200), as: UTF8.self))): \(error)")
        }
    }
}
