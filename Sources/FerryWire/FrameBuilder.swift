// Whole frames as arrays, with every checksum right: for sample captures, tests and the
// overhead tools. Not for the hot path, which never allocates.

public enum FrameBuilder {
    /// The inner packet of a frame.
    public enum Payload: Sendable {
        case arp(operation: UInt16, senderIP: IPv4Address, targetIP: IPv4Address, targetMAC: MACAddress)
        case icmpEcho(request: Bool, identifier: UInt16, sequence: UInt16, data: [UInt8])
        case udp(sourcePort: UInt16, destinationPort: UInt16, data: [UInt8])
        case tcp(sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32, acknowledgment: UInt32,
                 flags: UInt8, data: [UInt8])
        case raw(etherType: UInt16, data: [UInt8])
    }

    /// Builds an Ethernet frame, optionally 802.1Q-tagged, carrying `payload` over IPv4 or IPv6
    /// between `source` and `destination` (ignored for ARP and raw payloads). Frames shorter than
    /// 60 bytes are padded as on the wire.
    public static func frame(destinationMAC: MACAddress, sourceMAC: MACAddress, vlan: UInt16? = nil,
                             source: IPAddress = .v4(IPv4Address(10, 0, 0, 1)),
                             destination: IPAddress = .v4(IPv4Address(10, 0, 0, 2)),
                             ttl: UInt8 = 64, tos: UInt8 = 0, dontFragment: Bool = true,
                             identification: UInt16 = 1, payload: Payload, pad: Bool = true) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 65600)
        let length = bytes.withUnsafeMutableBytes { b -> Int in
            destinationMAC.write(to: b, at: 0)
            sourceMAC.write(to: b, at: 6)
            var o = 12
            if let vlan {
                b.setU16(EtherType.vlan, at: o)
                b.setU16(vlan & 0x0FFF, at: o + 2)
                o += 4
            }
            let typeOffset = o
            let l3 = o + 2
            switch payload {
            case .arp(let op, let senderIP, let targetIP, let targetMAC):
                b.setU16(EtherType.arp, at: typeOffset)
                return l3 + ARP.write(to: b, at: l3, operation: op, senderMAC: sourceMAC, senderIP: senderIP,
                                      targetMAC: targetMAC, targetIP: targetIP)
            case .raw(let type, let data):
                b.setU16(type, at: typeOffset)
                for (i, x) in data.enumerated() { b[l3 + i] = x }
                return l3 + data.count
            default:
                break
            }
            let ipHeader: Int
            switch source {
            case .v4: b.setU16(EtherType.ipv4, at: typeOffset); ipHeader = IPv4.minimumHeaderLength
            case .v6: b.setU16(EtherType.ipv6, at: typeOffset); ipHeader = IPv6.headerLength
            }
            let l4 = l3 + ipHeader
            let proto: UInt8
            let l4Length: Int
            var checksumOffset: Int? = nil
            switch payload {
            case .icmpEcho(let request, let id, let seq, let data):
                if case .v6(let s) = source, case .v6(let d) = destination {
                    proto = IPProtocol.icmpv6
                    l4Length = ICMPv6.writeEcho(to: b, at: l4, type: request ? ICMPv6.echoRequest : ICMPv6.echoReply,
                                                identifier: id, sequence: seq, payload: data, source: s, destination: d)
                } else {
                    proto = IPProtocol.icmp
                    l4Length = ICMPv4.writeEcho(to: b, at: l4, type: request ? ICMPv4.echoRequest : ICMPv4.echoReply,
                                                identifier: id, sequence: seq, payload: data)
                }
            case .udp(let sp, let dp, let data):
                proto = IPProtocol.udp
                l4Length = UDP.headerLength + data.count
                UDP.writeHeader(to: b, at: l4, sourcePort: sp, destinationPort: dp, length: l4Length)
                for (i, x) in data.enumerated() { b[l4 + 8 + i] = x }
                checksumOffset = 6
            case .tcp(let sp, let dp, let seq, let ack, let flags, let data):
                proto = IPProtocol.tcp
                l4Length = TCP.minimumHeaderLength + data.count
                TCP.writeHeader(to: b, at: l4, sourcePort: sp, destinationPort: dp, sequence: seq,
                                acknowledgment: ack, flags: flags)
                for (i, x) in data.enumerated() { b[l4 + 20 + i] = x }
                checksumOffset = 16
            case .arp, .raw:
                preconditionFailure("handled above")
            }
            if let checksumOffset {
                let pseudo = InternetChecksum.pseudoHeaderSum(source: source, destination: destination,
                                                              protocol: proto, length: l4Length)
                let segment = UnsafeRawBufferPointer(rebasing: b[l4..<(l4 + l4Length)])
                let sum = InternetChecksum.add(pseudo, InternetChecksum.sum(segment))
                b.setU16(proto == IPProtocol.udp ? UDP.finish(sum) : ~sum, at: l4 + checksumOffset)
            }
            switch (source, destination) {
            case (.v4(let s), .v4(let d)):
                IPv4.writeHeader(to: b, at: l3, tos: tos, totalLength: ipHeader + l4Length,
                                 identification: identification, dontFragment: dontFragment, ttl: ttl,
                                 protocol: proto, source: s, destination: d)
            case (.v6(let s), .v6(let d)):
                IPv6.writeHeader(to: b, at: l3, trafficClass: tos, payloadLength: l4Length, nextHeader: proto,
                                 hopLimit: ttl, source: s, destination: d)
            default:
                preconditionFailure("source and destination of different families")
            }
            return l4 + l4Length
        }
        return Array(bytes[0..<(pad ? max(length, Ethernet.minimumFrameLength) : length)])
    }

    /// A deterministic byte pattern for payloads.
    public static func pattern(_ count: Int, seed: UInt8 = 0) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &+ Int(seed)) }
    }
}
