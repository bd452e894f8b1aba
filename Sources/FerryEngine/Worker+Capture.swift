import FerryLinux
import FerryWire

// Capture taps at the two ends of encapsulation, and at every drop. Frames are recorded where
// they lie when they are whole; what the sockets hide (outer headers the kernel writes or
// strips, a segment whose headers and payload lie apart) is rebuilt in a scratch buffer first.
// Recording copies into this worker's ring of each attached capture (`WorkerCaptures`), or
// drops and counts if it is full: it never waits.
//
// Each capture site on the packet path is `if _slowPath(captures != nil) { record…(…) }`: a load
// and a compare, and a call that is not inlined (the rest, which point is wanted, here); each
// drop site is one call. Inlined, the recording code made the steps too big for the optimiser
// to inline `forward` into them (+30 instructions a packet with nothing attached,
// bench/instructions).
extension Worker {
    /// Captures a whole inner frame.
    @inline(never)
    func recordInner(_ frame: UnsafeRawBufferPointer) {
        guard let captures, captures.inner else { return }
        captures.record(frame, at: .inner)
    }

    /// Captures a received packet: its outer form, and the inner frame it carried.
    @inline(never)
    func recordReceived(_ packet: UnsafeRawBufferPointer, inner: UnsafeRawBufferPointer, source: IPAddress, sourcePort: UInt16,
                        tos: UInt8) {
        guard let captures else { return }
        if captures.outer { recordIncomingOuter(packet, source: source, sourcePort: sourcePort, tos: tos, captures) }
        if captures.inner { captures.record(inner, at: .inner) }
    }

