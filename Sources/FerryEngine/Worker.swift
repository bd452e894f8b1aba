import FerryLinux
import FerryWire

/// One worker of the data plane: an egress step (bridge → tunnel) and an ingress step (tunnel →
/// bridge) over its own TAP queue and sockets, each moving one batch. `Engine` runs both in a
/// loop on the worker's thread; tests call them directly over fakes. Workers share only
/// `state` (peers, forwarding table, counters).
///
/// The per-packet path, in the order a frame meets it:
/// - egress (`Worker+Egress.swift`): read a batch from the TAP, look each destination up in
///   the forwarding table (one lock per batch), forward whole frames and cut super-frames
///   (`Worker+Segmentation.swift`), answer frames too big for the tunnel with ICMP;
/// - sends: VXLAN through UDP senders the kernel segments (`Worker+UDPSend.swift`), or Ferry's
///   own outer headers on the IP or link path (`Worker+IPSend.swift`); no frame is moved to
///   put a header in front of it: headers go in a slot that the send gathers with the frame
///   (runs of small frames, and segments on the raw path, are laid out in the segment area);
/// - ingress (`Worker+Ingress.swift`): receive a batch, admit our VNI or key from peers (or,
///   in accept-any mode, from a source that becomes one),
///   decapsulate in place, learn inner source MACs (one lock per batch), hand the frames to the
///   `TAPWriter`, which joins segments into super-frames. Frames from a peer go only to the
///   bridge, never to another peer.
///
/// `@unchecked Sendable`: a worker is handed once to its own thread, which alone calls
/// its methods; what other threads read is in `state`.
public final class Worker<Device: FrameDevice, Transport: TunnelTransport>: @unchecked Sendable {
    public let configuration: EngineConfiguration
    public let limits: DataPathLimits
    public let device: Device
    public let transport: Transport
    /// Shared with the engine's other workers: peers, forwarding table, counters.
    public let state: ForwardingState
    /// This worker's index: which of each peer's templates it writes with.
    public let index: Int
    /// The state's peers and counter layout, held directly: the packet path reads them without
    /// going through `state` (a computed class reference would be retained on each read).
    public let peers: PeerTable
    public let layout: CounterLayout
    public let egressCounters: CounterBlock
    public let ingressCounters: CounterBlock
    /// The captures attached when this worker last looked (at the top of a step), each with a
    /// ring of this worker's; nil when none is: the one branch each capture site costs.
    @exclusivity(unchecked) public internal(set) var captures: WorkerCaptures?
    /// The hub's version `captures` is of.
    @exclusivity(unchecked) var captureVersion: Int
    let captureHub: CaptureHub
    /// The TAP's own MAC: frames claiming it as their source come from a loop.
    public let deviceMAC: MACAddress
    let clock: @Sendable () -> Int64
    /// This worker's batch times (`BatchTimings`), and whether its seconds come from the
    /// nanoseconds read to time a batch (`clock` is CLOCK_MONOTONIC's), so that timing costs
    /// one clock read per batch, not two.
    let timings: BatchTimings
    let secondsFromBatchClock: Bool
    /// Bytes of virtio-net header in front of each TAP frame (0 without offloads).
    let virtioLength: Int
    let fallbacks: OffloadFallbacks
    /// IP-layer bytes each frame gains; the largest inner frame the tunnel carries whole (what
    /// the outer packet's limit leaves), from the underlay MTU in use at the start of the step.
    let ipOverhead: Int
    let underlayMTU: UnderlayMTU
    @exclusivity(unchecked) var maximumInnerFrame: Int
    /// Ingress: the largest decapsulated frame the bridge takes from the TAP (its MTU, an
    /// Ethernet header and a VLAN tag, as the kernel's `is_skb_forwardable`); a longer one is
    /// dropped as `oversizeFrame` unless its checksum is partial (a peer kernel's super-frame,
    /// which the TAP writer joins or cuts).
    let maximumDeliveredFrame: Int

