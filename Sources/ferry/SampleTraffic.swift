import FerryCapture
import FerryWire

/// A small, deterministic capture of what containers on two hosts say to each other: ARP,
/// ICMP echoes, a TCP transfer, UDP of several sizes, IPv6, and a VLAN-tagged frame. It is the
/// default input of `ferry demo` and `ferry pcap sample`.
enum SampleTraffic {
    static let macA = MACAddress(0x02, 0x42, 0x0A, 0x11, 0x00, 0x02)
    static let macB = MACAddress(0x02, 0x42, 0x0A, 0x12, 0x00, 0x03)
    static let ipA = IPv4Address(10, 17, 0, 2)
    static let ipB = IPv4Address(10, 18, 0, 3)
    static let ip6A = IPv6Address("fd00:17::2")!
    static let ip6B = IPv6Address("fd00:18::3")!

    static func frames() -> [[UInt8]] {
        var out: [[UInt8]] = []
        let a = IPAddress.v4(ipA), b = IPAddress.v4(ipB)
        func ab(_ p: FrameBuilder.Payload, id: UInt16 = 1) -> [UInt8] {
            FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: a, destination: b, identification: id, payload: p)
        }
        func ba(_ p: FrameBuilder.Payload, id: UInt16 = 1) -> [UInt8] {
            FrameBuilder.frame(destinationMAC: macA, sourceMAC: macB, source: b, destination: a, identification: id, payload: p)
        }
        out.append(FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: macA,
                                      payload: .arp(operation: ARP.request, senderIP: ipA, targetIP: ipB, targetMAC: .zero)))
        out.append(FrameBuilder.frame(destinationMAC: macA, sourceMAC: macB,
                                      payload: .arp(operation: ARP.reply, senderIP: ipB, targetIP: ipA, targetMAC: macA)))
        for seq in UInt16(1)...4 {
            let data = FrameBuilder.pattern(56, seed: UInt8(seq))
            out.append(ab(.icmpEcho(request: true, identifier: 0x4242, sequence: seq, data: data), id: seq))
            out.append(ba(.icmpEcho(request: false, identifier: 0x4242, sequence: seq, data: data), id: seq))
        }
        // A TCP connection: handshake, eight full-size segments with ACKs, and the close.
        let (cp, sp): (UInt16, UInt16) = (43210, 5201)
        var cs: UInt32 = 1_000_000, ss: UInt32 = 7_000_000
        out.append(ab(.tcp(sourcePort: cp, destinationPort: sp, sequence: cs, acknowledgment: 0, flags: TCP.syn, data: [])))
        out.append(ba(.tcp(sourcePort: sp, destinationPort: cp, sequence: ss, acknowledgment: cs + 1, flags: TCP.syn | TCP.ack, data: [])))
        cs += 1; ss += 1
        out.append(ab(.tcp(sourcePort: cp, destinationPort: sp, sequence: cs, acknowledgment: ss, flags: TCP.ack, data: [])))
        for i in 0..<8 {
            let data = FrameBuilder.pattern(1448, seed: UInt8(i))
            out.append(ab(.tcp(sourcePort: cp, destinationPort: sp, sequence: cs, acknowledgment: ss,
                               flags: TCP.ack | (i == 7 ? TCP.psh : 0), data: data), id: UInt16(10 + i)))
            cs += 1448
            if i % 2 == 1 {
                out.append(ba(.tcp(sourcePort: sp, destinationPort: cp, sequence: ss, acknowledgment: cs, flags: TCP.ack, data: [])))
            }
        }
        out.append(ab(.tcp(sourcePort: cp, destinationPort: sp, sequence: cs, acknowledgment: ss, flags: TCP.fin | TCP.ack, data: [])))
        out.append(ba(.tcp(sourcePort: sp, destinationPort: cp, sequence: ss, acknowledgment: cs + 1, flags: TCP.fin | TCP.ack, data: [])))
        out.append(ab(.tcp(sourcePort: cp, destinationPort: sp, sequence: cs + 1, acknowledgment: ss + 1, flags: TCP.ack, data: [])))
        // UDP from the smallest frame to the largest that fits a 1500-byte MTU.
        for (i, size) in [18, 100, 512, 1472].enumerated() {
            out.append(ab(.udp(sourcePort: 5353 + UInt16(i), destinationPort: 9000, data: FrameBuilder.pattern(size)), id: UInt16(100 + i)))
        }
        // IPv6 between the same containers.
        let a6 = IPAddress.v6(ip6A), b6 = IPAddress.v6(ip6B)
        out.append(FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: a6, destination: b6,
                                      payload: .icmpEcho(request: true, identifier: 7, sequence: 1, data: FrameBuilder.pattern(56))))
        out.append(FrameBuilder.frame(destinationMAC: macA, sourceMAC: macB, source: b6, destination: a6,
                                      payload: .icmpEcho(request: false, identifier: 7, sequence: 1, data: FrameBuilder.pattern(56))))
        out.append(FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, source: a6, destination: b6,
                                      payload: .udp(sourcePort: 40000, destinationPort: 9000, data: FrameBuilder.pattern(1000))))
        // A frame on VLAN 100.
        out.append(FrameBuilder.frame(destinationMAC: macB, sourceMAC: macA, vlan: 100, source: a, destination: b,
                                      payload: .icmpEcho(request: true, identifier: 9, sequence: 1, data: FrameBuilder.pattern(56))))
        return out
    }

    /// Writes the sample to `path`, one millisecond apart from a fixed time; returns the count.
    @discardableResult
    static func write(to path: String) throws -> Int {
        let writer = try PcapFileWriter(path: path)
        let frames = frames()
        let start: Int64 = 1_767_225_600  // 2026-01-01T00:00:00Z
        for (i, frame) in frames.enumerated() {
            writer.write(frame, timestamp: PacketTimestamp(seconds: start + Int64(i / 1000), microseconds: Int32(i % 1000) * 1000))
        }
        try writer.close()
        return frames.count
    }
}
