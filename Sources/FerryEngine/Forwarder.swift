import FerryLinux
import FerryWire
import Glibc
import Synchronization

/// One worker of the data plane: an egress step (bridge → tunnel) and an ingress step (tunnel →
/// bridge) over its own TAP queue and sockets, each moving one batch. `Engine` runs both in a
/// loop on the worker's thread; tests call them directly over fakes. Workers share only
/// `state` (peers, forwarding table, counters).
///
/// Egress: read frames from the TAP; look up each destination MAC (one lock per batch);
/// write each peer's outer headers into a small header slot; send header and frame as two
/// iovecs, so the frame is never copied, flooding unknown and group destinations to every
/// peer. Ingress: receive a batch, accept only peers and the configured VNI or key,
/// decapsulate in place, learn the inner source MACs (one lock per batch), write the inner
/// frames to the TAP. Frames from a peer go only to the bridge, never to another peer.
///
/// With offloads (a TAP with a virtio-net header), egress also takes TCP (and, with USO, UDP)
/// super-frames, cut into segments that fit the tunnel; VXLAN then leaves through the
/// transport's UDP senders as GSO sends (runs of equal small frames too), and ingress walks UDP
/// GRO receives datagram by datagram and joins TCP segments (and UDP datagrams) back into
/// super-frames for the TAP. Without, every packet takes the raw path with Ferry's own outer
/// headers.
public final class Forwarder<Device: FrameDevice, Transport: TunnelTransport>: @unchecked Sendable {
    public let configuration: EngineConfiguration
    public let device: Device
    public let transport: Transport
    /// Shared with the engine's other workers: peers, forwarding table, counters.
    public let state: ForwardingState
    /// This worker's index: which of each peer's templates it writes with.
    public let worker: Int
    /// The state's peers and counter layout, held directly: the packet path reads them without
    /// going through `state` (a computed class reference would be retained on each read).
    public let peers: PeerTable
    public let layout: CounterLayout
    public let egressCounters: CounterBlock
    public let ingressCounters: CounterBlock
    public let capture: CaptureTap?
    /// The TAP's own MAC: frames claiming it as their source come from a loop.
    public let deviceMAC: MACAddress

    let decapsulator: Decapsulator
    let batchSize: Int
    let slotSize: Int
    let clock: @Sendable () -> Int64

    // Egress state, touched by this worker's thread only (so exclusivity is not checked at
    // run time on the mutable parts: one owner, and the check costs on every packet).
    let egressBuffers: UnsafeMutableRawBufferPointer
    let egressLengths: UnsafeMutablePointer<Int>
    let egressTargets: UnsafeMutablePointer<Int>
    /// Packets with Ferry's own outer headers, for the IP path: per message a header slot, the
    /// peer it goes to, and whether the kernel refused it.
    let sendBatch: MessageBatch
    let headerSlots: UnsafeMutableRawPointer
    let messagePeer: UnsafeMutablePointer<Int>
    let messageFailed: UnsafeMutablePointer<Bool>
    /// The same for GRE's link path (a packet socket to the underlay device), when it is on.
    let link: LinkQueue?
    let scratch: UnsafeMutableRawBufferPointer
    /// Segments cut from TAP super-frames, alive until the send batch that points at them goes.
    let segments: UnsafeMutableRawBufferPointer
    @exclusivity(unchecked) var segmentsUsed = 0
    /// Bytes of virtio-net header in front of each TAP frame (0 without offloads).
    let virtioLength: Int
    /// VXLAN through the transport's UDP senders (the kernel builds IP and UDP, and segments
    /// GSO sends): one batch per sender; 0 senders means the raw, header-including path.
    let udpSenders: Int
    /// The kernel refused a GSO send: the UDP senders carry one datagram a send from then on
    /// (same sockets, same source ports and checksums; no UDP_SEGMENT).
    @exclusivity(unchecked) var gsoRefused = false
    /// Offloads the kernel refused at run time, which this worker stopped using (for the log).
    @exclusivity(unchecked) public private(set) var withdrawnOffloads: Offloads = []
    /// Withdrawn and not logged yet (the worker's own thread logs them between steps).
    @exclusivity(unchecked) public var unreportedWithdrawals: Offloads = []
    /// Owns the UDP senders' batches; the packet path borrows them through `udpBatch` without
    /// reference counting.
    let udpBatches: [MessageBatch]
    let udpBatchRefs: UnsafeMutablePointer<Unmanaged<MessageBatch>>
    let udpAccounting: UnsafeMutablePointer<(peer: Int, packets: Int, bytes: Int, failed: Bool)>
    let vxlanHeader: UnsafeMutableRawPointer
    static var udpBatchCapacity: Int { 256 }
    /// Pieces a UDP sender's batch can gather per send: 32 full GSO messages' worth (each a
    /// header and a payload per segment).
    static var gatherCapacity: Int { 32 * 2 * runLimit }
    /// A run of whole frames of one size, for one peer through one UDP sender: sent as one GSO
    /// message, so that a stream of small datagrams costs the kernel one send (and the peer,
    /// with UDP GRO, one receive) per run instead of per frame. A run of one is sent from the
    /// TAP's buffer as it is; from the second frame on, the run is laid out in `segments`.
    @exclusivity(unchecked) var run = Run()
    struct Run {
        var count = 0
        /// `size`: bytes per datagram (VXLAN header and frame), the GSO size.
        var peer = 0, sender = 0, size = 0, wire = 0, start = 0
        var first = UnsafeRawBufferPointer(start: nil, count: 0)
    }
    /// The peers a flood goes to in this step (the active ones), `collectFloodTargets` made.
    let floodTargets: UnsafeMutablePointer<Int>
    /// The second in which learned peers were last aged (worker 0 does it).
    @exclusivity(unchecked) var lastPeerAgeing = Int64.min

    /// The GSO message a super-frame's segments are being gathered into: for `peer`, with
    /// `copies - 1` copies to the peers after it when flooded; `size` is the GSO size.
    @exclusivity(unchecked) var gso = GSOMessage()
    struct GSOMessage {
        var sender = 0, peer = 0, copies = 0, perPacketOverhead = 0
        var size = 0, perMessage = 0, segments = 0, bytes = 0
    }
    /// Most datagrams in one GSO send (the kernel's UDP_MAX_SEGMENTS).
    static var runLimit: Int { 64 }
    @exclusivity(unchecked) var icmpBudget = 0
    @exclusivity(unchecked) var icmpSecond = Int64.min

