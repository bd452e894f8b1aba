import CFerryLinux
import Glibc
import SystemPackage
import FerryWire

/// Link set-up by ioctl: MTU, up/down, bridge ports, addresses. Enough for Ferry to put its
/// TAP on a bridge; the lab uses iproute2 for the rest.
public struct NetworkInterface {
    public let name: String

    public init(_ name: String) { self.name = name }

    /// The interface's index, or nil when there is no such interface.
    public var index: Int32? {
        let i = if_nametoindex(name)
        return i == 0 ? nil : Int32(i)
    }

    public var exists: Bool { index != nil }

    public func mtu() throws(LinuxError) -> Int {
        var mtu: Int32 = 0
        try Self.withControlSocket { s throws(LinuxError) in
            try SystemCall.call("read MTU of \(name)", hint: noSuchInterface) { cferry_if_get_mtu(s, name, &mtu) }
        }
        return Int(mtu)
    }

    public func setMTU(_ mtu: Int) throws(LinuxError) {
        try Self.withControlSocket { s throws(LinuxError) in
            try SystemCall.call("set MTU of \(name) to \(mtu)", hint: { e in
                e == .invalidArgument ? "the MTU is outside what \(name) accepts (68 to its maximum)" : noSuchInterface(e)
            }) { cferry_if_set_mtu(s, name, Int32(mtu)) }
        }
    }

    public func setUp() throws(LinuxError) {
        try Self.withControlSocket { s throws(LinuxError) in
            var flags: Int16 = 0
            try SystemCall.call("read flags of \(name)", hint: noSuchInterface) { cferry_if_get_flags(s, name, &flags) }
            flags |= Int16(IFF_UP)
            try SystemCall.call("bring \(name) up") { cferry_if_set_flags(s, name, flags) }
        }
    }

    public func macAddress() throws(LinuxError) -> MACAddress {
        var bytes = [UInt8](repeating: 0, count: 6)
        try Self.withControlSocket { s throws(LinuxError) in
            try SystemCall.call("read MAC of \(name)", hint: noSuchInterface) { cferry_if_get_hwaddr(s, name, &bytes) }
        }
        return MACAddress(bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5])
    }

    /// Gives the interface `address` (an Ethernet one).
    public func setMACAddress(_ address: MACAddress) throws(LinuxError) {
        let v = address.value
        let bytes = (0..<6).map { UInt8(truncatingIfNeeded: v >> (40 - 8 * $0)) }
        try Self.withControlSocket { s throws(LinuxError) in
            try SystemCall.call("set MAC of \(name) to \(address)", hint: noSuchInterface) { cferry_if_set_hwaddr(s, name, bytes) }
        }
    }

    /// Makes this interface a port of `bridge`.
    public func attach(toBridge bridge: String) throws(LinuxError) {
        guard let index else { throw LinuxError("attach \(name) to \(bridge)", errno: .operationNotSupportedByDevice) }
        try Self.withControlSocket { s throws(LinuxError) in
            try SystemCall.call("attach \(name) to bridge \(bridge)", hint: { e in
                switch e {
                case .operationNotSupportedByDevice: "there is no bridge named \(bridge); create it (ip link add \(bridge) type bridge) or fix --bridge"
                case .notSupported, .invalidArgument: "\(bridge) is not a bridge (ip -d link show \(bridge))"
                case .resourceBusy: "\(name) is already a port of another bridge"
                default: nil
                }
            }) { cferry_bridge_add_if(s, bridge, index) }
        }
    }

    func noSuchInterface(_ e: Errno) -> String? {
        e == .operationNotSupportedByDevice ? "there is no interface named \(name) (ip link show)" : nil
    }

    /// The interface that holds `address`, from getifaddrs; nil when no interface does.
    public static func holding(_ address: IPAddress) -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            if let sa = entry.pointee.ifa_addr, let (a, _) = SocketAddress.decode(UnsafeRawPointer(sa)), a == address {
                return String(cString: entry.pointee.ifa_name)
            }
            cursor = entry.pointee.ifa_next
        }
        return nil
    }

    @discardableResult
    static func withControlSocket<T>(_ body: (Int32) throws(LinuxError) -> T) throws(LinuxError) -> T {
        let s = try SystemCall.call("open control socket") { socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        defer { close(s) }
        return try body(s)
    }
}