    /// Captures a segment whose headers and payload lie apart, joined in the scratch buffer.
    @inline(never)
    func recordInner(_ headers: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer) {
        guard let captures, captures.inner else { return }
        let out = scratch.base
        out.copyMemory(from: headers.baseAddress!, byteCount: headers.count)
        if payload.count > 0 { (out + headers.count).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
        captures.record(UnsafeRawBufferPointer(start: out, count: headers.count + payload.count), at: .inner)
    }

    /// A capture of an outer packet as sent: an Ethernet header, then the IP packet (its
    /// pieces joined in the scratch buffer, without allocating).
    @inline(never)
    func recordOuter(_ batch: MessageBatch, _ m: Int) {
        guard let captures, captures.outer else { return }
        let out = scratch.bytes
        Ethernet.writeHeader(to: out, at: 0, destination: .zero, source: limits.localMAC,
                             etherType: configuration.local.isIPv6 ? EtherType.ipv6 : EtherType.ipv4)
        let length = batch.gather(m, into: UnsafeMutableRawBufferPointer(rebasing: out[Ethernet.headerLength...]))
        captures.record(UnsafeRawBufferPointer(rebasing: out[0..<(Ethernet.headerLength + length)]), at: .outer)
    }

    /// Captures what UDP sender `k`'s batch puts on the wire, before it is sent: each datagram
    /// as its own record (a GSO message cut where the kernel will cut it), behind Ethernet, IP
    /// and UDP headers rebuilt from the addresses and ports. The kernel writes the real ones:
    /// the IP ID, the UDP checksum (0 here) and the IPv4 header checksum are not the wire's;
    /// TTL, TOS and DF are the tunnel's settings, as the sender socket applies them.
    @inline(never)
    func recordSentUDP(_ batch: MessageBatch, socket k: Int) {
        guard let captures, captures.outer else { return }
        let isIPv6 = configuration.local.isIPv6
        let room = Ethernet.headerLength + (isIPv6 ? IPv6.headerLength : IPv4.minimumHeaderLength) + UDP.headerLength
        let out = scratch.bytes
        let payloadArea = UnsafeMutableRawBufferPointer(rebasing: out[room...])
        let sourcePort = transport.udpSenderPort(k)
        for m in 0..<batch.count {
            guard let name = batch.destinationName(m).0, let (destination, port) = SocketAddress.decode(name) else { continue }
            let write = { (datagram: UnsafeRawBufferPointer) in
                // The datagram lies in `payloadArea` already: the headers go in front.
                var o = Ethernet.writeHeader(to: out, at: 0, destination: .zero, source: self.limits.localMAC,
                                             etherType: isIPv6 ? EtherType.ipv6 : EtherType.ipv4)
                let l4 = UDP.headerLength + datagram.count
                switch (self.configuration.local, destination) {
                case (.v4(let s), .v4(let d)):
                    o += IPv4.writeHeader(to: out, at: o, tos: self.capturedTOS, totalLength: IPv4.minimumHeaderLength + l4,
                                          dontFragment: self.configuration.dontFragment == .set, ttl: self.configuredTTL,
                                          protocol: IPProtocol.udp, source: s, destination: d)
                case (.v6(let s), .v6(let d)):
                    o += IPv6.writeHeader(to: out, at: o, trafficClass: self.capturedTOS, payloadLength: l4, nextHeader: IPProtocol.udp,
                                          hopLimit: self.configuredTTL, source: s, destination: d)
                default:
                    return
                }
                o += UDP.writeHeader(to: out, at: o, sourcePort: sourcePort, destinationPort: port, length: l4)
                captures.record(UnsafeRawBufferPointer(rebasing: out[0..<(o + datagram.count)]), at: .outer)
            }
            if batch.segmentSize(m) != nil {
                batch.forEachDatagram(of: m, scratch: payloadArea) { write($0) }
            } else {
                let length = batch.gather(m, into: payloadArea)
                write(UnsafeRawBufferPointer(rebasing: payloadArea[0..<length]))
            }
        }
    }

    /// The TOS and TTL the UDP senders are set up with (a fixed TOS: the senders exist only then).
    var capturedTOS: UInt8 { if case .fixed(let tos) = configuration.tos { tos } else { 0 } }
    var configuredTTL: UInt8 { configuration.ttl }

    /// A received packet in its outer form, in `ingressScratch`: a raw IPv4 socket hands up
    /// the real IP header; a UDP or raw IPv6 socket only the payload, so the outer IP (and UDP)
    /// headers are rebuilt from the addresses, ports and TOS the socket reports: TTL, DF and IP
    /// ID are not the wire's. An unknown source is written as the unspecified address.
    func incomingOuter(_ packet: UnsafeRawBufferPointer, source: IPAddress?, sourcePort: UInt16, tos: UInt8)
        -> UnsafeRawBufferPointer? {
        let out = ingressScratch.bytes
        let isIPv6 = configuration.local.isIPv6
        Ethernet.writeHeader(to: out, at: 0, destination: limits.localMAC, source: .zero,
                             etherType: isIPv6 ? EtherType.ipv6 : EtherType.ipv4)
        var o = Ethernet.headerLength
        if receivedForm != .ipPacket {
            let proto: UInt8 = receivedForm == .vxlanPayload ? IPProtocol.udp : IPProtocol.gre
            let l4 = receivedForm == .vxlanPayload ? UDP.headerLength + packet.count : packet.count
            switch (source ?? (isIPv6 ? .v6(IPv6Address(high: 0, low: 0)) : .v4(IPv4Address(value: 0))), configuration.local) {
            case (.v4(let s), .v4(let d)):
                o += IPv4.writeHeader(to: out, at: o, tos: tos, totalLength: 20 + l4, ttl: 64, protocol: proto, source: s, destination: d)
            case (.v6(let s), .v6(let d)):
                o += IPv6.writeHeader(to: out, at: o, trafficClass: tos, payloadLength: l4, nextHeader: proto, source: s, destination: d)
            default:
                return nil
            }
            if proto == IPProtocol.udp {
                o += UDP.writeHeader(to: out, at: o, sourcePort: sourcePort, destinationPort: configuration.destinationPort, length: l4)
            }
        }
        guard o + packet.count <= out.count else { return nil }
        if packet.count > 0 { out.baseAddress!.advanced(by: o).copyMemory(from: packet.baseAddress!, byteCount: packet.count) }
        return UnsafeRawBufferPointer(rebasing: out[0..<(o + packet.count)])
    }

    /// A capture of a received outer packet (`incomingOuter`).
    func recordIncomingOuter(_ packet: UnsafeRawBufferPointer, source: IPAddress, sourcePort: UInt16, tos: UInt8,
                             _ captures: WorkerCaptures) {
        if let outer = incomingOuter(packet, source: source, sourcePort: sourcePort, tos: tos) { captures.record(outer, at: .outer) }
    }

    // MARK: - Drops

    /// Counts an egress drop, and records `frame` (as read from the TAP) for the drops
    /// captures, with the peer in slot `peer` it was for (-1: none, or a flood). Not inlined:
    /// a drop site on the packet path is one call, which keeps the steps small.
    @inline(never)
    func drop(_ reason: DropReason, _ counters: CounterBlock, frame: UnsafeRawBufferPointer, peer: Int = -1) {
        counters.add(layout.index(reason))
        // One compare inline; the rest (is it a drops capture?) out of line.
        if _slowPath(captures != nil) { recordEgressDrop(reason, frame, peer: peer) }
    }

    /// Counts an ingress drop, and records `packet` in its outer form for the drops captures,
    /// with the source it came from (nil: the socket named none). Not inlined, as the egress one.
    @inline(never)
    func drop(_ reason: DropReason, _ counters: CounterBlock, packet: UnsafeRawBufferPointer, from source: IPAddress?,
              port: UInt16 = 0, tos: UInt8 = 0) {
        counters.add(layout.index(reason))
        if _slowPath(captures != nil) { recordIngressDrop(reason, packet, source: source, port: port, tos: tos) }
    }

    @inline(never)
    func recordEgressDrop(_ reason: DropReason, _ frame: UnsafeRawBufferPointer, peer: Int) {
        guard let captures, captures.drops else { return }
        let address = peer >= 0 && peer < peers.count ? peers.withPeer(peer) { $0.address } : nil
        captures.recordDrop(frame, reason: reason, direction: .egress, peer: address)
    }

    @inline(never)
    func recordIngressDrop(_ reason: DropReason, _ packet: UnsafeRawBufferPointer, source: IPAddress?, port: UInt16, tos: UInt8) {
        guard let captures, captures.drops, let outer = incomingOuter(packet, source: source, sourcePort: port, tos: tos) else { return }
        captures.recordDrop(outer, reason: reason, direction: .ingress, peer: source)
    }
}
