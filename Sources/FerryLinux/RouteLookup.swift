import CFerryLinux
import Glibc
import FerryWire

/// Where the kernel would send a packet: the output device and the link-layer address of the
/// next hop, as its routing and neighbour tables say now (rtnetlink RTM_GETROUTE, then
/// RTM_GETNEIGH). What a sender that writes whole frames to the device needs.
public struct LinkNextHop: Equatable, Sendable, CustomStringConvertible {
    public var interfaceIndex: Int32
    public var mac: MACAddress

    public init(interfaceIndex: Int32, mac: MACAddress) {
        self.interfaceIndex = interfaceIndex
        self.mac = mac
    }

    public var description: String { "\(deviceName) \(mac)" }

    /// The output device's name, or its index if it has gone.
    public var deviceName: String { RouteLookup.deviceName(interfaceIndex) ?? "#\(interfaceIndex)" }
}

public enum RouteLookup {
    /// What the kernel's tables say about reaching an address over a link.
    public enum Answer: Equatable, Sendable {
        /// `stale`: the kernel has not confirmed the neighbour lately (NUD_STALE). Packets on
        /// the link path do not confirm it either: `confirm` asks the kernel to probe it.
        case resolved(LinkNextHop, nextHop: IPAddress, stale: Bool)
        /// The next hop (the address itself, or its gateway) has no link-layer address yet
        /// (never sent to, or it failed to answer ARP or neighbour discovery).
        case unresolved(nextHop: IPAddress)
        /// Not a unicast route out of an Ethernet device (a local address, a blackhole or
        /// unreachable route, a tunnel or other device without Ethernet addresses), or no route.
        case notOverEthernet(String)
        /// The lookup itself failed (rtnetlink unavailable, timed out, or an unexpected error):
        /// nothing is known, so whatever was known before still stands.
        case lookupFailed(String)
    }

