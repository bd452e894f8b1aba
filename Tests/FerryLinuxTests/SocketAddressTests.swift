import FerryLinux
import FerryWire
import Foundation
import Testing

/// A SocketAddress is what the kernel reads as a destination and writes as a source. A round
/// trip alone would pass with the port or the address in host order both ways, so each one
/// is also compared with the sockaddr libc's inet_pton and htons build.
@Suite struct SocketAddressTests {
    static let v4: [(String, UInt16)] = [("10.1.2.3", 4789), ("127.0.0.1", 1), ("255.255.255.254", 65535), ("0.0.0.0", 0),
                                         ("192.168.200.17", 0x1234)]
    static let v6: [(String, UInt16)] = [("fd00:99::2", 4789), ("::1", 1), ("2001:db8:1:2:3:4:5:6", 65535), ("::", 0),
                                         ("fe80::1234:5678:9abc:def0", 0x8001)]

    @Test func ipv4AddressesAreSockaddrIn() throws {
        for (text, port) in Self.v4 {
            let ip = try #require(IPAddress(text))
            var sa = SocketAddress(ip, port: port)
            #expect(Int(sa.length) == MemoryLayout<sockaddr_in>.size)
            var expected = sockaddr_in()
            expected.sin_family = sa_family_t(AF_INET)
            expected.sin_port = port.bigEndian
            #expect(inet_pton(AF_INET, text, &expected.sin_addr) == 1)
            let actual = withUnsafeBytes(of: &sa.storage) { Array($0.prefix(MemoryLayout<sockaddr_in>.size)) }
            #expect(actual == withUnsafeBytes(of: &expected) { Array($0) }, "\(text):\(port)")
            let decoded = withUnsafeBytes(of: &sa.storage) { SocketAddress.decode($0.baseAddress!) }
            #expect(decoded?.0 == ip && decoded?.1 == port, "\(text):\(port) round trip")
        }
    }

    @Test func ipv6AddressesAreSockaddrIn6() throws {
        for (text, port) in Self.v6 {
            let ip = try #require(IPAddress(text))
            var sa = SocketAddress(ip, port: port)
            #expect(Int(sa.length) == MemoryLayout<sockaddr_in6>.size)
            var expected = sockaddr_in6()
            expected.sin6_family = sa_family_t(AF_INET6)
            expected.sin6_port = port.bigEndian
            #expect(inet_pton(AF_INET6, text, &expected.sin6_addr) == 1)
            let actual = withUnsafeBytes(of: &sa.storage) { Array($0.prefix(MemoryLayout<sockaddr_in6>.size)) }
            #expect(actual == withUnsafeBytes(of: &expected) { Array($0) }, "\(text):\(port)")
            let decoded = withUnsafeBytes(of: &sa.storage) { SocketAddress.decode($0.baseAddress!) }
            #expect(decoded?.0 == ip && decoded?.1 == port, "\(text):\(port) round trip")
        }
    }

    /// What the kernel writes as a datagram's source is read back by `decode`: the sender's
    /// own address and port, as getsockname reports them.
    @Test(arguments: [loopback4, loopback6])
    func theKernelsSourceAddressDecodes(_ local: IPAddress) throws {
        let arena = Arena()
        let sender = try DatagramSocket.udp(local: local, port: 0)
        let receiver = try DatagramSocket.udp(local: local, port: 0)
        let batch = MessageBatch(capacity: 1)
        batch.append(to: arena.address(local, port: receiver.port), header: arena.put([1]), payload: arena.put([2, 3]))
        #expect(sender.send(batch) { _, _ in } == 1)
        let got = try receiver.collect(1, with: receiveBatch(capacity: 1, size: 64, in: arena))
        #expect(got.first?.source == local && got.first?.port == sender.port)
        #expect(sender.boundAddress.0 == local && sender.port != 0)
    }

    /// A link-layer destination is a struct sockaddr_ll (linux/if_packet.h, which Glibc's module
    /// lacks): u16 family AF_PACKET, be16 protocol, i32 interface index, u16 hardware type,
    /// u8 packet type, u8 address length, 8 bytes of address; 20 bytes.
    @Test func aLinkDestinationIsSockaddrLL() throws {
        let mac = MACAddress(0x02, 0x42, 0xAC, 0x11, 0x00, 0x07)
        let index: Int32 = 0x0102_0304
        var sa = SocketAddress(link: LinkNextHop(interfaceIndex: index, mac: mac), etherType: EtherType.ipv6)
        #expect(Int(sa.length) == SocketAddress.linkLength && SocketAddress.linkLength == 20)
        var expected = [UInt8](repeating: 0, count: 20)
        withUnsafeBytes(of: UInt16(AF_PACKET)) { expected.replaceSubrange(0..<2, with: $0) }
        withUnsafeBytes(of: EtherType.ipv6.bigEndian) { expected.replaceSubrange(2..<4, with: $0) }
        withUnsafeBytes(of: index) { expected.replaceSubrange(4..<8, with: $0) }
        expected[11] = 6
        expected.withUnsafeMutableBytes { mac.write(to: UnsafeMutableRawBufferPointer(rebasing: $0[12..<18]), at: 0) }
        let actual = withUnsafeBytes(of: &sa.storage) { Array($0.prefix(20)) }
        #expect(actual == expected)
        #expect(withUnsafeBytes(of: &sa.storage) { SocketAddress.decode($0.baseAddress!) } == nil, "not an IP address")

        // What a batch reads back from a message sent there.
        let arena = Arena()
        let batch = MessageBatch(capacity: 1)
        let room = arena.room(MemoryLayout<SocketAddress>.stride)
        let destination = room.baseAddress!.bindMemory(to: SocketAddress.self, capacity: 1)
        destination.initialize(to: sa)
        batch.append(to: destination, header: arena.put([]), payload: arena.put([0x60]))
        let read = try #require(batch.linkDestination(0))
        #expect(read.interfaceIndex == 0x0102_0304 && read.mac == mac && read.etherType == EtherType.ipv6)
    }
}
