import FerryLinux
import FerryWire

// VXLAN through the transport's UDP senders: the kernel builds the outer IP and UDP headers,
// and segments GSO messages. Runs of equal frames for one peer leave as one GSO message; a
// flow always takes one sender, so it keeps one source port.
extension Worker {
    /// Adds a whole frame for peer `p` through sender `k` to the open run if it fits (same
    /// peer, sender and size, room left), else sends the run and opens another with it.
    @inline(__always)
    func addToRun(_ frame: UnsafeRawBufferPointer, to p: Int, socket k: Int, wire: Int) {
        let size = VXLAN.headerLength + frame.count
        let count = run.count
        if count > 0, run.peer == p, run.sender == k, run.size == size, count < UDPQueues.runLimit,
           (count + 1) * size <= 65000, !fallbacks.segmentationWithdrawn {
            // The run is laid out contiguously; nothing else takes from the segment area while
            // it is open (a super-frame closes it first).
            let needed = count == 1 ? 2 * size : size
            if segments.free >= needed {
                if count == 1 {
                    run.start = segments.used
                    layBehindVXLAN(run.first)
                }
                layBehindVXLAN(frame)
                run.count = count + 1
                run.wire += wire
                return
            }
            // The area is full: send everything queued and start it afresh.
            flush()
            segments.used = 0
        }
        closeRun()
        run = UDPRun(count: 1, peer: p, sender: k, size: size, wire: wire, start: 0, first: frame)
    }

    /// Lays `frame` behind a VXLAN header at the end of the segment area.
    @inline(__always)
    func layBehindVXLAN(_ frame: UnsafeRawBufferPointer) {
        let at = segments.base + segments.used
        at.copyMemory(from: udp.vxlanHeader.base, byteCount: VXLAN.headerLength)
        (at + VXLAN.headerLength).copyMemory(from: frame.baseAddress!, byteCount: frame.count)
        segments.used += VXLAN.headerLength + frame.count
    }

    /// Queues the open run, if any: one frame as it is, or a GSO message of the run.
    func closeRun() {
        guard run.count > 0 else { return }
        let count = run.count
        run.count = 0
        if count == 1 {
            enqueueUDP(run.first, to: run.peer, socket: run.sender, segmentSize: 0, packets: 1, wire: run.wire)
        } else {
            let payload = UnsafeRawBufferPointer(start: segments.base + run.start, count: count * run.size)
            enqueueUDP(payload, to: run.peer, socket: run.sender, segmentSize: run.size, packets: count, wire: run.wire)
        }
    }

    /// The UDP sender for a frame's flow: a flow keeps one source port.
    @inline(__always)
    func sender(for frame: UnsafeRawBufferPointer) -> Int {
        Int(FlowHash.port(for: FlowHash.hash(ofFrame: frame), in: 0...UInt16(udp.senders - 1)))
    }

    /// Adds a VXLAN payload for peer `p` to sender `k`'s batch: a whole frame behind the shared
    /// VXLAN header, or (`segmentSize` > 0) a GSO run of header+segment pairs.
    @inline(__always)
    func enqueueUDP(_ payload: UnsafeRawBufferPointer, to p: Int, socket k: Int, segmentSize: Int, packets: Int, wire: Int) {
        if udp.batch(k, { $0.count == $0.capacity }) { flushUDP(k) }
        let m = udp.batch(k) { batch in
            let m = batch.count
            _ = peers.withPeer(p) { peer in
                if segmentSize > 0 {
                    batch.append(to: peer.udpDestination, payload: payload, segmentSize: segmentSize)
                } else {
                    batch.append(to: peer.udpDestination, header: udp.header, payload: payload)
                }
            }
            return m
        }
        udp.accounts(k)[m] = (p, packets, wire, false)
    }

    func flushUDP(_ k: Int) {
        udp.batch(k) { flushUDP(k, $0) }
    }

    /// Sends sender `k`'s batch, and counts what went per peer. A GSO message the kernel
    /// refused whole went again datagram by datagram (the transport did that): until the
    /// back-off passes (`OffloadFallbacks`), this worker builds one datagram a message.
    func flushUDP(_ k: Int, _ batch: MessageBatch) {
        let queued = batch.count
        guard queued > 0 else { return }
        let c = egressCounters
        let accounts = udp.accounts(k)
        if _slowPath(captures != nil) { recordSentUDP(batch, socket: k) }
        _ = transport.sendUDP(batch, socket: k) { index, failure in
            switch failure {
            case .dropped(let reason):
                accounts[index].failed = true
                c.add(layout.index(reason), UInt64(accounts[index].packets))
            case .resentWithoutSegmentation:
                fallbacks.withdraw(.genericSegmentation)
            }
        }
        var packets = 0, bytes = 0, segmented = 0
        for m in 0..<queued where !accounts[m].failed {
            c.add(layout.index(peer: accounts[m].peer, .txPackets), UInt64(accounts[m].packets))
            c.add(layout.index(peer: accounts[m].peer, .txBytes), UInt64(accounts[m].bytes))
            packets += accounts[m].packets
            bytes += accounts[m].bytes
            if accounts[m].packets > 1 { segmented += 1 }
        }
        c.add(layout.index(.sentPackets), UInt64(packets))
        c.add(layout.index(.sentBytes), UInt64(bytes))
        c.add(layout.index(.gsoSends), UInt64(segmented))
    }
}

