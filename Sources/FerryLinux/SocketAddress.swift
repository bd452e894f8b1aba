import Glibc
import FerryWire

/// An IP address and port as the kernel wants them: a `sockaddr_storage`, built once.
public struct SocketAddress {
    public var storage = sockaddr_storage()
    public var length: socklen_t

    public init(_ address: IPAddress, port: UInt16) {
        switch address {
        case .v4(let a):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = a.value.bigEndian
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin) { dst.copyMemory(from: $0) } }
        case .v6(let a):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { a.write(to: $0, at: 0) }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin6) { dst.copyMemory(from: $0) } }
        }
    }

    /// A link-layer destination for a packet socket (struct sockaddr_ll): frames of `etherType`
    /// out of device `interfaceIndex` to `mac`.
    public init(link hop: LinkNextHop, etherType: UInt16) {
        withUnsafeMutableBytes(of: &storage) { s in
            s.storeBytes(of: UInt16(AF_PACKET), toByteOffset: 0, as: UInt16.self)      // sll_family
            s.storeBytes(of: etherType.bigEndian, toByteOffset: 2, as: UInt16.self)    // sll_protocol
            s.storeBytes(of: hop.interfaceIndex, toByteOffset: 4, as: Int32.self)      // sll_ifindex
            s[11] = 6                                                                  // sll_halen
            hop.mac.write(to: UnsafeMutableRawBufferPointer(rebasing: s[12..<18]), at: 0)  // sll_addr
        }
        length = socklen_t(Self.linkLength)
    }

    /// sizeof(struct sockaddr_ll).
    public static var linkLength: Int { 20 }

    /// Reads the address in a `sockaddr_storage` the kernel filled in.
    public static func decode(_ pointer: UnsafeRawPointer) -> (IPAddress, UInt16)? {
        switch Int32(pointer.load(as: sockaddr.self).sa_family) {
        case AF_INET:
            let sin = pointer.load(as: sockaddr_in.self)
            return (.v4(IPv4Address(value: UInt32(bigEndian: sin.sin_addr.s_addr))), UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = pointer.load(as: sockaddr_in6.self)
            let address = withUnsafeBytes(of: sin6.sin6_addr) { IPv6Address($0, at: 0) }
            return (.v6(address), UInt16(bigEndian: sin6.sin6_port))
        default:
            return nil
        }
    }
}
