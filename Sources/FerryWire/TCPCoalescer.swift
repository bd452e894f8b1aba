// Userspace GRO: consecutive in-order TCP segments of one flow, as they come out of the tunnel,
// joined into one super-frame for a TAP with a virtio-net header — one write instead of
// dozens, the kernel segmenting again only if it must. The rules follow Linux's
// tcp_gro_receive and wireguard-go's handleGRO: same flow, adjacent sequence numbers, equal
// acknowledgment, TCP options, TTL/TOS/DF; only ACK (PSH closes a run); every segment the
// size of the first but the last; checksums verified before anything is merged.

public final class TCPCoalescer {
    /// One flow being gathered.
    struct Run {
        var inUse = false
        var isIPv6 = false
        var source: (UInt64, UInt64) = (0, 0)
        var destination: (UInt64, UInt64) = (0, 0)
        var ports: UInt32 = 0
        var l4 = 0
        var headerLength = 0
        var segmentSize = 0
        var nextSequence: UInt32 = 0
        var segments = 0
        var length = 0  // bytes of the frame so far (after the virtio header)
        var closed = false
    }

    public let slots: Int
    public let capacity: Int
    var runs: [Run]
    let buffers: UnsafeMutableRawBufferPointer
    var evict = 0
    /// Segments merged into another since creation (for counters).
    public private(set) var merged = 0

    /// `slots` flows gathered at once, each up to `capacity` bytes of frame.
    public init(slots: Int = 8, capacity: Int = 65535 + Ethernet.headerLength) {
        self.slots = slots
        self.capacity = capacity
        runs = Array(repeating: Run(), count: slots)
        buffers = .allocate(byteCount: slots * (capacity + VirtioNetHeader.length), alignment: 64)
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
        guard let key = eligible(frame) else {
            if let flow = flowKey(frame), let r = find(flow) { finish(r, emit) }
            emitPlain(frame, plain, emit)
            return
        }
        let seq = frame.u32(key.l4 + 4)
        let payload = frame.count - key.headerLength
        let push = frame[key.l4 + 13] & TCP.psh != 0
        if let r = find(key.flow) {
            if canMerge(r, frame, key, seq: seq, payload: payload) {
                let dst = buffer(r) + VirtioNetHeader.length + runs[r].length
                dst.copyMemory(from: frame.baseAddress! + key.headerLength, byteCount: payload)
                runs[r].length += payload
                runs[r].nextSequence = seq &+ UInt32(payload)
                runs[r].segments += 1
                merged += 1
                if payload < runs[r].segmentSize { runs[r].closed = true }
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
        if push { emitPlain(frame, plain, emit); return }
        let r = runs.firstIndex { !$0.inUse } ?? {
            let victim = evict
            evict = (evict + 1) % slots
            finish(victim, emit)
            return victim
        }()
        (buffer(r) + VirtioNetHeader.length).copyMemory(from: frame.baseAddress!, byteCount: frame.count)
        runs[r] = Run(inUse: true, isIPv6: key.isIPv6, source: key.flow.source, destination: key.flow.destination,
                      ports: key.flow.ports, l4: key.l4, headerLength: key.headerLength, segmentSize: payload,
                      nextSequence: seq &+ UInt32(payload), segments: 1, length: frame.count, closed: false)
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
        static func == (a: Flow, b: Flow) -> Bool {
            a.source == b.source && a.destination == b.destination && a.ports == b.ports && a.isIPv6 == b.isIPv6
        }
    }

    struct Key {
        var flow: Flow
        var isIPv6: Bool
        var l4: Int
        var headerLength: Int
    }

    func find(_ flow: Flow) -> Int? {
        for r in 0..<slots where runs[r].inUse && runs[r].ports == flow.ports && runs[r].isIPv6 == flow.isIPv6
            && runs[r].source == flow.source && runs[r].destination == flow.destination { return r }
        return nil
    }

    /// The TCP flow of an untagged IPv4 (no options) or IPv6 (no extension headers) frame.
    func flowKey(_ f: UnsafeRawBufferPointer) -> Flow? {
        guard f.count >= 14 + 20 + 20 else { return nil }
        switch f.u16(12) {
        case EtherType.ipv4 where f[14] == 0x45 && f[23] == IPProtocol.tcp:
            return Flow(source: (UInt64(f.u32(26)), 0), destination: (UInt64(f.u32(30)), 0), ports: f.u32(34), isIPv6: false)
        case EtherType.ipv6 where f.count >= 14 + 40 + 20 && f[20] == IPProtocol.tcp:
            return Flow(source: (f.u64(22), f.u64(30)), destination: (f.u64(38), f.u64(46)), ports: f.u32(54), isIPv6: true)
        default:
            return nil
        }
    }

    /// A segment that may join a run: ACK (maybe PSH) with data, unfragmented, checksums right.
    func eligible(_ f: UnsafeRawBufferPointer) -> Key? {
        guard let flow = flowKey(f) else { return nil }
        let l4 = flow.isIPv6 ? 54 : 34
        if flow.isIPv6 {
            guard Int(f.u16(18)) == f.count - 54 else { return nil }  // no padding, no jumbogram
        } else {
            guard Int(f.u16(16)) == f.count - 14, f.u16(20) & 0x3FFF == 0,
                  InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: f[14..<34])) else { return nil }
        }
        let tcpHeader = Int(f[l4 + 12] >> 4) * 4
        let headerLength = l4 + tcpHeader
        guard tcpHeader >= 20, headerLength < f.count else { return nil }
        guard f[l4 + 13] & ~TCP.psh == TCP.ack else { return nil }
        let pseudo: UInt16 = flow.isIPv6
            ? InternetChecksum.pseudoHeaderSum(source: IPv6Address(f, at: 22), destination: IPv6Address(f, at: 38),
                                               protocol: IPProtocol.tcp, length: f.count - l4)
            : InternetChecksum.pseudoHeaderSum(source: IPv4Address(f, at: 26), destination: IPv4Address(f, at: 30),
                                               protocol: IPProtocol.tcp, length: f.count - l4)
        guard InternetChecksum.isValid(UnsafeRawBufferPointer(rebasing: f[l4...]), initial: pseudo) else { return nil }
        return Key(flow: flow, isIPv6: flow.isIPv6, l4: l4, headerLength: headerLength)
    }

