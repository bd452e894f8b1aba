// A TAP with offloads: frames carry a virtio-net header; TCP super-frames are cut into
// segments that fit the tunnel; partial checksums are finished; writes get an empty header.

import FerryEngine
import FerryLinux
import FerryTestSupport
import FerryWire
import Testing

@Suite("TAP offloads (virtio-net header)")
struct VirtioTests {
    static let remote = MACAddress(0x02, 0x22, 0, 0, 0, 0x02)

    /// A TCP super-frame as a TAP with TSO hands it over: the virtio header, then one frame
    /// whose IP length covers everything, TCP checksum left to the pseudo-header sum.
    static func superFrame(payload: Int, mss: Int, ipv6: Bool = false) -> [UInt8] {
        let frame = FrameBuilder.frame(destinationMAC: remote, sourceMAC: localMAC,
                                       source: ipv6 ? .v6(IPv6Address("fd00:17::2")!) : .v4(IPv4Address(10, 17, 0, 2)),
                                       destination: ipv6 ? .v6(IPv6Address("fd00:18::2")!) : .v4(IPv4Address(10, 18, 0, 2)),
                                       payload: .tcp(sourcePort: 40000, destinationPort: 5201, sequence: 1000, acknowledgment: 1,
                                                     flags: TCP.ack | TCP.psh, data: FrameBuilder.pattern(payload)))
        let l4 = ipv6 ? 54 : 34
        let h = VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum,
                                gsoType: ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
                                headerLength: UInt16(l4 + 20), gsoSize: UInt16(mss), checksumStart: UInt16(l4), checksumOffset: 16)
        var bytes = [UInt8](repeating: 0, count: 10)
        bytes.withUnsafeMutableBytes { h.write(to: $0.baseAddress!) }
        return bytes + frame
    }

    func decapsulated(_ h: Harness) -> [[UInt8]] {
        h.transport.sent.compactMap { sent in
            sent.bytes.withUnsafeBytes { b in Decapsulator().decapsulate(ipPacket: b).packet.map { Array(sent.bytes[$0.inner]) } }
        }
    }

    @Test(arguments: [false, true])
    func aSuperFrameLeavesAsSegmentsThatFitTheTunnel(ipv6: Bool) throws {
        let h = try Harness(peers: [peer4a], virtio: true)
        // Teach the table where the destination is, so the segments go to one peer.
        try h.receive(remoteFrame(from: Self.remote), from: peer4a)
        // The MSS a sender derives from the TAP's MTU (1450): IP and TCP headers off.
        let mss = 1450 - (ipv6 ? 40 : 20) - 20, payload = 20_000
        try h.egress(Self.superFrame(payload: payload, mss: mss, ipv6: ipv6))
        let segments = decapsulated(h)
        #expect(segments.count == (payload + mss - 1) / mss)
        #expect(h.transport.sent.allSatisfy { $0.destination == peer4a })
        #expect(h.transport.sent.allSatisfy { $0.bytes.count <= 1500 }, "every outer packet fits the underlay MTU")
        let l4 = ipv6 ? 54 : 34
        var data: [UInt8] = []
        for s in segments {
            s.withUnsafeBytes { b in
                let tcp = UnsafeRawBufferPointer(rebasing: b[l4...])
                let pseudo = ipv6
                    ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(b, at: 22), destination: IPv6Address(b, at: 38), protocol: 6, length: tcp.count)
                    : InternetChecksum.pseudoHeaderSum(source: IPv4Address(b, at: 26), destination: IPv4Address(b, at: 30), protocol: 6, length: tcp.count)
                #expect(InternetChecksum.add(pseudo, InternetChecksum.sum(tcp)) == 0xFFFF, "segment TCP checksum")
            }
            data += s[(l4 + 20)...]
        }
        let intact = data == FrameBuilder.pattern(payload)
        #expect(intact, "the segments' payloads, in order, are the super-frame's")
        #expect(h.counter(.superFrames) == 1)
        #expect(h.counter(.superFrameSegments) == UInt64(segments.count))
        #expect(h.statistics.totalDrops == 0)
    }

    @Test func aPartialChecksumIsFinishedBeforeSending() throws {
        let h = try Harness(peers: [peer4a], virtio: true)
        let full = FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: localMAC,
                                      payload: .udp(sourcePort: 7, destinationPort: 9, data: FrameBuilder.pattern(200)))
        var partial = full
        let pseudo = InternetChecksum.pseudoHeaderSum(source: .v4(IPv4Address(10, 0, 0, 1)), destination: .v4(IPv4Address(10, 0, 0, 2)),
                                                      protocol: 17, length: 208)
        partial[40] = UInt8(pseudo >> 8); partial[41] = UInt8(pseudo & 0xFF)
        var header = [UInt8](repeating: 0, count: 10)
        header.withUnsafeMutableBytes {
            VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, checksumStart: 34, checksumOffset: 6).write(to: $0.baseAddress!)
        }
        try h.egress(header + partial)
        #expect(decapsulated(h) == [full])
    }

    @Test func writesToTheTAPCarryAnEmptyVirtioHeader() throws {
        let h = try Harness(virtio: true)
        let inner = remoteFrame(from: Self.remote)
        try h.receive(inner, from: peer4a)
        #expect(h.device.written == [[UInt8](repeating: 0, count: 10) + inner])
    }

    @Test func consecutiveSegmentsFromAPeerReachTheTAPAsOneSuperFrame() throws {
        let h = try Harness(virtio: true)
        // The far side's TCP sends 6 full segments of one flow: what a peer's Ferry sent.
        var segments: [[UInt8]] = []
        for i in 0..<6 {
            segments.append(FrameBuilder.frame(destinationMAC: localMAC, sourceMAC: Self.remote, identification: UInt16(i),
                                               payload: .tcp(sourcePort: 5201, destinationPort: 40000, sequence: UInt32(1 + 1000 * i),
                                                             acknowledgment: 9, flags: TCP.ack, data: FrameBuilder.pattern(1000, seed: UInt8(i)))))
        }
        try h.ingress(segments.map { (h.tunnelPacket($0, from: peer4a), peer4a) })
        #expect(h.device.written.count == 1)
        let written = try #require(h.device.written.first)
        let header = written.withUnsafeBytes { VirtioNetHeader($0) }
        #expect(header.gsoType == VirtioNetHeader.gsoTCPv4 && header.gsoSize == 1000 && header.needsChecksum)
        #expect(written.count == 10 + 54 + 6000)
        let payloadIntact = Array(written[64...]) == segments.flatMap { Array($0[54...]) }
        #expect(payloadIntact)
        #expect(h.counter(.coalescedSegments) == 5)
        #expect(h.counter(.tapWrittenFrames) == 1)
        #expect(h.peerStatistics(peer4a)?.rxPackets == 6)
    }

    /// A TAP that refuses super-frames (EINVAL, as a kernel once did for GSO writes): the one
    /// refused is written again as the segments it was joined from, byte for byte, and joining
    /// stops, so the next batch goes segment by segment without being refused again.
    /// The refusal comes mid-batch here (a run fills at 64 KiB, 54 segments, and is written
    /// while 10 more wait): every segment still reaches the TAP in order.
    @Test func aSuperFrameTheTAPRefusesIsWrittenAsItsSegmentsAndJoiningStops() throws {
        let h = try Harness(virtio: true)
        h.device.refuseSuperFrames = true
        let size = 1200, perBatch = 64
        func segments(_ batch: Int) -> [[UInt8]] {
            (0..<perBatch).map { i in
                let n = perBatch * batch + i
                return FrameBuilder.frame(destinationMAC: localMAC, sourceMAC: Self.remote, identification: UInt16(n),
                                          payload: .tcp(sourcePort: 5201, destinationPort: 40000, sequence: UInt32(1 + size * n),
                                                        acknowledgment: 9, flags: TCP.ack, data: FrameBuilder.pattern(size, seed: UInt8(n % 251))))
            }
        }
        let empty = [UInt8](repeating: 0, count: 10)
        try h.ingress(segments(0).map { (h.tunnelPacket($0, from: peer4a), peer4a) })
        #expect(h.device.refusedWrites == 1, "the full run (the segment that began the next goes alone)")
        let inOrder = h.device.written == segments(0).map { empty + $0 }
        #expect(inOrder, "each segment as it came, in order")
        #expect(h.worker.withdrawnOffloads == [.genericReceive])
        try h.ingress(segments(1).map { (h.tunnelPacket($0, from: peer4a), peer4a) })
        #expect(h.device.refusedWrites == 1, "no super-frame offered again")
        let nextInOrder = h.device.written.count == 2 * perBatch && Array(h.device.written[perBatch...]) == segments(1).map { empty + $0 }
        #expect(nextInOrder, "the next batch, segment by segment")
        #expect(h.counter(.offloadsWithdrawn) == 1 && h.counter(.tapWrittenFrames) == UInt64(2 * perBatch))
        #expect(h.worker.state.statistics().totalDrops == 0)
    }

    @Test func aSuperFrameThatIsNotTCPIsDropped() throws {
        let h = try Harness(virtio: true)
        var bytes = Self.superFrame(payload: 3000, mss: 1000)
        bytes[10 + 23] = IPProtocol.udp  // the IPv4 protocol field
        try h.egress(bytes)
        #expect(h.drops(.badSuperFrame) == 1)
        #expect(h.transport.sent.isEmpty)
    }

    /// An IPv6 super-frame with hop-by-hop and destination options: cut, each segment with the
    /// chain, none dropped; with a chain of nine headers: dropped under its own reason.
    @Test func anIPv6SuperFrameWithExtensionHeadersIsCutAndABadChainIsNamed() throws {
        let h = try Harness(peers: [peer4a], virtio: true)
        try h.receive(remoteFrame(from: Self.remote), from: peer4a)
        let chain = [(IPProtocol.ipv6HopByHop, IPv6ExtensionHeaders.options(units: 0)),
                     (IPProtocol.ipv6DestinationOptions, IPv6ExtensionHeaders.options(units: 1))]
        let mss = 1300, payload = 6000
        func withChain(_ chain: [(UInt8, [UInt8])]) -> [UInt8] {
            let plain = Self.superFrame(payload: payload, mss: mss, ipv6: true)
            var bytes = Array(plain[0..<10]) + IPv6ExtensionHeaders.splice(Array(plain[10...]), chain)
            let l4 = 54 + chain.reduce(0) { $0 + $1.1.count }
            bytes[6] = UInt8(l4 & 0xFF); bytes[7] = UInt8(l4 >> 8)  // csum_start, little-endian
            return bytes
        }
        try h.egress(withChain(chain))
        let segments = decapsulated(h)
        #expect(segments.count == (payload + mss - 1) / mss)
        #expect(segments.allSatisfy { Array($0[54..<78]) == chain.flatMap { $0.1 }.enumerated().map { $0.offset == 0 ? IPProtocol.ipv6DestinationOptions : $0.offset == 8 ? IPProtocol.tcp : $0.element } })
        #expect(h.statistics.totalDrops == 0 && h.counter(.superFrames) == 1)
        try h.egress(withChain(Array(repeating: chain[1], count: 9)))
        #expect(h.drops(.badSuperFrameExtensionHeaders) == 1 && h.drops(.badSuperFrame) == 0)
    }

    @Test func anICMPErrorGoesBackWithAVirtioHeader() throws {
        let h = try Harness(virtio: true)
        let big = FrameBuilder.frame(destinationMAC: Self.remote, sourceMAC: localMAC, dontFragment: true,
                                     payload: .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(1472)))
        try h.egress([UInt8](repeating: 0, count: 10) + big)
        #expect(h.drops(.oversizeFrame) == 1)
        let reply = try #require(h.device.written.first)
        #expect(Array(reply[0..<10]) == [UInt8](repeating: 0, count: 10))
        #expect(reply[10 + 12] == 0x08 && reply[10 + 23] == IPProtocol.icmp && reply[10 + 34] == 3 && reply[10 + 35] == 4)
    }
}

