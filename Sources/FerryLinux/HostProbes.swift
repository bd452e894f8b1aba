import CFerryLinux
import Glibc
import FerryWire

// The few active questions `ferry doctor` asks a host: does a peer answer an echo, does another
// host answer ARP for our address, is transmit checksum offload on for a device, and which route
// a packet to an address takes. Each is bounded in time and sends at most a few packets.

/// What an echo probe saw.
public enum EchoOutcome: Equatable, Sendable {
    /// A reply came after `milliseconds`.
    case answered(milliseconds: Int)
    /// No reply within the time given.
    case silent
    /// The probe could not be sent (no raw socket without root, no route, …).
    case failed(String)
}

public enum HostProbes {
    /// Sends up to `attempts` ICMP (or ICMPv6) echo requests to `address`, each waiting up to
    /// `timeout` seconds for the reply. A raw socket: needs root or CAP_NET_RAW.
    public static func echo(_ address: IPAddress, attempts: Int = 2, timeout: Double = 1) -> EchoOutcome {
        let v6 = address.isIPv6
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                        Int32(v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP))
        guard fd >= 0 else {
            let e = errno
            return .failed("raw ICMP socket: \(String(cString: strerror(e)))" + (e == EPERM || e == EACCES ? " (needs root or CAP_NET_RAW)" : ""))
        }
        defer { close(fd) }
        let identifier = UInt16.random(in: 1...UInt16.max)
        var destination = SocketAddress(address, port: 0)
        for sequence in 1...max(1, attempts) {
            // type, code, checksum, identifier, sequence, 16 bytes of payload.
            var request = [UInt8](repeating: 0, count: 24)
            request[0] = v6 ? 128 : 8
            request[4] = UInt8(identifier >> 8); request[5] = UInt8(identifier & 0xFF)
            request[6] = UInt8(sequence >> 8); request[7] = UInt8(sequence & 0xFF)
            for i in 8..<24 { request[i] = UInt8(i) }
            if !v6 {  // the kernel fills in the ICMPv6 checksum itself
                let sum = request.withUnsafeBytes { InternetChecksum.checksum($0) }
                request[2] = UInt8(sum >> 8); request[3] = UInt8(sum & 0xFF)
            }
            let started = monotonicMilliseconds()
            let sent = request.withUnsafeBytes { bytes in
                withUnsafePointer(to: &destination.storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes.baseAddress, bytes.count, 0, $0, destination.length) }
                }
            }
            guard sent == request.count else { return .failed("echo to \(address): \(String(cString: strerror(errno)))") }
            let deadline = started + Int(timeout * 1000)
            var buffer = [UInt8](repeating: 0, count: 2048)
            while true {
                let left = deadline - monotonicMilliseconds()
                guard left > 0, Poller.wait(fd: fd, events: Int16(POLLIN), milliseconds: Int32(left)) else { break }
                var from = sockaddr_storage()
                var fromLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let n = buffer.withUnsafeMutableBytes { b in
                    withUnsafeMutablePointer(to: &from) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &fromLength) }
                    }
                }
                guard n > 0 else { continue }
                let source = withUnsafePointer(to: &from) { SocketAddress.decode(UnsafeRawPointer($0))?.0 }
                // An IPv4 raw socket hands up the IP header too; an ICMPv6 one only the message.
                let start = v6 ? 0 : Int(buffer[0] & 0x0F) * 4
                guard source == address, n >= start + 8 else { continue }
                let type = buffer[start], id = UInt16(buffer[start + 4]) << 8 | UInt16(buffer[start + 5])
                if type == (v6 ? 129 : 0), id == identifier {
                    return .answered(milliseconds: monotonicMilliseconds() - started)
                }
            }
        }
        return .silent
    }

    /// Probes for another host using `address` on `interface` as RFC 5227 says (an ARP request
    /// from sender address 0.0.0.0 for `address`), and returns the MAC addresses, other than the
    /// interface's own, that answered or announced it within `timeout` seconds.
    public static func arpDuplicates(of address: IPv4Address, on interface: String, timeout: Double = 1) throws(LinuxError) -> [MACAddress] {
        let link = NetworkInterface(interface)
        guard let index = link.index else { throw LinuxError("ARP probe on \(interface)", errno: .operationNotSupportedByDevice, hint: "there is no interface named \(interface)") }
        let own = try link.macAddress()
        let arpType: UInt16 = 0x0806
        let fd = try SystemCall.call("open a packet socket for ARP", hint: { e in
            e == .permissionDenied || e == .notPermitted ? "packet sockets need root or CAP_NET_RAW" : nil
        }) { socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(arpType.bigEndian)) }
        defer { close(fd) }
        var bound = SocketAddress(link: LinkNextHop(interfaceIndex: index, mac: .zero), etherType: arpType)
        try SystemCall.call("bind the ARP socket to \(interface)") {
            withUnsafePointer(to: &bound.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, bound.length) } }
        }
        var frame = [UInt8](repeating: 0, count: 60)  // padded to the Ethernet minimum
        frame.withUnsafeMutableBytes { b in
            MACAddress.broadcast.write(to: b, at: 0)
            own.write(to: b, at: 6)
            b[12] = 0x08; b[13] = 0x06
            ARP.write(to: b, at: 14, operation: ARP.request, senderMAC: own, senderIP: IPv4Address(value: 0),
                      targetMAC: .zero, targetIP: address)
        }
        var to = SocketAddress(link: LinkNextHop(interfaceIndex: index, mac: .broadcast), etherType: arpType)
        try SystemCall.call("send an ARP probe on \(interface)") {
            frame.withUnsafeBytes { bytes in
                withUnsafePointer(to: &to.storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes.baseAddress, bytes.count, 0, $0, to.length) }
                }
            }
        }
        var found: [MACAddress] = []
        let deadline = monotonicMilliseconds() + Int(timeout * 1000)
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
            let left = deadline - monotonicMilliseconds()
            guard left > 0, Poller.wait(fd: fd, events: Int16(POLLIN), milliseconds: Int32(left)) else { break }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n >= 14 + ARP.length else { continue }
            buffer.withUnsafeBytes { b in
                guard b[12] == 0x08, b[13] == 0x06, let arp = ARPView(UnsafeRawBufferPointer(rebasing: b[14..<n])) else { return }
                // A reply for the address, or another host's own probe or announcement of it.
                guard arp.senderIP == address, arp.senderMAC != own, !found.contains(arp.senderMAC) else { return }
                found.append(arp.senderMAC)
            }
        }
        return found
    }

    /// Whether transmit checksum offload is on for `interface` (ETHTOOL_GTXCSUM: any of the
    /// tx-checksum-* features; for a vxlan device that is tx-checksum-ip-generic). Nil when the
    /// device or the ioctl is not there.
    public static func transmitChecksumOffload(_ interface: String) -> Bool? {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // struct ethtool_value { u32 cmd; u32 data; }
        var value: (UInt32, UInt32) = (0x16 /* ETHTOOL_GTXCSUM */, 0)
        var request = ifreq()
        let name = Array(interface.utf8.prefix(Int(IF_NAMESIZE) - 1))
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { b in
            for (i, c) in name.enumerated() { b[i] = c }
        }
        let r = withUnsafeMutablePointer(to: &value) { pointer in
            request.ifr_ifru.ifru_data = UnsafeMutableRawPointer(pointer).assumingMemoryBound(to: CChar.self)
            return ioctl(fd, 0x8946 /* SIOCETHTOOL */, &request)
        }
        return r == 0 ? value.1 != 0 : nil
    }

    static func monotonicMilliseconds() -> Int {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return t.tv_sec * 1000 + t.tv_nsec / 1_000_000
    }
}

