import FerryLinux
import FerryWire

// Capture taps at the two ends of encapsulation. Frames are recorded where they lie when they
// are whole; what the sockets hide (outer headers the kernel writes or strips, a segment whose
// headers and payload lie apart) is rebuilt in a scratch buffer first. Recording copies into
// this worker's ring (`CaptureRing`), or drops and counts if it is full: it never waits.
extension Worker {
    /// Captures a segment whose headers and payload lie apart, joined in the scratch buffer.
    func recordInner(_ headers: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer, _ capture: CaptureRing) {
        let out = scratch.base
        out.copyMemory(from: headers.baseAddress!, byteCount: headers.count)
        if payload.count > 0 { (out + headers.count).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
        capture.record(UnsafeRawBufferPointer(start: out, count: headers.count + payload.count), at: .inner)
    }

    /// A capture of an outer packet as sent: an Ethernet header, then the IP packet.
    func recordOuter(_ batch: MessageBatch, _ m: Int, _ capture: CaptureRing) {
        let (_, bytes) = batch.message(m)
        let out = scratch.bytes
        Ethernet.writeHeader(to: out, at: 0, destination: .zero, source: limits.localMAC,
                             etherType: configuration.local.isIPv6 ? EtherType.ipv6 : EtherType.ipv4)
        bytes.withUnsafeBytes { out.baseAddress!.advanced(by: Ethernet.headerLength).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        capture.record(UnsafeRawBufferPointer(rebasing: out[0..<(Ethernet.headerLength + bytes.count)]), at: .outer)
    }

    /// A capture of a received outer packet. A raw IPv4 socket hands up the real IP header; a
    /// UDP or raw IPv6 socket only the payload, so the outer IP (and UDP) headers are rebuilt
    /// from the addresses, ports and TOS the socket reports: TTL, DF and IP ID are not the
    /// wire's.
    func recordIncomingOuter(_ packet: UnsafeRawBufferPointer, source: IPAddress, sourcePort: UInt16, tos: UInt8,
                             _ capture: CaptureRing) {
        let out = ingressScratch.bytes
        let isIPv6 = configuration.local.isIPv6
        Ethernet.writeHeader(to: out, at: 0, destination: limits.localMAC, source: .zero,
                             etherType: isIPv6 ? EtherType.ipv6 : EtherType.ipv4)
        var o = Ethernet.headerLength
        if receivedForm != .ipPacket {
            let proto: UInt8 = receivedForm == .vxlanPayload ? IPProtocol.udp : IPProtocol.gre
            let l4 = receivedForm == .vxlanPayload ? UDP.headerLength + packet.count : packet.count
            switch (source, configuration.local) {
            case (.v4(let s), .v4(let d)):
                o += IPv4.writeHeader(to: out, at: o, tos: tos, totalLength: 20 + l4, ttl: 64, protocol: proto, source: s, destination: d)
            case (.v6(let s), .v6(let d)):
                o += IPv6.writeHeader(to: out, at: o, trafficClass: tos, payloadLength: l4, nextHeader: proto, source: s, destination: d)
            default:
                return
            }
            if proto == IPProtocol.udp {
                o += UDP.writeHeader(to: out, at: o, sourcePort: sourcePort, destinationPort: configuration.destinationPort, length: l4)
            }
        }
        out.baseAddress!.advanced(by: o).copyMemory(from: packet.baseAddress!, byteCount: packet.count)
        capture.record(UnsafeRawBufferPointer(rebasing: out[0..<(o + packet.count)]), at: .outer)
    }
}