    // Egress: touched by this worker's thread only.
    let frames: FrameBatch
    /// The peers a flood goes to in this step (the active ones).
    let floodTargets: OwnedSlots<Int>
    let ipQueue: SendQueue
    /// GRE's link path (a packet socket to the underlay device), when it is on.
    let linkQueue: SendQueue?
    /// Per peer, the path its last packet took (0 none yet, 1 IP, 2 link).
    let lastPath: OwnedSlots<UInt8>
    let udp: UDPQueues
    /// The UDP message being built: a run of equal frames, or a super-frame's segments.
    @exclusivity(unchecked) var run = UDPRun()
    @exclusivity(unchecked) var gso = GSOMessage()
    let segments: SegmentArea
    /// Where ICMP errors are built and captured frames rebuilt (room for an ICMPv6 error
    /// behind a virtio-net header, and for a frame).
    let scratch: OwnedBytes
    @exclusivity(unchecked) var tooBigLimit = RateLimit(perSecond: Worker.icmpPerSecond)

    // Ingress: touched by this worker's thread only.
    let decapsulator: Decapsulator
    let received: ReceiveBatch
    let learning: LearnBuffer
    /// Outer bytes the socket strips before handing a packet up (counters count whole outer
    /// IP packets, as on egress).
    let strippedOuterBytes: Int
    /// What ingress asks of each packet, read once from the configuration and the transport.
    let receivedForm: ReceivedForm
    let local: IPAddress
    let acceptsAnyPeer: Bool
    /// The local bridge's MACs (accept-any mode refuses them as inner sources).
    let localMACs: LocalMACs
    /// A keyless GRE tunnel: packets with a key belong to another tunnel.
    let refusesGREKeys: Bool
    let writer: TAPWriter<Device>
    /// Where received outer packets are rebuilt for capture.
    let ingressScratch: OwnedBytes

    public static var icmpPerSecond: Int { 100 }