    func canMerge(_ r: Int, _ f: UnsafeRawBufferPointer, _ key: Key, seq: UInt32, payload: Int) -> Bool {
        let run = runs[r]
        guard !run.closed, seq == run.nextSequence, key.headerLength == run.headerLength,
              payload <= run.segmentSize, run.length + payload <= capacity,
              run.length + payload - 14 <= 65535 else { return false }
        let head = UnsafeRawBufferPointer(start: buffer(r) + VirtioNetHeader.length, count: run.length)
        // Acknowledgment and options equal; for IPv4 TOS, TTL and DF too; for IPv6 the first
        // word (traffic class, flow label) and the hop limit.
        guard head.u32(key.l4 + 8) == f.u32(key.l4 + 8) else { return false }
        for o in stride(from: key.l4 + 20, to: key.headerLength, by: 4) where head.u32(o) != f.u32(o) { return false }
        if key.isIPv6 {
            return head.u32(14) == f.u32(14) && head[21] == f[21]
        }
        return head[15] == f[15] && head[22] == f[22] && head.u16(20) == f.u16(20)
    }

    func emitPlain(_ frame: UnsafeRawBufferPointer, _ plain: UnsafeMutableRawPointer, _ emit: (UnsafeRawBufferPointer) -> Void) {
        plain.initializeMemory(as: UInt8.self, repeating: 0, count: VirtioNetHeader.length)
        emit(UnsafeRawBufferPointer(start: plain, count: VirtioNetHeader.length + frame.count))
    }

    /// Writes the run's virtio header and lengths, hands it to `emit`, frees the slot.
    func finish(_ r: Int, _ emit: (UnsafeRawBufferPointer) -> Void) {
        let run = runs[r]
        runs[r].inUse = false
        let base = buffer(r)
        let frame = UnsafeMutableRawBufferPointer(start: base + VirtioNetHeader.length, count: run.length)
        if run.segments == 1 {
            // A segment alone is sent as it came, checksums and all.
            VirtioNetHeader().write(to: base)
        } else {
            let tcpLength = run.length - run.l4
            let pseudo: UInt16
            if run.isIPv6 {
                frame.setU16(UInt16(run.length - 54), at: 18)
                pseudo = InternetChecksum.pseudoHeaderSum(source: IPv6Address(UnsafeRawBufferPointer(frame), at: 22),
                                                          destination: IPv6Address(UnsafeRawBufferPointer(frame), at: 38),
                                                          protocol: IPProtocol.tcp, length: tcpLength)
            } else {
                frame.setU16(UInt16(run.length - 14), at: 16)
                frame.setU16(0, at: 24)
                frame.setU16(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: frame[14..<34])), at: 24)
                pseudo = InternetChecksum.pseudoHeaderSum(source: IPv4Address(UnsafeRawBufferPointer(frame), at: 26),
                                                          destination: IPv4Address(UnsafeRawBufferPointer(frame), at: 30),
                                                          protocol: IPProtocol.tcp, length: tcpLength)
            }
            // NEEDS_CSUM: the field holds the pseudo-header sum; the kernel (or NIC) finishes it.
            frame.setU16(pseudo, at: run.l4 + 16)
            VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum,
                            gsoType: run.isIPv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4,
                            headerLength: UInt16(run.headerLength), gsoSize: UInt16(run.segmentSize),
                            checksumStart: UInt16(run.l4), checksumOffset: 16).write(to: base)
        }
        emit(UnsafeRawBufferPointer(start: base, count: VirtioNetHeader.length + run.length))
    }
}