/// The route a packet to an address would take (rtnetlink RTM_GETROUTE), as `ip route get` says.
public struct RouteAnswer: Equatable, Sendable {
    /// The output device's name; nil for a route that names none (blackhole, unreachable).
    public var device: String?
    public var gateway: IPAddress?
    /// "unicast", "local", "blackhole", "unreachable", "prohibit", or the type number.
    public var type: String

    public init(device: String?, gateway: IPAddress?, type: String) {
        self.device = device
        self.gateway = gateway
        self.type = type
    }
}

extension RouteLookup {
    /// The route to `destination` now; nil and a reason when there is none or the lookup failed.
    public static func route(to destination: IPAddress) -> Result<RouteAnswer, RouteLookupFailure> {
        guard let netlink = Netlink() else { return .failure(RouteLookupFailure(reason: "no rtnetlink socket: \(String(cString: strerror(errno)))", noRoute: false)) }
        defer { close(netlink.fd) }
        let family = UInt8(destination.isIPv6 ? AF_INET6 : AF_INET)
        var request: [UInt8] = [family, destination.isIPv6 ? 128 : 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        Netlink.appendAttribute(&request, type: rtaDestination, bytes: addressBytes(destination))
        let (reply, error) = netlink.exchange(type: rtmGetRoute, flags: 1, body: request, reply: rtmNewRoute)
        guard let route = reply, route.count >= 12 else {
            if let error, [ENETUNREACH, EHOSTUNREACH, EACCES, EPERM, EINVAL].contains(-error) {
                return .failure(RouteLookupFailure(reason: "no route to \(destination) (\(String(cString: strerror(-error))))", noRoute: true))
            }
            return .failure(RouteLookupFailure(reason: error.map { "route lookup: \(String(cString: strerror(-$0)))" } ?? "route lookup: no answer", noRoute: false))
        }
        var answer = RouteAnswer(device: nil, gateway: nil, type: routeTypeName(route[7]))
        Netlink.forEachAttribute(route, from: 12) { type, value in
            switch type {
            case rtaOutputInterface where value.count == 4:
                answer.device = deviceName(value.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) })
            case rtaGateway: answer.gateway = address(value)
            default: break
            }
        }
        return .success(answer)
    }

    static func routeTypeName(_ type: UInt8) -> String {
        switch type {
        case 1: "unicast"
        case 2: "local"
        case 6: "blackhole"
        case 7: "unreachable"
        case 8: "prohibit"
        default: "type \(type)"
        }
    }
}