    /// A worker over `device` and `transport`. Workers of one engine share `state` (whose
    /// limits they use) and each has its own `index`; without a state, the worker is the only
    /// one, with `limits` (default: for the configuration's underlay MTU, 64 KiB frames).
    /// `clock`: the worker's (default: the state's, which ages peers and table entries; tests
    /// give one to a worker without a state). `onOffloadChange` hears, on the worker's thread,
    /// of each offload the kernel refused (and set aside for a back-off), and of each tried again.
    public init(configuration: EngineConfiguration, limits: DataPathLimits? = nil, device: Device, transport: Transport,
                deviceMAC: MACAddress, capture: CaptureTap? = nil, state: ForwardingState? = nil, index: Int = 0,
                clock: (@Sendable () -> Int64)? = nil,
                onOffloadChange: @escaping @Sendable (OffloadChange) -> Void = { _ in })
        throws(TunnelOptionsError) {
        let shared: ForwardingState
        if let state {
            shared = state
        } else {
            shared = try ForwardingState(configuration: configuration, limits: limits,
                                         clock: clock)
        }
        precondition(index >= 0 && index < shared.workers)
        // A flood's GSO message and its copies to every other peer go in one UDP batch.
        precondition(configuration.maximumPeers <= UDPQueues.batchCapacity, "at most \(UDPQueues.batchCapacity) peers")
        self.configuration = configuration
        self.limits = shared.limits
        self.device = device
        self.transport = transport
        self.state = shared
        self.index = index
        peers = shared.peers
        layout = shared.layout
        if let capture { capture.ring(forWorker: index, state: shared) }
        captureHub = shared.captures
        (captures, captureVersion) = shared.captures.view(worker: index)
        self.deviceMAC = deviceMAC
        self.clock = clock ?? shared.clock
        timings = shared.batchTimings[index]
        secondsFromBatchClock = clock == nil && shared.clockIsMonotonic
        egressCounters = shared.makeCounters(worker: index, direction: .egress)
        ingressCounters = shared.makeCounters(worker: index, direction: .ingress)
        fallbacks = OffloadFallbacks(counters: egressCounters, layout: layout, clock: self.clock, report: onOffloadChange)
        virtioLength = device.virtioHeader ? VirtioNetHeader.length : 0
        ipOverhead = configuration.ipOverhead
        underlayMTU = shared.underlayMTU
        maximumInnerFrame = Self.maximumInnerFrame(underlayMTU: shared.underlayMTU.load(), ipOverhead: ipOverhead)
        maximumDeliveredFrame = (shared.limits.tapMTU ?? shared.limits.defaultTAPMTU(configuration))
            + Ethernet.headerLength + Ethernet.vlanTagLength

        let batchSize = configuration.batchSize
        // Room for the virtio header, and on ingress for writing one in front of the frame.
        let slotSize = shared.limits.maximumFrame + ReceiveBatch.headroom
        frames = FrameBatch(capacity: batchSize, slotSize: slotSize, virtioLength: virtioLength)
        floodTargets = OwnedSlots(count: configuration.maximumPeers)
        let messages = min(1024, max(batchSize * 2, 64))
        ipQueue = SendQueue(messages: messages, isLink: false)
        linkQueue = transport.hasLinkSender ? SendQueue(messages: messages, isLink: true) : nil
        lastPath = OwnedSlots(count: transport.hasLinkSender ? configuration.maximumPeers : 0, repeating: 0)
        if case .vxlan(let vni) = configuration.encapsulation {
            udp = UDPQueues(senders: transport.udpSenderCount, vni: vni)
        } else {
            udp = UDPQueues(senders: 0, vni: nil)
        }
        segments = SegmentArea(bytes: device.virtioHeader || udp.senders > 0 ? 1 << 20 : 0)
        scratch = OwnedBytes(count: max(slotSize, TooBigReply.maximumLength + VirtioNetHeader.length) + 256)

        decapsulator = Decapsulator(policy: Self.policy(configuration.encapsulation, port: configuration.destinationPort))
        received = ReceiveBatch(capacity: batchSize, slotSize: slotSize)
        // A GRO receive holds up to 64 datagrams: room to learn from all of a batch's.
        learning = LearnBuffer(capacity: batchSize * 64)
        writer = TAPWriter(device: device, joinsSegments: shared.limits.joinsReceivedSegments,
                           mtu: maximumInnerFrame - Ethernet.headerLength, counters: ingressCounters, layout: layout,
                           fallbacks: fallbacks)
        ingressScratch = OwnedBytes(count: slotSize + 256)
        receivedForm = transport.receivedForm
        local = configuration.local
        acceptsAnyPeer = configuration.acceptAnyPeer
        localMACs = shared.fdb.withLock { $0.localMACs }
        if case .gre(let g) = configuration.encapsulation { refusesGREKeys = g.key == nil } else { refusesGREKeys = false }
        let ipHeader = configuration.local.isIPv6 ? IPv6.headerLength : IPv4.minimumHeaderLength
        strippedOuterBytes = switch transport.receivedForm {
        case .vxlanPayload: ipHeader + UDP.headerLength
        case .grePayload: ipHeader
        case .ipPacket: 0
        }
    }

    /// What ingress accepts: this tunnel's VNI, or its GRE key (a keyless tunnel is checked
    /// after decapsulation: `DecapsulationPolicy`'s nil key means "any").
    static func policy(_ encapsulation: Encapsulation, port: UInt16) -> DecapsulationPolicy {
        var policy = DecapsulationPolicy(vxlanPort: port, udpChecksum: .ignore)
        switch encapsulation {
        case .vxlan(let vni):
            policy.acceptGRE = false
            policy.vni = vni
        case .gre(let g):
            policy.acceptVXLAN = false
            policy.greKey = g.key
        }
        return policy
    }

    /// The offloads this worker set aside because the kernel refused them at run time (until
    /// their back-off passes).
    public var withdrawnOffloads: Offloads { fallbacks.withdrawn }

    /// Uses again the offloads whose back-off has passed (called by a step, rarely: when
    /// `fallbacks.nextRetry` is due).
    @inline(never)
    func retryOffloads(at now: Int64) {
        if fallbacks.retry(at: now).contains(.genericReceive) { writer.resumeJoining() }
    }

    /// Whether received segments are still joined into super-frames.
    public var joinsSegments: Bool { writer.joinsSegments }

    /// Counts a drop under `reason` (and, with a drops capture attached, records it: see the
    /// overloads with the bytes in `Worker+Capture.swift`).
    @inline(__always)
    func drop(_ reason: DropReason, _ counters: CounterBlock) { counters.add(layout.index(reason)) }

