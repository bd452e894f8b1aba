import FerryLinux
import FerryWire

// Super-frames from a TAP with TSO or USO: cut into segments that fit the tunnel. Through the
// UDP senders a super-frame leaves as GSO messages that gather its payload where it lies; on
// the raw paths each segment is laid out whole and forwarded as a frame.
extension Forwarder {
    /// Cuts a super-frame into frames that fit the tunnel and sends each.
    func segment(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, to target: Int, floods: Int) {
        let c = egressCounters
        // Segments must outlive the batch that points at them: when the area is short, send
        // what is queued and start it afresh. (A flush from a full batch mid-way leaves the
        // area as it is: segments after it are still being written behind those sent.)
        closeRun()
        if segments.free < frame.count * 2 {
            flush()
            segments.used = 0
        }
        if udp.senders > 0 {
            segmentForGSO(frame, header: header, to: target, floods: floods)
            return
        }
        do {
            let base = segments.base + segments.used
            var used = 0
            let count = try Segmentation.segment(frame, header: header, into: segments.rest) { offset, length in
                forward(UnsafeRawBufferPointer(start: base + offset, count: length), to: target, floods: floods)
                used = offset + length
            }
            segments.used += used
            c.add(layout.index(.superFrames))
            c.add(layout.index(.superFrameSegments), UInt64(count))
        } catch {
            drop(.badSuperFrame, c)
        }
    }

    /// Cuts a super-frame for UDP GSO sends without copying its payload: each segment's
    /// headers go to the segment area behind a VXLAN header, and each GSO message gathers,
    /// segment by segment, those headers and the payload where it lies in the TAP's buffer
    /// (which outlives the step's sends). One system call for up to 64 packets; to every
    /// peer, the messages share their pieces.
    func segmentForGSO(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, to target: Int, floods: Int) {
        let c = egressCounters
        let area = segments.rest
        let base = area.baseAddress!
        let q = udp, vxlanHeader = udp.vxlanHeader.base
        q.gso = UDPQueues.GSOMessage(sender: sender(for: frame), peer: target >= 0 ? target : floodTargets[0],
                                     copies: target >= 0 ? 1 : floods, perPacketOverhead: ipOverhead - VXLAN.headerLength)
        var end = 0, tooBig = false, first = true
        let count: Int
        do {
            count = try Segmentation.segmentHeaders(frame, header: header, into: area, gap: VXLAN.headerLength) {
                at, headerLength, payloadAt, chunk in
                end = at + headerLength
                // The first segment is the largest: if it does not fit, none is sent.
                if first {
                    first = false
                    tooBig = headerLength + chunk > maximumInnerFrame
                    q.gso.size = VXLAN.headerLength + headerLength + chunk
                    q.gso.perMessage = fallbacks.segmentationWithdrawn ? 1 : max(1, min(UDPQueues.runLimit, 65000 / q.gso.size))
                }
                guard !tooBig else { return }
                let headers = UnsafeMutableRawBufferPointer(start: base + at - VXLAN.headerLength,
                                                            count: VXLAN.headerLength + headerLength)
                headers.baseAddress!.copyMemory(from: vxlanHeader, byteCount: VXLAN.headerLength)
                let payload = UnsafeRawBufferPointer(rebasing: frame[payloadAt..<(payloadAt + chunk)])
                if let capture, capture.inner {
                    recordInner(UnsafeRawBufferPointer(rebasing: headers[VXLAN.headerLength...]), payload, capture)
                }
                addToGSO(UnsafeRawBufferPointer(headers), payload)
            }
        } catch {
            drop(.badSuperFrame, c)
            return
        }
        guard !tooBig else {
            drop(.oversizeFrame, c)
            sendTooBig(frame)
            return
        }
        q.batch(q.gso.sender) { closeGSO($0) }
        segments.used += end
        c.add(layout.index(.superFrames))
        c.add(layout.index(.superFrameSegments), UInt64(count))
    }

    /// Adds a segment (its headers, then its payload) to the open GSO message, or opens one:
    /// a message holds `gso.perMessage` segments.
    @inline(__always)
    func addToGSO(_ headers: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer) {
        let q = udp
        q.batch(q.gso.sender) { batch in
            if q.gso.segments == q.gso.perMessage { closeGSO(batch) }
            if q.gso.segments == 0 {
                // Room for the message, its copies, and all its pieces; else send what waits.
                if !batch.hasRoom(messages: q.gso.copies, pieces: 2 * q.gso.perMessage) { flushUDP(q.gso.sender, batch) }
                // Given up in that very flush: the rest of this super-frame goes a datagram a message.
                let withdrawn = fallbacks.segmentationWithdrawn
                if withdrawn { q.gso.perMessage = 1 }
                _ = peers.withPeer(q.gso.peer) {
                    batch.appendGathered(to: $0.udpDestination, segmentSize: withdrawn ? 0 : q.gso.size,
                                         pieces: 2 * q.gso.perMessage)
                }
            }
            batch.appendPiece(headers)
            batch.appendPiece(payload)
        }
        q.gso.segments &+= 1
        q.gso.bytes &+= headers.count &+ payload.count
    }

    /// Accounts the GSO message just filled, and sends copies of it to the other flood targets.
    func closeGSO(_ batch: MessageBatch) {
        guard udp.gso.segments > 0 else { return }
        let wire = udp.gso.bytes + udp.gso.segments * udp.gso.perPacketOverhead
        let m = batch.count - 1
        let accounts = udp.accounts(udp.gso.sender)
        accounts[m] = (udp.gso.peer, udp.gso.segments, wire, false)
        for i in 1..<udp.gso.copies {
            let p = floodTargets[i]
            _ = peers.withPeer(p) { batch.appendCopy(of: m, to: $0.udpDestination) }
            accounts[m + i] = (p, udp.gso.segments, wire, false)
        }
        udp.gso.segments = 0
        udp.gso.bytes = 0
    }
}