public struct RouteLookupFailure: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    /// The kernel said there is no route (rather than the lookup failing).
    public var noRoute: Bool
    public init(reason: String, noRoute: Bool) {
        self.reason = reason
        self.noRoute = noRoute
    }
    public var description: String { reason }
}

/// One address of an interface, as getifaddrs lists it.
public struct InterfaceAddressEntry: Equatable, Sendable {
    public var interface: String
    public var address: IPAddress
    public var prefixLength: Int
}

extension HostProbes {
    /// Every IPv4 and IPv6 address of every interface (getifaddrs), with its prefix length.
    public static func interfaceAddresses() -> [InterfaceAddressEntry] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var result: [InterfaceAddressEntry] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            cursor = entry.pointee.ifa_next
            guard let sa = entry.pointee.ifa_addr, let (address, _) = SocketAddress.decode(UnsafeRawPointer(sa)) else { continue }
            var length = address.isIPv6 ? 128 : 32
            if let mask = entry.pointee.ifa_netmask {
                let bytes = address.isIPv6 ? 16 : 4
                let offset = address.isIPv6 ? 8 : 4  // sin6_addr, sin_addr
                let raw = UnsafeRawPointer(mask)
                length = (0..<bytes).reduce(0) { $0 + raw.load(fromByteOffset: offset + $1, as: UInt8.self).nonzeroBitCount }
            }
            result.append(InterfaceAddressEntry(interface: String(cString: entry.pointee.ifa_name), address: address, prefixLength: length))
        }
        return result
    }
}