    // Ingress state, touched by this worker's thread only.
    let ingressBuffers: UnsafeMutableRawBufferPointer
    let receiveBatch: MessageBatch
    let learnCapacity: Int
    let learnedMACs: UnsafeMutablePointer<MACAddress>
    let learnedPeers: UnsafeMutablePointer<Int>
    /// The address each learned MAC came from (accept-any mode): a slot given to another peer
    /// meanwhile is not taught MACs that were the last one's.
    let learnedSources: UnsafeMutablePointer<IPAddress>
    let ingressScratch: UnsafeMutableRawBufferPointer
    /// Joins TCP segments (and, with USO, UDP datagrams) into super-frames for a TAP with offloads.
    let coalescer: SegmentCoalescer
    /// Received segments are joined (a TAP with a virtio-net header, and it was not turned off,
    /// nor refused by the kernel).
    @exclusivity(unchecked) var joinsSegments: Bool
    /// Where a super-frame the TAP refused is cut into the segments it was joined from.
    let unjoinArea: UnsafeMutableRawBufferPointer
    @exclusivity(unchecked) var coalescedReported = 0

    static var headerSlotSize: Int { 128 }
    /// Bytes kept free in front of each received packet (a virtio header goes there).
    static var headroom: Int { 16 }
    public static var icmpPerSecond: Int { 100 }

    /// A worker over `device` and `transport`. Workers of one engine share `state` and each
    /// has its own `worker` index; without a state, the forwarder is the only worker.
    public init(configuration: EngineConfiguration, device: Device, transport: Transport, deviceMAC: MACAddress,
                capture: CaptureTap? = nil, state: ForwardingState? = nil, worker: Int = 0,
                clock: @escaping @Sendable () -> Int64 = Forwarder.monotonicSeconds)
        throws(TunnelOptionsError) {
        let shared: ForwardingState
        if let state { shared = state } else { shared = try ForwardingState(configuration: configuration) }
        precondition(worker >= 0 && worker < shared.workers)
        // A flood's GSO message and its copies to every other peer go in one UDP batch.
        precondition(configuration.maximumPeers <= Self.udpBatchCapacity, "at most \(Self.udpBatchCapacity) peers")
        self.state = shared
        self.worker = worker
        peers = shared.peers
        layout = shared.layout
        self.configuration = configuration
        self.device = device
        self.transport = transport
        self.deviceMAC = deviceMAC
        self.capture = capture
        self.clock = clock
        batchSize = configuration.batchSize
        virtioLength = device.virtioHeader ? VirtioNetHeader.length : 0
        // Room for the virtio header, and on ingress for writing one in front of the frame.
        slotSize = configuration.maximumFrame + Self.headroom
        egressCounters = shared.makeCounters(worker: worker)
        ingressCounters = shared.makeCounters(worker: worker)

        var policy = DecapsulationPolicy(vxlanPort: configuration.destinationPort, udpChecksum: .ignore)
        switch configuration.encapsulation {
        case .vxlan(let vni):
            policy.acceptGRE = false
            policy.vni = vni
        case .gre(let g):
            policy.acceptVXLAN = false
            // Without a configured key, only keyless GRE is ours: a packet with a key belongs
            // to another tunnel. (DecapsulationPolicy's nil means "any", so check below.)
            policy.greKey = g.key
        }
        decapsulator = Decapsulator(policy: policy)

        egressBuffers = .allocate(byteCount: batchSize * slotSize, alignment: 64)
        egressLengths = .allocate(capacity: batchSize)
        egressTargets = .allocate(capacity: batchSize)
        let messages = min(1024, max(batchSize * 2, 64))
        sendBatch = MessageBatch(capacity: messages)
        headerSlots = .allocate(byteCount: messages * Self.headerSlotSize, alignment: 64)
        messagePeer = .allocate(capacity: messages)
        messageFailed = .allocate(capacity: messages)
        floodTargets = .allocate(capacity: configuration.maximumPeers)
        link = transport.hasLinkSender ? LinkQueue(messages: messages, headerSlotSize: Self.headerSlotSize,
                                                   peers: configuration.maximumPeers) : nil
        // Also room for an ICMP error (at most 1294 bytes, IPv6's) behind a virtio header.
        scratch = .allocate(byteCount: max(slotSize, 1536) + 256, alignment: 64)
        if case .vxlan = configuration.encapsulation { udpSenders = transport.udpSenderCount } else { udpSenders = 0 }
        segments = .allocate(byteCount: device.virtioHeader || udpSenders > 0 ? 1 << 20 : 0, alignment: 64)
        udpBatches = (0..<udpSenders).map { _ in MessageBatch(capacity: Self.udpBatchCapacity, gatherCapacity: Self.gatherCapacity) }
        udpBatchRefs = .allocate(capacity: max(1, udpSenders))
        for (k, b) in udpBatches.enumerated() { udpBatchRefs[k] = Unmanaged.passUnretained(b) }
        udpAccounting = .allocate(capacity: max(1, udpSenders) * Self.udpBatchCapacity)
        vxlanHeader = .allocate(byteCount: VXLAN.headerLength, alignment: 8)
        if case .vxlan(let vni) = configuration.encapsulation {
            _ = VXLAN.writeHeader(to: UnsafeMutableRawBufferPointer(start: vxlanHeader, count: 8), at: 0, vni: vni)
        }

        ingressBuffers = .allocate(byteCount: batchSize * slotSize, alignment: 64)
        receiveBatch = MessageBatch(capacity: batchSize)
        for i in 0..<batchSize {
            receiveBatch.setReceiveBuffer(i, UnsafeMutableRawBufferPointer(
                rebasing: ingressBuffers[(i * slotSize + Self.headroom)..<((i + 1) * slotSize)]))
        }
        // A GRO receive holds up to 64 datagrams: room to learn from all of a batch's.
        learnCapacity = batchSize * 64
        learnedMACs = .allocate(capacity: learnCapacity)
        learnedPeers = .allocate(capacity: learnCapacity)
        learnedSources = .allocate(capacity: learnCapacity)
        ingressScratch = .allocate(byteCount: slotSize + 256, alignment: 64)
        joinsSegments = device.virtioHeader && configuration.joinsReceivedSegments
        unjoinArea = .allocate(byteCount: joinsSegments ? 1 << 18 : 0, alignment: 64)
        coalescer = SegmentCoalescer(slots: joinsSegments ? 8 : 1, capacity: joinsSegments ? 65535 + 18 : 64,
                                     udp: device.udpSegmentation)
    }