    /// Picks up the captures attached or detached since the last step: a load and a compare
    /// per step, the lock only when they changed.
    @inline(__always)
    func pickUpCaptures() {
        if captureHub.currentVersion != captureVersion { refreshCaptures() }
    }

    @inline(never)
    func refreshCaptures() { (captures, captureVersion) = captureHub.view(worker: index) }

    /// A step's batch of `count` frames (at least 1) into the batch-size histogram.
    @inline(__always)
    func countBatch(_ count: Int, _ counters: CounterBlock) {
        counters.add(layout.index(batchSlot: BatchSizeBuckets.slot(frames: count)))
        counters.add(layout.batchFramesIndex, UInt64(truncatingIfNeeded: count))
    }

    /// The monotonic clock in nanoseconds, read after a batch's receive and after its sends.
    @inline(__always)
    static func batchClock() -> Int64 { Scheduling.monotonicNanoseconds() }

    /// The step's seconds: from `started` (the batch clock's reading) when that is the same clock.
    @inline(__always)
    func seconds(started: Int64) -> Int64 { secondsFromBatchClock ? started / 1_000_000_000 : clock() }

    /// The largest inner frame one outer packet carries on an underlay of `underlayMTU` (an IP
    /// length field holds no more than 65535; lo has 65536).
    @inline(__always)
    static func maximumInnerFrame(underlayMTU: Int, ipOverhead: Int) -> Int { min(underlayMTU, 65535) &- ipOverhead }

    // MARK: - The two steps

    /// Moves one batch from the TAP to the peers; returns the frames read (0: none waiting).
    /// Each step begins with a quiescent point (`PeerTable.passQuiescentPoint`): no peer is
    /// borrowed, nor any pointer into one kept, from one step to the next.
    public func egressStep() throws(LinuxError) -> Int {
        peers.passQuiescentPoint(worker: index)  // the last step sent all it queued
        timings.passBoundary()
        pickUpCaptures()
        let count = try frames.read(from: device)
        guard count > 0 else { return 0 }
        let started = Self.batchClock()
        countBatch(count, egressCounters)
        segments.used = 0  // the last step ended with a flush: nothing points into the area
        let now = seconds(started: started)
        if now >= fallbacks.nextRetry { retryOffloads(at: now) }
        // The underlay MTU may have changed since the last step (`Engine` follows it).
        maximumInnerFrame = Self.maximumInnerFrame(underlayMTU: underlayMTU.load(), ipOverhead: ipOverhead)
        lookUpDestinations(count, now: now)
        let floods = collectFloodTargets()
        for i in 0..<count { egress(frame: i, floods: floods) }
        flush()
        timings.recordEgress(Self.batchClock() &- started)
        return count
    }

    /// Moves one batch from the tunnel to the TAP; returns the packets received.
    public func ingressStep() throws(LinuxError) -> Int {
        peers.passQuiescentPoint(worker: index)
        timings.passBoundary()
        pickUpCaptures()
        let count = try received.receive(from: transport)
        guard count > 0 else { return 0 }
        let started = Self.batchClock()
        countBatch(count, ingressCounters)
        let now = seconds(started: started)
        if now >= fallbacks.nextRetry { retryOffloads(at: now) }
        learning.count = 0
        for i in 0..<count { ingress(message: i, now: now) }
        writer.finishBatch()
        // Timed to the end of the TAP writes: learning, after, sends nothing.
        timings.recordIngress(Self.batchClock() &- started)
        learnSources(now: now)
        return count
    }
}

/// At most `perSecond` events in any one second of the worker's clock.
struct RateLimit {
    let perSecond: Int
    var second = Int64.min, left = 0

    init(perSecond: Int) { self.perSecond = perSecond }

    /// Whether an event may happen at `now` (this second's allowance is not spent).
    mutating func allows(at now: Int64) -> Bool {
        if now != second { second = now; left = perSecond }
        return left > 0
    }

    /// Spends one event of this second's allowance.
    mutating func spend() { left -= 1 }
}
