import Glibc
import FerryWire
import SystemPackage

/// The host's links, addresses and routes, read and changed over rtnetlink: what `ferry setup`
/// does instead of running `ip`. Set-up is rare, so each call opens a socket of its own; each
/// change waits for the kernel's acknowledgement and throws its error as a `LinuxError` that
/// names the operation (as the equivalent `ip` command) and, where it helps, the fix.
/// Everything acts in the calling thread's network namespace.
public enum Rtnetlink {
    /// A network device as `ip link` lists it.
    public struct Link: Equatable, Sendable {
        public var index: Int32
        public var name: String
        /// IFLA_INFO_KIND: "bridge", "veth", "vxlan", "tun"…; nil for a plain device.
        public var kind: String?
        /// IFF_UP, set administratively.
        public var isUp: Bool
        /// The device it is a port of (a bridge), if any.
        public var master: Int32?

        public init(index: Int32, name: String, kind: String?, isUp: Bool, master: Int32?) {
            self.index = index
            self.name = name
            self.kind = kind
            self.isUp = isUp
            self.master = master
        }
    }

    /// An address of a device with its prefix length, as `ip addr` lists it.
    public struct Address: Hashable, Sendable, CustomStringConvertible {
        public var interfaceIndex: Int32
        public var address: IPAddress
        public var prefixLength: Int

        public init(interfaceIndex: Int32, address: IPAddress, prefixLength: Int) {
            self.interfaceIndex = interfaceIndex
            self.address = address
            self.prefixLength = prefixLength
        }

        /// The network the address is in (`172.18.0.0/16` for 172.18.0.1/16).
        public var prefix: IPPrefix { IPPrefix(address.masked(to: prefixLength), length: prefixLength)! }
        public var description: String { "\(address)/\(prefixLength)" }
    }

    /// A route of the main table, as `ip route` lists it.
    public struct Route: Hashable, Sendable {
        public var destination: IPPrefix
        /// The output device (RTA_OIF); nil for a route without one (blackhole, multipath).
        public var interfaceIndex: Int32?
        public var gateway: IPAddress?
        /// rtm_protocol: who installed it (2 kernel, 3 boot, 4 static, … `RoutingProtocol.ferry`).
        public var routingProtocol: UInt8
        /// rtm_type: 1 unicast, 2 local, 6 blackhole, 7 unreachable, …
        public var type: UInt8
        public var table: UInt32

        public init(destination: IPPrefix, interfaceIndex: Int32?, gateway: IPAddress?, routingProtocol: UInt8,
                    type: UInt8 = 1, table: UInt32 = Rtnetlink.mainTable) {
            self.destination = destination
            self.interfaceIndex = interfaceIndex
            self.gateway = gateway
            self.routingProtocol = routingProtocol
            self.type = type
            self.table = table
        }

        public var isUnicast: Bool { type == 1 }
    }

    /// RT_TABLE_MAIN: the table `ip route` shows and changes by default.
    public static let mainTable: UInt32 = 254

    // MARK: - Reading

