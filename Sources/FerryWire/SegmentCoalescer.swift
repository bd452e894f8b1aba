// Userspace GRO: consecutive in-order TCP segments of one flow, as they come out of the tunnel,
// joined into one super-frame for a TAP with a virtio-net header — one write instead of
// dozens, the kernel segmenting again only if it must. The rules follow Linux's
// tcp_gro_receive and wireguard-go's handleGRO: same flow, adjacent sequence numbers, equal
// acknowledgment, TCP options, TTL/TOS/DF; only ACK (PSH closes a run); every segment the
// size of the first but the last, at most 64; checksums verified before anything is merged.
// A segment whose checksum field holds just the pseudo-header sum (its sender's checksum
// offload, seen over virtual underlays: `PartialChecksum`) counts as verified — a run's sum is
// left to the kernel (NEEDS_CSUM) anyway — and one sent alone goes with NEEDS_CSUM too; one
// longer than `mtu` (a sender's GSO super-frame that crossed a veth whole) goes alone, as the
// TCP super-frame it is.
//
// With `udp` (a TAP with USO), consecutive datagrams of one UDP flow are joined the same way
// into a UDP_L4 super-frame, as udp_gro_receive_segment does: same size but the last, TTL/TOS/
// DF equal, IPv4 IDs consecutive unless DF is set (so that the kernel's segmentation gives
// back the same packets), at most 64, checksums verified.

public final class SegmentCoalescer {
    /// One flow being gathered.
    struct Run {
        var inUse = false
        var isIPv6 = false
        var isUDP = false
        var source: (UInt64, UInt64) = (0, 0)
        var destination: (UInt64, UInt64) = (0, 0)
        var ports: UInt32 = 0
        var l4 = 0
        var headerLength = 0
        var segmentSize = 0
        var nextSequence: UInt32 = 0
        /// UDP over IPv4: the ID the next datagram must carry.
        var nextID: UInt16 = 0
        var segments = 0
        var length = 0  // bytes of the frame so far (after the virtio header)
        var closed = false
        /// The first segment's checksum is the sender's partial sum (it matters when it stays alone).
        var partial = false
    }

    public let slots: Int
    public let capacity: Int
    /// UDP datagrams are joined too (the TAP takes UDP_L4 super-frames).
    public let udp: Bool
    /// The largest IP packet the TAP's side takes: segments are cut to fit it.
    public let mtu: Int
    /// Most segments in a super-frame (for UDP, the kernel's UDP_MAX_SEGMENTS).
    public static var segmentLimit: Int { 64 }
    // One owner (a worker thread): exclusivity is not checked at run time, per segment.
    @exclusivity(unchecked) var runs: [Run]
    let buffers: UnsafeMutableRawBufferPointer
    @exclusivity(unchecked) var evict = 0
    /// Segments merged into another since creation (for counters).
    @exclusivity(unchecked) public private(set) var merged = 0
    /// Segments that came with their sender's partial checksum since creation (for counters).
    @exclusivity(unchecked) public private(set) var partials = 0