    deinit {
        egressBuffers.deallocate()
        egressLengths.deallocate()
        egressTargets.deallocate()
        headerSlots.deallocate()
        messagePeer.deallocate()
        messageFailed.deallocate()
        scratch.deallocate()
        segments.deallocate()
        udpAccounting.deallocate()
        udpBatchRefs.deallocate()
        vxlanHeader.deallocate()
        ingressBuffers.deallocate()
        learnedMACs.deallocate()
        learnedPeers.deallocate()
        learnedSources.deallocate()
        ingressScratch.deallocate()
        unjoinArea.deallocate()
        floodTargets.deallocate()
    }

    public static func monotonicSeconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec)
    }

    // MARK: - Egress

    /// Moves one batch from the TAP to the peers; returns the frames read (0: none waiting).
    public func egressStep() throws(LinuxError) -> Int {
        var frames = 0
        while frames < batchSize {
            let slot = UnsafeMutableRawBufferPointer(rebasing: egressBuffers[(frames * slotSize)..<((frames + 1) * slotSize)])
            guard case .done(let n) = try device.read(into: slot) else { break }
            egressLengths[frames] = n - virtioLength
            frames += 1
        }
        guard frames > 0 else { return 0 }
        let now = clock()
        let c = egressCounters
        segmentsUsed = 0  // the last step ended with a flush: nothing points into the area

        // One lock for the batch: destinations, and sources that show a MAC has come home.
        var movedHome = 0
        state.fdb.withLock { table in
            for i in 0..<frames {
                egressTargets[i] = -1
                guard egressLengths[i] >= Ethernet.headerLength else { continue }
                let frame = UnsafeRawBufferPointer(start: egressBuffers.baseAddress! + i * slotSize + virtioLength,
                                                   count: egressLengths[i])
                let destination = MACAddress(frame, at: 0)
                if !destination.isMulticast, let p = table.lookup(destination, now: now) { egressTargets[i] = p }
                if table.count > 0, table.forget(MACAddress(frame, at: 6)) { movedHome += 1 }
            }
        }
        if movedHome > 0 { c.add(layout.index(.fdbLocalMoved), UInt64(movedHome)) }

        // Floods go to the active peers (learned ones silent for the ageing time are not).
        let floodCount = collectFloodTargets()
        // An outer packet's length field is 16 bits, whatever the underlay's MTU (lo has 65536).
        let maximumIP = min(configuration.underlayMTU, 65535)
        let overhead = configuration.ipOverhead
        for i in 0..<frames {
            let length = egressLengths[i]
            let slot = egressBuffers.baseAddress! + i * slotSize
            let frame = UnsafeMutableRawBufferPointer(start: slot + virtioLength, count: max(0, length))
            c.add(layout.index(.tapReceivedFrames))
            c.add(layout.index(.tapReceivedBytes), UInt64(max(0, length)))
            guard length >= Ethernet.headerLength else { drop(.runtFrame, c); continue }
            let target = egressTargets[i]
            guard target >= 0 || floodCount > 0 else { drop(.noPeer, c); continue }
            c.add(layout.index(target >= 0 ? .unicastFrames : .floodedFrames))
            if virtioLength > 0 {
                let header = VirtioNetHeader(UnsafeRawBufferPointer(start: slot, count: virtioLength))
                if header.isGSO {
                    segment(UnsafeRawBufferPointer(frame), header: header, to: target, floodCount: floodCount,
                            maximumIP: maximumIP, overhead: overhead)
                    continue
                }
                if header.needsChecksum,
                   !Segmentation.completeChecksum(frame, start: Int(header.checksumStart), offset: Int(header.checksumOffset)) {
                    drop(.runtFrame, c)
                    continue
                }
            }
            forward(UnsafeRawBufferPointer(frame), to: target, floodCount: floodCount, maximumIP: maximumIP, overhead: overhead)
        }
        flush()
        return frames
    }

    /// Sends one frame that is whole (not a super-frame) to its peer, or to every peer.
    @inline(__always)
    func forward(_ frame: UnsafeRawBufferPointer, to target: Int, floodCount: Int, maximumIP: Int, overhead: Int) {
        if let capture, capture.inner { capture.record(frame) }
        guard frame.count + overhead <= maximumIP else {
            drop(.oversizeFrame, egressCounters)
            sendTooBig(frame, mtu: maximumIP - overhead)
            return
        }
        if udpSenders > 0 {
            let k = sender(for: frame)
            let wire = frame.count + overhead
            if target >= 0 {
                addToRun(frame, to: target, socket: k, wire: wire)
            } else {
                closeRun()
                for i in 0..<floodCount { enqueueUDP(frame, to: floodTargets[i], socket: k, segmentSize: 0, packets: 1, wire: wire) }
            }
            return
        }
        if target >= 0 {
            enqueue(frame, to: target)
        } else {
            for i in 0..<floodCount { enqueue(frame, to: floodTargets[i]) }
        }
    }

    /// Adds a whole frame for peer `p` through sender `k` to the open run if it fits (same
    /// peer, sender and size, room left), else sends the run and opens another with it.
    @inline(__always)
    func addToRun(_ frame: UnsafeRawBufferPointer, to p: Int, socket k: Int, wire: Int) {
        let size = VXLAN.headerLength + frame.count
        if run.count > 0, !gsoRefused, run.peer == p, run.sender == k, run.size == size, run.count < Self.runLimit,
           (run.count + 1) * size <= 65000 {
            // The run is laid out contiguously; nothing else takes from `segments` while it is
            // open (a super-frame closes it first).
            let needed = run.count == 1 ? 2 * size : size
            if segments.count - segmentsUsed >= needed {
                if run.count == 1 {
                    run.start = segmentsUsed
                    layBehindVXLAN(run.first)
                }
                layBehindVXLAN(frame)
                run.count += 1
                run.wire += wire
                return
            }
            // The area is full: send everything queued and start it afresh.
            flush()
            segmentsUsed = 0
        }
        closeRun()
        run = Run(count: 1, peer: p, sender: k, size: size, wire: wire, start: 0, first: frame)
    }

    /// Lays `frame` behind a VXLAN header at the end of the segment area.
    @inline(__always)
    func layBehindVXLAN(_ frame: UnsafeRawBufferPointer) {
        let at = segments.baseAddress! + segmentsUsed
        at.copyMemory(from: vxlanHeader, byteCount: VXLAN.headerLength)
        (at + VXLAN.headerLength).copyMemory(from: frame.baseAddress!, byteCount: frame.count)
        segmentsUsed += VXLAN.headerLength + frame.count
    }

    /// Queues the open run, if any: one frame as it is, or a GSO message of the run.
    func closeRun() {
        guard run.count > 0 else { return }
        let count = run.count
        run.count = 0
        if count == 1 {
            enqueueUDP(run.first, to: run.peer, socket: run.sender, segmentSize: 0, packets: 1, wire: run.wire)
        } else {
            let payload = UnsafeRawBufferPointer(start: segments.baseAddress! + run.start, count: count * run.size)
            enqueueUDP(payload, to: run.peer, socket: run.sender, segmentSize: run.size, packets: count, wire: run.wire)
        }
    }

    /// The UDP sender for a frame's flow: a flow keeps one source port.
    @inline(__always)
    func sender(for frame: UnsafeRawBufferPointer) -> Int {
        Int(FlowHash.port(for: FlowHash.hash(ofFrame: frame), in: 0...UInt16(udpSenders - 1)))
    }

    /// Adds a VXLAN payload for peer `p` to sender `k`'s batch: a whole frame behind the shared
    /// VXLAN header, or (`segmentSize` > 0) a GSO run of header+segment pairs.
    @inline(__always)
    func enqueueUDP(_ payload: UnsafeRawBufferPointer, to p: Int, socket k: Int, segmentSize: Int, packets: Int, wire: Int) {
        if udpBatch(k, { $0.count == $0.capacity }) { flushUDP(k) }
        let m = udpBatch(k) { batch in
            let m = batch.count
            peers.withPeer(p) { peer in
                if segmentSize > 0 {
                    batch.append(to: peer.udpDestination, payload: payload, segmentSize: segmentSize)
                } else {
                    batch.append(to: peer.udpDestination, header: UnsafeRawBufferPointer(start: vxlanHeader, count: VXLAN.headerLength),
                                 payload: payload)
                }
            }
            return m
        }
        udpAccounting[k * Self.udpBatchCapacity + m] = (p, packets, wire, false)
    }

    /// Runs `body` with sender `k`'s batch, borrowed.
    @inline(__always)
    func udpBatch<R>(_ k: Int, _ body: (MessageBatch) -> R) -> R {
        udpBatchRefs[k]._withUnsafeGuaranteedRef(body)
    }

    func flushUDP(_ k: Int) {
        udpBatch(k) { flushUDP(k, $0) }
    }

    func flushUDP(_ k: Int, _ batch: MessageBatch) {
        let queued = batch.count
        guard queued > 0 else { return }
        let c = egressCounters
        let base = udpAccounting + k * Self.udpBatchCapacity
        _ = transport.sendUDP(batch, socket: k) { index, reason in
            base[index].failed = true
            c.add(layout.index(reason), UInt64(base[index].packets))
        }
        if !gsoRefused, transport.refusesGSO {
            // The refused GSO messages went again datagram by datagram; from now on, one
            // datagram a message (what is already queued as GSO goes the same way).
            gsoRefused = true
            withdraw(.genericSegmentation, c)
        }
        var packets = 0, bytes = 0, segmented = 0
        for m in 0..<queued where !base[m].failed {
            c.add(layout.index(peer: base[m].peer, .txPackets), UInt64(base[m].packets))
            c.add(layout.index(peer: base[m].peer, .txBytes), UInt64(base[m].bytes))
            packets += base[m].packets
            bytes += base[m].bytes
            if base[m].packets > 1 { segmented += 1 }
        }
        c.add(layout.index(.sentPackets), UInt64(packets))
        c.add(layout.index(.sentBytes), UInt64(bytes))
        c.add(layout.index(.gsoSends), UInt64(segmented))
    }

    /// Cuts a TCP super-frame from the TAP into frames that fit the tunnel and sends each.
    func segment(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, to target: Int, floodCount: Int,
                 maximumIP: Int, overhead: Int) {
        let c = egressCounters
        // Segments must outlive the batch that points at them: when the area is short, send
        // what is queued and start it afresh. (A flush from a full batch mid-way leaves the
        // area as it is: segments after it are still being written behind those sent.)
        closeRun()
        if segments.count - segmentsUsed < frame.count * 2 {
            flush()
            segmentsUsed = 0
        }
        let area = UnsafeMutableRawBufferPointer(rebasing: segments[segmentsUsed...])
        if udpSenders > 0 {
            segmentForGSO(frame, header: header, area: area, to: target, floodCount: floodCount, maximumIP: maximumIP, overhead: overhead)
            return
        }
        do {
            let base = segments.baseAddress! + segmentsUsed
            var used = 0
            let count = try Segmentation.segment(frame, header: header, into: area) { offset, length in
                forward(UnsafeRawBufferPointer(start: base + offset, count: length), to: target, floodCount: floodCount,
                        maximumIP: maximumIP, overhead: overhead)
                used = offset + length
            }
            segmentsUsed += used
            c.add(layout.index(.superFrames))
            c.add(layout.index(.superFrameSegments), UInt64(count))
        } catch {
            drop(.badSuperFrame, c)
        }
    }

    @inline(__always)
    func drop(_ reason: DropReason, _ counters: CounterBlock) { counters.add(layout.index(reason)) }

    /// Puts the active peers' indices in `floodTargets`; returns how many.
    func collectFloodTargets() -> Int {
        var n = 0
        for p in 0..<peers.count where peers.withPeer(p, { $0.isActive }) {
            floodTargets[n] = p
            n += 1
        }
        return n
    }

    /// Retires learned peers silent for the ageing time: floods stop going to them (what the
    /// forwarding table held for them has aged out with them), and their slots may go to new
    /// peers when the table is full. A packet from one before then brings it back. Once a
    /// second at most; the engine's first worker calls it between steps.
    public func agePeers() {
        guard configuration.acceptAnyPeer else { return }
        let now = clock()
        guard now != lastPeerAgeing else { return }
        lastPeerAgeing = now
        var retired = 0
        for p in 0..<peers.count
        where peers.withPeer(p, { $0.isLearned && $0.isActive && $0.silence(at: now) >= configuration.ageingSeconds }) {
            if peers.retire(p, now: now, ageing: configuration.ageingSeconds) { retired += 1 }
        }
        if retired > 0 { egressCounters.add(layout.index(.peersRetired), UInt64(retired)) }
    }

    /// Adds `frame` for peer `p` to the send batch, behind its own outer headers: the link
    /// path's when it is on and the peer's next hop is resolved, else the IP path's.
    @inline(__always)
    func enqueue(_ frame: UnsafeRawBufferPointer, to p: Int) {
        if let link, enqueueOnLink(frame, to: p, link) { return }
        if sendBatch.count == sendBatch.capacity { flush() }
        let m = sendBatch.count
        let slot = headerSlots + m * Self.headerSlotSize
        peers.withPeer(p) { peer in
            let length = peer.withTemplate(worker) { $0.writeHeaders(.ipPacket, to: slot, inner: frame) }
            sendBatch.append(to: peer.destination, header: UnsafeRawBufferPointer(start: slot, count: length), payload: frame)
        }
        messagePeer[m] = p
        messageFailed[m] = false
    }

    /// Queues `frame` on the link path if peer `p` has a next hop there; false for the IP path.
    /// When a peer moves from one path to the other, what the old one holds is sent first,
    /// so that its packets stay in order.
    func enqueueOnLink(_ frame: UnsafeRawBufferPointer, to p: Int, _ q: LinkQueue) -> Bool {
        var onLink = peers.withPeer(p) { $0.hasLinkDestination }
        let last = q.lastPath[p]
        if last != 0, last != (onLink ? 2 : 1) { flush() }
        if onLink {
            if q.batch.count == q.batch.capacity { flush() }
            let m = q.batch.count
            let addressLength = peers.withPeer(p) { $0.copyLinkDestination(to: q.batch.addressStorage(m)) }
            if addressLength > 0 {
                let slot = q.headerSlots + m * Self.headerSlotSize
                let length = peers.withPeer(p) { $0.withTemplate(worker) { $0.writeHeaders(.ipPacket, to: slot, inner: frame) } }
                q.batch.append(addressLength: addressLength, header: UnsafeRawBufferPointer(start: slot, count: length), payload: frame)
                q.peer[m] = p
                q.failed[m] = false
            } else {
                // Withdrawn since the first look: the IP path, after what the link holds.
                flush()
                onLink = false
            }
        }
        q.lastPath[p] = onLink ? 2 : 1
        return onLink
    }

    /// Cuts a super-frame into segments for UDP GSO sends without copying its payload: each
    /// segment's headers go to the segment area behind a VXLAN header, and each GSO message
    /// gathers, segment by segment, those headers and the payload where it lies in the TAP's
    /// buffer (which outlives the step's sends). One system call for up to 64 packets; to
    /// every peer, the messages share their pieces.
    func segmentForGSO(_ frame: UnsafeRawBufferPointer, header: VirtioNetHeader, area: UnsafeMutableRawBufferPointer,
                       to target: Int, floodCount: Int, maximumIP: Int, overhead: Int) {
        let c = egressCounters
        let base = area.baseAddress!
        gso = GSOMessage(sender: sender(for: frame), peer: target >= 0 ? target : floodTargets[0], copies: target >= 0 ? 1 : floodCount,
                         perPacketOverhead: overhead - VXLAN.headerLength)
        var end = 0, tooBig = false
        let count: Int
        do {
            count = try Segmentation.segmentHeaders(frame, header: header, into: area, gap: VXLAN.headerLength) {
                at, headerLength, payloadAt, chunk in
                end = at + headerLength
                // The first segment is the largest: if it does not fit, none is sent.
                if gso.size == 0 {
                    tooBig = headerLength + chunk + overhead > maximumIP
                    gso.size = VXLAN.headerLength + headerLength + chunk
                    gso.perMessage = gsoRefused ? 1 : max(1, min(Self.runLimit, 65000 / gso.size))
                }
                guard !tooBig else { return }
                let headers = UnsafeMutableRawBufferPointer(start: base + at - VXLAN.headerLength, count: VXLAN.headerLength + headerLength)
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
            sendTooBig(frame, mtu: maximumIP - overhead)
            return
        }
        udpBatch(gso.sender) { closeGSO($0) }
        segmentsUsed += end
        c.add(layout.index(.superFrames))
        c.add(layout.index(.superFrameSegments), UInt64(count))
    }

    /// Adds a segment (its headers, then its payload) to the open GSO message, or opens one:
    /// a message holds `gso.perMessage` segments.
    @inline(__always)
    func addToGSO(_ headers: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer) {
        udpBatch(gso.sender) { batch in
            if gso.segments == gso.perMessage { closeGSO(batch) }
            if gso.segments == 0 {
                // Room for the message, its copies, and all its pieces; else send what waits.
                if !batch.hasRoom(messages: gso.copies, pieces: 2 * gso.perMessage) { flushUDP(gso.sender, batch) }
                // Refused in that very flush: the rest of this super-frame goes a datagram a message.
                if gsoRefused { gso.perMessage = 1 }
                _ = peers.withPeer(gso.peer) {
                    batch.appendGathered(to: $0.udpDestination, segmentSize: gsoRefused ? 0 : gso.size, pieces: 2 * gso.perMessage)
                }
            }
            batch.appendPiece(headers)
            batch.appendPiece(payload)
        }
        gso.segments += 1
        gso.bytes += headers.count + payload.count
    }

    /// Accounts the GSO message just filled, and sends copies of it to the other peers.
    func closeGSO(_ batch: MessageBatch) {
        guard gso.segments > 0 else { return }
        let wire = gso.bytes + gso.segments * gso.perPacketOverhead
        let m = batch.count - 1
        let accounting = udpAccounting + gso.sender * Self.udpBatchCapacity
        accounting[m] = (gso.peer, gso.segments, wire, false)
        for i in 1..<gso.copies {
            let p = floodTargets[i]
            _ = peers.withPeer(p) { batch.appendCopy(of: m, to: $0.udpDestination) }
            accounting[m + i] = (p, gso.segments, wire, false)
        }
        gso.segments = 0
        gso.bytes = 0
    }

    /// Captures a segment whose headers and payload lie apart, joined in the scratch buffer.
    func recordInner(_ headers: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer, _ capture: CaptureTap) {
        let out = scratch.baseAddress!
        out.copyMemory(from: headers.baseAddress!, byteCount: headers.count)
        if payload.count > 0 { (out + headers.count).copyMemory(from: payload.baseAddress!, byteCount: payload.count) }
        capture.record(UnsafeRawBufferPointer(start: out, count: headers.count + payload.count))
    }

    /// Sends what is queued and counts it per peer.
    func flush() {
        closeRun()
        for k in 0..<udpSenders { flushUDP(k) }
        flush(sendBatch, peers: messagePeer, failed: messageFailed, link: false)
        if let link { flush(link.batch, peers: link.peer, failed: link.failed, link: true) }
    }

    func flush(_ batch: MessageBatch, peers messagePeer: UnsafeMutablePointer<Int>, failed: UnsafeMutablePointer<Bool>, link: Bool) {
        let queued = batch.count
        guard queued > 0 else { return }
        let c = egressCounters
        if let capture, capture.outer {
            for m in 0..<queued { recordOuter(batch, m, capture) }
        }
        var lengths = (0, 0)
        if link {
            _ = transport.sendLink(batch) { index, reason in
                failed[index] = true
                c.add(layout.index(reason))
            }
        } else {
            _ = transport.send(batch) { index, reason in
                failed[index] = true
                c.add(layout.index(reason))
            }
        }
        for m in 0..<queued where !failed[m] {
            let bytes = batch.messageLength(m)
            c.add(layout.index(peer: messagePeer[m], .txPackets))
            c.add(layout.index(peer: messagePeer[m], .txBytes), UInt64(bytes))
            lengths.0 += 1
            lengths.1 += bytes
        }
        c.add(layout.index(.sentPackets), UInt64(lengths.0))
        c.add(layout.index(.sentBytes), UInt64(lengths.1))
        if link { c.add(layout.index(.linkSentPackets), UInt64(lengths.0)) }
    }

    /// A capture of an outer packet as sent: an Ethernet header, then the IP packet.
    func recordOuter(_ batch: MessageBatch, _ m: Int, _ capture: CaptureTap) {
        let (_, bytes) = batch.message(m)
        let isIPv6 = configuration.local.isIPv6
        let out = scratch
        Ethernet.writeHeader(to: out, at: 0, destination: .zero, source: configuration.localMAC,
                             etherType: isIPv6 ? EtherType.ipv6 : EtherType.ipv4)
        bytes.withUnsafeBytes { out.baseAddress!.advanced(by: Ethernet.headerLength).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        capture.record(UnsafeRawBufferPointer(rebasing: out[0..<(Ethernet.headerLength + bytes.count)]))
    }

    /// Answers a frame too big for the tunnel with an ICMP error to its sender, through the
    /// TAP, so that path MTU discovery shrinks the flow: IPv4 with DF gets "fragmentation
    /// needed", IPv6 "packet too big". As Linux does for bridged tunnels, the error appears to
    /// come from the destination the sender was trying to reach. Rate-limited.
    func sendTooBig(_ frame: UnsafeRawBufferPointer, mtu ipMTU: Int) {
        // Never about a frame to a group, nor to or from an address no error may concern
        // (RFC 1812 §4.3.2.7, RFC 4443 §2.4(e); Linux's iptunnel_pmtud_check_icmp).
        guard let eth = EthernetView(frame), eth.vlanID == nil, !eth.destination.isMulticast,
              !eth.source.isMulticast else { return }
        let now = clock()
        if now != icmpSecond { icmpSecond = now; icmpBudget = Self.icmpPerSecond }
        guard icmpBudget > 0 else { return }
        let l3 = eth.payloadOffset
        let original = UnsafeRawBufferPointer(rebasing: frame[l3...])
        // Built behind room for an empty virtio header, which a TAP with offloads wants first.
        let out = UnsafeMutableRawBufferPointer(rebasing: scratch[virtioLength...])
        var length = 0
        // The largest inner IP packet that fits: the underlay's less outer and inner headers.
        let innerMTU = ipMTU - Ethernet.headerLength
        switch eth.etherType {
        case EtherType.ipv4:
            guard let ip = IPv4View(original), ip.version == 4, ip.dontFragment,
                  Self.mayReceiveICMP(ip.source), !ip.destination.isMulticast, ip.destination.value != 0xFFFF_FFFF, !ip.isFragment || ip.flagsAndOffset & IPv4.fragmentOffsetMask == 0,
                  ip.protocol != IPProtocol.icmp || original.count < ip.headerLength + 1 || original[ip.headerLength] == ICMPv4.echoRequest || original[ip.headerLength] == ICMPv4.echoReply
            else { return }
            Ethernet.writeHeader(to: out, at: 0, destination: eth.source, source: eth.destination, etherType: EtherType.ipv4)
            let icmpLength = ICMPv4.writeFragmentationNeeded(to: out, at: 34, nextHopMTU: innerMTU, original: original)
            IPv4.writeHeader(to: out, at: 14, totalLength: 20 + icmpLength, ttl: 64, protocol: IPProtocol.icmp,
                             source: ip.destination, destination: ip.source)
            length = 34 + icmpLength
        case EtherType.ipv6:
            guard let ip = IPv6View(original), ip.version == 6, !ip.destination.isMulticast,
                  !ip.source.isMulticast, ip.source != IPv6Address(high: 0, low: 0), ip.source != IPv6Address(high: 0, low: 1),
                  IPv6.upperLayer(of: original).map({ $0.protocol != IPProtocol.icmpv6 || original.count <= $0.offset || original[$0.offset] >= 128 }) ?? false
            else { return }
            Ethernet.writeHeader(to: out, at: 0, destination: eth.source, source: eth.destination, etherType: EtherType.ipv6)
            let icmpLength = ICMPv6.writePacketTooBig(to: out, at: 54, mtu: max(innerMTU, ICMPv6.minimumMTU), original: original,
                                                     source: ip.destination, destination: ip.source)
            IPv6.writeHeader(to: out, at: 14, payloadLength: icmpLength, nextHeader: IPProtocol.icmpv6, hopLimit: 64,
                             source: ip.destination, destination: ip.source)
            length = 54 + icmpLength
        default:
            return
        }
        icmpBudget -= 1
        let packet = UnsafeRawBufferPointer(rebasing: out[0..<length])
        scratch.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: virtioLength)
        if case .done? = try? device.write(UnsafeRawBufferPointer(rebasing: scratch[0..<(virtioLength + length)])) {
            egressCounters.add(layout.index(.icmpErrorsSent))
            if let capture, capture.inner { capture.record(packet) }
        }
    }

    /// A unicast source that is neither unspecified, loopback, nor broadcast.
    static func mayReceiveICMP(_ a: IPv4Address) -> Bool {
        let first = a.value >> 24
        return first != 0 && first != 127 && !a.isMulticast && a.value != 0xFFFF_FFFF
    }

    // MARK: - Ingress

    /// Moves one batch from the tunnel to the TAP; returns the packets received.
    public func ingressStep() throws(LinuxError) -> Int {
        let received = try transport.receive(receiveBatch)
        guard received > 0 else { return 0 }
        let c = ingressCounters
        let now = clock()
        // Byte counts are of the outer IP packet, as on egress: add what the socket stripped.
        let ipHeader = configuration.local.isIPv6 ? IPv6.headerLength : IPv4.minimumHeaderLength
        let stripped = switch transport.receivedForm {
        case .vxlanPayload: ipHeader + UDP.headerLength
        case .grePayload: ipHeader
        case .ipPacket: 0
        }
        var learned = 0
        for i in 0..<received {
            let length = receiveBatch.receivedLength(i)
            if receiveBatch.wasTruncated(i) { drop(.receiveTruncated, c); continue }
            guard let (source, sourcePort) = receiveBatch.source(i) else { drop(.unknownPeer, c); continue }
            let message = UnsafeRawBufferPointer(start: ingressBuffers.baseAddress! + i * slotSize + Self.headroom, count: length)
            // With UDP_GRO one receive may hold several datagrams of one size end to end, all from
            // one source: the peer is looked up once per receive.
            let size = receiveBatch.groSegmentSize(i) ?? length
            if size < length { c.add(layout.index(.groReceives)) }
            // The outer ECN field, for RFC 6040: from the IP header a raw IPv4 socket hands up,
            // else from the socket's report (one for a GRO receive: GRO joins equal TOS only).
            let reportedTOS = transport.receivedForm == .ipPacket ? 0 : receiveBatch.receivedTOS(i) ?? 0
            var sourcePeer = peers.index(of: source)
            // The peer a well-formed packet of this receive came from (all of them share one).
            var heardFrom: Int?
            for start in stride(from: 0, to: max(length, 1), by: max(size, 1)) {
                let packet = UnsafeRawBufferPointer(rebasing: message[start..<min(start + size, length)])
                c.add(layout.index(.receivedPackets))
                c.add(layout.index(.receivedBytes), UInt64(packet.count + stripped))

                let result: DecapsulationResult = switch transport.receivedForm {
                case .vxlanPayload:
                    decapsulator.decapsulate(vxlanPayload: packet, source: source, destination: configuration.local,
                                             sourcePort: sourcePort)
                case .ipPacket: decapsulator.decapsulate(ipPacket: packet)
                case .grePayload: decapsulator.decapsulate(grePayload: packet, source: source, destination: configuration.local)
                }
                guard case .packet(let decapsulated) = result else {
                    drop(result.dropReason!, c)
                    continue
                }
                // A keyless GRE tunnel is not the same tunnel as one with a key.
                if case .gre(let g) = configuration.encapsulation, g.key == nil, decapsulated.greKey != nil {
                    drop(.unexpectedGREKey, c)
                    continue
                }
                let inner = UnsafeRawBufferPointer(rebasing: packet[decapsulated.inner])
                let sourceMAC = MACAddress(inner, at: 6)
                if sourcePeer == nil && !configuration.acceptAnyPeer { drop(.unknownPeer, c); continue }
                guard !sourceMAC.isMulticast, sourceMAC != .zero, sourceMAC != deviceMAC else {
                    drop(.innerSourceMACInvalid, c)
                    continue
                }
                // RFC 6040: a congestion mark outside goes inside, or the packet goes (before it
                // can make its sender a peer).
                let outerECN = transport.receivedForm == .ipPacket ? packet[1] & 3 : reportedTOS & 3
                if outerECN == ECN.ce {
                    let writable = UnsafeMutableRawBufferPointer(mutating: inner)
                    if ECN.decapsulate(outer: outerECN, frame: writable) == .drop { drop(.congestionOnNotECT, c); continue }
                }
                // Accept-any mode: a well-formed packet from a new address makes it a peer.
                // (A full table is checked first: nothing is built for a source that cannot get
                // in — unless another worker has just added this very source, or, with --ageing
                // under 10 s, every retired slot is still waiting out its grace.)
                if sourcePeer == nil, peers.isFull { sourcePeer = peers.index(of: source) }
                if sourcePeer == nil, !peers.isFull, let options = try? configuration.tunnelOptions(remote: source),
                   let (index, added, reused) = peers.add(Peer(options: options, isLearned: true, workers: state.workers, heardAt: now),
                                                          now: now, baseline: state.peerCounters) {
                    sourcePeer = index
                    if added { c.add(layout.index(.peersLearned)) }
                    // Nothing the slot's last peer left in the table may point at the newcomer.
                    if reused { state.fdb.withLock { _ = $0.forget(peer: index) } }
                }
                guard let peer = sourcePeer else { drop(.unknownPeer, c); continue }
                if let capture {
                    if capture.outer { recordIncomingOuter(packet, source: source, sourcePort: sourcePort, tos: reportedTOS, capture) }
                    if capture.inner { capture.record(inner) }
                }
                if virtioLength > 0 {
                    // With offloads, consecutive segments of a TCP flow are joined into one
                    // super-frame (one TAP write for many packets); the rest go behind an empty
                    // virtio header written in the bytes the tunnel header held.
                    let plain = UnsafeMutableRawPointer(mutating: inner.baseAddress!) - virtioLength
                    if joinsSegments {
                        coalescer.add(inner, plain: plain) { writeToDevice($0, counters: c) }
                        // Refused just now: what the coalescer holds goes before what follows.
                        if !joinsSegments { coalescer.flush { writeToDevice($0, counters: c) } }
                    } else {
                        SegmentCoalescer.emitPlain(inner, plain) { writeToDevice($0, counters: c) }
                    }
                } else {
                    writeToDevice(inner, counters: c)
                }
                c.add(layout.index(peer: peer, .rxPackets))
                c.add(layout.index(peer: peer, .rxBytes), UInt64(packet.count + stripped))
                heardFrom = peer
                if learned < learnCapacity {
                    learnedMACs[learned] = sourceMAC
                    if configuration.acceptAnyPeer { learnedSources[learned] = source }
                    learnedPeers[learned] = peer
                    learned += 1
                }
            }
            // Once per receive, not per datagram; a packet from a retired peer brings it back.
            if let p = heardFrom, peers.heard(p, at: now) { c.add(layout.index(.peersLearned)) }
        }

        if virtioLength > 0 {
            // (Also when joining stopped during this batch: runs gathered before are written.)
            coalescer.flush { writeToDevice($0, counters: c) }
            c.add(layout.index(.coalescedSegments), UInt64(coalescer.merged - coalescedReported))
            coalescedReported = coalescer.merged
        }
        var outcome = (learned: 0, moved: 0, full: 0, expired: 0)
        state.fdb.withLock { table in
            // (Slots change hands only in accept-any mode.)
            for k in 0..<learned
            where !configuration.acceptAnyPeer || peers.withPeer(learnedPeers[k], { $0.address == learnedSources[k] }) {
                switch table.learn(learnedMACs[k], peer: learnedPeers[k], now: now) {
                case .learned: outcome.learned += 1
                case .moved: outcome.moved += 1
                case .full: outcome.full += 1
                case .refreshed, .staticKept: break
                }
            }
            outcome.expired = table.expireIfDue(now: now)
        }
        if outcome.learned > 0 { c.add(layout.index(.fdbLearned), UInt64(outcome.learned)) }
        if outcome.moved > 0 { c.add(layout.index(.fdbMoved), UInt64(outcome.moved)) }
        if outcome.full > 0 { c.add(layout.index(.fdbFull), UInt64(outcome.full)) }
        if outcome.expired > 0 { c.add(layout.index(.fdbExpired), UInt64(outcome.expired)) }
        return received
    }

    /// One write to the TAP (a frame, or a super-frame behind its virtio header).
    @inline(__always)
    func writeToDevice(_ bytes: UnsafeRawBufferPointer, counters c: CounterBlock) {
        do {
            guard case .done = try device.write(bytes) else { drop(.tapQueueFull, c); return }
            c.add(layout.index(.tapWrittenFrames))
            c.add(layout.index(.tapWrittenBytes), UInt64(bytes.count - virtioLength))
        } catch {
            writeRefused(bytes, error, counters: c)
        }
    }

    /// A TAP write the kernel refused (out of line: the cold path).
    @inline(never)
    func writeRefused(_ bytes: UnsafeRawBufferPointer, _ error: LinuxError, counters c: CounterBlock) {
        // EINVAL for a super-frame is the kernel refusing GSO writes; anything else (EIO from a
        // TAP that is down) is not a reason to stop joining.
        guard error.errno == .invalidArgument, virtioLength > 0, unjoinArea.count > 0, VirtioNetHeader(bytes).isGSO else {
            drop(.tapWriteFailed, c)
            return
        }
        // The kernel will not take super-frames here (a TAP without GSO writes, as some kernels
        // have had): stop joining, and write this one's segments one by one.
        if joinsSegments {
            joinsSegments = false
            withdraw(.genericReceive, c)
        }
        let header = VirtioNetHeader(bytes)
        let frame = UnsafeRawBufferPointer(rebasing: bytes[virtioLength...])
        let area = unjoinArea, gap = virtioLength
        do {
            _ = try Segmentation.segment(frame, header: header, into: area, gap: gap) { offset, length in
                let out = area.baseAddress! + offset - gap
                out.initializeMemory(as: UInt8.self, repeating: 0, count: gap)
                writeToDevice(UnsafeRawBufferPointer(start: out, count: gap + length), counters: c)
            }
        } catch {
            drop(.tapWriteFailed, c)
        }
    }

    /// Stops using an offload the kernel refused, and counts it.
    func withdraw(_ offload: Offloads, _ c: CounterBlock) {
        withdrawnOffloads.insert(offload)
        unreportedWithdrawals.insert(offload)
        c.add(layout.index(.offloadsWithdrawn))
    }

    /// A capture of a received outer packet. A raw IPv4 socket hands up the real IP header; a
    /// UDP or raw IPv6 socket only the payload, so the outer IP (and UDP) headers are rebuilt
    /// from the addresses, ports and TOS the socket reports: TTL, DF and IP ID are not the
    /// wire's.
    func recordIncomingOuter(_ packet: UnsafeRawBufferPointer, source: IPAddress, sourcePort: UInt16, tos: UInt8,
                             _ capture: CaptureTap) {
        let out = ingressScratch
        let isIPv6 = configuration.local.isIPv6
        Ethernet.writeHeader(to: out, at: 0, destination: configuration.localMAC, source: .zero,
                             etherType: isIPv6 ? EtherType.ipv6 : EtherType.ipv4)
        var o = Ethernet.headerLength
        if transport.receivedForm != .ipPacket {
            let proto: UInt8 = transport.receivedForm == .vxlanPayload ? IPProtocol.udp : IPProtocol.gre
            let l4 = transport.receivedForm == .vxlanPayload ? UDP.headerLength + packet.count : packet.count
            switch (source, configuration.local) {
            case (.v4(let s), .v4(let d)):
                o += IPv4.writeHeader(to: out, at: o, tos: tos, totalLength: 20 + l4, ttl: 64, protocol: proto, source: s, destination: d)
            case (.v6(let s), .v6(let d)):
                o += IPv6.writeHeader(to: out, at: o, trafficClass: tos, payloadLength: l4, nextHeader: proto, source: s, destination: d)
            default:
                return
            }
            if proto == IPProtocol.udp {
                o += UDP.writeHeader(to: out, at: o, sourcePort: sourcePort, destinationPort: configuration.destinationPort, length: l4)
            }
        }
        out.baseAddress!.advanced(by: o).copyMemory(from: packet.baseAddress!, byteCount: packet.count)
        capture.record(UnsafeRawBufferPointer(rebasing: out[0..<(o + packet.count)]))
    }
}

/// GRE's link-path packets waiting for one sendmmsg on the packet socket: per message a header
/// slot, the peer it goes to, and whether the kernel refused it.
final class LinkQueue {
    let batch: MessageBatch
    let headerSlots: UnsafeMutableRawPointer
    let peer: UnsafeMutablePointer<Int>
    let failed: UnsafeMutablePointer<Bool>
    /// Per peer, the path its last packet took (0 none yet, 1 IP, 2 link).
    let lastPath: UnsafeMutablePointer<UInt8>

    init(messages: Int, headerSlotSize: Int, peers: Int) {
        batch = MessageBatch(capacity: messages)
        headerSlots = .allocate(byteCount: messages * headerSlotSize, alignment: 64)
        peer = .allocate(capacity: messages)
        failed = .allocate(capacity: messages)
        lastPath = .allocate(capacity: peers)
        lastPath.initialize(repeating: 0, count: peers)
    }

    deinit {
        headerSlots.deallocate()
        peer.deallocate()
        failed.deallocate()
        lastPath.deallocate()
    }
}
