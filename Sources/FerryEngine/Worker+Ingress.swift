import FerryLinux
import FerryWire

// Ingress, tunnel → bridge: admit what comes with this tunnel's VNI or key from a peer (or, in
// accept-any mode, from a source that becomes one),
// decapsulate it in place, hand the inner frame to the TAP writer, and learn its source MAC.
extension Worker {
    /// Received message `i`: one datagram, or with UDP_GRO several of one size end to end, all
    /// from one source (so the peer is looked up once per message).
    @inline(__always)
    func ingress(message i: Int, now: Int64) {
        let c = ingressCounters
        let batch = received.batch
        let length = batch.receivedLength(i)
        let message = received.message(i, length: length)
        if batch.wasTruncated(i) { drop(.receiveTruncated, c, packet: message, from: batch.source(i)?.0); return }
        guard let (source, sourcePort) = batch.source(i) else { drop(.unknownPeer, c, packet: message, from: nil); return }
        let size = batch.groSegmentSize(i) ?? length
        if size < length { c.add(layout.index(.groReceives)) }
        // The outer ECN field, for RFC 6040: from the IP header a raw IPv4 socket hands up,
        // else from the socket's report (one for a GRO receive: GRO joins equal TOS only).
        let tos = receivedForm == .ipPacket ? 0 : batch.receivedTOS(i) ?? 0
        var peer = peers.index(of: source)
        var heard = false
        for start in stride(from: 0, to: max(length, 1), by: max(size, 1)) {
            let packet = UnsafeRawBufferPointer(rebasing: message[start..<min(start + size, length)])
            if ingress(packet: packet, source: source, sourcePort: sourcePort, tos: tos, peer: &peer, now: now) { heard = true }
        }
        // Once per message, not per datagram; a packet from a retired peer brings it back.
        if heard, let p = peer, peers.heard(p, at: now) { c.add(layout.index(.peersLearned)) }
    }

    /// One datagram from `source` (peer slot `peer`, nil if not a peer yet, and set when it
    /// becomes one); true when it was delivered, false when it was dropped (and counted).
    @inline(__always)
    func ingress(packet: UnsafeRawBufferPointer, source: IPAddress, sourcePort: UInt16, tos: UInt8, peer: inout Int?,
                 now: Int64) -> Bool {
        let c = ingressCounters
        // Byte counts are of the outer IP packet, as on egress: with what the socket stripped.
        let outerBytes = UInt64(packet.count &+ strippedOuterBytes)
        c.add(layout.index(.receivedPackets))
        c.add(layout.index(.receivedBytes), outerBytes)
        guard let inner = decapsulate(packet, source: source, sourcePort: sourcePort, tos: tos) else { return false }
        let sourceMAC = MACAddress(inner, at: 6)
        // (The decisions are `Worker+Decisions.swift`'s, which the trace prints.)
        if let reason = admissionRefusal(peer: peer, source: source) {
            drop(reason, c, packet: packet, from: source, port: sourcePort, tos: tos)
            return false
        }
        if let reason = innerSourceRefusal(sourceMAC) {
            drop(reason, c, packet: packet, from: source, port: sourcePort, tos: tos)
            return false
        }
        if let reason = deliveryRefusal(inner) {
            drop(reason, c, packet: packet, from: source, port: sourcePort, tos: tos)
            return false
        }
        // RFC 6040: a congestion mark outside goes inside, or the packet goes (before it can
        // make its sender a peer).
        if let reason = Self.congestionRefusal(outer: outerECN(packet, tos: tos), inner: UnsafeMutableRawBufferPointer(mutating: inner)) {
            drop(reason, c, packet: packet, from: source, port: sourcePort, tos: tos)
            return false
        }
        if peer == nil { peer = admitNewPeer(source, now: now) }
        guard let p = peer else { drop(.unknownPeer, c, packet: packet, from: source, port: sourcePort, tos: tos); return false }
        if _slowPath(captures != nil) { recordReceived(packet, inner: inner, source: source, sourcePort: sourcePort, tos: tos) }
        writer.deliver(inner)
        c.add(layout.index(peer: p, .rxPackets))
        c.add(layout.index(peer: p, .rxBytes), outerBytes)
        learning.append(sourceMAC, peer: p, source: acceptsAnyPeer ? source : nil)
        return true
    }

    /// The inner frame of a tunnel packet in the form the transport hands up; nil (counted
    /// under its reason) when it is not this tunnel's or not well formed.
    @inline(__always)
    func decapsulate(_ packet: UnsafeRawBufferPointer, source: IPAddress, sourcePort: UInt16, tos: UInt8) -> UnsafeRawBufferPointer? {
        let result = decapsulationVerdict(packet, source: source, sourcePort: sourcePort)
        guard case .packet(let decapsulated) = result else {
            drop(result.dropReason!, ingressCounters, packet: packet, from: source, port: sourcePort, tos: tos)
            return nil
        }
        return UnsafeRawBufferPointer(rebasing: packet[decapsulated.inner])
    }

    /// Accept-any mode: a well-formed packet from a new address makes it a peer; returns its
    /// slot, nil when the peer table has no room. (A full table is checked first: nothing is
    /// built for a source that cannot get in — unless another worker has just added this very
    /// source, or every retired slot is still waiting to be given again.)
    @inline(never)
    func admitNewPeer(_ source: IPAddress, now: Int64) -> Int? {
        if peers.isFull { return peers.index(of: source) }
        guard let options = try? state.tunnelOptions(remote: source),
              let (index, added, reused) = peers.add(Peer(options: options, isLearned: true, workers: state.workers, heardAt: now),
                                                     now: now, baseline: state.peerCounters)
        else { return nil }
        if added { ingressCounters.add(layout.index(.peersLearned)) }
        // Nothing the slot's last peer left in the table may point at the newcomer.
        if reused { state.fdb.withLock { _ = $0.forget(peer: index) } }
        return index
    }

    /// Learns the step's inner source MACs, under one lock, and sweeps out aged entries.
    @inline(__always)
    func learnSources(now: Int64) {
        var outcome = (learned: 0, moved: 0, full: 0, expired: 0, limited: 0, local: 0)
        let acceptAny = acceptsAnyPeer
        let count = learning.count
        let macs = learning.macs.pointer, from = learning.peers.pointer, sources = learning.sources.pointer
        state.fdb.withLock { table in
            // (Slots change hands only in accept-any mode.)
            for k in 0..<count where !acceptAny || peers.withPeer(from[k], { $0.address == sources[k] }) {
                switch table.learn(macs[k], peer: from[k], now: now) {
                case .learned: outcome.learned += 1
                case .moved: outcome.moved += 1
                case .full: outcome.full += 1
                case .peerLimit: outcome.limited += 1
                case .localKept: outcome.local += 1
                case .refreshed, .staticKept: break
                }
            }
            outcome.expired = table.expireIfDue(now: now)
        }
        let c = ingressCounters
        if outcome.learned > 0 { c.add(layout.index(.fdbLearned), UInt64(outcome.learned)) }
        if outcome.moved > 0 { c.add(layout.index(.fdbMoved), UInt64(outcome.moved)) }
        if outcome.full > 0 { c.add(layout.index(.fdbFull), UInt64(outcome.full)) }
        if outcome.expired > 0 { c.add(layout.index(.fdbExpired), UInt64(outcome.expired)) }
        if outcome.limited > 0 { c.add(layout.index(.fdbPeerLimit), UInt64(outcome.limited)) }
        if outcome.local > 0 { c.add(layout.index(.fdbLocalRefused), UInt64(outcome.local)) }
    }
}