/// A transport with UDP senders, as SocketTransport has with offloads: it records the VXLAN
/// payloads and the GSO segment size of each message, per sender.
func udpTransport() -> FakeTransport {
    let transport = FakeTransport(receivedForm: .vxlanPayload)
    transport.udpSenderCount = 4
    return transport
}

@Suite("UDP senders and GSO")
struct UDPSenderTests {
    /// Cuts each GSO send to `peer` at its segment size, as the kernel will, and checks every
    /// piece is a VXLAN header and a frame; returns the TCP payloads joined, and the pieces.
    static func tcpPayloads(of sent: [SentPacket], to peer: IPAddress) throws -> (data: [UInt8], pieces: Int) {
        var data: [UInt8] = []
        var pieces = 0
        for send in sent where send.destination == peer {
            let size = try #require(send.segmentSize)
            for start in stride(from: 0, to: send.bytes.count, by: size) {
                let piece = Array(send.bytes[start..<min(start + size, send.bytes.count)])
                let packet = piece.withUnsafeBytes { Decapsulator().decapsulate(vxlanPayload: $0, source: peer, destination: peer) }
                let inner = try #require(packet.packet).inner
                data += piece[(inner.lowerBound + 54)...]
                pieces += 1
            }
        }
        return (data, pieces)
    }