    /// `slots` flows gathered at once, each up to `capacity` bytes of frame, for a TAP whose
    /// side takes IP packets of `mtu` bytes.
    public init(slots: Int = 8, capacity: Int = 65535 + Ethernet.headerLength, udp: Bool = false, mtu: Int = 1500) {
        self.slots = slots
        self.capacity = capacity
        self.udp = udp
        self.mtu = mtu
        runs = Array(repeating: Run(), count: slots)
        buffers = .allocate(byteCount: slots * (capacity + VirtioNetHeader.length), alignment: 64)
        // Resident from the start (as the engine's packet buffers): no first-touch faults later.
        buffers.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { buffers.deallocate() }

    @inline(__always)
    func buffer(_ i: Int) -> UnsafeMutableRawPointer { buffers.baseAddress! + i * (capacity + VirtioNetHeader.length) }

    /// Offers `frame`. It is gathered into a run, or, when it cannot be, handed to `emit` on
    /// its own after any run of its flow (order within a flow is kept). `emit` receives a
    /// virtio-net header followed by the frame; `plain` is an empty header's worth of writable
    /// bytes just before `frame` (the caller's headroom) for frames sent as they are.
    public func add(_ frame: UnsafeRawBufferPointer, plain: UnsafeMutableRawPointer,
                    emit: (UnsafeRawBufferPointer) -> Void) {
        let flow = flowKey(frame)
        guard let flow, let key = eligible(frame, flow) else {
            // (The flow of a frame with IPv6 extension headers is looked for only when there is
            // no plain flow: most frames that cannot be joined are UDP or control segments.)
            if let flow = flow ?? (frame.count >= 14 && frame.u16(12) == EtherType.ipv6 ? flowKeyPastExtensionHeaders(frame) : nil),
               let r = find(flow) { finish(r, emit) }
            let partial = PartialChecksum.find(in: frame)
            if partial != nil { partials += 1 }
            emitAlone(frame, plain, partial, emit)
            return
        }
        let seq = key.flow.isUDP ? 0 : frame.u32(key.l4 + 4)
        let payload = frame.count - key.headerLength
        let push = !key.flow.isUDP && frame[key.l4 + 13] & TCP.psh != 0
        if let r = find(key.flow) {
            if canMerge(r, frame, key, seq: seq, payload: payload) {
                let dst = buffer(r) + VirtioNetHeader.length + runs[r].length
                dst.copyMemory(from: frame.baseAddress! + key.headerLength, byteCount: payload)
                runs[r].length += payload
                runs[r].nextSequence = seq &+ UInt32(payload)
                runs[r].nextID &+= 1
                runs[r].segments += 1
                merged += 1
                if payload < runs[r].segmentSize { runs[r].closed = true }
                if key.flow.isUDP { return }
                // The latest window and PSH travel with the run.
                let head = buffer(r) + VirtioNetHeader.length + runs[r].l4
                head.storeBytes(of: frame.loadUnaligned(fromByteOffset: key.l4 + 14, as: UInt16.self), toByteOffset: 14, as: UInt16.self)
                if push {
                    head.storeBytes(of: head.load(fromByteOffset: 13, as: UInt8.self) | TCP.psh, toByteOffset: 13, as: UInt8.self)
                    finish(r, emit)
                }
                return
            }
            finish(r, emit)
        }
        // Start a run with this segment (a PSH segment goes out at once).
        if push {
            emitAlone(frame, plain, key.partial ? PartialChecksum(start: key.l4, offset: 16, end: frame.count) : nil, emit)
            return
        }
        let r = runs.firstIndex { !$0.inUse } ?? {
            let victim = evict
            evict = (evict + 1) % slots
            finish(victim, emit)
            return victim
        }()
        (buffer(r) + VirtioNetHeader.length).copyMemory(from: frame.baseAddress!, byteCount: frame.count)
        runs[r] = Run(inUse: true, isIPv6: key.isIPv6, isUDP: key.flow.isUDP, source: key.flow.source,
                      destination: key.flow.destination, ports: key.flow.ports, l4: key.l4, headerLength: key.headerLength,
                      segmentSize: payload, nextSequence: seq &+ UInt32(payload),
                      nextID: key.isIPv6 ? 0 : frame.u16(18) &+ 1, segments: 1, length: frame.count, closed: false,
                      partial: key.partial)
    }

    /// Sends every run gathered so far: call at the end of a batch.
    public func flush(emit: (UnsafeRawBufferPointer) -> Void) {
        for r in 0..<slots where runs[r].inUse { finish(r, emit) }
    }

    // MARK: -

    struct Flow: Equatable {
        var source: (UInt64, UInt64)
        var destination: (UInt64, UInt64)
        var ports: UInt32
        var isIPv6: Bool
        var isUDP = false
        static func == (a: Flow, b: Flow) -> Bool {
            a.source == b.source && a.destination == b.destination && a.ports == b.ports && a.isIPv6 == b.isIPv6
                && a.isUDP == b.isUDP
        }
    }

    struct Key {
        var flow: Flow
        var isIPv6: Bool
        var l4: Int
        var headerLength: Int
        /// The checksum field holds the pseudo-header sum only (the sender's offload).
        var partial = false
    }

    func find(_ flow: Flow) -> Int? {
        for r in 0..<slots where runs[r].inUse && runs[r].ports == flow.ports && runs[r].isIPv6 == flow.isIPv6
            && runs[r].isUDP == flow.isUDP && runs[r].source == flow.source && runs[r].destination == flow.destination { return r }
        return nil
    }

    /// The TCP (or, with `udp`, UDP) flow of an untagged IPv4 (no options) or IPv6 (no
    /// extension headers) frame.
    func flowKey(_ f: UnsafeRawBufferPointer) -> Flow? {
        guard f.count >= 14 + 20 + 8 else { return nil }
        switch f.u16(12) {
        case EtherType.ipv4 where f[14] == 0x45 && (f[23] == IPProtocol.tcp || udp && f[23] == IPProtocol.udp):
            return Flow(source: (UInt64(f.u32(26)), 0), destination: (UInt64(f.u32(30)), 0), ports: f.u32(34), isIPv6: false,
                        isUDP: f[23] == IPProtocol.udp)
        case EtherType.ipv6 where f.count >= 14 + 40 + 8 && (f[20] == IPProtocol.tcp || udp && f[20] == IPProtocol.udp):
            return Flow(source: (f.u64(22), f.u64(30)), destination: (f.u64(38), f.u64(46)), ports: f.u32(54), isIPv6: true,
                        isUDP: f[20] == IPProtocol.udp)
        default:
            return nil
        }
    }

    /// The flow of an IPv6 TCP (or UDP) frame with extension headers. Such a frame is never
    /// joined (it goes as it came), but a run of its flow goes first, to keep the flow's order.
    func flowKeyPastExtensionHeaders(_ f: UnsafeRawBufferPointer) -> Flow? {
        guard f.count >= 14 + 40 + 8, f.u16(12) == EtherType.ipv6,
              let upper = IPv6.upperLayer(of: UnsafeRawBufferPointer(rebasing: f[14...])), !upper.isFragment,
              upper.protocol == IPProtocol.tcp || udp && upper.protocol == IPProtocol.udp,
              14 + upper.offset + 4 <= f.count else { return nil }
        return Flow(source: (f.u64(22), f.u64(30)), destination: (f.u64(38), f.u64(46)), ports: f.u32(14 + upper.offset),
                    isIPv6: true, isUDP: upper.protocol == IPProtocol.udp)
    }

    /// A segment of `flow` (its `flowKey`) that may join a run: ACK (maybe PSH) with data,
    /// unfragmented, checksums right (or the L4 one left partial by its sender).
    func eligible(_ f: UnsafeRawBufferPointer, _ flow: Flow) -> Key? {
        let l4 = flow.isIPv6 ? 54 : 34
        if flow.isIPv6 {
            guard Int(f.u16(18)) == f.count - 54, f.count - 14 <= mtu else { return nil }  // no padding, no jumbogram
        } else {
            guard Int(f.u16(16)) == f.count - 14, f.count - 14 <= mtu, f.u16(20) & 0x3FFF == 0,
                  InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: f[14..<34])) else { return nil }
        }
        let proto = flow.isUDP ? IPProtocol.udp : IPProtocol.tcp
        let headerLength: Int
        if flow.isUDP {
            // Whole (the UDP length is the rest of the frame), with data, with a checksum.
            headerLength = l4 + UDP.headerLength
            guard Int(f.u16(l4 + 4)) == f.count - l4, headerLength < f.count, f.u16(l4 + 6) != 0 else { return nil }
        } else {
            guard f.count >= l4 + TCP.minimumHeaderLength else { return nil }
            let tcpHeader = Int(f[l4 + 12] >> 4) * 4
            headerLength = l4 + tcpHeader
            guard tcpHeader >= 20, headerLength < f.count else { return nil }
            guard f[l4 + 13] & ~TCP.psh == TCP.ack else { return nil }
        }
        let pseudo: UInt16 = flow.isIPv6
            ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(f, at: 22), destination: IPv6Address(f, at: 38),
                                               protocol: proto, length: f.count - l4)
            : InternetChecksum.pseudoHeaderSum(source: IPv4Address(f, at: 26), destination: IPv4Address(f, at: 30),
                                               protocol: proto, length: f.count - l4)
        // The full sum first (the common case); the stored field is compared only when it fails.
        var partial = false
        if !InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: f[l4...]), initial: pseudo) {
            guard f.u16(l4 + (flow.isUDP ? 6 : 16)) == pseudo else { return nil }
            partial = true
        }
        if partial { partials += 1 }
        return Key(flow: flow, isIPv6: flow.isIPv6, l4: l4, headerLength: headerLength, partial: partial)
    }

    func canMerge(_ r: Int, _ f: UnsafeRawBufferPointer, _ key: Key, seq: UInt32, payload: Int) -> Bool {
        let run = runs[r]
        guard !run.closed, run.isUDP || seq == run.nextSequence, key.headerLength == run.headerLength,
              payload <= run.segmentSize, run.length + payload <= capacity,
              run.length + payload - 14 <= 65535 else { return false }
        let head = UnsafeRawBufferPointer(start: buffer(r) + VirtioNetHeader.length, count: run.length)
        // TCP runs too: one cut back apart (for a TAP that refuses it) fits a bounded area.
        guard run.segments < Self.segmentLimit else { return false }
        if run.isUDP {
            if key.isIPv6 { return head.u32(14) == f.u32(14) && head[21] == f[21] }
            // With DF the ID means nothing (RFC 6864; Linux sends 0 or a per-socket count):
            // any will do. Without, the IDs must count up as the kernel's segmentation will.
            let dontFragment = f.u16(20) & IPv4.flagDontFragment != 0
            return (dontFragment || f.u16(18) == run.nextID) && head[15] == f[15] && head[22] == f[22] && head.u16(20) == f.u16(20)
        }
        // Acknowledgment and options equal; for IPv4 TOS, TTL and DF too; for IPv6 the first
        // word (traffic class, flow label) and the hop limit.
        guard head.u32(key.l4 + 8) == f.u32(key.l4 + 8) else { return false }
        for o in stride(from: key.l4 + 20, to: key.headerLength, by: 4) where head.u32(o) != f.u32(o) { return false }
        if key.isIPv6 {
            return head.u32(14) == f.u32(14) && head[21] == f[21]
        }
        return head[15] == f[15] && head[22] == f[22] && head.u16(20) == f.u16(20)
    }

    /// Hands `frame` to `emit` as it is, behind an empty virtio-net header written at `plain`
    /// (writable bytes just before the frame).
    @inlinable
    public static func emitPlain(_ frame: UnsafeRawBufferPointer, _ plain: UnsafeMutableRawPointer,
                                 _ emit: (UnsafeRawBufferPointer) -> Void) {
        plain.initializeMemory(as: UInt8.self, repeating: 0, count: VirtioNetHeader.length)
        emit(UnsafeRawBufferPointer(start: plain, count: VirtioNetHeader.length + frame.count))
    }

    /// A frame that goes alone: as it is (`emitPlain`) or, when its sender left the checksum
    /// `partial`, behind NEEDS_CSUM (a TCP super-frame header when longer than `mtu`), without
    /// any Ethernet padding, which the sum would cover.
    func emitAlone(_ frame: UnsafeRawBufferPointer, _ plain: UnsafeMutableRawPointer, _ partial: PartialChecksum?,
                   _ emit: (UnsafeRawBufferPointer) -> Void) {
        guard let partial else {
            Self.emitPlain(frame, plain, emit)
            return
        }
        (partial.superFrameHeader(frame, mtu: mtu) ?? partial.header).write(to: plain)
        emit(UnsafeRawBufferPointer(start: plain, count: VirtioNetHeader.length + partial.end))
    }

    /// Writes the run's virtio header and lengths, hands it to `emit`, frees the slot.
    func finish(_ r: Int, _ emit: (UnsafeRawBufferPointer) -> Void) {
        let run = runs[r]
        runs[r].inUse = false
        let base = buffer(r)
        let frame = UnsafeMutableRawBufferPointer(start: base + VirtioNetHeader.length, count: run.length)
        if run.segments == 1 {
            // A segment alone is sent as it came, checksums and all (a partial one as such).
            if run.partial {
                PartialChecksum(start: run.l4, offset: run.isUDP ? 6 : 16, end: run.length).header.write(to: base)
            } else {
                VirtioNetHeader().write(to: base)
            }
        } else {
            let l4Length = run.length - run.l4
            let proto = run.isUDP ? IPProtocol.udp : IPProtocol.tcp
            let pseudo: UInt16
            if run.isIPv6 {
                frame.setU16(UInt16(run.length - 54), at: 18)
                pseudo = InternetChecksum.pseudoHeaderSum(source: IPv6Address(UnsafeRawBufferPointer(frame), at: 22),
                                                          destination: IPv6Address(UnsafeRawBufferPointer(frame), at: 38),
                                                          protocol: proto, length: l4Length)
            } else {
                frame.setU16(UInt16(run.length - 14), at: 16)
                frame.setU16(0, at: 24)
                frame.setU16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: frame[14..<34])), at: 24)
                pseudo = InternetChecksum.pseudoHeaderSum(source: IPv4Address(UnsafeRawBufferPointer(frame), at: 26),
                                                          destination: IPv4Address(UnsafeRawBufferPointer(frame), at: 30),
                                                          protocol: proto, length: l4Length)
            }
            // NEEDS_CSUM: the field holds the pseudo-header sum; the kernel (or NIC) finishes it.
            // A UDP super-frame's length is the whole run's, as a GSO send's is; segmentation
            // gives each datagram its own.
            let checksumOffset = run.isUDP ? 6 : 16
            if run.isUDP { frame.setU16(UInt16(l4Length), at: run.l4 + 4) }
            frame.setU16(pseudo, at: run.l4 + checksumOffset)
            let gsoType = run.isUDP ? VirtioNetHeader.gsoUDPL4 : run.isIPv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4
            VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum, gsoType: gsoType,
                            headerLength: UInt16(run.headerLength), gsoSize: UInt16(run.segmentSize),
                            checksumStart: UInt16(run.l4), checksumOffset: UInt16(checksumOffset)).write(to: base)
        }
        emit(UnsafeRawBufferPointer(start: base, count: VirtioNetHeader.length + run.length))
    }
}
