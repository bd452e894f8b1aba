import FerryLinux
import FerryWire

// Packets with Ferry's own outer headers, from the peer's template: through a raw socket and
// the kernel's IP output path, or, for GRE with `--gre-path link`, through a packet socket
// straight to the next hop's MAC. Both paths queue in a `SendQueue`.
extension Worker {
    /// Adds `frame` for peer `p` behind its own outer headers: on the link path when it is on
    /// and the peer's next hop is resolved, else on the IP path.
    @inline(__always)
    func enqueue(_ frame: UnsafeRawBufferPointer, to p: Int) {
        if let linkQueue, enqueueOnLink(frame, to: p, linkQueue) { return }
        let q = ipQueue
        if q.isFull { flush() }
        let m = q.batch.count
        let slot = q.headerSlot(m)
        peers.withPeer(p) { peer in
            let length = peer.withTemplate(index) { $0.writeHeaders(.ipPacket, to: slot, inner: frame) }
            q.batch.append(to: peer.destination, header: UnsafeRawBufferPointer(start: slot, count: length), payload: frame)
        }
        q.noteAppended(m, peer: p)
    }

    /// Queues `frame` on the link path if peer `p` has a next hop there; false for the IP path.
    /// When a peer moves from one path to the other, what the old one holds is sent first,
    /// so that its packets stay in order.
    func enqueueOnLink(_ frame: UnsafeRawBufferPointer, to p: Int, _ q: SendQueue) -> Bool {
        var onLink = peers.withPeer(p) { $0.hasLinkDestination }
        let last = lastPath[p]
        if last != 0, last != (onLink ? 2 : 1) { flush() }
        if onLink {
            if q.isFull { flush() }
            let m = q.batch.count
            let addressLength = peers.withPeer(p) { $0.copyLinkDestination(to: q.batch.addressStorage(m)) }
            if addressLength > 0 {
                let slot = q.headerSlot(m)
                let length = peers.withPeer(p) { $0.withTemplate(index) { $0.writeHeaders(.ipPacket, to: slot, inner: frame) } }
                _ = q.batch.append(addressLength: addressLength, header: UnsafeRawBufferPointer(start: slot, count: length),
                                   payload: frame)
                q.noteAppended(m, peer: p)
            } else {
                // Withdrawn since the first look: the IP path, after what the link holds.
                flush()
                onLink = false
            }
        }
        lastPath[p] = onLink ? 2 : 1
        return onLink
    }

    /// Sends everything queued, on every path, and counts it per peer.
    func flush() {
        closeRun()
        for k in 0..<udp.senders { flushUDP(k) }
        flush(ipQueue)
        if let linkQueue { flush(linkQueue) }
    }

    func flush(_ q: SendQueue) {
        let queued = q.batch.count
        guard queued > 0 else { return }
        let c = egressCounters
        if _slowPath(captures != nil) {
            for m in 0..<queued { recordOuter(q.batch, m) }
        }
        let failed = q.failed.pointer
        // (The closures are written at each call: a closure held in a variable is escaping,
        // and its context is allocated on every flush.)
        if q.isLink {
            _ = transport.sendLink(q.batch) { index, reason in
                failed[index] = true
                c.add(layout.index(reason))
            }
        } else {
            _ = transport.send(q.batch) { index, reason in
                failed[index] = true
                c.add(layout.index(reason))
            }
        }
        var packets = 0, bytes = 0
        for m in 0..<queued where !failed[m] {
            let length = q.batch.messageLength(m)
            c.add(layout.index(peer: q.peer[m], .txPackets))
            c.add(layout.index(peer: q.peer[m], .txBytes), UInt64(length))
            packets += 1
            bytes += length
        }
        c.add(layout.index(.sentPackets), UInt64(packets))
        c.add(layout.index(.sentBytes), UInt64(bytes))
        if q.isLink { c.add(layout.index(.linkSentPackets), UInt64(packets)) }
    }
}
