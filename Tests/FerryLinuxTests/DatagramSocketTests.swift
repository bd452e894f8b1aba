import CFerryLinux
import FerryLinux
import FerryWire
import Foundation
import SystemPackage
import Testing

/// The sockets Ferry's packets go through, on the loopback: the VXLAN receivers (a
/// SO_REUSEPORT group), the UDP senders that the kernel segments, and (as root) the raw
/// sockets that send whole IP packets and receive GRE.
@Suite struct DatagramSocketTests {
    // MARK: - UDP

    /// A group shares one port, the kernel hands each datagram to one member, and a flow (one
    /// source address and port) always to the same one.
    @Test func aReusePortGroupSharesOnePortAndKeepsEachFlowOnOneSocket() throws {
        let arena = Arena()
        // A port the kernel found free (the socket that found it is closed at once).
        let port = try DatagramSocket.udp(local: loopback4, port: 0).port
        let group = try DatagramSocket.udpGroup(local: loopback4, port: port, count: 3)
        #expect(group.count == 3 && group.allSatisfy { $0.port == port })
        let flows = 12, perFlow = 5
        let senders = try (0..<flows).map { _ in try DatagramSocket.udp(local: loopback4, port: 0) }
        let destination = arena.address(loopback4, port: port)
        for (f, sender) in senders.enumerated() {
            let batch = MessageBatch(capacity: perFlow)
            for k in 0..<perFlow { batch.append(to: destination, header: arena.put([UInt8(f), UInt8(k)]), payload: arena.put([])) }
            #expect(sender.send(batch) { _, _ in } == perFlow)
        }
        var flowsBySocket: [Set<UInt16>] = []
        var total = 0
        for member in group {
            let got = try member.collect(flows * perFlow, with: receiveBatch(capacity: 64, size: 64, in: arena), timeout: 0.5)
            total += got.count
            flowsBySocket.append(Set(got.compactMap(\.port)))
        }
        #expect(total == flows * perFlow, "each datagram reaches one member, once")
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            #expect(flowsBySocket[a].isDisjoint(with: flowsBySocket[b]), "a flow split between members \(a) and \(b)")
        }
    }

    /// A group only forms on a free port: one another program holds (with or without
    /// SO_REUSEPORT) is refused, rather than shared with it.
    @Test(arguments: [false, true])
    func aGroupIsRefusedAPortSomeoneHolds(holderReusesPort: Bool) throws {
        let holder = try DatagramSocket.udp(local: loopback4, port: 0, reusePort: holderReusesPort)
        let refused = #expect(throws: LinuxError.self) {
            try DatagramSocket.udpGroup(local: loopback4, port: holder.port, count: 2)
        }
        #expect(refused?.errno == .addressInUse && refused?.hint?.contains("already uses it") == true,
                "\(String(describing: refused))")
    }

    @Test func bindingAnAddressNotOnThisHostSaysSo() throws {
        // TEST-NET-1 (RFC 5737): on no interface here. Binding sends nothing.
        let refused = #expect(throws: LinuxError.self) {
            try DatagramSocket.udp(local: .v4(IPv4Address(192, 0, 2, 1)), port: 0)
        }
        #expect(refused?.errno == .addressNotAvailable && refused?.hint?.contains("--local") == true)
    }

    /// The kernel refuses a GSO message of more segments than it allows (64, or 128 from Linux
    /// 6.10) with EINVAL, as it refuses one on a path that cannot take GSO: `refusesGSO` says to fall back, and `sendDatagrams` sends the
    /// same message's datagrams one by one, all of them, in order.
    @Test func aRefusedGSOMessageGoesAgainDatagramByDatagram() throws {
        let arena = Arena()
        let sender = try DatagramSocket.udp(local: loopback4, port: 0)
        let receiver = try DatagramSocket.udp(local: loopback4, port: 0)
        receiver.setBufferSizes(1 << 20)
        let destination = arena.address(loopback4, port: receiver.port)
        let segment = 100
        let pieces = [bytes(20_050, seed: 1), bytes(99, seed: 2)]  // 202 segments, the last 49 bytes
        let batch = MessageBatch(capacity: 1, gatherCapacity: 2)
        try #require(batch.appendGathered(to: destination, segmentSize: segment, pieces: 2))
        for p in pieces { batch.appendPiece(arena.put(p)) }
        let scratch = arena.room(1 << 16)
        var refusals: [Errno?] = []
        var resent = false
        let sent = sender.send(batch) { i, errno in
            refusals.append(errno)
            if let errno, DatagramSocket.refusesGSO(errno) { resent = sender.sendDatagrams(of: batch, message: i, scratch: scratch) }
        }
        #expect(sent == 0 && refusals == [.invalidArgument], "\(refusals)")
        #expect(resent, "every datagram went")
        let expected = chunks(pieces.flatMap { $0 }, segment)
        let got = try receiver.collect(expected.count, with: receiveBatch(capacity: 256, size: 256, in: arena))
        expectSameDatagrams(got.map(\.bytes), expected, "the refused message's datagrams, one by one")
    }

    /// A UDP sender puts its TTL, TOS and DF in every packet's IPv4 header (read by a raw
    /// socket that sees the loopback's UDP packets with their headers).
    @Test(.enabled(if: Linux.isRoot, "a raw socket needs root"), arguments: [true, false])
    func aUDPSenderWritesItsTTLTOSAndDF(dontFragment: Bool) throws {
        let arena = Arena()
        let observer = try DatagramSocket.raw(protocol: Int32(IPPROTO_UDP), local: loopback4)
        let receiver = try DatagramSocket.udp(local: loopback4, port: 0)
        let (ttl, tos): (UInt8, UInt8) = dontFragment ? (7, 0x88) : (200, 0x10 | ECN.ect0)
        let sender = try DatagramSocket.udpSender(local: loopback4, port: 0, ttl: ttl, tos: tos, dontFragment: dontFragment)
        let batch = MessageBatch(capacity: 1)
        batch.append(to: arena.address(loopback4, port: receiver.port), header: arena.put([]), payload: arena.put(bytes(300, seed: 1)))
        #expect(sender.send(batch) { _, _ in } == 1)
        // Other programs' loopback UDP may show up too: only this sender's packet counts.
        let seen = try observer.collect(16, with: receiveBatch(capacity: 16, size: 2048, in: arena), timeout: 1)
        let ours = seen.filter { $0.bytes.count >= 28 && $0.bytes[20] == UInt8(sender.port >> 8) && $0.bytes[21] == UInt8(sender.port & 0xFF) }
        let packet = try #require(ours.first, "the raw socket saw no packet from port \(sender.port)")
        #expect(packet.bytes[8] == ttl, "TTL")
        #expect(packet.bytes[1] == tos, "TOS")
        #expect((packet.bytes[6] & 0x40 != 0) == dontFragment, "DF")
    }

    @Test(.enabled(if: Linux.isRoot, "the FORCE options need root"))
    func bufferSizesPassTheSystemLimitsAsRoot() throws {
        let socket = try DatagramSocket.udp(local: loopback4, port: 0)
        let max = Int((try? String(contentsOfFile: "/proc/sys/net/core/rmem_max", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 212_992
        let asked = 2 * max + (1 << 20)
        socket.setBufferSizes(asked)
        for option in [SO_RCVBUF, SO_SNDBUF] {
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            #expect(getsockopt(socket.fd, SOL_SOCKET, option, &value, &length) == 0)
            #expect(Int(value) >= asked, "option \(option): \(value), asked \(asked)")
        }
    }

    // MARK: - Raw sockets

    /// The header-including socket sends a whole IP packet as written: a UDP packet built
    /// here reaches a UDP socket on the loopback from the port its header names.
    @Test(.enabled(if: Linux.isRoot, "raw sockets need root"), arguments: [loopback4, loopback6])
    func aHeaderIncludingSocketSendsThePacketAsWritten(_ local: IPAddress) throws {
        let arena = Arena()
        let raw = try DatagramSocket.headerIncluding(ipv6: local.isIPv6)
        let receiver = try DatagramSocket.udp(local: local, port: 0)
        let sourcePort: UInt16 = 40_000 + UInt16(getpid() % 20_000)
        let data = bytes(700, seed: 4)
        let frame = FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: .broadcast, source: local, destination: local,
                                       payload: .udp(sourcePort: sourcePort, destinationPort: receiver.port, data: data), pad: false)
        let packet = Array(frame[14...])
        let headers = local.isIPv6 ? 48 : 28
        let batch = MessageBatch(capacity: 1)
        // The IP and UDP headers, then the data: the two iovecs Ferry's sends are made of.
        batch.append(to: arena.address(local, port: 0), header: arena.put(Array(packet[0..<headers])),
                     payload: arena.put(Array(packet[headers...])))
        var failures: [Errno?] = []
        #expect(raw.send(batch) { failures.append($1) } == 1, "\(failures)")
        let got = try receiver.collect(1, with: receiveBatch(capacity: 1, size: 2048, in: arena))
        expectSameDatagrams(got.map(\.bytes), [data], "the UDP payload of the packet as written")
        #expect(got.first?.port == sourcePort && got.first?.source == local, "the source the header names")
    }

    /// GRE arrives on a raw socket: over IPv4 with its IP header in front, over IPv6 without,
    /// which is why the transport hands up `.ipPacket` for one and `.grePayload` for the other.
    @Test(.enabled(if: Linux.isRoot, "raw sockets need root"), arguments: [loopback4, loopback6])
    func aRawGRESocketReceivesWithTheIPHeaderOnlyOverIPv4(_ local: IPAddress) throws {
        let arena = Arena()
        let gre = try DatagramSocket.raw(protocol: Int32(IPProtocol.gre), local: local)
        let raw = try DatagramSocket.headerIncluding(ipv6: local.isIPv6)
        let inner = FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: MACAddress(0x02, 0, 0, 0, 0, 0x47),
                                       payload: .raw(etherType: 0x88B5, data: bytes(64, seed: 3)))
        let greHeader: [UInt8] = [0x20, 0x00, 0x65, 0x58, 0, 0, 0, 42]
        var ip = [UInt8](repeating: 0, count: local.isIPv6 ? 40 : 20)
        ip.withUnsafeMutableBytes { b in
            switch local {
            case .v4(let a):
                _ = IPv4.writeHeader(to: b, at: 0, tos: 0, totalLength: 20 + greHeader.count + inner.count, identification: 7,
                                     ttl: 64, protocol: IPProtocol.gre, source: a, destination: a)
            case .v6(let a):
                IPv6.writeHeader(to: b, at: 0, trafficClass: 0, payloadLength: greHeader.count + inner.count,
                                 nextHeader: IPProtocol.gre, hopLimit: 64, source: a, destination: a)
            }
        }
        let batch = MessageBatch(capacity: 1)
        batch.append(to: arena.address(local, port: 0), header: arena.put(ip + greHeader), payload: arena.put(inner))
        #expect(raw.send(batch) { _, e in Issue.record("send refused: \(String(describing: e))") } == 1)
        let got = try gre.collect(1, with: receiveBatch(capacity: 4, size: 2048, in: arena))
        let expected = (local.isIPv6 ? [] : ip) + greHeader + inner
        // The kernel fills in the IPv4 header's identification and checksum as it sends: compare
        // the rest of the header, and all that follows it, byte for byte.
        let received = try #require(got.first).bytes
        try #require(received.count == expected.count, "\(received.count) bytes received, \(expected.count) sent")
        if local.isIPv6 {
            expectSameDatagrams([received], [expected], "GRE over IPv6, from the GRE header on")
        } else {
            #expect(received[0] == 0x45 && received[9] == IPProtocol.gre, "an IPv4 header in front")
            expectSameDatagrams([Array(received[20...])], [Array(expected[20...])], "GRE over IPv4, after the IP header")
            #expect(received[12..<20] == expected[12..<20], "addresses")
        }
    }
}
