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
                if let p = Self.unicastPeer(destination, in: table, now: now) { frames.targets[i] = p }
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
        for p in 0..<peers.count where peers.withPeer(p, { Self.takesFloods($0) }) {
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
        let target = frames.targets[i]
        switch Self.route(length: length, target: target, floods: floods) {
        case .refused(let reason): drop(reason, c, frame: UnsafeRawBufferPointer(frame)); return
        case .unicast: c.add(layout.index(.unicastFrames))
        case .flood: c.add(layout.index(.floodedFrames))
        }
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
        if let reason = Self.tunnelRefusal(length: frame.count, maximumInnerFrame: maximumInnerFrame) {
            drop(reason, egressCounters, frame: frame, peer: target)
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
        guard let length = TooBigReply.write(answering: frame, innerMTU: Self.tooBigMTU(maximumInnerFrame: maximumInnerFrame),
                                               to: out)
        else { return }
        tooBigLimit.spend()
        scratch.base.initializeMemory(as: UInt8.self, repeating: 0, count: virtioLength)
        if case .done? = try? device.write(UnsafeRawBufferPointer(rebasing: scratch.bytes[0..<(virtioLength + length)])) {
            egressCounters.add(layout.index(.icmpErrorsSent))
            if captures != nil { recordInner(UnsafeRawBufferPointer(rebasing: out[0..<length])) }
        }
    }
}