    /// Looks up how a packet from `source` to `destination` leaves this host (in the calling
    /// thread's network namespace).
    public static func nextHop(to destination: IPAddress, from source: IPAddress?) -> Answer {
        guard let netlink = Netlink() else { return .lookupFailed("no rtnetlink socket: \(String(cString: strerror(errno)))") }
        defer { close(netlink.fd) }
        let family = UInt8(destination.isIPv6 ? AF_INET6 : AF_INET)
        let bits = UInt8(destination.isIPv6 ? 128 : 32)

        // RTM_GETROUTE: struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags }.
        var request = [family, bits, source == nil ? 0 : bits, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        Netlink.appendAttribute(&request, type: rtaDestination, bytes: addressBytes(destination))
        if let source { Netlink.appendAttribute(&request, type: rtaSource, bytes: addressBytes(source)) }
        let (reply, error) = netlink.exchange(type: rtmGetRoute, flags: 1, body: request, reply: rtmNewRoute)
        guard let route = reply else {
            // The kernel says there is no route; anything else is a failed lookup.
            if let error, [ENETUNREACH, EHOSTUNREACH, EACCES, EPERM, EINVAL].contains(-error) {
                return .notOverEthernet("no route to \(destination) (\(String(cString: strerror(-error))))")
            }
            return .lookupFailed(error.map { "route lookup: \(String(cString: strerror(-$0)))" } ?? "route lookup: no answer")
        }
        guard route.count >= 12 else { return .lookupFailed("a short route reply") }
        let routeType = route[7]
        guard routeType == rtnUnicast else {
            return .notOverEthernet(routeType == rtnLocal ? "\(destination) is an address of this host" : "route type \(routeType)")
        }
        var interface: Int32?
        var gateway: IPAddress?
        var viaOtherFamily = false
        Netlink.forEachAttribute(route, from: 12) { type, value in
            switch type {
            case rtaOutputInterface where value.count == 4: interface = value.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
            case rtaGateway: gateway = address(value)
            case rtaVia: viaOtherFamily = true
            default: break
            }
        }
        guard let interface else { return .notOverEthernet("the route to \(destination) names no device") }
        guard !viaOtherFamily else { return .notOverEthernet("the route goes through a gateway of the other IP version") }
        let device = deviceName(interface) ?? "#\(interface)"
        guard isEthernet(device) else { return .notOverEthernet("device \(device) is not Ethernet") }
        let hop = gateway ?? destination

        // RTM_GETNEIGH: struct ndmsg { family, pad, pad16; s32 ifindex; u16 state; u8 flags, type }.
        var neighbour = [family, 0, 0, 0] + withUnsafeBytes(of: interface) { Array($0) } + [0, 0, 0, 0]
        Netlink.appendAttribute(&neighbour, type: ndaDestination, bytes: addressBytes(hop))
        let (found, missing) = netlink.exchange(type: rtmGetNeighbour, flags: 1, body: neighbour, reply: rtmNewNeighbour)
        guard let entry = found, entry.count >= 12 else {
            // No entry (ENOENT) until the kernel has sent to the neighbour once.
            if let missing, -missing != ENOENT { return .lookupFailed("neighbour lookup on \(device): \(String(cString: strerror(-missing)))") }
            return .unresolved(nextHop: hop)
        }
        let state = entry.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt16.self) }  // host order, as all of rtnetlink
        var mac: MACAddress?
        Netlink.forEachAttribute(entry, from: 12) { type, value in
            if type == ndaLinkAddress, value.count == 6 { mac = value.withUnsafeBytes { MACAddress($0, at: 0) } }
        }
        // An entry still being resolved, or that failed, has no address to trust.
        guard state & (nudIncomplete | nudFailed) == 0, state != 0, let mac, mac != .zero else { return .unresolved(nextHop: hop) }
        return .resolved(LinkNextHop(interfaceIndex: interface, mac: mac), nextHop: hop, stale: state & nudStale != 0)
    }

    /// The name of device `index` (in the calling thread's namespace), if it exists.
    static func deviceName(_ index: Int32) -> String? {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(IF_NAMESIZE) + 1) { name in
            name.initialize(repeating: 0)
            return if_indextoname(UInt32(index), name.baseAddress!).map { String(cString: $0) }
        }
    }

    /// Whether device `name`'s hardware type is Ethernet (ARPHRD_ETHER: physical NICs, veth,
    /// bridges, bonds, VLANs), not loopback, tun, WireGuard, GRE, IPoIB…
    static func isEthernet(_ name: String) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return cferry_if_get_hwtype(fd, name) == 1 /* ARPHRD_ETHER */
    }

    /// Has the kernel treat the neighbour entry for `hop` on `interfaceIndex` as used by a
    /// packet (RTM_NEWNEIGH with NTF_USE): a stale entry is probed again, and either confirmed
    /// or, if the neighbour is gone, failed, so that the next lookup sees it. True when the
    /// kernel took the request.
    @discardableResult
    public static func confirm(_ hop: IPAddress, interfaceIndex: Int32) -> Bool {
        guard let netlink = Netlink() else { return false }
        defer { close(netlink.fd) }
        // struct ndmsg with ndm_state NUD_NONE and ndm_flags NTF_USE.
        var body = [UInt8(hop.isIPv6 ? AF_INET6 : AF_INET), 0, 0, 0] + withUnsafeBytes(of: interfaceIndex) { Array($0) }
            + [0, 0, ntfUse, 0]
        Netlink.appendAttribute(&body, type: ndaDestination, bytes: addressBytes(hop))
        return netlink.acknowledged(type: rtmNewNeighbour, body: body)
    }

    static func addressBytes(_ a: IPAddress) -> [UInt8] {
        switch a {
        case .v4(let v): return withUnsafeBytes(of: v.value.bigEndian) { Array($0) }
        case .v6(let v):
            var bytes = [UInt8](repeating: 0, count: 16)
            bytes.withUnsafeMutableBytes { v.write(to: $0, at: 0) }
            return bytes
        }
    }

    static func address(_ bytes: [UInt8]) -> IPAddress? {
        switch bytes.count {
        case 4: return .v4(IPv4Address(bytes[0], bytes[1], bytes[2], bytes[3]))
        case 16: return bytes.withUnsafeBytes { .v6(IPv6Address($0, at: 0)) }
        default: return nil
        }
    }

    // From <linux/rtnetlink.h> and <linux/neighbour.h>.
    static let rtmNewRoute: UInt16 = 24, rtmGetRoute: UInt16 = 26
    static let rtmNewNeighbour: UInt16 = 28, rtmGetNeighbour: UInt16 = 30
    static let rtaDestination: UInt16 = 1, rtaSource: UInt16 = 2, rtaOutputInterface: UInt16 = 4, rtaGateway: UInt16 = 5
    static let rtaVia: UInt16 = 18
    static let ndaDestination: UInt16 = 1, ndaLinkAddress: UInt16 = 2
    static let rtnUnicast: UInt8 = 1, rtnLocal: UInt8 = 2
    static let nudIncomplete: UInt16 = 0x01, nudStale: UInt16 = 0x04, nudFailed: UInt16 = 0x20
    static let ntfUse: UInt8 = 0x01
}