    /// Every device of the namespace.
    public static func links() throws(LinuxError) -> [Link] {
        let messages = try dump("ip link show", type: rtmGetLink, body: [UInt8(AF_UNSPEC)] + [UInt8](repeating: 0, count: 15),
                                reply: rtmNewLink)
        return messages.compactMap { m -> Link? in
            guard m.count >= 16 else { return nil }
            let index = m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
            let flags = m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }
            var name: String?, kind: String?, master: Int32?
            Netlink.forEachAttribute(m, from: 16) { type, value in
                switch type {
                case iflaName: name = cString(value)
                case iflaMaster where value.count >= 4:
                    let v = value.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
                    if v != 0 { master = v }
                case iflaLinkInfo:
                    Netlink.forEachAttribute(value, from: 0) { t, v in if t == iflaInfoKind { kind = cString(v) } }
                default: break
                }
            }
            guard let name else { return nil }
            return Link(index: index, name: name, kind: kind, isUp: flags & UInt32(IFF_UP) != 0, master: master)
        }
    }

    /// Every address of every device (both families).
    public static func addresses() throws(LinuxError) -> [Address] {
        let messages = try dump("ip addr show", type: rtmGetAddress, body: [UInt8(AF_UNSPEC), 0, 0, 0, 0, 0, 0, 0],
                                reply: rtmNewAddress)
        return messages.compactMap { m -> Address? in
            guard m.count >= 8 else { return nil }
            let length = Int(m[1])
            let index = m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
            var local: IPAddress?, address: IPAddress?
            Netlink.forEachAttribute(m, from: 8) { type, value in
                if type == ifaLocal { local = RouteLookup.address(value) }
                if type == ifaAddress { address = RouteLookup.address(value) }
            }
            // IFA_LOCAL is the device's own address; IFA_ADDRESS is the far end's on a point-to-point link.
            guard let a = local ?? address else { return nil }
            return Address(interfaceIndex: index, address: a, prefixLength: length)
        }
    }

    /// The routes of the main table (both families).
    public static func routes() throws(LinuxError) -> [Route] {
        let messages = try dump("ip route show", type: RouteLookup.rtmGetRoute, body: [UInt8](repeating: 0, count: 12),
                                reply: RouteLookup.rtmNewRoute)
        return messages.compactMap { m -> Route? in
            guard m.count >= 12 else { return nil }
            let family = Int32(m[0]), length = Int(m[1])
            var table = UInt32(m[4])
            var destination: IPAddress?, interface: Int32?, gateway: IPAddress?
            Netlink.forEachAttribute(m, from: 12) { type, value in
                switch type {
                case RouteLookup.rtaDestination: destination = RouteLookup.address(value)
                case RouteLookup.rtaOutputInterface where value.count == 4:
                    interface = value.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
                case RouteLookup.rtaGateway: gateway = RouteLookup.address(value)
                case rtaTable where value.count == 4: table = value.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                default: break
                }
            }
            guard table == mainTable, family == AF_INET || family == AF_INET6 else { return nil }
            let zero: IPAddress = family == AF_INET ? .v4(IPv4Address(value: 0)) : .v6(IPv6Address(high: 0, low: 0))
            guard let prefix = IPPrefix(destination ?? zero, length: length) else { return nil }
            return Route(destination: prefix, interfaceIndex: interface, gateway: gateway, routingProtocol: m[5], type: m[7],
                         table: table)
        }
    }

    // MARK: - Changing

    /// `ip link add NAME type bridge`.
    ///
    /// With `address`, the bridge is made with that MAC (`ip link add NAME address MAC type
    /// bridge`), which the kernel then keeps: a bridge made without one takes the lowest MAC of
    /// its ports, and changes it when a port with a lower one joins (a TAP made again by a
    /// restarted ferry, whose MAC is random), and the containers' ARP entries for their gateway
    /// go stale.
    public static func createBridge(named name: String, address: MACAddress? = nil) throws(LinuxError) {
        var body = [UInt8(AF_UNSPEC)] + [UInt8](repeating: 0, count: 15)
        Netlink.appendAttribute(&body, type: iflaName, bytes: Array(name.utf8) + [0])
        if let address {
            Netlink.appendAttribute(&body, type: iflaAddress, bytes: (0..<6).map { UInt8(truncatingIfNeeded: address.value >> (40 - 8 * $0)) })
        }
        var info = [UInt8]()
        Netlink.appendAttribute(&info, type: iflaInfoKind, bytes: Array("bridge".utf8))
        Netlink.appendAttribute(&body, type: iflaLinkInfo, bytes: info)
        try change("ip link add \(name) type bridge", type: rtmNewLink, flags: create | exclusive, body: body) { e in
            e == .fileExists ? "a device named \(name) exists already" : nil
        }
    }

    /// `ip link del NAME`.
    public static func deleteLink(index: Int32, name: String) throws(LinuxError) {
        try change("ip link del \(name)", type: rtmDeleteLink, flags: 0, body: linkMessage(index: index, flags: 0, change: 0))
    }

    /// `ip link set NAME up` (or down).
    public static func setLink(index: Int32, name: String, up: Bool) throws(LinuxError) {
        try change("ip link set \(name) \(up ? "up" : "down")", type: rtmNewLink, flags: 0,
                   body: linkMessage(index: index, flags: up ? UInt32(IFF_UP) : 0, change: UInt32(IFF_UP)))
    }

    /// `ip addr add ADDRESS/LENGTH dev NAME`.
    public static func addAddress(_ a: Address, name: String) throws(LinuxError) {
        try change("ip addr add \(a) dev \(name)", type: rtmNewAddress, flags: create | exclusive, body: addressMessage(a)) { e in
            e == .fileExists ? "\(name) has \(a) already" : nil
        }
    }

    /// `ip addr del ADDRESS/LENGTH dev NAME`.
    public static func deleteAddress(_ a: Address, name: String) throws(LinuxError) {
        try change("ip addr del \(a) dev \(name)", type: rtmDeleteAddress, flags: 0, body: addressMessage(a))
    }

    /// `ip route add DESTINATION [via GATEWAY] dev NAME proto N`: scope link without a gateway,
    /// as `ip` makes it. Fails with EEXIST when the main table has a route to the destination.
    public static func addRoute(_ r: Route, name: String) throws(LinuxError) {
        try change(routeCommand("add", r, name: name), type: RouteLookup.rtmNewRoute, flags: create | exclusive,
                   body: routeMessage(r)) { e in
            switch e {
            case .fileExists: "the main table has a route to \(r.destination) already (ip route show \(r.destination))"
            case .networkUnreachable: "the gateway \(r.gateway.map { "\($0)" } ?? "") is not on a network of \(name)"
            default: nil
            }
        }
    }

    /// `ip route del DESTINATION [via GATEWAY] dev NAME proto N`: the kernel deletes only a route
    /// that matches the protocol, device and gateway given, never another one to the same place.
    public static func deleteRoute(_ r: Route, name: String) throws(LinuxError) {
        try change(routeCommand("del", r, name: name), type: RouteLookup.rtmDeleteRoute, flags: 0, body: routeMessage(r))
    }

    /// The `ip route` command that does what `addRoute` or `deleteRoute` does.
    public static func routeCommand(_ verb: String, _ r: Route, name: String) -> String {
        "ip route \(verb) \(r.destination)" + (r.gateway.map { " via \($0)" } ?? "") + " dev \(name) proto \(r.routingProtocol)"
    }

    // MARK: - Messages

    static func linkMessage(index: Int32, flags: UInt32, change: UInt32) -> [UInt8] {
        // struct ifinfomsg { u8 family; u8 pad; u16 type; s32 index; u32 flags; u32 change }.
        [UInt8(AF_UNSPEC), 0, 0, 0] + bytes(of: index) + bytes(of: flags) + bytes(of: change)
    }

    static func addressMessage(_ a: Address) -> [UInt8] {
        // struct ifaddrmsg { u8 family; u8 prefixlen; u8 flags; u8 scope; u32 index }.
        var body = [UInt8(a.address.isIPv6 ? AF_INET6 : AF_INET), UInt8(a.prefixLength), 0, 0] + bytes(of: a.interfaceIndex)
        let value = RouteLookup.addressBytes(a.address)
        Netlink.appendAttribute(&body, type: ifaLocal, bytes: value)
        Netlink.appendAttribute(&body, type: ifaAddress, bytes: value)
        return body
    }

    static func routeMessage(_ r: Route) -> [UInt8] {
        let family = UInt8(r.destination.address.isIPv6 ? AF_INET6 : AF_INET)
        let scope = r.gateway == nil ? scopeLink : scopeUniverse
        // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags }.
        var body = [family, UInt8(r.destination.length), 0, 0, UInt8(truncatingIfNeeded: min(r.table, 255)), r.routingProtocol,
                    scope, r.type, 0, 0, 0, 0]
        Netlink.appendAttribute(&body, type: RouteLookup.rtaDestination, bytes: RouteLookup.addressBytes(r.destination.address))
        if let i = r.interfaceIndex { Netlink.appendAttribute(&body, type: RouteLookup.rtaOutputInterface, bytes: bytes(of: i)) }
        if let g = r.gateway { Netlink.appendAttribute(&body, type: RouteLookup.rtaGateway, bytes: RouteLookup.addressBytes(g)) }
        Netlink.appendAttribute(&body, type: rtaTable, bytes: bytes(of: r.table))
        return body
    }

    static func bytes<T>(of value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    static func cString(_ value: [UInt8]) -> String { String(decoding: value.prefix { $0 != 0 }, as: UTF8.self) }

    /// Sends a change and waits for the kernel's acknowledgement.
    static func change(_ operation: String, type: UInt16, flags: UInt16, body: [UInt8],
                       hint: ((Errno) -> String?)? = nil) throws(LinuxError) {
        guard let netlink = Netlink() else { throw LinuxError("\(operation): open rtnetlink", errno: Errno(rawValue: errno)) }
        defer { close(netlink.fd) }
        let (_, error) = netlink.exchange(type: type, flags: request | acknowledge | flags, body: body, reply: 0)
        guard let error else { throw LinuxError(operation, errno: .timedOut, hint: "rtnetlink did not answer") }
        guard error == 0 else {
            let e = Errno(rawValue: -error)
            throw LinuxError(operation, errno: e, hint: hint?(e) ?? (e == .notPermitted ? "needs root (CAP_NET_ADMIN)" : nil))
        }
    }

    /// Sends a dump request and gathers the bodies of every `reply` message until NLMSG_DONE.
    static func dump(_ operation: String, type: UInt16, body: [UInt8], reply: UInt16) throws(LinuxError) -> [[UInt8]] {
        guard let netlink = Netlink() else { throw LinuxError("\(operation): open rtnetlink", errno: Errno(rawValue: errno)) }
        defer { close(netlink.fd) }
        let sequence = UInt32.random(in: 1...UInt32.max)
        var message = bytes(of: UInt32(16 + body.count)) + bytes(of: type) + bytes(of: request | dumpAll) + bytes(of: sequence)
        message += [0, 0, 0, 0] + body
        var kernel = sockaddr_storage()
        kernel.ss_family = sa_family_t(AF_NETLINK)
        let sent = message.withUnsafeBytes { b in
            withUnsafePointer(to: &kernel) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(netlink.fd, b.baseAddress, b.count, 0, $0, 12) }
            }
        }
        guard sent == message.count else { throw LinuxError("\(operation): send", errno: Errno(rawValue: errno)) }
        var found: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(netlink.fd, $0.baseAddress, $0.count, 0) }
            guard n >= 16 else {
                throw LinuxError(operation, errno: n < 0 ? Errno(rawValue: errno) : .timedOut, hint: "the dump ended early")
            }
            var at = 0
            while at + 16 <= n {
                let (length, kind, seq) = buffer.withUnsafeBytes {
                    ($0.loadUnaligned(fromByteOffset: at, as: UInt32.self), $0.loadUnaligned(fromByteOffset: at + 4, as: UInt16.self),
                     $0.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self))
                }
                guard length >= 16, at + Int(length) <= n else { throw LinuxError(operation, errno: .badMessage) }
                if seq == sequence {
                    if kind == 3 /* NLMSG_DONE */ { return found }
                    if kind == 2 /* NLMSG_ERROR */, length >= 20 {
                        let e = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at + 16, as: Int32.self) }
                        throw LinuxError(operation, errno: Errno(rawValue: -e))
                    }
                    if kind == reply { found.append(Array(buffer[(at + 16)..<(at + Int(length))])) }
                }
                at += (Int(length) + 3) & ~3
            }
        }
    }

    // From <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h> and <linux/if_addr.h>.
    static let request: UInt16 = 0x1, acknowledge: UInt16 = 0x4, dumpAll: UInt16 = 0x300
    static let exclusive: UInt16 = 0x200, create: UInt16 = 0x400
    static let rtmNewLink: UInt16 = 16, rtmDeleteLink: UInt16 = 17, rtmGetLink: UInt16 = 18
    static let rtmNewAddress: UInt16 = 20, rtmDeleteAddress: UInt16 = 21, rtmGetAddress: UInt16 = 22
    static let iflaAddress: UInt16 = 1, iflaName: UInt16 = 3, iflaMaster: UInt16 = 10, iflaLinkInfo: UInt16 = 18, iflaInfoKind: UInt16 = 1
    static let ifaAddress: UInt16 = 1, ifaLocal: UInt16 = 2
    static let rtaTable: UInt16 = 15
    static let scopeUniverse: UInt8 = 0, scopeLink: UInt8 = 253
}

extension RouteLookup {
    static let rtmDeleteRoute: UInt16 = 25
}