    func worker() throws -> (TestWorker, FakeDevice, FakeTransport) {
        let c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: .v4(IPv4Address(10, 99, 0, 1)), peers: [peer4a], underlayMTU: 1500)
        let limits = DataPathLimits(configuration: c, maximumFrame: 65535 + 28)
        let device = FakeDevice()
        device.virtioHeader = true
        let transport = udpTransport()
        return (try Worker(configuration: c, limits: limits, device: device, transport: transport, deviceMAC: tapMAC), device, transport)
    }

    @Test func aSuperFrameLeavesAsGSOSendsOfVXLANSegments() throws {
        let (f, device, transport) = try worker()
        let mss = 1410, payload = 100_000 - 100_000 % mss + 700  // many full segments and a short last one
        let clamped = min(payload, 65535 - 40)
        device.pending = [VirtioTests.superFrame(payload: clamped, mss: mss)]
        _ = try f.egressStep()
        let segments = (clamped + mss - 1) / mss
        #expect(transport.sent.allSatisfy { $0.segmentSize == 8 + 54 + mss }, "one GSO size: VXLAN + headers + MSS")
        #expect(Set(transport.sent.map(\.socket)).count == 1, "one flow, one sender, one source port")
        #expect(transport.sent.allSatisfy { $0.destination == peer4a })
        for send in transport.sent {
            #expect(send.bytes.count <= 65000 && (send.bytes.count + send.segmentSize! - 1) / send.segmentSize! <= 64)
        }
        let (data, pieces) = try Self.tcpPayloads(of: transport.sent, to: peer4a)
        #expect(pieces == segments)
        let intact = data == FrameBuilder.pattern(clamped)
        #expect(intact)
        let s = f.state.statistics()
        #expect(s.counter(.sentPackets) == UInt64(segments))
        #expect(s.peers[0].txPackets == UInt64(segments))
        // Bytes on the wire: each segment with its VXLAN, UDP and IPv4 headers.
        #expect(s.peers[0].txBytes == UInt64(clamped + segments * (54 + 8 + 8 + 20)))
    }

    /// Segments are gathered from the TAP's buffer, not copied: a batch of large super-frames
    /// flooded to two peers needs more pieces than one send holds, so the sender's batch goes
    /// out mid-step; every peer still gets every segment, in order, and its own count.
    @Test func aBatchOfSuperFramesToEveryPeerArrivesWholeThroughSeveralSends() throws {
        let c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: .v4(IPv4Address(10, 99, 0, 1)),
                                    peers: [peer4a, peer4b], underlayMTU: 1500)
        let limits = DataPathLimits(configuration: c, maximumFrame: 65535 + 28)
        let device = FakeDevice()
        device.virtioHeader = true
        let transport = udpTransport()
        let f = try Worker(configuration: c, limits: limits, device: device, transport: transport, deviceMAC: tapMAC)
        let mss = 1410
        let sizes = (0..<64).map { 60_000 + 7 * $0 }
        device.pending = sizes.map { VirtioTests.superFrame(payload: $0, mss: mss) }
        _ = try f.egressStep()
        #expect(device.pending.isEmpty, "the whole batch read in one step")
        #expect(transport.sendCalls > 1, "the gathered pieces outgrew one send")
        let expected = sizes.flatMap { FrameBuilder.pattern($0) }
        let segments = sizes.reduce(0) { $0 + ($1 + mss - 1) / mss }
        #expect(transport.sent.allSatisfy { $0.segmentSize == 8 + 54 + mss || $0.bytes.count <= $0.segmentSize ?? 0 })
        for peer in [peer4a, peer4b] {
            let (data, pieces) = try Self.tcpPayloads(of: transport.sent, to: peer)
            #expect(pieces == segments)
            let intact = data == expected
            #expect(intact, "\(peer): every segment, in order")
        }
        let s = f.state.statistics()
        #expect(s.peers.map(\.txPackets) == [UInt64(segments), UInt64(segments)])
        #expect(s.counter(.sentPackets) == UInt64(2 * segments))
    }

    /// A kernel that refuses GSO sends (EIO, EINVAL, EMSGSIZE: a device that cannot checksum, a
    /// path MTU below the segments): what it refused goes again datagram by datagram, the
    /// worker stops building GSO messages and sends one datagram a message through the same
    /// sender, and every segment arrives, in order, counted once.
    @Test func aRefusedGSOSendGoesDatagramByDatagramAndGSOStops() throws {
        let (f, device, transport) = try worker()
        transport.refuseGSO = true
        let mss = 1410, first = 60_000, second = 30_000
        device.pending = [VirtioTests.superFrame(payload: first, mss: mss)]
        _ = try f.egressStep()
        #expect(f.withdrawnOffloads == [.genericSegmentation])
        #expect(transport.sent.allSatisfy { $0.segmentSize == nil && $0.destination == peer4a })
        var data: [UInt8] = []
        for send in transport.sent {
            let packet = send.bytes.withUnsafeBytes { Decapsulator().decapsulate(vxlanPayload: $0, source: peer4a, destination: peer4a) }
            let inner = try #require(packet.packet).inner
            data += send.bytes[(inner.lowerBound + 54)...]
        }
        #expect(data == FrameBuilder.pattern(first), "the refused messages' segments, each once, in order")

        let socket = try #require(transport.sent.first).socket
        device.pending = [VirtioTests.superFrame(payload: second, mss: mss)]
        let before = transport.sent.count, offered = transport.gsoOffered
        _ = try f.egressStep()
        #expect(transport.gsoOffered == offered, "no GSO message built after the refusal")
        let later = transport.sent[before...]
        #expect(later.count == (second + mss - 1) / mss, "one datagram a message")
        #expect(later.allSatisfy { $0.segmentSize == nil && $0.socket == socket }, "no UDP_SEGMENT; the flow's own sender")
        var laterData: [UInt8] = []
        for send in later {
            let packet = send.bytes.withUnsafeBytes { Decapsulator().decapsulate(vxlanPayload: $0, source: peer4a, destination: peer4a) }
            let inner = try #require(packet.packet).inner
            laterData += send.bytes[(inner.lowerBound + 54)...]
        }
        #expect(laterData == FrameBuilder.pattern(second), "the next super-frame, intact")
        let s = f.state.statistics()
        let segments = (first + mss - 1) / mss + (second + mss - 1) / mss
        #expect(s.counter(.sentPackets) == UInt64(segments) && s.peers[0].txPackets == UInt64(segments))
        #expect(s.counter(.offloadsWithdrawn) == 1)
        #expect(s.totalDrops == 0)
    }

    /// A flooded super-frame's GSO message and its copies go to the active peers only: a
    /// retired learned peer between two others is skipped, and each of the others gets every
    /// segment, counted as its own.
    @Test func aFloodedSuperFrameSkipsARetiredPeer() throws {
        let s1 = IPAddress.v4(IPv4Address(10, 99, 0, 21)), s2 = IPAddress.v4(IPv4Address(10, 99, 0, 22))
        var c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: .v4(IPv4Address(10, 99, 0, 1)), peers: [peer4a], underlayMTU: 1500)
        let limits = DataPathLimits(configuration: c, maximumFrame: 65535 + 28)
        c.acceptAnyPeer = true
        c.ageingSeconds = 60
        let device = FakeDevice()
        device.virtioHeader = true
        let transport = udpTransport()
        let clock = TestClock()
        let f = try Worker(configuration: c, limits: limits, device: device, transport: transport, deviceMAC: tapMAC, clock: { clock.now })
        for (source, mac) in [(s1, MACAddress(0x02, 0, 0, 0, 0, 0x21)), (s2, MACAddress(0x02, 0, 0, 0, 0, 0x22))] {
            transport.incoming.append(([8, 0, 0, 0, 0, 0, 42, 0] + remoteFrame(from: mac), source, 40000))
            _ = try f.ingressStep()
            clock.advance(by: 30)
        }
        transport.incoming.append(([8, 0, 0, 0, 0, 0, 42, 0] + remoteFrame(from: MACAddress(0x02, 0, 0, 0, 0, 0x22), seed: 1), s2, 40000))
        _ = try f.ingressStep()
        clock.advance(by: 31)
        f.state.agePeers()  // s1 silent 61 s, s2 31 s
        #expect(f.state.statistics().peers.map(\.retired) == [false, true, false])

        let mss = 1410, payload = 50_000
        // To a MAC nobody has: flooded.
        var frame = VirtioTests.superFrame(payload: payload, mss: mss)
        frame.replaceSubrange(10..<16, with: [0x02, 0, 0, 0, 0, 0x99])
        device.pending = [frame]
        _ = try f.egressStep()
        let segments = (payload + mss - 1) / mss
        #expect(!transport.sent.contains { $0.destination == s1 })
        for peer in [peer4a, s2] {
            let (data, pieces) = try UDPSenderTests.tcpPayloads(of: transport.sent, to: peer)
            #expect(pieces == segments && data == FrameBuilder.pattern(payload), "\(peer): every segment, in order")
        }
        let peers = f.state.statistics().peers
        #expect(peers.map(\.txPackets) == [UInt64(segments), 0, UInt64(segments)])
    }

    /// The refusal surfaces in a flush the middle of a step makes (64 super-frames outgrow one
    /// send): the rest of the super-frame being cut goes a datagram a message too, never one
    /// datagram holding several segments.
    @Test func aGSORefusalFoundMidStepLeavesNoDatagramHoldingSeveralSegments() throws {
        let (f, device, transport) = try worker()
        transport.refuseGSO = true
        let mss = 1410
        let sizes = (0..<64).map { 60_000 + 7 * $0 }
        device.pending = sizes.map { VirtioTests.superFrame(payload: $0, mss: mss) }
        _ = try f.egressStep()
        #expect(transport.sendCalls > 1, "the refusal came from a flush mid-step")
        var data: [UInt8] = []
        var whole = true
        for send in transport.sent {
            #expect(send.segmentSize == nil)
            let packet = send.bytes.withUnsafeBytes { Decapsulator().decapsulate(vxlanPayload: $0, source: peer4a, destination: peer4a) }
            let inner = try #require(packet.packet).inner
            // One segment: its IPv4 total length covers exactly what follows the VXLAN header.
            let ip = inner.lowerBound + 14
            whole = whole && Int(send.bytes[ip + 2]) << 8 | Int(send.bytes[ip + 3]) == inner.count - 14
            data += send.bytes[(inner.lowerBound + 54)...]
        }
        #expect(whole, "every datagram holds one segment")
        let intact = data == sizes.flatMap { FrameBuilder.pattern($0) }
        #expect(intact, "every segment once, in order")
        #expect(f.state.statistics().totalDrops == 0)
    }

    @Test func aWholeFrameGoesBehindTheVXLANHeaderFromItsFlowsSender() throws {
        let (f, device, transport) = try worker()
        let frame = FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: localMAC,
                                       payload: .udp(sourcePort: 7, destinationPort: 9, data: FrameBuilder.pattern(300)))
        device.pending = [[UInt8](repeating: 0, count: 10) + frame, [UInt8](repeating: 0, count: 10) + frame]
        _ = try f.egressStep()
        #expect(transport.sent.count == 2)
        #expect(transport.sent.allSatisfy { $0.segmentSize == nil && $0.bytes == Array([8, 0, 0, 0, 0, 0, 42, 0]) + frame })
        #expect(transport.sent[0].socket == transport.sent[1].socket)
    }

    /// Whole frames of one size to one peer through one sender leave as one GSO send; a frame
    /// of another size, or for another peer, starts a new run; a lone frame goes as it is.
    @Test func runsOfEqualFramesLeaveAsOneGSOSend() throws {
        var c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: .v4(IPv4Address(10, 99, 0, 1)),
                                    peers: [peer4a, peer4b], underlayMTU: 1500)
        let limits = DataPathLimits(configuration: c, maximumFrame: 65535 + 28)
        c.staticEntries = [(remoteMAC, peer4a), (otherRemoteMAC, peer4b)]
        c.batchSize = 128  // all of it in one step: a run never spans two
        let device = FakeDevice()
        device.virtioHeader = true
        let transport = udpTransport()
        let f = try Worker(configuration: c, limits: limits, device: device, transport: transport, deviceMAC: tapMAC)
        func frame(to mac: MACAddress, _ n: Int, length: Int = 64) -> [UInt8] {
            FrameBuilder.frame(destinationMAC: mac, sourceMAC: localMAC, source: localContainer4, destination: remoteContainer4,
                               payload: .udp(sourcePort: 7, destinationPort: 9, data: FrameBuilder.pattern(length, seed: UInt8(n))),
                               pad: false)
        }
        let run = (0..<70).map { frame(to: remoteMAC, $0) }  // more than one send holds (64)
        let other = frame(to: remoteMAC, 99, length: 65)
        let lone = frame(to: otherRemoteMAC, 100)
        let frames = Array(run[0..<40]) + [other] + Array(run[40..<70]) + [lone]
        device.pending = frames.map { [UInt8](repeating: 0, count: 10) + $0 }
        while try f.egressStep() > 0 {}
        let vxlan: [UInt8] = [8, 0, 0, 0, 0, 0, 42, 0]
        let size = 8 + run[0].count
        // 40 frames; the odd one alone; 30 more; the one for the other peer.
        #expect(transport.sent.map(\.segmentSize) == [size, nil, size, nil])
        #expect(transport.sent.map(\.destination) == [peer4a, peer4a, peer4a, peer4b])
        try #require(transport.sent.count == 4)
        let payloads = transport.sent.map(\.bytes)
        #expect(payloads[0] == run[0..<40].flatMap { vxlan + $0 }, "the first run, each frame behind its VXLAN header")
        #expect(payloads[1] == vxlan + other)
        #expect(payloads[2] == run[40..<70].flatMap { vxlan + $0 }, "the second run")
        #expect(payloads[3] == vxlan + lone)
        let s = f.state.statistics()
        #expect(s.counter(.sentPackets) == 72)
        #expect(s.peers[0].txPackets == 71 && s.peers[1].txPackets == 1)
        #expect(s.peers[0].txBytes == UInt64((run.count * (run[0].count + 36)) + other.count + 36))
        #expect(s.counter(.gsoSends) == 2, "the two runs; the lone frames are plain sends")
    }

    /// A run ends at 64 datagrams, and wherever something else must go out in between: a
    /// flooded frame, a super-frame's GSO sends.
    @Test func runsEndAtTheirLimitAndWhereOtherTrafficCuts() throws {
        var c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: .v4(IPv4Address(10, 99, 0, 1)),
                                    peers: [peer4a, peer4b], underlayMTU: 1500)
        let limits = DataPathLimits(configuration: c, maximumFrame: 65535 + 28)
        c.staticEntries = [(remoteMAC, peer4a), (VirtioTests.remote, peer4a)]
        c.batchSize = 128
        let device = FakeDevice()
        device.virtioHeader = true
        let transport = udpTransport()
        let f = try Worker(configuration: c, limits: limits, device: device, transport: transport, deviceMAC: tapMAC)
        func frame(to mac: MACAddress, _ n: Int) -> [UInt8] {
            [UInt8](repeating: 0, count: 10) + FrameBuilder.frame(
                destinationMAC: mac, sourceMAC: localMAC, source: localContainer4, destination: remoteContainer4,
                payload: .udp(sourcePort: 7, destinationPort: 9, data: FrameBuilder.pattern(64, seed: UInt8(n))), pad: false)
        }
        let unicast = (0..<80).map { frame(to: remoteMAC, $0) }
        device.pending = Array(unicast[0..<70]) + [frame(to: .broadcast, 99)] + Array(unicast[70..<73])
            + [VirtioTests.superFrame(payload: 5000, mss: 1000)] + Array(unicast[73..<75])
        while try f.egressStep() > 0 {}
        let size = 8 + unicast[0].count - 10
        // The flow's sender, in order; the super-frame's TCP flow may share it: leave its sends out.
        let k = try #require(transport.sent.first).socket
        let datagrams = transport.sent.filter { $0.socket == k && ($0.segmentSize == nil || $0.segmentSize == size) }
            .map { $0.segmentSize == nil ? 1 : $0.bytes.count / size }
        // 64 + 6, the broadcast to each peer, 3 before the super-frame, 2 after.
        #expect(datagrams == [64, 6, 1, 1, 3, 2])
        #expect(f.state.statistics().counter(.sentPackets) == 75 + 2 + 5)
    }
}