/// One rtnetlink request and its answer, for lookups made now and then (not per packet).
struct Netlink {
    let fd: Int32

    init?() {
        fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0 /* NETLINK_ROUTE */)
        guard fd >= 0 else { return nil }
        // The kernel answers at once; a second is a generous bound on a wedged socket.
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends a request of `type` with `body`; returns the body of the `reply`-type answer, or
    /// nil for an error answer (no such route or neighbour) or none.
    func request(type: UInt16, body: [UInt8], reply: UInt16) -> [UInt8]? {
        exchange(type: type, flags: 1 /* NLM_F_REQUEST */, body: body, reply: reply).reply
    }

    /// Sends a request the kernel answers only with an acknowledgement; true when it is no error.
    func acknowledged(type: UInt16, body: [UInt8]) -> Bool {
        exchange(type: type, flags: 1 | 4 /* NLM_F_REQUEST | NLM_F_ACK */, body: body, reply: 0).error == 0
    }

    func exchange(type: UInt16, flags: UInt16, body: [UInt8], reply: UInt16) -> (reply: [UInt8]?, error: Int32?) {
        let sequence = UInt32.random(in: 1...UInt32.max)
        // struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid }.
        var message = [UInt8]()
        message += withUnsafeBytes(of: UInt32(16 + body.count)) { Array($0) }
        message += withUnsafeBytes(of: type) { Array($0) }
        message += withUnsafeBytes(of: flags) { Array($0) }
        message += withUnsafeBytes(of: sequence) { Array($0) }
        message += [0, 0, 0, 0]
        message += body
        // struct sockaddr_nl { family; pad; u32 pid; u32 groups }: pid 0 is the kernel.
        var kernel = sockaddr_storage()
        kernel.ss_family = sa_family_t(AF_NETLINK)
        let sent = message.withUnsafeBytes { bytes in
            withUnsafePointer(to: &kernel) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes.baseAddress, bytes.count, 0, $0, 12) }
            }
        }
        guard sent == message.count else { return (nil, nil) }
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n >= 16 else { return (nil, nil) }
            var at = 0
            while at + 16 <= n {
                let (length, kind, seq) = buffer.withUnsafeBytes {
                    ($0.loadUnaligned(fromByteOffset: at, as: UInt32.self), $0.loadUnaligned(fromByteOffset: at + 4, as: UInt16.self),
                     $0.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self))
                }
                guard length >= 16, at + Int(length) <= n else { return (nil, nil) }
                if seq == sequence {
                    if kind == reply { return (Array(buffer[(at + 16)..<(at + Int(length))]), nil) }
                    if kind == 2 /* NLMSG_ERROR: s32 error, then the request's header */, length >= 20 {
                        return (nil, buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at + 16, as: Int32.self) })
                    }
                    if kind == 3 /* NLMSG_DONE */ { return (nil, nil) }
                }
                at += (Int(length) + 3) & ~3
            }
        }
    }

    /// Appends a struct rtattr { u16 len; u16 type } and its value, padded to 4 bytes.
    static func appendAttribute(_ body: inout [UInt8], type: UInt16, bytes: [UInt8]) {
        body += withUnsafeBytes(of: UInt16(4 + bytes.count)) { Array($0) }
        body += withUnsafeBytes(of: type) { Array($0) }
        body += bytes
        body += [UInt8](repeating: 0, count: (4 - bytes.count % 4) % 4)
    }

    /// Calls `body` with each attribute's type (without its flag bits) and value.
    static func forEachAttribute(_ message: [UInt8], from start: Int, _ body: (UInt16, [UInt8]) -> Void) {
        var at = start
        while at + 4 <= message.count {
            let length = Int(UInt16(message[at]) | UInt16(message[at + 1]) << 8)
            let type = (UInt16(message[at + 2]) | UInt16(message[at + 3]) << 8) & 0x3FFF
            guard length >= 4, at + length <= message.count else { return }
            body(type, Array(message[(at + 4)..<(at + length)]))
            at += (length + 3) & ~3
        }
    }
}
