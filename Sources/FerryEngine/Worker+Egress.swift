import FerryLinux
import FerryWire

// Egress, bridge → tunnel: classify each frame the TAP handed over, find its peer, and hand it
// to a send path whole, or cut into segments when it is a super-frame.
extension Worker {
    /// Looks up every frame's destination under one lock for the batch, and records each source
    /// as local (no peer may claim it then); one learned behind a peer has come home.
    @inline(__always)
    func lookUpDestinations(_ count: Int, now: Int64) {
        var movedHome = 0, full = 0
        state.fdb.withLock { table in
            // A batch is mostly one flow's frames: a source noted once is not looked up again
            // for the frames right after it (its entry holds this `now` already).
            var noted: MACAddress? = nil
            for i in 0..<count {
                frames.targets[i] = -1
                guard frames.lengths[i] >= Ethernet.headerLength else { continue }
                let frame = UnsafeRawBufferPointer(frames.frame(i))
                let destination = MACAddress(frame, at: 0)
                if !destination.isMulticast, let p = table.lookup(destination, now: now) { frames.targets[i] = p }
                let source = MACAddress(frame, at: 6)
                guard !source.isMulticast, source != noted else { continue }
                switch table.noteLocal(source, now: now) {
                case .known, .recorded: noted = source
                case .movedHome: movedHome += 1; noted = source
                case .full: full += 1  // not noted: each frame counts, as before
                }
            }
        }
        if movedHome > 0 { egressCounters.add(layout.index(.fdbLocalMoved), UInt64(movedHome)) }
        if full > 0 { egressCounters.add(layout.index(.fdbFull), UInt64(full)) }
    }

    /// Puts the active peers' indices in `floodTargets` (learned ones silent for the ageing
    /// time are not); returns how many.
    @inline(__always)
    func collectFloodTargets() -> Int {
        var n = 0
        for p in 0..<peers.count where peers.withPeer(p, { $0.isActive }) {
            floodTargets[n] = p
            n += 1
        }
        return n
    }

    /// Frame `i` of the batch: counted, checked, then forwarded whole or cut into segments.
    @inline(__always)
    func egress(frame i: Int, floods: Int) {
        let c = egressCounters
        let length = frames.lengths[i]
        let frame = frames.frame(i)
        c.add(layout.index(.tapReceivedFrames))
        c.add(layout.index(.tapReceivedBytes), UInt64(max(0, length)))
        guard length >= Ethernet.headerLength else { drop(.runtFrame, c, frame: UnsafeRawBufferPointer(frame)); return }
        let target = frames.targets[i]
        guard target >= 0 || floods > 0 else { drop(.noPeer, c, frame: UnsafeRawBufferPointer(frame)); return }
        c.add(layout.index(target >= 0 ? .unicastFrames : .floodedFrames))
        if virtioLength > 0 {
            let header = VirtioNetHeader(UnsafeRawBufferPointer(start: frames.slot(i), count: virtioLength))
            if header.isGSO {
                segment(UnsafeRawBufferPointer(frame), header: header, to: target, floods: floods)
                return
            }
            if header.needsChecksum,
               !Segmentation.completeChecksum(frame, start: Int(header.checksumStart), offset: Int(header.checksumOffset)) {
                drop(.runtFrame, c, frame: UnsafeRawBufferPointer(frame))
                return
            }
        }
        forward(UnsafeRawBufferPointer(frame), to: target, floods: floods)
    }

    /// Sends one frame that is whole (not a super-frame) to its peer (`target`), or to every
    /// flood target (`target` -1).
    @inline(__always)
    func forward(_ frame: UnsafeRawBufferPointer, to target: Int, floods: Int) {
        if _slowPath(captures != nil) { recordInner(frame) }
        guard frame.count <= maximumInnerFrame else {
            drop(.oversizeFrame, egressCounters, frame: frame, peer: target)
            sendTooBig(frame)
            return
        }
        if udp.senders > 0 {
            let k = sender(for: frame)
            let wire = frame.count + ipOverhead
            if target >= 0 {
                addToRun(frame, to: target, socket: k, wire: wire)
            } else {
                closeRun()
                for i in 0..<floods { enqueueUDP(frame, to: floodTargets[i], socket: k, segmentSize: 0, packets: 1, wire: wire) }
            }
            return
        }
        if target >= 0 {
            enqueue(frame, to: target)
        } else {
            for i in 0..<floods { enqueue(frame, to: floodTargets[i]) }
        }
    }

    /// Answers a frame too big for the tunnel with an ICMP error to its sender, through the
    /// TAP (`TooBigReply` says what, and whether one may be sent). Rate-limited.
    @inline(never)
    func sendTooBig(_ frame: UnsafeRawBufferPointer) {
        guard tooBigLimit.allows(at: clock()) else { return }
        // Built behind room for an empty virtio header, which a TAP with offloads wants first.
        let out = UnsafeMutableRawBufferPointer(rebasing: scratch.bytes[virtioLength...])
        guard let length = TooBigReply.write(answering: frame, innerMTU: maximumInnerFrame - Ethernet.headerLength, to: out)
        else { return }
        tooBigLimit.spend()
        scratch.base.initializeMemory(as: UInt8.self, repeating: 0, count: virtioLength)
        if case .done? = try? device.write(UnsafeRawBufferPointer(rebasing: scratch.bytes[0..<(virtioLength + length)])) {
            egressCounters.add(layout.index(.icmpErrorsSent))
            if captures != nil { recordInner(UnsafeRawBufferPointer(rebasing: out[0..<length])) }
        }
    }
}
