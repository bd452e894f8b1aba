import FerryLinux
import FerryWire

// Super-frames from a TAP with TSO or USO: cut into segments that fit the tunnel. Through the
// UDP senders a super-frame leaves as GSO messages that gather its payload where it lies; on
// the raw paths each segment is laid out whole and forwarded as a frame.
extension Worker {
    /// Cuts a super-frame into frames that fit the tunnel and sends each.
    @inline(__always)
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
        do throws(Segmentation.Failure) {
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
            drop(error.dropReason, c, frame: frame, peer: target)
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
        let vxlanHeader = udp.vxlanHeader.base
        gso = GSOMessage(sender: sender(for: frame), peer: target >= 0 ? target : floodTargets[0],
                                     copies: target >= 0 ? 1 : floods, perPacketOverhead: ipOverhead - VXLAN.headerLength)
        var end = 0, tooBig = false, first = true
        let count: Int
        do throws(Segmentation.Failure) {
            count = try Segmentation.segmentHeaders(frame, header: header, into: area, gap: VXLAN.headerLength) {
                at, headerLength, payloadAt, chunk in
                // (Offsets within a 64 KiB frame and a 1 MiB area: wrapping arithmetic, unchecked.)
                end = at &+ headerLength
                // The first segment is the largest: if it does not fit, none is sent.
                if first {
                    first = false
                    tooBig = Self.tunnelRefusal(length: headerLength + chunk, maximumInnerFrame: maximumInnerFrame) != nil
                    gso.size = VXLAN.headerLength + headerLength + chunk
                    gso.perMessage = fallbacks.segmentationWithdrawn ? 1 : max(1, min(UDPQueues.runLimit, 65000 / gso.size))
                }
                guard !tooBig else { return }
                let headers = UnsafeMutableRawBufferPointer(start: base + (at &- VXLAN.headerLength),
                                                            count: VXLAN.headerLength &+ headerLength)
                headers.baseAddress!.copyMemory(from: vxlanHeader, byteCount: VXLAN.headerLength)
                let payload = UnsafeRawBufferPointer(rebasing: frame[payloadAt..<(payloadAt &+ chunk)])
                if _slowPath(captures != nil) {
                    recordInner(UnsafeRawBufferPointer(rebasing: headers[VXLAN.headerLength...]), payload)
                }
                addToGSO(UnsafeRawBufferPointer(headers), payload)
            }
        } catch {
            drop(error.dropReason, c, frame: frame, peer: target)
            return
        }
        guard !tooBig else {
            drop(.oversizeFrame, c, frame: frame, peer: target)
            sendTooBig(frame)
            return
        }
        udp.batch(gso.sender) { closeGSO($0) }
        segments.used += end
        c.add(layout.index(.superFrames))
        c.add(layout.index(.superFrameSegments), UInt64(count))
    }

    /// Adds a segment (its headers, then its payload) to the open GSO message, or opens one:
    /// a message holds `gso.perMessage` segments.
    @inline(__always)
    func addToGSO(_ headers: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer) {
        udp.batch(gso.sender) { batch in
            if gso.segments == gso.perMessage { closeGSO(batch) }
            if gso.segments == 0 {
                // Room for the message, its copies, and all its pieces; else send what waits.
                if !batch.hasRoom(messages: gso.copies, pieces: 2 * gso.perMessage) { flushUDP(gso.sender, batch) }
                // Given up in that very flush: the rest of this super-frame goes a datagram a message.
                let withdrawn = fallbacks.segmentationWithdrawn
                if withdrawn { gso.perMessage = 1 }
                _ = peers.withPeer(gso.peer) {
                    batch.appendGathered(to: $0.udpDestination, segmentSize: withdrawn ? 0 : gso.size,
                                         pieces: 2 * gso.perMessage)
                }
            }
            batch.appendPiece(headers)
            batch.appendPiece(payload)
        }
        gso.segments &+= 1
        gso.bytes &+= headers.count &+ payload.count
    }

    /// Accounts the GSO message just filled, and sends copies of it to the other flood targets.
    func closeGSO(_ batch: MessageBatch) {
        guard gso.segments > 0 else { return }
        let wire = gso.bytes + gso.segments * gso.perPacketOverhead
        let m = batch.count - 1
        let accounts = udp.accounts(gso.sender)
        accounts[m] = (gso.peer, gso.segments, wire, false)
        for i in 1..<gso.copies {
            let p = floodTargets[i]
            _ = peers.withPeer(p) { batch.appendCopy(of: m, to: $0.udpDestination) }
            accounts[m + i] = (p, gso.segments, wire, false)
        }
        gso.segments = 0
        gso.bytes = 0
    }
}