@Suite("UDP GRO receives")
struct GROReceiveTests {
    /// With joining turned off (`--offloads` without gro), each segment goes to the TAP as it
    /// came, behind an empty virtio header.
    @Test(arguments: [true, false])
    func joinedDatagramsAreEachDecapsulatedAndTheirSegmentsCoalesced(joins: Bool) throws {
        let c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: .v4(IPv4Address(10, 99, 0, 1)), peers: [peer4a], underlayMTU: 1500)
        let limits = DataPathLimits(configuration: c, joinsReceivedSegments: joins)
        let device = FakeDevice()
        device.virtioHeader = true
        let transport = FakeTransport(receivedForm: .vxlanPayload)
        let f = try Worker(configuration: c, limits: limits, device: device, transport: transport, deviceMAC: tapMAC)
        // Five datagrams of one size (the last shorter, as GRO allows): VXLAN + a TCP segment.
        var joined: [UInt8] = [], inners: [[UInt8]] = []
        let sizes = [1000, 1000, 1000, 1000, 400]
        var sequence: UInt32 = 1
        for (i, size) in sizes.enumerated() {
            let inner = FrameBuilder.frame(destinationMAC: localMAC, sourceMAC: VirtioTests.remote, identification: UInt16(i),
                                           payload: .tcp(sourcePort: 5201, destinationPort: 40000, sequence: sequence, acknowledgment: 1,
                                                         flags: TCP.ack, data: FrameBuilder.pattern(size, seed: UInt8(i))))
            sequence += UInt32(size)
            joined += [8, 0, 0, 0, 0, 0, 42, 0] + inner
            inners.append(inner)
        }
        transport.groSegmentSize = 8 + 54 + 1000
        transport.incoming = [(joined, peer4a, 40000)]
        #expect(try f.ingressStep() == 1)
        let s = f.state.statistics()
        #expect(s.counter(.receivedPackets) == 5)
        #expect(s.peers[0].rxPackets == 5)
        #expect(s.totalDrops == 0)
        #expect(s.counter(.groReceives) == 1)
        guard joins else {
            #expect(device.written == inners.map { [UInt8](repeating: 0, count: 10) + $0 })
            #expect(s.counter(.coalescedSegments) == 0)
            return
        }
        // One flow, in order: one super-frame on the TAP, payloads intact.
        #expect(device.written.count == 1)
        let written = try #require(device.written.first)
        #expect(written.count == 10 + 54 + sizes.reduce(0, +))
        #expect(written.withUnsafeBytes { VirtioNetHeader($0).gsoSize } == 1000)
        #expect(s.counter(.coalescedSegments) == 4)
    }
}
